"""The ``keysim simulate``, ``keysim plot`` and ``keysim compare`` subcommands.

``keysim/cli.py`` registers them through :func:`add_simulate`, :func:`add_plot` and
:func:`add_compare`; the heavy imports happen inside the handlers.

>>> import argparse
>>> p = argparse.ArgumentParser(); sub = p.add_subparsers()
>>> add_simulate(sub)
>>> p.parse_args(["simulate", "steady-default", "--duration", "2h"]).duration
7200
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

SubParsers = Any  # argparse._SubParsersAction[argparse.ArgumentParser]


def _duration(text: str) -> int:
    from simulations.spec import SpecError, parse_duration

    try:
        value = parse_duration(text, "--duration")
    except SpecError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--duration must be >= 1 s, got {text!r}")
    return value


def _variant(text: str) -> str:
    from broker.variants import all_names

    if text not in all_names():
        raise argparse.ArgumentTypeError(f"unknown variant {text!r}; expected one of: "
                                         f"{', '.join(all_names())}")
    return text


def _shard_counts(text: str) -> tuple[int, ...]:
    words = text.split(",")
    if not all(w.strip().isdigit() and int(w) >= 1 for w in words):
        raise argparse.ArgumentTypeError(f"--shards takes counts >= 1 separated by commas, "
                                         f"got {text!r}")
    return tuple(int(w) for w in words)


def _run_dir(text: str) -> Path:
    path = Path(text)
    if not (path / "samples.csv").is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not a run directory (no samples.csv)")
    return path


def add_simulate(subparsers: SubParsers) -> None:
    """Register ``simulate``."""
    from simulations import presets
    from simulations.estimator import model_names

    parser = subparsers.add_parser(
        "simulate", help="run a workload in virtual time and record memory curves",
        description="Simulate a preset or TOML spec against a broker variant in virtual time; "
                    "write samples.csv, summary.json and PNGs to --out. "
                    f"Presets: {', '.join(presets.names())}.")
    parser.add_argument("spec", metavar="PRESET|FILE", help="preset name or spec TOML file")
    parser.add_argument("--variant", type=_variant, default=None,
                        help="broker variant (default: the spec's)")
    parser.add_argument("--backend", choices=("fakeredis", "redis", "cluster"), default="fakeredis",
                        help="fakeredis (estimated bytes), a private real Redis (measured), or "
                             "a private Redis Cluster (one simulation per shard, in parallel; "
                             "prints script calls/s per shard count)")
    parser.add_argument("--shards", type=_shard_counts, default=(1, 2, 3), metavar="N[,N…]",
                        help="with --backend cluster: the shard counts to run, each on its own "
                             "masters at once (default: 1,2,3)")
    parser.add_argument("--duration", type=_duration, default=None, metavar="D",
                        help="virtual run length, e.g. 7d, 12h, 90m (default: the spec's)")
    parser.add_argument("--scale", choices=("full", "ci"), default="full",
                        help="ci applies the spec's [ci] reduced-scale overrides")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="run directory (default: runs/<spec>-<variant>-<backend>-<time>)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the spec's)")
    parser.add_argument("--memory-model", default=None, metavar="NAME|FILE",
                        help="the estimator's memory model: a server family's "
                             f"({', '.join(model_names())}) or a file written by python -m "
                             "simulations.calibrate (default: the real server's family's; "
                             "on fakeredis redis-7.0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_simulate)


def run_simulate(args: argparse.Namespace) -> int:
    """Handler of ``keysim simulate``."""
    import json

    from simulations.engine import BackendUnsupported
    from simulations.run import run_simulation
    from simulations.spec import SpecError

    if args.backend == "cluster":
        return _simulate_cluster(args)
    try:
        out = run_simulation(args.spec, variant=args.variant, backend=args.backend,
                             duration=args.duration, out=args.out, seed=args.seed,
                             scale=args.scale, progress=not args.no_progress,
                             memory_model=args.memory_model)
    except BackendUnsupported as err:
        print(f"skipped: {err}", file=sys.stderr)
        return 0
    except (SpecError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = json.loads((out / "summary.json").read_text())
    print(f"wrote {out}")
    print(f"  final {summary['final_bytes'] / 2**20:.3f} MiB ({summary['bytes_source']}), peak "
          f"{summary['peak_bytes'] / 2**20:.3f} MiB, steady slope "
          f"{summary['steady_slope_bytes_per_hour'] / 1024:.1f} KiB/h, leaked keys "
          f"{summary['leaked_keys']:.0f}, dangling ids {summary['dangling_ids']:.0f}")
    if "estimator_error" in summary:
        print(f"  estimate ({summary.get('memory_model', '?')}) vs MEMORY USAGE: "
              f"{summary['estimator_error']:+.2%} over the run")
    if "estimate_note" in summary:
        print(f"  note: {summary['estimate_note']}")
    return 0


def _simulate_cluster(args: argparse.Namespace) -> int:
    """``keysim simulate … --backend cluster``: the throughput per shard count."""
    from broker.servers import ServerUnavailable
    from simulations.cluster import cores, report_lines, simulate_cluster
    from simulations.engine import BackendUnsupported
    from simulations.spec import SpecError

    try:
        out, runs = simulate_cluster(args.spec, args.shards, variant=args.variant,
                                     duration=args.duration, out=args.out, seed=args.seed,
                                     scale=args.scale)
    except BackendUnsupported as err:
        print(f"skipped: {err}", file=sys.stderr)
        return 0
    except ServerUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (SpecError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} (one run directory per shard: samples, summary, estimated bytes)")
    for run in runs:
        print("\n".join(report_lines(run)))
    print(f"{cores()} CPU core(s): each shard keeps its simulator and its master busy")
    return 0


def add_plot(subparsers: SubParsers) -> None:
    """Register ``plot``."""
    parser = subparsers.add_parser("plot", help="(re)draw a run's PNGs and summary",
                                   description="Redraw memory.png and keys.png of a run directory.")
    parser.add_argument("run", type=_run_dir, metavar="RUN", help="run directory")
    parser.set_defaults(handler=run_plot)


def run_plot(args: argparse.Namespace) -> int:
    """Handler of ``keysim plot``."""
    from simulations.output import plot_run, summarize

    summarize(args.run)
    for path in plot_run(args.run):
        print(f"wrote {path}")
    return 0


def add_compare(subparsers: SubParsers) -> None:
    """Register ``compare``."""
    parser = subparsers.add_parser("compare", help="overlay several runs",
                                   description="Overlay runs' memory and task-hash curves in one "
                                               "PNG and print their summaries side by side.")
    parser.add_argument("runs", type=_run_dir, nargs="+", metavar="RUN", help="run directories")
    parser.add_argument("--out", type=Path, default=Path("compare.png"), metavar="PNG",
                        help="output image (default: compare.png)")
    parser.set_defaults(handler=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    """Handler of ``keysim compare``."""
    from simulations.compare import compare

    if not args.out.parent.is_dir():
        print(f"error: directory {str(args.out.parent)!r} does not exist", file=sys.stderr)
        return 2
    print(compare(args.runs, args.out))
    print(f"wrote {args.out}")
    return 0
