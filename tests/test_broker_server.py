"""Server operations (T8–T27) on both backends: the exact keyspace after each operation.

Tasks are brought into their starting state with the broker's own client/server operations
(or, for states only a defect produces — dangling ids, ids both active and completed, 8000
ancient archive entries — with the raw client), then one server operation runs and the whole
snapshot is compared with an expected keyspace built from ``model.keys`` names.

Variants: ``reference``; ``asynq-v0.26.0`` with its quirks (late guards, BZ-4, BZ-10, BZ-11,
BZ-15, BZ-16, BZ-17, BZ-18, lazy cutoff); ``asynq-v0.24.0`` for the BZ-1 hash leak; and the
single-quirk mutants of defects v0.26.0 no longer has (BZ-8, BZ-9, BZ-20). Where variants
differ, a test reads its expectation from a table keyed by the quirk that makes the difference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import redis
from support import (
    ASYNQ,
    VARIANTS,
    Q,
    Raised,
    assert_keyspace,
    assert_snapshot,
    expectation,
    expected,
    lock_key,
    lst,
    message,
    raises,
    sset,
    string,
    thash,
    zset,
)

from broker import Broker
from broker.scripting import encode_deadline
from broker.variants import Quirk
from broker.variants import variant as variant_named
from model import keys
from model.clock import VirtualClock
from model.endings import LEASE_EXPIRED
from model.errors import AlreadyInStateError, QueueNotFoundError, ScriptError, TaskNotFoundError
from model.message import TaskMessage
from model.policy import DAY, Policy
from model.snapshot import KeyEntry, KeyspaceSnapshot

V024 = "asynq-v0.24.0"
LEASE = 30


def policy_for(variant: str, **changes: Any) -> Policy:
    """The variant's default policy with ``changes``."""
    return replace(variant_named(variant).policy, **changes)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def make(redis_client: redis.Redis, clock: VirtualClock) -> Callable[..., Broker]:
    """``make(variant="reference", **policy_changes)``: a broker on the backend and clock."""
    def build(variant: str = "reference", **changes: Any) -> Broker:
        return Broker(redis_client, variant, policy_for(variant, **changes), clock)
    return build


def counters(b: Broker, processed: int, failed: int = 0) -> list[KeyEntry]:
    """Daily and total counters after ``processed``/``failed`` counts today (first one now)."""
    date, deadline = b.clock.utc_date(), b.stats_deadline_ms()
    out = [string(keys.processed_daily(Q, date), processed, deadline),
           string(keys.processed_total(Q), processed)]
    if failed:
        out += [string(keys.failed_daily(Q, date), failed, deadline),
                string(keys.failed_total(Q), failed)]
    return out


def activate(b: Broker, task_id: str, unique: bool = False, **kw: Any) -> TaskMessage:
    """Enqueue ``task_id`` (unique: with its lock) and dequeue it; return the active msg."""
    msg = message(task_id, **kw)
    if unique:
        b.enqueue_unique(msg, ttl=3600)
    else:
        b.enqueue(msg)
    got = b.dequeue(Q)
    assert got is not None and got.id == task_id
    return got


def active_hash(msg: TaskMessage, **extra: Any) -> KeyEntry:
    return thash(Q, msg.id, msg=msg, state="active", **extra)


def raw_archived(r: redis.Redis, b: Broker, task_id: str, score: int, lock: bool = False) -> None:
    """An archived task as Asynq leaves it (hash + archived entry), its lock if asked."""
    fields: list[str | bytes] = ["msg", b.encode(message(task_id)), "state", "archived"]
    if lock:
        fields += ["unique_key", lock_key(task_id)]
        r.set(lock_key(task_id), task_id)
        r.pexpireat(lock_key(task_id), encode_deadline(b.now_ms + 3_600_000))
    r.hset(keys.task(Q, task_id), items=fields)
    r.zadd(keys.archived(Q), {task_id: score})


def archived_hash(task_id: str) -> KeyEntry:
    return thash(Q, task_id, msg=message(task_id), state="archived")


# --- dequeue (T8) --------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_dequeue_moves_the_oldest_pending_task_to_active(make: Callable[..., Broker],
                                                         variant: str) -> None:
    b = make(variant)
    b.enqueue(message("t1"))
    b.enqueue(message("t2"))
    assert b.dequeue(Q) == message("t1")
    assert_keyspace(b, Q, lst(keys.pending(Q), "t2"),
                    thash(Q, "t2", msg=message("t2"), state="pending",
                          pending_since=str(b.clock.now_ns)),
                    active_hash(message("t1")), lst(keys.active(Q), "t1"),
                    zset(keys.lease(Q), {"t1": b.now_s + LEASE}))


@pytest.mark.parametrize("variant", VARIANTS)
def test_dequeue_returns_none_when_empty_or_paused(make: Callable[..., Broker], variant: str
                                                  ) -> None:
    b = make(variant)
    assert b.dequeue(Q) is None
    assert_keyspace(b, Q, registered=False)
    b.enqueue(message("t1"))
    b.pause(Q)
    before = b.snapshot(Q)
    assert b.dequeue(Q) is None
    assert b.snapshot(Q) == before


