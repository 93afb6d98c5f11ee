"""The stateful machine on the reference variant: no leak, no disagreement, every transition.

The machine (harness/machine.py) checks, after every step, invariants I1–I14 on the broker's real
keyspace and exact agreement with the reference model, and ends every run with a drain that must
leave only :func:`harness.machine.drain_baseline`. Here it must pass on fakeredis and on a real
Redis, and — the coverage gate Hypothesis lacks — every transition of the table must have been
executed successfully at least once.
"""

from __future__ import annotations

from collections import Counter

import pytest

from broker.servers import RedisServer
from harness.check import CheckResult, coverage_table, missing_transitions, run_check
from harness.machine import MachineConfig, drain_baseline
from model import keys

#: Seeds of the coverage runs: fixed, so the gate is reproducible. Many short runs reach more
#: of the table than one long run (each run's examples mutate its own early ones); more seeds
#: are tried only while a transition is still missing.
SEEDS = tuple(range(8))


@pytest.fixture(scope="module", params=["fakeredis", "real-redis"])
def reference_runs(request: pytest.FixtureRequest) -> list[CheckResult]:
    """Reference runs, one per seed until every transition has been executed: on fakeredis,
    then on a real Redis (the same seeds, so both backends face the same programs)."""
    backend = "fakeredis"
    if request.param == "real-redis":
        server: RedisServer = request.getfixturevalue("real_server")
        backend = server.url
    runs: list[CheckResult] = []
    for seed in SEEDS:
        runs.append(run_check(MachineConfig(backend=backend), max_examples=25, steps=80,
                              min_steps=60, seed=seed))
        if not missing_transitions(_union(runs)):
            break
    return runs


def _union(runs: list[CheckResult]) -> Counter[tuple[str, str]]:
    total: Counter[tuple[str, str]] = Counter()
    for run in runs:
        total.update(run.coverage)
    return total


def test_reference_passes(reference_runs: list[CheckResult]) -> None:
    for run in reference_runs:
        assert run.passed, run.summary()
        assert run.examples >= 25 and run.steps > 25 * 60


def test_coverage_gate_every_transition_executed(reference_runs: list[CheckResult]) -> None:
    coverage = _union(reference_runs)
    assert missing_transitions(coverage) == [], coverage_table(coverage)


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
