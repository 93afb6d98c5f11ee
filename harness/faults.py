"""The keyspace after injected faults: what the checks judge once a task hash was evicted.

An evicted hash leaves its index entries dangling until the design heals them (the next
operation on the id, a recoverer pass, ...). :func:`without_fault_entries` removes those entries
from a snapshot, so the invariants judge only what the broker itself wrote;
:func:`dangles_outside_completed` tells whether an evicted id may be reused yet.
"""

from __future__ import annotations

from typing import Any

from model import keys
from model.invariants import INDEX_FAMILIES, Family, classify
from model.snapshot import KeyEntry, KeyspaceSnapshot, KeyType, zset_value
from model.states import TaskState


def without_fault_entries(snap: KeyspaceSnapshot, evicted: set[str],
                          ever_evicted: set[str]) -> tuple[KeyspaceSnapshot, set[str]]:
    """``snap`` minus the index entries of ``evicted`` ids that are not the id's home (its hash
    is gone, or the id was reused and lives elsewhere), and the evicted ids with no such entry
    left (healed). Unique locks of owners ever evicted are not judged either: nothing can
    release them early."""
    if not ever_evicted:
        return snap, set()
    entries, touched = dict(snap.entries), set[str]()
    for key, entry in snap.entries.items():
        info = classify(snap.queue, key)
        if info is not None and info.family is Family.UNIQUE and entry.value in ever_evicted \
                and (snap.task_hash(str(entry.value)) or {}).get("unique_key") != key:
            del entries[key]  # its owner's hash went: only the TTL can free it now
        if info is None or info.family not in INDEX_FAMILIES:
            continue
        keep = [m for m in _members_with_scores(entry)
                if m[0] not in evicted or key in _homes(snap, m[0])]
        if len(keep) < len(_members_with_scores(entry)):
            touched.update(m for m, _ in _members_with_scores(entry) if m in evicted)
            if keep:
                entries[key] = _rebuilt(entry, keep)
            else:
                del entries[key]
                _unlist(entries, snap.queue, info, key)
    judged = KeyspaceSnapshot(snap.queue, snap.now_ms, entries, registered=snap.registered)
    return judged, evicted - touched


def dangles_outside_completed(snap: KeyspaceSnapshot, task_id: str) -> bool:
    """Whether an index other than ``completed`` still holds ``task_id`` (then an evicted id
    is not reused: a reused id sharing a list with its own stale entry would make the
    reference break I4 too)."""
    queue = snap.queue
    stale = {k for k, e in snap.entries.items()
             if (info := classify(queue, k)) is not None and info.family in INDEX_FAMILIES
             and task_id in e.members()}
    return bool(stale - {keys.completed(queue)})


def _homes(snap: KeyspaceSnapshot, task_id: str) -> set[str]:
    """The index keys where ``task_id`` belongs by its hash's state (none without a hash)."""
    h = snap.task_hash(task_id)
    state = h.get("state") if h is not None else None
    q = snap.queue
    if state == TaskState.ACTIVE.value:
        return {keys.active(q), keys.lease(q)}
    if state == TaskState.AGGREGATING.value:
        group = h.get("group") if h is not None else None
        return {k for k in snap.entries if (info := classify(q, k)) is not None
                and info.family in (Family.GROUP, Family.GROUP_SET) and info.name == group}
    try:
        return {keys.state_index(q, TaskState(str(state)))}
    except ValueError:
        return set()


def _unlist(entries: dict[str, KeyEntry], queue: str, info: Any, key: str) -> None:
    """A group or aggregation set that held only dangling ids leaves its registry too."""
    if info.family is Family.GROUP:
        registry, member = keys.groups(queue), info.name
    elif info.family is Family.GROUP_SET:
        registry, member = keys.aggregation_sets(queue), key
    else:
        return
    entry = entries.get(registry)
    if entry is None:
        return
    kept = [m for m in _members_with_scores(entry) if m[0] != member]
    if not kept:
        del entries[registry]
    elif entry.type is KeyType.SET:
        entries[registry] = KeyEntry(registry, KeyType.SET, frozenset(m for m, _ in kept),
                                     entry.expire_at_ms)
    else:
        entries[registry] = _rebuilt(entry, kept)


def _members_with_scores(entry: KeyEntry) -> list[tuple[str, float]]:
    if entry.type is KeyType.ZSET:
        return list(entry.zset())
    return [(m, 0.0) for m in entry.members()]


def _rebuilt(entry: KeyEntry, kept: list[tuple[str, float]]) -> KeyEntry:
    value = zset_value(kept) if entry.type is KeyType.ZSET else tuple(m for m, _ in kept)
    return KeyEntry(entry.key, entry.type, value, entry.expire_at_ms)
