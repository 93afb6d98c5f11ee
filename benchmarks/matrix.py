"""The leak matrix's cost: the driver's build time per Asynq release, cold and cached, and the
matrix's wall time per release.

``python -m benchmarks.matrix [--versions v0.22.1..v0.26.0] [--hunt [--seeds N]]
[--results docs/asynq-versions.json]``

For each release it builds the conformance driver twice with ``conformance/build.sh``:

* **cold**: its stamp moved aside and an empty ``GOCACHE`` (a fresh temporary directory), so
  Go compiles everything, the standard library included (the module cache is kept: the
  sources are downloaded once, which is not what is measured);
* **cached**: right after, the stamp hit (the script only hashes its sources).

The matrix's wall time per release (build included, as ``keysim matrix`` ran it) is read from
its saved results (``--results``), which say how they were measured (seeds, budget). With
``--hunt`` it is measured now instead: ``harness.matrix.drive_release`` with ``--seeds`` seeds
(default 1) and the full budget otherwise. Figures only; nothing is asserted.

>>> _release_figures([], "v0.26.0")
(None, None)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from broker.asynq_go import BUILD_SCRIPT, CONFORMANCE_DIR
from harness import matrix

DEFAULT_RESULTS = Path(__file__).resolve().parent.parent / "docs" / "asynq-versions.json"


def build_seconds(version: str, cold: bool) -> float:
    """Wall time of one ``build.sh VERSION`` (``cold``: stamp aside, empty GOCACHE)."""
    stamp = CONFORMANCE_DIR / "bin" / version / "keysimdriver.stamp"
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="keysim-gocache-") as cache:
        if cold:
            env["GOCACHE"] = cache
            if stamp.exists():
                stamp.unlink()  # the build writes it again (same hash)
        start = time.perf_counter()
        done = subprocess.run(["bash", str(BUILD_SCRIPT), version], capture_output=True,
                              text=True, env=env, check=False)
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"build.sh {version} failed (exit {done.returncode}): "
                           f"{done.stderr.strip()[-500:]}")
    return seconds


def _release_figures(runs: list[matrix.ReleaseRun], name: str
                     ) -> tuple[float | None, float | None]:
    """(build s, hunt s) that a saved matrix run recorded for ``name`` (None: not there)."""
    for run in runs:
        if run.name == name and run.driven:
            return run.build_seconds, run.hunt_seconds
    return None, None


def _figure(value: float | None, width: int, digits: int) -> str:
    """``value`` right-aligned in ``width``, or a dash for none."""
    return f"{value:{width}.{digits}f}" if value is not None else f"{'—':>{width}}"


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, measure, print one line per release."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.matrix", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", default="v0.22.1..v0.26.0", metavar="LIST",
                        help="releases, as keysim matrix takes them (default: v0.22.1..v0.26.0)")
    parser.add_argument("--hunt", action="store_true",
                        help="measure the matrix's hunt now instead of reading --results")
    parser.add_argument("--seeds", type=int, default=1, metavar="N",
                        help="with --hunt: seeds per release (default: 1)")
    parser.add_argument("--no-builds", action="store_true",
                        help="skip the builds (print the matrix's times alone)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, metavar="FILE.json",
                        help="a keysim matrix run's results (default: docs/asynq-versions.json)")
    args = parser.parse_args(argv)
    try:
        names = matrix.expand_versions(args.versions)
    except ValueError as err:
        parser.error(str(err))
    saved, meta = matrix.load(args.results) if args.results.exists() else ([], {})
    source = f"--hunt, {args.seeds} seed(s)" if args.hunt else \
        f"{args.results.name}: {meta.get('command', '?')} on {meta.get('date', '?')}"
    print(f"{'release':9} {'cold build s':>12} {'cached s':>9} {'hunt s':>8}  ({source})",
          flush=True)
    for name in names:
        cold = cached = None
        if not args.no_builds and name != matrix.DEFAULT_BRANCH:
            cold, cached = build_seconds(name, cold=True), build_seconds(name, cold=False)
        hunt: float | None
        if args.hunt:
            hunt = matrix.drive_release(
                name, matrix.Budget(seeds=args.seeds)).hunt_seconds
        else:
            hunt = _release_figures(saved, name)[1]
        print(f"{name:9} {_figure(cold, 12, 1)} {_figure(cached, 9, 2)} {_figure(hunt, 8, 1)}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
