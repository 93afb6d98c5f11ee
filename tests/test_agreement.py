"""Table-driven agreement: the reference broker and the reference model, same keyspace after
every operation, on fakeredis and on real Redis.

Each row is a short scenario (a list of operations). Both implementations run it in lockstep on
one shared virtual clock; after every operation their answers (value or refusal) and their
snapshots must be identical. The stateful machine (tests/test_stateful.py) and the exhaustive
replay (tests/test_replay.py) generalise this to generated and enumerated sequences.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from broker import Broker
from model.clock import VirtualClock
from model.errors import KeysimError
from model.message import TaskMessage
from model.policy import Policy
from model.reference import ReferenceModel
from model.states import TaskState

Q = "default"
POLICY = Policy(max_archive_size=2, archive_cutoff_days=1, aggregation_grace=5)


def msg(task_id: str, payload: bytes | None = b"p", retention: int = 0, retry: int = 1,
        group: str = "") -> TaskMessage:
    return TaskMessage(type="job", payload=payload, id=task_id, queue=Q, retry=retry,
                       retention=retention, group_key=group)


Step = tuple[str, tuple[Any, ...]]


#: name -> operations; ("advance", (seconds,)) moves the shared clock; ("@dequeued", (id, op,
#: extra)) applies ``op`` to the message the model handed out for ``id``.
SCENARIOS: dict[str, list[Step]] = {
    "enqueue, conflict": [("enqueue", (msg("t1"),)), ("enqueue", (msg("t1"),))],
    "unique lock, duplicate, expiry": [
        ("enqueue_unique", (msg("t1"), 5)), ("enqueue_unique", (msg("t2"), 5)),
        ("advance", (6,)), ("enqueue_unique", (msg("t2"), 5))],
    "success without retention": [
        ("enqueue", (msg("t1"),)), ("dequeue", (Q,)), ("@done", ("t1",))],
    "success with retention, janitor": [
        ("enqueue", (msg("t1", retention=10),)), ("dequeue", (Q,)),
        ("@mark_as_complete", ("t1",)), ("advance", (11,)),
        ("delete_expired_completed_tasks", (Q,))],
    "retry, forward, archive, cap trim": [
        ("enqueue", (msg("t1", retry=1),)), ("dequeue", (Q,)), ("@retry", ("t1",)),
        ("advance", (200,)), ("forward_if_ready", (Q,)), ("dequeue", (Q,)),
        ("@archive", ("t1",)), ("enqueue", (msg("t2"),)), ("enqueue", (msg("t3"),)),
        ("archive_all_tasks", (Q, TaskState.PENDING, None))],
    "crash and recover": [
        ("enqueue", (msg("t1", retry=0),)), ("dequeue", (Q,)), ("advance", (61,)),
        ("recover", (Q,))],
    "schedule with group, aggregation": [
        ("schedule", (msg("t1", group="g"), 0)), ("advance", (1,)), ("forward_if_ready", (Q,)),
        ("add_to_group", (msg("t2"), "g")), ("advance", (6,)),
        ("aggregation_check", (Q, "g", "s1")), ("read_aggregation_set", (Q, "g", "s1")),
        ("delete_aggregation_set", (Q, "g", "s1"))],
    "stale aggregation set reclaimed": [
        ("add_to_group_unique", (msg("t1"), "g", 60)), ("advance", (6,)),
        ("aggregation_check", (Q, "g", "s1")), ("advance", (121,)),
        ("reclaim_stale_aggregation_sets", (Q,)), ("delete_all_tasks", (Q, TaskState.AGGREGATING,
                                                                        "g"))],
    "inspector: run, archive, delete": [
        ("schedule_unique", (msg("t1"), 0, 30)), ("run_task", (Q, "t1")),
        ("archive_task", (Q, "t1")), ("archive_task", (Q, "t1")), ("delete_task", (Q, "t1")),
        ("delete_task", (Q, "t1"))],
    "pause, write_result, remove queue": [
        ("pause", (Q,)), ("enqueue", (msg("t1"),)), ("pause", (Q,)), ("dequeue", (Q,)),
        ("write_result", (Q, "t1", b"r")), ("remove_queue", (Q, False)),
        ("remove_queue", (Q, True)), ("write_result", (Q, "t1", b"r"))],
}


#: Operations whose success returns None.
_NO_VALUE = frozenset({"enqueue", "enqueue_unique", "schedule", "schedule_unique", "add_to_group",
                       "add_to_group_unique", "done", "mark_as_complete", "retry", "archive",
                       "delete_aggregation_set", "delete_task", "archive_task", "run_task",
                       "pause", "remove_queue"})


def answer(method: Callable[..., Any], args: tuple[Any, ...]) -> tuple[str, Any]:
    try:
        return ("ok", method(*args))
    except KeysimError as err:
        return (err.outcome.value, None)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_reference_broker_and_model_agree_after_every_step(name: str,
                                                           redis_client: redis.Redis) -> None:
    clock = VirtualClock()
    model = ReferenceModel(POLICY, clock)
    broker = Broker(redis_client, "reference", POLICY, clock)
    held: dict[str, TaskMessage] = {}
    oks = 0
    for i, (op, args) in enumerate(SCENARIOS[name]):
        if op == "advance":
            clock.advance(args[0])
            continue
        if op.startswith("@"):
            op, m = op[1:], held[args[0]]
            args = {"retry": (m, clock.seconds + 100, "boom"), "archive": (m, "boom")}.get(
                op, (m,))
        expected = answer(getattr(model, op), args)
        actual = answer(getattr(broker, op), args)
        assert actual == expected, f"step {i} {op}: model {expected}, broker {actual}"
        oks += expected[0] == "ok" and (expected[1] not in (None, 0) or op in _NO_VALUE)
        if op == "dequeue" and isinstance(expected[1], TaskMessage):
            held[expected[1].id] = expected[1]
        want, got = model.snapshot(Q), broker.snapshot(Q)
        assert got == want, f"step {i} {op}:\n{want.diff(got, 'model', 'broker')}"
    # The scenarios do real work: most steps succeed (a few are refusals on purpose).
    assert oks >= len([s for s in SCENARIOS[name] if s[0] != "advance"]) // 2
