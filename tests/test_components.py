"""Asynq's own server components in the loop (conformance/components): the shim's passes, two
differences from our composites it shows, and the differential test of our composites against
them (harness.components).

Needs Go and a real Redis >= 7.0; without Go the tests skip with the reason, unless
``KEYSIM_REQUIRE_ASYNQ=1`` (CI) makes that a failure. The differential runs
``KEYSIM_CONFORM_EXAMPLES`` generated sequences (default: 200 under ``KEYSIM_REQUIRE_ASYNQ=1``,
else 30) after its hand-written scenarios.
"""

from __future__ import annotations

import uuid

import pytest
from support import conform_examples, db_url, driver_or_skip

from broker.asynq_go import AsynqGoBroker, asynq_fixed
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


def test_recoverer_retries_and_archives_with_the_policys_delay(go_broker: AsynqGoBroker) -> None:
    held(go_broker, "r", retry=1)
    held(go_broker, "a", retry=0)
    go_broker.clock.advance(30 + 29)  # a second before lease end + Asynq's 30 s skew
    assert go_broker.recover(Q) == 0 and state(go_broker, "r") == "active"
    go_broker.clock.advance(1)
    assert go_broker.recover(Q) == 2
    assert (state(go_broker, "r"), state(go_broker, "a")) == ("retry", "archived")
    due = go_broker.client.zscore(keys.retry(Q), "r")
    assert due == go_broker.now_s + go_broker.policy.retry_delay_for("r", 0)
    assert stored(go_broker, "a").error_msg == LEASE_EXPIRED


def test_forwarder_janitor_and_reclaim_passes_count_what_was_due(go_broker: AsynqGoBroker) -> None:
    go_broker.schedule(msg("s"), go_broker.now_s + 5)
    assert go_broker.forward_if_ready(Q) == 0
    go_broker.clock.advance(5)
    assert go_broker.forward_if_ready(Q) == 1 and state(go_broker, "s") == "pending"
    assert go_broker.dequeue(Q) is not None
    go_broker.process(stored(go_broker, "s"), Ending.SUCCESS)
    assert state(go_broker, "s") is None  # retention 0: done deletes it
    done = held(go_broker, "c", retention=10)
    go_broker.process(done, Ending.SUCCESS)
    assert state(go_broker, "c") == "completed"
    go_broker.clock.advance(11)
    assert go_broker.delete_expired_completed_tasks(Q) == 1 and state(go_broker, "c") is None
    go_broker.add_to_group(msg("g1"), "g")
    go_broker.clock.advance(go_broker.policy.aggregation_grace + 1)
    assert go_broker.aggregation_check(Q, "g") is not None  # staged; its aggregator never returns
    go_broker.clock.advance(121)
    assert go_broker.reclaim_stale_aggregation_sets(Q) == 1
    assert go_broker.client.zcard(keys.group(Q, "g")) == 1


def test_aggregator_names_the_set_and_the_task_as_asked(go_broker: AsynqGoBroker) -> None:
    go_broker.add_to_group(msg("g1", payload=b"a"), "g")
    go_broker.add_to_group(msg("g2", payload=None), "g")
    set_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
    assert go_broker.aggregate(Q, {"g": set_id}, {"g": task_id}) == []  # grace period not over
    go_broker.clock.advance(go_broker.policy.aggregation_grace + 1)
    assert go_broker.aggregate(Q, {"g": set_id}, {"g": task_id}) == [("g", [b"a", b""])]
    made = stored(go_broker, task_id)
    assert (made.type, made.payload, made.retry, made.timeout) == ("aggregated", b"a|", 25, 1800)
    assert go_broker.client.lrange(keys.pending(Q), 0, -1) == [task_id.encode()]
    assert go_broker.client.exists(keys.group_set(Q, "g", set_id)) == 0


@pytest.mark.parametrize(("ending", "ends_as"), [
    (Ending.SUCCESS, None), (Ending.REVOKE, None), (Ending.FAILURE, "retry"),
    (Ending.UNCOUNTED_FAILURE, "retry"), (Ending.SKIP_RETRY, "archived"),
    (Ending.ABORTED, "pending")])
def test_processor_ends_a_task_as_its_handler_returned(go_broker: AsynqGoBroker, ending: Ending,
                                                       ends_as: str | None) -> None:
    task = held(go_broker, "p", retry=2)
    assert go_broker.process(task, ending, "it broke") == 0
    assert state(go_broker, "p") == ends_as
    if ends_as in ("retry", "archived"):
        after = stored(go_broker, "p")
        assert after.error_msg == "it broke"  # the handler's own text, sentinel or not
        assert after.retried == (0 if ending is not Ending.FAILURE else 1)


def test_processor_writes_nothing_once_its_lease_expired(go_broker: AsynqGoBroker) -> None:
    """Finding: Asynq's processor leaves a task whose lease expired to the recoverer."""
    task = held(go_broker, "p")
    go_broker.clock.advance(31)
    go_broker.process(task, Ending.SUCCESS)
    assert state(go_broker, "p") == "active" and go_broker.component_log == []
    go_broker.process(task, Ending.SUCCESS, lease=go_broker.now_s + 30)  # a heartbeat extended it: written
    assert state(go_broker, "p") is None, go_broker.component_log


