"""Client operations (T1–T6) on both backends: the exact keyspace after each operation.

Each test runs one client operation on an empty (or prepared) queue and compares the whole
snapshot with an expected keyspace built from ``model.keys`` names. Variants: ``reference``
(leak-free) and ``asynq-v0.26.0`` (BZ-4: no unique_key on group-unique hashes; BZ-5: lock
taken before the id check; schedule never stores the group).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from support import (
    VARIANTS,
    Q,
    assert_keyspace,
    expectation,
    lock_key,
    message,
    sset,
    string,
    thash,
    zset,
)

from broker import Broker
from broker.variants import Quirk
from model import keys
from model.clock import VirtualClock
from model.errors import DuplicateTaskError, TaskIdConflictError
from model.message import TaskMessage
from model.snapshot import FieldValue


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def make(redis_client: redis.Redis, clock: VirtualClock) -> Callable[..., Broker]:
    """``make(variant="reference", policy=None)``: a broker on the current backend and clock."""
    return lambda variant="reference", policy=None: Broker(redis_client, variant, policy, clock)


# --- schedule (T3/T4) ------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_schedule_writes_hash_and_scheduled_entry(make: Callable[..., Broker], variant: str
                                                  ) -> None:
    b = make(variant)
    at = b.now_s + 60
    b.schedule(message("s1"), at)
    assert_keyspace(b, Q, thash(Q, "s1", msg=message("s1"), state="scheduled"),
                    zset(keys.scheduled(Q), {"s1": at}))


@pytest.mark.parametrize("variant", VARIANTS)
def test_schedule_stores_the_group_only_in_the_reference(make: Callable[..., Broker],
                                                         variant: str) -> None:
    b = make(variant)
    msg = message("s1", group_key="g1")
    b.schedule(msg, b.now_s + 5)
    # the reference forwards it into its group later; Asynq forwards it to pending
    group: dict[str, FieldValue] = expectation(
        variant, {None: {"group": "g1"}, Quirk.SCHEDULE_NO_GROUP: {}})
    assert_keyspace(b, Q, thash(Q, "s1", msg=msg, state="scheduled", **group),
                    zset(keys.scheduled(Q), {"s1": b.now_s + 5}))


@pytest.mark.parametrize("variant", VARIANTS)
def test_schedule_conflict_writes_nothing_but_registers(make: Callable[..., Broker],
                                                        variant: str) -> None:
    b = make(variant)
    b.enqueue(message("t1"))
    before = b.snapshot(Q)
    with pytest.raises(TaskIdConflictError):
        b.schedule(message("t1"), b.now_s + 5)
    assert b.snapshot(Q) == before


@pytest.mark.parametrize("variant", VARIANTS)
def test_schedule_unique_takes_the_lock(make: Callable[..., Broker], variant: str) -> None:
    b = make(variant)
    at = b.now_s + 60
    b.schedule_unique(message("s1"), at, ttl=90)
    lock = lock_key("s1")
    assert_keyspace(b, Q,
                    thash(Q, "s1", msg=message("s1", unique_key=lock), state="scheduled",
                          unique_key=lock),
                    zset(keys.scheduled(Q), {"s1": at}),
                    string(lock, "s1", b.now_ms + 90_000))


@pytest.mark.parametrize("variant", VARIANTS)
def test_schedule_unique_duplicate_writes_nothing(make: Callable[..., Broker], variant: str
                                                  ) -> None:
    b = make(variant)
    lock = lock_key("s1")
    b.enqueue_unique(message("t1", unique_key=lock), ttl=30)
    before = b.snapshot(Q)
    with pytest.raises(DuplicateTaskError):
        b.schedule_unique(message("s1"), b.now_s + 5, ttl=30)
    assert b.snapshot(Q) == before


@pytest.mark.parametrize("variant", VARIANTS)
def test_schedule_unique_conflict_leaves_a_lock_only_in_asynq(make: Callable[..., Broker],
                                                              variant: str) -> None:
    b = make(variant)
    b.schedule(message("s1", payload=b"other"), b.now_s + 5)
    before = b.snapshot(Q)
    with pytest.raises(TaskIdConflictError):
        b.schedule_unique(message("s1"), b.now_s + 5, ttl=30)
    # BZ-5: the lock was set before the id check and stays until its TTL
    left = expectation(variant, {
        None: [],
        Quirk.LOCK_TAKEN_BEFORE_ID_CHECK: [string(lock_key("s1"), "s1", b.now_ms + 30_000)]})
    assert_keyspace(b, Q, *before, *left)


# --- add_to_group (T5/T6) --------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_add_to_group_writes_hash_group_and_groups(make: Callable[..., Broker], variant: str
                                                   ) -> None:
    b = make(variant)
    b.add_to_group(message("a1"), "g1")
    assert_keyspace(b, Q,
                    thash(Q, "a1", msg=message("a1", group_key="g1"), state="aggregating",
                          group="g1"),
                    zset(keys.group(Q, "g1"), {"a1": b.now_s}),
                    sset(keys.groups(Q), "g1"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_add_to_group_unique_names_the_lock_only_in_the_reference(make: Callable[..., Broker],
                                                                  variant: str) -> None:
    b = make(variant)
    b.add_to_group_unique(message("a1"), "g1", ttl=60)
    lock = lock_key("a1")
    # BZ-4: Asynq's hash has no unique_key
    names_lock: dict[str, FieldValue] = expectation(
        variant, {None: {"unique_key": lock}, Quirk.LOCKS_KEPT_UNTIL_TTL: {}})
    stored = thash(Q, "a1", msg=message("a1", group_key="g1", unique_key=lock),
                   state="aggregating", group="g1", **names_lock)
    assert_keyspace(b, Q, stored, zset(keys.group(Q, "g1"), {"a1": b.now_s}),
                    sset(keys.groups(Q), "g1"), string(lock, "a1", b.now_ms + 60_000))


@pytest.mark.parametrize("variant", VARIANTS)
def test_add_to_group_conflict_writes_nothing(make: Callable[..., Broker], variant: str) -> None:
    b = make(variant)
    b.add_to_group(message("a1"), "g1")
    before = b.snapshot(Q)
    with pytest.raises(TaskIdConflictError):
        b.add_to_group(message("a1"), "g2")
    assert b.snapshot(Q) == before


@pytest.mark.parametrize("variant", VARIANTS)
def test_add_to_group_unique_conflict_leaves_a_lock_only_in_asynq(make: Callable[..., Broker],
                                                                  variant: str) -> None:
    b = make(variant)
    b.enqueue(message("a1", payload=b"other"))
    before = b.snapshot(Q)
    with pytest.raises(TaskIdConflictError):
        b.add_to_group_unique(message("a1"), "g1", ttl=30)
    left = expectation(variant, {  # BZ-5, as for schedule_unique
        None: [],
        Quirk.LOCK_TAKEN_BEFORE_ID_CHECK: [string(lock_key("a1"), "a1", b.now_ms + 30_000)]})
    assert_keyspace(b, Q, *before, *left)


@pytest.mark.parametrize("variant", VARIANTS)
def test_add_to_group_unique_duplicate_writes_nothing(make: Callable[..., Broker], variant: str
                                                      ) -> None:
    b = make(variant)
    b.add_to_group_unique(message("a1"), "g1", ttl=30)
    before = b.snapshot(Q)
    with pytest.raises(DuplicateTaskError):
        b.add_to_group_unique(message("a2", unique_key=lock_key("a1")), "g1", ttl=30)
    assert b.snapshot(Q) == before


# --- lock expiry on the virtual clock --------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_unique_lock_expires_at_its_virtual_deadline(make: Callable[..., Broker],
                                                     clock: VirtualClock, variant: str) -> None:
    b = make(variant)
    at = b.now_s + 3600
    b.schedule_unique(message("s1"), at, ttl=10)
    lock = lock_key("s1")
    deadline = b.now_ms + 10_000
    clock.advance(9.999)
    assert b.snapshot(Q).get(lock) == string(lock, "s1", deadline)
    with pytest.raises(DuplicateTaskError):
        b.schedule_unique(message("s2", unique_key=lock), at, ttl=10)
    clock.advance(0.001)
    assert b.snapshot(Q).get(lock) is None
    # The script expires the stale lock lazily and takes it for the new owner.
    b.schedule_unique(message("s2", unique_key=lock), at, ttl=10)
    assert b.snapshot(Q).get(lock) == string(lock, "s2", b.now_ms + 10_000)


def test_expire_due_sweeps_a_passed_lock(make: Callable[..., Broker], clock: VirtualClock,
                                         redis_client: redis.Redis) -> None:
    b = make()
    b.add_to_group_unique(message("a1"), "g1", ttl=5)
    clock.advance(5)
    assert redis_client.exists(lock_key("a1")) == 1  # Redis' own clock never expires it
    assert b.expire_due(Q) == 1
    assert redis_client.exists(lock_key("a1")) == 0


# --- bad input -------------------------------------------------------------------------------------
BAD_CLIENT_CALLS: list[tuple[str, Callable[[Broker], object], type[Exception], str]] = [
    ("blank queue", lambda b: b.schedule(message("s1", queue=" "), 1), ValueError, "queue"),
    ("empty id", lambda b: b.schedule(message(""), 1), ValueError, "task id"),
    ("id with brace", lambda b: b.schedule(message("a{b"), 1), ValueError, "task id"),
    ("payload not bytes",
     lambda b: b.schedule(TaskMessage(type="e", payload="x", id="s1", queue=Q),  # type: ignore[arg-type]
                          1), TypeError, "payload"),
    ("process_at not int", lambda b: b.schedule(message("s1"), 1.5), TypeError,  # type: ignore[arg-type]
     "process_at"),
    ("group in msg with colon", lambda b: b.schedule(message("s1", group_key="a:b"), 1),
     ValueError, "group"),
    ("ttl < 1", lambda b: b.schedule_unique(message("s1"), 1, 0), ValueError, "ttl"),
    ("ttl not int", lambda b: b.schedule_unique(message("s1"), 1, 2.0), ValueError,  # type: ignore[arg-type]
     "ttl"),
    ("foreign unique key",
     lambda b: b.schedule_unique(message("s1", unique_key=lock_key("s1", "other")), 1, 5),
     ValueError, "unique_key"),
    ("group with colon", lambda b: b.add_to_group(message("a1"), "g:1"), ValueError, "group"),
    ("blank group", lambda b: b.add_to_group(message("a1"), ""), ValueError, "group"),
    ("group with brace", lambda b: b.add_to_group_unique(message("a1"), "g{", 5), ValueError,
     "group"),
    ("group ttl < 1", lambda b: b.add_to_group_unique(message("a1"), "g1", 0), ValueError, "ttl"),
    ("msg not a message", lambda b: b.add_to_group("a1", "g1"), TypeError, "msg"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("name", "call", "error", "names"), BAD_CLIENT_CALLS,
                         ids=[c[0] for c in BAD_CLIENT_CALLS])
def test_bad_client_input_is_refused_before_any_write(
        make: Callable[..., Broker], name: str, call: Callable[[Broker], object],
        error: type[Exception], names: str) -> None:
    b = make()
    b.enqueue(message("t0", queue="other"))  # something in the keyspace besides
    before = b.snapshot(Q), b.snapshot("other"), b.queues()
    with pytest.raises(error, match=names):
        call(b)
    assert (b.snapshot(Q), b.snapshot("other"), b.queues()) == before
    assert not before[0].registered
