"""The transition table (spec §2.3) as data: the single source of truth for the lifecycle.

Each :class:`Transition` is one operation that changes task or queue keys in the **reference**
(leak-free) design: who performs it, the states it leaves and enters, the guards it checks
(and the outcome each returns), and the key effects it implies. The diagram, the reference
model, the exploration, the coverage gate, the broker's script registry and the docs all read
this table; the Asynq variants' divergences live in ``broker.variants`` as named quirks.

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

from model.states import Actor, TaskState

P, S, A, R = TaskState.PENDING, TaskState.SCHEDULED, TaskState.ACTIVE, TaskState.RETRY
AR, C, AG, D = TaskState.ARCHIVED, TaskState.COMPLETED, TaskState.AGGREGATING, TaskState.DELETED


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


@dataclass(frozen=True)
class Guard:
    """A condition an operation checks before writing, and the outcome it returns when it fails."""

    condition: str
    outcome: Outcome


@dataclass(frozen=True)
class Effect:
    """One key effect: a Redis command on a key family named by a function of ``model.keys``."""

    command: str
    key: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.command} {self.key}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
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
    effects: tuple[Effect, ...]
    lock: str = "untouched"
    summary: str = ""

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


def _g(*pairs: tuple[str, Outcome]) -> tuple[Guard, ...]:
    return tuple(Guard(c, o) for c, o in pairs)


def _e(*triples: tuple[str, ...]) -> tuple[Effect, ...]:
    return tuple(Effect(*t) for t in triples)


_EXISTS = ("task hash already exists", Outcome.CONFLICT)
_LOCKED = ("unique lock held by another task", Outcome.DUPLICATE)
_NOT_ACTIVE = ("id not in active, not in lease or hash missing", Outcome.NOT_FOUND)
_NO_TASK = ("no task hash with this id", Outcome.NOT_FOUND)
_IS_ACTIVE = ("task is active", Outcome.TASK_ACTIVE)
_UNKNOWN_QUEUE = ("queue not in asynq:queues (as Asynq's inspector checks)",
                  Outcome.QUEUE_NOT_FOUND)
_IN_SET = ("task is staged in an aggregation set", Outcome.NOT_FOUND)
_STATS = ("INCR", "processed_daily", "EXPIREAT now+stats_ttl on first increment; total too")
_FSTATS = ("INCR", "failed_daily", "EXPIREAT now+stats_ttl on first increment; total too")
_TRIM = ("ZREM+DEL", "archived", "entries older than the cutoff and beyond the cap, "
         "never the id just archived; their hashes and locks are deleted too")
_RELEASE = "released if still owned (compare-and-delete via the hash's unique_key)"

_ROWS: tuple[Transition, ...] = (
    # --- client -------------------------------------------------------------------------------
    Transition("enqueue", "T1", Actor.CLIENT, "enqueue", Scope.TASK, (D,), (P,), _g(_EXISTS),
               _e(("SADD", "ALL_QUEUES"), ("HSET", "task", "msg, state=pending, pending_since"),
                  ("LPUSH", "pending")),
               summary="new task, ready now"),
    Transition("enqueue_unique", "T2", Actor.CLIENT, "enqueue_unique", Scope.TASK, (D,), (P,),
               _g(_EXISTS, _LOCKED),
               _e(("SADD", "ALL_QUEUES"), ("SET NX EX", "unique", "owner id, TTL = unique ttl"),
                  ("HSET", "task", "msg, state=pending, pending_since, unique_key"),
                  ("LPUSH", "pending")),
               lock="acquired (the id is checked first, so a conflict takes no lock)"),
    Transition("schedule", "T3", Actor.CLIENT, "schedule", Scope.TASK, (D,), (S,), _g(_EXISTS),
               _e(("SADD", "ALL_QUEUES"), ("HSET", "task", "msg, state=scheduled, group if set"),
                  ("ZADD", "scheduled", "score = process_at")),
               summary="new task for later"),
    Transition("schedule_unique", "T4", Actor.CLIENT, "schedule_unique", Scope.TASK, (D,), (S,),
               _g(_EXISTS, _LOCKED),
               _e(("SADD", "ALL_QUEUES"),
                  ("SET NX EX", "unique", "TTL = process_at + unique ttl - now"),
                  ("HSET", "task", "msg, state=scheduled, unique_key, group if set"),
                  ("ZADD", "scheduled", "score = process_at")),
               lock="acquired"),
    Transition("add_to_group", "T5", Actor.CLIENT, "add_to_group", Scope.TASK, (D,), (AG,),
               _g(_EXISTS),
               _e(("SADD", "ALL_QUEUES"), ("HSET", "task", "msg, state=aggregating, group"),
                  ("ZADD", "group", "score = now"), ("SADD", "groups", "group name"))),
    Transition("add_to_group_unique", "T6", Actor.CLIENT, "add_to_group_unique", Scope.TASK,
               (D,), (AG,), _g(_EXISTS, _LOCKED),
               _e(("SADD", "ALL_QUEUES"), ("SET NX EX", "unique"),
                  ("HSET", "task", "msg, state=aggregating, group, unique_key"),
                  ("ZADD", "group", "score = now"), ("SADD", "groups", "group name")),
               lock="acquired; released when the aggregation set is deleted"),
    # --- server -------------------------------------------------------------------------------
    Transition("dequeue", "T8", Actor.SERVER, "dequeue", Scope.TASK, (P,), (A,),
               _g(("queue is paused", Outcome.PAUSED), ("pending list is empty", Outcome.EMPTY)),
               _e(("RPOPLPUSH", "pending", "tail of pending to head of active"),
                  ("HSET", "task", "state=active; HDEL pending_since"),
                  ("ZADD", "lease", "score = now + lease_duration")),
               summary="a worker takes the oldest pending task; an id without hash is dropped"),
    Transition("done", "T9/T10", Actor.SERVER, "done", Scope.TASK, (A,), (D,), _g(_NOT_ACTIVE),
               _e(("LREM", "active"), ("ZREM", "lease"), ("DEL", "task"), _STATS,
                  ("DEL", "unique", "if owned")),
               lock=_RELEASE, summary="success with retention 0, or RevokeTask"),
    Transition("mark_as_complete", "T11/T12", Actor.SERVER, "mark_as_complete", Scope.TASK,
               (A,), (C,), _g(_NOT_ACTIVE),
               _e(("LREM", "active"), ("ZREM", "lease"),
                  ("ZADD", "completed", "score = now + retention"),
                  ("HSET", "task", "msg with completed_at, state=completed"), _STATS,
                  ("DEL", "unique", "if owned")),
               lock=_RELEASE, summary="success with retention > 0"),
    Transition("requeue", "T13", Actor.SERVER, "requeue", Scope.TASK, (A,), (P,), _g(_NOT_ACTIVE),
               _e(("LREM", "active"), ("ZREM", "lease"), ("RPUSH", "pending", "next to dequeue"),
                  ("HSET", "task", "state=pending")),
               lock="kept", summary="shutdown abort"),
    Transition("retry_failure", "T14", Actor.SERVER, "retry", Scope.TASK, (A,), (R,),
               _g(_NOT_ACTIVE),
               _e(("LREM", "active"), ("ZREM", "lease"), ("ZADD", "retry", "score = retry_at"),
                  ("HSET", "task", "msg with retried+1, error, last_failed_at; state=retry"),
                  _STATS, _FSTATS),
               lock="kept", summary="failure with retries left (is_failure = true)"),
    Transition("retry_nonfailure", "T15", Actor.SERVER, "retry", Scope.TASK, (A,), (R,),
               _g(_NOT_ACTIVE),
               _e(("LREM", "active"), ("ZREM", "lease"), ("ZADD", "retry", "score = retry_at"),
                  ("HSET", "task", "msg with error, last_failed_at; state=retry")),
               lock="kept", summary="retry that does not count (is_failure = false)"),
    Transition("archive", "T16", Actor.SERVER, "archive", Scope.TASK, (A,), (AR,),
               _g(_NOT_ACTIVE),
               _e(("LREM", "active"), ("ZREM", "lease"), ("ZADD", "archived", "score = now"),
                  _TRIM, ("HSET", "task", "msg with error, last_failed_at; state=archived"),
                  _STATS, _FSTATS),
               lock="kept until TTL", summary="retries exhausted or SkipRetry"),
    Transition("forward", "T17", Actor.SERVER, "forward_if_ready", Scope.BULK, (S, R), (P, AG),
               (),
               _e(("ZREM", "scheduled", "ready ids, score <= now; retry likewise"),
                  ("LPUSH", "pending", "ids without group; HSET state=pending, pending_since"),
                  ("ZADD", "group", "ids with group; HSET state=aggregating; SADD groups")),
               lock="kept", summary="forwarder, every 5 s, batches of 100"),
    Transition("delete_expired_completed", "T25", Actor.SERVER, "delete_expired_completed_tasks",
               Scope.BULK, (C,), (D,), (),
               _e(("ZREM", "completed", "score <= now, up to janitor_batch_size per call"),
                  ("DEL", "task"))),
    Transition("delete_expired_archived", "—", Actor.SERVER, "delete_expired_archived_tasks",
               Scope.BULK, (AR,), (D,), (),
               _e(("ZREM", "archived", "score <= now - archive cutoff, in batches"),
                  ("DEL", "task"), ("DEL", "unique", "if owned")),
               lock=_RELEASE,
               summary="janitor applies the archive cutoff without waiting for a new archive "
                       "(reference design; Asynq applies it only when archiving)"),
    Transition("recover", "T18/T19", Actor.SERVER, "recover", Scope.BULK, (A,), (R, AR), (),
               _e(("ZRANGEBYSCORE", "lease", "score <= now - recover_skew"),
                  ("...", "retry", "Retry with ErrLeaseExpired while retried < max retry"),
                  ("...", "archived", "Archive otherwise")),
               lock="kept", summary="recoverer, every minute: lease-expired tasks"),
    Transition("extend_lease", "T20", Actor.SERVER, "extend_lease", Scope.TASK, (A,), (A,),
               _g(("id not in lease", Outcome.NOT_FOUND)),
               _e(("ZADD XX", "lease", "score = now + lease_duration")),
               summary="heartbeat, every 5 s"),
    Transition("aggregation_check", "T21", Actor.SERVER, "aggregation_check", Scope.BULK,
               (AG,), (AG,), (),
               _e(("ZREMRANGEBYRANK", "group", "oldest max_size ids, or all when due"),
                  ("ZADD", "group_set", "same ids and scores"),
                  ("ZADD", "aggregation_sets", "score = now + aggregation_timeout"),
                  ("SREM", "groups", "when the group is now empty")),
               summary="aggregator: group -> aggregation set"),
    Transition("delete_aggregation_set", "T23", Actor.SERVER, "delete_aggregation_set",
               Scope.BULK, (AG,), (D,), (),
               _e(("DEL", "task", "every member"), ("DEL", "group_set"),
                  ("ZREM", "aggregation_sets"), ("DEL", "unique", "members' locks, if owned")),
               lock=_RELEASE, summary="after the aggregated task was enqueued"),
    Transition("reclaim_stale_aggregation_sets", "T24", Actor.SERVER,
               "reclaim_stale_aggregation_sets", Scope.BULK, (AG,), (AG,), (),
               _e(("ZADD", "group", "members back with original scores"), ("DEL", "group_set"),
                  ("SADD", "groups", "group name"),
                  ("ZREMRANGEBYSCORE", "aggregation_sets", "deadline <= now")),
               summary="recoverer: sets whose aggregation timed out"),
    Transition("write_result", "T26", Actor.SERVER, "write_result", Scope.TASK,
               (P, S, A, R, AR, C, AG), (P, S, A, R, AR, C, AG), _g(_NO_TASK),
               _e(("HSET", "task", "result")),
               summary="ResultWriter.Write; never recreates a deleted hash"),
    Transition("pause", "T27", Actor.SERVER, "pause", Scope.QUEUE, (), (),
               _g(_UNKNOWN_QUEUE, ("queue already paused", Outcome.ALREADY)),
               _e(("SETNX", "paused", "now, no TTL"))),
    Transition("unpause", "T27", Actor.SERVER, "unpause", Scope.QUEUE, (), (),
               _g(_UNKNOWN_QUEUE, ("queue not paused", Outcome.ALREADY)),
               _e(("DEL", "paused"))),
    # --- inspector ----------------------------------------------------------------------------
    Transition("delete_task", "T28", Actor.INSPECTOR, "delete_task", Scope.TASK,
               (P, S, R, AR, C, AG), (D,), _g(_NO_TASK, _IS_ACTIVE, _IN_SET),
               _e(("LREM/ZREM", "state_index", "or the group zset; SREM groups if emptied"),
                  ("DEL", "unique", "if owned"), ("DEL", "task")),
               lock=_RELEASE),
    Transition("archive_task", "T29", Actor.INSPECTOR, "archive_task", Scope.TASK,
               (P, S, R, C, AG), (AR,),
               _g(_NO_TASK, _IS_ACTIVE, ("task already archived", Outcome.ALREADY), _IN_SET),
               _e(("LREM/ZREM", "state_index", "or the group zset; SREM groups if emptied"),
                  ("ZADD", "archived", "score = now"), ("HSET", "task", "state=archived"), _TRIM),
               lock="kept"),
    Transition("run_task", "T30", Actor.INSPECTOR, "run_task", Scope.TASK, (S, R, AR, C, AG),
               (P,),
               _g(_NO_TASK, _IS_ACTIVE, ("task already pending", Outcome.ALREADY), _IN_SET),
               _e(("LREM/ZREM", "state_index", "or the group zset; SREM groups if emptied"),
                  ("LPUSH", "pending"), ("HSET", "task", "state=pending")),
               lock="kept"),
)


def _bulk(kind: str, spec: str, state: TaskState, target: TaskState, effects: tuple[Effect, ...],
          lock: str) -> Transition:
    suffix = state.value
    return Transition(f"{kind}_{suffix}", spec, Actor.INSPECTOR, f"{kind}_tasks", Scope.BULK,
                      (state,), (target,), (), effects, lock=lock,
                      summary=f"every {suffix} task of the queue (or of one group)")


_DELETE_ALL = tuple(
    _bulk("delete_all", "T36/T37/T38", s, D,
          _e(("DEL", "unique", "if owned"), ("DEL", "task", "every member"),
             ("DEL", "state_index" if s is not AG else "group"),
             *((("SREM", "groups"),) if s is AG else ())), _RELEASE)
    for s in (P, S, R, AR, C, AG)
)
_ARCHIVE_ALL = tuple(
    _bulk("archive_all", "T33/T34/T35", s, AR,
          _e(("ZADD", "archived", "score = now"), ("HSET", "task", "state=archived"), _TRIM,
             ("DEL", "state_index" if s is not AG else "group"),
             *((("SREM", "groups"),) if s is AG else ())), "kept")
    for s in (P, S, R, AG)
)
_RUN_ALL = tuple(
    _bulk("run_all", "T31/T32", s, P,
          _e(("LPUSH", "pending"), ("HSET", "task", "state=pending"),
             ("DEL", "state_index" if s is not AG else "group"),
             *((("SREM", "groups"),) if s is AG else ())), "kept")
    for s in (S, R, AR, AG)
)
_QUEUE = (
    Transition("remove_queue", "T40", Actor.INSPECTOR, "remove_queue", Scope.QUEUE, (), (),
               _g(("the queue holds a task in any state", Outcome.QUEUE_NOT_EMPTY)),
               _e(("DEL", "queue_prefix", "every key of the queue: indexes, groups, paused, "
                   "counters, locks"), ("SREM", "ALL_QUEUES")),
               summary="DeleteQueue(q, force=false)"),
    Transition("remove_queue_force", "T41", Actor.INSPECTOR, "remove_queue", Scope.QUEUE,
               (P, S, R, AR, C, AG), (D,), _g(("active list is non-empty", Outcome.TASK_ACTIVE)),
               _e(("DEL", "task", "every task"),
                  ("DEL", "queue_prefix", "every key of the queue: indexes, groups, "
                   "aggregation sets, paused, counters, locks"), ("SREM", "ALL_QUEUES")),
               lock="deleted", summary="DeleteQueue(q, force=true)"),
)

#: Every transition, by name. Immutable.
TRANSITIONS: Mapping[str, Transition] = MappingProxyType(
    {t.name: t for t in (*_ROWS, *_DELETE_ALL, *_ARCHIVE_ALL, *_RUN_ALL, *_QUEUE)}
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


def operations() -> list[str]:
    """Every broker method named by the table, in table order, without repeats."""
    return list(dict.fromkeys(t.operation for t in TRANSITIONS.values()))


def bulk_states(kind: str) -> tuple[TaskState, ...]:
    """The states a bulk inspector op (``delete_all``, ``archive_all``, ``run_all``) accepts."""
    return tuple(t.sources[0] for t in TRANSITIONS.values() if t.operation == f"{kind}_tasks")


def reachable(edges: Iterable[tuple[TaskState, TaskState]]) -> set[TaskState]:
    """States reachable from DELETED (a new task) along ``edges``."""
    seen, todo = {D}, [D]
    adjacency: dict[TaskState, set[TaskState]] = {}
    for s, t in edges:
        adjacency.setdefault(s, set()).add(t)
    while todo:
        for nxt in adjacency.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen
