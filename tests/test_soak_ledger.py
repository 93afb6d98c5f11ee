"""The books of ``keysim soak`` (soak/ledger.py) on hand-written logs: a lost task is
detected, a duplicate counted (never called loss), the Inspector's listings are checked against
its answers, and a finding no known defect explains fails the verdict. The kill schedule is a
function of the seed alone."""

from __future__ import annotations

from typing import Any

import pytest

from audit import Finding
from model import keys
from soak.ledger import LEASE_EXPIRED, account, attribute_finding, judge
from soak.run import DOWNTIME_S, FIRST_KILL_S, Kill, kill_schedule, quiet_seconds

Q = "soak"


def enqueued(task_id: str, mix: str = "plain", **extra: Any) -> dict[str, Any]:
    return {"ev": "enqueued", "id": task_id, "mix": mix, "marker": f"m-{task_id}", **extra}


def ran(task_id: str, ok: bool = True, proc: str = "p0.0", markers: list[str] | None = None,
        retried: int = 0) -> list[dict[str, Any]]:
    """A handler run that entered and returned."""
    run = {"id": task_id, "markers": markers or [f"m-{task_id}"], "proc": proc, "retried": retried}
    return [{"ev": "running", **run}, {"ev": "handled", "ok": ok, **run}]


def final(states: dict[str, dict[str, Any]], listed: dict[str, list[str]] | None = None
          ) -> dict[str, Any]:
    return {"ev": "final", "tasks": states, "listed": listed or {}}


def test_a_task_gone_without_a_successful_run_is_lost() -> None:
    client = [enqueued("a"), enqueued("b")]
    servers = ran("a") + ran("b", ok=False)
    ledger = account(client, servers, final({"a": {"state": "missing"}, "b": {"state": "missing"}}))
    assert ledger.outcomes == {"done": 1}
    assert [p.task_id for p in ledger.lost] == ["b"]
    assert judge(ledger, [], Q).failures == [f"lost: {ledger.lost[0]}"]


def test_a_retention_task_gone_early_is_lost_even_after_it_ran() -> None:
    ledger = account([enqueued("r", "retention")], ran("r"), final({"r": {"state": "missing"}}))
    assert [p.task_id for p in ledger.lost] == ["r"]


def test_a_rerun_after_a_kill_is_a_duplicate_not_a_loss() -> None:
    # p0.0 ran it and was killed before Done; p1.0 ran it again after the recoverer; and one
    # run of another task was cut short (entered, never returned).
    client = [enqueued("a"), enqueued("b")]
    servers = ran("a", proc="p0.0") + ran("a", proc="p1.0", retried=1) \
        + [{"ev": "running", "id": "b", "markers": ["m-b"], "proc": "p0.0", "retried": 0}] \
        + ran("b", proc="p1.0", retried=1)
    ledger = account(client, servers, final({"a": {"state": "missing"}, "b": {"state": "missing"}}))
    assert (ledger.duplicates, ledger.duplicated_tasks, ledger.interrupted_runs, ledger.reruns) \
        == (1, 1, 1, 1)
    assert ledger.handler_runs == 3 and ledger.lost == [] and ledger.outcomes == {"done": 2}
    assert judge(ledger, [], Q).passed


def test_a_run_cut_short_and_never_begun_again_is_no_rerun() -> None:
    # Killed in the handler of an archive-mix task (no retry left): the recoverer archives it.
    client = [enqueued("x", "archive")]
    servers = [{"ev": "running", "id": "x", "markers": ["m-x"], "proc": "p0.0", "retried": 0}]
    ledger = account(client, servers, final({"x": {"state": "archived", "last_err": LEASE_EXPIRED}},
                                            {"archived": ["x"]}))
    assert (ledger.interrupted_runs, ledger.reruns, ledger.handler_runs) == (1, 0, 0)
    assert ledger.outcomes == {"archived by the recoverer": 1} and judge(ledger, [], Q).passed


def test_group_tasks_are_settled_by_their_batch_run() -> None:
    client = [enqueued("g1", "group", group="g0"), enqueued("g2", "group", group="g0")]
    servers = ran("batch", markers=["m-g1", "m-g2"])
    ledger = account(client, servers, final({"g1": {"state": "missing"}, "g2": {"state": "missing"}}))
    assert ledger.outcomes == {"aggregated": 2} and ledger.lost == []


def test_every_terminal_outcome_is_named() -> None:
    client = [enqueued("c", "retention"), enqueued("x", "archive"), enqueued("k", "retry"),
              enqueued("d", "delete"), {"ev": "deleted", "id": "d", "by": "Inspector.DeleteTask"}]
    servers = ran("c") + ran("x", ok=False)
    states = {"c": {"state": "completed", "result": "ok:m-c"},
              "x": {"state": "archived", "last_err": "planned failure, archived"},
              "k": {"state": "archived", "last_err": LEASE_EXPIRED},
              "d": {"state": "missing"}}
    listed = {"completed": ["c"], "archived": ["x", "k"]}
    ledger = account(client, servers, final(states, listed))
    assert ledger.outcomes == {"completed": 1, "archived": 1, "archived by the recoverer": 1,
                               "deleted by Inspector.DeleteTask": 1}
    assert ledger.problems == [] and judge(ledger, [], Q).passed


