"""The broker on a local Redis Cluster: the launcher, the routing of every call, routing failures
raised (never taken for a script's outcome), and the stateful machine on ``--backend cluster``.

Every test here runs on the run's private 3-master cluster (the ``real_cluster`` fixture, or one
of its own for the command line), so each is marked ``real_redis``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import fakeredis
import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from support import VARIANTS, inspector_workload, message, server_workload

from broker import Broker, calls, cluster
from broker.cluster import ClusterUnsupported, LocalCluster, cluster_info, slot_ranges
from broker.cluster import main as cluster_main
from broker.cluster_wire import ClusterRoutingError, ClusterWire
from broker.servers import RedisServer, launch
from harness.check import default_check_config, run_check
from harness.observe import Observer
from keysim.cli import main as keysim_main
from model import keys
from model.errors import KeysimError
from model.states import TaskState


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def node_of(client: RedisCluster, key: str | bytes) -> str:
    """Name (host:port) of the primary that serves ``key``'s slot."""
    raw = key if isinstance(key, bytes) else key.encode()
    return str(client.nodes_manager.get_node_from_slot(key_slot(raw)).name)


def queues_on_distinct_nodes(client: RedisCluster, count: int) -> list[str]:
    """``count`` queue names whose keys live on ``count`` different nodes."""
    found: dict[str, str] = {}
    for i in range(1000):
        queue = f"q{i}"
        found.setdefault(node_of(client, keys.queue_prefix(queue)), queue)
        if len(found) == count:
            return list(found.values())
    raise AssertionError(f"no {count} queues on distinct nodes")


# --- the launcher --------------------------------------------------------------------------------
def test_every_node_is_a_ready_master_with_its_share_of_the_slots(real_cluster: LocalCluster) -> None:
    client = real_cluster.client()
    dirs = set()
    for url, (first, last) in zip(real_cluster.urls, slot_ranges(3), strict=True):
        node = redis.Redis.from_url(url)
        view = cluster_info(node)
        assert (view["cluster_state"], view["cluster_known_nodes"]) == ("ok", "3"), view
        assert node.config_get("cluster-enabled") == {"cluster-enabled": "yes"}
        assert node.config_get("bind") == {"bind": "127.0.0.1"}
        dirs.add(node.config_get("dir")["dir"])
        for slot in (first, last):
            assert client.nodes_manager.get_node_from_slot(slot).port == port_of(url)
        node.close()
    assert len(dirs) == 3, dirs  # each node in its own directory
    client.close()


