"""The transition table (spec §2.3) as data: the single source of truth for the lifecycle.

Each :class:`Transition` is one operation that changes task or queue keys in the **reference**
(leak-free) design: who performs it, the states it leaves and enters, and the guards it checks
(and the outcome each returns). The diagram, the reference model's method list, the
exploration, the replay, the coverage gate and the notebooks read this table. What each row
writes is spelled out in ``docs/reference-design.md``; the reference model implements it, and
the stateful machine and the replay compare the broker's keyspace with the model's, key by
key. The Asynq variants' divergences live in ``broker.variants`` as named quirks.

>>> TRANSITIONS["enqueue"].targets
(<TaskState.PENDING: 'pending'>,)
>>> sorted(t.name for t in by_actor(Actor.INSPECTOR))[:3]
['archive_all_aggregating', 'archive_all_pending', 'archive_all_retry']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from model.states import LIVE_STATES, Actor, TaskState


class Outcome(StrEnum):
    """What an operation returns. Every outcome other than OK and EMPTY writes nothing."""

    OK = "ok"
    EMPTY = "empty"  # nothing to do (empty queue, nothing ready, no expired entries)
    NOT_FOUND = "not_found"  # TaskNotFound / "NOT FOUND"
    CONFLICT = "conflict"  # ErrTaskIdConflict: the id is taken
    DUPLICATE = "duplicate"  # ErrDuplicateTask: the unique lock is held
    TASK_ACTIVE = "task_active"  # inspector refuses to touch an active task
    ALREADY = "already"  # already in the target state (archive archived, run pending, pause paused)
    PAUSED = "paused"  # dequeue skips a paused queue
    QUEUE_NOT_EMPTY = "queue_not_empty"  # non-force RemoveQueue on a queue with tasks
    QUEUE_NOT_FOUND = "queue_not_found"  # pause/unpause of a queue not in asynq:queues


class Scope(StrEnum):
    """How many tasks one call moves."""

    TASK = "task"  # one task id
    BULK = "bulk"  # every task of one index (delete_all, forward, janitor, ...)
    QUEUE = "queue"  # the queue itself (pause, remove)


@dataclass(frozen=True, kw_only=True)
class Guard:
    """A condition an operation checks before writing, and the outcome it returns when it fails."""

    condition: str
    outcome: Outcome


@dataclass(frozen=True, kw_only=True)
class Transition:
    """One row of the table.

    ``operation`` is the broker method that performs it (several rows may share one method, e.g.
    ``retry`` with is_failure true and false); ``spec`` cites the row of asynq-spec §2.3.
    """

    name: str
    spec: str
    actor: Actor
    operation: str
    scope: Scope
    sources: tuple[TaskState, ...]
    targets: tuple[TaskState, ...]
    guards: tuple[Guard, ...]

    @property
    def outcomes(self) -> tuple[Outcome, ...]:
        """Every outcome this transition can return: OK (or EMPTY for bulk work) and each guard's."""
        base = (Outcome.OK, Outcome.EMPTY) if self.scope is Scope.BULK else (Outcome.OK,)
        seen = dict.fromkeys(base + tuple(g.outcome for g in self.guards))
        return tuple(seen)

    @property
    def edges(self) -> tuple[tuple[TaskState, TaskState], ...]:
        """(source, target) pairs this transition can move a task along."""
        return tuple((s, t) for s in self.sources for t in self.targets)


_TASK_EXISTS = Guard(condition="task hash already exists", outcome=Outcome.CONFLICT)
_LOCK_HELD = Guard(condition="unique lock held by another task", outcome=Outcome.DUPLICATE)
_NOT_ACTIVE = Guard(condition="id not in active, not in lease or hash missing",
                    outcome=Outcome.NOT_FOUND)
_NO_TASK = Guard(condition="no task hash with this id", outcome=Outcome.NOT_FOUND)
_TASK_IS_ACTIVE = Guard(condition="task is active", outcome=Outcome.TASK_ACTIVE)
_UNKNOWN_QUEUE = Guard(condition="queue not in asynq:queues (as Asynq's inspector checks)",
                       outcome=Outcome.QUEUE_NOT_FOUND)
