"""How a worker's run ends: the model's decision and the implementations' one, each held to the
same table (neither is derived from the other), and the recoverer composite on a broker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import fakeredis
import pytest

from broker import Broker
from broker.processor import finishing, recover_expired, success_operation
from model.clock import VirtualClock
from model.endings import LEASE_EXPIRED, Ending, Finish
from model.message import TaskMessage
from model.policy import ASYNQ_POLICY
from model.reference import ReferenceModel

Q = "q"
NOW = VirtualClock().seconds  # the model's clock starts here
Decide = Callable[[TaskMessage, Ending, str], Finish]


def _model(msg: TaskMessage, ending: Ending, error: str) -> Finish:
    return ReferenceModel(ASYNQ_POLICY, VirtualClock()).finishing(msg, ending, error)


def _implementation(msg: TaskMessage, ending: Ending, error: str) -> Finish:
    return finishing(msg, ending, error, NOW, ASYNQ_POLICY)


DECIDERS = {"model": _model, "implementation": _implementation}
FRESH = TaskMessage(type="t", payload=b"", id="t1", queue=Q, retry=2, retried=1)
SPENT = replace(FRESH, retried=2)
KEPT = replace(FRESH, retention=30)
DELAY = ASYNQ_POLICY.retry_delay_for("t1", 1)

#: (message, ending) → the call that ends it: the table both deciders are held to.
TABLE = [
    (FRESH, Ending.SUCCESS, Finish("done", (FRESH,))),
    (KEPT, Ending.SUCCESS, Finish("mark_as_complete", (KEPT,))),
    (KEPT, Ending.REVOKE, Finish("done", (KEPT,))),
    (FRESH, Ending.ABORTED, Finish("requeue", (FRESH,))),
    (FRESH, Ending.SKIP_RETRY, Finish("archive", (FRESH, "e"))),
    (FRESH, Ending.FAILURE, Finish("retry", (FRESH, NOW + DELAY, "e"), {"is_failure": True})),
    (FRESH, Ending.UNCOUNTED_FAILURE,
     Finish("retry", (FRESH, NOW + DELAY, "e"), {"is_failure": False})),
    (SPENT, Ending.FAILURE, Finish("archive", (SPENT, "e"))),
    (SPENT, Ending.UNCOUNTED_FAILURE, Finish("archive", (SPENT, "e"))),
    (replace(FRESH, retry=0, retried=0), Ending.FAILURE,
     Finish("archive", (replace(FRESH, retry=0, retried=0), "e"))),
]


@pytest.mark.parametrize("decider", sorted(DECIDERS))
@pytest.mark.parametrize(("msg", "ending", "expected"), TABLE,
                         ids=[f"{m.retried}of{m.retry}-r{m.retention}-{e.value}"
                              for m, e, _ in TABLE])
def test_each_ending_is_decided_as_the_table_says(decider: str, msg: TaskMessage, ending: Ending,
                                                  expected: Finish) -> None:
    assert DECIDERS[decider](msg, ending, "e") == expected


def test_every_ending_is_in_the_table() -> None:
    assert {ending for _, ending, _ in TABLE} == set(Ending)


@pytest.mark.parametrize("ending", list(Ending))
def test_the_undecoded_shortcut_agrees_with_the_whole_decision(ending: Ending) -> None:
    for msg in (FRESH, KEPT):
        settled = success_operation(ending, msg.retention)
        call = _implementation(msg, ending, "e")
        assert settled is None or settled == call.operation


def test_the_recoverer_archives_spent_tasks_retries_others_and_skips_the_gone() -> None:
    broker = Broker(fakeredis.FakeRedis())
    for task_id, retry in (("spent", 0), ("fresh", 1), ("gone", 1)):
        broker.enqueue(TaskMessage(type="t", payload=b"", id=task_id, queue=Q, retry=retry))
    taken = [broker.dequeue(Q) for _ in range(3)]
    expired = [m for m in taken if m is not None]
    broker.done(next(m for m in expired if m.id == "gone"))  # finished meanwhile: NOT FOUND
    assert recover_expired(broker, expired) == 2
    snap = broker.snapshot(Q)
    assert snap.members(f"asynq:{{{Q}}}:archived") == ("spent",)
    assert snap.members(f"asynq:{{{Q}}}:retry") == ("fresh",)
    fresh = (snap.task_hash("fresh") or {})["msg"]
    assert isinstance(fresh, TaskMessage) and fresh.error_msg == LEASE_EXPIRED
