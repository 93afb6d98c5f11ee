"""A run directory: the spec used, samples as CSV, events, a summary and PNG plots.

Layout of ``<out>/``::

    spec.toml      the spec file as given (plus spec.json: the effective, validated spec)
    samples.csv    one row per sample (columns: t, hours, wall_s, counters, measurement columns)
    events.csv     operator actions (t, kind, detail)
    summary.json   peak, final, steady-state slope, leaks, counters, throughput
    memory.png     bytes over time, stacked by family (task hashes by state, indexes, ...)
    keys.png       task hashes by state over time, with cap / retention / action markers

The sink writes each sample as it comes (and flushes), so a run's memory does not grow with
its length; the summary is computed afterwards by streaming the CSV.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from simulations.measure import BYTE_GROUPS, TASK_STATES, slug
from simulations.spec import WorkloadSpec

SAMPLES = "samples.csv"
EVENTS = "events.csv"
SUMMARY = "summary.json"


class RunDir:
    """A run directory being written: implements the engine's sample sink."""

    def __init__(self, path: Path, spec: WorkloadSpec, source: str | None, meta: dict[str, Any]) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        if source is not None:
            (path / "spec.toml").write_text(source, encoding="utf-8")
        (path / "spec.json").write_text(json.dumps(spec_json(spec), indent=2) + "\n")
        (path / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        self._samples: TextIO = (path / SAMPLES).open("w", newline="", encoding="utf-8")
        self._events: TextIO = (path / EVENTS).open("w", newline="", encoding="utf-8")
        self._writer: csv.DictWriter[str] | None = None
        self._event_writer = csv.writer(self._events)
        self._event_writer.writerow(["t", "kind", "detail"])

    def sample(self, row: dict[str, float]) -> None:
        if self._writer is None:
            self._writer = csv.DictWriter(self._samples, fieldnames=list(row))
            self._writer.writeheader()
        self._writer.writerow(row)
        self._samples.flush()

    def event(self, t: int, kind: str, detail: str) -> None:
        self._event_writer.writerow([t, kind, detail])
        self._events.flush()

    def close(self) -> None:
        self._samples.close()
        self._events.close()


def spec_json(spec: WorkloadSpec) -> dict[str, Any]:
    """The effective spec as plain JSON data."""
    data: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(spec), default=str))
    return data


def read_samples(run: Path) -> Iterator[dict[str, float]]:
    """Stream a run's samples as dicts of floats."""
    with (run / SAMPLES).open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            yield {k: float(v) if v not in ("", None) else math.nan for k, v in row.items()}


def read_events(run: Path) -> list[tuple[float, str, str]]:
    """A run's operator events."""
    path = run / EVENTS
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return [(float(r["t"]), r["kind"], r["detail"]) for r in csv.DictReader(fh)]