_STAGED_IN_SET = Guard(condition="task is staged in an aggregation set", outcome=Outcome.NOT_FOUND)

#: Every state in which a task hash exists and no worker holds the task.
_AT_REST = tuple(state for state in LIVE_STATES if state is not TaskState.ACTIVE)

_CLIENT_ROWS: tuple[Transition, ...] = (
    Transition(name="enqueue", spec="T1", actor=Actor.CLIENT, operation="enqueue",
               scope=Scope.TASK, sources=(TaskState.DELETED,), targets=(TaskState.PENDING,),
               guards=(_TASK_EXISTS,)),
    # The id is checked before the lock, so a conflict takes no lock.
    Transition(name="enqueue_unique", spec="T2", actor=Actor.CLIENT, operation="enqueue_unique",
               scope=Scope.TASK, sources=(TaskState.DELETED,), targets=(TaskState.PENDING,),
               guards=(_TASK_EXISTS, _LOCK_HELD)),
    Transition(name="schedule", spec="T3", actor=Actor.CLIENT, operation="schedule",
               scope=Scope.TASK, sources=(TaskState.DELETED,), targets=(TaskState.SCHEDULED,),
               guards=(_TASK_EXISTS,)),
    Transition(name="schedule_unique", spec="T4", actor=Actor.CLIENT,
               operation="schedule_unique", scope=Scope.TASK, sources=(TaskState.DELETED,),
               targets=(TaskState.SCHEDULED,), guards=(_TASK_EXISTS, _LOCK_HELD)),
    Transition(name="add_to_group", spec="T5", actor=Actor.CLIENT, operation="add_to_group",
               scope=Scope.TASK, sources=(TaskState.DELETED,), targets=(TaskState.AGGREGATING,),
               guards=(_TASK_EXISTS,)),
    Transition(name="add_to_group_unique", spec="T6", actor=Actor.CLIENT,
               operation="add_to_group_unique", scope=Scope.TASK, sources=(TaskState.DELETED,),
               targets=(TaskState.AGGREGATING,), guards=(_TASK_EXISTS, _LOCK_HELD)),
)

