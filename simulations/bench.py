"""Simulator throughput on real Redis, next to redis-benchmark's pipelined EVALSHA ceiling.

``python -m simulations.bench [--tasks 1000000] [--rate 1000] [--backend redis|fakeredis]``

Runs a steady workload (reference variant, every task succeeds, retention 0: each lifecycle is
enqueue → dequeue → done, three script calls) of ``--tasks`` arrivals at ``--rate`` tasks per
virtual second, and prints: wall time, simulated task lifecycles/s, script calls/s, the peak RSS
of this process, and — on real Redis — ``redis-benchmark -P <pipeline> -c 1 EVALSHA`` of a
trivial script against the same server in the same run, with the ratio of our script calls/s
to that ceiling. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

import redis

from broker.bench import TRIVIAL_SCRIPT, connection_args, find_redis_benchmark, parse_rps
from broker.servers import ServerUnavailable, start_server
from simulations.engine import Engine, ListSink
from simulations.run import open_backend
from simulations.spec import WorkloadSpec, spec_from_dict


def bench_spec(tasks: int, rate: float) -> WorkloadSpec:
    """The benchmark workload: ``tasks`` arrivals at a constant ``rate`` per second."""
    if tasks < 1 or rate <= 0:
        raise ValueError(f"tasks must be >= 1 and rate > 0, got {tasks}, {rate}")
    seconds = max(1, int(tasks / rate))
    return spec_from_dict({
        "name": "bench", "duration": seconds, "sample_interval": max(1, seconds // 10), "seed": 1,
        "queues": [{"name": "default", "arrival": {"kind": "constant", "rate": rate},
                    "payload": {"kind": "fixed", "value": 128},
                    "duration": {"kind": "fixed", "value": 0.5}}],
        "servers": [{"name": "s", "workers": max(1, int(rate * 2)), "queues": ["default"]}],
    })


@dataclass
class BenchResult:
    """Figures of one benchmark run."""

    tasks: int
    wall_s: float
    script_calls: int
    peak_rss_mib: float

    @property
    def lifecycles_per_s(self) -> float:
        return self.tasks / self.wall_s

    @property
    def scripts_per_s(self) -> float:
        return self.script_calls / self.wall_s


def run_bench(client: redis.Redis, real: bool, tasks: int, rate: float) -> BenchResult:
    """Run the benchmark workload on ``client``."""
    engine = Engine(bench_spec(tasks, rate), client, real=real, sink=ListSink())
    start = time.perf_counter()
    counts = engine.run()
    wall = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return BenchResult(counts.get("processed", 0), wall, engine.batch.script_calls, rss)


def evalsha_ceiling(url: str, pipeline: int, requests: int = 2_000_000) -> float:
    """``redis-benchmark -c 1 -P <pipeline>`` EVALSHA of a trivial script: calls/s."""
    binary = find_redis_benchmark()
    if binary is None:
        raise FileNotFoundError("redis-benchmark not found next to redis-server nor on PATH")
    client = redis.Redis.from_url(url)
    try:
        sha = client.script_load(TRIVIAL_SCRIPT)
    finally:
        client.close()
    command = [str(binary), *connection_args(url), "-n", str(requests), "-c", "1",
               "-P", str(pipeline), "--csv", "EVALSHA", sha, "0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"redis-benchmark exited with {done.returncode}: {done.stderr.strip()}")
    return parse_rps(done.stdout)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m simulations.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="tasks per virtual second")
    parser.add_argument("--backend", choices=("redis", "fakeredis"), default="redis")
    parser.add_argument("--pipeline", type=int, default=100, help="redis-benchmark -P (default 100)")
    args = parser.parse_args(argv)
    try:
        bench_spec(args.tasks, args.rate)
    except ValueError as err:
        parser.error(str(err))
    if args.backend == "fakeredis":
        with open_backend("fakeredis") as (client, _, label):
            report(label, run_bench(client, False, args.tasks, args.rate))
        return 0
    try:
        server = start_server()
    except ServerUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    with server:
        client = redis.Redis.from_url(server.url)
        client.flushdb()
        try:
            result = run_bench(client, True, args.tasks, args.rate)
        finally:
            client.flushdb()
            client.close()
        report(f"{server.kind} {server.version}", result)
        try:
            ceiling = evalsha_ceiling(server.url, args.pipeline)
        except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired) as err:
            print(f"redis-benchmark: skipped ({err})")
            return 0
        print(f"redis-benchmark -c 1 -P {args.pipeline} EVALSHA '{TRIVIAL_SCRIPT}': {ceiling:,.0f} calls/s")
        print(f"simulator script calls/s ÷ ceiling = {result.scripts_per_s / ceiling:.3f}")
    return 0


def report(label: str, result: BenchResult) -> None:
    """Print one run's figures."""
    print(f"backend: {label}")
    print(f"{result.tasks:,} task lifecycles in {result.wall_s:.1f} s wall: "
          f"{result.lifecycles_per_s:,.0f} lifecycles/s, {result.scripts_per_s:,.0f} script calls/s "
          f"({result.script_calls:,} calls); peak simulator RSS {result.peak_rss_mib:.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
