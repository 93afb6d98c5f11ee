"""Asynq's own server components in the loop (conformance/components): the shim's passes, two
differences from our composites it shows, and the differential test of our composites against
them (harness.components).

Needs Go and a real Redis >= 7.0; without Go the tests skip with the reason, unless
``KEYSIM_REQUIRE_ASYNQ=1`` (CI) makes that a failure. The differential runs
``KEYSIM_CONFORM_EXAMPLES`` generated sequences (default: 200 under ``KEYSIM_REQUIRE_ASYNQ=1``,
else 30) after its hand-written scenarios.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from support import db_url, driver_or_skip, go_backend_or_skip, private_server

from broker.asynq_go import AsynqGoBroker, asynq_fixed, require_asynq
from broker.servers import RedisServer
from harness.components import (
    KNOWN_DIFFERENCES,
    LEASE_SKIP,
    SCENARIOS,
    UNCOUNTED_RETRIED,
    ComponentDifferential,
    compare_components,
)
from harness.conform import Divergence, Op
from model import keys
from model.clock import VirtualClock
from model.endings import LEASE_EXPIRED, Ending
from model.message import TaskMessage
from model.policy import ASYNQ_POLICY

Q = "q"


def examples() -> int:
    default = 200 if require_asynq() else 30
    return int(os.environ.get("KEYSIM_CONFORM_EXAMPLES", default))


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with private_server() as s:
        yield go_backend_or_skip(s)


@pytest.fixture
def go(server: RedisServer) -> Iterator[AsynqGoBroker]:
    driver_or_skip("v0.26.0")
    with AsynqGoBroker(db_url(server, "unit"), "v0.26.0", clock=VirtualClock()) as b:
        b.reset()
        yield b
        b.client.flushdb()


def msg(task_id: str, payload: bytes | None = b"x", **fields: int) -> TaskMessage:
    return TaskMessage(type="t", payload=payload, id=task_id, queue=Q, **fields)  # type: ignore[arg-type]


def held(b: AsynqGoBroker, task_id: str, retry: int = 25, retention: int = 0) -> TaskMessage:
    b.enqueue(msg(task_id, retry=retry, retention=retention))
    dequeued = b.dequeue(Q)
    assert dequeued is not None and dequeued.id == task_id
    return dequeued


def state(b: AsynqGoBroker, task_id: str) -> str | None:
    value = b.client.hget(keys.task(Q, task_id), "state")
    return value.decode() if isinstance(value, bytes) else None


def stored(b: AsynqGoBroker, task_id: str) -> TaskMessage:
    data = b.client.hget(keys.task(Q, task_id), "msg")
    assert isinstance(data, bytes), f"no hash for {task_id}"
    return b.decode(data)


def test_recoverer_retries_and_archives_with_the_policys_delay(go: AsynqGoBroker) -> None:
    held(go, "r", retry=1)
    held(go, "a", retry=0)
    go.clock.advance(30 + 29)  # a second before lease end + Asynq's 30 s skew
    assert go.recover(Q) == 0 and state(go, "r") == "active"
    go.clock.advance(1)
    assert go.recover(Q) == 2
    assert (state(go, "r"), state(go, "a")) == ("retry", "archived")
    due = go.client.zscore(keys.retry(Q), "r")
    assert due == go.now_s + go.policy.retry_delay_for("r", 0)
    assert stored(go, "a").error_msg == LEASE_EXPIRED


def test_forwarder_janitor_and_reclaim_passes_count_what_was_due(go: AsynqGoBroker) -> None:
    go.schedule(msg("s"), go.now_s + 5)
    assert go.forward_if_ready(Q) == 0
    go.clock.advance(5)
    assert go.forward_if_ready(Q) == 1 and state(go, "s") == "pending"
    assert go.dequeue(Q) is not None
    go.process(stored(go, "s"), Ending.SUCCESS)
    assert state(go, "s") is None  # retention 0: done deletes it
    done = held(go, "c", retention=10)
    go.process(done, Ending.SUCCESS)
    assert state(go, "c") == "completed"
    go.clock.advance(11)
    assert go.delete_expired_completed_tasks(Q) == 1 and state(go, "c") is None
    go.add_to_group(msg("g1"), "g")
    go.clock.advance(go.policy.aggregation_grace + 1)
    assert go.aggregation_check(Q, "g") is not None  # staged; its aggregator never returns
    go.clock.advance(121)
    assert go.reclaim_stale_aggregation_sets(Q) == 1
    assert go.client.zcard(keys.group(Q, "g")) == 1


def test_aggregator_names_the_set_and_the_task_as_asked(go: AsynqGoBroker) -> None:
    go.add_to_group(msg("g1", payload=b"a"), "g")
    go.add_to_group(msg("g2", payload=None), "g")
    set_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
    assert go.aggregate(Q, {"g": set_id}, {"g": task_id}) == []  # grace period not over
    go.clock.advance(go.policy.aggregation_grace + 1)
    assert go.aggregate(Q, {"g": set_id}, {"g": task_id}) == [("g", [b"a", b""])]
    made = stored(go, task_id)
    assert (made.type, made.payload, made.retry, made.timeout) == ("aggregated", b"a|", 25, 1800)
    assert go.client.lrange(keys.pending(Q), 0, -1) == [task_id.encode()]
    assert go.client.exists(keys.group_set(Q, "g", set_id)) == 0


@pytest.mark.parametrize(("ending", "ends_as"), [
    (Ending.SUCCESS, None), (Ending.REVOKE, None), (Ending.FAILURE, "retry"),
    (Ending.UNCOUNTED_FAILURE, "retry"), (Ending.SKIP_RETRY, "archived"),
    (Ending.ABORTED, "pending")])
def test_processor_ends_a_task_as_its_handler_returned(go: AsynqGoBroker, ending: Ending,
                                                       ends_as: str | None) -> None:
    task = held(go, "p", retry=2)
    assert go.process(task, ending, "it broke") == 0
    assert state(go, "p") == ends_as
    if ends_as in ("retry", "archived"):
        after = stored(go, "p")
        assert after.error_msg == "it broke"  # the handler's own text, sentinel or not
        assert after.retried == (0 if ending is not Ending.FAILURE else 1)


def test_processor_writes_nothing_once_its_lease_expired(go: AsynqGoBroker) -> None:
    """Finding: Asynq's processor leaves a task whose lease expired to the recoverer."""
    task = held(go, "p")
    go.clock.advance(31)
    go.process(task, Ending.SUCCESS)
    assert state(go, "p") == "active" and go.component_log == []
    go.process(task, Ending.SUCCESS, lease=go.now_s + 30)  # a heartbeat extended it: written
    assert state(go, "p") is None, go.component_log