_SERVER_ROWS: tuple[Transition, ...] = (
    Transition(name="dequeue", spec="T8", actor=Actor.SERVER, operation="dequeue",
               scope=Scope.TASK, sources=(TaskState.PENDING,), targets=(TaskState.ACTIVE,),
               guards=(Guard(condition="queue is paused", outcome=Outcome.PAUSED),
                       Guard(condition="pending list is empty", outcome=Outcome.EMPTY))),
    # Success with retention 0, or RevokeTask.
    Transition(name="done", spec="T9/T10", actor=Actor.SERVER, operation="done",
               scope=Scope.TASK, sources=(TaskState.ACTIVE,), targets=(TaskState.DELETED,),
               guards=(_NOT_ACTIVE,)),
    # Success with retention > 0.
    Transition(name="mark_as_complete", spec="T11/T12", actor=Actor.SERVER,
               operation="mark_as_complete", scope=Scope.TASK, sources=(TaskState.ACTIVE,),
               targets=(TaskState.COMPLETED,), guards=(_NOT_ACTIVE,)),
    # Shutdown abort.
    Transition(name="requeue", spec="T13", actor=Actor.SERVER, operation="requeue",
               scope=Scope.TASK, sources=(TaskState.ACTIVE,), targets=(TaskState.PENDING,),
               guards=(_NOT_ACTIVE,)),
    # Two rows, one method: ``retry`` with is_failure true counts the failure, false does not.
    Transition(name="retry_failure", spec="T14", actor=Actor.SERVER, operation="retry",
               scope=Scope.TASK, sources=(TaskState.ACTIVE,), targets=(TaskState.RETRY,),
               guards=(_NOT_ACTIVE,)),
    Transition(name="retry_nonfailure", spec="T15", actor=Actor.SERVER, operation="retry",
               scope=Scope.TASK, sources=(TaskState.ACTIVE,), targets=(TaskState.RETRY,),
               guards=(_NOT_ACTIVE,)),
    # Retries exhausted or SkipRetry.
    Transition(name="archive", spec="T16", actor=Actor.SERVER, operation="archive",
               scope=Scope.TASK, sources=(TaskState.ACTIVE,), targets=(TaskState.ARCHIVED,),
               guards=(_NOT_ACTIVE,)),
    # A task with a group goes to its group, any other to pending.
    Transition(name="forward", spec="T17", actor=Actor.SERVER, operation="forward_if_ready",
               scope=Scope.BULK, sources=(TaskState.SCHEDULED, TaskState.RETRY),
               targets=(TaskState.PENDING, TaskState.AGGREGATING), guards=()),
    Transition(name="delete_expired_completed", spec="T25", actor=Actor.SERVER,
               operation="delete_expired_completed_tasks", scope=Scope.BULK,
               sources=(TaskState.COMPLETED,), targets=(TaskState.DELETED,), guards=()),
    # Reference design only: the janitor applies the archive cutoff without waiting for a new
    # archive (Asynq applies it only when archiving), hence no row of the spec.
    Transition(name="delete_expired_archived", spec="—", actor=Actor.SERVER,
               operation="delete_expired_archived_tasks", scope=Scope.BULK,
               sources=(TaskState.ARCHIVED,), targets=(TaskState.DELETED,), guards=()),
    # Lease-expired tasks: retry while retried < max retry, archive otherwise.
    Transition(name="recover", spec="T18/T19", actor=Actor.SERVER, operation="recover",
               scope=Scope.BULK, sources=(TaskState.ACTIVE,),
               targets=(TaskState.RETRY, TaskState.ARCHIVED), guards=()),
    Transition(name="extend_lease", spec="T20", actor=Actor.SERVER, operation="extend_lease",
               scope=Scope.TASK, sources=(TaskState.ACTIVE,), targets=(TaskState.ACTIVE,),
               guards=(Guard(condition="id not in lease", outcome=Outcome.NOT_FOUND),)),
    # Group -> aggregation set: the task stays aggregating.
    Transition(name="aggregation_check", spec="T21", actor=Actor.SERVER,
               operation="aggregation_check", scope=Scope.BULK,
               sources=(TaskState.AGGREGATING,), targets=(TaskState.AGGREGATING,), guards=()),
    # After the aggregated task was enqueued.
    Transition(name="delete_aggregation_set", spec="T23", actor=Actor.SERVER,
               operation="delete_aggregation_set", scope=Scope.BULK,
               sources=(TaskState.AGGREGATING,), targets=(TaskState.DELETED,), guards=()),
    # Aggregation set -> group, for sets whose aggregation timed out.
    Transition(name="reclaim_stale_aggregation_sets", spec="T24", actor=Actor.SERVER,
               operation="reclaim_stale_aggregation_sets", scope=Scope.BULK,
               sources=(TaskState.AGGREGATING,), targets=(TaskState.AGGREGATING,), guards=()),
    # ResultWriter.Write: the state is unchanged and a deleted hash is never recreated.
    Transition(name="write_result", spec="T26", actor=Actor.SERVER, operation="write_result",
               scope=Scope.TASK, sources=LIVE_STATES, targets=LIVE_STATES, guards=(_NO_TASK,)),
    Transition(name="pause", spec="T27", actor=Actor.SERVER, operation="pause",
               scope=Scope.QUEUE, sources=(), targets=(),
               guards=(_UNKNOWN_QUEUE,
                       Guard(condition="queue already paused", outcome=Outcome.ALREADY))),
    Transition(name="unpause", spec="T27", actor=Actor.SERVER, operation="unpause",
               scope=Scope.QUEUE, sources=(), targets=(),
               guards=(_UNKNOWN_QUEUE,
                       Guard(condition="queue not paused", outcome=Outcome.ALREADY))),
)

