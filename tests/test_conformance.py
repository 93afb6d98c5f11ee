"""Conformance with real Asynq: the differential test (harness.conform) for v0.26.0 and v0.24.0,
and the plumbing of :class:`broker.asynq_go.AsynqGoBroker` (time normalisation, validation).

Needs Go (the driver is built by conformance/build.sh, cached) and a real Redis; without Go the
tests skip with the reason, unless ``KEYSIM_REQUIRE_ASYNQ=1`` (CI) makes that a failure.
The number of generated sequences is ``KEYSIM_CONFORM_EXAMPLES`` (default: 200 under
``KEYSIM_REQUIRE_ASYNQ=1``, else 30), on one server and on Redis Cluster alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from support import conform_examples, db_url, driver_or_skip

from broker import Broker
from broker.asynq_go import (
    CLUSTER_SCHEME,
    HOW_TO_ENABLE,
    AsynqGoBroker,
    DriverError,
    DriverProcess,
    DriverUnavailable,
    build_driver,
)
from broker.cluster import LocalCluster, start_cluster
from broker.scripting import encode_deadline
from broker.servers import RedisServer
from harness.conform import (
    CONFORM_POLICY,
    EVENTS,
    OPERATIONS,
    SCENARIOS,
    Differential,
    Divergence,
    Op,
    conform,
)
from harness.observe import Observer
from model import keys
from model.message import TaskMessage
from model.policy import DAY, Policy

Q = "default"


@pytest.mark.parametrize("version", ["v0.26.0", "v0.24.0"])
def test_differential(version: str, asynq_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    """Our asynq-<version> variant and real Asynq agree on every answer and every keyspace."""
    driver_or_skip(version)
    diff = conform(db_url(asynq_server, f"ours:{version}"),
                   db_url(asynq_server, f"asynq:{version}"), version, conform_examples())
    with capsys.disabled():
        print(f"\n[{version}] {diff.report()}")
    assert diff.sequences == conform_examples() + len(SCENARIOS)
    assert diff.missing() == []


@pytest.fixture(scope="module")
def asynq_cluster(real_cluster: LocalCluster) -> Iterator[LocalCluster]:
    """A second local cluster, for Asynq's side: a cluster has database 0 only, so each side
    of the comparison needs a cluster of its own."""
    with start_cluster(len(real_cluster.nodes)) as cluster:
        yield cluster


def cluster_url(cluster: LocalCluster) -> str:
    """The URL naming ``cluster`` (by its first node) for AsynqGoBroker and the driver."""
    return f"{CLUSTER_SCHEME}://{cluster.url.split('://', 1)[1]}"


@pytest.mark.parametrize("version", ["v0.26.0"])
def test_differential_on_a_cluster(version: str, real_cluster: LocalCluster,
                                   asynq_cluster: LocalCluster,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The differential test on Redis Cluster: our variant on one cluster (ClusterWire), Asynq's
    code on go-redis's ClusterClient on another; answers and keyspaces must agree. A misrouted
    command on either side (CROSSSLOT, MOVED, ...) raises ClusterRoutingError and fails it."""
    driver_or_skip(version)
    for cluster in (real_cluster, asynq_cluster):  # registration and scripts on two masters
        client = cluster.client()
        assert _port_of(client, keys.ALL_QUEUES) != _port_of(client, keys.pending(Q))
        client.close()
    diff = conform(cluster_url(real_cluster), cluster_url(asynq_cluster), version,
                   conform_examples())
    with capsys.disabled():
        print(f"\n[{version} on Redis Cluster] {diff.report()}")
    assert diff.sequences == conform_examples() + len(SCENARIOS)
    assert diff.missing() == []


def test_asynq_v024_cannot_open_a_cluster_of_this_server(asynq_cluster: LocalCluster) -> None:
    """Finding (docs/findings.md): Asynq v0.24.0's go-redis (v8.11.2, as its go.mod requires)
    cannot parse CLUSTER SLOTS of Redis >= 7.0 and Valkey (four elements per node), so its
    cluster client fails before any Asynq call; the driver exits with go-redis's error."""
    driver_or_skip("v0.24.0")
    with pytest.raises(DriverError, match="got 4 elements in cluster info address"):
        AsynqGoBroker(cluster_url(asynq_cluster), "v0.24.0")


def test_cluster_driver_reports_moved_instead_of_following_it(asynq_cluster: LocalCluster) -> None:
    """The queue's slot moves to another master after the driver learnt the slot map: Asynq's
    next call reaches the old node, whose MOVED reply the driver reports, never follows."""
    cluster = asynq_cluster.client()
    cluster.flushdb()  # on every primary: a slot hands over without migrating keys only empty
    slot, owner = key_slot(keys.pending(Q).encode()), _port_of(cluster, keys.pending(Q))
    nodes = {int(urlsplit(url).port or 0): redis.Redis.from_url(url) for url in asynq_cluster.urls}
    other = next(port for port in nodes if port != owner)
    driver = DriverProcess(driver_or_skip("v0.26.0"), cluster_url(asynq_cluster))
    dequeue = {"op": "dequeue", "now": 0, "queue": Q}  # reads only: the slot stays empty
    try:
        assert driver.call(dequeue) == {"ok": True, "result": None}
        _assign(list(nodes.values()), slot, nodes[other])
        reply = driver.call(dequeue)
        assert reply["ok"] is False and reply["kind"] == "misrouted", reply
        assert reply["error"].startswith(f"MOVED {slot} ")
    finally:
        _assign(list(nodes.values()), slot, nodes[owner])
        driver.close()
        cluster.close()
        for node in nodes.values():
            node.close()


def _port_of(client: RedisCluster, key: str) -> int:
    """The port of the primary that serves ``key`` (every local node is on 127.0.0.1)."""
    return int(client.nodes_manager.get_node_from_slot(key_slot(key.encode())).port)


def _assign(nodes: list[redis.Redis], slot: int, to: redis.Redis) -> None:
    """Hand the (empty) ``slot`` to node ``to`` in every node's own map."""
    target = to.cluster("MYID")
    for node in nodes:
        node.cluster("SETSLOT", slot, "NODE", target)


def test_cluster_url_names_database_0_only() -> None:
    with pytest.raises(ValueError, match="a Redis Cluster has database 0 only"):
        AsynqGoBroker(f"{CLUSTER_SCHEME}://127.0.0.1:1/2")


def test_differential_detects_a_divergence(go_broker: AsynqGoBroker, asynq_server: RedisServer) -> None:
    """The comparison can fail: the leak-free reference design is not Asynq (BZ-5 here)."""
    client = redis.Redis.from_url(db_url(asynq_server, "ours:v0.26.0"))
    ours = Broker(client, "reference", CONFORM_POLICY, go_broker.clock)

    def reset() -> None:
        client.flushdb()
        go_broker.reset()

    diff = Differential(ours, go_broker, go_broker.clock, reset)
    plain = TaskMessage(type="a", payload=b"x", id="t0", queue=Q)
    with pytest.raises(Divergence, match=r"keyspaces differ after enqueue_unique") as err:
        diff.check([Op("enqueue", (plain,)), Op("enqueue_unique", (plain, 30))])
    assert "asynq:{default}:unique:a:" in str(err.value)  # the lock only Asynq took
    client.close()


def test_lock_ttl_moves_to_the_virtual_clock(go_broker: AsynqGoBroker) -> None:
    """Asynq's SET NX EX ttl (real clock) becomes the virtual deadline now + ttl, which the
    sweep before each call enforces as the virtual clock passes it."""
    go_broker.enqueue_unique(TaskMessage(type="a", payload=b"x", id="t0", queue=Q), ttl=30)
    lock = keys.unique(Q, "a", b"x")
    entry = go_broker.snapshot(Q).get(lock)
    assert entry is not None and entry.expire_at_ms == go_broker.now_ms + 30_000
    assert go_broker.client.pexpiretime(lock) == encode_deadline(go_broker.now_ms + 30_000)
    go_broker.clock.advance(30)
    assert go_broker.expire_due(Q) == 1
    assert go_broker.client.exists(lock) == 0


