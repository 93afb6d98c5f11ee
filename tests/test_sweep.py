"""simulations.sweep: axes, spec paths, the sweep itself, the per-task figure and the rule of thumb."""

from __future__ import annotations

from typing import Any

import pytest

from simulations.spec import SpecError
from simulations.sweep import (
    Axis,
    archive_cap_axis,
    bytes_per_task,
    bytes_per_task_per_model,
    estimate_check,
    failure_axis,
    memory_estimate,
    plot_heatmap,
    retention_axis,
    set_path,
    sweep,
)

TINY: dict[str, Any] = {"name": "tiny", "duration": 30, "sample_interval": 5, "seed": 1,
                        "queues": [{"name": "q", "arrival": {"kind": "constant", "rate": 2},
                                    "payload": 100, "duration": 0.1}]}


def test_set_path_writes_a_copy_and_creates_tables() -> None:
    raw = {"queues": [{"name": "q"}]}
    out = set_path(raw, "policy.max_archive_size", 5)
    assert out == {"queues": [{"name": "q"}], "policy": {"max_archive_size": 5}}
    nested = set_path(out, "queues[0].arrival.rate", 3.0)
    assert nested["queues"][0] == {"name": "q", "arrival": {"rate": 3.0}}
    assert raw == {"queues": [{"name": "q"}]}  # untouched


@pytest.mark.parametrize(("path", "message"), [
    ("queues[1].retention", "path 'queues[1].retention': queues[1] does not exist in the spec"),
    ("queues.0", "path 'queues.0': '0' is not a field name or name[index]"),
])
def test_set_path_rejects_bad_paths(path: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        set_path({"queues": [{"name": "q"}]}, path, 1)
    assert str(err.value) == message


def test_axis_builders() -> None:
    assert (retention_axis(["1m"], queue=1).path, archive_cap_axis([5]).path) == \
        ("queues[1].retention", "policy.max_archive_size")
    assert failure_axis([0.25], outcome="failure").raw(0.25) == {"success": 0.75, "failure": 0.25}
    with pytest.raises(ValueError, match=r"^failure share must be within \[0, 1\], got 1.5$"):
        failure_axis([1.5])
    with pytest.raises(ValueError, match=r"^axis 'x': values must not be empty$"):
        Axis("x", "duration", ())
    with pytest.raises(ValueError, match=r"^axis 'x': values must be distinct, got \(1, 1\)$"):
        Axis("x", "duration", (1, 1))


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"axes": []}, ValueError, "axes must name at least one Axis"),
    ({"axes": [retention_axis([0]), Axis("retention", "duration", (10,))]}, ValueError,
     "axes must have distinct names, got ['retention', 'retention']"),
    ({"axes": [retention_axis([0])], "jobs": 0}, ValueError, "jobs must be an int >= 1, got 0"),
    ({"axes": [retention_axis(["soon"])]}, SpecError, "queues[0].retention: expected a duration"),
    ({"axes": [archive_cap_axis([-1])]}, SpecError, "policy.max_archive_size: must be >= 0"),
])
def test_sweep_rejects_bad_input_before_running(kwargs: dict[str, Any], error: type[Exception],
                                                message: str) -> None:
    with pytest.raises(error) as err:
        sweep(TINY, **kwargs)
    assert str(err.value).startswith(message)


def test_sweep_runs_every_combination() -> None:
    result = sweep(TINY, [retention_axis([0, 600]), archive_cap_axis([10, 20])],
                   overrides={"queues[0].outcomes": {"success": 0.5, "skip_retry": 0.5}})
    assert [p.params for p in result.points] == [
        {"retention": 0, "max_archive_size": 10}, {"retention": 0, "max_archive_size": 20},
        {"retention": 600, "max_archive_size": 10}, {"retention": 600, "max_archive_size": 20}]
    kept = result.point(retention=600, max_archive_size=20)
    gone = result.point(retention=0, max_archive_size=20)
    assert gone.final_tasks["completed"] == 0 < kept.final_tasks["completed"]
    assert result.point(retention=0, max_archive_size=10).final_tasks["archived"] == 10  # capped
    assert kept.steady_bytes > gone.steady_bytes and kept.leaked_keys == 0
    grid = result.grid("retention", "max_archive_size", "final_bytes")
    assert grid[1][1] == kept.final_bytes and len(grid) == 2 and len(grid[0]) == 2
    assert result.to_rows(("processed",))[0] == (0, 10, result.points[0].processed)
    fig = plot_heatmap(result, "retention", "max_archive_size")
    assert len(fig.axes) == 2  # one panel and its colour bar
    with pytest.raises(ValueError, match=r"^rows, cols and facet must cover every axis"):
        plot_heatmap(result, "retention", "retention")
    with pytest.raises(ValueError, match=r"^no axis 'failure'"):
        result.grid("retention", "failure")


def test_memory_estimate() -> None:
    e = memory_estimate(2, 600, completed_bytes=1000.0, archived_bytes=500.0, failure=0.5,
                        max_archive_size=100, horizon=60)
    assert (e.completed_tasks, e.archived_tasks, e.total_bytes) == (60.0, 60.0, 90_000.0)
    full = memory_estimate(2, 600, completed_bytes=1000.0, archived_bytes=500.0, failure=0.5,
                           max_archive_size=100)
    assert (full.completed_tasks, full.archived_tasks) == (600.0, 100.0)
    with pytest.raises(ValueError, match=r"^failure must be within \[0, 1\], got 2$"):
        memory_estimate(1, 1, completed_bytes=1, archived_bytes=1, failure=2)
    with pytest.raises(ValueError, match=r"^rate must be a number >= 0, got -1$"):
        memory_estimate(-1, 1, completed_bytes=1, archived_bytes=1)


def test_estimate_check_needs_known_axes() -> None:
    result = sweep(TINY, [Axis("seed", "seed", (1,))])
    with pytest.raises(ValueError, match=r"^estimate_check understands axes retention, "
                                         r"max_archive_size, failure, not seed$"):
        estimate_check(result, rate=2, horizon=30, completed_bytes=1, archived_bytes=1)


def test_bytes_per_task_measures_hash_plus_index_entry() -> None:
    completed = bytes_per_task("completed", payload=512, rate=2.0, seconds=300)
    bigger = bytes_per_task("completed", payload=1024, rate=2.0, seconds=300)
    # The payload is stored once (in the encoded msg); allocator size classes round it up.
    assert 512 + 300 < completed < 512 + 800
    assert 512 <= bigger - completed <= 512 * 1.25
    with pytest.raises(ValueError, match=r"^state must be 'completed' or 'archived', got 'pending'$"):
        bytes_per_task("pending")
    with pytest.raises(ValueError, match=r"^rate × seconds must be >= 512 tasks"):
        bytes_per_task(rate=1.0, seconds=100)


def test_bytes_per_task_per_server_family_from_one_run() -> None:
    per_model = bytes_per_task_per_model("archived", ["redis-7.0", "valkey-9.1"], seconds=300)
    assert per_model["redis-7.0"] == bytes_per_task("archived", seconds=300)
    # Valkey embeds the key and short values in the object and shares hash entries: less.
    assert 512 < per_model["valkey-9.1"] < per_model["redis-7.0"]