_INSPECTOR_TASK_ROWS: tuple[Transition, ...] = (
    Transition(name="delete_task", spec="T28", actor=Actor.INSPECTOR, operation="delete_task",
               scope=Scope.TASK, sources=_AT_REST, targets=(TaskState.DELETED,),
               guards=(_NO_TASK, _TASK_IS_ACTIVE, _STAGED_IN_SET)),
    Transition(name="archive_task", spec="T29", actor=Actor.INSPECTOR, operation="archive_task",
               scope=Scope.TASK,
               sources=tuple(state for state in _AT_REST if state is not TaskState.ARCHIVED),
               targets=(TaskState.ARCHIVED,),
               guards=(_NO_TASK, _TASK_IS_ACTIVE,
                       Guard(condition="task already archived", outcome=Outcome.ALREADY),
                       _STAGED_IN_SET)),
    Transition(name="run_task", spec="T30", actor=Actor.INSPECTOR, operation="run_task",
               scope=Scope.TASK,
               sources=tuple(state for state in _AT_REST if state is not TaskState.PENDING),
               targets=(TaskState.PENDING,),
               guards=(_NO_TASK, _TASK_IS_ACTIVE,
                       Guard(condition="task already pending", outcome=Outcome.ALREADY),
                       _STAGED_IN_SET)),
)


def _bulk_rows(kind: str, spec: str, sources: Iterable[TaskState],
               target: TaskState) -> tuple[Transition, ...]:
    """One inspector row per source state of the bulk method ``<kind>_tasks``."""
    return tuple(
        Transition(name=f"{kind}_{source.value}", spec=spec, actor=Actor.INSPECTOR,
                   operation=f"{kind}_tasks", scope=Scope.BULK, sources=(source,),
                   targets=(target,), guards=())
        for source in sources)


_INSPECTOR_BULK_ROWS: tuple[Transition, ...] = (
    *_bulk_rows("delete_all", "T36/T37/T38", _AT_REST, TaskState.DELETED),
    *_bulk_rows("archive_all", "T33/T34/T35",
                (TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRY, TaskState.AGGREGATING),
                TaskState.ARCHIVED),
    *_bulk_rows("run_all", "T31/T32",
                (TaskState.SCHEDULED, TaskState.RETRY, TaskState.ARCHIVED, TaskState.AGGREGATING),
                TaskState.PENDING),
)

_QUEUE_ROWS: tuple[Transition, ...] = (
    # DeleteQueue(q, force=false): refused while the queue holds anything.
    Transition(name="remove_queue", spec="T40", actor=Actor.INSPECTOR, operation="remove_queue",
               scope=Scope.QUEUE, sources=(), targets=(),
               guards=(Guard(condition="the queue holds a task in any state",
                             outcome=Outcome.QUEUE_NOT_EMPTY),)),
    # DeleteQueue(q, force=true): every task at rest is deleted with the queue.
    Transition(name="remove_queue_force", spec="T41", actor=Actor.INSPECTOR,
               operation="remove_queue", scope=Scope.QUEUE, sources=_AT_REST,
               targets=(TaskState.DELETED,),
               guards=(Guard(condition="active list is non-empty",
                             outcome=Outcome.TASK_ACTIVE),)),
)

#: Every transition, by name. Immutable.
TRANSITIONS: Mapping[str, Transition] = MappingProxyType(
    {t.name: t for t in (*_CLIENT_ROWS, *_SERVER_ROWS, *_INSPECTOR_TASK_ROWS,
                         *_INSPECTOR_BULK_ROWS, *_QUEUE_ROWS)}
)


def by_actor(actor: Actor) -> list[Transition]:
    """Transitions performed by ``actor``, in table order."""
    return [t for t in TRANSITIONS.values() if t.actor is actor]


def by_operation(operation: str) -> list[Transition]:
    """Transitions performed by one broker method (e.g. ``retry`` → two rows)."""
    rows = _BY_OPERATION.get(operation)
    if not rows:
        raise KeyError(f"no transition is performed by operation {operation!r}")
    return list(rows)


_BY_OPERATION: dict[str, tuple[Transition, ...]] = {
    op: tuple(t for t in TRANSITIONS.values() if t.operation == op)
    for op in dict.fromkeys(t.operation for t in TRANSITIONS.values())}


def bulk_states(kind: str) -> tuple[TaskState, ...]:
    """The states a bulk inspector op (``delete_all``, ``archive_all``, ``run_all``) accepts."""
    return tuple(t.sources[0] for t in TRANSITIONS.values() if t.operation == f"{kind}_tasks")
