"""A short ``keysim soak`` on a real server: three of Asynq v0.26.0's own server processes
(conformance/load, built by ``conformance/build.sh v0.26.0 load``) killed and restarted on the
seeded schedule while a client enqueues for 20 s, then the drain, the books and the audit.

Asynq recovers a killed server's tasks no sooner than 60 s after the kill (its 30 s lease and
the recoverer's 30 s cutoff are hard-coded), so the drain makes this test take ≈ 80–90 s.
Needs Go, else it skips, unless ``KEYSIM_REQUIRE_ASYNQ=1`` (CI), which makes that a failure.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace

import pytest
import redis
from support import private_server

from broker.asynq_go import DriverUnavailable, require_asynq
from broker.servers import RedisServer
from model import keys
from soak.run import QUEUE, SoakConfig, build_load, kill_schedule, render, run_soak

pytestmark = pytest.mark.real_redis

CONFIG = SoakConfig(duration_s=20.0, processes=3, rate=40.0, seed=0)


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    try:
        build_load()
    except DriverUnavailable as err:
        if require_asynq():
            pytest.fail(f"KEYSIM_REQUIRE_ASYNQ=1 but the Asynq load program is unavailable: {err}")
        pytest.skip(str(err))
    with private_server() as s:
        yield s


def test_a_short_soak_loses_nothing_and_attributes_every_finding(server: RedisServer) -> None:
    url = server.url.rsplit("/", 1)[0] + "/4"
    config = replace(CONFIG, redis_url=url)
    progress = io.StringIO()
    result = run_soak(config, out=progress)
    print("\n" + progress.getvalue() + render(result))
    assert result.verdict.passed, result.verdict.failures
    schedule = kill_schedule(config.seed, config.duration_s, config.processes)
    assert result.schedule == schedule and result.kills == len(schedule) >= 1
    # Conservation: every task the client logged ended one of the named ways, each way taken.
    ledger = result.ledger
    assert ledger.tasks >= 0.8 * config.rate * config.duration_s
    assert sum(ledger.outcomes.values()) == ledger.tasks
    assert ledger.lost == [] and ledger.stuck == [] and ledger.problems == []
    assert {"done", "aggregated", "completed", "archived", "deleted by Inspector.DeleteTask"} \
        <= set(ledger.outcomes)
    # The books agree with the keyspace itself, read without Asynq.
    r = redis.Redis.from_url(url)
    try:
        assert r.zcard(keys.completed(QUEUE)) == ledger.outcomes["completed"]
        assert r.zcard(keys.archived(QUEUE)) == ledger.outcomes["archived"] \
            + ledger.outcomes["archived by the recoverer"]
        assert [r.llen(keys.pending(QUEUE)), r.llen(keys.active(QUEUE)), r.zcard(keys.lease(QUEUE)),
                r.zcard(keys.scheduled(QUEUE)), r.zcard(keys.retry(QUEUE))] == [0] * 5
    finally:
        r.close()
    # Attribution: a killed server leaves at most its asynq:servers and asynq:workers members.
    assert all(a.defect is not None for a in result.attributions)
    stale = [a for a in result.attributions if a.defect == "BZ-23"]
    assert len(stale) <= 2 * result.kills
    assert {a.finding.key for a in stale} <= {keys.SERVERS, keys.WORKERS}
