"""The exhaustive exploration (model/explore.py) and ``keysim explore``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from keysim.cli import main
from model import keys
from model.clock import EPOCH_NS, VirtualClock
from model.explore import (
    ExploreReport,
    abstract_state,
    alphabet,
    base_message,
    explore,
    explore_policy,
    time_steps,
)
from model.policy import Policy
from model.reference import ReferenceModel
from model.snapshot import KeyspaceSnapshot
from model.states import TaskState
from model.transitions import TRANSITIONS, Outcome

POLICY = explore_policy()


@dataclass(frozen=True)
class StubViolation:
    invariant: str
    key: str
    task_id: str | None
    message: str


def no_violations(snapshot: KeyspaceSnapshot, policy: Policy) -> Sequence[StubViolation]:
    return []


def archived_is_bad(snapshot: KeyspaceSnapshot, policy: Policy) -> Sequence[StubViolation]:
    """A stub invariant: no task may ever be archived."""
    key = keys.archived(snapshot.queue)
    return [StubViolation("X1", key, t, f"{t} archived") for t in snapshot.members(key)]


# --- input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("tasks", "depth", "name"),
                         [(0, 1, "tasks"), (-1, 1, "tasks"), (True, 1, "tasks"),
                          (1.5, 1, "tasks"), (1, -1, "depth"), (1, "2", "depth")])
def test_bad_bounds_raise_naming_the_parameter(tasks: object, depth: object, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be"):
        explore(tasks, depth, check=no_violations)  # type: ignore[arg-type]


# --- alphabet ------------------------------------------------------------------------------------
def test_every_transition_has_an_action() -> None:
    actions = alphabet(2, POLICY)
    assert {a.transition for a in actions} - {None} == set(TRANSITIONS)
    labels = [a.label for a in actions]
    assert len(labels) == len(set(labels))
    assert "delete_task(t1)" in labels and "delete_aggregation_set(s1)" in labels


def test_time_steps_pass_every_threshold() -> None:
    assert time_steps(POLICY) == {
        6: ["process_at", "retry delay", "retention", "unique ttl", "lease+skew", "grace",
            "aggregation timeout"],
        86401: ["archive cutoff"],
    }
    custom = Policy(aggregation_max_delay=30, archive_cutoff_days=2)
    steps = time_steps(custom)
    assert steps[31] == ["max delay"] and steps[2 * 86400 + 1] == ["archive cutoff"]


# --- abstract state ------------------------------------------------------------------------------
def run(model: ReferenceModel, *labels: str) -> ReferenceModel:
    by_label = {a.label: a for a in alphabet(2, model.policy)}
    for label in labels:
        by_label[label].run(model)
    return model


def at(start_ns: int) -> ReferenceModel:
    return ReferenceModel(POLICY, VirtualClock(start_ns))


def test_abstract_state_does_not_depend_on_absolute_time() -> None:
    ops = ("enqueue_unique(t0)", "schedule(t1)", "dequeue", "retry(t0, failure)", "pause")
    early = run(at(EPOCH_NS), *ops)
    late = run(at(EPOCH_NS + 12_345 * 10**9), *ops)
    assert early.snapshot("q") != late.snapshot("q")
    assert abstract_state(early) == abstract_state(late)


def test_abstract_state_keeps_what_future_steps_can_tell_apart() -> None:
    step = next(a.label for a in alphabet(1, POLICY) if a.label.startswith("advance(+6s"))
    fresh = run(at(EPOCH_NS), "schedule_unique(t0)")
    older = run(at(EPOCH_NS), "schedule_unique(t0)", step)
    assert abstract_state(fresh) != abstract_state(older)  # due now vs not yet; lock 10 s vs 4 s


def test_abstract_state_renumbers_times_beyond_every_threshold() -> None:
    cutoff = next(a.label for a in alphabet(1, POLICY) if "archive cutoff" in a.label)
    a = run(at(EPOCH_NS), "enqueue(t0)", "archive_task(t0)", cutoff)
    b = run(at(EPOCH_NS), "enqueue(t0)", "archive_task(t0)", cutoff, cutoff)
    archived_at = a.store("q").index[TaskState.ARCHIVED]["t0"]
    assert b.now_s - archived_at > a.now_s - archived_at > POLICY.archive_cutoff
    assert abstract_state(a) == abstract_state(b)


def test_abstract_state_ignores_fields_nothing_reads() -> None:
    plain = run(at(EPOCH_NS), "enqueue(t0)")
    written = run(at(EPOCH_NS), "enqueue(t0)", "write_result(t0)")
    assert abstract_state(plain) == abstract_state(written)
    assert abstract_state(plain) != abstract_state(run(at(EPOCH_NS), "schedule(t0)"))


# --- search --------------------------------------------------------------------------------------
def test_depth_zero_is_the_empty_keyspace() -> None:
    report = explore(1, 0, check=no_violations)
    assert (report.states, report.per_depth, report.transitions_fired) == (1, [], 0)
    assert report.never_enabled == list(TRANSITIONS)
    assert not report.ok


def test_counts_every_fired_action_by_transition_and_outcome() -> None:
    report = explore(1, 1, check=no_violations)
    actions = alphabet(1, POLICY)
    assert report.transitions_fired == len([a for a in actions if a.transition])
    assert report.fired["enqueue"] == {Outcome.OK: 1}
    assert report.fired["done"] == {Outcome.NOT_FOUND: 1}
    assert report.fired["dequeue"] == {Outcome.EMPTY: 1}
    assert report.fired["remove_queue_force"] == {Outcome.OK: 1}
    assert report.fired["unpause"] == {Outcome.QUEUE_NOT_FOUND: 1}
    assert report.fired["pause"] == {Outcome.QUEUE_NOT_FOUND: 1}
    assert sum(report.steps.values()) == len(time_steps(POLICY))
    # From the empty keyspace: one state per client op (time steps and refusals, pause of the
    # unregistered queue included, lead back to the root).
    assert report.states == 1 + 6


def test_shortest_trace_to_a_violation() -> None:
    report = explore(2, 3, check=archived_is_bad)
    found = {(v.invariant, v.task_id): v for v in report.violations}
    assert set(found) == {("X1", "t0"), ("X1", "t1")}
    assert found[("X1", "t0")].trace == ("enqueue(t0)", "archive_task(t0)")
    assert found[("X1", "t0")].message == "t0 archived"
    assert report.violating_states > 2
    text = report.format()
    assert "X1 [asynq:{q}:archived] task t0: t0 archived" in text
    assert "shortest trace (2): enqueue(t0) ; archive_task(t0)" in text


def test_format_lists_every_transition() -> None:
    report = explore(1, 2, check=no_violations)
    text = report.format()
    for name in TRANSITIONS:
        assert f"\n{name} " in text
    assert "violations: none" in text
    assert "never enabled: " + ", ".join(report.never_enabled) in text
    assert text.startswith("explore: 1 task(s), depth 2, max_archive_size=1 (capacity 1)")


def test_worker_actions_use_the_stored_message() -> None:
    model = run(at(EPOCH_NS), "enqueue(t0)", "dequeue", "retry(t0, failure)")
    stored = model.store("q").hashes["t0"]["msg"]
    assert stored == base_message("t0").failed("boom", model.now_s)
    assert model.state_of("q", "t0") is TaskState.RETRY


@pytest.fixture(scope="module")
def depth6() -> ExploreReport:
    return explore(2, 6)


def test_depth6_enables_every_transition(depth6: ExploreReport) -> None:
    assert depth6.never_enabled == []
    assert depth6.states > 5000
    for name in TRANSITIONS:
        assert depth6.fired[name][Outcome.OK] > 0, name
    for row in TRANSITIONS.values():  # every guard was exercised too
        for guard in row.guards:
            assert depth6.fired[row.name][guard.outcome] > 0, (row.name, guard.outcome)


def test_depth6_finds_no_violation(depth6: ExploreReport) -> None:
    assert depth6.violations == []


# --- CLI -----------------------------------------------------------------------------------------
def test_cli_prints_the_report_and_fails_on_never_enabled(capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    assert main(["explore", "--tasks", "1", "--depth", "2", "--max-archive-size", "3"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("explore: 1 task(s), depth 2, max_archive_size=3 (capacity 3)")
    assert "\nnever enabled: done, mark_as_complete," in out


@pytest.mark.parametrize("argv", [["--tasks", "0"], ["--depth", "-1"], ["--tasks", "x"],
                                  ["--max-archive-size", "0"]])
def test_cli_rejects_bad_bounds(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["explore", *argv])
    assert exit_.value.code == 2
    assert argv[0] in capsys.readouterr().err
