"""The exhaustive small-scope replay (harness/replay.py) and ``keysim replay``.

The full replay (2 tasks, depth 5, every edge of the exploration on a fakeredis broker) is the
bounded proof that the broker answers and writes as the model does for every step sequence
of that scope; it is the slow test of this file (about 80 s of CPU in total,
split over two processes: about 40 s of wall time on two idle cores). Everything else runs at
depth <= 3 (a few seconds each).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

import harness.replay as replay_module
from broker.servers import RedisServer
from harness.replay import ReplayReport, default_jobs, replay
from keysim.cli import main
from model import keys
from model.explore import QUEUE, ExploreReport, alphabet, explore, explore_policy
from model.invariants import Violation
from model.policy import Policy
from model.snapshot import KeyspaceSnapshot


def explored(tasks: int, depth: int) -> ExploreReport:
    """The exploration alone (no invariant checks: only its edges and outcomes matter here)."""
    return explore(tasks, depth, check=lambda snapshot, policy: [])


def expected_edges(report: ExploreReport, tasks: int) -> int:
    """Every state above the last level tries every action once."""
    inner = report.states - report.per_depth[-1] if report.per_depth else report.states
    return inner * len(alphabet(tasks, explore_policy()))


def assert_replays_the_exploration(report: ReplayReport, tasks: int, depth: int) -> None:
    """The replay ran exactly the exploration's edges, with the same outcomes, and agreed."""
    reference = explored(tasks, depth)
    assert report.mismatch is None, report.mismatch.format()
    assert report.edges == expected_edges(reference, tasks)
    assert report.states == report.states_explored == reference.states
    assert report.fired == reference.fired
    assert report.steps == reference.steps


# --- the bounded proof ---------------------------------------------------------------------------
def test_every_explored_edge_at_depth_5_agrees_on_fakeredis() -> None:
    started = time.perf_counter()
    report = replay(2, 5, jobs=max(2, default_jobs("fakeredis")))
    assert_replays_the_exploration(report, 2, 5)
    assert report.edges == 87066
    assert report.never_exercised == []  # every transition of the table ran OK on the broker
    assert report.ok
    assert report.jobs >= 2 and report.restores > 0 and 0 < report.snapshots < report.edges
    print(f"\nreplay depth 5: {report.edges} edges in {time.perf_counter() - started:.1f} s "
          f"({report.cpu_seconds:.1f} s CPU)")


def test_every_explored_edge_at_depth_5_agrees_on_real_redis(real_server: RedisServer) -> None:
    report = replay(2, 5, backend=real_server.url)
    assert_replays_the_exploration(report, 2, 5)
    assert report.edges == 87066
    assert report.never_exercised == []
    assert report.ok and report.restores > 0


def test_depth_3_is_too_shallow_for_every_transition() -> None:
    # The transition check is not vacuous: recover needs a lease to expire first.
    report = replay(2, 3)
    assert "recover" in report.never_exercised and not report.ok


def test_shortcuts_change_nothing_but_the_work() -> None:
    fast = replay(2, 2)
    full = replay(2, 2, shortcuts=False)
    assert (full.edges, full.states, full.fired) == (fast.edges, fast.states, fast.fired)
    assert full.mismatch is None and fast.mismatch is None
    assert full.snapshots == full.edges > fast.snapshots


