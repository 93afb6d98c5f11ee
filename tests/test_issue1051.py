"""Asynq #1051 (spec BZ-25): tasks left active without a lease, measured on real Redis.

On our ``asynq-v0.26.0`` scripts and on Asynq v0.26.0's own code (the Go driver): an
``allkeys-*`` maxmemory policy may evict any key, the lease zset of a queue included, while
its active list stays. Every task of that queue in flight is then active without a lease (I3),
and the recoverer, which finds abandoned tasks through the lease only, never takes them back.
Under ``volatile-*`` (or ``noeviction``) the same memory pressure evicts no task key: Asynq's
task keys carry no TTL, so Redis refuses the writes instead (OOM) and I3 holds.
docs/findings.md, section "#1051: tasks active without a lease", has the whole search.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis as redis_py
from support import driver_or_skip, go_backend_or_skip

from broker import Broker
from broker.asynq_go import AsynqGoBroker
from broker.servers import RedisServer, ServerUnavailable, start_server
from harness.config import MACHINE_POLICY
from harness.search_1051 import CHECK_EVERY, OPERATIONS, VARIANTS, eviction_traffic, search
from model import keys
from model.clock import VirtualClock
from model.invariants import Kind, check_all
from model.message import TaskMessage

Q = "default"
TASKS = ("t0", "t1", "t2")
#: Small filler values, written to database 1: each write goes over the limit by less than
#: one evicted key frees, so Redis evicts one key at a time, and the queue's few keys in
#: database 0 are all sampled each time (maxmemory-samples) while the fillers are not in
#: their way. The first loss is then the idlest key's, alone. PREFILLED keys are written
#: before the limit, so that no hash-table resize (a jump of kilobytes) happens under it.
FILLER_BYTES = 8
PREFILLED = 2100
HEADROOM_BYTES = 64 * 1024
MAX_FILLERS = 1800


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A private server of the run's launcher (its memory settings are changed, so it is never
    ``REDIS_URL``'s); skipped without one, failed instead under ``KEYSIM_REQUIRE_REDIS=1``."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    try:
        started = start_server(env)
    except ServerUnavailable as err:
        if os.environ.get("KEYSIM_REQUIRE_REDIS") == "1":
            pytest.fail(f"KEYSIM_REQUIRE_REDIS=1 but {err}")
        pytest.skip(str(err))
    with started:
        yield started


@pytest.fixture(params=["asynq-v0.26.0", "asynq"])
def code(request: pytest.FixtureRequest) -> str:
    """Whose code runs the queue: our ``asynq-v0.26.0`` scripts, or (``asynq``) Asynq v0.26.0's
    own ``RDB`` and components through the Go driver."""
    if request.param == "asynq":
        driver_or_skip("v0.26.0")
    return str(request.param)


def in_flight(server: RedisServer, code: str = "asynq-v0.26.0") -> tuple[Any, redis_py.Redis]:
    """Three tasks dequeued by ``code``: each in active and in lease; the broker and a client
    of its database."""
    client = redis_py.Redis.from_url(server.url)
    broker: Any = (AsynqGoBroker(server.url, "v0.26.0", clock=VirtualClock()) if code == "asynq"
                   else Broker(client, code, MACHINE_POLICY, VirtualClock()))
    for task_id in TASKS:
        broker.enqueue(TaskMessage(type="job", payload=b"x", id=task_id, queue=Q))
    for _ in TASKS:
        assert broker.dequeue(Q) is not None
    assert check_all(broker.snapshot(Q), MACHINE_POLICY) == []
    return broker, client


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
    kwargs = client.connection_pool.connection_kwargs
    filler = redis_py.Redis(host=kwargs["host"], port=kwargs["port"], db=1)
    filler.mset({f"cache:{n}": b"c" * FILLER_BYTES for n in range(PREFILLED)})
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory-samples", 64)
    client.config_set("maxmemory-policy", policy)
    client.config_set("maxmemory", used + HEADROOM_BYTES)
    refused = 0
    watched = (keys.lease(Q), keys.active(Q))
    try:
        for n in range(PREFILLED, PREFILLED + MAX_FILLERS):
            try:
                filler.set(f"cache:{n}", b"c" * FILLER_BYTES)
            except redis_py.exceptions.OutOfMemoryError:
                refused += 1
            if client.exists(*watched) < len(watched):
                break
    finally:
        client.config_set("maxmemory", 0)
    return refused


@pytest.fixture
def evictable(server: RedisServer, code: str) -> Iterator[tuple[Any, redis_py.Redis]]:
    """:func:`in_flight` by ``code``; the Go driver is stopped afterwards."""
    if code == "asynq":
        go_backend_or_skip(server)  # Asynq's Go backend needs PEXPIRETIME (Redis >= 7.0)
        if "valkey" in redis_py.Redis.from_url(server.url).info("server").get("server_name", ""):
            # Measured on Valkey 9.1.2: with the Go driver connected, 1,800 fillers evicted one
            # another and neither lease nor active (our variant's case does evict the lease).
            pytest.skip("on Valkey the fillers evict each other first with the Go driver "
                        "connected; the eviction is shown on Redis")
    broker, client = in_flight(server, code)
    yield broker, client
    if code == "asynq":
        broker.close()


def test_allkeys_lru_evicts_the_lease_and_leaves_every_task_active_without_one(
        evictable: tuple[Any, redis_py.Redis]) -> None:
    broker, client = evictable
    make_idlest(client, keys.lease(Q))
    memory_pressure(client, "allkeys-lru")
    assert client.exists(keys.lease(Q)) == 0
    assert client.lrange(keys.active(Q), 0, -1) == [t.encode() for t in reversed(TASKS)]
    kinds = {(v.kind, v.task_id) for v in check_all(broker.snapshot(Q), MACHINE_POLICY)}
    assert {(Kind.ACTIVE_WITHOUT_LEASE, t) for t in TASKS} <= kinds
    # Stuck: the heartbeat renews only leases that exist, and the recoverer, long after every
    # lease would have ended, finds none to take back.
    assert broker.extend_lease(Q, *TASKS) == 0
    broker.clock.advance(10 * MACHINE_POLICY.lease_duration)
    assert broker.recover(Q) == 0
    assert client.llen(keys.active(Q)) == len(TASKS)
    assert client.exists(keys.lease(Q)) == 0


def test_volatile_lru_refuses_writes_instead_and_active_keeps_its_lease(
        server: RedisServer) -> None:
    broker, client = in_flight(server)
    make_idlest(client, keys.lease(Q))
    refused = memory_pressure(client, "volatile-lru")
    assert refused > 0  # the overload shows as OOM errors, not as lost keys
    assert client.exists(keys.lease(Q), keys.active(Q)) == 2
    assert check_all(broker.snapshot(Q), MACHINE_POLICY) == []


def test_a_cut_script_leaves_a_task_active_without_a_lease_only_inside_the_dequeue() -> None:
    """Every cut point of every script that writes active or lease (harness.search_1051):
    only a dequeue stopped after its push to active, at HSET, HDEL or ZADD of the lease,
    leaves a task active without a lease. A report stopped after its LREM leaves the
    opposite (a lease without active); no other cut breaks I3."""
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    for variant in VARIANTS:
        cuts = [cut for cut in search(client) if cut.variant == variant]
        without_lease = {(c.operation, c.command) for c in cuts
                         if Kind.ACTIVE_WITHOUT_LEASE.value in c.i3}
        assert without_lease == {("dequeue", "HSET"), ("dequeue", "HDEL"), ("dequeue", "ZADD")}
        without_active = {(c.operation, c.kept) for c in cuts
                          if Kind.LEASE_WITHOUT_ACTIVE.value in c.i3}
        assert without_active == {(op, 1) for op in OPERATIONS if op != "dequeue"}
        assert all(c.command is None for c in cuts if c.kept == max(
            d.kept for d in cuts if d.operation == c.operation))  # each ran whole at the end


def test_volatile_lru_traffic_never_breaks_i3(server: RedisServer) -> None:
    """Asynq-like traffic past maxmemory under volatile-lru: Asynq's keys have no TTL, so
    nothing of the queue is evicted; writes are refused and I3 holds at every check."""
    counts = eviction_traffic(redis_py.Redis.from_url(server.url), "volatile-lru", 1500, 0)
    assert counts["checks"] == 1500 // CHECK_EVERY
    assert counts["refused"] + counts["oom"] > 0
    assert not {Kind.ACTIVE_WITHOUT_LEASE.value, Kind.LEASE_WITHOUT_ACTIVE.value,
                Kind.DUPLICATE_IN_ACTIVE.value} & set(counts)
