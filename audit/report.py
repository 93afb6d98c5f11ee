"""Rendering an :class:`AuditResult`: human text and JSON (the fix plan: :mod:`audit.plan`)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from audit.engine import AuditResult, Finding, QueueReport
from audit.ownership import Unattributed
from audit.registry import RegistryReport
from audit.unverified import as_json, finding_text, header_lines, text_lines, unverified_count

#: Unattributed keys the text report names one by one (the JSON lists every one).
SHOWN_KEYS = 20


def _when(stamp: int) -> str:
    return dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def render_text(result: AuditResult, target: str) -> str:
    """The report printed by ``keysim audit`` (``target`` is the masked URL)."""
    lines = [f"keysim audit of {target}: {len(result.queues)} queue(s), "
             f"{len(result.findings)} finding(s), {result.seconds:.1f} s"]
    lines += header_lines(result)
    for report in result.queues:
        lines += _queue_text(report)
    if result.registries is not None:
        lines += _registries_text(result.registries)
    lines += _unattributed_text("ambiguous", result.ambiguous,
                                "several queues could own each; never a finding")
    lines += _unattributed_text("unrecognised", result.unrecognised,
                                "no Asynq key layout makes them; never a finding")
    return "\n".join(lines) + "\n"


def _registries_text(r: RegistryReport) -> list[str]:
    lines = [f"\nglobal keys (asynq:queues, registries, scheduler history): {r.keys} keys, "
             f"{r.bytes} B exact (MEMORY USAGE)"]
    for family in sorted(r.bytes_by_family):
        lines.append(f"  family {family:<17} {r.bytes_by_family[family]:>12} B")
    for registry_status in sorted(r.members):
        lines.append(f"  members {registry_status:<30} {r.members[registry_status]:>6}")
    for status in sorted(r.history):
        lines.append(f"  scheduler history {status:<12} {r.history[status]:>6}")
    for f in r.findings:
        lines.append(f"  {'LEAK ' if f.leaked else ''}{f.invariant} {f.kind}: {f.message}")
    for key, why in r.unverified:
        lines.append(f"  unverified {key}: {why}")
    return lines


def _unattributed_text(what: str, found: list[Unattributed], why: str) -> list[str]:
    if not found:
        return []
    lines = [f"\n{what}: {len(found)} key(s), {sum(u.bytes for u in found)} B ({why})"]
    for u in found[:SHOWN_KEYS]:
        owners = f": {' | '.join(repr(q) for q in u.candidates)}" if u.candidates else ""
        lines.append(f"  {u.key} ({u.type}, {u.bytes} B){owners}")
    if len(found) > SHOWN_KEYS:
        lines.append(f"  … and {len(found) - SHOWN_KEYS} more (--json lists every one)")
    return lines


def _queue_text(r: QueueReport) -> list[str]:
    unknown = f", size of {r.bytes_unknown} key(s) unknown (MEMORY USAGE refused)" if r.bytes_unknown else ""
    lines = [f"\nqueue {r.queue!r} ({'registered' if r.registered else 'NOT in asynq:queues'}): "
             f"{r.keys} keys, {r.bytes} B exact (MEMORY USAGE){unknown}"]
    for state in sorted(r.tasks_by_state):
        oldest = r.oldest.get(state)
        age = f", oldest {oldest[0]} at {_when(oldest[1])}" if oldest else ""
        count, nbytes = r.tasks_by_state[state], r.bytes_by_state[state]
        lines.append(f"  tasks {state:<12} {count:>9}  {nbytes:>12} B{age}")
    for family in sorted(r.bytes_by_family):
        lines.append(f"  family {family:<17} {r.bytes_by_family[family]:>12} B")
    asynq = r.asynq
    if asynq is not None:
        shown = f"{asynq.bytes} B" if asynq.bytes is not None else f"script fails: {asynq.crash}"
        lines.append(f"  Asynq's sampled MemoryUsage would say: {shown} (exact: {r.bytes} B, "
                     f"leaked: {r.leaked_bytes} B)")
    lines += ["  " + finding_text(f) for f in r.findings]
    return lines + text_lines(r.unverified)


def _finding_json(f: Finding) -> dict[str, Any]:
    return {"invariant": f.invariant, "kind": f.kind, "key": f.key, "task_id": f.task_id,
            "message": f.message, "leaked": f.leaked, "bytes": f.bytes}


def to_json(result: AuditResult, target: str) -> str:
    """The report as one JSON document."""
    doc = {
        "target": target, "seconds": round(result.seconds, 3), "redis_version": result.redis_version,
        "used_memory": result.used_memory, "findings": len(result.findings),
        "server": result.server, "unverified": unverified_count(result),
        "deadlines": result.capabilities.expiry.name, "deadlines_note": result.capabilities.expiry.note,
        "consistency": result.capabilities.consistency,
        "queues": [{
            "queue": r.queue, "registered": r.registered, "keys": r.keys, "bytes": r.bytes,
            "leaked_bytes": r.leaked_bytes, "tasks_by_state": dict(r.tasks_by_state),
            "bytes_by_state": dict(r.bytes_by_state), "bytes_by_family": dict(r.bytes_by_family),
            "oldest": {s: {"task_id": t, "at": at} for s, (t, at) in r.oldest.items()},
            "asynq_memory_usage": None if r.asynq is None else
            {"bytes": r.asynq.bytes, "crash": r.asynq.crash},
            "findings": [_finding_json(f) for f in r.findings],
            "unverified": [as_json(u) for u in r.unverified], "bytes_unknown": r.bytes_unknown,
        } for r in result.queues],
        "global": None if result.registries is None else _registries_json(result.registries),
        "ambiguous": [_unattributed_json(u) for u in result.ambiguous],
        "unrecognised": [_unattributed_json(u) for u in result.unrecognised],
    }
    return json.dumps(doc, indent=2, sort_keys=True)


def _registries_json(r: RegistryReport) -> dict[str, Any]:
    return {"keys": r.keys, "bytes": r.bytes, "bytes_by_family": dict(r.bytes_by_family),
            "members": dict(r.members), "scheduler_history": dict(r.history),
            "unverified": [{"key": k, "why": why} for k, why in r.unverified],
            "findings": [_finding_json(f) for f in r.findings]}


def _unattributed_json(u: Unattributed) -> dict[str, Any]:
    return {"key": u.key, "type": u.type, "bytes": u.bytes, "candidates": list(u.candidates)}

