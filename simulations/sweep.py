"""Parameter sweeps and the memory rule of thumb derived from them.

:func:`sweep` runs one workload (a preset, a spec file or a raw spec dict) on fakeredis once for
every combination of the values of its :class:`Axis` objects and reduces each run to a few
figures (:class:`SweepPoint`): the steady-state memory (mean of the estimated bytes over the
second half of the samples), final and peak bytes, the slope over the second half, task hashes
by state and leaked keys. :func:`plot_heatmap` draws one metric over two axes (one panel per
value of a third).

:func:`bytes_per_task` measures, by simulation, what one more completed (or archived) task costs
in a server's memory (the estimator's ``MEMORY USAGE`` under that server family's memory model,
plus the keyspace's bucket pointer), and :func:`memory_estimate` turns those figures into the
answer to "how much memory for X tasks/s with retention R".

>>> axis = retention_axis(["0s", "5m"])
>>> axis.name, axis.path, axis.values
('retention', 'queues[0].retention', ('0s', '5m'))
>>> set_path({"queues": [{"name": "q"}]}, "queues[0].retention", "5m")
{'queues': [{'name': 'q', 'retention': '5m'}]}
>>> memory_estimate(10, 3600, completed_bytes=1000.0, archived_bytes=1200.0).completed_tasks
36000.0
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import fakeredis

from simulations import presets
from simulations.engine import Engine, ListSink
from simulations.estimator import LISTPACK_MAX_ENTRIES, Calibration, Estimator, load_model
from simulations.measure import TASK_STATES, keyspace_overhead
from simulations.output import slope_per_hour
from simulations.spec import WorkloadSpec, load_raw, merge, parse_duration, spec_from_dict

if TYPE_CHECKING:  # matplotlib is imported only when drawing
    from matplotlib.figure import Figure

#: Metrics a :class:`SweepPoint` offers to :meth:`SweepResult.grid` and :func:`plot_heatmap`.
METRICS = ("steady_bytes", "final_bytes", "peak_bytes", "slope_bytes_per_hour", "leaked_keys",
           "processed")
_STEP = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\[(?P<index>\d+)\])?$")


# --- axes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Axis:
    """One swept parameter: a label, its values, and where a value goes in the raw spec.

    ``path`` is a dotted path into the spec's TOML structure (``queues[0].retention``,
    ``policy.max_archive_size``); ``to_spec`` maps a value to what is written there (identity
    when None), so an axis can sweep a number that expands into a table (see
    :func:`failure_axis`).
    """

    name: str
    path: str
    values: tuple[Any, ...]
    to_spec: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("axis name must not be empty")
        if not self.values:
            raise ValueError(f"axis {self.name!r}: values must not be empty")
        if len(set(map(repr, self.values))) != len(self.values):
            raise ValueError(f"axis {self.name!r}: values must be distinct, got {self.values!r}")
        _parse_path(self.path)

    def raw(self, value: Any) -> Any:
        """The spec value written at :attr:`path` for ``value``."""
        return value if self.to_spec is None else self.to_spec(value)


def retention_axis(values: Sequence[int | str], queue: int = 0) -> Axis:
    """Retention of queue ``queue`` (seconds or durations like ``"5m"``)."""
    return Axis("retention", f"queues[{queue}].retention", tuple(values))


def archive_cap_axis(values: Sequence[int]) -> Axis:
    """``policy.max_archive_size``: how many archived tasks the index keeps."""
    return Axis("max_archive_size", "policy.max_archive_size", tuple(values))


def failure_axis(values: Sequence[float], queue: int = 0, outcome: str = "skip_retry") -> Axis:
    """Share of tasks of queue ``queue`` that end in ``outcome`` (the rest succeed).

    The default ``skip_retry`` archives a failing task at once (a permanent failure), so the
    archive fills at rate × share; ``failure`` would retry it first (up to ``max_retry`` times).

    >>> failure_axis([0.1]).raw(0.1)
    {'success': 0.9, 'skip_retry': 0.1}
    """
    for v in values:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"failure share must be within [0, 1], got {v!r}")

    def outcomes(share: float) -> dict[str, float]:
        return {"success": round(1.0 - share, 12), outcome: share}

    return Axis("failure", f"queues[{queue}].outcomes", tuple(values), outcomes)


def _parse_path(path: str) -> list[tuple[str, int | None]]:
    steps = []
    for part in path.split("."):
        m = _STEP.match(part)
        if m is None:
            raise ValueError(f"path {path!r}: {part!r} is not a field name or name[index]")
        steps.append((m["name"], None if m["index"] is None else int(m["index"])))
    return steps


def set_path(raw: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``raw`` with ``value`` written at ``path`` (missing tables are created;
    list indexes must exist)."""
    out: dict[str, Any] = copy.deepcopy(dict(raw))
    node: Any = out
    steps = _parse_path(path)
    for i, (name, index) in enumerate(steps):
        last = i == len(steps) - 1
        if index is None:
            if last:
                node[name] = value
            else:
                node = node.setdefault(name, {})
            continue
        items = node.get(name)
        if not isinstance(items, list) or index >= len(items):
            raise ValueError(f"path {path!r}: {name}[{index}] does not exist in the spec")
        if last:
            items[index] = value
        else:
            node = items[index]
    return out


