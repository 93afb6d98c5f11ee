"""The machine's starting scenarios, and its bound on one operation's script calls.

Each scenario of ``harness.config.SCENARIOS`` builds, with ordinary steps, a state some bug
needs and no short random program reaches: the checks must hold right after it, and it must
build what its name says. A composite whose batch loop never ends must fail the check, not
hang it.
"""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from broker import Broker, calls
from harness.config import SCENARIOS, MachineConfig
from harness.leaks import Disagreement, LeakFound
from harness.machine import MAX_CALLS_PER_OPERATION, QUEUES, make_machine
from model import keys
from model.clock import VirtualClock
from model.policy import MAX_INT64, Policy
from model.states import TaskState

Q = QUEUES[0]


def _machine(config: MachineConfig | None = None) -> Any:
    return make_machine(config or MachineConfig(scenarios=True))()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_starts_from_a_sound_keyspace_the_model_predicts(scenario: str) -> None:
    machine = _machine()
    try:
        machine.begin(scenario)
        machine.keyspace_is_sound()  # invariants, then exact agreement with the model
        machine.drain()
    finally:
        machine.teardown()


def test_evicted_lease_is_recovered_exactly_at_its_cutoff() -> None:
    """The recoverer runs when the lease's score is exactly its cutoff (now - recover_skew):
    a lease at the cutoff is expired, and one whose hash was evicted leaves lease and active."""
    machine = _machine()
    try:
        machine.begin("evicted_lease")
        assert f"recover({Q!r})" in machine.steps
        snap = machine.read(Q)
        assert snap.get(keys.lease(Q)) is None and snap.get(keys.active(Q)) is None
        assert snap.task_hash("t0") is None
    finally:
        machine.teardown()


def test_evicted_due_leaves_a_due_scheduled_id_with_no_hash() -> None:
    machine = _machine()
    try:
        machine.begin("evicted_due")
        snap = machine.read(Q)
        scheduled = dict(snap.get(keys.scheduled(Q)).zset())
        assert scheduled["t0"] <= machine.clock.seconds and snap.task_hash("t0") is None
    finally:
        machine.teardown()


def test_counters_at_max_wrap_to_one_on_the_next_task_in_broker_and_model() -> None:
    machine = _machine()
    try:
        machine.begin("counters_at_max")
        total = keys.processed_total(Q)
        assert machine.read(Q).get(total).value == str(MAX_INT64)
        machine.dequeue(Q)
        machine.finish(0, "fail")  # counts as processed and failed
        machine.keyspace_is_sound()
        snap = machine.read(Q)
        assert snap.get(total).value == "1" and snap.get(keys.failed_total(Q)).value == "1"
    finally:
        machine.teardown()


class _EndlessForwarder(Broker):
    """A forwarder whose batch loop never ends (a batch that never shrinks its source)."""

    def forward_if_ready(self, queue: str) -> int:
        batch = calls.forward(queue, TaskState.SCHEDULED, self.clock.now_ns, self.policy)
        while True:  # the count each batch returns is ignored
            self.call(*batch)


def test_an_operation_that_never_ends_fails_the_check_instead_of_hanging() -> None:
    def broker(clock: VirtualClock, policy: Policy) -> Broker:
        return _EndlessForwarder(fakeredis.FakeRedis(), policy=policy, clock=clock)

    machine = _machine(MachineConfig(broker_factory=broker))
    try:
        with pytest.raises(LeakFound) as found:
            machine.both("forward_if_ready", Q)
        assert found.value.kind is Disagreement.RUNAWAY
        assert str(MAX_CALLS_PER_OPERATION) in found.value.detail
    finally:
        machine.teardown()
