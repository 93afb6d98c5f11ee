"""Does a PASS mean something? The default check's coverage time and its mutation score.

Prints, next to the goals of issue 15:

* the median wall time over ``--seeds`` seeds of the **default** ``keysim check`` (exactly the
  command a user types, plus ``--seed`` and ``--coverage``) on fakeredis and on a private
  Redis 7.0 (``--backend server``), and how many of those runs reached complete coverage
  (exit 0 and no ``MISSING`` pair in the coverage table); goal ≤ 30 s;
* the mutation score of that default check over ``keysim mutate --sample N --seed 0`` (goal
  ≥ 95 % of non-equivalent mutants) and its median time to kill (goal ≤ 30 s).

Both run the command line in a child process, so the figures follow whatever the default
check is at the time. Not a timed test: the machine is shared, so wall times are noisy; the
mutation run also prints CPU times.

>>> coverage_missing("transition outcomes\\nenqueue ok=3  conflict=MISSING\\ndone ok=MISSING")
2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Goals of issue 15.
COVERAGE_GOAL_S = 30.0
SCORE_GOAL = 0.95
KILL_GOAL_S = 30.0
#: Backends the coverage time is measured on: fakeredis and a private real Redis.
BACKENDS = ("fakeredis", "server")


@dataclass(frozen=True)
class CheckRun:
    """One default ``keysim check``: its exit code, wall time and uncovered pairs."""

    seed: int
    exit_code: int
    seconds: float
    missing: int

    @property
    def complete(self) -> bool:
        """Passed with every (transition, outcome) pair of the coverage table reached (a
        fixed-size run can pass with pairs missing; a coverage-driven one exits 0 only when
        complete, and non-zero, e.g. 3 INCOMPLETE, otherwise)."""
        return self.exit_code == 0 and self.missing == 0


def coverage_missing(output: str) -> int:
    """How many (transition, outcome) cells of ``--coverage``'s table say MISSING."""
    return sum(line.count("=MISSING") for line in output.splitlines())


def run_check(backend: str, seed: int) -> CheckRun:
    """``python -m keysim check --seed S --coverage`` (``--backend`` when not the default)."""
    command = [sys.executable, "-m", "keysim", "check", "--seed", str(seed), "--coverage"]
    if backend != "fakeredis":
        command += ["--backend", backend]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    return CheckRun(seed, done.returncode, seconds, coverage_missing(done.stdout))


def coverage_line(backend: str, runs: list[CheckRun]) -> str:
    """The median time and how many runs were complete, next to the goal."""
    median = statistics.median(r.seconds for r in runs)
    complete = sum(r.complete for r in runs)
    detail = ", ".join(f"seed {r.seed}: {r.seconds:.1f} s exit {r.exit_code} "
                       f"{r.missing} missing" for r in runs)
    verdict = "met" if complete == len(runs) and median <= COVERAGE_GOAL_S else "NOT met"
    return (f"default check on {backend}: median {median:.1f} s over {len(runs)} seeds, "
            f"{complete}/{len(runs)} with complete coverage (goal: complete in "
            f"<= {COVERAGE_GOAL_S:.0f} s — {verdict})\n    {detail}")


def mutation_lines(size: int, jobs: int) -> list[str]:
    """``keysim mutate --sample size --seed 0``: its score and median time to kill."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "mutate.json"
        command = [sys.executable, "-m", "keysim", "mutate", "--sample", str(size), "--seed", "0",
                   "-j", str(jobs), "--json", str(out)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if not out.exists():
            return [f"keysim mutate failed (exit {done.returncode}): {done.stderr.strip()[-300:]}"]
        data = json.loads(out.read_text())
    kills = [m for m in data["mutants"] if m["verdict"] == "killed" and not m["equivalent"]]
    score = data["score"]
    lines = [f"mutation score (keysim mutate --sample {size} --seed 0): {score:.1%} "
             f"(goal >= {SCORE_GOAL:.0%} — {'met' if score >= SCORE_GOAL else 'NOT met'})"]
    if kills:
        wall = statistics.median(m["seconds"] for m in kills)
        cpu = statistics.median(m["cpu_seconds"] for m in kills)
        lines.append(f"median time to kill: {wall:.1f} s wall, {cpu:.1f} s CPU over "
                     f"{len(kills)} kills (goal <= {KILL_GOAL_S:.0f} s — "
                     f"{'met' if wall <= KILL_GOAL_S else 'NOT met'})")
    survivors = [m["mutant"] for m in data["mutants"]
                 if m["verdict"] == "survived" and not m["equivalent"]]
    if survivors:
        lines.append(f"survivors: {', '.join(survivors)}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.proof",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, default=5, metavar="N",
                        help="seeds of the default check per backend (default: 5)")
    parser.add_argument("--backend", action="append", choices=BACKENDS, default=None,
                        help="measure only this backend (repeatable; default: both)")
    parser.add_argument("--sample", type=int, default=40, metavar="N",
                        help="mutants in the mutation sample (default: 40; 0 skips it)")
    parser.add_argument("-j", "--jobs", type=int, default=2, metavar="N",
                        help="mutants checked at once (default: 2)")
    args = parser.parse_args(argv)
    for backend in args.backend or BACKENDS:
        runs = [run_check(backend, seed) for seed in range(args.seeds)]
        print(coverage_line(backend, runs), flush=True)
    if args.sample > 0:
        for line in mutation_lines(args.sample, args.jobs):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