# --- running ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepPoint:
    """One run of the sweep, reduced.

    ``steady_bytes`` is the mean estimated memory (sum of ``MEMORY USAGE``) over the second
    half of the samples; ``slope_bytes_per_hour`` its least-squares slope there (about 0 once
    the run reached its steady state).
    """

    params: Mapping[str, Any]
    steady_bytes: float
    final_bytes: float
    peak_bytes: float
    slope_bytes_per_hour: float
    final_tasks: Mapping[str, float]
    leaked_keys: float
    processed: float
    wall_s: float

    def metric(self, name: str) -> float:
        """The value of metric ``name`` (one of :data:`METRICS`)."""
        if name not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {name!r}")
        return float(getattr(self, name))


@dataclass
class SweepResult:
    """Every point of a sweep, in grid order (the last axis varies fastest)."""

    axes: tuple[Axis, ...]
    points: list[SweepPoint] = field(default_factory=list)

    def axis(self, name: str) -> Axis:
        """The axis called ``name``."""
        for axis in self.axes:
            if axis.name == name:
                return axis
        raise ValueError(f"no axis {name!r}; axes: {', '.join(a.name for a in self.axes)}")

    def point(self, **params: Any) -> SweepPoint:
        """The point whose parameters equal ``params`` (every axis must be given)."""
        if set(params) != {a.name for a in self.axes}:
            raise ValueError(f"give a value for every axis: {', '.join(a.name for a in self.axes)}")
        for p in self.points:
            if all(p.params[k] == v for k, v in params.items()):
                return p
        raise KeyError(params)

    def grid(self, rows: str, cols: str, metric: str = "steady_bytes",
             **fixed: Any) -> list[list[float]]:
        """``metric`` as a rows × cols matrix; every other axis is fixed by ``fixed``."""
        row_axis, col_axis = self.axis(rows), self.axis(cols)
        return [[self.point(**{rows: r, cols: c, **fixed}).metric(metric) for c in col_axis.values]
                for r in row_axis.values]

    def to_rows(self, metrics: Sequence[str] = ("steady_bytes", "slope_bytes_per_hour")
                ) -> list[tuple[Any, ...]]:
        """One tuple per point: the axis values, then ``metrics``."""
        return [(*(p.params[a.name] for a in self.axes), *(p.metric(m) for m in metrics))
                for p in self.points]


def base_raw(spec: str | Mapping[str, Any], scale: str = "ci") -> dict[str, Any]:
    """The raw spec dict of a preset name, a spec file or a dict, with ``[ci]`` merged in when
    ``scale="ci"`` (validated)."""
    raw = dict(spec) if isinstance(spec, Mapping) else load_raw(presets.resolve(spec))
    spec_from_dict(raw, scale)  # validates before anything runs
    if scale == "ci":
        raw = merge({k: v for k, v in raw.items() if k != "ci"}, raw.get("ci", {}))
    return {k: v for k, v in raw.items() if k != "ci"}


