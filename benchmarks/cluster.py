"""Simulator throughput on a Redis Cluster for 1, 2 and 3 shards, measured in one run.

``python -m benchmarks.cluster [--tasks 100000] [--rate 1000] [--masters 3]``

Starts a private cluster of ``--masters`` masters (``broker.cluster``), then, for 1, 2, …
shards, empties it and runs the simulator's benchmark workload (``benchmarks.simulator``:
reference variant, enqueue → dequeue → done, three script calls per task; ``--tasks``
arrivals per shard at ``--rate`` per virtual second) once per shard at the same time, one
process per shard on its own master (:mod:`simulations.cluster`), and prints the cluster's
script calls/s, the figure per shard, and each shard's.

Each shard needs two busy processes (its simulator and its Redis master): the scaling is
bounded by the machine's cores, which are printed with the figures. Not part of the test
suite.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from benchmarks.simulator import bench_spec
from broker.cluster import start_cluster
from broker.servers import ServerUnavailable
from simulations.cluster import ClusterRun, cores, report_lines, run_shards


def measure(url: str, tasks: int, rate: float, masters: int,
            flush: Callable[[], object]) -> list[ClusterRun]:
    """One :class:`ClusterRun` per shard count 1..``masters``; ``flush`` empties the cluster
    before each."""
    runs = []
    for shards in range(1, masters + 1):
        flush()
        runs.append(run_shards(url, bench_spec(tasks, rate), shards))
    return runs


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
    with cluster:
        client = cluster.client()
        try:
            print(f"Redis Cluster of {args.masters} masters ({cluster.kind} {cluster.version}); "
                  f"{args.tasks:,} tasks per shard at {args.rate:g}/s; {cores()} CPU core(s)")
            runs = measure(cluster.url, args.tasks, args.rate, args.masters, client.flushdb)
        finally:
            client.flushdb()
            client.close()
    for run in runs:
        print("\n".join(report_lines(run)))
    base = runs[0].calls_per_s
    print("scaling: " + ", ".join(f"{len(r.shards)} shard(s) {r.calls_per_s / base:.2f}×"
                                  for r in runs))
    print(f"each shard keeps two processes busy (its simulator and its master) and this machine "
          f"has {cores()} core(s): past {max(1, cores() // 2)} shard(s) they share cores, so the "
          "total stops growing with the shards and the figure per shard falls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
