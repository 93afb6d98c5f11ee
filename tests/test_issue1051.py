"""Asynq #1051 (spec BZ-25): tasks left active without a lease, measured on real Redis.

An ``allkeys-*`` maxmemory policy may evict any key, the lease zset of a queue included, while
its active list stays. Every task of that queue in flight is then active without a lease (I3),
and the recoverer, which finds abandoned tasks through the lease only, never takes them back.
Under ``volatile-*`` (or ``noeviction``) the same memory pressure evicts no task key: Asynq's
task keys carry no TTL, so Redis refuses the writes instead (OOM) and I3 holds.
docs/findings.md, section "#1051: tasks active without a lease", has the whole search.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis as redis_py

from broker import Broker
from broker.servers import RedisServer, find_path_binary, launch
from harness.config import MACHINE_POLICY
from model import keys
from model.clock import VirtualClock
from model.invariants import Kind, check_all
from model.message import TaskMessage

Q = "default"
TASKS = ("t0", "t1", "t2")
#: Small values: each write goes over the limit by less than one evicted key frees, so Redis
#: evicts one key at a time and the first loss is seen alone.
FILLER_BYTES = 64
HEADROOM_BYTES = 64 * 1024
MAX_FILLERS = 5000


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A private Redis 7 (its memory settings are changed, so it is never the shared one)."""
    binary = find_path_binary()
    if binary is None:
        pytest.skip("needs redis-server on PATH")
    with launch(binary, "redis-server") as started:
        yield started


def in_flight(server: RedisServer) -> Broker:
    """Asynq v0.26.0's scripts, three tasks dequeued: each in active and in lease."""
    broker = Broker(redis_py.Redis.from_url(server.url), "asynq-v0.26.0", MACHINE_POLICY,
                    VirtualClock())
    for task_id in TASKS:
        broker.enqueue(TaskMessage(type="job", payload=b"x", id=task_id, queue=Q))
    for _ in TASKS:
        assert broker.dequeue(Q) is not None
    assert check_all(broker.snapshot(Q), MACHINE_POLICY) == []
    return broker


def make_idlest(client: redis_py.Redis, key: str) -> None:
    """Give ``key`` the largest LRU idle time (RESTORE ... IDLETIME), so that allkeys-lru
    picks it first: which of the queue's keys is idlest varies with the traffic; this fixes
    it on the lease."""
    dumped = client.dump(key)
    assert dumped is not None
    client.restore(key, 0, dumped, replace=True, idletime=3600)


def memory_pressure(client: redis_py.Redis, policy: str) -> int:
    """Set ``maxmemory`` just above what is used under ``policy``, then write filler values
    (another application's cache) until one of the queue's keys is gone or MAX_FILLERS were
    written; lift the limit again. Returns how many writes Redis refused (OOM)."""
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory-policy", policy)
    client.config_set("maxmemory", used + HEADROOM_BYTES)
    refused = 0
    watched = (keys.lease(Q), keys.active(Q))
    try:
        for n in range(MAX_FILLERS):
            try:
                client.set(f"cache:{n}", b"c" * FILLER_BYTES)
            except redis_py.exceptions.OutOfMemoryError:
                refused += 1
            if client.exists(*watched) < len(watched):
                break
    finally:
        client.config_set("maxmemory", 0)
    return refused


def test_allkeys_lru_evicts_the_lease_and_leaves_every_task_active_without_one(
        server: RedisServer) -> None:
    broker = in_flight(server)
    make_idlest(broker.client, keys.lease(Q))
    memory_pressure(broker.client, "allkeys-lru")
    assert broker.client.exists(keys.lease(Q)) == 0
    assert [v.decode() for v in broker.client.lrange(keys.active(Q), 0, -1)] == list(TASKS)[::-1]
    kinds = {(v.kind, v.task_id) for v in check_all(broker.snapshot(Q), MACHINE_POLICY)}
    assert {(Kind.ACTIVE_WITHOUT_LEASE, t) for t in TASKS} <= kinds
    # Stuck: the heartbeat renews only leases that exist, and the recoverer, long after every
    # lease would have ended, finds none to take back.
    assert broker.extend_lease(Q, *TASKS) == 0
    broker.clock.advance(10 * MACHINE_POLICY.lease_duration)
    assert broker.recover(Q) == 0
    assert broker.client.llen(keys.active(Q)) == len(TASKS)
    assert broker.client.exists(keys.lease(Q)) == 0


def test_volatile_lru_refuses_writes_instead_and_active_keeps_its_lease(
        server: RedisServer) -> None:
    broker = in_flight(server)
    make_idlest(broker.client, keys.lease(Q))
    refused = memory_pressure(broker.client, "volatile-lru")
    assert refused > 0  # the overload shows as OOM errors, not as lost keys
    assert broker.client.exists(keys.lease(Q), keys.active(Q)) == 2
    assert check_all(broker.snapshot(Q), MACHINE_POLICY) == []
