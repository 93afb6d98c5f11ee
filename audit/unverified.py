"""Keys the audit could not judge because a read that would prove or clear them was refused.

A key is a LEAK only when every read that proves it succeeded. When one was refused (NOPERM) or
is unknown to the server, the key is UNVERIFIED instead: counted per (kind, reason), with the
first few key names as examples, explained in the report, never a finding, never in a fix plan,
and the audit's exit code is 3 (incomplete) unless a finding makes it 1.

>>> log: list[Unverified] = []
>>> note(log, "asynq:{q}:unique:a", "unique lock", "no deadline: PTTL refused", 60)
>>> note(log, "asynq:{q}:unique:b", "unique lock", "no deadline: PTTL refused", None)
>>> (log[0].count, log[0].bytes, log[0].examples)
(2, 60, ['asynq:{q}:unique:a', 'asynq:{q}:unique:b'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from audit.engine import AuditResult, Finding

#: Key names kept per (kind, reason) (the count says how many there were), and shown in the text.
EXAMPLES = 10
TEXT_EXAMPLES = 3


@dataclass
class Unverified:
    """``count`` keys of ``kind`` that could not be judged, and why; ``bytes``: the known sizes."""

    kind: str
    reason: str
    count: int = 0
    bytes: int = 0
    examples: list[str] = field(default_factory=list)


def note(log: list[Unverified], key: str, kind: str, reason: str, nbytes: int | None) -> None:
    """Record that ``key`` (a ``kind``) could not be judged because of ``reason``."""
    entry = next((u for u in log if u.kind == kind and u.reason == reason), None)
    if entry is None:
        entry = Unverified(kind, reason)
        log.append(entry)
    entry.count += 1
    entry.bytes += nbytes or 0
    if len(entry.examples) < EXAMPLES:
        entry.examples.append(key)


def as_json(entry: Unverified) -> dict[str, Any]:
    return {"kind": entry.kind, "reason": entry.reason, "count": entry.count, "bytes": entry.bytes,
            "examples": entry.examples}


def text_lines(log: list[Unverified]) -> list[str]:
    """The report's lines for one queue's unverified keys."""
    lines = []
    for u in log:
        shown = u.examples[:TEXT_EXAMPLES]
        more = f" (and {u.count - len(shown)} more)" if u.count > len(shown) else ""
        lines.append(f"  UNVERIFIED {u.count} {u.kind} key(s): {u.reason}; e.g. {', '.join(shown)}{more}")
    return lines


def unverified_count(result: AuditResult) -> int:
    """How many keys of the whole audit are unverified."""
    return sum(u.count for u in result.unverified)


def header_lines(result: AuditResult) -> list[str]:
    """The report's lines about the server and how it was read; the unverified total."""
    caps = result.capabilities
    memory = f", used_memory {result.used_memory} B" if result.used_memory is not None else ""
    lines = [f"server: {result.server or 'unknown (INFO refused)'}{memory}"]
    if caps.expiry.note or not caps.atomic:
        lines.append(f"reads: deadlines by {caps.expiry.name}"
                     f"{f' ({caps.expiry.note})' if caps.expiry.note else ''}; candidates confirmed "
                     f"by {caps.consistency}")
    total = unverified_count(result)
    if total:
        lines.append(f"INCOMPLETE: {total} key(s) could not be verified (a read was refused); they "
                     "are listed as UNVERIFIED, are no finding and are never in a fix plan")
    return lines


def finding_text(f: Finding) -> str:
    """One finding's report line; a message that starts with the finding's own kind (the
    model's ``zombie: ...``) does not repeat it.

    >>> from audit.engine import Finding
    >>> finding_text(Finding("I1", "zombie", "k", "t", "zombie: t:t is archived but in no index", True))
    'LEAK I1 zombie: t:t is archived but in no index'
    >>> finding_text(Finding("I7", "stale group", "k", None, "stale group: groups lists 'g'"))
    "I7 stale group: groups lists 'g'"
    >>> finding_text(Finding("I2", "dangling id", "k", "x", "dangling: pending holds 'x'"))
    "I2 dangling id: pending holds 'x'"
    """
    label, sep, rest = f.message.partition(": ")
    repeated = sep and label.split() and set(label.split()) <= set(f.kind.split())
    message = rest if repeated else f.message
    return f"{'LEAK ' if f.leaked else ''}{f.invariant} {f.kind}: {message}"
