"""Minimal counterexamples the stateful machine found in the Asynq variants, kept as tests.

asynq_counterexamples.json holds each program exactly as ``keysim zoo --asynq --save`` printed
it (one defect per round, each round ignoring the defects already found, some rounds with a
zoo case's focus, faults or flood, seed 0). Each is replayed as is — on fakeredis, on a real
server and on a local Redis Cluster — it must still fail with the same check, and the same
defect must be recognised in the failure. BZ-11 is not there: no hunt
reached Asynq's only path to it (a grouped task run, failed, retried and forwarded) within its
budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.check import replay_program
from harness.zoo import load_counterexamples

SAVED = Path(__file__).with_name("asynq_counterexamples.json")


@pytest.mark.parametrize("backend", ["fakeredis", "real-redis",
                                     pytest.param("cluster", marks=pytest.mark.real_redis)])
@pytest.mark.parametrize("saved", [pytest.param(c, id=f"{c['variant']}-{c['bug']}")
                                   for c in load_counterexamples(SAVED)])
def test_counterexample_still_fails(saved: dict[str, Any], backend: str,
                                    request: pytest.FixtureRequest) -> None:
    if backend == "real-redis":
        backend = request.getfixturevalue("real_server").url
    elif backend == "cluster":  # the broker on a local Redis Cluster: the same findings
        request.getfixturevalue("real_cluster")
    failure = replay_program("\n".join(saved["program"]), backend=backend)
    assert failure is not None, f"{saved['bug']} no longer shows: {saved['message']}"
    assert (failure.invariant, failure.bug) == (saved["invariant"], saved["bug"])
