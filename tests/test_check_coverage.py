"""The coverage stopping rule of ``keysim check``: PASS only when every reachable
(transition, outcome) pair ran ``--min-hits`` times; INCOMPLETE (exit 3) when the budget ran out
first; excluded pairs (with their reasons) are never demanded; bad flags are refused."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from broker.variants import Quirk
from harness.check import (
    CheckResult,
    check_until_covered,
    coverage_table,
    default_check,
    default_check_config,
    goal_for,
    replay_program,
    run_check,
)
from harness.machine import MachineConfig, make_machine
from keysim import cli
from model.reachability import QUIRK_EXCLUSIONS, declared_pairs, exclusions, required_pairs


def test_complete_coverage_passes_with_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["check", "--seed", "0", "--min-hits", "1", "--budget", "300s"])
    out = capsys.readouterr().out
    required = len(required_pairs())
    assert (code, out.split()[0]) == (0, "PASS"), out
    assert f"coverage {required}/{required} pairs reached >= 1 times" in out


def test_a_budget_that_runs_out_is_incomplete_with_exit_3(
        capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["check", "--seed", "0", "--budget", "1s"])
    out = capsys.readouterr().out
    assert (code, out.split()[0]) == (3, "INCOMPLETE"), out
    assert "PASS" not in out and "not a pass" in out
    assert "never reached" in out.split("\n", 1)[1]
    # Every pair short of the goal is named, never reached or reached too rarely. (Checked on one
    # run's own result: how far a second 1-second run gets depends on the machine's load.)
    result = check_until_covered(default_check_config(), seed=0, budget=1)
    listed = result.summary().split("\n", 1)[1]
    missing = result.goal.missing(result.coverage)  # type: ignore[union-attr]
    assert missing
    for transition, outcome in missing:
        assert f"{transition} {outcome}" in listed


def test_the_round_stops_as_soon_as_the_budget_is_spent() -> None:
    result = check_until_covered(default_check_config(), seed=1, budget=0.5)
    assert result.verdict == "INCOMPLETE"
    assert result.seconds < 5  # one example past the budget at most, not a whole round


def test_an_excluded_pair_is_not_demanded() -> None:
    goal = goal_for(MachineConfig(variant="asynq-v0.26.0"), min_hits=2)
    pair = ("delete_expired_archived", "ok")
    assert pair in declared_pairs() and pair not in goal.required
    assert "archive cutoff" in goal.excluded[pair]
    everything_else = Counter(dict.fromkeys(goal.required, 2))
    result = CheckResult(MachineConfig(variant="asynq-v0.26.0"), True, 200, 5000, 1.0,
                         coverage=everything_else, goal=goal)
    assert (result.verdict, result.exit_code) == ("PASS", 0)
    assert "excluded: delete_expired_archived ok: the janitor" in coverage_table(
        result.coverage, goal)
    # The reference design demands the same pair.
    reference = CheckResult(MachineConfig(), True, 200, 5000, 1.0, coverage=everything_else,
                            goal=goal_for(MachineConfig(), min_hits=2))
    assert reference.verdict == "INCOMPLETE"
    assert "never reached (4): delete_expired_archived ok, write_result not_found, " \
        "pause queue_not_found, unpause queue_not_found" in reference.summary()


def test_exclusions_name_real_quirks_and_declared_pairs() -> None:
    assert set(QUIRK_EXCLUSIONS) <= {q.value for q in Quirk}
    every = exclusions(QUIRK_EXCLUSIONS)
    assert every and set(every) <= set(declared_pairs())
    assert all(reason.strip() for reason in every.values())


def test_too_few_examples_is_incomplete_even_with_every_pair() -> None:
    goal = goal_for(MachineConfig(), min_hits=1, min_examples=100)
    coverage = Counter(dict.fromkeys(goal.required, 1))
    result = CheckResult(MachineConfig(), True, 99, 5000, 1.0, coverage=coverage, goal=goal)
    assert result.verdict == "INCOMPLETE"
    assert "examples: 99 of the 100 required" in result.summary()


def test_a_fixed_size_run_too_short_for_coverage_is_not_a_pass() -> None:
    result = run_check(MachineConfig(), max_examples=2, steps=3, seed=0)
    assert result.passed  # no leak found ...
    assert (result.verdict, result.exit_code) == ("INCOMPLETE", 3)  # ... but not a pass


@pytest.mark.parametrize("argv, message", [
    (["check", "--budget", "0s"], "argument --budget: must be a finite duration > 0"),
    (["check", "--budget", "soon"], "argument --budget: expected a duration such as 60s"),
    (["check", "--budget", "-5"], "argument --budget: must be a finite duration > 0"),
    (["check", "--min-hits", "0"], "argument --min-hits: must be >= 1, got 0"),
    (["check", "--min-hits", "many"], "argument --min-hits: expected an integer"),
])
def test_bad_flag_values_are_rejected(argv: list[str], message: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_budget_and_a_fixed_size_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "--profile", "dev", "--budget", "5s"]) == 2
    assert "give one or the other" in capsys.readouterr().err


def test_a_failure_of_the_default_check_prints_a_runnable_program() -> None:
    # The drawn policy and scenario are the program's first step, so it replays as printed.
    result = default_check("reference+BZ-18", seed=0, budget=120)
    assert (result.verdict, result.exit_code) == ("FAIL", 1)
    assert result.failure is not None and result.failure.invariant == "I1"
    leak = replay_program(result.program)
    assert leak is not None and leak.invariant == "I1"


def test_a_drawn_policy_reaches_model_broker_and_checks() -> None:
    state: Any = make_machine(default_check_config())()
    state.setup(scenario="none", max_archive_size=1, lease_duration=20, recover_skew=7)
    assert state.policy.max_archive_size == 1 and state.policy.recover_skew == 7
    assert state.model.policy is state.policy and state.sut.policy is state.policy
    state.archive_pressure(queue="default", size=3, server=False)
    state.keyspace_is_sound()  # the model trims to the drawn cap of 1, as the broker does
    assert len(state.read("default").members("asynq:{default}:archived")) == 1
    state.teardown()
