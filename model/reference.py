"""The reference model: docs/reference-design.md executed in pure Python (no Redis).

:class:`ReferenceModel` implements every operation of :class:`model.api.KeyProtocol` over an
abstract in-memory store (:class:`QueueStore`, one per queue) and renders, on request, the exact
:class:`~model.snapshot.KeyspaceSnapshot` a Redis holding the same state would give. It is the
oracle the stateful tests compare the broker with, and the engine of :mod:`model.explore`.

>>> from model.message import TaskMessage
>>> m = ReferenceModel()
>>> m.enqueue(TaskMessage(type="email", payload=b"hi", id="t1", queue="default"))
>>> m.snapshot("default").members("asynq:{default}:pending")
('t1',)
>>> m.dequeue("default").id, m.state_of("default", "t1")
('t1', <TaskState.ACTIVE: 'active'>)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from model import keys
from model.clock import VirtualClock, utc_date
from model.endings import LEASE_EXPIRED, Ending, Finish
from model.errors import (
    AlreadyInStateError,
    DuplicateTaskError,
    QueueNotEmptyError,
    QueueNotFoundError,
    TaskActiveError,
    TaskIdConflictError,
    TaskNotFoundError,
)
from model.message import TaskMessage
from model.policy import MAX_INT64, Policy
from model.snapshot import FieldValue, KeyEntry, KeyspaceSnapshot, KeyType, Value, zset_value
from model.states import ZSET_STATES, TaskState
from model.validation import (
    check_bool,
    check_bulk_state,
    check_bytes,
    check_group,
    check_int,
    check_message,
    check_queue,
    check_set_id,
    check_task_id,
    check_text,
    check_ttl,
    check_unique_key,
)

#: Zset states whose index is named after the state.

Hash = dict[str, FieldValue]
ZSet = dict[str, int]


@dataclass
class QueueStore:
    """Everything one queue holds, in Redis terms but without key names.

    Lists keep Redis order (index 0 = head). Zsets map member → whole-second score. No
    collection is ever kept empty (Redis deletes empty lists, sets and zsets) except the
    per-state dicts of ``index``, which render as absent when empty. Locks and counters carry
    their virtual deadline in ms (None: no TTL); the model drops them once it has passed.
    """

    hashes: dict[str, Hash] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    active: list[str] = field(default_factory=list)
    lease: ZSet = field(default_factory=dict)
    #: scheduled, retry, archived, completed
    index: dict[TaskState, ZSet] = field(default_factory=lambda: {s: {} for s in ZSET_STATES})
    #: group name → the ``g:<group>`` zset
    groups: dict[str, ZSet] = field(default_factory=dict)
    #: aggregation-set key (``g:<group>:<set id>``) → its members
    agg_sets: dict[str, ZSet] = field(default_factory=dict)
    #: the ``aggregation_sets`` zset: set key → deadline (s)
    agg_deadlines: ZSet = field(default_factory=dict)
    #: the ``groups`` set
    group_names: set[str] = field(default_factory=set)
    #: lock key → (owner id, deadline ms)
    locks: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: counter key → (value, deadline ms or None)
    counters: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    #: the ``paused`` string (pause time, s), None when not paused
    paused: int | None = None

    def copy(self) -> QueueStore:
        """An independent copy (fast: the exploration clones a store per step)."""
        return QueueStore(
            hashes={i: dict(h) for i, h in self.hashes.items()},
            pending=list(self.pending),
            active=list(self.active),
            lease=dict(self.lease),
            index={s: dict(z) for s, z in self.index.items()},
            groups={g: dict(z) for g, z in self.groups.items()},
            agg_sets={k: dict(z) for k, z in self.agg_sets.items()},
            agg_deadlines=dict(self.agg_deadlines),
            group_names=set(self.group_names),
            locks=dict(self.locks),
            counters=dict(self.counters),
            paused=self.paused,
        )

    def holds_tasks(self) -> bool:
        """True when any task, index entry, group or aggregation set exists."""
        return bool(self.hashes or self.pending or self.active or self.lease or self.groups
                    or self.agg_sets or self.agg_deadlines or any(self.index.values()))


def ranked(zset: ZSet) -> list[str]:
    """Members in Redis order: by score, then member."""
    return sorted(zset, key=lambda m: (zset[m], m))


def _state(h: Hash) -> TaskState | None:
    value = h.get("state")
    try:
        return TaskState(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _text(h: Hash, name: str) -> str:
    value = h.get(name, "")
    return value if isinstance(value, str) else ""


def _lrem(items: list[str], member: str) -> None:
    """LREM key 0 member: drop every occurrence, in place."""
    items[:] = [x for x in items if x != member]


class ReferenceModel:
    """Asynq's key protocol in the leak-free reference design, as a pure-Python oracle.

    ``ReferenceModel(policy=None, clock=None)``: ``policy`` defaults to :class:`Policy()`,
    ``clock`` is the shared :class:`VirtualClock` (a new one when omitted). Every method reads
    the clock; refusals raise a :class:`~model.errors.KeysimError` and write nothing (client
    operations register the queue first, as Asynq's client does).
    """

    def __init__(self, policy: Policy | None = None, clock: VirtualClock | None = None) -> None:
        self.policy = policy if policy is not None else Policy()
        self.clock = clock if clock is not None else VirtualClock()
        self._stores: dict[str, QueueStore] = {}
        self._registered: set[str] = set()
        # Every change goes through store() (which bumps the count) right before it is made,
        # so a snapshot taken since at the same instant is still exact.
        self._stores_handed_out = 0
        self._snapshots: dict[str, tuple[tuple[int, int], KeyspaceSnapshot]] = {}

    # --- time ----------------------------------------------------------------------------------
    @property
    def now_s(self) -> int:
        return self.clock.seconds

    @property
    def now_ms(self) -> int:
        return self.clock.milliseconds

    # --- store access --------------------------------------------------------------------------
    def store(self, queue: str) -> QueueStore:
        """The live store of ``queue`` (created empty on first use). Read it, do not write it."""
        self._stores_handed_out += 1
        store = self._stores.get(queue)
        if store is None:
            store = self._stores[queue] = QueueStore()
        return store

    def clone(self) -> ReferenceModel:
        """An independent model with the same state, policy and a copy of the clock."""
        twin = ReferenceModel(self.policy, VirtualClock(self.clock.now_ns))
        twin._stores = {q: s.copy() for q, s in self._stores.items()}
        twin._registered = set(self._registered)
        return twin

    def _begin(self, queue: str) -> QueueStore:
        """The queue's store with every TTL key whose deadline passed removed (lazy expiry)."""
        store = self.store(queue)
        now_ms = self.now_ms
        for name, (_, deadline) in list(store.locks.items()):
            if deadline <= now_ms:
                del store.locks[name]
        for name, (_, expiry) in list(store.counters.items()):
            if expiry is not None and expiry <= now_ms:
                del store.counters[name]
        return store

    def expire_due(self, queue: str) -> int:
        """Remove the queue's TTL keys whose virtual deadline passed; return how many."""
        check_queue(queue)
        store = self.store(queue)
        before = len(store.locks) + len(store.counters)
        self._begin(queue)
        return before - len(store.locks) - len(store.counters)

    # --- client (T1–T6) ------------------------------------------------------------------------
    def enqueue(self, msg: TaskMessage) -> None:
        """T1: a new pending task. Raises TaskIdConflictError when the id is taken."""
        check_message(msg)
        self._create(msg, TaskState.PENDING, lock_ttl=None)

    def enqueue_unique(self, msg: TaskMessage, ttl: int) -> None:
        """T2: as :meth:`enqueue`, holding the unique lock for ``ttl`` seconds."""
        check_message(msg)
        check_ttl(ttl, self.policy.min_unique_ttl)
        check_unique_key(msg)
        self._create(msg, TaskState.PENDING, lock_ttl=ttl)

    def schedule(self, msg: TaskMessage, process_at: int) -> None:
        """T3: a new task due at ``process_at``."""
        check_message(msg)
        check_int("process_at", process_at)
        self._create(msg, TaskState.SCHEDULED, lock_ttl=None, score=process_at)

    def schedule_unique(self, msg: TaskMessage, process_at: int, ttl: int) -> None:
        """T4: as :meth:`schedule`, holding the unique lock for ``ttl`` seconds."""
        check_message(msg)
        check_int("process_at", process_at)
        check_ttl(ttl, self.policy.min_unique_ttl)
        check_unique_key(msg)
        self._create(msg, TaskState.SCHEDULED, lock_ttl=ttl, score=process_at)

    def add_to_group(self, msg: TaskMessage, group: str) -> None:
        """T5: a new task waiting in ``group`` for aggregation."""
        check_message(msg)
        check_group(group)
        self._create(replace(msg, group_key=group), TaskState.AGGREGATING, lock_ttl=None)

    def add_to_group_unique(self, msg: TaskMessage, group: str, ttl: int) -> None:
        """T6: as :meth:`add_to_group`, holding the unique lock for ``ttl`` seconds."""
        check_message(msg)
        check_group(group)
        check_ttl(ttl, self.policy.min_unique_ttl)
        check_unique_key(msg)
        self._create(replace(msg, group_key=group), TaskState.AGGREGATING, lock_ttl=ttl)

    def _create(self, msg: TaskMessage, state: TaskState, lock_ttl: int | None,
                score: int = 0) -> None:
        """The enqueue family: register, check the id, take the lock, write hash and index."""
        queue, task_id = msg.queue, msg.id
        lock = None
        if lock_ttl is not None:
            lock = msg.unique_key or keys.unique(queue, msg.type, msg.payload)
            msg = replace(msg, unique_key=lock)
        self._registered.add(queue)  # before the script, whatever it answers
        store = self._begin(queue)
        if task_id in store.hashes:
            raise TaskIdConflictError(f"task id {task_id!r} already exists in queue {queue!r}")
        if lock is not None:
            if lock in store.locks:
                raise DuplicateTaskError(f"unique lock {lock} is held by {store.locks[lock][0]!r}")
            assert lock_ttl is not None
            store.locks[lock] = (task_id, self.now_ms + lock_ttl * 1000)
        fields: Hash = {"msg": msg, "state": state.value}
        if lock is not None:
            fields["unique_key"] = lock
        if state is TaskState.PENDING:
            fields["pending_since"] = str(self.clock.now_ns)
            store.pending.insert(0, task_id)
        elif state is TaskState.SCHEDULED:
            if msg.group_key:
                fields["group"] = msg.group_key
            store.index[TaskState.SCHEDULED][task_id] = score
        else:
            fields["group"] = msg.group_key
            self._into_group(store, msg.group_key, {task_id: self.now_s})
        store.hashes[task_id] = fields

    # --- server: processing (T8–T16) -----------------------------------------------------------
    def dequeue(self, queue: str) -> TaskMessage | None:
        """T8: the oldest pending task, now active with a lease; None when empty or paused."""
        check_queue(queue)
        store = self._begin(queue)
        if store.paused is not None:
            return None
        while store.pending:
            task_id = store.pending.pop()
            h = store.hashes.get(task_id)
            if h is None:
                continue  # an id without a hash is dropped, never given a stub
            store.active.insert(0, task_id)
            h["state"] = TaskState.ACTIVE.value
            h.pop("pending_since", None)
            store.lease[task_id] = self.now_s + self.policy.lease_duration
            msg = h.get("msg")
            return msg if isinstance(msg, TaskMessage) else None
        return None

    def done(self, msg: TaskMessage) -> None:
        """T9/T10: success without retention: the hash goes, the lock is released."""
        store = self._leave_active(msg)
        self._release_lock(store, msg.id)
        del store.hashes[msg.id]
        self._count(store, msg.queue, failed=False)

    def mark_as_complete(self, msg: TaskMessage) -> None:
        """T11/T12: completed until now + msg.retention; the lock is released."""
        store = self._leave_active(msg)
        now = self.now_s
        store.index[TaskState.COMPLETED][msg.id] = now + msg.retention
        self._set(store, msg.id, msg=msg.completed(now), state=TaskState.COMPLETED.value)
        self._release_lock(store, msg.id)
        self._count(store, msg.queue, failed=False)

    def requeue(self, msg: TaskMessage) -> None:
        """T13: back to pending, next in line (RPUSH; no pending_since)."""
        store = self._leave_active(msg)
        store.pending.append(msg.id)
        self._set(store, msg.id, state=TaskState.PENDING.value)

    def retry(self, msg: TaskMessage, retry_at: int, error: str, is_failure: bool = True) -> None:
        """T14/T15: into retry at ``retry_at``; counted (and retried+1) only when a failure."""
        check_int("retry_at", retry_at)
        check_text("error", error)
        check_bool("is_failure", is_failure)
        store = self._leave_active(msg)
        store.index[TaskState.RETRY][msg.id] = retry_at
        self._set(store, msg.id, msg=msg.failed(error, self.now_s, count=is_failure),
                  state=TaskState.RETRY.value)
        if is_failure:
            self._count(store, msg.queue, failed=True)

    def archive(self, msg: TaskMessage, error: str) -> None:
        """T16: into the archive (then trimmed); counted as processed and failed."""
        check_text("error", error)
        store = self._leave_active(msg)
        now = self.now_s
        store.index[TaskState.ARCHIVED][msg.id] = now
        self._archive_trim(store, {msg.id})
        self._set(store, msg.id, msg=msg.archived(error, now), state=TaskState.ARCHIVED.value)
        self._count(store, msg.queue, failed=True)

    def _leave_active(self, msg: TaskMessage) -> QueueStore:
        """Guards of every processor exit, then LREM active and ZREM lease."""
        check_message(msg)
        store = self._begin(msg.queue)
        task_id = msg.id
        if task_id not in store.active or task_id not in store.lease or task_id not in store.hashes:
            raise TaskNotFoundError(f"task {task_id!r} is not active in queue {msg.queue!r}")
        _lrem(store.active, task_id)
        del store.lease[task_id]
        return store

    def finishing(self, msg: TaskMessage, ending: Ending, error: str) -> Finish:
        """The call that ends the run of active task ``msg`` the way ``ending`` says, as the
        model specifies Asynq's processor: success → ``mark_as_complete`` with a retention, else
        ``done``; revoke → ``done``; abort → ``requeue``; skip-retry → ``archive``; any other
        failure → ``archive`` once ``msg`` has been retried ``msg.retry`` times, else ``retry``
        after the policy's delay (counted unless the failure is uncounted).

        >>> m = ReferenceModel()
        >>> tired = TaskMessage(type="t", payload=b"", id="t1", queue="q", retry=1, retried=1)
        >>> m.finishing(tired, Ending.FAILURE, "boom").operation
        'archive'
        >>> m.finishing(replace(tired, retried=0), Ending.UNCOUNTED_FAILURE, "boom").kwargs
        {'is_failure': False}
        """
        if ending is Ending.SUCCESS:
            return Finish("mark_as_complete" if msg.retention > 0 else "done", (msg,))
        if ending is Ending.REVOKE:
            return Finish("done", (msg,))
        if ending is Ending.ABORTED:
            return Finish("requeue", (msg,))
        if ending is Ending.SKIP_RETRY or msg.retried >= msg.retry:
            return Finish("archive", (msg, error))
        retry_at = self.now_s + self.policy.retry_delay_for(msg.id, msg.retried)
        return Finish("retry", (msg, retry_at, error),
                      {"is_failure": ending is not Ending.UNCOUNTED_FAILURE})

    # --- server: background loops (T17–T25) ---------------------------------------------------
    def forward_if_ready(self, queue: str) -> int:
        """T17: move due scheduled, then retry, tasks to pending (or their group), in batches
        of ``policy.forward_batch`` (:meth:`forward_batch`) until one comes back short."""
        check_queue(queue)
        moved = 0
        for state in (TaskState.SCHEDULED, TaskState.RETRY):
            while True:
                taken, n = self.forward_batch(queue, state)
                moved += n
                if taken < self.policy.forward_batch:
                    break
        return moved

    def forward_batch(self, queue: str, source: TaskState) -> tuple[int, int]:
        """One atomic batch of T17: up to ``policy.forward_batch`` due ids leave ``source``
        (scheduled or retry) for pending or their group; return (ids taken, tasks moved): an
        id without a hash is taken and dropped."""
        check_queue(queue)
        if source not in (TaskState.SCHEDULED, TaskState.RETRY):
            raise ValueError(f"source must be scheduled or retry, got {source!r}")
        store = self._begin(queue)
        batch = self._due(store.index[source], self.now_s, self.policy.forward_batch)
        return len(batch), sum(self._forward_one(store, task_id) for task_id in batch)

    def _forward_one(self, store: QueueStore, task_id: str) -> bool:
        """Forward one due id (already removed from its zset); False when it had no hash."""
        h = store.hashes.get(task_id)
        if h is None:
            return False
        group = _text(h, "group")
        if group:
            self._into_group(store, group, {task_id: self.now_s})
            h["state"] = TaskState.AGGREGATING.value
        else:
            store.pending.insert(0, task_id)
            h["state"] = TaskState.PENDING.value
            h["pending_since"] = str(self.clock.now_ns)
        return True

    @staticmethod
    def _due(zset: ZSet, limit: int, batch_size: int) -> list[str]:
        """Remove and return up to ``batch_size`` members scored <= limit, in Redis order."""
        batch = [m for m in ranked(zset) if zset[m] <= limit][:batch_size]
        for member in batch:
            del zset[member]
        return batch

    def delete_expired_completed_tasks(self, queue: str) -> int:
        """T25: delete completed tasks whose retention ran out, in batches
        (:meth:`delete_expired_completed_batch`); return how many ids left."""
        check_queue(queue)
        return self._batches(self.delete_expired_completed_batch, queue)

    def delete_expired_completed_batch(self, queue: str) -> int:
        """One atomic batch of T25: up to ``policy.janitor_batch_size`` completed ids whose
        retention ran out leave the index with their hashes; return how many."""
        check_queue(queue)
        store = self._begin(queue)
        batch = self._due(store.index[TaskState.COMPLETED], self.now_s,
                          self.policy.janitor_batch_size)
        for task_id in batch:
            store.hashes.pop(task_id, None)
        return len(batch)

    def delete_expired_archived_tasks(self, queue: str) -> int:
        """Apply the archive cutoff (step 1 of the trim) without a new archive, in batches
        (:meth:`delete_expired_archived_batch`); return how many."""
        check_queue(queue)
        return self._batches(self.delete_expired_archived_batch, queue)

    def delete_expired_archived_batch(self, queue: str) -> int:
        """One atomic batch of the archive cutoff: up to ``policy.janitor_batch_size`` archived
        ids scored <= now - archive_cutoff go, hash and lock too; return how many."""
        check_queue(queue)
        store = self._begin(queue)
        archived = store.index[TaskState.ARCHIVED]
        limit = self.now_s - self.policy.archive_cutoff
        batch = [i for i in ranked(archived) if archived[i] <= limit]
        for task_id in batch[:self.policy.janitor_batch_size]:
            self._drop_archived(store, task_id)
        return min(len(batch), self.policy.janitor_batch_size)

    def _batches(self, batch: Callable[[str], int], queue: str) -> int:
        """Run ``batch`` until it comes back short of ``policy.janitor_batch_size``."""
        total = 0
        while True:
            n = batch(queue)
            total += n
            if n < self.policy.janitor_batch_size:
                return total

    def list_lease_expired(self, queue: str, cutoff: int) -> list[TaskMessage]:
        """T18: messages of lease ids scored <= cutoff, in (score, id) order."""
        check_queue(queue)
        check_int("cutoff", cutoff)
        store = self._begin(queue)
        found = []
        for task_id in ranked(store.lease):
            msg = store.hashes.get(task_id, {}).get("msg")
            if store.lease[task_id] <= cutoff and isinstance(msg, TaskMessage):
                found.append(msg)
        return found

    def recover(self, queue: str) -> int:
        """T18/T19: every lease-expired task ends as a failure with :data:`LEASE_EXPIRED`
        (:meth:`finishing`: retried, or archived once its retries are used up); return how
        many moved.

        Expired lease ids whose hash is gone (evicted, deleted by hand) are first dropped from
        lease and active: with no message they could never be recovered. Not counted.
        """
        cutoff = self.now_s - self.policy.recover_skew
        self.drop_dangling_leases(queue, cutoff)
        moved = 0
        for msg in self.list_lease_expired(queue, cutoff):
            call = self.finishing(msg, Ending.FAILURE, LEASE_EXPIRED)
            try:
                getattr(self, call.operation)(*call.args, **call.kwargs)
            except TaskNotFoundError:  # not active after all: as Asynq's recoverer, move on
                continue
            moved += 1
        return moved

    def drop_dangling_leases(self, queue: str, cutoff: int) -> int:
        """Part of T19 (reference): lease ids scored <= cutoff whose hash is gone leave lease
        and active (with no message they could never be recovered); return how many."""
        check_queue(queue)
        check_int("cutoff", cutoff)
        store = self._begin(queue)
        gone = [i for i in ranked(store.lease) if store.lease[i] <= cutoff and i not in store.hashes]
        for task_id in gone:
            del store.lease[task_id]
            _lrem(store.active, task_id)
        return len(gone)

    def extend_lease(self, queue: str, *task_ids: str) -> int:
        """T20: ZADD XX lease now + lease_duration; return how many ids had a lease."""
        check_queue(queue)
        for task_id in task_ids:
            check_task_id(task_id)
        store = self._begin(queue)
        extended = 0
        for task_id in task_ids:
            if task_id in store.lease:
                store.lease[task_id] = self.now_s + self.policy.lease_duration
                extended += 1
        return extended

    # --- server: aggregation (T21–T24) ---------------------------------------------------------
    def aggregation_check(self, queue: str, group: str, set_id: str | None = None) -> str | None:
        """T21: stage a ready group into ``g:<group>:<set_id>``; return set_id, or None."""
        check_queue(queue)
        check_group(group)
        if set_id is not None:
            check_set_id(set_id)
        store = self._begin(queue)
        chosen = self._ready_members(store.groups.get(group, {}))
        if not chosen:
            return None
        set_id = set_id if set_id is not None else str(uuid.uuid4())
        key = keys.group_set(queue, group, set_id)
        members = store.groups[group]
        staged = store.agg_sets.setdefault(key, {})
        for task_id in chosen:
            staged[task_id] = members.pop(task_id)
        store.agg_deadlines[key] = self.now_s + self.policy.aggregation_timeout
        if not members:
            del store.groups[group]
            store.group_names.discard(group)
        return set_id

    def _ready_members(self, members: ZSet) -> list[str]:
        """Cases A (max size), B (max delay) and C (grace) of the aggregation check."""
        if not members:
            return []
        order = ranked(members)
        p, now = self.policy, self.now_s
        if p.aggregation_max_size > 0 and len(order) >= p.aggregation_max_size:
            return order[:p.aggregation_max_size]
        oldest, newest = members[order[0]], members[order[-1]]
        if p.aggregation_max_delay > 0 and oldest <= now - p.aggregation_max_delay:
            return order
        if newest <= now - p.aggregation_grace:
            return order
        return []

    def read_aggregation_set(
        self, queue: str, group: str, set_id: str
    ) -> tuple[list[TaskMessage], int]:
        """T22: the staged messages in set order and the set's deadline.

        Raises TaskNotFoundError when the set is not in ``aggregation_sets``.
        """
        check_queue(queue)
        check_group(group)
        check_set_id(set_id)
        store = self._begin(queue)
        key = keys.group_set(queue, group, set_id)
        if key not in store.agg_deadlines:
            raise TaskNotFoundError(f"aggregation set {key} not found")
        msgs = [store.hashes.get(i, {}).get("msg") for i in ranked(store.agg_sets.get(key, {}))]
        return [m for m in msgs if isinstance(m, TaskMessage)], store.agg_deadlines[key]

    def delete_aggregation_set(self, queue: str, group: str, set_id: str) -> None:
        """T23: delete the staged tasks (releasing their locks) and the set."""
        check_queue(queue)
        check_group(group)
        check_set_id(set_id)
        store = self._begin(queue)
        key = keys.group_set(queue, group, set_id)
        for task_id in ranked(store.agg_sets.pop(key, {})):
            self._delete_task_hash(store, task_id)
        store.agg_deadlines.pop(key, None)

    def reclaim_stale_aggregation_sets(self, queue: str) -> int:
        """T24: put the members of every timed-out set back into their group."""
        check_queue(queue)
        store = self._begin(queue)
        now = self.now_s
        stale = [k for k in ranked(store.agg_deadlines) if store.agg_deadlines[k] <= now]
        prefix = keys.group_prefix(queue)
        for key in stale:
            members = store.agg_sets.pop(key, {})
            if members:
                group = key[len(prefix):].split(":", 1)[0]
                self._into_group(store, group, members)
            del store.agg_deadlines[key]
        return len(stale)

    # --- server: misc (T26–T27) ----------------------------------------------------------------
    def write_result(self, queue: str, task_id: str, data: bytes) -> int:
        """T26: store ``data`` in the task's ``result`` field; never recreates a hash."""
        check_queue(queue)
        check_task_id(task_id)
        check_bytes("data", data)
        store = self._begin(queue)
        if task_id not in store.hashes:
            raise TaskNotFoundError(f"task {task_id!r} not found in queue {queue!r}")
        store.hashes[task_id]["result"] = data.decode("utf-8", "surrogateescape")
        return len(data)

    def pause(self, queue: str) -> None:
        """T27: pause the queue (dequeue returns None until unpaused)."""
        check_queue(queue)
        store = self._begin(queue)
        self._require_registered(queue)
        if store.paused is not None:
            raise AlreadyInStateError(f"queue {queue!r} is already paused")
        store.paused = self.now_s

    def unpause(self, queue: str) -> None:
        """T27: resume the queue."""
        check_queue(queue)
        store = self._begin(queue)
        self._require_registered(queue)
        if store.paused is None:
            raise AlreadyInStateError(f"queue {queue!r} is not paused")
        store.paused = None

    def _require_registered(self, queue: str) -> None:
        if queue not in self._registered:
            raise QueueNotFoundError(f"queue {queue!r} is not in asynq:queues")

    # --- inspector: one task (T28–T30) ---------------------------------------------------------
    def delete_task(self, queue: str, task_id: str) -> None:
        """T28: delete a task that is not active, releasing its lock."""
        store, h, state = self._inspect(queue, task_id)
        self._require_addressable(store, task_id, h, state)
        self._leave_source(store, task_id, h, state)
        self._delete_task_hash(store, task_id)

    def archive_task(self, queue: str, task_id: str) -> None:
        """T29: archive a task that is not active (msg unchanged), then trim the archive."""
        store, h, state = self._inspect(queue, task_id)
        if state is TaskState.ARCHIVED:
            raise AlreadyInStateError(f"task {task_id!r} is already archived")
        self._require_addressable(store, task_id, h, state)
        self._leave_source(store, task_id, h, state)
        store.index[TaskState.ARCHIVED][task_id] = self.now_s
        h["state"] = TaskState.ARCHIVED.value
        self._archive_trim(store, {task_id})

    def run_task(self, queue: str, task_id: str) -> None:
        """T30: make a task that is not active pending (LPUSH; no pending_since)."""
        store, h, state = self._inspect(queue, task_id)
        if state is TaskState.PENDING:
            raise AlreadyInStateError(f"task {task_id!r} is already pending")
        self._require_addressable(store, task_id, h, state)
        self._leave_source(store, task_id, h, state)
        store.pending.insert(0, task_id)
        h["state"] = TaskState.PENDING.value

    def _inspect(self, queue: str, task_id: str) -> tuple[QueueStore, Hash, TaskState | None]:
        """Common guards of the per-task inspector ops: the hash exists, the task is not active."""
        check_queue(queue)
        check_task_id(task_id)
        store = self._begin(queue)
        h = store.hashes.get(task_id)
        if h is None:
            raise TaskNotFoundError(f"task {task_id!r} not found in queue {queue!r}")
        state = _state(h)
        if state is TaskState.ACTIVE:
            raise TaskActiveError(f"task {task_id!r} is active")
        return store, h, state

    @staticmethod
    def _require_addressable(store: QueueStore, task_id: str, h: Hash,
                             state: TaskState | None) -> None:
        """An aggregating task staged in an aggregation set cannot be addressed."""
        if state is TaskState.AGGREGATING and task_id not in store.groups.get(_text(h, "group"), {}):
            raise TaskNotFoundError(f"task {task_id!r} is staged in an aggregation set")

    @staticmethod
    def _leave_source(store: QueueStore, task_id: str, h: Hash, state: TaskState | None) -> None:
        """Remove the id from the index its state names (a group: SREM groups when emptied)."""
        if state is TaskState.PENDING:
            _lrem(store.pending, task_id)
        elif state in store.index:
            store.index[state].pop(task_id, None)
        elif state is TaskState.AGGREGATING:
            group = _text(h, "group")
            members = store.groups.get(group, {})
            members.pop(task_id, None)
            if not members:
                store.groups.pop(group, None)
                store.group_names.discard(group)

    # --- inspector: bulk (T31–T38) -------------------------------------------------------------
    def delete_all_tasks(self, queue: str, state: TaskState, group: str | None = None) -> int:
        """T36–T38: delete every task of one index (releasing locks); return how many."""
        check_queue(queue)
        state, group = check_bulk_state("delete_all", state, group)
        store = self._begin(queue)
        deleted = [i for i in self._take_index(store, state, group) if i in store.hashes]
        for task_id in deleted:
            self._delete_task_hash(store, task_id)
        return len(deleted)

    def archive_all_tasks(self, queue: str, state: TaskState, group: str | None = None) -> int:
        """T33–T35: archive every task of one index, then trim; return how many."""
        check_queue(queue)
        state, group = check_bulk_state("archive_all", state, group)
        store = self._begin(queue)
        moved = [i for i in self._take_index(store, state, group) if i in store.hashes]
        now = self.now_s
        for task_id in moved:
            store.index[TaskState.ARCHIVED][task_id] = now
            store.hashes[task_id]["state"] = TaskState.ARCHIVED.value
        self._archive_trim(store, set(moved))
        return len(moved)

    def run_all_tasks(self, queue: str, state: TaskState, group: str | None = None) -> int:
        """T31/T32: make every task of one index pending; return how many."""
        check_queue(queue)
        state, group = check_bulk_state("run_all", state, group)
        store = self._begin(queue)
        moved = [i for i in self._take_index(store, state, group) if i in store.hashes]
        for task_id in moved:
            store.pending.insert(0, task_id)
            store.hashes[task_id]["state"] = TaskState.PENDING.value
        return len(moved)

    @staticmethod
    def _take_index(store: QueueStore, state: TaskState, group: str | None) -> list[str]:
        """DEL one index (SREM groups for a group); return its ids in index order."""
        if state is TaskState.PENDING:
            ids = list(store.pending)
            store.pending.clear()
        elif state is TaskState.AGGREGATING:
            assert group is not None
            ids = ranked(store.groups.pop(group, {}))
            store.group_names.discard(group)
        else:
            ids = ranked(store.index[state])
            store.index[state].clear()
        return ids

    # --- inspector: queue (T40–T41) ------------------------------------------------------------
    def remove_queue(self, queue: str, force: bool = False) -> None:
        """T40/T41: delete every key of the queue and unregister it."""
        check_queue(queue)
        check_bool("force", force)
        store = self._begin(queue)
        if force and store.active:
            raise TaskActiveError(f"queue {queue!r} has active tasks")
        if not force and store.holds_tasks():
            raise QueueNotEmptyError(f"queue {queue!r} is not empty")
        self._stores.pop(queue, None)
        self._registered.discard(queue)

    # --- shared effects ------------------------------------------------------------------------
    @staticmethod
    def _set(store: QueueStore, task_id: str, **fields: FieldValue) -> None:
        """HSET on an existing hash."""
        store.hashes[task_id].update(fields)

    @staticmethod
    def _into_group(store: QueueStore, group: str, members: ZSet) -> None:
        """ZADD g:<group> and SADD groups."""
        store.groups.setdefault(group, {}).update(members)
        store.group_names.add(group)

    @staticmethod
    def _release_lock(store: QueueStore, task_id: str) -> None:
        """Drop the lock named by the hash's unique_key while ``task_id`` still owns it."""
        lock = _text(store.hashes.get(task_id, {}), "unique_key")
        if lock and store.locks.get(lock, ("", 0))[0] == task_id:
            del store.locks[lock]

    def _delete_task_hash(self, store: QueueStore, task_id: str) -> None:
        """Release the task's lock, then DEL its hash."""
        self._release_lock(store, task_id)
        store.hashes.pop(task_id, None)

    def _count(self, store: QueueStore, queue: str, failed: bool) -> None:
        """Count one processed task (and a failure): daily keys with a TTL, totals without."""
        date = utc_date(self.now_s)
        self._incr(store, keys.processed_daily(queue, date), daily=True)
        self._incr(store, keys.processed_total(queue), daily=False)
        if failed:
            self._incr(store, keys.failed_daily(queue, date), daily=True)
            self._incr(store, keys.failed_total(queue), daily=False)

    def _incr(self, store: QueueStore, key: str, daily: bool) -> None:
        value, deadline = store.counters.get(key, (0, None))
        value = 1 if value == MAX_INT64 else value + 1
        if daily and value == 1:
            deadline = (self.now_s + self.policy.stats_ttl) * 1000
        store.counters[key] = (value, deadline)

    def _archive_trim(self, store: QueueStore, new: set[str]) -> None:
        """The archive trim: the cutoff, then the cap; ids in ``new`` go last."""
        self._archive_cutoff(store, new)
        archived = store.index[TaskState.ARCHIVED]
        overflow = len(archived) - self.policy.archive_capacity
        if overflow <= 0:
            return
        order = ranked(archived)
        victims = [i for i in order if i not in new] + [i for i in order if i in new]
        for task_id in victims[:overflow]:
            self._drop_archived(store, task_id)

    def _archive_cutoff(self, store: QueueStore, new: set[str]) -> int:
        """Drop archived ids (not new) scored <= now - archive_cutoff; return how many."""
        archived = store.index[TaskState.ARCHIVED]
        limit = self.now_s - self.policy.archive_cutoff
        old = [i for i in ranked(archived) if archived[i] <= limit and i not in new]
        for task_id in old:
            self._drop_archived(store, task_id)
        return len(old)

    def _drop_archived(self, store: QueueStore, task_id: str) -> None:
        store.index[TaskState.ARCHIVED].pop(task_id, None)
        self._delete_task_hash(store, task_id)

    # --- environment ---------------------------------------------------------------------------
    def evict(self, queue: str, task_id: str) -> None:
        """An environment fault, not an operation: the task's hash vanishes (Redis eviction under
        an ``allkeys-*`` policy, or a manual DEL) while its index entries stay, dangling."""
        check_queue(queue)
        check_task_id(task_id)
        self.store(queue).hashes.pop(task_id, None)

    def seed_totals(self, queue: str, value: int) -> None:
        """A starting state, not an operation: the queue's total counters (processed, failed)
        already hold ``value`` (1..MAX_INT64), as on a queue that has run for a long time."""
        check_queue(queue)
        if not 1 <= value <= MAX_INT64:
            raise ValueError(f"a total counter holds 1..{MAX_INT64}, got {value}")
        store = self.store(queue)
        for key in (keys.processed_total(queue), keys.failed_total(queue)):
            store.counters[key] = (value, None)

    # --- observation ---------------------------------------------------------------------------
    def snapshot(self, queue: str) -> KeyspaceSnapshot:
        """Every key of ``queue`` as Redis would hold it now (TTL keys past due are absent).

        Remembered until the next change or tick, so asking twice costs one rendering; the
        snapshot is shared: do not change it."""
        check_queue(queue)
        mark = (self._stores_handed_out, self.now_ms)
        known = self._snapshots.get(queue)
        if known is not None and known[0] == mark:
            return known[1]
        store = self._stores.get(queue)
        entries = {} if store is None else dict(self._render(queue, store))
        snap = KeyspaceSnapshot(queue, self.now_ms, entries, registered=queue in self._registered)
        self._snapshots[queue] = (mark, snap)
        return snap

    def _render(self, queue: str, store: QueueStore) -> Iterable[tuple[str, KeyEntry]]:
        def entry(key: str, kind: KeyType, value: Value, expire: int | None = None
                  ) -> tuple[str, KeyEntry]:
            return key, KeyEntry(key, kind, value, expire)

        for task_id, h in store.hashes.items():
            yield entry(keys.task(queue, task_id), KeyType.HASH, dict(h))
        for key, items in ((keys.pending(queue), store.pending), (keys.active(queue), store.active)):
            if items:
                yield entry(key, KeyType.LIST, tuple(items))
        zsets: list[tuple[str, ZSet]] = [
            (keys.lease(queue), store.lease), (keys.aggregation_sets(queue), store.agg_deadlines),
            *((keys.state_index(queue, s), z) for s, z in store.index.items()),
            *((keys.group(queue, g), z) for g, z in store.groups.items()),
            *store.agg_sets.items(),
        ]
        for key, zset in zsets:
            if zset:
                yield entry(key, KeyType.ZSET, zset_value(zset.items()))
        if store.group_names:
            yield entry(keys.groups(queue), KeyType.SET, frozenset(store.group_names))
        if store.paused is not None:
            yield entry(keys.paused(queue), KeyType.STRING, str(store.paused))
        now_ms = self.now_ms
        for key, (owner, deadline) in store.locks.items():
            if deadline > now_ms:
                yield entry(key, KeyType.STRING, owner, deadline)
        for key, (value, expiry) in store.counters.items():
            if expiry is None or expiry > now_ms:
                yield entry(key, KeyType.STRING, str(value), expiry)

    def queues(self) -> frozenset[str]:
        """Members of ``asynq:queues``."""
        return frozenset(self._registered)

    def state_of(self, queue: str, task_id: str) -> TaskState:
        """The state stored in the task's hash; DELETED when it has none."""
        h = self._stores[queue].hashes.get(task_id) if queue in self._stores else None
        if h is None:
            return TaskState.DELETED
        state = _state(h)
        if state is None:
            raise ValueError(f"task {task_id!r} has no valid state field: {h.get('state')!r}")
        return state

    def tasks(self, queue: str) -> dict[str, TaskState]:
        """Every task of ``queue`` with its state."""
        store = self._stores.get(queue)
        return {} if store is None else {i: self.state_of(queue, i) for i in sorted(store.hashes)}
