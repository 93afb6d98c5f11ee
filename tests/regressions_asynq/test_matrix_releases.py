"""``keysim matrix`` on Asynq's own code: two releases end to end, a release without task
groups, and the committed matrix's programs (``harness.matrix``).

The two releases are those CI builds (v0.24.0, v0.26.0), hunted with a small budget (one
seed, short rounds, no focus plans): what is found must be what our variant of that release
is known to have (``harness.zoo.asynq_expected``), and the defect every round finds first
(``RemoveQueue`` leaving keys, BZ-12) must be found on both. v0.22.1 has no task groups: its
driver answers ``unsupported`` for every group operation, the machine draws none, and the
group defects are *n/a*. Every program the committed matrix holds for v0.26.0 must still
fail the same way on v0.26.0.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import db_url, driver_or_skip

from broker.asynq_go import GROUP_OPERATIONS, AsynqGoBroker, UnsupportedOperation
from broker.servers import RedisServer
from harness import matrix
from harness.check import replay_program
from harness.zoo import asynq_expected
from model.clock import VirtualClock
from model.message import TaskMessage
from model.states import TaskState

DOCS = Path(__file__).resolve().parent.parent.parent / "docs"
SMALL = matrix.Budget(seeds=1, rounds=4, max_examples=40, focused=False, flood=False)


def test_matrix_on_two_releases(asynq_server: RedisServer) -> None:
    for version in ("v0.24.0", "v0.26.0"):
        driver_or_skip(version)
    runs = matrix.run_matrix(["v0.24.0", "v0.26.0"], SMALL)
    for run in runs:
        assert run.driven and run.variant == f"asynq-{run.name}", run.reason
        assert run.examples > 0 and run.pairs_reached > 0
        assert set(run.hits) <= asynq_expected(run.variant), (run.name, sorted(run.hits))
        assert run.cell("BZ-12") == "found", (run.name, sorted(run.hits))
        assert {run.cell(bug) for bug in matrix.DEFECTS} <= {"found", "found?", "not present"}
    text = matrix.render(runs, {"command": "test"})
    assert text.count("```python") == sum(len(r.hits) for r in runs)


def test_a_release_without_groups(asynq_server: RedisServer) -> None:
    driver_or_skip("v0.22.1")
    url = db_url(asynq_server, "unit")
    with AsynqGoBroker(url, "v0.22.1", clock=VirtualClock()) as broker:
        broker.reset()
        assert broker.features == {"groups": False, "components": False}
        assert not broker.components  # our Python composites over its single RDB calls
        msg = TaskMessage(type="t", payload=b"x", id="t1", queue="q")
        with pytest.raises(UnsupportedOperation, match="no task groups"):
            broker.add_to_group(msg, "g")
        assert all(broker.lacks(op) for op in GROUP_OPERATIONS)
        assert broker.lacks("delete_all_tasks", ("q", TaskState.AGGREGATING, "g"))
        assert not broker.lacks("delete_all_tasks", ("q", TaskState.PENDING, None))
        broker.enqueue(msg)  # the rest works as ever
        assert broker.delete_all_tasks("q", TaskState.PENDING) == 1
    [run] = matrix.run_matrix(["v0.22.1"], matrix.Budget(seeds=1, rounds=1, max_examples=10,
                                                         focused=False, flood=False))
    assert run.driven and run.features == {"groups": False, "components": False} and run.examples > 0
    assert {run.cell(bug) for bug in matrix.GROUP_DEFECTS} == {"n/a"}


@pytest.mark.parametrize("bug", sorted(next(
    (r.hits for r in matrix.load(DOCS / "asynq-versions.json")[0] if r.name == "v0.26.0"), {})))
def test_committed_program_fails_alike_on_v0_26_0(asynq_server: RedisServer, bug: str) -> None:
    driver_or_skip("v0.26.0")
    runs, _ = matrix.load(DOCS / "asynq-versions.json")
    hit = next(r for r in runs if r.name == "v0.26.0").hits[bug]
    failure = replay_program("\n".join(hit.program))
    assert failure is not None, f"{bug}'s program passes on v0.26.0"
    assert (failure.invariant, failure.bug) == (hit.invariant, hit.attributed_as or bug)


def test_a_release_before_the_task_lease_is_listed_with_its_reason() -> None:
    driver_or_skip("v0.26.0")  # Go and the module proxy are there
    [run] = matrix.run_matrix(["v0.21.0"], SMALL)
    assert not run.driven and "no task lease" in run.reason and run.module_version == "v0.21.0"
    assert {run.cell(bug) for bug in matrix.DEFECTS} == {"not run"}
