"""Simulator throughput on a Redis Cluster for 1, 2 and 3 shards, measured in one run.

``python -m benchmarks.cluster [--tasks 100000] [--rate 1000] [--masters 3]``

Starts a private cluster of ``--masters`` masters (``broker.cluster``), then, for 1, 2, …
shards, empties it and runs the simulator's benchmark workload (``benchmarks.simulator``:
reference variant, enqueue → dequeue → done, three script calls per task; ``--tasks``
arrivals per shard at ``--rate`` per virtual second) once per shard at the same time, one
process per shard on its own master (:mod:`simulations.cluster`), and prints the cluster's
script calls/s, the figure per shard, each shard's, and the CPU each script call cost (the
shards' simulators plus every master's ``INFO cpu``) with the calls/s the machine's cores
could serve at that cost; first it runs the same workload on one server (no cluster, the
engine's fast path, ``real=False`` like the shards) for comparison.

Each shard needs two busy processes (its simulator and its Redis master): the scaling is
bounded by the machine's cores, which are printed with the figures. Not part of the test
suite.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import redis

from benchmarks.simulator import BenchResult, bench_spec, run_bench, server_usage
from broker.cluster import LocalCluster, start_cluster
from broker.servers import ServerUnavailable, start_server
from simulations.cluster import ClusterRun, cores, report_lines, run_shards


@dataclass(frozen=True)
class Measured:
    """One run and the CPU it cost: the shards' simulators and every master (``INFO cpu``)."""

    run: ClusterRun
    server_cpu_s: float

    @property
    def cpu_us_per_call(self) -> float:
        """Client + server CPU µs per script call."""
        client = sum(s.cpu_s for s in self.run.shards)
        return 1e6 * (client + self.server_cpu_s) / self.run.script_calls

    def ceiling(self, cpus: int) -> float:
        """Script calls/s ``cpus`` cores could serve at this CPU cost per call."""
        return cpus * 1e6 / self.cpu_us_per_call


def measure(cluster: LocalCluster, tasks: int, rate: float) -> list[Measured]:
    """One run per shard count 1..masters of ``cluster``, emptied before each."""
    nodes = [redis.Redis.from_url(url) for url in cluster.urls]
    try:
        out = []
        for shards in range(1, len(cluster.nodes) + 1):
            for node in nodes:
                node.flushall()
            before = sum(server_usage(node).cpu_s for node in nodes)
            run = run_shards(cluster.url, bench_spec(tasks, rate), shards)
            out.append(Measured(run, sum(server_usage(node).cpu_s for node in nodes) - before))
            for node in nodes:
                node.flushall()
        return out
    finally:
        for node in nodes:
            node.close()


def single_server(tasks: int, rate: float) -> tuple[str, BenchResult] | None:
    """The same workload on one private server (the launcher's), without a cluster: its
    label and result; None when no server can start."""
    try:
        server = start_server()
    except ServerUnavailable as err:
        print(f"one server: skipped ({err})", file=sys.stderr)
        return None
    with server:
        client = redis.Redis.from_url(server.url)
        client.flushdb()
        try:
            return f"{server.kind} {server.version}", run_bench(client, False, tasks, rate)
        finally:
            client.flushdb()
            client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000, help="arrivals per shard")
    parser.add_argument("--rate", type=float, default=1000.0, help="tasks per virtual second")
    parser.add_argument("--masters", type=int, default=3, help="masters of the cluster (>= 1)")
    args = parser.parse_args(argv)
    try:
        bench_spec(args.tasks, args.rate)
    except ValueError as err:
        parser.error(str(err))
    if args.masters < 1:
        parser.error(f"--masters must be >= 1, got {args.masters}")
    try:
        cluster = start_cluster(args.masters)
    except ServerUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    cpus = cores()
    baseline = single_server(args.tasks, args.rate)
    with cluster:
        print(f"Redis Cluster of {args.masters} masters ({cluster.kind} {cluster.version}); "
              f"{args.tasks:,} tasks per shard at {args.rate:g}/s; {cpus} CPU core(s)")
        measured = measure(cluster, args.tasks, args.rate)
    for m in measured:
        print("\n".join(report_lines(m.run)))
        print(f"  CPU: {m.cpu_us_per_call:.1f} µs per script call (the shards' simulators + "
              f"every master, INFO cpu); {cpus} core(s) at that cost: "
              f"{m.ceiling(cpus):,.0f} calls/s")
    if baseline is not None:
        print(f"one server ({baseline[0]}), the same workload, not a cluster: "
              f"{baseline[1].scripts_per_s:,.0f} script calls/s")
    base = measured[0].run.calls_per_s
    print("scaling: " + ", ".join(f"{len(m.run.shards)} shard(s) {m.run.calls_per_s / base:.2f}×"
                                  for m in measured))
    bound = max(m.ceiling(cpus) for m in measured)
    costs = sorted(m.cpu_us_per_call for m in measured)
    print(f"bounded by cores: each shard keeps two processes busy (its simulator and its "
          f"master) and this machine has {cpus} core(s), so past {max(1, cpus // 2)} shard(s) "
          f"they share cores; at the CPU measured per call ({costs[0]:.0f}–{costs[-1]:.0f} µs) no "
          f"shard count can pass about "
          f"{bound:,.0f} calls/s here (other load on the machine lowers every figure)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