def sweep(spec: str | Mapping[str, Any], axes: Sequence[Axis], *, scale: str = "ci",
          overrides: Mapping[str, Any] | None = None, jobs: int = 1) -> SweepResult:
    """Run ``spec`` on fakeredis for every combination of the axes' values.

    ``overrides`` maps paths (as in :class:`Axis`) to values applied to every run, e.g.
    ``{"duration": "15m", "queues[0].arrival.rate": 1.0}``. Every grid point's spec is built and
    validated before the first run, so a bad value fails fast, naming its field. ``jobs > 1``
    runs points in that many processes.

    >>> r = sweep({"name": "tiny", "duration": 20, "sample_interval": 5,
    ...            "queues": [{"name": "q", "arrival": {"kind": "constant", "rate": 1}}]},
    ...           [retention_axis([0, 60])])
    >>> [p.params["retention"] for p in r.points], r.points[1].final_tasks["completed"] > 0
    ([0, 60], True)
    """
    axes = tuple(axes)
    if not axes:
        raise ValueError("axes must name at least one Axis")
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise ValueError(f"axes must have distinct names, got {names}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    raw = base_raw(spec, scale)
    for path, value in (overrides or {}).items():
        raw = set_path(raw, path, value)
    runs = []
    for combo in itertools.product(*(a.values for a in axes)):
        point_raw = raw
        for axis, value in zip(axes, combo, strict=True):
            point_raw = set_path(point_raw, axis.path, axis.raw(value))
        spec_from_dict(point_raw)  # validate every point first
        runs.append((dict(zip(names, combo, strict=True)), point_raw))
    if jobs == 1:
        points = [_run_point(params, r) for params, r in runs]
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            points = list(pool.map(_run_point, *zip(*runs, strict=True)))
    return SweepResult(axes, points)


def run_rows(spec: WorkloadSpec) -> list[dict[str, float]]:
    """Run ``spec`` on a fresh fakeredis and return its samples."""
    sink = ListSink()
    Engine(spec, fakeredis.FakeRedis(server=fakeredis.FakeServer()), sink=sink).run()
    return sink.rows


def _run_point(params: dict[str, Any], raw: dict[str, Any]) -> SweepPoint:
    start = time.perf_counter()
    rows = run_rows(spec_from_dict(raw))
    half = rows[len(rows) // 2:]
    final = rows[-1]
    return SweepPoint(
        params=params,
        steady_bytes=sum(r["bytes_est_total"] for r in half) / len(half),
        final_bytes=final["bytes_est_total"],
        peak_bytes=max(r["bytes_est_total"] for r in rows),
        slope_bytes_per_hour=slope_per_hour([(r["hours"], r["bytes_est_total"]) for r in half]),
        final_tasks={s: final.get(f"tasks_{s}", 0.0) for s in TASK_STATES},
        leaked_keys=final["leak_orphans"] + final["leak_outside"],
        processed=final.get("processed", 0.0),
        wall_s=time.perf_counter() - start,
    )


# --- plotting --------------------------------------------------------------------------------


def _label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def plot_heatmap(result: SweepResult, rows: str, cols: str, facet: str | None = None,
                 metric: str = "steady_bytes", title: str = "") -> Figure:
    """``metric`` over ``rows`` × ``cols`` as annotated heatmaps, one panel per value of
    ``facet`` (the axes not shown must then be just these three), on one colour scale.
    Byte metrics are shown in KiB."""
    from matplotlib.figure import Figure

    shown = {rows, cols} | ({facet} if facet else set())
    for name in shown:
        result.axis(name)  # raises for an unknown name
    if len(shown) != len(result.axes) or len(shown) != (3 if facet else 2):
        raise ValueError(f"rows, cols and facet must cover every axis: "
                         f"{', '.join(a.name for a in result.axes)}")
    facet_values = result.axis(facet).values if facet else (None,)
    scale = 1024.0 if "bytes" in metric else 1.0
    grids = [[[v / scale for v in row] for row in
              result.grid(rows, cols, metric, **({facet: f} if facet else {}))] for f in facet_values]
    flat = [v for g in grids for row in g for v in row]
    low, high = min(flat), max(flat)
    fig = Figure(figsize=(3.6 * len(grids) + 1.4, 3.6), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(grids), squeeze=False)[0]
    image = None
    for ax, f, grid in zip(axes, facet_values, grids, strict=True):
        image = ax.imshow(grid, cmap="viridis", vmin=low, vmax=high if high > low else low + 1,
                          aspect="auto", origin="lower")
        ax.set_xticks(range(len(grid[0])), [_label(v) for v in result.axis(cols).values])
        ax.set_yticks(range(len(grid)), [_label(v) for v in result.axis(rows).values])
        ax.set_xlabel(cols)
        if ax is axes[0]:
            ax.set_ylabel(rows)
        if facet:
            ax.set_title(f"{facet} = {_label(f)}", fontsize=10)
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                bright = high > low and (v - low) / (high - low) > 0.6
                ax.text(j, i, f"{v:,.0f}", ha="center", va="center", fontsize=8,
                        color="black" if bright else "white")
    unit = "KiB" if scale > 1 else ""
    assert image is not None
    fig.colorbar(image, ax=list(axes), label=f"{metric} {unit}".strip())
    fig.suptitle(title or f"{metric} by {rows} × {cols}", fontsize=11)
    return fig


# --- the rule of thumb -----------------------------------------------------------------------


def bytes_per_task(state: str = "completed", *, payload: int = 512, rate: float = 2.0,
                   seconds: int = 300, seed: int = 1, memory_model: str | None = None) -> float:
    """Bytes of server memory one more task in ``state`` (``completed`` or ``archived``)
    costs, measured by simulation on fakeredis with ``memory_model``'s estimate (a shipped
    model's name such as ``valkey-9.1``, or a model file; default ``redis-7.0``).

    A queue receives ``rate`` tasks/s with a fixed ``payload`` for ``seconds``; every task
    succeeds with a retention longer than the run (``completed``) or fails with SkipRetry under
    an archive cap larger than the run (``archived``), so that state's task count grows
    linearly. The answer is the least-squares slope of the memory against that count, over the
    samples where the state's index holds more than 128 ids (a skiplist, as in any large
    deployment): the task hash plus its index entry as the estimator counts them
    (``MEMORY USAGE``), plus the 8-byte bucket pointer of the keyspace's own table.
    """
    model = memory_model if memory_model is not None else Calibration.load().name
    return bytes_per_task_per_model(state, [model], payload=payload, rate=rate,
                                    seconds=seconds, seed=seed)[model]


def bytes_per_task_per_model(state: str, memory_models: Sequence[str], *, payload: int = 512,
                             rate: float = 2.0, seconds: int = 300,
                             seed: int = 1) -> dict[str, float]:
    """:func:`bytes_per_task` under each of ``memory_models`` (names or files), from one run:
    the keyspace is the same whichever server family counts it."""
    if state not in ("completed", "archived"):
        raise ValueError(f"state must be 'completed' or 'archived', got {state!r}")
    if isinstance(payload, bool) or not isinstance(payload, int) or payload < 0:
        raise ValueError(f"payload must be an int >= 0 bytes, got {payload!r}")
    if rate <= 0:
        raise ValueError(f"rate must be > 0 tasks/s, got {rate!r}")
    if rate * seconds < 4 * LISTPACK_MAX_ENTRIES:
        raise ValueError(f"rate × seconds must be >= {4 * LISTPACK_MAX_ENTRIES} tasks "
                         f"(to measure past the listpack threshold), got {rate * seconds:g}")
    estimators = {name: Estimator(load_model(name)) for name in memory_models}
    outcome = {"success": 1.0} if state == "completed" else {"skip_retry": 1.0}
    spec = spec_from_dict({
        "name": f"bytes-per-{state}-task", "duration": seconds,
        "sample_interval": max(1, seconds // 20), "seed": seed,
        "policy": {"max_archive_size": int(rate * seconds) * 2 + 1},
        "queues": [{"name": "default", "arrival": {"kind": "constant", "rate": rate},
                    "payload": payload, "duration": 0.1, "outcomes": outcome,
                    "retention": 2 * seconds if state == "completed" else 0}],
        "servers": [{"workers": 10}]})
    engine = Engine(spec, fakeredis.FakeRedis(server=fakeredis.FakeServer()), sink=ListSink())
    points: dict[str, list[tuple[float, float]]] = {name: [] for name in estimators}

    def measure(row: dict[str, float]) -> None:
        if row[f"tasks_{state}"] <= LISTPACK_MAX_ENTRIES:
            return
        entries = list(engine.broker.snapshot("default").entries.values())
        for name, estimator in estimators.items():
            estimator.retain({e.key for e in entries})
            size = sum(estimator.key_bytes(e) for e in entries) + keyspace_overhead(entries)
            points[name].append((row[f"tasks_{state}"], size))

    engine.progress = measure
    engine.run()
    # a plain least-squares slope of (count, bytes)
    return {name: slope_per_hour(p) for name, p in points.items()}


@dataclass(frozen=True)
class MemoryEstimate:
    """Task hashes and bytes a queue holds in steady state (see :func:`memory_estimate`)."""

    completed_tasks: float
    archived_tasks: float
    completed_bytes: float
    archived_bytes: float

    @property
    def total_bytes(self) -> float:
        """Completed plus archived bytes."""
        return self.completed_bytes + self.archived_bytes


def memory_estimate(rate: float, retention: int, *, completed_bytes: float,
                    archived_bytes: float, failure: float = 0.0, max_archive_size: int = 10_000,
                    archive_cutoff_days: int = 90, horizon: float | None = None) -> MemoryEstimate:
    """Memory held by ``rate`` tasks/s kept ``retention`` seconds after success, a share
    ``failure`` of which fail for good (archived, capped at ``max_archive_size``, trimmed after
    ``archive_cutoff_days``).

    Completed: rate·(1−failure)·min(retention, horizon) hashes; archived:
    min(cap, rate·failure·min(cutoff, horizon)). ``horizon`` is the time since the workload
    started (None = long enough for both to be full). In-flight, pending and retrying tasks
    and counters are left out: they are small unless the queue has a backlog.

    >>> e = memory_estimate(100, 86400, completed_bytes=1000.0, archived_bytes=1200.0,
    ...                     failure=0.01, max_archive_size=10_000)
    >>> e.completed_tasks, e.archived_tasks, round(e.total_bytes / 2**30, 2)
    (8553600.0, 10000.0, 7.98)
    """
    for name, value in (("rate", rate), ("retention", retention),
                        ("completed_bytes", completed_bytes), ("archived_bytes", archived_bytes)):
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0 \
                or math.isnan(value):
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if not 0.0 <= failure <= 1.0:
        raise ValueError(f"failure must be within [0, 1], got {failure!r}")
    if horizon is not None and horizon < 0:
        raise ValueError(f"horizon must be >= 0 seconds, got {horizon!r}")
    window = math.inf if horizon is None else horizon
    completed = rate * (1.0 - failure) * min(retention, window)
    archived = min(float(max_archive_size),
                   rate * failure * min(archive_cutoff_days * 86400, window))
    return MemoryEstimate(completed, archived, completed * completed_bytes,
                          archived * archived_bytes)


#: Axis names :func:`estimate_check` feeds to :func:`memory_estimate`.
ESTIMATE_AXES = ("retention", "max_archive_size", "failure")


def estimate_check(result: SweepResult, *, rate: float, horizon: float, completed_bytes: float,
                   archived_bytes: float, **fixed: Any) -> list[tuple[dict[str, Any], float, float]]:
    """For every point: (params, bytes :func:`memory_estimate` predicts after ``horizon``
    seconds, bytes the simulation ended with). Axes named ``retention`` (seconds or a duration
    string), ``max_archive_size`` and ``failure`` are passed to the estimate; ``fixed`` gives
    values for the ones the sweep did not vary."""
    unknown = [a.name for a in result.axes if a.name not in ESTIMATE_AXES]
    if unknown:
        raise ValueError(f"estimate_check understands axes {', '.join(ESTIMATE_AXES)}, "
                         f"not {', '.join(unknown)}")
    out = []
    for p in result.points:
        args = {**fixed, **p.params}
        retention = parse_duration(args.pop("retention", 0), "retention")
        estimate = memory_estimate(rate, retention, completed_bytes=completed_bytes,
                                   archived_bytes=archived_bytes, horizon=horizon, **args)
        out.append((dict(p.params), estimate.total_bytes, p.final_bytes))
    return out


def plot_estimate_check(rows: Sequence[tuple[Mapping[str, Any], float, float]],
                        title: str = "rule of thumb vs simulation") -> Figure:
    """Predicted against simulated bytes (KiB), one dot per sweep point, with the diagonal."""
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError("rows must not be empty")
    fig = Figure(figsize=(5.2, 4.6), dpi=100, layout="constrained")
    ax = fig.subplots()
    predicted = [r[1] / 1024 for r in rows]
    simulated = [r[2] / 1024 for r in rows]
    ax.scatter(predicted, simulated, s=22, color="#0072B2")
    top = max(*predicted, *simulated) * 1.05
    ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=0.8, label="y = x")
    ax.set_xlabel("memory_estimate (KiB)")
    ax.set_ylabel("simulated, end of run (KiB)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return fig
