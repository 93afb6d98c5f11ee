"""Run a spec end to end: backend, engine, run directory, summary and plots.

``run_simulation("steady-default", scale="ci", duration=300, out=Path("runs/x"))`` returns the
run directory; ``keysim simulate`` is a thin wrapper around it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import fakeredis
import redis

from broker.servers import start_server
from simulations import presets
from simulations.engine import Engine
from simulations.estimator import Calibration, load_model
from simulations.measure import estimate_note, memory_model_for
from simulations.output import RunDir, plot_run, summarize
from simulations.spec import WorkloadSpec, load_raw, spec_from_dict

BACKENDS = ("fakeredis", "redis")


@contextmanager
def open_backend(backend: str) -> Iterator[tuple[redis.Redis, bool, str]]:
    """(client, is_real, label) for ``backend``; a real Redis is private (or REDIS_URL's db)
    and flushed before use."""
    if backend == "fakeredis":
        yield fakeredis.FakeRedis(), False, f"fakeredis {fakeredis.__version__}"
        return
    if backend != "redis":
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    with start_server() as server:
        client = redis.Redis.from_url(server.url)
        client.flushdb()
        try:
            yield client, True, f"{server.kind} {server.version}"
        finally:
            client.flushdb()
            client.close()


def load(name_or_path: str, scale: str = "full", *, variant: str | None = None,
         duration: int | None = None, seed: int | None = None) -> tuple[WorkloadSpec, str]:
    """The spec of a preset or file with CLI overrides applied, and the file's text."""
    path = presets.resolve(name_or_path)
    spec = spec_from_dict(load_raw(path), scale)
    changes: dict[str, Any] = {}
    if variant is not None:
        changes["variant"] = variant
    if duration is not None:
        if duration < 1:
            raise ValueError(f"duration must be >= 1 s, got {duration}")
        changes["duration"] = duration
        # at least ~10 samples on a shortened run, on a multiple of the step
        tenth = max(spec.step, duration // 10 // spec.step * spec.step)
        changes["sample_interval"] = min(spec.sample_interval, tenth)
    if seed is not None:
        changes["seed"] = seed
    if variant is not None:
        spec_from_dict({"name": "x", "queues": [{"name": "q"}], "variant": variant})  # validates
    return replace(spec, **changes), path.read_text(encoding="utf-8")


def default_out(spec: WorkloadSpec, backend: str) -> Path:
    """``runs/<preset>-<variant>-<backend>-<timestamp>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{spec.name}-{spec.variant}-{backend}-{stamp}"


def run_simulation(name_or_path: str, *, variant: str | None = None, backend: str = "fakeredis",
                   duration: int | None = None, out: Path | None = None, seed: int | None = None,
                   scale: str = "full", progress: bool = True, plots: bool = True,
                   memory_model: str | None = None) -> Path:
    """Simulate a preset or spec file; return the run directory (samples, summary, plots).

    ``memory_model`` (a shipped model's name or a model file) is the estimator's; by default
    the real server's family's, and on fakeredis Redis 7.0's."""
    spec, source = load(name_or_path, scale, variant=variant, duration=duration, seed=seed)
    model = load_model(memory_model) if memory_model is not None else None
    out = out if out is not None else default_out(spec, backend)
    with open_backend(backend) as (client, real, label):
        if real:
            model = memory_model_for(client, model)
        model = model if model is not None else Calibration.load()
        # validates backend support before writing
        engine = Engine(spec, client, real=real, memory_model=model)
        meta = {"spec": spec.name, "variant": spec.variant, "backend": backend, "server": label,
                "scale": scale, "finding": spec.finding, "memory_model": model.name}
        note = estimate_note(client, model.family) if real else None
        if note:
            meta["estimate_note"] = note
        sink = RunDir(out, spec, source, meta)
        engine.sink = sink
        try:
            if progress:
                _with_progress(engine, spec)
            else:
                engine.run()
        finally:
            sink.close()
    (out / "errors.json").write_text(json.dumps(dict(engine.errors), indent=2) + "\n")
    summarize(out)
    if plots:
        plot_run(out)
    return out


def _with_progress(engine: Engine, spec: WorkloadSpec) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("{task.fields[vt]}"), TextColumn("tasks {task.fields[tasks]}"),
               TextColumn("keys {task.fields[keys]}"), TextColumn("{task.fields[mib]} MiB"),
               TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(spec.name, total=spec.duration, vt="0h", tasks=0, keys=0, mib="0")

        def update(row: dict[str, float]) -> None:
            size = row.get("bytes_mem_total", row["bytes_est_total"])
            bar.update(task, completed=row["t"], vt=f"{row['hours']:.1f}h/{spec.duration / 3600:g}h",
                       tasks=int(row["processed"]), keys=int(row["keys_total"]),
                       mib=f"{size / 2**20:.2f}")

        engine.progress = update
        engine.run()