def bytes_column(row: dict[str, float]) -> str:
    """``bytes_mem_total`` (measured) when the run has it, else ``bytes_est_total``."""
    return "bytes_mem_total" if "bytes_mem_total" in row else "bytes_est_total"


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (hours, value) points; 0 for fewer than two distinct times.

    >>> slope_per_hour([(0, 10), (1, 12), (2, 14)])
    2.0
    """
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def summarize(run: Path) -> dict[str, Any]:
    """Peak, final, steady-state slope (bytes/hour and keys/hour over the second half of the
    run), leaks and counters, from ``samples.csv``; also written to ``summary.json``."""
    rows = list(read_samples(run))  # O(samples), not O(tasks)
    if not rows:
        raise ValueError(f"{run / SAMPLES} has no samples")
    col = bytes_column(rows[0])
    half = rows[len(rows) // 2:]
    final = rows[-1]
    summary: dict[str, Any] = {
        "samples": len(rows),
        "hours": final["hours"],
        "bytes_source": "MEMORY USAGE" if col == "bytes_mem_total" else "estimator",
        "peak_bytes": max(r[col] for r in rows),
        "final_bytes": final[col],
        "peak_bytes_est": max(r["bytes_est_total"] for r in rows),
        "final_bytes_est": final["bytes_est_total"],
        "steady_slope_bytes_per_hour": slope_per_hour([(r["hours"], r[col]) for r in half]),
        "steady_slope_keys_per_hour": slope_per_hour([(r["hours"], r["keys_total"]) for r in half]),
        "peak_keys": max(r["keys_total"] for r in rows),
        "final_keys": final["keys_total"],
        "final_tasks": {s: final.get(f"tasks_{s}", 0.0) for s in TASK_STATES},
        "peak_tasks": {s: max(r.get(f"tasks_{s}", 0.0) for r in rows) for s in TASK_STATES},
        "leaked_keys": final["leak_orphans"] + final["leak_outside"],
        "dangling_ids": final["leak_dangling"],
        "leaked_bytes": final["leak_bytes"],
        "counters": {k: final[k] for k in ("enqueued", "duplicates", "dequeued", "processed",
                                           "retried", "archived", "crashed", "recovered",
                                           "errors", "oom_errors", "evicted_keys", "script_calls")
                     if k in final},
        "wall_s": final["wall_s"],
    }
    if "bytes_mem_total" in final:
        mem = sum(r["bytes_mem_total"] for r in rows)
        est = sum(r["bytes_est_total"] for r in rows)
        summary["estimator_error"] = (est - mem) / mem if mem else 0.0
        summary["estimator_worst_sample_error"] = max(
            (abs(r["bytes_est_total"] - r["bytes_mem_total"]) / r["bytes_mem_total"]
             for r in rows if r["bytes_mem_total"]), default=0.0)
        summary["final_used_memory_delta"] = final.get("used_memory_delta", math.nan)
    wall = final["wall_s"]
    summary["tasks_per_wall_s"] = final.get("processed", 0) / wall if wall else 0.0
    summary["script_calls_per_wall_s"] = final.get("script_calls", 0) / wall if wall else 0.0
    meta_path = run / "meta.json"
    if meta_path.is_file():
        summary.update({k: v for k, v in json.loads(meta_path.read_text()).items()
                        if k in ("spec", "variant", "backend", "server", "scale", "finding",
                                 "estimate_note", "memory_model")})
    (run / SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


# --- plots -----------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(run: Path) -> list[Path]:
    """Draw ``memory.png`` and ``keys.png`` for a run directory; return their paths."""
    rows = list(read_samples(run))
    if not rows:
        raise ValueError(f"{run / SAMPLES} has no samples")
    spec = json.loads((run / "spec.json").read_text()) if (run / "spec.json").is_file() else {}
    meta = json.loads((run / "meta.json").read_text()) if (run / "meta.json").is_file() else {}
    title = f"{spec.get('name', run.name)} — {meta.get('variant', spec.get('variant', ''))} " \
            f"on {meta.get('backend', '?')}"
    events = read_events(run)
    model = meta.get("memory_model", "redis-7.0")
    return [_plot_memory(run, rows, title, events, model), _plot_keys(run, rows, title, events, spec)]


def _mark_events(ax: Any, events: list[tuple[float, str, str]]) -> None:
    for i, (t, kind, _) in enumerate(events):
        ax.axvline(t / 3600, color="grey", linestyle=":", linewidth=0.8,
                   label="operator action" if i == 0 else None)
        if i < 12:
            ax.annotate(kind, (t / 3600, 0.98), xycoords=("data", "axes fraction"), rotation=90,
                        fontsize=6, va="top", ha="right", color="grey")


def _plot_memory(run: Path, rows: list[dict[str, float]], title: str,
                 events: list[tuple[float, str, str]], model: str) -> Path:
    plt = _pyplot()
    prefix = "bytes_mem_" if "bytes_mem_total" in rows[0] else "bytes_est_"
    hours = [r["hours"] for r in rows]
    groups = [g for g in BYTE_GROUPS if any(r.get(prefix + slug(g), 0) for r in rows)]
    fig, ax = plt.subplots(figsize=(9, 5))
    if groups:
        ax.stackplot(hours, *[[r[prefix + slug(g)] / 1024 for r in rows] for g in groups],
                     labels=groups, alpha=0.85)
    source = "MEMORY USAGE" if prefix == "bytes_mem_" else f"estimator, memory model {model}"
    if "used_memory_delta" in rows[0]:
        ax.plot(hours, [r["used_memory_delta"] / 1024 for r in rows], color="black", linewidth=1,
                label="INFO used_memory − baseline")
    _mark_events(ax, events)
    ax.set_xlabel("virtual time (hours)")
    ax.set_ylabel("KiB")
    ax.set_title(f"{title}\nmemory by family ({source})", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    path = run / "memory.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_keys(run: Path, rows: list[dict[str, float]], title: str,
               events: list[tuple[float, str, str]], spec: dict[str, Any]) -> Path:
    plt = _pyplot()
    hours = [r["hours"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 5))
    for state in TASK_STATES:
        values = [r.get(f"tasks_{state}", 0) for r in rows]
        if any(values):
            ax.plot(hours, values, label=f"{state} hashes")
    if any(r["leak_orphans"] for r in rows):
        ax.plot(hours, [r["leak_orphans"] for r in rows], "k--", label="orphan/zombie hashes")
    cap = spec.get("policy", {}).get("max_archive_size", 10_000)
    if any(r.get("tasks_archived", 0) for r in rows):
        ax.axhline(cap, color="red", linestyle="--", linewidth=0.8, label=f"archive cap {cap}")
    retentions = {q["retention"] for q in spec.get("queues", []) if q.get("retention")}
    for retention in sorted(retentions):
        ax.axvline(retention / 3600, color="green", linestyle="-.", linewidth=0.8,
                   label=f"retention {retention / 3600:g} h")
    cutoff_days = spec.get("policy", {}).get("archive_cutoff_days", 90)
    if hours[-1] >= cutoff_days * 24:
        ax.axvline(cutoff_days * 24, color="purple", linestyle="-.", linewidth=0.8,
                   label=f"archive cutoff {cutoff_days} d")
    _mark_events(ax, events)
    ax.set_xlabel("virtual time (hours)")
    ax.set_ylabel("task hashes")
    ax.set_title(f"{title}\ntask hashes by state", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    path = run / "keys.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