@pytest.mark.parametrize("states, listed, why", [
    ({"c": {"state": "completed", "result": "ok:wrong"}}, {"completed": ["c"]}, "completed with result"),
    ({"c": {"state": "completed", "result": "ok:m-c"}}, {"archived": ["c"]}, "but GetTaskInfo says"),
    ({"c": {"state": "completed", "result": "ok:m-c"}}, {"completed": ["c", ""]}, "task '' listed"),
    ({"c": {"state": "completed", "result": "ok:m-c"}}, {}, "in no listing"),
])
def test_the_inspector_must_agree_with_the_log_and_with_itself(
        states: dict[str, dict[str, Any]], listed: dict[str, list[str]], why: str) -> None:
    ledger = account([enqueued("c", "retention")], ran("c"), final(states, listed))
    assert len(ledger.problems) == 1 and why in ledger.problems[0].why
    assert not judge(ledger, [], Q).passed


def test_what_the_inspector_cannot_read_is_a_problem() -> None:
    # Asynq's own answers on a broken keyspace: GetTaskInfo's error, GetQueueInfo's (BZ-21).
    broken = final({"c": {"state": "unreadable", "error": "UNKNOWN: redis eval error"}})
    broken["queue_error"] = "attempt to perform arithmetic on local 'bytes'"
    ledger = account([enqueued("c", "retention")], ran("c"), broken)
    assert [str(p) for p in ledger.problems] == [
        "c (retention): unreadable (UNKNOWN: redis eval error) after 1 successful run(s)",
        "Inspector.GetQueueInfo failed (as Asynq v0.26.0 does on a dangling index id, BZ-21): "
        "attempt to perform arithmetic on local 'bytes'"]
    assert not judge(ledger, [], Q).passed


def test_an_unattributed_finding_fails_and_a_known_one_passes() -> None:
    stale = Finding("BZ-23", "stale registry member", "asynq:servers", None, "asynq:servers lists x")
    zombie = Finding("I1", "zombie", keys.task(Q, "t"), "t", "zombie: t:t is archived but in no index")
    known, new = attribute_finding(stale, kills=2), attribute_finding(zombie, kills=2)
    assert (known.label, new.label) == ("BZ-23", "NEW")
    ledger = account([], [], final({}))
    assert judge(ledger, [known], Q).passed
    verdict = judge(ledger, [known, new], Q)
    assert not verdict.passed and verdict.failures[0].startswith("NEW finding: zombie")
    # Without a kill, the soak has no way to produce a stale member: it is NEW then.
    assert attribute_finding(stale, kills=0).label == "NEW"


def test_a_stuck_task_fails_unless_an_attributed_finding_holds_its_group() -> None:
    client = [enqueued("g1", "group", group="g0"), enqueued("p", "plain")]
    states = {"g1": {"state": "aggregating", "group": "g0"}, "p": {"state": "missing"}}
    ledger = account(client, ran("p"), final(states, {"aggregating": ["g1"]}))
    assert [p.task_id for p, _ in ledger.stuck] == ["g1"]
    assert not judge(ledger, [], Q).passed
    orphan = attribute_finding(Finding("I7", "orphan group", keys.group(Q, "g0"), None, "orphan"), kills=1)
    assert orphan.label == "BZ-10"
    verdict = judge(ledger, [orphan], Q)
    assert verdict.passed and [(p.task_id, d) for p, d in verdict.explained_stuck] == [("g1", "BZ-10")]


def test_process_errors_fail_the_verdict() -> None:
    assert judge(account([], [], final({})), [], Q, ["server p0.1 exited 1: boom"]).failures \
        == ["server p0.1 exited 1: boom"]


def test_the_kill_schedule_depends_on_the_seed_alone_and_spares_the_quiet_end() -> None:
    for seed in range(20):
        schedule = kill_schedule(seed, 120, 3)
        assert schedule == kill_schedule(seed, 120, 3) and len(schedule) >= 1
        assert all(FIRST_KILL_S <= k.at_s <= 120 - quiet_seconds(120) for k in schedule)
        assert all(DOWNTIME_S[0] - 0.1 <= k.restart_s - k.at_s <= DOWNTIME_S[1] + 0.1 for k in schedule)
        down: dict[int, float] = {}
        for k in schedule:  # a server is killed only while the schedule has it up
            assert down.get(k.proc, 0.0) <= k.at_s < k.restart_s
            down[k.proc] = k.restart_s
    assert kill_schedule(0, 20, 1) and all(isinstance(k, Kill) for k in kill_schedule(0, 20, 1))
