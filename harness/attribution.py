"""Bug attribution: which bug-zoo defect a failure of the stateful machine points to.

:func:`attribute` looks at what was found — the violation's :class:`model.invariants.Kind` or
the machine's own :class:`harness.leaks.Disagreement`, the keys it is about, the task's hash —
and at the operations the failing step ran (:class:`Op`). It never reads a message: messages
are for people and may be reworded freely (tests/test_attribution.py scrambles them).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple

from harness.leaks import Disagreement
from model import keys as keyspace
from model.invariants import Family, Invariant, Kind, classify
from model.states import TaskState
from model.transitions import Outcome


class Op(NamedTuple):
    """One operation a step ran: its name, arguments and outcome (as the coverage counts it)."""

    name: str
    args: tuple[Any, ...]
    outcome: str


def attribute(kind: Kind | Disagreement | None, ops: Sequence[Op], *,
              task_id: str | None = None, task: Mapping[str, Any] | None = None,
              keys: Collection[str] = (), answer: Any = None,
              self_trimmed: Collection[str] = ()) -> str | None:
    """The bug-zoo defect (``BZ-n``; ``BZ-a/BZ-b`` when two fit; ``pause_unregistered`` for that
    quirk) a failure points to, from what was found and which operations ran in the step that
    found it; None when none is recognised.

    ``task_id`` and ``task`` are the task a violation is about and its hash in the keyspace
    (None when it has none); ``keys`` the keys the failure is about (for a disagreement, the
    keys whose values differ or survived); ``answer`` the broker's answer when an operation
    answered differently; ``self_trimmed`` the ids an archive trimmed from the index it had
    just added them to.

    >>> attribute(Kind.ORPHAN_GROUP, [Op("forward_if_ready", (), "ok")])
    'BZ-11'
    """
    names = {op.name for op in ops}
    if kind is Kind.STUB:  # an HSET on a missing task: write_result's leaves only a result
        return "BZ-18" if task is not None and "result" in task else "BZ-17"
    if kind is Kind.ZOMBIE and task is not None \
            and task.get("state") == TaskState.ARCHIVED.value:  # an archive trim kept the hash
        if task_id in self_trimmed:
            return "BZ-16"
        return "BZ-1" if "archive" in names else "BZ-2"  # server path / inspector archive ops
    invariant = kind.invariant if isinstance(kind, Kind) else None
    failed_script = isinstance(answer, tuple) and answer[0] == "script_error"
    if names & {"mark_as_complete", "archive"} and (
            invariant in _PARTIAL_WRITE_INVARIANTS
            or (kind is Disagreement.ANSWER_DIFFERS and failed_script)):
        return "BZ-20" if "mark_as_complete" in names else "BZ-15"  # a script died part-way
    if invariant is Invariant.LOCK_OWNER_ALIVE:
        return _lock_bug(ops)
    if invariant is Invariant.GROUPS_REGISTERED:
        return _group_bug(kind, ops)
    if invariant is Invariant.AGGREGATION_SETS_INDEXED:
        return "BZ-8"
    if invariant is Invariant.QUEUE_REGISTERED:
        if names & {"pause", "unpause"}:
            return "pause_unregistered"
        # An enqueue that left its queue unregistered: the client's cache skipped the SADD.
        return "BZ-13" if names & _ENQUEUES and "remove_queue" not in names else "BZ-12"
    if isinstance(kind, Disagreement):
        return _disagreement_bug(kind, names, _families(keys))
    return None


#: The client operations that register their queue.
_ENQUEUES = frozenset({"enqueue", "enqueue_unique", "schedule", "schedule_unique",
                       "add_to_group", "add_to_group_unique"})

#: What a script that dies between its writes breaks: a hash, an index entry or a lease
#: without its counterpart.
_PARTIAL_WRITE_INVARIANTS = frozenset({
    Invariant.NO_ORPHAN_HASH,
    Invariant.NO_DANGLING_ENTRY,
    Invariant.ACTIVE_MATCHES_LEASE,
})


def _lock_bug(ops: Sequence[Op]) -> str | None:
    """Which early-release defect left a lock whose owner is gone or does not name it: the
    lock a refused unique enqueue took (BZ-5); inspector deletes (BZ-3, and BZ-4 for pending
    and aggregating); anything else — group-unique tasks, set deletion, archive trims,
    RemoveQueue — is BZ-4's."""
    unique = {"enqueue_unique", "schedule_unique", "add_to_group_unique"}
    if any(op.name in unique and op.outcome == Outcome.CONFLICT.value for op in ops):
        return "BZ-5"
    states = {op.args[1] for op in ops if op.name == "delete_all_tasks" and len(op.args) > 1}
    if any(op.name == "delete_task" for op in ops) or states - _BZ4_STATES:
        return "BZ-3"
    return "BZ-3/BZ-4" if states else "BZ-4"


#: The bulk deletes whose lock release BZ-4 (and BZ-3) drop; BZ-3 alone drops the others.
_BZ4_STATES = frozenset({TaskState.PENDING, TaskState.AGGREGATING})


def _group_bug(kind: Kind | Disagreement | None, ops: Sequence[Op]) -> str | None:
    """Stale group: the check that emptied it; orphan group: what put tasks back in it."""
    if kind is Kind.STALE_GROUP:
        return "BZ-9"
    moved = {op.name for op in ops if op.outcome == Outcome.OK.value}
    found = [bug for bug, op in (("BZ-10", "reclaim_stale_aggregation_sets"),
                                 ("BZ-11", "forward_if_ready")) if op in moved]
    return "/".join(found) or None


def _disagreement_bug(kind: Disagreement, names: set[str], families: set[Family]) -> str | None:
    """A queue removal that left keys (BZ-12); a lease or active entry the drain, or the
    recoverer, could not clear (BZ-7: a dangling lease the reference drops); an aggregation
    set left in ``aggregation_sets`` (BZ-8)."""
    if kind is Disagreement.REMOVE_QUEUE_LEFT_KEYS:
        return "BZ-12"
    if kind is Disagreement.SURVIVED_DRAIN:
        return "BZ-7" if families & {Family.LEASE, Family.ACTIVE} else None
    if "recover" in names and Family.LEASE in families:
        return "BZ-7"
    if "delete_aggregation_set" in names and Family.AGGREGATION_SETS in families:
        return "BZ-8"
    return None


def _families(keys: Collection[str]) -> set[Family]:
    """The key families among ``keys`` (keys no queue's key function makes are left out)."""
    found = set()
    for key in keys:
        queue = keyspace.queue_of(key)
        info = classify(queue, key) if queue is not None else None
        if info is not None:
            found.add(info.family)
    return found
