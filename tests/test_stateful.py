"""The stateful machine on the reference variant: no leak, no disagreement, every pair reached.

The machine (harness/machine.py) checks, after every step, invariants I1–I14 on the broker's real
keyspace and exact agreement with the reference model, and ends every run with a drain that must
leave only :func:`harness.machine.drain_baseline`. Here the default check (rounds until coverage
is complete) must pass on fakeredis and on a real Redis, and — the coverage gate Hypothesis
lacks — every (transition, outcome) pair the table declares reachable must have run.
"""

from __future__ import annotations

import pytest

from broker.servers import RedisServer
from harness.check import (
    MIN_EXAMPLES,
    CheckResult,
    check_until_covered,
    coverage_table,
    default_check_config,
    missing_transitions,
    run_check,
)
from harness.machine import MachineConfig, drain_baseline
from model import keys
from model.reachability import required_pairs


@pytest.fixture(scope="module", params=["fakeredis", "real-redis"])
def reference_run(request: pytest.FixtureRequest) -> CheckResult:
    """The default check with a fixed seed until every reachable pair ran once: on fakeredis,
    then on a real Redis (the same seed, so both backends face the same programs). The budget
    is generous: the gate is about reaching the pairs, not about speed on a busy machine."""
    backend = "fakeredis"
    if request.param == "real-redis":
        server: RedisServer = request.getfixturevalue("real_server")
        backend = server.url
    return check_until_covered(default_check_config(backend=backend), seed=0, budget=600,
                               min_hits=1)


def test_reference_passes(reference_run: CheckResult) -> None:
    assert reference_run.verdict == "PASS", reference_run.summary()
    assert reference_run.examples >= MIN_EXAMPLES


def test_coverage_gate_every_transition_executed(reference_run: CheckResult) -> None:
    coverage = reference_run.coverage
    assert missing_transitions(coverage) == [], coverage_table(coverage)
    assert [p for p in required_pairs() if not coverage[p]] == [], coverage_table(coverage)


def test_coverage_gate_can_fail() -> None:
    # The gate is not vacuous: a run too short to reach the janitor misses transitions.
    short = run_check(MachineConfig(), max_examples=2, steps=3, seed=0)
    assert short.passed
    assert "delete_expired_completed" in missing_transitions(short.coverage)


def test_machine_finds_a_leak_and_shrinks_it() -> None:
    # The same machine fails on a leaking mutant, with a short program naming the invariant.
    run = run_check(MachineConfig(variant="reference+BZ-2"), max_examples=200, steps=40, seed=0)
    assert not run.passed
    assert run.failure is not None and run.failure.invariant == "I1"
    assert "zombie" in run.failure.message
    assert 1 <= run.shrunk_steps <= 10
    assert "state.archive_pressure(" in run.program


def test_drain_baseline_is_the_two_total_counters() -> None:
    assert drain_baseline("q") == {keys.processed_total("q"), keys.failed_total("q")}
