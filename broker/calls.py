"""Each Lua script's call shape, written once: one builder per script, named after it, that
turns the operation's arguments, the virtual time and the policy into the script's KEYS and
ARGV, in the order its header declares (``tests/test_calls.py`` checks every builder against
its header). The broker's methods and the simulator's batch shortcuts both call these, so a
variant's say in what a call carries (the message's lock in KEYS: ``Quirk.LOCKS_KEPT_UNTIL_TTL``) lives here.

Builders validate nothing: callers check their input first. Times come in as ``now_ns``
(virtual nanoseconds); a builder derives the seconds and milliseconds its script wants.

>>> from model.policy import Policy
>>> dequeue("q", 1_767_225_600 * NS, Policy())
Call(script='dequeue', keys=['asynq:{q}:pending', 'asynq:{q}:paused', 'asynq:{q}:active', \
'asynq:{q}:lease'], args=[1767225630, 'asynq:{q}:t:'])
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import NamedTuple, Protocol

from broker.scripting import Arg
from broker.variants import Quirk, Variant
from model import keys
from model.clock import NS, utc_date
from model.message import TaskMessage
from model.policy import DAY, Policy
from model.states import TaskState

#: SCAN COUNT hint of the scripts that walk a queue's keys (snapshot, sweep_expired).
SCAN_COUNT = 1000
_MS = 1_000_000  # ns per ms


class Call(NamedTuple):
    """One script call: the script's name, its KEYS and its ARGV."""

    script: str
    keys: list[str]
    args: list[Arg]


class Task(Protocol):
    """What a processor outcome's call needs of a dequeued task: a :class:`TaskMessage`, or
    the simulator's undecoded ``Dequeued``."""

    @property
    def id(self) -> str: ...

    @property
    def queue(self) -> str: ...

    @property
    def unique_key(self) -> str: ...


class _QueueKeys:
    """One queue's fixed keys and prefixes, built once (by the ``model.keys`` functions), and
    its daily counters of the latest day asked for."""

    __slots__ = ("_daily", "_day", "active", "aggregation_sets", "archived", "completed",
                 "failed_total", "group_prefix", "groups", "lease", "paused", "pending",
                 "processed_total", "queue", "queue_prefix", "retry", "scheduled", "task_prefix",
                 "unique_prefix")

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.queue_prefix = keys.queue_prefix(queue)
        self.task_prefix = keys.task_prefix(queue)
        self.group_prefix = keys.group_prefix(queue)
        self.unique_prefix = keys.unique_prefix(queue)
        self.pending = keys.pending(queue)
        self.active = keys.active(queue)
        self.lease = keys.lease(queue)
        self.scheduled = keys.scheduled(queue)
        self.retry = keys.retry(queue)
        self.archived = keys.archived(queue)
        self.completed = keys.completed(queue)
        self.paused = keys.paused(queue)
        self.groups = keys.groups(queue)
        self.aggregation_sets = keys.aggregation_sets(queue)
        self.processed_total = keys.processed_total(queue)
        self.failed_total = keys.failed_total(queue)
        self._day, self._daily = -1, ("", "")

    def daily(self, now_s: int) -> tuple[str, str]:
        """The processed and failed counters of ``now_s``'s UTC day."""
        if now_s // DAY != self._day:  # they change at UTC midnight
            self._day = now_s // DAY
            date = utc_date(now_s)
            self._daily = keys.processed_daily(self.queue, date), keys.failed_daily(self.queue, date)
        return self._daily


_of = lru_cache(maxsize=1024)(_QueueKeys)


def _counted(k: _QueueKeys, now_s: int) -> list[str]:
    """KEYS of a failure: processed daily, processed total, failed daily, failed total."""
    processed_daily, failed_daily = k.daily(now_s)
    return [processed_daily, k.processed_total, failed_daily, k.failed_total]


def stats_deadline_ms(now_s: int, policy: Policy) -> int:
    """Virtual deadline of a daily counter first incremented at ``now_s``."""
    return (now_s + policy.stats_ttl) * 1000


def _succeeded(task: Task, k: _QueueKeys, now_s: int, variant: Variant) -> list[str]:
    """The KEYS a success ends with: processed daily, processed total and, where Asynq
    (BZ-4 variants) releases the lock the message names, that lock — only when it is a lock of
    the message's queue (a foreign key would leave the call's Cluster slot)."""
    succeeded = [k.daily(now_s)[0], k.processed_total]
    if variant.has(Quirk.LOCKS_KEPT_UNTIL_TTL) and task.unique_key.startswith(k.unique_prefix):
        succeeded.append(task.unique_key)
    return succeeded


