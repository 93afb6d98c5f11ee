"""Simulations on a real Redis at reduced scale: the estimator's bound and the eviction presets.

Skipped without a real Redis (failed instead under ``KEYSIM_REQUIRE_REDIS=1``, see conftest).
"""

from __future__ import annotations

import pytest
import redis

from simulations import presets
from simulations.engine import Engine, ListSink
from simulations.run import load

ESTIMATED = [p for p in presets.names() if not p.startswith("eviction")]


@pytest.fixture
def client(real_client: redis.Redis) -> redis.Redis:
    return real_client


def _run(client: redis.Redis, preset: str,
         duration: int | None = None) -> tuple[Engine, list[dict[str, float]]]:
    spec = load(preset, "ci", duration=duration)[0]
    sink = ListSink()
    engine = Engine(spec, client, real=True, sink=sink)
    engine.run()
    return engine, sink.rows


@pytest.mark.parametrize("preset", ESTIMATED)
def test_estimator_within_5_percent_of_memory_usage(client: redis.Redis, preset: str) -> None:
    _, rows = _run(client, preset)
    errors = [abs(r["bytes_est_total"] - r["bytes_mem_total"]) / r["bytes_mem_total"]
              for r in rows if r["bytes_mem_total"]]
    assert len(errors) >= len(rows) - 1  # only the very first sample may be empty
    assert max(errors) <= 0.05, max(errors)
    total = sum(r["bytes_mem_total"] for r in rows)
    assert abs(sum(r["bytes_est_total"] for r in rows) - total) / total <= 0.02
    # INFO used_memory also moves with client buffers, so it is recorded, not bounded.
    assert "used_memory_delta" in rows[-1] and rows[-1]["bytes_mem_total"] > 0


def test_allkeys_lru_loses_keys_silently(client: redis.Redis) -> None:
    _, rows = _run(client, "eviction-lru")
    last = rows[-1]
    assert last["evicted_keys"] > 0 and last["oom_errors"] == 0
    assert max(r["leak_orphans"] + r["leak_dangling"] for r in rows) > 0
    assert client.config_get("maxmemory")["maxmemory"] == "0"  # restored after the run


def test_noeviction_refuses_writes_and_keeps_the_keyspace_consistent(client: redis.Redis) -> None:
    engine, rows = _run(client, "eviction-noeviction")
    last = rows[-1]
    assert last["oom_errors"] > 0 and last["evicted_keys"] == 0
    assert engine.errors["OOMError"] == last["oom_errors"]
    assert all(r["leak_orphans"] + r["leak_dangling"] + r["leak_outside"] == 0 for r in rows)