def test_command_line_starts_a_cluster_and_stops_it_on_ctrl_c(real_cluster: LocalCluster) -> None:
    """(``real_cluster``: skips, saying why, where the run's server cannot form a cluster.)"""
    proc = subprocess.Popen([sys.executable, "-m", "broker.servers", "--cluster", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={k: v for k, v in os.environ.items() if k != "REDIS_URL"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        urls = line.split("  (")[0].split()
        assert len(urls) == 3 and all(u.startswith("redis://127.0.0.1:") for u in urls), line
        assert "Redis Cluster, 3 masters" in line and line.rstrip().endswith("; Ctrl-C to stop")
        client = RedisCluster.from_url(urls[-1])  # any node is a seed
        for queue in ("a", "b", "c", "d"):
            client.set(keys.paused(queue), queue)
        assert len({node_of(client, keys.paused(q)) for q in "abcd"}) > 1
        assert client.get(keys.paused("c")) == b"c"
        client.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for url in urls:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port_of(url)), timeout=1).close()


@pytest.mark.parametrize("args", [["0"], [], ["3", "4"], ["x"]])
def test_command_line_refuses_a_bad_count(args: list[str], capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    assert cluster_main(args) == 2
    assert "usage: python -m broker.servers --cluster N" in capsys.readouterr().err


def test_a_server_too_old_for_a_cluster_is_refused_and_stopped(
        monkeypatch: pytest.MonkeyPatch, real_cluster: LocalCluster) -> None:
    """(``real_cluster``: the run's server must start cluster nodes for this test to stop them;
    one older than 7.0 is refused before it starts, tested apart.)"""
    started: list[RedisServer] = []

    def recorded(*args: Any, **kwargs: Any) -> RedisServer:
        started.append(launch(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(cluster, "launch", recorded)
    monkeypatch.setattr(cluster, "CLUSTER_MIN_VERSION", (99, 0))
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    with pytest.raises(ClusterUnsupported, match=r"cannot form the cluster: need >= 99\.0 for "
                                                 r"CLUSTER ADDSLOTSRANGE"):
        cluster.start_cluster(2, env)
    assert started and all(node.pid is None for node in started)  # stopped, not left running


def test_a_server_older_than_7_is_refused_before_it_starts(tmp_path: Path) -> None:
    old = tmp_path / "redis-server"
    old.write_text('#!/bin/sh\necho "Redis server v=6.2.14 sha=00000000:0"\n')
    old.chmod(0o755)
    with pytest.raises(ClusterUnsupported, match=r"binary \(Redis 6\.2\.14\) cannot form the "
                                                 r"cluster: need >= 7\.0 for --cluster-port"):
        cluster.start_cluster(3, {"KEYSIM_SERVER": str(old)})


# --- the broker on the cluster -----------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_broker_on_a_cluster_writes_what_it_writes_on_one_server(
        cluster_client: RedisCluster, variant: str) -> None:
    """Three queues, one per node (``asynq:queues`` lives in a slot of its own)."""
    queues = queues_on_distinct_nodes(cluster_client, 3)
    for queue in queues:
        on_cluster = Broker(cluster_client, variant)
        alone = Broker(fakeredis.FakeRedis(), variant)
        for workload in (server_workload, inspector_workload):
            workload(on_cluster, queue)
            workload(alone, queue)
            on_cluster.expire_due(queue)
            alone.expire_due(queue)
            assert on_cluster.snapshot(queue) == alone.snapshot(queue)
        assert on_cluster.queues() == alone.queues()
        on_cluster.release_connection()


def test_the_machine_reads_the_keyspace_in_the_round_trip_of_each_call(
        cluster_client: RedisCluster) -> None:
    broker = Broker(cluster_client)
    observer = Observer(broker, "default")
    broker.enqueue(message("t1", "default"))  # asynq:queues and the queue: two nodes
    assert node_of(cluster_client, keys.ALL_QUEUES) != node_of(cluster_client, keys.pending("default"))
    observed = observer.snapshot("default")
    assert observer.served == 1
    assert observed == broker.snapshot("default") and observed.registered
    assert observed.members(keys.pending("default")) == ("t1",)
    broker.release_connection()


def test_a_call_whose_keys_span_slots_raises_and_sends_nothing(cluster_client: RedisCluster
                                                               ) -> None:
    broker = Broker(cluster_client)
    call = calls.enqueue("a", "t1", b"msg", 0)
    keys_ = [call.keys[0], keys.pending("b")]  # the task of queue a, the pending list of b
    with pytest.raises(ClusterRoutingError, match=r"CROSSSLOT EVALSHA: keys asynq:\{a\}:t:t1, "
                                                  r"asynq:\{b\}:pending span slots"):
        broker.call("enqueue", keys_, call.args, register="a")
    assert list(cluster_client.scan_iter()) == []  # not even the registration went out
    broker.enqueue(message("t1", "a"))  # the wire is usable after the refusal
    assert broker.snapshot("a").members(keys.pending("a")) == ("t1",)


def test_a_script_that_reaches_another_nodes_key_raises_not_a_script_error(
        cluster_client: RedisCluster) -> None:
    here, there = queues_on_distinct_nodes(cluster_client, 2)
    broker = Broker(cluster_client)
    broker.schedule(message("s1", here), broker.now_s)
    call = calls.forward(here, TaskState.SCHEDULED, broker.clock.now_ns, broker.policy)
    args = list(call.args)
    args[1] = keys.task_prefix(there)  # computes the task hash in the other queue's slot
    with pytest.raises(ClusterRoutingError, match=r"(?i)attempted to access a non local key") as raised:
        broker.call(call.script, call.keys, args)
    # Neither a refusal nor a script's failure, which the machine records as an outcome.
    assert not isinstance(raised.value, (KeysimError, redis.ResponseError))


def test_a_script_without_keys_is_refused_not_sent_anywhere(cluster_client: RedisCluster
                                                            ) -> None:
    wire = ClusterWire(cluster_client)
    with pytest.raises(ClusterRoutingError, match="EVALSHA without KEYS could run on any node"):
        wire.evalsha("0" * 40, 0, keys.queue_pattern("a"))
    assert len(wire) == 0 and wire.execute() == []


def test_a_moved_slot_is_raised(real_cluster: LocalCluster) -> None:
    client = real_cluster.client()  # its own slot map, made stale below
    slot = key_slot(keys.paused("a").encode())
    owner = client.nodes_manager.get_node_from_slot(slot)
    stranger = next(node for node in client.nodes_manager.nodes_cache.values()
                    if node.name != owner.name)
    client.nodes_manager.slots_cache[slot] = [stranger]
    wire = ClusterWire(client)
    wire.sismember(keys.ALL_QUEUES, "a")
    wire.queue_command(("GET", keys.paused("a")))
    with pytest.raises(ClusterRoutingError, match=rf"{stranger.name} answered MovedError: {slot} "):
        wire.execute()
    client.close()


# --- the stateful machine ------------------------------------------------------------------------
def test_keysim_check_on_a_cluster_finds_no_leak_in_reference(
        real_cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    code = keysim_main(["check", "--backend", "cluster", "--max-examples", "25", "--steps", "30",
                        "--seed", "0"])
    out = capsys.readouterr().out
    assert code in (0, 3) and "reference on cluster:" in out and "no leak" in out, out


def test_check_on_a_cluster_finds_the_asynq_defect_it_finds_on_one_server(
        real_cluster: LocalCluster) -> None:
    config = default_check_config("asynq-v0.26.0", "cluster")
    on_cluster = run_check(config, max_examples=30, seed=3)
    alone = run_check(replace(config, backend="fakeredis"), max_examples=30, seed=3)
    assert on_cluster.failure is not None and alone.failure is not None
    assert on_cluster.exit_code == 1
    assert (on_cluster.failure.invariant, on_cluster.failure.bug) == \
        (alone.failure.invariant, alone.failure.bug)
    assert on_cluster.program.replace("backend='cluster', ", "") == alone.program