def _with_lock(script: str, keys_: list[str], args: list[Arg], lock: str | None, ttl: int,
               now_ms: int) -> Call:
    """A client call, with the unique lock and its deadline appended when ``lock`` is set."""
    if lock is not None:
        keys_.append(lock)
        args.append(now_ms + ttl * 1000)
    return Call(script, keys_, args)


def _task_keys(queue: str, task_id: str) -> list[str]:
    """KEYS of the per-task inspector scripts: the hash, every state index but active, groups."""
    k = _of(queue)
    return [k.task_prefix + task_id, k.pending, k.scheduled, k.retry, k.archived, k.completed,
            k.groups]


def _bulk_source(queue: str, state: TaskState, group: str | None) -> tuple[str, str]:
    """The index a bulk call empties (the group's zset for AGGREGATING) and the group name
    ARGV carries ("" otherwise)."""
    if state is TaskState.AGGREGATING:
        assert group is not None, "a bulk call on AGGREGATING names its group"
        return keys.group(queue, group), group
    return keys.state_index(queue, state), ""


# --- client (T1–T6) --------------------------------------------------------------------------
def enqueue(queue: str, task_id: str, encoded: bytes, now_ns: int, lock: str | None = None,
            ttl: int = 0) -> Call:
    """T1 (T2 with ``lock``, held for ``ttl`` seconds): a new pending task."""
    k, now_ms = _of(queue), now_ns // _MS
    return _with_lock("enqueue", [k.task_prefix + task_id, k.pending],
                      [encoded, task_id, now_ns, now_ms], lock, ttl, now_ms)


def schedule(msg: TaskMessage, encoded: bytes, process_at: int, now_ns: int,
             lock: str | None = None, ttl: int = 0) -> Call:
    """T3 (T4 with ``lock``): a new task scheduled for ``process_at`` (Unix seconds)."""
    k, now_ms = _of(msg.queue), now_ns // _MS
    return _with_lock("schedule", [k.task_prefix + msg.id, k.scheduled],
                      [encoded, msg.id, process_at, msg.group_key, now_ms], lock, ttl, now_ms)


