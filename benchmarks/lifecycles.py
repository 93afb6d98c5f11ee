"""Lifecycle throughput: enqueue → dequeue → done for a few seconds, on fakeredis and real Redis.

``python -m benchmarks.lifecycles [--seconds S] [--backend fakeredis|redis|both] [--variant NAME]``

For each backend it prints how many task lifecycles per second one synchronous client completes
(each lifecycle is three script calls, ``enqueue``, ``dequeue`` and ``done``, plus the client's
``SADD asynq:queues``). On real Redis it then runs ``redis-benchmark`` against the same server,
doing ``EVALSHA`` of a trivial script from one connection, and prints that rate and the ratio
of lifecycle scripts/s to raw EVALSHA/s: how much of the round-trip budget the scripts' own work
takes. Figures only; nothing is asserted. The benchmark queue is removed afterwards.

>>> result = run_lifecycles(__import__("fakeredis").FakeRedis(), seconds=0.05)
>>> result.lifecycles > 0 and result.scripts_per_s == 3 * result.per_s
True
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import fakeredis
import redis

from broker.core import Broker
from broker.servers import RedisServer, ServerUnavailable, start_server
from broker.variants import all_names
from model.message import TaskMessage

#: Scripts run per lifecycle: enqueue, dequeue, done.
SCRIPTS_PER_LIFECYCLE = 3
#: Lifecycles between two looks at the wall clock.
BATCH = 20
TRIVIAL_SCRIPT = "return 1"
#: redis-benchmark gets this many times the lifecycle script count, at least MIN_EVALSHA calls.
EVALSHA_FACTOR = 4
MIN_EVALSHA = 2_000
BENCHMARK_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class LifecycleResult:
    """``lifecycles`` completed in ``seconds`` of wall time."""

    lifecycles: int
    seconds: float

    @property
    def per_s(self) -> float:
        """Lifecycles per second."""
        return self.lifecycles / self.seconds if self.seconds > 0 else 0.0

    @property
    def scripts_per_s(self) -> float:
        """Lifecycle script calls per second."""
        return SCRIPTS_PER_LIFECYCLE * self.per_s


def run_lifecycles(client: redis.Redis, seconds: float,
                   variant: str = "reference") -> LifecycleResult:
    """Run enqueue → dequeue → done on a fresh queue for about ``seconds``; remove the queue."""
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    broker = Broker(client, variant)
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    try:
        while time.perf_counter() < deadline:
            for _ in range(BATCH):
                broker.enqueue(TaskMessage(type="bench", payload=None, id=f"t{done}", queue=queue))
                task = broker.dequeue(queue)
                assert task is not None, "a just-enqueued task must be dequeued"
                broker.done(task)
                done += 1
        elapsed = time.perf_counter() - start
    finally:
        # The reference removes every key of the queue (an Asynq variant would leave counters).
        Broker(client, "reference").remove_queue(queue, force=True)
    return LifecycleResult(done, elapsed)


def find_redis_benchmark() -> Path | None:
    """``redis-benchmark`` next to the ``redis-server`` on PATH, else on PATH itself."""
    server_binary = shutil.which("redis-server")
    if server_binary is not None:
        beside = Path(server_binary).resolve().parent / "redis-benchmark"
        if beside.is_file():
            return beside
    found = shutil.which("redis-benchmark")
    return Path(found) if found else None


def connection_args(url: str) -> list[str]:
    """redis-benchmark options reaching the server at ``url``.

    >>> connection_args("redis://127.0.0.1:6390/0")
    ['-h', '127.0.0.1', '-p', '6390']
    >>> connection_args("unix:///tmp/r.sock?db=15")
    ['-s', '/tmp/r.sock']
    """
    parts = urlsplit(url)
    args = ["-s", parts.path] if parts.scheme == "unix" else [
        "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379)]
    if parts.password:
        args += ["-a", parts.password] + (["--user", parts.username] if parts.username else [])
    return args


def parse_rps(csv_text: str) -> float:
    """The requests/s of the first result row of ``redis-benchmark --csv`` output.

    >>> parse_rps('"test","rps","avg_latency_ms"\\n"evalsha abc 0","29455.08","0.031"\\n')
    29455.08
    """
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    if not rows or "rps" not in rows[0]:
        raise ValueError(f"no rps column in redis-benchmark output: {csv_text[:200]!r}")
    return float(rows[0]["rps"])


def run_evalsha_benchmark(binary: Path, url: str, requests: int) -> float:
    """EVALSHA of a trivial script, ``requests`` times from one connection; return calls/s."""
    client = redis.Redis.from_url(url)
    try:
        sha = client.script_load(TRIVIAL_SCRIPT)
    finally:
        client.close()
    command = [str(binary), *connection_args(url), "-n", str(requests), "-c", "1", "--csv",
               "EVALSHA", sha, "0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=BENCHMARK_TIMEOUT_S,
                          check=False, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"redis-benchmark exited with {done.returncode}: {done.stderr.strip()}")
    return parse_rps(done.stdout)


def report(label: str, result: LifecycleResult) -> None:
    print(f"{label:<10} {result.per_s:10.1f} lifecycles/s  ({result.scripts_per_s:.1f} scripts/s; "
          f"{result.lifecycles} lifecycles in {result.seconds:.2f} s)")


def bench_fakeredis(seconds: float, variant: str) -> LifecycleResult:
    """The lifecycle loop on an in-process fakeredis; prints its figures."""
    result = run_lifecycles(fakeredis.FakeRedis(), seconds, variant)
    report("fakeredis", result)
    return result


def bench_redis(server: RedisServer, seconds: float, variant: str) -> LifecycleResult:
    """The lifecycle loop on ``server``, then redis-benchmark EVALSHA on it; prints the figures."""
    print(f"redis server: {server.kind} {server.version}")
    client = redis.Redis.from_url(server.url)
    try:
        result = run_lifecycles(client, seconds, variant)
    finally:
        client.close()
    report("redis", result)
    binary = find_redis_benchmark()
    if binary is None:
        print("redis-benchmark: skipped (not found next to redis-server nor on PATH)")
        return result
    requests = max(MIN_EVALSHA, int(EVALSHA_FACTOR * result.scripts_per_s * seconds))
    try:
        raw = run_evalsha_benchmark(binary, server.url, requests)
    except (RuntimeError, ValueError, OSError, subprocess.TimeoutExpired, redis.RedisError) as err:
        print(f"redis-benchmark: skipped ({err})")
        return result
    print(f"redis-benchmark EVALSHA '{TRIVIAL_SCRIPT}' (1 connection, {requests} calls): "
          f"{raw:.1f} calls/s")
    print(f"ratio lifecycle scripts/s : raw EVALSHA/s = {result.scripts_per_s / raw:.3f}")
    return result


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen backends; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lifecycles",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per backend (default 2)")
    parser.add_argument("--backend", choices=("fakeredis", "redis", "both"), default="both")
    parser.add_argument("--variant", default="reference", choices=all_names(), metavar="NAME",
                        help="broker variant (default reference)")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error(f"--seconds must be > 0, got {args.seconds}")
    if args.backend in ("fakeredis", "both"):
        bench_fakeredis(args.seconds, args.variant)
    if args.backend in ("redis", "both"):
        try:
            server = start_server()
        except ServerUnavailable as err:
            print(f"redis: skipped ({err})")
            return 0 if args.backend == "both" else 1
        with server:
            bench_redis(server, args.seconds, args.variant)
    return 0


if __name__ == "__main__":
    sys.exit(main())