def test_daily_counter_expiry_is_shifted_by_the_driver(go_broker: AsynqGoBroker) -> None:
    """EXPIREAT(now + 90 days) reaches Redis as the shifted virtual deadline."""
    go_broker.enqueue(TaskMessage(type="a", payload=b"x", id="t0", queue=Q))
    taken = go_broker.dequeue(Q)
    assert taken is not None
    go_broker.done(taken)
    daily = keys.processed_daily(Q, go_broker.clock.utc_date())
    entry = go_broker.snapshot(Q).get(daily)
    assert entry is not None and entry.expire_at_ms == (go_broker.now_s + 90 * DAY) * 1000
    go_broker.clock.advance(90 * DAY)
    assert go_broker.snapshot(Q).get(daily) is None


def test_observing_is_refused_and_snapshots_stay_fresh(go_broker: AsynqGoBroker) -> None:
    with pytest.raises(TypeError, match="cannot be observed"):
        Observer(go_broker, Q)
    go_broker.enqueue(TaskMessage(type="t", payload=b"x", id="t1", queue=Q))
    assert keys.task(Q, "t1") in go_broker.snapshot(Q).entries  # written by Asynq, read afresh


def test_reset_gives_a_fresh_queue_cache(go_broker: AsynqGoBroker) -> None:
    """After reset Asynq registers the queue again (its queuesPublished cache is per RDB)."""
    go_broker.enqueue(TaskMessage(type="a", payload=b"x", id="t0", queue=Q))
    go_broker.reset()
    go_broker.enqueue(TaskMessage(type="a", payload=b"x", id="t0", queue=Q))
    assert go_broker.queues() == {Q}


def test_bad_input_is_refused_before_the_driver(go_broker: AsynqGoBroker) -> None:
    with pytest.raises(ValueError, match="set_id must be a canonical random UUID"):
        go_broker.aggregation_check(Q, "g", "not-a-uuid")
    with pytest.raises(ValueError, match="unique ttl"):
        go_broker.enqueue_unique(TaskMessage(type="a", payload=b"x", id="t0", queue=Q), ttl=0)
    with pytest.raises(ValueError, match="state 'active' is not accepted by run_all_tasks"):
        go_broker.run_all_tasks(Q, "active")  # type: ignore[arg-type]
    assert go_broker.snapshot(Q).entries == {} and go_broker.queues() == frozenset()


def test_constructor_validates_before_starting_anything() -> None:
    with pytest.raises(ValueError, match="url must be a redis:// URL"):
        AsynqGoBroker("localhost:6379")
    with pytest.raises(ValueError, match=re.escape("version must look like 'v0.26.0'")):
        AsynqGoBroker("redis://127.0.0.1:1/0", version="latest")
    with pytest.raises(ValueError, match=r"policy\.max_archive_size=3, but Asynq v0\.26\.0 hard-codes"):
        AsynqGoBroker("redis://127.0.0.1:1/0", policy=Policy(max_archive_size=3,
                                                             archive_keeps_one_less=True))


def test_missing_go_says_how_to_enable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("broker.asynq_go.shutil.which", lambda name: None)
    with pytest.raises(DriverUnavailable,
                       match=re.escape(f"Go not found: {HOW_TO_ENABLE}")):
        build_driver("v0.26.0")


def test_every_operation_is_in_a_scenario() -> None:
    """The hand-written scenarios alone reach every operation (so coverage never depends on luck)."""
    covered = {op.name for ops in SCENARIOS.values() for op in ops}
    assert covered - set(EVENTS) == set(OPERATIONS)
    assert set(EVENTS) <= covered


def test_cli_conform_runs_and_prints_coverage(asynq_server: RedisServer,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """(``asynq_server``: skips where the Go backend cannot run; the command starts its own.)"""
    from keysim.cli import main

    driver_or_skip("v0.26.0")
    assert main(["conform", "--max-examples", "3", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert f"conformance coverage: {3 + len(SCENARIOS)} sequences" in out
    assert "remove_queue" in out and "NOT COVERED" not in out