def test_syncer_retries_a_lost_write_with_a_canceled_context(go_broker: AsynqGoBroker) -> None:
    """Finding: the syncer's retry of a lost write fails every time (the context it captured
    was canceled when the processor's call returned), until its deadline drops it."""
    task = held(go_broker, "p")
    assert go_broker.process(task, Ending.SUCCESS, fail_writes=1) == 1
    assert "Will retry syncing" in go_broker.component_log[0]
    first = go_broker.sync()
    assert (first["ran"], first["failed"], first["waiting"]) == (1, 1, 1)
    assert "context canceled" in first["errors"][0]
    assert state(go_broker, "p") == "active"
    go_broker.clock.advance(31)  # past the worker's lease: the request is dropped, never written
    assert go_broker.sync() == {"ran": 0, "failed": 0, "dropped": 1, "errors": None, "waiting": 0}
    assert state(go_broker, "p") == "active"


def test_before_v025_the_syncer_retry_goes_through(asynq_server: RedisServer) -> None:
    """The same lost write on v0.24.0, whose processor did not cancel the context yet (PR #926,
    v0.25.0, added the ``defer cancel()``): the syncer's retry writes it."""
    driver_or_skip("v0.24.0")
    policy = asynq_fixed(ASYNQ_POLICY, "v0.24.0")
    with AsynqGoBroker(db_url(asynq_server, "unit"), "v0.24.0", policy, VirtualClock()) as b:
        b.reset()
        task = held(b, "p")
        assert b.process(task, Ending.SUCCESS, fail_writes=1) == 1
        assert b.sync() == {"ran": 1, "failed": 0, "dropped": 0, "errors": None, "waiting": 0}
        assert state(b, "p") is None
        b.client.flushdb()


def test_python_composites_stay_available(asynq_server: RedisServer) -> None:
    """components=False: recover is our composite over single RDB calls, with the same result."""
    driver_or_skip("v0.26.0")
    with AsynqGoBroker(db_url(asynq_server, "unit"), "v0.26.0", ASYNQ_POLICY, VirtualClock(),
                       components=False) as b:
        b.reset()
        held(b, "r", retry=1)
        b.clock.advance(61)
        assert b.recover(Q) == 1 and state(b, "r") == "retry"
        assert b.component_log == []
        b.client.flushdb()


def differential(asynq_server: RedisServer, version: str, accept: frozenset[str]
                 ) -> ComponentDifferential:
    driver_or_skip(version)
    return compare_components(db_url(asynq_server, f"ours:{version}"),
                              db_url(asynq_server, f"asynq:{version}"), version, conform_examples(),
                              accept=accept)


@pytest.mark.parametrize("version", ["v0.26.0", "v0.24.0"])
def test_our_composites_match_asynqs_components(asynq_server: RedisServer, version: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Past the known differences, our composites and Asynq's components leave the same
    keyspaces and answer the same counts after every pass."""
    diff = differential(asynq_server, version, frozenset(KNOWN_DIFFERENCES))
    with capsys.disabled():
        print(f"\n[{version}] {diff.report()}")
    assert diff.sequences == conform_examples() + len(SCENARIOS)
    for name in ("recover", "forward_if_ready", "delete_expired_completed_tasks",
                 "reclaim_stale_aggregation_sets"):
        assert diff.coverage[(name, "ok")] > 0, name  # each pass had work at least once
    assert diff.coverage[("aggregate", "work")] > 0 and diff.coverage[("process", "ran")] > 0


def _known(asynq_server: RedisServer, version: str, example: list[Op], name: str, shows: str) -> None:
    """``example`` diverges as ``shows`` says unless difference ``name`` is accepted."""
    from broker import Broker
    from broker.asynq_go import client_for
    from harness.conform import CONFORM_POLICY, reset_both

    driver_or_skip(version)
    policy = asynq_fixed(CONFORM_POLICY, version)
    clock = VirtualClock()
    client = client_for(db_url(asynq_server, f"ours:{version}"))
    with AsynqGoBroker(db_url(asynq_server, f"asynq:{version}"), version, policy, clock) as go_broker:
        ours = Broker(client, AsynqGoBroker.variant_for(version), policy, clock)

        diff = ComponentDifferential(ours, go_broker, clock, lambda: reset_both(client, ours, go_broker))
        with pytest.raises(Divergence, match=shows):
            diff.check(example)
        diff.accept = frozenset({name})
        diff.check(example)
    client.close()


def _task(retry: int = 25) -> TaskMessage:
    return TaskMessage(type="a", payload=b"x", id="t0", queue="default", retry=retry)


def test_a_processor_after_its_lease_is_a_known_difference(asynq_server: RedisServer) -> None:
    """The minimal example of ``lease_skip``."""
    example = [Op("enqueue", (_task(),)), Op("dequeue"), Op("tick", (31,)),
               Op("process", (-1, Ending.SUCCESS))]
    _known(asynq_server, "v0.26.0", example, LEASE_SKIP, "ours : 'written'\n  asynq: 'skipped")


def test_v024_retries_an_exhausted_uncounted_failure(asynq_server: RedisServer) -> None:
    """The minimal example of ``uncounted_always_retried`` (v0.24.0 only)."""
    example = [Op("enqueue", (_task(retry=0),)), Op("dequeue"),
               Op("process", (-1, Ending.UNCOUNTED_FAILURE))]
    _known(asynq_server, "v0.24.0", example, UNCOUNTED_RETRIED, "asynq:{default}:archived")


def test_bad_component_input_is_refused_before_any_write(go_broker: AsynqGoBroker) -> None:
    task = held(go_broker, "p")
    before = go_broker.snapshot(Q)
    for bad in ({"ending": "nope"}, {"lease": "soon"}, {"fail_writes": -1}, {"error": 3}):
        with pytest.raises((ValueError, TypeError)):
            go_broker.process(task, **{"ending": Ending.SUCCESS, **bad})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        go_broker.aggregate(Q, {"g": "not-a-uuid"}, {})
    assert go_broker.snapshot(Q) == before