def add_to_group(msg: TaskMessage, encoded: bytes, now_ns: int, lock: str | None = None,
                 ttl: int = 0) -> Call:
    """T5 (T6 with ``lock``): a new task waiting in its group, ``msg.group_key``."""
    k, now_ms = _of(msg.queue), now_ns // _MS
    return _with_lock("add_to_group",
                      [k.task_prefix + msg.id, keys.group(msg.queue, msg.group_key), k.groups],
                      [encoded, msg.id, now_ns // NS, msg.group_key, now_ms], lock, ttl, now_ms)


# --- processor (T8–T16) -----------------------------------------------------------------------
def dequeue(queue: str, now_ns: int, policy: Policy) -> Call:
    """T8: the oldest pending task becomes active, leased until now + lease_duration."""
    k = _of(queue)
    return Call("dequeue", [k.pending, k.paused, k.active, k.lease],
                [now_ns // NS + policy.lease_duration, k.task_prefix])


def done(task: Task, now_ns: int, policy: Policy, variant: Variant) -> Call:
    """T9/T10: success with retention 0."""
    k, now_s = _of(task.queue), now_ns // NS
    return Call("done", [k.active, k.lease, k.task_prefix + task.id,
                         *_succeeded(task, k, now_s, variant)],
                [task.id, now_ns // _MS, stats_deadline_ms(now_s, policy)])


def mark_as_complete(msg: TaskMessage, encoded: bytes, now_ns: int, policy: Policy,
                     variant: Variant) -> Call:
    """T11/T12: success with retention: completed until now + msg.retention."""
    k, now_s = _of(msg.queue), now_ns // NS
    return Call("mark_as_complete",
                [k.active, k.lease, k.completed, k.task_prefix + msg.id,
                 *_succeeded(msg, k, now_s, variant)],
                [msg.id, encoded, now_s + msg.retention, now_ns // _MS,
                 stats_deadline_ms(now_s, policy)])


def requeue(queue: str, task_id: str) -> Call:
    """T13: back to pending, next in line."""
    k = _of(queue)
    return Call("requeue", [k.active, k.lease, k.pending, k.task_prefix + task_id], [task_id])


def retry(task: Task, encoded: bytes, retry_at: int, is_failure: bool, now_ns: int,
          policy: Policy) -> Call:
    """T14/T15: wait in retry until ``retry_at``; a failure counts."""
    k, now_s = _of(task.queue), now_ns // NS
    return Call("retry",
                [k.active, k.lease, k.retry, k.task_prefix + task.id, *_counted(k, now_s)],
                [task.id, encoded, retry_at, int(is_failure), now_ns // _MS,
                 stats_deadline_ms(now_s, policy)])


def archive(task: Task, encoded: bytes, now_ns: int, policy: Policy) -> Call:
    """T16: archived now, then the archive trimmed (cutoff, then cap); counted as failed."""
    k, now_s = _of(task.queue), now_ns // NS
    return Call("archive",
                [k.active, k.lease, k.archived, k.task_prefix + task.id, *_counted(k, now_s)],
                [task.id, encoded, now_s, now_s - policy.archive_cutoff, policy.archive_capacity,
                 k.task_prefix, now_ns // _MS, stats_deadline_ms(now_s, policy)])


# --- forwarder, janitor, recoverer (T17–T20, T25) ---------------------------------------------
def forward(queue: str, source: TaskState, now_ns: int, policy: Policy) -> Call:
    """T17: one batch of ready tasks from ``source`` (SCHEDULED or RETRY) to pending or a group."""
    k = _of(queue)
    return Call("forward", [keys.state_index(queue, source), k.pending, k.groups],
                [now_ns // NS, k.task_prefix, now_ns, k.group_prefix, policy.forward_batch])


def delete_expired_completed(queue: str, now_ns: int, policy: Policy) -> Call:
    """T25: one batch of completed tasks whose retention ended."""
    k = _of(queue)
    return Call("delete_expired_completed", [k.completed],
                [now_ns // NS, k.task_prefix, policy.janitor_batch_size])


def delete_expired_archived(queue: str, now_ns: int, policy: Policy) -> Call:
    """The reference janitor's archive cutoff: one batch of archived tasks older than it."""
    k = _of(queue)
    return Call("delete_expired_archived", [k.archived],
                [now_ns // NS - policy.archive_cutoff, k.task_prefix, policy.janitor_batch_size,
                 now_ns // _MS])


def list_lease_expired(queue: str, cutoff: int) -> Call:
    """T18: messages of tasks whose lease ended at or before ``cutoff`` (Unix seconds)."""
    k = _of(queue)
    return Call("list_lease_expired", [k.lease], [cutoff, k.task_prefix])


def drop_dangling_leases(queue: str, cutoff: int) -> Call:
    """Part of T19 (reference): leases ended by ``cutoff`` whose task hash is gone."""
    k = _of(queue)
    return Call("drop_dangling_leases", [k.lease, k.active], [cutoff, k.task_prefix])


def extend_lease(queue: str, task_ids: Iterable[str], now_ns: int, policy: Policy) -> Call:
    """T20: renew the leases of ``task_ids`` to now + lease_duration."""
    return Call("extend_lease", [_of(queue).lease],
                [now_ns // NS + policy.lease_duration, *task_ids])


# --- aggregator (T21–T24) ---------------------------------------------------------------------
def aggregation_check(queue: str, group: str, set_id: str, now_ns: int, policy: Policy) -> Call:
    """T21: stage a ready group's tasks in aggregation set ``set_id``."""
    k, now_s = _of(queue), now_ns // NS
    return Call("aggregation_check",
                [keys.group(queue, group), keys.group_set(queue, group, set_id),
                 k.aggregation_sets, k.groups],
                [policy.aggregation_max_size, policy.aggregation_max_delay,
                 policy.aggregation_grace, now_s + policy.aggregation_timeout, now_s, group])


def read_aggregation_set(queue: str, group: str, set_id: str) -> Call:
    """T22: an aggregation set's messages and deadline."""
    k = _of(queue)
    return Call("read_aggregation_set", [keys.group_set(queue, group, set_id), k.aggregation_sets],
                [k.task_prefix])


def delete_aggregation_set(queue: str, group: str, set_id: str, now_ns: int) -> Call:
    """T23: delete an aggregation set and its member tasks."""
    k = _of(queue)
    return Call("delete_aggregation_set",
                [keys.group_set(queue, group, set_id), k.aggregation_sets],
                [k.task_prefix, now_ns // _MS])


def reclaim_stale_aggregation_sets(queue: str, now_ns: int) -> Call:
    """T24: sets whose deadline passed go back into their groups."""
    k = _of(queue)
    return Call("reclaim_stale_aggregation_sets", [k.aggregation_sets, k.groups],
                [now_ns // NS, k.group_prefix])


# --- result writer and queue flag (T26, T27) --------------------------------------------------
def write_result(queue: str, task_id: str, data: bytes) -> Call:
    """T26: store ``data`` in the task's ``result`` field."""
    return Call("write_result", [_of(queue).task_prefix + task_id], [data])


def pause(queue: str, now_ns: int) -> Call:
    """T27: stop dequeuing ``queue``."""
    return Call("pause", [_of(queue).paused], [now_ns // NS])


def unpause(queue: str) -> Call:
    """T27: resume ``queue``."""
    return Call("unpause", [_of(queue).paused], [])


# --- inspector (T28–T41) ----------------------------------------------------------------------
def delete_task(queue: str, task_id: str, now_ns: int) -> Call:
    """T28: delete one task that is not active."""
    return Call("delete_task", _task_keys(queue, task_id),
                [task_id, _of(queue).group_prefix, now_ns // _MS])


def archive_task(queue: str, task_id: str, now_ns: int, policy: Policy) -> Call:
    """T29: archive one task, then trim the archive."""
    k, now_s = _of(queue), now_ns // NS
    return Call("archive_task", _task_keys(queue, task_id),
                [task_id, k.group_prefix, now_ns // _MS, now_s, now_s - policy.archive_cutoff,
                 policy.archive_capacity, k.task_prefix])


def run_task(queue: str, task_id: str) -> Call:
    """T30: make one task pending."""
    return Call("run_task", _task_keys(queue, task_id), [task_id, _of(queue).group_prefix])


def delete_all(queue: str, state: TaskState, group: str | None, now_ns: int) -> Call:
    """T36–T38: delete every task in ``state`` (of ``group`` for AGGREGATING)."""
    source, name = _bulk_source(queue, state, group)
    return Call("delete_all", [source, _of(queue).groups],
                [state.value, _of(queue).task_prefix, now_ns // _MS, name])


def archive_all(queue: str, state: TaskState, group: str | None, now_ns: int,
                policy: Policy) -> Call:
    """T33–T35: archive every task in ``state`` (of ``group`` for AGGREGATING), then trim."""
    source, name = _bulk_source(queue, state, group)
    k, now_s = _of(queue), now_ns // NS
    return Call("archive_all", [source, k.archived, k.groups],
                [state.value, k.task_prefix, now_ns // _MS, now_s, now_s - policy.archive_cutoff,
                 policy.archive_capacity, name])


def run_all(queue: str, state: TaskState, group: str | None) -> Call:
    """T31–T32: make every task in ``state`` (of ``group`` for AGGREGATING) pending."""
    source, name = _bulk_source(queue, state, group)
    k = _of(queue)
    return Call("run_all", [source, k.pending, k.groups], [state.value, k.task_prefix, name])


def remove_queue(queue: str, force: bool, found: Iterable[str] = ()) -> Call:
    """T40/T41: delete every key of the queue: its fixed keys, then every other key ``found``
    by SCAN (repeats and fixed keys among them are skipped)."""
    k = _of(queue)
    fixed = [k.pending, k.active, k.scheduled, k.retry, k.archived, k.lease, k.completed, k.groups,
             k.aggregation_sets]
    skip = set(fixed)
    return Call("remove_queue", fixed + [key for key in dict.fromkeys(found) if key not in skip],
                [int(force), k.task_prefix, k.group_prefix, k.queue_prefix])


# --- the harness's view: keyspace and clock (they SCAN the queue's prefix) ----------------------
# Their one KEY is the queue's prefix, not a key they touch: it routes the call to the queue's
# Cluster slot (a script without KEYS could run on any node).
def snapshot(queue: str) -> Call:
    """Every key of ``queue``, whatever its TTL."""
    return Call("snapshot", [_of(queue).queue_prefix], [keys.queue_pattern(queue), SCAN_COUNT])


def sweep_expired(queue: str, now_ns: int) -> Call:
    """Delete the queue's keys whose virtual deadline passed."""
    return Call("sweep_expired", [_of(queue).queue_prefix],
                [keys.queue_pattern(queue), now_ns // _MS, SCAN_COUNT])