def test_syncer_retries_a_lost_write_with_a_canceled_context(go: AsynqGoBroker) -> None:
    """Finding: the syncer's retry of a lost write fails every time (the context it captured
    was canceled when the processor's call returned), until its deadline drops it."""
    task = held(go, "p")
    assert go.process(task, Ending.SUCCESS, fail_writes=1) == 1
    assert "Will retry syncing" in go.component_log[0]
    first = go.sync()
    assert (first["ran"], first["failed"], first["waiting"]) == (1, 1, 1)
    assert "context canceled" in first["errors"][0]
    assert state(go, "p") == "active"
    go.clock.advance(31)  # past the worker's lease: the request is dropped, never written
    assert go.sync() == {"ran": 0, "failed": 0, "dropped": 1, "errors": None, "waiting": 0}
    assert state(go, "p") == "active"


def test_before_v025_the_syncer_retry_goes_through(server: RedisServer) -> None:
    """The same lost write on v0.24.0, whose processor did not cancel the context yet (PR #926,
    v0.25.0, added the ``defer cancel()``): the syncer's retry writes it."""
    driver_or_skip("v0.24.0")
    policy = asynq_fixed(ASYNQ_POLICY, "v0.24.0")
    with AsynqGoBroker(db_url(server, "unit"), "v0.24.0", policy, VirtualClock()) as b:
        b.reset()
        task = held(b, "p")
        assert b.process(task, Ending.SUCCESS, fail_writes=1) == 1
        assert b.sync() == {"ran": 1, "failed": 0, "dropped": 0, "errors": None, "waiting": 0}
        assert state(b, "p") is None
        b.client.flushdb()


