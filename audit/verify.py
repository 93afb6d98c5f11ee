"""Confirming candidate findings by reading them again before they are reported.

A live Redis changes while the audit reads it, so every candidate that a moving task could
fake (a zombie, a dangling id, an orphan lock, active without lease, ...) comes with a
:class:`Recheck`: the few reads that decide it, and the test of their fresh replies.

* With MULTI/EXEC permitted, each recheck's reads run atomically (one MULTI … EXEC each, all of
  them in one round trip): the candidate is judged on one instant of the keyspace.
* Without (a ``+@read``-only user), the reads run as plain commands, and the candidates that
  still hold are read again once ``pause_ms`` has passed: a task that was moving between
  indexes during a read has settled by the second one. Waiting candidates are kept across
  chunks and read again together, so the pause is paid about once per pause interval, not
  once per chunk.

A reply that is an error (a refused or unknown read) proves nothing: the candidate is then
reported as unverified, never as a finding.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from audit.taskread import execute

#: The default pause between the two plain re-reads of a candidate.
DEFAULT_PAUSE_MS = 200
_sleep = time.sleep  # the pause (a test puts a keyspace change in its place)


@dataclass(frozen=True)
class Recheck:
    """Reads to repeat and the test of their fresh replies: True when the candidate still holds."""

    calls: list[tuple[Any, ...]]
    holds: Callable[[list[Any]], bool]


@dataclass(frozen=True)
class Candidate:
    """A candidate finding: its recheck (None: a property of one key read by one command, which
    holds as read) and what to do once it is confirmed, or found unverifiable."""

    recheck: Recheck | None
    confirmed: Callable[[], None]
    unverified: Callable[[str], None]


class Verifier:
    """Confirms :class:`Candidate` s (module docstring)."""

    def __init__(self, client: redis.Redis, atomic: bool, pause_ms: int = DEFAULT_PAUSE_MS) -> None:
        self.client, self.atomic, self.pause_s = client, atomic, pause_ms / 1000
        self._waiting: list[tuple[float, Candidate]] = []

    def submit(self, candidates: Sequence[Candidate]) -> None:
        """Read every candidate again now; report the confirmed ones (atomic mode) or keep the
        ones that still hold for their second read (plain mode)."""
        for candidate in self._still_holding(candidates):
            if self.atomic or candidate.recheck is None:
                candidate.confirmed()
            else:
                self._waiting.append((time.monotonic() + self.pause_s, candidate))

    def poll(self) -> None:
        """Give the waiting candidates whose pause has passed their second read."""
        now = time.monotonic()
        due = [c for at, c in self._waiting if at <= now]
        if due:
            self._waiting = [(at, c) for at, c in self._waiting if at > now]
            self._confirm(due)

    def drain(self) -> None:
        """Wait for the last pause to pass and give every waiting candidate its second read."""
        if self._waiting:
            _sleep(max(0.0, max(at for at, _ in self._waiting) - time.monotonic()))
            due, self._waiting = [c for _, c in self._waiting], []
            self._confirm(due)

    def _confirm(self, due: list[Candidate]) -> None:
        for candidate in self._still_holding(due):
            candidate.confirmed()

    def _still_holding(self, candidates: Sequence[Candidate]) -> list[Candidate]:
        """The candidates whose fresh reads still show them (calls ``unverified`` on the ones
        whose reads were refused)."""
        checked = [c for c in candidates if c.recheck is not None]
        fresh = iter(self._read([c.recheck for c in checked if c.recheck is not None]))
        out = []
        for candidate in candidates:
            if candidate.recheck is None:
                out.append(candidate)
                continue
            replies = next(fresh)
            error = _error_in(replies)
            if error is not None:
                candidate.unverified(f"re-read refused: {error}")
            elif candidate.recheck.holds(replies):
                out.append(candidate)
        return out

    def _read(self, rechecks: list[Recheck]) -> list[Any]:
        """Each recheck's replies (a list, or the exception that replaced them), one round trip."""
        if not rechecks:
            return []
        out: list[Any] = []
        if not self.atomic:
            plain = execute(self.client, [call for r in rechecks for call in r.calls])
            at = 0
            for r in rechecks:
                out.append(plain[at:at + len(r.calls)])
                at += len(r.calls)
            return out
        commands: list[tuple[Any, ...]] = []
        for r in rechecks:
            commands += [(b"MULTI",), *r.calls, (b"EXEC",)]
        replies = iter(execute(self.client, commands))
        for r in rechecks:
            queued = [next(replies) for _ in range(len(r.calls) + 1)]  # MULTI's OK, one QUEUED each
            fresh = next(replies)
            error = next((q for q in queued if isinstance(q, Exception)), None)
            out.append(error if error is not None else fresh if isinstance(fresh, Exception) else list(fresh))
        return out


def _error_in(replies: Any) -> str | None:
    """The first error among ``replies`` (or ``replies`` itself when it is one), as one line."""
    errors = [replies] if isinstance(replies, Exception) else [r for r in replies if isinstance(r, Exception)]
    if not errors:
        return None
    return (str(errors[0]).strip().splitlines() or [type(errors[0]).__name__])[0]