#: dequeue after t1's hash is gone (t2 pending behind it): what it returns, and the keyspace.
DEQUEUE_OF_A_DANGLING_ID: dict[Quirk | None,
                               Callable[[Broker], tuple[TaskMessage | None, list[KeyEntry]]]] = {
    # the dangling id is dropped and the next task served
    None: lambda b: (message("t2"), [active_hash(message("t2")), lst(keys.active(Q), "t2"),
                                     zset(keys.lease(Q), {"t2": b.now_s + LEASE})]),
    # a stub hash, stranded in active and lease; the caller sees "empty"
    Quirk.HSET_ON_MISSING_HASH: lambda b: (None, [thash(Q, "t1", state="active"), lst(keys.active(Q), "t1"),
                                  zset(keys.lease(Q), {"t1": b.now_s + LEASE}),
                                  lst(keys.pending(Q), "t2"),
                                  thash(Q, "t2", msg=message("t2"), state="pending",
                                        pending_since=str(b.clock.now_ns))]),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_dequeue_of_a_dangling_id(make: Callable[..., Broker], redis_client: redis.Redis,
                                  variant: str) -> None:
    b = make(variant)
    b.enqueue(message("t1"))
    b.enqueue(message("t2"))
    redis_client.delete(keys.task(Q, "t1"))  # eviction or a manual DEL
    got = b.dequeue(Q)
    served, keyspace = expectation(variant, DEQUEUE_OF_A_DANGLING_ID)(b)
    assert got == served
    assert_keyspace(b, Q, *keyspace)


# --- done / mark_as_complete / requeue / retry / archive (T9–T16) --------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_done_deletes_the_task_releases_the_lock_and_counts(make: Callable[..., Broker],
                                                            variant: str) -> None:
    b = make(variant)
    msg = activate(b, "t1", unique=True)
    b.done(msg)
    assert_keyspace(b, Q, *counters(b, 1))


@pytest.mark.parametrize("variant", VARIANTS)
def test_done_keeps_a_lock_another_task_owns(make: Callable[..., Broker],
                                             redis_client: redis.Redis, variant: str) -> None:
    b = make(variant)
    msg = activate(b, "t1", unique=True)
    redis_client.set(lock_key("t1"), "t9", keepttl=True)  # t1's lock expired, t9 took it
    b.done(msg)
    assert_keyspace(b, Q, *counters(b, 1), string(lock_key("t1"), "t9", b.now_ms + 3_600_000))


@pytest.mark.parametrize("variant", VARIANTS)
def test_done_of_a_group_unique_task_releases_the_lock_its_message_names(
        make: Callable[..., Broker], variant: str) -> None:
    """Asynq's hash has no unique_key (BZ-4), but done releases msg.unique_key's lock."""
    b = make(variant)
    b.add_to_group_unique(message("a1"), "g1", ttl=3600)
    b.run_task(Q, "a1")
    msg = b.dequeue(Q)
    assert msg is not None and msg.unique_key == lock_key("a1")
    b.done(msg)
    assert_keyspace(b, Q, *counters(b, 1))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("op", ["done", "mark_as_complete", "requeue", "retry", "archive"])
def test_processor_exits_refuse_a_task_that_is_not_active(make: Callable[..., Broker],
                                                          variant: str, op: str) -> None:
    b = make(variant)
    b.enqueue(message("t1"))
    before = b.snapshot(Q)
    with pytest.raises(TaskNotFoundError):
        finish(b, op, message("t1"))
    assert b.snapshot(Q) == before


def finish(b: Broker, op: str, msg: TaskMessage) -> None:
    """Run processor exit ``op`` on ``msg`` with fixed arguments."""
    if op == "retry":
        b.retry(msg, b.now_s + 100, "boom")
    elif op == "archive":
        b.archive(msg, "boom")
    else:
        getattr(b, op)(msg)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("op", ["done", "mark_as_complete", "requeue", "retry", "archive"])
def test_a_task_missing_from_active_is_refused_before_any_write(
        make: Callable[..., Broker], redis_client: redis.Redis, variant: str, op: str) -> None:
    b = make(variant)
    msg = activate(b, "t1")
    redis_client.lrem(keys.active(Q), 0, "t1")
    before = b.snapshot(Q)
    with pytest.raises(TaskNotFoundError):
        finish(b, op, msg)
    assert b.snapshot(Q) == before


