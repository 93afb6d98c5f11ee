"""The simulator on a Redis Cluster: one simulation per shard, in parallel processes, each
on its own master, giving exactly the run it gives alone on fakeredis.

Every test here runs on the run's private 3-master cluster (``real_cluster``).
"""

from __future__ import annotations

import json
from pathlib import Path

import fakeredis
import pytest
from redis.cluster import RedisCluster
from redis.crc import key_slot

from benchmarks.simulator import bench_spec
from broker.base import text
from broker.cluster import LocalCluster
from keysim.cli import main as keysim_main
from model import keys
from simulations.cluster import masters_of, on_master, run_shards, shard_spec, simulate_cluster
from simulations.engine import BackendUnsupported, Engine, ListSink
from simulations.spec import WorkloadSpec, spec_from_dict


def two_queue_spec() -> WorkloadSpec:
    """Two queues, retries and retention, so every kind of script runs."""
    return spec_from_dict({
        "name": "two", "duration": 120, "sample_interval": 30, "seed": 7,
        "queues": [{"name": "default", "arrival": {"kind": "poisson", "rate": 20},
                    "outcomes": {"success": 0.8, "failure": 0.2}, "max_retry": 1,
                    "retention": 60},
                   {"name": "low", "arrival": {"kind": "constant", "rate": 5}}],
        "servers": [{"name": "s", "workers": 10, "queues": {"default": 3, "low": 1}}],
    })


def test_each_shard_runs_on_its_master_as_it_runs_alone(real_cluster: LocalCluster,
                                                        cluster_client: RedisCluster) -> None:
    spec = two_queue_spec()
    run = run_shards(real_cluster.url, spec, 2)
    masters = masters_of(cluster_client)
    assert [s.master for s in run.shards] == masters[:2]
    registered = {text(q) for q in cluster_client.smembers(keys.ALL_QUEUES)}
    assert registered == {q for s in run.shards for q in s.queues}
    for shard in run.shards:
        for queue in shard.queues:  # every key of the queue on the shard's master
            names = list(cluster_client.scan_iter(match=keys.glob_escape(keys.queue_prefix(queue)) + "*"))
            assert names and all(
                cluster_client.nodes_manager.get_node_from_slot(key_slot(n)).name == shard.master
                for n in names)
        alone = Engine(shard_spec(spec, on_master(cluster_client, shard.master), shard.shard),
                       fakeredis.FakeRedis(), sink=ListSink())
        counts = alone.run()
        assert (shard.script_calls, shard.processed, shard.errors) == \
            (alone.batch.script_calls, counts["processed"], dict(alone.errors))
    assert run.script_calls > 0 and run.calls_per_s > 0


def test_shard_counts_beyond_the_masters_are_refused(real_cluster: LocalCluster) -> None:
    with pytest.raises(ValueError, match=r"shards must be in 1\.\.3"):
        run_shards(real_cluster.url, bench_spec(10, 10), 4)


def test_memory_figures_need_one_server(cluster_client: RedisCluster) -> None:
    with pytest.raises(BackendUnsupported, match="one server's"):
        Engine(bench_spec(10, 10), cluster_client, real=True)
    with pytest.raises(BackendUnsupported, match=r"redis\.maxmemory"):
        simulate_cluster("eviction-lru", [1])


def test_keysim_simulate_on_a_cluster_prints_throughput_per_shard_count(
        real_cluster: LocalCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = keysim_main(["simulate", "steady-default", "--backend", "cluster", "--shards", "1,2",
                        "--duration", "60", "--scale", "ci", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "1 shard(s): " in printed and "2 shard(s): " in printed and "script calls/s" in printed
    for count, shard in ((1, 0), (2, 0), (2, 1)):
        summary = json.loads((out / f"shards-{count}" / f"shard-{shard}" / "summary.json").read_text())
        assert summary["leaked_keys"] == 0
    assert not (out / "shards-1" / "shard-1").exists()