def test_without_a_database_image_every_step_is_read_and_restored(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The fallback for a fakeredis whose internals differ: full restores, no memo, same verdict.
    fast = replay(2, 2)
    monkeypatch.setattr(replay_module._FakeStore, "_items", lambda self: None)
    slow = replay(2, 2)
    assert (slow.edges, slow.states, slow.fired) == (fast.edges, fast.states, fast.fired)
    assert slow.mismatch is None and slow.snapshots == slow.edges
    assert slow.restores > fast.restores


# --- the replay can fail -------------------------------------------------------------------------
def test_bz9_is_caught_with_the_shortest_trace() -> None:
    report = replay(2, 3, variant="reference+BZ-9")
    found = report.mismatch
    assert found is not None and not report.ok
    assert found.kind == "keyspace"
    assert found.trace == ("add_to_group(t0)", "add_to_group(t1)", "aggregation_check")
    groups = keys.groups(QUEUE)
    assert f"  {groups}\n       model: (absent)\n      broker: set [g] ttl=none" in found.detail


def test_bz2_is_caught_on_real_redis_too(real_server: RedisServer) -> None:
    report = replay(2, 3, backend=real_server.url, variant="reference+BZ-2")
    found = report.mismatch
    assert found is not None
    assert found.trace == ("enqueue(t0)", "enqueue(t1)", "archive_all_tasks(pending)")
    hash_key = keys.task(QUEUE, "t0")
    assert f"  {hash_key}\n       model: (absent)\n      broker: hash {{" in found.detail


def test_a_different_answer_is_a_mismatch() -> None:
    # BZ-18: write_result on a missing task succeeds instead of raising TaskNotFoundError.
    report = replay(1, 2, variant="reference+BZ-18")
    found = report.mismatch
    assert found is not None
    assert (found.kind, found.trace) == ("answer", ("write_result(t0)",))
    assert "model : ('not_found', None)\n    broker: ('ok', 1)" in found.detail
    labels = [a.label for a in alphabet(1, explore_policy())]
    assert report.edges == labels.index("write_result(t0)") + 1  # it stops at the first


def test_an_invariant_violation_is_a_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    def nothing_archived(snapshot: KeyspaceSnapshot, policy: Policy, **flags: bool
                         ) -> Sequence[Violation]:
        key = keys.archived(snapshot.queue)
        return [Violation("X1", key, t, f"{t} archived") for t in snapshot.members(key)]

    monkeypatch.setattr(replay_module, "check_all", nothing_archived)
    found = replay(1, 3).mismatch
    assert found is not None
    assert (found.kind, found.message) == ("X1", "t0 archived")
    assert len(found.trace) == 2 and found.trace[0] in {"enqueue(t0)", "schedule(t0)"}


# --- input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tasks": 0}, "^tasks must be an int >= 1"),
    ({"depth": -1}, "^depth must be an int >= 0"),
    ({"depth": True}, "^depth must be an int >= 0"),
    ({"jobs": 0}, "^jobs must be an int >= 1"),
    ({"max_archive_size": 0}, "^max_archive_size must be an int >= 1"),
    ({"backend": "mongodb://x"}, "^backend must be fakeredis, server or a redis:// URL"),
    ({"backend": "server", "jobs": 2}, "^jobs > 1 needs backend 'fakeredis'"),
    ({"variant": "nope"}, "^unknown variant 'nope'"),
])
def test_bad_input_is_refused_before_anything_runs(kwargs: dict[str, object],
                                                   message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replay(**kwargs)  # type: ignore[arg-type]


def test_depth_0_replays_nothing() -> None:
    report = replay(2, 0)
    assert (report.edges, report.states, report.mismatch) == (0, 1, None)


# --- CLI -----------------------------------------------------------------------------------------
def test_cli_prints_the_report(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["replay", "--tasks", "1", "--depth", "1", "--jobs", "1"])
    out = capsys.readouterr().out
    assert code == 1  # depth 1 cannot exercise every transition
    assert "replayed: 45 edges, 7 states covered" in out
    assert "mismatches: none" in out
    assert "never exercised (OK): dequeue, done," in out


def test_cli_exits_1_with_the_trace_on_a_mutant(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["replay", "--depth", "3", "--variant", "reference+BZ-9", "--jobs", "1"])
    out = capsys.readouterr().out
    assert code == 1
    assert "MISMATCH [keyspace]" in out
    assert "shortest trace (3 steps):\n  1. add_to_group(t0)\n  2. add_to_group(t1)\n" \
           "  3. aggregation_check\n" in out


@pytest.mark.parametrize("argv", [["--backend", "nope"], ["--depth", "-1"], ["--jobs", "0"],
                                  ["--variant", "nope"]])
def test_cli_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["replay", *argv])
    assert exit_info.value.code == 2


def test_cli_refuses_jobs_on_a_real_redis(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--backend", "server", "--jobs", "2"]) == 2
    assert "--jobs > 1 needs --backend fakeredis" in capsys.readouterr().err