#: The keyspace after a processor exit refused t1 (active, its lease entry gone).
MISSING_FROM_LEASE_LEAVES: dict[Quirk | None, Callable[[TaskMessage], list[KeyEntry]]] = {
    None: lambda msg: [active_hash(msg), lst(keys.active(Q), "t1")],  # every guard before any write
    Quirk.LATE_GUARDS: lambda msg: [active_hash(msg)],  # LREM active already happened
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("op", ["done", "mark_as_complete", "requeue", "retry", "archive"])
def test_a_task_missing_from_lease_is_refused_after_the_lrem_in_asynq(
        make: Callable[..., Broker], redis_client: redis.Redis, variant: str, op: str) -> None:
    b = make(variant)
    msg = activate(b, "t1")
    redis_client.zrem(keys.lease(Q), "t1")
    with pytest.raises(TaskNotFoundError):
        finish(b, op, msg)
    assert_keyspace(b, Q, *expectation(variant, MISSING_FROM_LEASE_LEAVES)(msg))


#: The keyspace after done refused t1 (active and leased, its hash gone).
DONE_WITHOUT_HASH_LEAVES: dict[Quirk | None, Callable[[Broker], list[KeyEntry]]] = {
    None: lambda b: [lst(keys.active(Q), "t1"), zset(keys.lease(Q), {"t1": b.now_s + 30})],
    Quirk.LATE_GUARDS: lambda b: [],  # Asynq's DEL guard comes after LREM and ZREM
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_done_of_a_task_without_hash(make: Callable[..., Broker], redis_client: redis.Redis,
                                     variant: str) -> None:
    b = make(variant)
    msg = activate(b, "t1")
    redis_client.delete(keys.task(Q, "t1"))
    with pytest.raises(TaskNotFoundError):
        b.done(msg)
    assert_keyspace(b, Q, *expectation(variant, DONE_WITHOUT_HASH_LEAVES)(b))


#: requeue of t1 (active and leased, its hash gone): the error it raises, and the keyspace.
REQUEUE_WITHOUT_HASH: dict[Quirk | None, tuple[Raised,
                                               Callable[[Broker], list[KeyEntry]]]] = {
    None: ((TaskNotFoundError, None),
           lambda b: [lst(keys.active(Q), "t1"), zset(keys.lease(Q), {"t1": b.now_s + 30})]),
    # Asynq checks no hash here: HSET makes a stub
    Quirk.LATE_GUARDS: (None, lambda b: [lst(keys.pending(Q), "t1"),
                                         thash(Q, "t1", state="pending")]),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_requeue_of_a_task_without_hash_writes_a_stub_in_asynq(
        make: Callable[..., Broker], redis_client: redis.Redis, variant: str) -> None:
    b = make(variant)
    msg = activate(b, "t1")
    redis_client.delete(keys.task(Q, "t1"))
    error, keyspace = expectation(variant, REQUEUE_WITHOUT_HASH)
    with raises(error):
        b.requeue(msg)
    assert_keyspace(b, Q, *keyspace(b))


@pytest.mark.parametrize("variant", VARIANTS)
def test_mark_as_complete_keeps_the_task_until_its_retention(make: Callable[..., Broker],
                                                             variant: str) -> None:
    b = make(variant)
    msg = activate(b, "t1", unique=True, retention=3600)
    b.mark_as_complete(msg)
    assert_keyspace(b, Q, zset(keys.completed(Q), {"t1": b.now_s + 3600}),
                    thash(Q, "t1", msg=msg.completed(b.now_s), state="completed",
                          unique_key=lock_key("t1")),
                    *counters(b, 1))


def _left_half_done(b: Broker, msg: TaskMessage) -> list[KeyEntry]:
    """After LREM, ZREM and the ZADD: completed, but the hash still says active."""
    return [zset(keys.completed(Q), {"t1": b.now_s + 60}), active_hash(msg)]


#: mark_as_complete of t1 (retention 60) already in completed: the error, and the keyspace.
COMPLETE_WHEN_COMPLETED: dict[Quirk | None, tuple[Raised,
                                                  Callable[[Broker, TaskMessage],
                                                           list[KeyEntry]]]] = {
    None: (None, lambda b, msg: [zset(keys.completed(Q), {"t1": b.now_s + 60}),
                                 thash(Q, "t1", msg=msg.completed(b.now_s), state="completed"),
                                 *counters(b, 1)]),
    Quirk.LATE_GUARDS: ((ScriptError, "INTERNAL"), _left_half_done),  # Asynq v0.26.0
    Quirk.COMPLETE_FAILS_AFTER_WRITES: ((ScriptError, "nil value"), _left_half_done),  # a Lua error
}


@pytest.mark.parametrize("variant", [*VARIANTS, "reference+BZ-20"])
def test_mark_as_complete_of_an_id_already_completed(make: Callable[..., Broker],
                                                     redis_client: redis.Redis,
                                                     variant: str) -> None:
    b = make(variant)
    msg = activate(b, "t1", retention=60)
    redis_client.zadd(keys.completed(Q), {"t1": 1})  # a stale worker's earlier completion
    error, keyspace = expectation(variant, COMPLETE_WHEN_COMPLETED)
    with raises(error):
        b.mark_as_complete(msg)
    assert_keyspace(b, Q, *keyspace(b, msg))


@pytest.mark.parametrize("variant", VARIANTS)
def test_requeue_puts_the_task_next_in_line(make: Callable[..., Broker], variant: str) -> None:
    b = make(variant)
    msg = activate(b, "t1")
    b.enqueue(message("t2"))
    b.requeue(msg)
    assert_keyspace(b, Q, lst(keys.pending(Q), "t2", "t1"),
                    thash(Q, "t1", msg=msg, state="pending"),  # no pending_since, as Asynq
                    thash(Q, "t2", msg=message("t2"), state="pending",
                          pending_since=str(b.clock.now_ns)))
    assert b.dequeue(Q) == msg


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("is_failure", [True, False])
def test_retry_waits_in_retry_and_counts_failures(make: Callable[..., Broker], variant: str,
                                                  is_failure: bool) -> None:
    b = make(variant)
    msg = activate(b, "t1", unique=True)
    b.retry(msg, b.now_s + 100, "boom", is_failure)
    assert_keyspace(b, Q, zset(keys.retry(Q), {"t1": b.now_s + 100}),
                    thash(Q, "t1", msg=msg.failed("boom", b.now_s, count=is_failure),
                          state="retry", unique_key=lock_key("t1")),
                    string(lock_key("t1"), "t1", b.now_ms + 3_600_000),  # kept
                    *(counters(b, 1, 1) if is_failure else []))


@pytest.mark.parametrize("variant", VARIANTS)
def test_archive_records_the_error_and_counts_a_failure(make: Callable[..., Broker],
                                                        variant: str) -> None:
    b = make(variant)
    msg = activate(b, "t1")
    b.archive(msg, "boom")
    assert_keyspace(b, Q, zset(keys.archived(Q), {"t1": b.now_s}),
                    thash(Q, "t1", msg=msg.archived("boom", b.now_s), state="archived"),
                    *counters(b, 1, 1))


# --- the archive trim ------------------------------------------------------------------------------
def test_reference_trim_deletes_old_and_excess_entries_with_hashes_and_locks(
        make: Callable[..., Broker], redis_client: redis.Redis) -> None:
    b = make(max_archive_size=2, archive_cutoff_days=1)
    now = b.now_s
    raw_archived(redis_client, b, "old", now - DAY, lock=True)  # at the cutoff: trimmed
    raw_archived(redis_client, b, "a", now - 10, lock=True)  # lowest rank beyond the cap
    raw_archived(redis_client, b, "b", now - 5)
    raw_archived(redis_client, b, "z", now + 50)  # clock skew: ranks above the new id
    msg = activate(b, "t1")
    b.archive(msg, "boom")
    # cap 2 keeps z and the new id: b (not new) goes before the new id ever would
    assert_keyspace(b, Q, zset(keys.archived(Q), {"t1": now, "z": now + 50}), archived_hash("z"),
                    thash(Q, "t1", msg=msg.archived("boom", now), state="archived"),
                    *counters(b, 1, 1))


@pytest.mark.parametrize("variant", [ASYNQ, V024])
def test_asynq_rank_cap_trims_the_new_id_into_a_zombie(make: Callable[..., Broker],
                                                       redis_client: redis.Redis,
                                                       variant: str) -> None:
    """BZ-16 with a 3-entry archive (capacity 2): two entries ahead of now push the new id out."""
    b = make(variant, max_archive_size=3)
    now = b.now_s
    raw_archived(redis_client, b, "a", now + 100)
    raw_archived(redis_client, b, "b", now + 100)
    msg = activate(b, "t1")
    b.archive(msg, "boom")
    assert_keyspace(b, Q, zset(keys.archived(Q), {"a": now + 100, "b": now + 100}),
                    archived_hash("a"), archived_hash("b"),
                    # the HSET after the trim re-creates t1's hash: in no index, ever
                    thash(Q, "t1", msg=msg.archived("boom", now), state="archived"),
                    *counters(b, 1, 1))


#: Archiving t1 next to a, b, c (oldest first) with max_archive_size 3: the ids left in the
#: index, and the ids trimmed from it whose hashes stay.
CAP_KEEPS: dict[str, tuple[list[str], list[str]]] = {
    "reference": (["b", "c"], []),  # 4 entries, capacity 3: a goes, hash and all
    ASYNQ: (["c"], []),  # ZRANGE 0 -3 keeps 2: a and b go, hashes deleted
    V024: (["c"], ["a", "b"]),  # BZ-1: the same ids leave the index but their hashes stay
}


@pytest.mark.parametrize("variant", CAP_KEEPS)
def test_cap_keeps_max_size_in_the_reference_and_one_less_in_asynq(
        make: Callable[..., Broker], redis_client: redis.Redis, variant: str) -> None:
    b = make(variant, max_archive_size=3)
    now = b.now_s
    for i, task_id in enumerate(["a", "b", "c"]):
        raw_archived(redis_client, b, task_id, now - 30 + i)
    msg = activate(b, "t1")
    b.archive(msg, "boom")
    new = thash(Q, "t1", msg=msg.archived("boom", now), state="archived")
    kept, leaked = CAP_KEEPS[variant]
    index = {task_id: now - 30 + "abc".index(task_id) for task_id in kept}
    assert_keyspace(b, Q, zset(keys.archived(Q), {**index, "t1": now}), new,
                    *(archived_hash(i) for i in kept + leaked), *counters(b, 1, 1))


def _fill_ancient_archive(r: redis.Redis, b: Broker, n: int) -> list[str]:
    ids = [f"o{i:05d}" for i in range(n)]
    score = b.now_s - 90 * DAY
    pipe = r.pipeline(transaction=False)
    for task_id in ids:
        pipe.hset(keys.task(Q, task_id), "state", "archived")
    pipe.zadd(keys.archived(Q), dict.fromkeys(ids, score))
    pipe.execute()
    return ids


def test_bz15_archive_fails_part_way_with_8000_ancient_entries(
        make: Callable[..., Broker], redis_client: redis.Redis) -> None:
    b = make(ASYNQ)
    ids = _fill_ancient_archive(redis_client, b, 8000)
    msg = activate(b, "t1")
    with pytest.raises(ScriptError, match="too many results to unpack"):
        b.archive(msg, "boom")
    ancient = dict.fromkeys(ids, b.now_s - 90 * DAY)
    # hashes DEL'd, ids dangling; t1 out of active and lease, still "active", no counters
    assert_keyspace(b, Q, zset(keys.archived(Q), {**ancient, "t1": b.now_s}), active_hash(msg))
    # every later server-side archive in this queue fails the same way
    msg2 = activate(b, "t2")
    with pytest.raises(ScriptError, match="too many results to unpack"):
        b.archive(msg2, "boom")


def test_7999_ancient_entries_are_trimmed_whole(make: Callable[..., Broker],
                                                redis_client: redis.Redis) -> None:
    b = make(ASYNQ)
    _fill_ancient_archive(redis_client, b, 7999)
    msg = activate(b, "t1")
    b.archive(msg, "boom")
    assert_keyspace(b, Q, zset(keys.archived(Q), {"t1": b.now_s}),
                    thash(Q, "t1", msg=msg.archived("boom", b.now_s), state="archived"),
                    *counters(b, 1, 1))


# --- forward (T17) ---------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_moves_ready_scheduled_then_retry_tasks(make: Callable[..., Broker],
                                                        variant: str) -> None:
    b = make(variant)
    msg = activate(b, "r1")
    b.retry(msg, b.now_s, "boom")
    b.schedule(message("s1"), b.now_s - 1)
    b.schedule(message("s2"), b.now_s + 1)
    assert b.forward_if_ready(Q) == 2
    pending_since = str(b.clock.now_ns)
    assert_keyspace(b, Q, lst(keys.pending(Q), "r1", "s1"),
                    thash(Q, "s1", msg=message("s1"), state="pending", pending_since=pending_since),
                    thash(Q, "r1", msg=msg.failed("boom", b.now_s), state="pending",
                          pending_since=pending_since),
                    thash(Q, "s2", msg=message("s2"), state="scheduled"),
                    zset(keys.scheduled(Q), {"s2": b.now_s + 1}), *counters(b, 1, 1))


#: The keyspace after forwarding s1, scheduled with group g1.
FORWARDED_GROUP_TASK: dict[Quirk | None, Callable[[Broker, TaskMessage], list[KeyEntry]]] = {
    None: lambda b, msg: [thash(Q, "s1", msg=msg, state="aggregating", group="g1"),
                          zset(keys.group(Q, "g1"), {"s1": b.now_s}), sset(keys.groups(Q), "g1")],
    # schedule stored no group, so the task is forwarded to pending
    Quirk.SCHEDULE_NO_GROUP: lambda b, msg: [
        lst(keys.pending(Q), "s1"),
        thash(Q, "s1", msg=msg, state="pending", pending_since=str(b.clock.now_ns))],
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_of_a_scheduled_group_task(make: Callable[..., Broker], variant: str) -> None:
    b = make(variant)
    msg = message("s1", group_key="g1")
    b.schedule(msg, b.now_s)
    assert b.forward_if_ready(Q) == 1
    assert_keyspace(b, Q, *expectation(variant, FORWARDED_GROUP_TASK)(b, msg))


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_to_a_group_registers_it_only_in_the_reference(
        make: Callable[..., Broker], redis_client: redis.Redis, variant: str) -> None:
    """BZ-11: a retry task that kept its group field (aggregating → run_task → retry)."""
    b = make(variant)
    msg = message("r1", group_key="g1")
    redis_client.hset(keys.task(Q, "r1"), mapping={"msg": b.encode(msg), "state": "retry",
                                                   "group": "g1"})
    redis_client.zadd(keys.retry(Q), {"r1": b.now_s})
    assert b.forward_if_ready(Q) == 1
    groups = expectation(variant, {None: [sset(keys.groups(Q), "g1")],
                                   Quirk.FORWARD_LEAVES_GROUP_UNLISTED: []})
    assert_keyspace(b, Q, thash(Q, "r1", msg=msg, state="aggregating", group="g1"),
                    zset(keys.group(Q, "g1"), {"r1": b.now_s}), *groups, registered=False)


#: forward of a scheduled id without hash: how many it moves, and the keyspace.
FORWARD_OF_A_DANGLING_ID: dict[Quirk | None, tuple[int, Callable[[Broker], list[KeyEntry]]]] = {
    None: (0, lambda b: []),  # dropped from the index, nothing created
    Quirk.HSET_ON_MISSING_HASH: (1, lambda b: [  # a stub hash in pending
        lst(keys.pending(Q), "ghost"),
        thash(Q, "ghost", state="pending", pending_since=str(b.clock.now_ns))]),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_of_a_dangling_id(make: Callable[..., Broker], redis_client: redis.Redis,
                                  variant: str) -> None:
    b = make(variant)
    redis_client.zadd(keys.scheduled(Q), {"ghost": b.now_s})
    moved, keyspace = expectation(variant, FORWARD_OF_A_DANGLING_ID)
    assert b.forward_if_ready(Q) == moved
    assert_keyspace(b, Q, *keyspace(b), registered=False)


def test_forward_runs_batches_until_none_is_ready(make: Callable[..., Broker]) -> None:
    b = make(forward_batch=2)
    for i in range(5):
        b.schedule(message(f"s{i}"), b.now_s)
    assert b.forward_if_ready(Q) == 5
    snap = b.snapshot(Q)
    assert snap.members(keys.pending(Q)) == ("s4", "s3", "s2", "s1", "s0")
    assert snap.get(keys.scheduled(Q)) is None


def test_forward_stops_at_a_short_batch(make: Callable[..., Broker]) -> None:
    b = make(forward_batch=2)
    for i in range(3):
        b.schedule(message(f"s{i}"), b.now_s)
    calls: list[str] = []
    call = b.call

    def counting(script: str, *args: Any, **kwargs: Any) -> list[Any]:
        calls.append(script)
        return call(script, *args, **kwargs)

    b.call = counting  # type: ignore[method-assign]
    assert b.forward_if_ready(Q) == 3
    # scheduled: a full batch, then a short one (the last ready id); retry: one empty batch.
    assert calls == ["forward"] * 3


# --- janitor (T25 and the reference cutoff) --------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_janitor_deletes_expired_completed_tasks_in_batches(make: Callable[..., Broker],
                                                            clock: VirtualClock,
                                                            variant: str) -> None:
    b = make(variant, janitor_batch_size=2)
    done = {}
    for i, retention in enumerate([10, 20, 30, 31]):
        msg = activate(b, f"c{i}", retention=retention)
        b.mark_as_complete(msg)
        done[msg.id] = msg.completed(b.now_s)
    start = b.now_s
    clock.advance(30)
    assert b.delete_expired_completed_tasks(Q) == 3
    assert_keyspace(b, Q, zset(keys.completed(Q), {"c3": start + 31}),
                    thash(Q, "c3", msg=done["c3"], state="completed"),
                    string(keys.processed_daily(Q, b.clock.utc_date()), 4,
                           (start + b.policy.stats_ttl) * 1000),
                    string(keys.processed_total(Q), 4))


#: The janitor's archive cutoff over o1–o3 (at the cutoff) and young: how many it deletes, and
#: the snapshot after, from the one before.
JANITOR_ARCHIVE_CUTOFF: dict[Quirk | None,
                             tuple[int, Callable[[Broker, KeyspaceSnapshot], KeyspaceSnapshot]]] = {
    None: (3, lambda b, before: expected(b, Q, zset(keys.archived(Q), {"young": b.now_s - DAY + 1}),
                                         archived_hash("young"), registered=False)),
    # Asynq trims only when something is archived
    Quirk.LAZY_CUTOFF: (0, lambda b, before: before),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_janitor_archive_cutoff_only_in_the_reference(make: Callable[..., Broker],
                                                      redis_client: redis.Redis,
                                                      variant: str) -> None:
    b = make(variant, janitor_batch_size=2, archive_cutoff_days=1)
    for task_id in ["o1", "o2", "o3"]:
        raw_archived(redis_client, b, task_id, b.now_s - DAY, lock=True)
    raw_archived(redis_client, b, "young", b.now_s - DAY + 1)
    before = b.snapshot(Q)
    deleted, after = expectation(variant, JANITOR_ARCHIVE_CUTOFF)
    assert b.delete_expired_archived_tasks(Q) == deleted
    assert_snapshot(b, after(b, before))


# --- recoverer (T18–T20) ---------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_list_lease_expired_in_lease_order_skipping_ids_without_hash(
        make: Callable[..., Broker], redis_client: redis.Redis, clock: VirtualClock,
        variant: str) -> None:
    b = make(variant)
    t2 = activate(b, "t2")
    clock.advance(5)
    t1 = activate(b, "t1")
    clock.advance(5)
    activate(b, "t3")
    redis_client.zadd(keys.lease(Q), {"ghost": 0})
    before = b.snapshot(Q)
    assert b.list_lease_expired(Q, b.now_s - 10 + LEASE + 5) == [t2, t1]
    assert b.list_lease_expired(Q, b.now_s - 10 + LEASE + 4) == [t2]
    assert b.snapshot(Q) == before


@pytest.mark.parametrize("variant", VARIANTS)
def test_recover_retries_or_archives_tasks_whose_lease_expired(
        make: Callable[..., Broker], clock: VirtualClock, variant: str) -> None:
    b = make(variant)
    t1 = activate(b, "t1", retry=3, retried=1)
    t2 = activate(b, "t2", retry=2, retried=2)
    clock.advance(LEASE + b.policy.recover_skew - 1)
    t3 = activate(b, "t3")
    assert b.recover(Q) == 0  # one second early
    clock.advance(1)
    assert b.recover(Q) == 2
    now = b.now_s
    retry_at = now + b.policy.retry_delay_for("t1", 1)
    assert_keyspace(b, Q, zset(keys.retry(Q), {"t1": retry_at}),
                    thash(Q, "t1", msg=t1.failed(LEASE_EXPIRED, now), state="retry"),
                    zset(keys.archived(Q), {"t2": now}),
                    thash(Q, "t2", msg=t2.archived(LEASE_EXPIRED, now), state="archived"),
                    active_hash(t3), lst(keys.active(Q), "t3"),
                    zset(keys.lease(Q), {"t3": now - 1 + LEASE}), *counters(b, 2, 2))


@pytest.mark.parametrize("variant", VARIANTS)
def test_extend_lease_renews_existing_leases_only(make: Callable[..., Broker],
                                                  clock: VirtualClock, variant: str) -> None:
    b = make(variant)
    t1, t2 = activate(b, "t1"), activate(b, "t2")
    start = b.now_s
    clock.advance(10)
    assert b.extend_lease(Q, "t1", "ghost") == 1
    assert_keyspace(b, Q, active_hash(t1), active_hash(t2), lst(keys.active(Q), "t2", "t1"),
                    zset(keys.lease(Q), {"t1": b.now_s + LEASE, "t2": start + LEASE}))


# --- aggregation (T21–T24) -------------------------------------------------------------------------
def grouped(b: Broker, *task_ids: str, unique: bool = False) -> dict[str, TaskMessage]:
    """Add ``task_ids`` to group g1 now; return their stored messages."""
    out = {}
    for task_id in task_ids:
        if unique:
            b.add_to_group_unique(message(task_id), "g1", ttl=3600)
            out[task_id] = message(task_id, group_key="g1", unique_key=lock_key(task_id))
        else:
            b.add_to_group(message(task_id), "g1")
            out[task_id] = message(task_id, group_key="g1")
    return out


def group_hash(msg: TaskMessage, **extra: Any) -> KeyEntry:
    return thash(Q, msg.id, msg=msg, state="aggregating", group="g1", **extra)


SET = keys.group_set(Q, "g1", "set1")


@pytest.mark.parametrize("variant", [*VARIANTS, "reference+BZ-9"])
def test_aggregation_check_stages_the_whole_group_after_the_grace_period(
        make: Callable[..., Broker], clock: VirtualClock, variant: str) -> None:
    b = make(variant, aggregation_grace=10)
    start = b.now_s
    msgs = grouped(b, "a1", "a2")
    clock.advance(9)
    before = b.snapshot(Q)
    assert b.aggregation_check(Q, "g1", "set1") is None
    assert b.snapshot(Q) == before
    clock.advance(1)
    assert b.aggregation_check(Q, "g1", "set1") == "set1"
    groups = expectation(variant, {None: [], Quirk.EMPTIED_GROUP_STAYS_LISTED: [sset(keys.groups(Q), "g1")]})
    assert_keyspace(b, Q, *(group_hash(m) for m in msgs.values()),
                    zset(SET, {"a1": start, "a2": start}),
                    zset(keys.aggregation_sets(Q), {SET: b.now_s + 120}), *groups)


@pytest.mark.parametrize("variant", VARIANTS)
def test_aggregation_check_stages_max_size_tasks_and_keeps_the_group(
        make: Callable[..., Broker], clock: VirtualClock, variant: str) -> None:
    b = make(variant, aggregation_max_size=2)
    start = b.now_s
    msgs = grouped(b, "a2")
    clock.advance(1)
    msgs |= grouped(b, "a1", "a3")
    assert b.aggregation_check(Q, "g1", "set1") == "set1"
    assert_keyspace(b, Q, *(group_hash(m) for m in msgs.values()),
                    zset(SET, {"a2": start, "a1": start + 1}),
                    zset(keys.group(Q, "g1"), {"a3": start + 1}), sset(keys.groups(Q), "g1"),
                    zset(keys.aggregation_sets(Q), {SET: b.now_s + 120}))


def test_aggregation_check_max_delay_and_default_set_id(make: Callable[..., Broker],
                                                        clock: VirtualClock) -> None:
    b = make(aggregation_max_delay=30, aggregation_grace=60)
    grouped(b, "a1")
    clock.advance(20)
    grouped(b, "a2")
    clock.advance(9)
    assert b.aggregation_check(Q, "g1") is None
    clock.advance(1)
    set_id = b.aggregation_check(Q, "g1")
    assert set_id is not None and len(set_id) == 32 and int(set_id, 16) >= 0
    assert b.snapshot(Q).members(keys.group_set(Q, "g1", set_id)) == ("a1", "a2")


@pytest.mark.parametrize("variant", VARIANTS)
def test_read_aggregation_set_returns_messages_and_deadline(make: Callable[..., Broker],
                                                            clock: VirtualClock,
                                                            variant: str) -> None:
    b = make(variant, aggregation_grace=1)
    msgs = grouped(b, "a1", "a2")
    clock.advance(1)
    b.aggregation_check(Q, "g1", "set1")
    before = b.snapshot(Q)
    assert b.read_aggregation_set(Q, "g1", "set1") == ([msgs["a1"], msgs["a2"]], b.now_s + 120)
    with pytest.raises(TaskNotFoundError):
        b.read_aggregation_set(Q, "g1", "other")
    assert b.snapshot(Q) == before


#: What deleting set1 (unique members a1, a2, staged one second ago) leaves.
AGGREGATION_SET_DELETED_LEAVES: dict[Quirk | None, Callable[[Broker], list[KeyEntry]]] = {
    None: lambda b: [],
    # the locks stay until their TTL
    Quirk.LOCKS_KEPT_UNTIL_TTL: lambda b: [string(lock_key(i), i, b.now_ms - 1000 + 3_600_000)
                                           for i in ("a1", "a2")],
    # the set key stays indexed until the reclaim pass
    Quirk.SET_DELETE_KEEPS_INDEX_ENTRY: lambda b: [zset(keys.aggregation_sets(Q), {SET: b.now_s + 120})],
}


@pytest.mark.parametrize("variant", [*VARIANTS, "reference+BZ-8"])
def test_delete_aggregation_set_deletes_members_and_their_locks(make: Callable[..., Broker],
                                                                clock: VirtualClock,
                                                                variant: str) -> None:
    b = make(variant, aggregation_grace=1)
    grouped(b, "a1", "a2", unique=True)
    clock.advance(1)
    b.aggregation_check(Q, "g1", "set1")
    b.delete_aggregation_set(Q, "g1", "set1")
    assert_keyspace(b, Q, *expectation(variant, AGGREGATION_SET_DELETED_LEAVES)(b))


@pytest.mark.parametrize("variant", VARIANTS)
def test_reclaim_puts_stale_sets_back_into_their_group(make: Callable[..., Broker],
                                                       clock: VirtualClock, variant: str) -> None:
    b = make(variant, aggregation_grace=1)
    start = b.now_s
    msgs = grouped(b, "a1", "a2")
    clock.advance(1)
    b.aggregation_check(Q, "g1", "set1")
    clock.advance(119)
    before = b.snapshot(Q)
    assert b.reclaim_stale_aggregation_sets(Q) == 0
    assert b.snapshot(Q) == before
    clock.advance(1)
    assert b.reclaim_stale_aggregation_sets(Q) == 1
    groups = expectation(variant, {None: [sset(keys.groups(Q), "g1")],
                                   Quirk.RECLAIM_LEAVES_GROUP_UNLISTED: []})
    assert_keyspace(b, Q, *(group_hash(m) for m in msgs.values()),
                    zset(keys.group(Q, "g1"), {"a1": start, "a2": start}), *groups)


# --- write_result, pause (T26, T27) ----------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_write_result_stores_the_result(make: Callable[..., Broker], variant: str) -> None:
    b = make(variant)
    msg = activate(b, "t1")
    assert b.write_result(Q, "t1", b"\x00ok\xff") == 4
    assert_keyspace(b, Q, active_hash(msg, result="\x00ok\udcff"), lst(keys.active(Q), "t1"),
                    zset(keys.lease(Q), {"t1": b.now_s + LEASE}))


#: write_result after t1 was done: the error, and the snapshot after, from the one before.
WRITE_RESULT_AFTER_DELETION: dict[Quirk | None, tuple[
        Raised,
        Callable[[Broker, KeyspaceSnapshot], KeyspaceSnapshot]]] = {
    None: ((TaskNotFoundError, None), lambda b, before: before),
    # a result-only hash, no index, no TTL
    Quirk.WRITE_RESULT_WITHOUT_TASK: (None, lambda b, before: expected(b, Q, thash(Q, "t1", result="late"),
                                                  *counters(b, 1))),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_write_result_after_deletion(make: Callable[..., Broker], variant: str) -> None:
    b = make(variant)
    b.done(activate(b, "t1"))
    before = b.snapshot(Q)
    error, after = expectation(variant, WRITE_RESULT_AFTER_DELETION)
    with raises(error):
        assert b.write_result(Q, "t1", b"late") == 4
    assert_snapshot(b, after(b, before))


@pytest.mark.parametrize("variant", VARIANTS)
def test_pause_and_unpause(make: Callable[..., Broker], clock: VirtualClock, variant: str
                           ) -> None:
    b = make(variant)
    b.enqueue(message("t1"))
    pending = [lst(keys.pending(Q), "t1"),
               thash(Q, "t1", msg=message("t1"), state="pending", pending_since=str(b.clock.now_ns))]
    b.pause(Q)
    paused_at = b.now_s
    clock.advance(7)
    with pytest.raises(AlreadyInStateError):
        b.pause(Q)
    assert_keyspace(b, Q, *pending, string(keys.paused(Q), paused_at))
    b.unpause(Q)
    assert_keyspace(b, Q, *pending)
    with pytest.raises(AlreadyInStateError):
        b.unpause(Q)


@pytest.mark.parametrize("op", ["pause", "unpause"])
def test_pause_of_an_unregistered_queue_is_refused(make: Callable[..., Broker],
                                                   redis_client: redis.Redis, op: str) -> None:
    b = make()
    redis_client.set(keys.paused(Q), 1)  # even a leftover flag cannot be cleared this way
    before = b.snapshot(Q)
    with pytest.raises(QueueNotFoundError, match="asynq:queues"):
        getattr(b, op)(Q)
    assert b.snapshot(Q) == before


# --- daily counters on the virtual clock -----------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_daily_counter_expires_at_its_virtual_deadline(make: Callable[..., Broker],
                                                       clock: VirtualClock, variant: str) -> None:
    b = make(variant, stats_ttl=100)
    b.done(activate(b, "t1"))
    daily = keys.processed_daily(Q, b.clock.utc_date())
    deadline = b.stats_deadline_ms()
    clock.advance(99.999)
    assert b.snapshot(Q).get(daily) == string(daily, 1, deadline)
    clock.advance(0.001)
    assert_keyspace(b, Q, string(keys.processed_total(Q), 1))
    b.done(activate(b, "t2"))  # the INCR finds the key expired: a fresh count and deadline
    assert_keyspace(b, Q, string(daily, 1, b.stats_deadline_ms()),
                    string(keys.processed_total(Q), 2))


# --- bad input -------------------------------------------------------------------------------------
T1 = message("t1")
BAD_SERVER_CALLS: list[tuple[str, Callable[[Broker], object], type[Exception], str]] = [
    ("dequeue blank queue", lambda b: b.dequeue(" "), ValueError, "queue"),
    ("done empty id", lambda b: b.done(message("")), ValueError, "task id"),
    ("done id with brace", lambda b: b.done(message("t{1}")), ValueError, "task id"),
    ("complete payload not bytes",
     lambda b: b.mark_as_complete(replace(T1, payload="x")),  # type: ignore[arg-type]
     TypeError, "payload"),
    ("requeue not a message", lambda b: b.requeue("t1"), TypeError, "msg"),  # type: ignore[arg-type]
    ("retry_at not int", lambda b: b.retry(T1, 1.5, "e"), TypeError, "retry_at"),  # type: ignore[arg-type]
    ("retry error not str", lambda b: b.retry(T1, 1, 5), TypeError, "error"),  # type: ignore[arg-type]
    ("retry is_failure not bool", lambda b: b.retry(T1, 1, "e", 1), TypeError,  # type: ignore[arg-type]
     "is_failure"),
    ("archive error not str", lambda b: b.archive(T1, None), TypeError, "error"),  # type: ignore[arg-type]
    ("forward queue with brace", lambda b: b.forward_if_ready("a{b"), ValueError, "queue"),
    ("janitor blank queue", lambda b: b.delete_expired_completed_tasks(""), ValueError, "queue"),
    ("cutoff blank queue", lambda b: b.delete_expired_archived_tasks("\t"), ValueError, "queue"),
    ("list cutoff not int", lambda b: b.list_lease_expired(Q, "1"), TypeError, "cutoff"),  # type: ignore[arg-type]
    ("recover blank queue", lambda b: b.recover(""), ValueError, "queue"),
    ("extend empty id", lambda b: b.extend_lease(Q, "t1", ""), ValueError, "task id"),
    ("check group with colon", lambda b: b.aggregation_check(Q, "g:1"), ValueError, "group"),
    ("check empty set id", lambda b: b.aggregation_check(Q, "g1", ""), ValueError, "set id"),
    ("read blank group", lambda b: b.read_aggregation_set(Q, " ", "s"), ValueError, "group"),
    ("delete set id with brace", lambda b: b.delete_aggregation_set(Q, "g1", "a}b"), ValueError,
     "set id"),
    ("reclaim queue with brace", lambda b: b.reclaim_stale_aggregation_sets("{"), ValueError,
     "queue"),
    ("result not bytes", lambda b: b.write_result(Q, "t1", "text"), TypeError, "data"),  # type: ignore[arg-type]
    ("result empty id", lambda b: b.write_result(Q, "", b"x"), ValueError, "task id"),
    ("pause blank queue", lambda b: b.pause(""), ValueError, "queue"),
    ("unpause control char", lambda b: b.unpause("q\n"), ValueError, "queue"),
]


@pytest.mark.parametrize(("name", "call", "error", "names"), BAD_SERVER_CALLS,
                         ids=[c[0] for c in BAD_SERVER_CALLS])
def test_bad_server_input_is_refused_before_any_write(
        make: Callable[..., Broker], clock: VirtualClock, name: str,
        call: Callable[[Broker], object], error: type[Exception], names: str) -> None:
    b = make()
    activate(b, "t1")
    b.add_to_group(message("a1"), "g1")
    clock.advance(3600)  # everything would be due: a leaked write would show
    before = b.snapshot(Q), b.queues()
    with pytest.raises(error, match=names):
        call(b)
    assert (b.snapshot(Q), b.queues()) == before
