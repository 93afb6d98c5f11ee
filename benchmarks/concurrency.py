"""The process machine and the interleaving explorer: how fast, how soon a race is found, how deep.

Three figures, each printed next to its goal:

* **steps/s ratio** — the process machine (``keysim check --processes 2``: two server
  processes whose components advance one atomic step at a time, model and broker in lockstep,
  invariants, keyspace comparison and the conservation ledger after every step, the drain at
  the end) against a no-op ``RuleBasedStateMachine`` with the same rules and strategies
  (:func:`benchmarks.machine.noop_machine`), same seeds, pooled (goal ≥ 20 %);
* **time to find each seeded race mutant** — ``keysim check --processes 2 --variant
  reference+RACE-n`` wall time to its FAIL verdict, shrinking included, median over seeds
  (goal ≤ 30 s), with the shrunk schedule's length (goal ≤ 12 steps);
* **explore bound** — the deepest depth ``keysim explore --processes 2 --tasks 2`` completes
  within 60 s, with its states and steps.

>>> from harness.processes import make_process_machine
>>> from harness.config import MachineConfig
>>> "worker" in noop_machine(make_process_machine(MachineConfig())).rules_named()
True
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Sequence

from benchmarks.machine import Rate, _pooled, noop_machine, time_machine
from harness.config import MachineConfig
from harness.processes import RACES, make_process_machine, process_check
from model.explore_procs import explore_processes

EXAMPLES = 30
STEPS = 30
REPEATS = 5
SEEDS = 5
EXPLORE_BUDGET = 60.0


def steps_ratio(*, examples: int = EXAMPLES, steps: int = STEPS, repeats: int = REPEATS,
                seed: int = 0) -> tuple[Rate, Rate, list[float]]:
    """The process machine's and the no-op machine's pooled rates, and each seed's ratio."""
    machine = make_process_machine(MachineConfig(policies=True))
    noop = noop_machine(machine)
    time_machine(machine, "warm-up", examples=2, steps=steps, seed=seed - 1)
    runs: dict[str, list[Rate]] = {"machine": [], "noop": []}
    for i in range(repeats):
        for label, which in (("noop", noop), ("machine", machine)):
            gc.collect()
            runs[label].append(time_machine(which, label, examples=examples, steps=steps,
                                            seed=seed + i))
    pairs = [m.per_second / n.per_second for m, n in zip(runs["machine"], runs["noop"],
                                                          strict=True)]
    return _pooled(runs["machine"]), _pooled(runs["noop"]), pairs


def race_times(race: str, seeds: int = SEEDS) -> list[tuple[float, int, str]]:
    """(seconds, shrunk steps, verdict) of ``keysim check --processes 2`` on the mutant, per
    seed 0 .. seeds - 1."""
    out = []
    for seed in range(seeds):
        start = time.perf_counter()
        result = process_check(f"reference+{race}", seed=seed, budget=60)
        out.append((time.perf_counter() - start, result.shrunk_steps, result.verdict))
    return out


def explore_bound(budget: float = EXPLORE_BUDGET, max_depth: int = 12) -> str:
    """The deepest depth completed within ``budget`` seconds, and what it covered."""
    report = explore_processes(2, 2, max_depth, budget=budget)
    within = [d for d, t in enumerate(report.level_seconds, 1) if t <= budget]
    depth = within[-1] if within else 0
    times = ", ".join(f"d{d} {t:.1f} s" for d, t in enumerate(report.level_seconds, 1))
    return (f"explore --processes 2 --tasks 2: depth {depth} within {budget:g} s (goal: state "
            f"it); per depth: {times}; to depth {report.depth_reached}: {report.states:,} "
            f"states, {report.steps:,} steps, {report.slept:,} skipped as commuting, "
            f"{len(report.violations)} violations")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.concurrency [--seeds N] [--repeats N] [--skip PART...]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.concurrency",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, default=SEEDS, metavar="N")
    parser.add_argument("--repeats", type=int, default=REPEATS, metavar="N")
    parser.add_argument("--skip", nargs="*", default=[], choices=["ratio", "races", "explore"])
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.repeats < 1:
        parser.error("--seeds and --repeats must be >= 1")
    if "ratio" not in args.skip:
        machine, noop, pairs = steps_ratio(repeats=args.repeats)
        ratio = machine.per_second / noop.per_second
        print(f"process machine: {machine.per_second:.0f} steps/s, no-op {noop.per_second:.0f} "
              f"steps/s: ratio {ratio:.1%} (per seed {min(pairs):.0%}–{max(pairs):.0%}; goal "
              f">= 20 %: {'met' if ratio >= 0.2 else 'MISSED'})", flush=True)
    if "races" not in args.skip:
        for race, mutant in RACES.items():
            runs = race_times(race, args.seeds)
            median = statistics.median(t for t, _, _ in runs)
            found = sum(v == "FAIL" for _, _, v in runs)
            lengths = sorted(n for _, n, v in runs if v == "FAIL")
            print(f"{race} ({mutant.name}): found {found}/{len(runs)}, median {median:.1f} s "
                  f"(each: {', '.join(f'{t:.1f}' for t, _, _ in runs)}), shrunk to "
                  f"{lengths[0] if lengths else '-'}–{lengths[-1] if lengths else '-'} steps; "
                  f"goal <= 30 s: {'met' if median <= 30 else 'MISSED'}", flush=True)
    if "explore" not in args.skip:
        print(explore_bound(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
