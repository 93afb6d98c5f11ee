"""Bug attribution (harness/attribution.py) reads kinds, keys and operations, never messages.

The unit cases pin one rule each. The scrambled runs reword every message the checks and the
machine write — every letter of each violation's and each failure's text moved one on, so no
word of it survives ("stub" becomes "tuvc") — then replay the saved counterexamples and
hunt the zoo mutants the saved ones do not cover: every failure must still be pinned on the
same defect. (Attribution that matched words of a message would misname most of them.)
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest

from harness import leaks
from harness.attribution import Op, attribute
from harness.check import replay_program
from harness.leaks import Disagreement
from harness.zoo import CASES, hunt, load_counterexamples
from model import keys
from model.invariants import Kind, Violation

SAVED = load_counterexamples(Path(__file__).parent / "regressions" / "asynq_counterexamples.json")
#: Zoo mutants no saved counterexample names, with the seed tests/test_zoo.py hunts them with.
UNSAVED = {"BZ-3": 2, "BZ-7": 2, "BZ-8": 2, "BZ-9": 2, "BZ-11": 3}

LEASE, ACTIVE = keys.lease("q"), keys.active("q")


@pytest.mark.parametrize(("kind", "task", "ops", "bug"), [
    (Kind.STUB, {"result": "r1"}, [("write_result", ("q", "t0", b"r1"), "ok")], "BZ-18"),
    (Kind.STUB, {"state": "active"}, [("dequeue", ("q",), "empty")], "BZ-17"),
    (Kind.ZOMBIE, {"state": "archived"}, [("archive_all_tasks", (), "ok")], "BZ-2"),
    (Kind.ZOMBIE, {"state": "archived"}, [("archive", (), "ok")], "BZ-1"),
    (Kind.ZOMBIE, {"state": "active"}, [("mark_as_complete", (), "ok")], "BZ-20"),
    (Kind.MISPLACED, {"state": "active"}, [("archive", (), "ok")], "BZ-15"),
    (Kind.STALE_GROUP, None, [], "BZ-9"),
    (Kind.ORPHAN_GROUP, None, [("reclaim_stale_aggregation_sets", (), "ok"),
                               ("forward_if_ready", (), "empty")], "BZ-10"),
    (Kind.STALE_LOCK, None, [("enqueue_unique", (), "conflict")], "BZ-5"),
    (Kind.STALE_LOCK, None, [("delete_task", ("q", "t0"), "ok")], "BZ-3"),
    (Kind.STALE_LOCK, None, [("add_to_group_unique", (), "ok")], "BZ-4"),
    (Kind.DANGLING_AGGREGATION_SET, None, [], "BZ-8"),
    (Kind.UNREGISTERED_QUEUE, None, [], "BZ-12"),
    (Kind.UNREGISTERED_QUEUE, None, [("pause", ("q",), "ok")], "pause_unregistered"),
    (Kind.EXPIRED_LEASE, None, [], None),
])
def test_violation_attribution(kind: Kind, task: dict[str, str] | None,
                               ops: list[tuple[str, tuple[object, ...], str]],
                               bug: str | None) -> None:
    assert attribute(kind, [Op(*op) for op in ops], task_id="t0", task=task) == bug


def test_an_archive_trimming_its_own_new_entry_is_bz16() -> None:
    ops = [Op("archive", (), "ok")]
    task = {"state": "archived"}
    assert attribute(Kind.ZOMBIE, ops, task_id="t0", task=task, self_trimmed={"t0"}) == "BZ-16"
    assert attribute(Kind.ZOMBIE, ops, task_id="t0", task=task, self_trimmed={"t1"}) == "BZ-1"


@pytest.mark.parametrize(("kind", "op", "found", "bug"), [
    (Disagreement.SURVIVED_DRAIN, None, {LEASE, ACTIVE}, "BZ-7"),
    (Disagreement.SURVIVED_DRAIN, None, {keys.groups("q")}, None),
    (Disagreement.REMOVE_QUEUE_LEFT_KEYS, "remove_queue", {keys.task("q", "t0")}, "BZ-12"),
    (Disagreement.KEYSPACE_DIFFERS, "recover", {LEASE}, "BZ-7"),
    (Disagreement.KEYSPACE_DIFFERS, "recover", {keys.retry("q")}, None),
    (Disagreement.KEYSPACE_DIFFERS, "delete_aggregation_set", {keys.aggregation_sets("q")},
     "BZ-8"),
])
def test_disagreement_attribution(kind: Disagreement, op: str | None, found: set[str],
                                  bug: str | None) -> None:
    ops = [Op(op, ("q",), "ok")] if op else []
    assert attribute(kind, ops, keys=found) == bug


def test_a_script_that_died_part_way_is_named_by_its_operation() -> None:
    died = ("script_error", "ERR")
    assert attribute(Disagreement.ANSWER_DIFFERS, [Op("mark_as_complete", (), "script_error")],
                     answer=died) == "BZ-20"
    assert attribute(Disagreement.ANSWER_DIFFERS, [Op("archive", (), "script_error")],
                     answer=died) == "BZ-15"
    assert attribute(Disagreement.ANSWER_DIFFERS, [Op("archive", (), "ok")],
                     answer=("ok", 1)) is None


_NEXT_LETTER = str.maketrans(string.ascii_letters, string.ascii_lowercase[1:] + "a"
                             + string.ascii_uppercase[1:] + "A")


def scrambled(text: str) -> str:
    """``text`` with no word left: every letter moved one on ("stub" becomes "tuvc"; again,
    "uvwd")."""
    return text.translate(_NEXT_LETTER)


@pytest.fixture
def scrambled_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every violation message and every failure's message and detail, scrambled."""
    def post_init(self: Violation, checked: Any = Violation.__post_init__) -> None:
        checked(self)
        object.__setattr__(self, "message", scrambled(self.message))

    monkeypatch.setattr(Violation, "__post_init__", post_init)
    plain = leaks.LeakFound.__init__

    def init(self: leaks.LeakFound, invariant: str, message: str, detail: str = "",
             **found: Any) -> None:
        plain(self, invariant, scrambled(message), scrambled(detail), **found)

    monkeypatch.setattr(leaks.LeakFound, "__init__", init)


def test_scrambling_leaves_no_word(scrambled_messages: None) -> None:
    v = Violation.of(Kind.STUB, "k", "t0", "stub: t:t0 has no msg field (fields: result)")
    assert "stub" not in v.message and "result" not in v.message
    found = leaks.leak("drain", "remove_queue('q') left keys behind", "asynq:{q}:lease")
    assert "remove_queue" not in found.message and ":lease" not in found.detail


@pytest.mark.parametrize("saved", [pytest.param(c, id=f"{c['variant']}-{c['bug']}")
                                   for c in SAVED])
def test_saved_counterexamples_keep_their_defect_when_reworded(
        saved: dict[str, Any], scrambled_messages: None) -> None:
    failure = replay_program("\n".join(saved["program"]))
    assert failure is not None
    assert failure.message != saved["message"]  # the wording did change
    assert (failure.invariant, failure.bug) == (saved["invariant"], saved["bug"])


@pytest.mark.parametrize("bug", sorted(UNSAVED))
def test_zoo_mutants_keep_their_defect_when_reworded(bug: str, scrambled_messages: None) -> None:
    found = hunt(CASES[bug], seed=UNSAVED[bug])
    assert found.as_expected, found.result.summary()