def test_python_composites_stay_available(server: RedisServer) -> None:
    """components=False: recover is our composite over single RDB calls, with the same result."""
    driver_or_skip("v0.26.0")
    with AsynqGoBroker(db_url(server, "unit"), "v0.26.0", ASYNQ_POLICY, VirtualClock(),
                       components=False) as b:
        b.reset()
        held(b, "r", retry=1)
        b.clock.advance(61)
        assert b.recover(Q) == 1 and state(b, "r") == "retry"
        assert b.component_log == []
        b.client.flushdb()


def differential(server: RedisServer, version: str, accept: frozenset[str]
                 ) -> ComponentDifferential:
    driver_or_skip(version)
    return compare_components(db_url(server, f"ours:{version}"), db_url(server, f"asynq:{version}"),
                              version, examples(), accept=accept)


@pytest.mark.parametrize("version", ["v0.26.0", "v0.24.0"])
def test_our_composites_match_asynqs_components(server: RedisServer, version: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Past the known differences, our composites and Asynq's components leave the same
    keyspaces and answer the same counts after every pass."""
    diff = differential(server, version, frozenset(KNOWN_DIFFERENCES))
    with capsys.disabled():
        print(f"\n[{version}] {diff.report()}")
    assert diff.sequences == examples() + len(SCENARIOS)
    for name in ("recover", "forward_if_ready", "delete_expired_completed_tasks",
                 "reclaim_stale_aggregation_sets"):
        assert diff.coverage[(name, "ok")] > 0, name  # each pass had work at least once
    assert diff.coverage[("aggregate", "work")] > 0 and diff.coverage[("process", "ran")] > 0


def _known(server: RedisServer, version: str, example: list[Op], name: str, shows: str) -> None:
    """``example`` diverges as ``shows`` says unless difference ``name`` is accepted."""
    from broker import Broker
    from broker.asynq_go import client_for
    from harness.conform import CONFORM_POLICY, reset_both

    driver_or_skip(version)
    policy = asynq_fixed(CONFORM_POLICY, version)
    clock = VirtualClock()
    client = client_for(db_url(server, f"ours:{version}"))
    with AsynqGoBroker(db_url(server, f"asynq:{version}"), version, policy, clock) as go:
        ours = Broker(client, AsynqGoBroker.variant_for(version), policy, clock)

        diff = ComponentDifferential(ours, go, clock, lambda: reset_both(client, ours, go))
        with pytest.raises(Divergence, match=shows):
            diff.check(example)
        diff.accept = frozenset({name})
        diff.check(example)
    client.close()


def _task(retry: int = 25) -> TaskMessage:
    return TaskMessage(type="a", payload=b"x", id="t0", queue="default", retry=retry)


def test_a_processor_after_its_lease_is_a_known_difference(server: RedisServer) -> None:
    """The minimal example of ``lease_skip``."""
    example = [Op("enqueue", (_task(),)), Op("dequeue"), Op("tick", (31,)),
               Op("process", (-1, Ending.SUCCESS))]
    _known(server, "v0.26.0", example, LEASE_SKIP, "ours : 'written'\n  asynq: 'skipped")


def test_v024_retries_an_exhausted_uncounted_failure(server: RedisServer) -> None:
    """The minimal example of ``uncounted_always_retried`` (v0.24.0 only)."""
    example = [Op("enqueue", (_task(retry=0),)), Op("dequeue"),
               Op("process", (-1, Ending.UNCOUNTED_FAILURE))]
    _known(server, "v0.24.0", example, UNCOUNTED_RETRIED, "asynq:{default}:archived")


def test_bad_component_input_is_refused_before_any_write(go: AsynqGoBroker) -> None:
    task = held(go, "p")
    before = go.snapshot(Q)
    for bad in ({"ending": "nope"}, {"lease": "soon"}, {"fail_writes": -1}, {"error": 3}):
        with pytest.raises((ValueError, TypeError)):
            go.process(task, **{"ending": Ending.SUCCESS, **bad})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        go.aggregate(Q, {"g": "not-a-uuid"}, {})
    assert go.snapshot(Q) == before
