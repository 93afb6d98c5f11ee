"""The reference model (model/reference.py): exact keyspaces after small operation sequences.

Each test drives :class:`ReferenceModel` and compares the *whole* snapshot (or the keys the
operation touches) with what docs/reference-design.md prescribes: key names from model.keys,
Redis types, list order, zset scores, hash fields and virtual TTL deadlines.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from model import keys
from model.api import KeyProtocol
from model.clock import VirtualClock
from model.endings import LEASE_EXPIRED
from model.errors import (
    AlreadyInStateError,
    DuplicateTaskError,
    KeysimError,
    QueueNotEmptyError,
    TaskActiveError,
    TaskIdConflictError,
    TaskNotFoundError,
)
from model.message import TaskMessage
from model.policy import MAX_INT64, Policy
from model.reference import ReferenceModel
from model.snapshot import KeyEntry, KeyType, zset_value
from model.states import TaskState
from model.transitions import TRANSITIONS

Q = "q"
NOW = VirtualClock().seconds
NOW_NS = VirtualClock().now_ns
NOW_MS = NOW * 1000
TODAY = "2026-01-01"
P, S, A, R = TaskState.PENDING, TaskState.SCHEDULED, TaskState.ACTIVE, TaskState.RETRY
AR, C, AG = TaskState.ARCHIVED, TaskState.COMPLETED, TaskState.AGGREGATING
LOCK = keys.unique(Q, "email", b"hi")


def fixed_delay(retried: int, rng: random.Random) -> int:
    return 7


POLICY = Policy(retry_delay=fixed_delay)

# The model satisfies the protocol every implementation shares (checked by mypy).
_CONFORMS: type[KeyProtocol] = ReferenceModel


def msg(task_id: str = "t1", **fields: Any) -> TaskMessage:
    base: dict[str, Any] = {"type": "email", "payload": b"hi", "queue": Q}
    return TaskMessage(id=task_id, **{**base, **fields})


def make(policy: Policy = POLICY) -> ReferenceModel:
    return ReferenceModel(policy, VirtualClock())


@pytest.fixture
def m() -> ReferenceModel:
    return make()


# --- expected entries ------------------------------------------------------------------------
def task(task_id: str, state: TaskState, message: TaskMessage | None = None,
         **fields: str) -> KeyEntry:
    value: dict[str, Any] = {"msg": message or msg(task_id), "state": state.value, **fields}
    return KeyEntry(keys.task(Q, task_id), KeyType.HASH, value)


def lst(key: str, *ids: str) -> KeyEntry:
    return KeyEntry(key, KeyType.LIST, ids)


def zset(key: str, *pairs: tuple[str, int]) -> KeyEntry:
    return KeyEntry(key, KeyType.ZSET, zset_value(pairs))


def string(key: str, value: str, expire_at_ms: int | None = None) -> KeyEntry:
    return KeyEntry(key, KeyType.STRING, value, expire_at_ms)


def lock(owner: str, deadline_ms: int, key: str = LOCK) -> KeyEntry:
    return string(key, owner, deadline_ms)


def counters(processed: int, failed: int = 0, date: str = TODAY,
             deadline_s: int = NOW + POLICY.stats_ttl) -> list[KeyEntry]:
    out = [string(keys.processed_daily(Q, date), str(processed), deadline_s * 1000),
           string(keys.processed_total(Q), str(processed))]
    if failed:
        out += [string(keys.failed_daily(Q, date), str(failed), deadline_s * 1000),
                string(keys.failed_total(Q), str(failed))]
    return out


def assert_keyspace(model: ReferenceModel, *entries: KeyEntry | list[KeyEntry],
                    registered: bool = True) -> None:
    flat: list[KeyEntry] = []
    for e in entries:
        flat.extend(e if isinstance(e, list) else [e])
    snap = model.snapshot(Q)
    expected = {e.key: e for e in flat}
    assert snap.entries == expected, "\n" + "\n".join(
        f"{k}: got {snap.entries.get(k)}, want {expected.get(k)}"
        for k in sorted(set(snap.entries) | set(expected)) if snap.entries.get(k) != expected.get(k))
    assert snap.registered is registered
    assert snap.now_ms == model.now_ms


def active_task(model: ReferenceModel, message: TaskMessage) -> TaskMessage:
    """Enqueue ``message`` and dequeue it (it must be the only pending task)."""
    model.enqueue(message)
    got = model.dequeue(Q)
    assert got == message
    return got


# --- the table ---------------------------------------------------------------------------------
def test_every_transition_has_a_model_method() -> None:
    for row in TRANSITIONS.values():
        assert callable(getattr(ReferenceModel, row.operation, None)), row.name


def test_every_protocol_method_is_implemented() -> None:
    wanted = {n for n, _ in inspect.getmembers(KeyProtocol, inspect.isfunction)
              if not n.startswith("_")}
    assert wanted <= {n for n in dir(ReferenceModel) if callable(getattr(ReferenceModel, n))}
    assert "snapshot" in wanted and "remove_queue" in wanted


# --- client ------------------------------------------------------------------------------------
def test_enqueue_writes_hash_and_pushes_at_the_head(m: ReferenceModel) -> None:
    m.enqueue(msg("t1"))
    m.clock.advance(1)
    m.enqueue(msg("t2"))
    assert_keyspace(m,
                    task("t1", P, pending_since=str(NOW_NS)),
                    task("t2", P, pending_since=str(NOW_NS + 10**9)),
                    lst(keys.pending(Q), "t2", "t1"))
    assert m.queues() == {Q}


def test_enqueue_conflict_writes_nothing(m: ReferenceModel) -> None:
    m.enqueue(msg("t1"))
    before = m.snapshot(Q)
    with pytest.raises(TaskIdConflictError):
        m.enqueue(msg("t1", type="other"))
    assert m.snapshot(Q) == before


def test_enqueue_unique_takes_the_lock_and_names_it(m: ReferenceModel) -> None:
    m.enqueue_unique(msg("t1"), ttl=10)
    stored = msg("t1", unique_key=LOCK)
    assert_keyspace(m,
                    task("t1", P, stored, pending_since=str(NOW_NS), unique_key=LOCK),
                    lst(keys.pending(Q), "t1"),
                    lock("t1", NOW_MS + 10_000))


def test_enqueue_unique_duplicate_and_conflict_take_no_lock(m: ReferenceModel) -> None:
    m.enqueue(msg("t1"))
    with pytest.raises(TaskIdConflictError):
        m.enqueue_unique(msg("t1"), ttl=10)
    assert m.snapshot(Q).get(LOCK) is None
    m.enqueue_unique(msg("t2"), ttl=10)
    before = m.snapshot(Q)
    with pytest.raises(DuplicateTaskError) as err:
        m.enqueue_unique(msg("t3"), ttl=10)
    assert err.value.outcome.value == "duplicate"
    assert m.snapshot(Q) == before


def test_enqueue_unique_keeps_a_caller_supplied_lock_key(m: ReferenceModel) -> None:
    own = keys.unique_prefix(Q) + "custom"
    m.enqueue_unique(msg("t1", unique_key=own), ttl=3)
    snap = m.snapshot(Q)
    assert snap.get(own) == lock("t1", NOW_MS + 3000, own)
    assert snap.task_hash("t1")["unique_key"] == own  # type: ignore[index]


def test_lock_expires_at_its_virtual_deadline(m: ReferenceModel) -> None:
    m.enqueue_unique(msg("t1"), ttl=10)
    m.clock.advance(9.999)
    assert m.snapshot(Q).get(LOCK) == lock("t1", NOW_MS + 10_000)
    m.clock.advance(0.001)  # deadline <= now: gone
    assert m.snapshot(Q).get(LOCK) is None
    m.enqueue_unique(msg("t2"), ttl=5)
    assert m.snapshot(Q).get(LOCK) == lock("t2", NOW_MS + 15_000)


def test_done_does_not_release_a_lock_another_task_took_over(m: ReferenceModel) -> None:
    m.enqueue_unique(msg("t1"), ttl=1)
    m.clock.advance(1)
    m.enqueue_unique(msg("t2"), ttl=60)
    done = m.dequeue(Q)
    assert done is not None and done.id == "t1"
    m.done(done)
    assert m.snapshot(Q).get(LOCK) == lock("t2", NOW_MS + 61_000)


def test_schedule_and_schedule_unique(m: ReferenceModel) -> None:
    m.schedule(msg("t1", group_key="g"), process_at=NOW + 50)
    m.schedule_unique(msg("t2"), process_at=NOW + 60, ttl=70)
    assert_keyspace(m,
                    task("t1", S, msg("t1", group_key="g"), group="g"),
                    task("t2", S, msg("t2", unique_key=LOCK), unique_key=LOCK),
                    zset(keys.scheduled(Q), ("t1", NOW + 50), ("t2", NOW + 60)),
                    lock("t2", NOW_MS + 70_000))


def test_add_to_group_and_add_to_group_unique(m: ReferenceModel) -> None:
    m.add_to_group(msg("t1"), "g")
    m.clock.advance(2)
    m.add_to_group_unique(msg("t2"), "g", ttl=5)
    assert_keyspace(m,
                    task("t1", AG, msg("t1", group_key="g"), group="g"),
                    task("t2", AG, msg("t2", group_key="g", unique_key=LOCK), group="g",
                         unique_key=LOCK),
                    zset(keys.group(Q, "g"), ("t1", NOW), ("t2", NOW + 2)),
                    KeyEntry(keys.groups(Q), KeyType.SET, frozenset({"g"})),
                    lock("t2", NOW_MS + 7_000))


# --- processing --------------------------------------------------------------------------------
def test_dequeue_takes_the_tail_and_leases_it(m: ReferenceModel) -> None:
    m.enqueue(msg("t1"))
    m.enqueue(msg("t2"))
    got = m.dequeue(Q)
    assert got == msg("t1")
    assert_keyspace(m,
                    task("t1", A),
                    task("t2", P, pending_since=str(NOW_NS)),
                    lst(keys.pending(Q), "t2"),
                    lst(keys.active(Q), "t1"),
                    zset(keys.lease(Q), ("t1", NOW + POLICY.lease_duration)))
    assert m.dequeue(Q) == msg("t2")
    assert m.snapshot(Q).members(keys.active(Q)) == ("t2", "t1")
    assert m.dequeue(Q) is None


def test_dequeue_drops_ids_without_a_hash(m: ReferenceModel) -> None:
    m.enqueue(msg("t1"))
    m.enqueue(msg("t2"))
    del m.store(Q).hashes["t1"]  # a dangling id, as a broken keyspace would hold
    assert m.dequeue(Q) == msg("t2")
    assert m.snapshot(Q).members(keys.pending(Q)) == ()
    assert m.snapshot(Q).task_ids() == {"t2"}


def test_paused_queue_is_not_dequeued(m: ReferenceModel) -> None:
    m.enqueue(msg("t1"))
    m.pause(Q)
    assert m.dequeue(Q) is None
    assert m.snapshot(Q).get(keys.paused(Q)) == string(keys.paused(Q), str(NOW))
    with pytest.raises(AlreadyInStateError):
        m.pause(Q)
    m.unpause(Q)
    with pytest.raises(AlreadyInStateError):
        m.unpause(Q)
    assert m.snapshot(Q).get(keys.paused(Q)) is None
    assert m.dequeue(Q) == msg("t1")


def test_done_deletes_the_task_releases_the_lock_and_counts(m: ReferenceModel) -> None:
    m.enqueue_unique(msg("t1"), ttl=100)
    got = m.dequeue(Q)
    assert got is not None
    m.done(got)
    assert_keyspace(m, counters(processed=1))


@pytest.mark.parametrize("op", ["done", "mark_as_complete", "requeue", "retry", "archive"])
def test_processor_exits_refuse_a_task_that_is_not_active(m: ReferenceModel, op: str) -> None:
    m.enqueue(msg("t1"))
    before = m.snapshot(Q)
    call: dict[str, Callable[[], None]] = {
        "done": lambda: m.done(msg("t1")),
        "mark_as_complete": lambda: m.mark_as_complete(msg("t1")),
        "requeue": lambda: m.requeue(msg("t1")),
        "retry": lambda: m.retry(msg("t1"), NOW + 5, "boom"),
        "archive": lambda: m.archive(msg("t1"), "boom"),
    }
    with pytest.raises(TaskNotFoundError):
        call[op]()
    assert m.snapshot(Q) == before


def test_processor_exit_needs_the_lease_too(m: ReferenceModel) -> None:
    got = active_task(m, msg("t1"))
    del m.store(Q).lease["t1"]
    before = m.snapshot(Q)
    with pytest.raises(TaskNotFoundError):
        m.done(got)
    assert m.snapshot(Q) == before


def test_mark_as_complete_keeps_the_hash_until_retention_ends(m: ReferenceModel) -> None:
    m.enqueue_unique(msg("t1", retention=60), ttl=1000)
    got = m.dequeue(Q)
    assert got is not None
    m.clock.advance(3)
    m.mark_as_complete(got)
    done = msg("t1", retention=60, unique_key=LOCK, completed_at=NOW + 3)
    stats = counters(processed=1, deadline_s=NOW + 3 + POLICY.stats_ttl)
    assert_keyspace(m,
                    task("t1", C, done, unique_key=LOCK),
                    zset(keys.completed(Q), ("t1", NOW + 63)),
                    stats)
    m.clock.advance(59)
    assert m.delete_expired_completed_tasks(Q) == 0
    m.clock.advance(1)
    assert m.delete_expired_completed_tasks(Q) == 1
    assert_keyspace(m, stats)


def test_requeue_puts_the_task_next_in_line(m: ReferenceModel) -> None:
    got = active_task(m, msg("t1"))
    m.enqueue(msg("t2"))
    m.requeue(got)
    assert_keyspace(m,
                    task("t1", P),  # no pending_since, as Asynq
                    task("t2", P, pending_since=str(NOW_NS)),
                    lst(keys.pending(Q), "t2", "t1"))
    assert m.dequeue(Q) == msg("t1")


def test_retry_failure_counts_and_increments_retried(m: ReferenceModel) -> None:
    got = active_task(m, msg("t1"))
    m.retry(got, NOW + 40, "boom", is_failure=True)
    failed = msg("t1", retried=1, error_msg="boom", last_failed_at=NOW)
    assert_keyspace(m, task("t1", R, failed), zset(keys.retry(Q), ("t1", NOW + 40)),
                    counters(processed=1, failed=1))


def test_retry_nonfailure_neither_counts_nor_increments(m: ReferenceModel) -> None:
    got = active_task(m, msg("t1"))
    m.retry(got, NOW + 40, "later", is_failure=False)
    again = msg("t1", retried=0, error_msg="later", last_failed_at=NOW)
    assert_keyspace(m, task("t1", R, again), zset(keys.retry(Q), ("t1", NOW + 40)))


def test_archive_records_the_error_keeps_the_lock_and_counts(m: ReferenceModel) -> None:
    m.enqueue_unique(msg("t1"), ttl=100)
    got = m.dequeue(Q)
    assert got is not None
    m.archive(got, "fatal")
    archived = msg("t1", unique_key=LOCK, error_msg="fatal", last_failed_at=NOW)
    assert_keyspace(m, task("t1", AR, archived, unique_key=LOCK),
                    zset(keys.archived(Q), ("t1", NOW)), lock("t1", NOW_MS + 100_000),
                    counters(processed=1, failed=1))


# --- counters ----------------------------------------------------------------------------------
def test_daily_counter_ttl_is_set_once_and_the_date_rolls_over(m: ReferenceModel) -> None:
    active_task(m, msg("t1"))
    m.done(msg("t1"))
    m.clock.advance(3600)
    active_task(m, msg("t2"))
    m.done(msg("t2"))
    snap = m.snapshot(Q)
    assert snap.get(keys.processed_daily(Q, TODAY)) == string(
        keys.processed_daily(Q, TODAY), "2", (NOW + POLICY.stats_ttl) * 1000)
    m.clock.advance(86400)  # the next UTC day: a new daily key, the total goes on
    active_task(m, msg("t3"))
    m.done(msg("t3"))
    snap = m.snapshot(Q)
    tomorrow = "2026-01-02"
    assert snap.get(keys.processed_daily(Q, tomorrow)) == string(
        keys.processed_daily(Q, tomorrow), "1", (m.now_s + POLICY.stats_ttl) * 1000)
    assert snap.get(keys.processed_total(Q)) == string(keys.processed_total(Q), "3")


def test_daily_counter_expires_and_the_total_wraps() -> None:
    m = make(Policy(stats_ttl=10, retry_delay=fixed_delay))
    active_task(m, msg("t1"))
    m.done(msg("t1"))
    m.clock.advance(10)
    assert_keyspace(m, string(keys.processed_total(Q), "1"))
    m.store(Q).counters[keys.processed_total(Q)] = (MAX_INT64, None)
    active_task(m, msg("t2"))
    m.done(msg("t2"))
    assert_keyspace(m, counters(processed=1, deadline_s=m.now_s + 10))


# --- archive trim ------------------------------------------------------------------------------
def archived_now(m: ReferenceModel, task_id: str, unique: bool = False) -> None:
    """Archive ``task_id`` through the server path."""
    if unique:
        m.enqueue_unique(msg(task_id, payload=task_id.encode()), ttl=10**6)
    else:
        m.enqueue(msg(task_id))
    got = m.dequeue(Q)
    assert got is not None
    m.archive(got, "x")


def test_archive_cap_drops_the_oldest_hash_and_lock() -> None:
    m = make(Policy(max_archive_size=2, retry_delay=fixed_delay))
    archived_now(m, "t1", unique=True)
    m.clock.advance(1)
    archived_now(m, "t2")
    m.clock.advance(1)
    archived_now(m, "t3")
    snap = m.snapshot(Q)
    assert snap.get(keys.archived(Q)) == zset(keys.archived(Q), ("t2", NOW + 1), ("t3", NOW + 2))
    assert snap.task_ids() == {"t2", "t3"}
    assert snap.with_prefix(keys.unique_prefix(Q)) == []


def test_archive_cap_never_trims_the_id_just_archived() -> None:
    m = make(Policy(max_archive_size=1, retry_delay=fixed_delay))
    archived_now(m, "tb")
    archived_now(m, "ta")  # same second: ta ranks below tb, yet tb is the one trimmed
    snap = m.snapshot(Q)
    assert snap.get(keys.archived(Q)) == zset(keys.archived(Q), ("ta", NOW))
    assert snap.task_ids() == {"ta"}


def test_archive_all_trims_new_ids_in_rank_order_when_they_alone_overflow() -> None:
    m = make(Policy(max_archive_size=2, retry_delay=fixed_delay))
    for task_id in ("a", "c", "b"):
        m.enqueue(msg(task_id))
    assert m.archive_all_tasks(Q, P) == 3
    snap = m.snapshot(Q)
    assert snap.get(keys.archived(Q)) == zset(keys.archived(Q), ("b", NOW), ("c", NOW))
    assert snap.task_ids() == {"b", "c"}
    assert snap.get(keys.pending(Q)) is None


def test_asynq_off_by_one_capacity() -> None:
    m = make(Policy(max_archive_size=2, archive_keeps_one_less=True, retry_delay=fixed_delay))
    archived_now(m, "t1")
    m.clock.advance(1)
    archived_now(m, "t2")
    assert m.snapshot(Q).members(keys.archived(Q)) == ("t2",)


def test_archive_cutoff_on_archive_and_in_the_janitor() -> None:
    m = make(Policy(archive_cutoff_days=1, retry_delay=fixed_delay))
    archived_now(m, "t1", unique=True)
    m.clock.advance(86399)
    assert m.delete_expired_archived_tasks(Q) == 0
    m.clock.advance(1)  # score <= now - cutoff
    archived_now(m, "t2")
    snap = m.snapshot(Q)
    assert snap.members(keys.archived(Q)) == ("t2",)
    assert snap.task_ids() == {"t2"}
    assert snap.with_prefix(keys.unique_prefix(Q)) == []
    m.clock.advance(86400)
    assert m.delete_expired_archived_tasks(Q) == 1
    assert m.snapshot(Q).task_ids() == frozenset()


def test_inspector_archive_task_trims_too() -> None:
    m = make(Policy(max_archive_size=1, retry_delay=fixed_delay))
    m.enqueue(msg("t1"))
    m.enqueue(msg("t2"))
    m.archive_task(Q, "t1")
    m.clock.advance(1)
    m.archive_task(Q, "t2")
    snap = m.snapshot(Q)
    assert snap.get(keys.archived(Q)) == zset(keys.archived(Q), ("t2", NOW + 1))
    assert snap.task_ids() == {"t2"}


# --- forwarder, recoverer, heartbeat ---------------------------------------------------------
def test_forward_moves_due_tasks_in_score_order(m: ReferenceModel) -> None:
    m.schedule(msg("t1"), NOW + 10)
    m.schedule(msg("t2"), NOW + 5)
    m.schedule(msg("t3"), NOW + 11)
    m.clock.advance(10)
    assert m.forward_if_ready(Q) == 2
    now_ns = str(m.clock.now_ns)
    assert_keyspace(m,
                    task("t1", P, pending_since=now_ns), task("t2", P, pending_since=now_ns),
                    task("t3", S),
                    lst(keys.pending(Q), "t1", "t2"),
                    zset(keys.scheduled(Q), ("t3", NOW + 11)))
    assert m.dequeue(Q) == msg("t2")


def test_forward_returns_a_task_with_a_group_to_its_group(m: ReferenceModel) -> None:
    m.add_to_group(msg("t1"), "g")
    m.run_task(Q, "t1")
    got = m.dequeue(Q)
    assert got is not None
    m.retry(got, NOW + 5, "boom")
    m.clock.advance(4)
    assert m.forward_if_ready(Q) == 0
    m.clock.advance(1)
    assert m.forward_if_ready(Q) == 1
    failed = msg("t1", group_key="g", retried=1, error_msg="boom", last_failed_at=NOW)
    assert_keyspace(m, task("t1", AG, failed, group="g"),
                    zset(keys.group(Q, "g"), ("t1", NOW + 5)),
                    KeyEntry(keys.groups(Q), KeyType.SET, frozenset({"g"})),
                    counters(processed=1, failed=1))


def test_recover_retries_then_archives_lease_expired_tasks(m: ReferenceModel) -> None:
    active_task(m, msg("t1", retry=1))
    horizon = POLICY.lease_duration + POLICY.recover_skew
    m.clock.advance(horizon - 1)
    assert m.list_lease_expired(Q, m.now_s - POLICY.recover_skew) == []
    assert m.recover(Q) == 0
    m.clock.advance(1)
    assert m.list_lease_expired(Q, m.now_s - POLICY.recover_skew) == [msg("t1", retry=1)]
    assert m.recover(Q) == 1
    first = m.now_s
    failed = msg("t1", retry=1, retried=1, error_msg=LEASE_EXPIRED, last_failed_at=first)
    assert_keyspace(m, task("t1", R, failed), zset(keys.retry(Q), ("t1", first + 7)),
                    counters(processed=1, failed=1, deadline_s=first + POLICY.stats_ttl))
    m.clock.advance(7)
    m.forward_if_ready(Q)
    assert m.dequeue(Q) is not None
    m.clock.advance(horizon)
    assert m.recover(Q) == 1
    assert m.state_of(Q, "t1") is AR
    assert m.snapshot(Q).get(keys.archived(Q)) == zset(keys.archived(Q), ("t1", m.now_s))


def test_extend_lease_counts_only_leased_ids(m: ReferenceModel) -> None:
    active_task(m, msg("t1"))
    m.clock.advance(20)
    assert m.extend_lease(Q, "t1", "ghost") == 1
    assert m.snapshot(Q).get(keys.lease(Q)) == zset(keys.lease(Q), ("t1", NOW + 20 + 30))
    assert m.extend_lease(Q) == 0


# --- aggregation -------------------------------------------------------------------------------
def grouped(policy: Policy, *ids: str, gap: int = 0) -> ReferenceModel:
    m = make(policy)
    for task_id in ids:
        m.add_to_group(msg(task_id), "g")
        m.clock.advance(gap)
    return m


def test_aggregation_case_a_moves_the_max_size_oldest() -> None:
    m = grouped(Policy(aggregation_max_size=2), "t3", "t1", "t2")
    assert m.aggregation_check(Q, "g", "s1") == "s1"
    set_key = keys.group_set(Q, "g", "s1")
    snap = m.snapshot(Q)
    assert snap.get(set_key) == zset(set_key, ("t1", NOW), ("t2", NOW))
    assert snap.get(keys.group(Q, "g")) == zset(keys.group(Q, "g"), ("t3", NOW))
    assert snap.members(keys.groups(Q)) == ("g",)
    assert snap.get(keys.aggregation_sets(Q)) == zset(keys.aggregation_sets(Q),
                                                       (set_key, NOW + 120))


def test_aggregation_case_b_max_delay_moves_all_and_unlists_the_group() -> None:
    m = grouped(Policy(aggregation_max_delay=10, aggregation_grace=60), "t1", "t2", gap=5)
    assert m.aggregation_check(Q, "g", "s1") == "s1"  # oldest NOW <= now - 10
    set_key = keys.group_set(Q, "g", "s1")
    assert_keyspace(m,
                    task("t1", AG, msg("t1", group_key="g"), group="g"),
                    task("t2", AG, msg("t2", group_key="g"), group="g"),
                    zset(set_key, ("t1", NOW), ("t2", NOW + 5)),
                    zset(keys.aggregation_sets(Q), (set_key, NOW + 10 + 120)))


def test_aggregation_case_c_grace_and_nothing_ready() -> None:
    m = grouped(Policy(aggregation_grace=60), "t1")
    assert m.aggregation_check(Q, "g", "s1") is None
    m.clock.advance(59)
    before = m.snapshot(Q)
    assert m.aggregation_check(Q, "g", "s1") is None
    assert m.snapshot(Q) == before
    m.clock.advance(1)
    set_id = m.aggregation_check(Q, "g")
    assert set_id is not None and len(set_id) == 36  # a uuid4
    assert m.snapshot(Q).members(keys.group_set(Q, "g", set_id)) == ("t1",)
    assert m.aggregation_check(Q, "empty", "s2") is None


def test_read_and_delete_aggregation_set_release_locks() -> None:
    m = make(Policy(aggregation_max_size=2))
    m.add_to_group_unique(msg("t1"), "g", ttl=100)
    m.add_to_group(msg("t2", payload=b"other"), "g")
    assert m.aggregation_check(Q, "g", "s1") == "s1"
    msgs, deadline = m.read_aggregation_set(Q, "g", "s1")
    assert [x.id for x in msgs] == ["t1", "t2"] and deadline == NOW + 120
    m.delete_aggregation_set(Q, "g", "s1")
    assert_keyspace(m)
    with pytest.raises(TaskNotFoundError):
        m.read_aggregation_set(Q, "g", "s1")


def test_reclaim_puts_members_back_with_their_scores() -> None:
    m = grouped(Policy(aggregation_max_size=2, aggregation_timeout=30), "t1", "t2", gap=1)
    m.aggregation_check(Q, "g", "s1")
    m.clock.advance(29)
    assert m.reclaim_stale_aggregation_sets(Q) == 0
    m.clock.advance(1)
    assert m.reclaim_stale_aggregation_sets(Q) == 1
    assert_keyspace(m,
                    task("t1", AG, msg("t1", group_key="g"), group="g"),
                    task("t2", AG, msg("t2", group_key="g"), group="g"),
                    zset(keys.group(Q, "g"), ("t1", NOW), ("t2", NOW + 1)),
                    KeyEntry(keys.groups(Q), KeyType.SET, frozenset({"g"})))


# --- write_result ------------------------------------------------------------------------------
def test_write_result_stores_text_and_never_creates_a_hash(m: ReferenceModel) -> None:
    m.enqueue(msg("t1"))
    assert m.write_result(Q, "t1", b"ok\xff") == 3
    assert m.snapshot(Q).task_hash("t1")["result"] == "ok\udcff"  # type: ignore[index]
    before = m.snapshot(Q)
    with pytest.raises(TaskNotFoundError):
        m.write_result(Q, "ghost", b"x")
    assert m.snapshot(Q) == before


# --- inspector: one task -----------------------------------------------------------------------
def test_delete_task_releases_the_lock(m: ReferenceModel) -> None:
    m.enqueue_unique(msg("t1"), ttl=100)
    m.enqueue(msg("t2", payload=b"x"))
    m.delete_task(Q, "t1")
    assert_keyspace(m, task("t2", P, msg("t2", payload=b"x"), pending_since=str(NOW_NS)),
                    lst(keys.pending(Q), "t2"))


def test_inspector_refusals(m: ReferenceModel) -> None:
    got = active_task(m, msg("t1"))
    m.enqueue(msg("t2"))
    m.archive_task(Q, "t2")
    before = m.snapshot(Q)
    cases: list[tuple[Callable[[], None], type[KeysimError]]] = [
        (lambda: m.delete_task(Q, "t1"), TaskActiveError),
        (lambda: m.archive_task(Q, "t1"), TaskActiveError),
        (lambda: m.run_task(Q, "t1"), TaskActiveError),
        (lambda: m.delete_task(Q, "ghost"), TaskNotFoundError),
        (lambda: m.archive_task(Q, "t2"), AlreadyInStateError),
    ]
    for call, error in cases:
        with pytest.raises(error):
            call()
        assert m.snapshot(Q) == before
    m.run_task(Q, "t2")
    with pytest.raises(AlreadyInStateError):
        m.run_task(Q, "t2")
    assert got.id == "t1"


def test_staged_tasks_cannot_be_addressed() -> None:
    m = grouped(Policy(aggregation_max_size=1), "t1")
    m.aggregation_check(Q, "g", "s1")
    before = m.snapshot(Q)
    for op in (m.delete_task, m.archive_task, m.run_task):
        with pytest.raises(TaskNotFoundError):
            op(Q, "t1")
    assert m.snapshot(Q) == before


def test_archive_task_keeps_msg_and_pending_since(m: ReferenceModel) -> None:
    m.enqueue(msg("t1"))
    m.archive_task(Q, "t1")
    assert_keyspace(m, task("t1", AR, pending_since=str(NOW_NS)),
                    zset(keys.archived(Q), ("t1", NOW)))


def test_run_task_from_the_last_group_member_unlists_the_group(m: ReferenceModel) -> None:
    m.add_to_group(msg("t1"), "g")
    m.run_task(Q, "t1")
    assert_keyspace(m, task("t1", P, msg("t1", group_key="g"), group="g"),
                    lst(keys.pending(Q), "t1"))


def test_run_task_from_scheduled_pushes_at_the_head(m: ReferenceModel) -> None:
    m.enqueue(msg("t1"))
    m.schedule(msg("t2"), NOW + 100)
    m.run_task(Q, "t2")
    assert_keyspace(m, task("t1", P, pending_since=str(NOW_NS)), task("t2", P),
                    lst(keys.pending(Q), "t2", "t1"))


# --- inspector: bulk ---------------------------------------------------------------------------
def test_delete_all_pending_releases_every_lock(m: ReferenceModel) -> None:
    m.enqueue_unique(msg("t1"), ttl=100)
    m.enqueue(msg("t2"))
    m.schedule(msg("t3"), NOW + 1)
    assert m.delete_all_tasks(Q, P) == 2
    assert_keyspace(m, task("t3", S), zset(keys.scheduled(Q), ("t3", NOW + 1)))
    assert m.delete_all_tasks(Q, P) == 0


def test_archive_all_scheduled_then_run_all_archived(m: ReferenceModel) -> None:
    m.schedule(msg("t1"), NOW + 9)
    m.schedule(msg("t2"), NOW + 5)
    assert m.archive_all_tasks(Q, S) == 2
    assert_keyspace(m, task("t1", AR), task("t2", AR),
                    zset(keys.archived(Q), ("t1", NOW), ("t2", NOW)))
    assert m.run_all_tasks(Q, AR) == 2
    assert_keyspace(m, task("t1", P), task("t2", P), lst(keys.pending(Q), "t2", "t1"))


def test_bulk_aggregating_ops_take_one_group(m: ReferenceModel) -> None:
    m.add_to_group(msg("t1"), "g")
    m.add_to_group(msg("t2"), "h")
    assert m.run_all_tasks(Q, AG, "g") == 1
    assert m.archive_all_tasks(Q, "aggregating", "h") == 1  # type: ignore[arg-type]
    assert_keyspace(m, task("t1", P, msg("t1", group_key="g"), group="g"),
                    task("t2", AR, msg("t2", group_key="h"), group="h"),
                    lst(keys.pending(Q), "t1"), zset(keys.archived(Q), ("t2", NOW)))
    assert m.delete_all_tasks(Q, AG, "g") == 0


def test_bulk_ops_drop_ids_without_a_hash(m: ReferenceModel) -> None:
    m.schedule(msg("t1"), NOW)
    m.schedule(msg("t2"), NOW)
    del m.store(Q).hashes["t1"]
    assert m.run_all_tasks(Q, S) == 1
    assert_keyspace(m, task("t2", P), lst(keys.pending(Q), "t2"))


# --- remove_queue ------------------------------------------------------------------------------
def busy(policy: Policy = POLICY) -> ReferenceModel:
    """A queue with a task in every state but active, a lock, a set, counters and a pause."""
    m = make(replace(policy, aggregation_max_size=1))
    active_task(m, msg("done"))
    m.done(msg("done"))
    for task_id in ("r", "a", "c"):
        got = active_task(m, msg(task_id, payload=task_id.encode(), retention=9))
        if task_id == "r":
            m.retry(got, NOW + 9, "x")
        elif task_id == "a":
            m.archive(got, "x")
        else:
            m.mark_as_complete(got)
    m.enqueue_unique(msg("p"), ttl=100)
    m.schedule(msg("s", payload=b"s"), NOW + 9)
    m.enqueue(msg("p2", payload=b"2"))
    m.add_to_group(msg("g1", payload=b"g"), "g")
    m.aggregation_check(Q, "g", "s1")
    m.add_to_group(msg("g2", payload=b"g2"), "g")
    m.pause(Q)
    return m


def test_remove_queue_refuses_while_anything_is_left() -> None:
    m = busy()
    before = m.snapshot(Q)
    with pytest.raises(QueueNotEmptyError):
        m.remove_queue(Q)
    assert m.snapshot(Q) == before


def test_remove_queue_force_leaves_nothing() -> None:
    m = busy()
    assert len(m.snapshot(Q).entries) > 15
    m.remove_queue(Q, force=True)
    assert_keyspace(m, registered=False)
    assert m.queues() == frozenset()


def test_remove_queue_force_refuses_with_an_active_task(m: ReferenceModel) -> None:
    active_task(m, msg("t1"))
    before = m.snapshot(Q)
    with pytest.raises(TaskActiveError):
        m.remove_queue(Q, force=True)
    with pytest.raises(QueueNotEmptyError):
        m.remove_queue(Q)
    assert m.snapshot(Q) == before


def test_remove_queue_without_tasks_drops_counters_and_pause(m: ReferenceModel) -> None:
    active_task(m, msg("t1"))
    m.done(msg("t1"))
    m.pause(Q)
    m.remove_queue(Q)
    assert_keyspace(m, registered=False)


# --- bad input ---------------------------------------------------------------------------------
BAD_INPUT: list[tuple[str, Callable[[ReferenceModel], object], type[Exception], str]] = [
    ("blank queue", lambda m: m.enqueue(replace(msg("n"), queue=" ")), ValueError, "queue"),
    ("brace in id", lambda m: m.enqueue(msg("a{b")), ValueError, "task id"),
    ("not a message", lambda m: m.enqueue("t1"), TypeError, "msg"),  # type: ignore[arg-type]
    ("empty type", lambda m: m.enqueue(msg("n", type="")), ValueError, "task type"),
    ("str payload", lambda m: m.enqueue(msg("n", payload="x")), TypeError, "payload"),
    ("ttl 0", lambda m: m.enqueue_unique(msg("n"), 0), ValueError, "ttl"),
    ("float ttl", lambda m: m.add_to_group_unique(msg("n"), "g", 1.5), ValueError, "ttl"),  # type: ignore[arg-type]
    ("foreign lock", lambda m: m.enqueue_unique(msg("n", unique_key="x"), 5), ValueError,
     "unique_key"),
    ("str process_at", lambda m: m.schedule(msg("n"), "soon"), TypeError, "process_at"),  # type: ignore[arg-type]
    ("colon group", lambda m: m.add_to_group(msg("n"), "a:b"), ValueError, "group"),
    ("colon group_key", lambda m: m.schedule(msg("n", group_key="a:b"), NOW), ValueError,
     "group_key"),
    ("float retry_at", lambda m: m.retry(msg("t1"), 1.5, "e"), TypeError, "retry_at"),  # type: ignore[arg-type]
    ("bytes error", lambda m: m.archive(msg("t1"), b"e"), TypeError, "error"),  # type: ignore[arg-type]
    ("int is_failure", lambda m: m.retry(msg("t1"), NOW, "e", 1), TypeError, "is_failure"),  # type: ignore[arg-type]
    ("blank dequeue queue", lambda m: m.dequeue(""), ValueError, "queue"),
    ("blank lease id", lambda m: m.extend_lease(Q, "t1", ""), ValueError, "task id"),
    ("str cutoff", lambda m: m.list_lease_expired(Q, "0"), TypeError, "cutoff"),  # type: ignore[arg-type]
    ("blank set id", lambda m: m.aggregation_check(Q, "g", ""), ValueError, "set id"),
    ("str result", lambda m: m.write_result(Q, "t1", "x"), TypeError, "data"),  # type: ignore[arg-type]
    ("active bulk", lambda m: m.delete_all_tasks(Q, A), ValueError, "state"),
    ("unknown state", lambda m: m.run_all_tasks(Q, "nope"), ValueError, "state"),  # type: ignore[arg-type]
    ("pending run_all", lambda m: m.run_all_tasks(Q, P), ValueError, "state"),
    ("no group", lambda m: m.archive_all_tasks(Q, AG), ValueError, "group"),
    ("stray group", lambda m: m.delete_all_tasks(Q, S, "g"), ValueError, "group"),
    ("str force", lambda m: m.remove_queue(Q, "yes"), TypeError, "force"),  # type: ignore[arg-type]
    ("brace task id", lambda m: m.delete_task(Q, "}"), ValueError, "task id"),
    ("snapshot queue", lambda m: m.snapshot("a\nb"), ValueError, "queue"),
]


@pytest.mark.parametrize(("call", "error", "name"), [c[1:] for c in BAD_INPUT],
                         ids=[c[0] for c in BAD_INPUT])
def test_bad_input_raises_naming_the_parameter_and_writes_nothing(
        call: Callable[[ReferenceModel], object], error: type[Exception], name: str) -> None:
    m = make()
    active_task(m, msg("t1"))
    m.clock.advance(1)
    before, registered = m.snapshot(Q), m.queues()
    with pytest.raises(error, match=name):
        call(m)
    assert m.snapshot(Q) == before
    assert m.queues() == registered


# --- helpers -----------------------------------------------------------------------------------
def test_state_of_tasks_and_clone(m: ReferenceModel) -> None:
    m.enqueue(msg("t1"))
    m.schedule(msg("t2"), NOW + 1)
    twin = m.clone()
    assert m.dequeue(Q) is not None
    assert m.tasks(Q) == {"t1": A, "t2": S}
    assert twin.tasks(Q) == {"t1": P, "t2": S}
    assert m.state_of(Q, "ghost") is TaskState.DELETED
    assert m.state_of("other", "t1") is TaskState.DELETED
    twin.clock.advance(5)
    assert m.now_s == NOW


def test_expire_due_sweeps_ttl_keys(m: ReferenceModel) -> None:
    m.enqueue_unique(msg("t1"), ttl=2)
    assert m.expire_due(Q) == 0
    m.clock.advance(2)
    assert m.expire_due(Q) == 1
    assert LOCK not in m.store(Q).locks
