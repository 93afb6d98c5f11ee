"""Overlay several runs (e.g. one workload on ``reference``, ``asynq-v0.26.0``, ``asynq-v0.24.0``).

``compare(runs, out)`` draws ``compare.png`` (total bytes and task hashes over time, one line
per run) and returns a text table of their summaries.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from simulations.output import _pyplot, bytes_column, read_samples, summarize


def label(run: Path) -> str:
    """``<spec> / <variant> / <backend>`` from a run's meta.json (the directory name otherwise)."""
    meta_path = run / "meta.json"
    if not meta_path.is_file():
        return run.name
    meta = json.loads(meta_path.read_text())
    return f"{meta.get('spec', run.name)} / {meta.get('variant', '?')} / {meta.get('backend', '?')}"


def compare(runs: list[Path], out: Path) -> str:
    """Write ``out`` (a PNG) overlaying ``runs``; return a summary table."""
    if len(runs) < 1:
        raise ValueError("compare needs at least one run directory")
    for run in runs:
        if not (run / "samples.csv").is_file():
            raise FileNotFoundError(f"{run} is not a run directory (no samples.csv)")
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 8), sharex=True)
    lines = [f"{'run':<52} {'final MiB':>10} {'peak MiB':>9} {'slope KiB/h':>12} "
             f"{'task hashes':>11} {'leaked':>7}"]
    styles = ("-", "--", ":", "-.")  # overlapping curves (identical variants) stay visible
    for i, run in enumerate(runs):
        style = styles[i % len(styles)]
        rows = list(read_samples(run))
        col = bytes_column(rows[0])
        hours = [r["hours"] for r in rows]
        name = label(run)
        top.plot(hours, [r[col] / 2**20 for r in rows], style, label=name)
        bottom.plot(hours, [r["keys_task"] for r in rows], style, label=name)
        s: dict[str, Any] = summarize(run)
        lines.append(f"{name:<52} {s['final_bytes'] / 2**20:>10.3f} {s['peak_bytes'] / 2**20:>9.3f} "
                     f"{s['steady_slope_bytes_per_hour'] / 1024:>12.1f} "
                     f"{rows[-1]['keys_task']:>11.0f} {s['leaked_keys']:>7.0f}")
    top.set_ylabel("MiB")
    top.set_title("total memory")
    bottom.set_ylabel("task hashes")
    bottom.set_xlabel("virtual time (hours)")
    bottom.set_title("task hashes (all states)")
    top.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return "\n".join(lines)
