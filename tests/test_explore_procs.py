"""Bounded exhaustive interleavings (``keysim explore --processes``) and their replay."""

from __future__ import annotations

from harness.explore_replay import replay_schedules
from model.composites import Context, Process
from model.explore import QUEUE, explore_policy
from model.explore_procs import Move, commute, explore_processes, footprint, moves
from model.reference import ReferenceModel


def test_reference_has_no_violation_and_the_reduction_skips_steps() -> None:
    report = explore_processes(2, 2, 4)
    assert report.violations == [] and report.depth_reached == 4
    assert report.slept > 0 and report.schedules > report.steps


def test_the_reduction_loses_no_state() -> None:
    reduced = explore_processes(2, 2, 4)
    full = explore_processes(2, 2, 4, reduce=False)
    assert reduced.states == full.states
    assert full.slept == 0 and reduced.steps < full.steps and reduced.slept > 0


def test_steps_of_one_process_never_commute() -> None:
    model = ReferenceModel(explore_policy())
    procs = tuple(Process.start(i, QUEUE, ()) for i in range(2))
    ctx = Context(model.now_s, model.policy)
    enabled = moves(procs, ctx, 1)
    p0 = [m for m in enabled if m.process == 0]
    prints = {m: footprint(m, procs, ctx, model) for m in enabled}
    assert all(not commute(prints[a], prints[b]) for a in p0 for b in p0)
    # On an empty keyspace the two workers' empty dequeues only read: they commute.
    assert commute(prints[Move(0, "worker")], prints[Move(1, "worker")])
    # A time jump commutes with nothing.
    jump = next(m for m in enabled if m.seconds)
    assert not any(commute(prints[jump], prints[m]) for m in enabled if m != jump)


def test_asynq_variant_replay_finds_the_inspector_archive_zombie() -> None:
    report = explore_processes(2, 2, 4, keep_edges=True)
    result = replay_schedules(report.edges, "asynq-v0.26.0")
    assert result.violation is not None
    assert result.violation.invariant == "I1" and "zombie" in result.violation.message
    assert [m.label for m in result.violation.schedule] == [
        "enqueue(t0)", "enqueue(t1)", "archive_task(t0)", "archive_task(t1)"]
    assert replay_schedules(report.edges, "reference").violation is None
