"""Bug attribution: which bug-zoo defect a failure of the stateful machine points to.

:func:`attribute` looks at what broke (the check, the violation) and at the operations the
failing step ran (:class:`Op`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, NamedTuple

from model.states import TaskState
from model.transitions import Outcome


class Op(NamedTuple):
    """One operation a step ran: its name, arguments and outcome (as the coverage counts it)."""

    name: str
    args: tuple[Any, ...]
    outcome: str


def attribute(invariant: str, message: str, ops: Sequence[Op], task_id: str | None = None,
              answer: Any = None, self_trimmed: Collection[str] = ()) -> str | None:
    """The bug-zoo defect (``BZ-n``; ``BZ-a/BZ-b`` when two fit; ``pause_unregistered`` for that
    quirk) a failure points to, from what broke and which operations ran in the step that
    broke it; None when none is recognised.
    ``self_trimmed`` holds ids an archive trimmed from the index it had just added them to.

    >>> attribute("I7", "orphan group: g:g0 holds 1 task(s)", [Op("forward_if_ready", (), "ok")])
    'BZ-11'
    """
    names = {op.name for op in ops}
    if invariant == "I1" and "stub" in message:
        return "BZ-18" if "fields: result" in message else "BZ-17"
    if invariant == "I1" and "zombie" in message and "is archived" in message:
        if task_id in self_trimmed:
            return "BZ-16"
        return "BZ-1" if "archive" in names else "BZ-2"  # server path / inspector archive ops
    failed_script = isinstance(answer, tuple) and answer[0] == "script_error"
    if names & {"mark_as_complete", "archive"} and (
            invariant in ("I1", "I2", "I3") or (invariant == "agreement" and failed_script)):
        return "BZ-20" if "mark_as_complete" in names else "BZ-15"  # a script died part-way
    if invariant == "I6":
        return _lock_bug(message, ops)
    if invariant == "I7":
        return _group_bug(message, ops)
    judge = _BY_INVARIANT.get(invariant)
    return judge(message, names) if judge is not None else None


def _lock_bug(message: str, ops: Sequence[Op]) -> str | None:
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


def _group_bug(message: str, ops: Sequence[Op]) -> str | None:
    """Stale group: the check that emptied it; orphan group: what put tasks back in it."""
    if "stale group" in message:
        return "BZ-9"
    moved = {op.name for op in ops if op.outcome == Outcome.OK.value}
    found = [bug for bug, op in (("BZ-10", "reclaim_stale_aggregation_sets"),
                                 ("BZ-11", "forward_if_ready")) if op in moved]
    return "/".join(found) or None


def _leftover_bug(message: str, names: set[str]) -> str | None:
    if "remove_queue" in message:
        return "BZ-12"
    return "BZ-7" if ":lease" in message or ":active" in message else None


def _agreement_bug(message: str, names: set[str]) -> str | None:
    if "recover" in names and ":lease" in message:
        return "BZ-7"  # a dangling lease the reference drops
    if "delete_aggregation_set" in names and "aggregation_sets" in message:
        return "BZ-8"
    return None


_BY_INVARIANT: dict[str, Callable[[str, set[str]], str | None]] = {
    "I8": lambda m, n: "BZ-8",
    "I12": lambda m, n: "pause_unregistered" if n & {"pause", "unpause"} else "BZ-12",
    "drain": _leftover_bug, "agreement": _agreement_bug,
}
