"""Exact answers on inconsistent keyspaces: our ``asynq-v*`` variants against Asynq's own code.

Agreeing on keyspaces is not enough: an operation must also *answer* as Asynq does. Two places
where the answer depends on a keyspace Asynq's own operations rarely leave behind:

(a) **bulk deletes** (``delete_all_tasks`` of pending, scheduled, retry, archived, completed and
    of a group) count every id of the index, its hash present or not (Asynq v0.26.0 and v0.24.0;
    quirk ``bulk_delete_counts_every_id``); the reference counts only the tasks it deleted;
(b) **per-task inspector ops** (``delete_task``, ``archive_task``, ``run_task``) on a task
    whose hash its state's index does not hold fail with a script error before any write (quirk
    ``inspector_errors_on_inconsistent_task``): a Lua runtime error when the hash has no
    ``state`` (a ``write_result`` stub) or a group task no ``group``, an error reply when the
    index misses the id (a zombie an archive trim left, a task staged in an aggregation set, an
    unknown state). An id whose hash is gone is not found everywhere. The reference answers
    ``TaskNotFoundError`` and writes nothing.

Each case lays the same keyspace out (real operations, then one raw write that breaks it) in
two databases of one real Redis: one driven by our variant's Lua scripts, one by Asynq's Go
code through the conformance driver. Both must give the same answer — compared as
``harness.conform.answer`` gives it: the value or count, the refusal, or how a script failed —
the one :data:`ASYNQ_ANSWERS` states, and the same keyspace afterwards. Without Go these skip;
under ``KEYSIM_REQUIRE_ASYNQ=1`` they fail. The variant's and the reference's answers are also
checked on fakeredis, where no Go is needed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
import redis
from support import db_url, driver_or_skip

from broker import Broker
from broker.asynq_go import AsynqGoBroker
from broker.servers import RedisServer
from harness.conform import CONFORM_POLICY, answer
from model import keys
from model.clock import VirtualClock
from model.message import TaskMessage
from model.states import TaskState

Q = "default"
VERSIONS = ("v0.26.0", "v0.24.0")
P, S, R = TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRY
AR, C, AG = TaskState.ARCHIVED, TaskState.COMPLETED, TaskState.AGGREGATING
STATES = (P, S, R, AR, C, AG)
GROUP = "g0"
OPS = ("delete_task", "archive_task", "run_task")
#: Either side of the comparison: our Lua scripts, or Asynq's Go code.
Side = Broker | AsynqGoBroker


# --- laying a keyspace out --------------------------------------------------------------------
def msg(task_id: str, **fields: Any) -> TaskMessage:
    return TaskMessage(type="a", payload=task_id.encode(), id=task_id, queue=Q, **fields)


def make_task(b: Side, task_id: str, state: TaskState) -> None:
    """``task_id`` in ``state``, by the operations that put a task there."""
    now = b.clock.seconds
    if state is P:
        b.enqueue(msg(task_id))
    elif state is S:
        b.schedule(msg(task_id), now + 60)
    elif state is AG:
        b.add_to_group(msg(task_id), GROUP)
    elif state is AR:
        b.enqueue(msg(task_id))
        b.archive_task(Q, task_id)
    else:  # retry, completed: through a worker (pending is empty here)
        b.enqueue(msg(task_id, retry=3, retention=600))
        taken = b.dequeue(Q)
        assert taken is not None and taken.id == task_id
        if state is R:
            b.retry(taken, now + 60, "boom", True)
        else:
            b.mark_as_complete(taken)


def index_of(state: TaskState) -> str:
    """The key of the index a task in ``state`` is listed in."""
    return keys.group(Q, GROUP) if state is AG else {
        P: keys.pending(Q), S: keys.scheduled(Q), R: keys.retry(Q), AR: keys.archived(Q),
        C: keys.completed(Q)}[state]


def add_dangling(b: Side, task_id: str, state: TaskState) -> None:
    """List ``task_id`` in ``state``'s index with no hash (what an eviction leaves)."""
    if state is P:
        b.client.lpush(index_of(state), task_id)
    else:
        b.client.zadd(index_of(state), {task_id: b.clock.seconds})


def zombie(state: TaskState) -> Callable[[Side], None]:
    """t1 in ``state`` whose id then leaves its index: the hash stays (an archive trim's zombie
    when ``state`` is archived)."""
    def lay_out(b: Side) -> None:
        make_task(b, "t1", state)
        if state is P:
            b.client.lrem(index_of(state), 0, "t1")
        else:
            b.client.zrem(index_of(state), "t1")
    return lay_out


def stub(b: Side) -> None:
    """A hash holding only ``result`` (what write_result leaves after the task is gone)."""
    b.register(Q)
    b.client.hset(keys.task(Q, "t1"), "result", "r")


def staged(b: Side) -> None:
    """t1 aggregating, staged in an aggregation set (its group was due)."""
    make_task(b, "t1", AG)
    b.clock.advance(CONFORM_POLICY.aggregation_max_delay + 1)
    set_id = str(uuid.UUID(int=1, version=4))
    assert b.aggregation_check(Q, GROUP, set_id) == set_id


def group_task_without_group(b: Side) -> None:
    """t1 aggregating and still in its group, but its hash lost the ``group`` field."""
    make_task(b, "t1", AG)
    b.client.hdel(keys.task(Q, "t1"), "group")


def unknown_state(b: Side) -> None:
    """t1 scheduled, then its hash names a state no index is for."""
    make_task(b, "t1", S)
    b.client.hset(keys.task(Q, "t1"), "state", "bogus")


def dangling(b: Side) -> None:
    """t1 listed as archived, with no hash."""
    b.register(Q)
    add_dangling(b, "t1", AR)


CASES: dict[str, Callable[[Side], None]] = {
    "stub": stub,
    **{f"zombie-{s.value}": zombie(s) for s in STATES},
    "staged": staged,
    "group-task-without-group": group_task_without_group,
    "unknown-state": unknown_state,
    "dangling": dangling,
}

LUA_ERROR, ERROR_REPLY = ("script_error", "lua_error"), ("script_error", "error_reply")
NOT_FOUND, ALREADY = ("not_found", None), ("already", None)


def _asynq_answer(case: str, op: str) -> tuple[str, Any]:
    """What Asynq's DeleteTask/ArchiveTask/RunTask answer for t1 in ``case``. Each script
    checks, in order: no hash (not found), active, the op's own target state (already), then
    takes the id out of the index its state names — failing if it is not there."""
    if case == "dangling":
        return NOT_FOUND
    if case in ("stub", "group-task-without-group"):
        return LUA_ERROR  # the script builds the index key from a missing field
    if (op, case) in (("archive_task", "zombie-archived"), ("run_task", "zombie-pending")):
        return ALREADY
    return ERROR_REPLY


#: (case, op) -> Asynq's answer, the same for v0.26.0 and v0.24.0 (their scripts agree).
ASYNQ_ANSWERS: dict[tuple[str, str], tuple[str, Any]] = {
    (case, op): _asynq_answer(case, op) for case in CASES for op in OPS}


def reference_answer(case: str, op: str) -> tuple[str, Any]:
    """The reference design refuses every such task as not found (already-in-state first)."""
    answer_ = ASYNQ_ANSWERS[(case, op)]
    return answer_ if answer_ == ALREADY else NOT_FOUND


def bulk_case(b: Side, state: TaskState) -> None:
    """``state``'s index holds t1 (a task) and d1 (an id without a hash)."""
    make_task(b, "t1", state)
    add_dangling(b, "d1", state)


def bulk_delete(b: Side, state: TaskState) -> tuple[str, Any]:
    return answer(b.delete_all_tasks, Q, state, GROUP if state is AG else None)


# --- on Asynq's own code and on our variant, side by side ---------------------------------------


@pytest.fixture(params=VERSIONS)
def pair(request: pytest.FixtureRequest, asynq_server: RedisServer
         ) -> Iterator[tuple[Broker, AsynqGoBroker]]:
    """Our ``asynq-<version>`` variant and Asynq ``version`` on one clock, empty databases."""
    version = str(request.param)
    server = asynq_server
    driver_or_skip(version)
    clock = VirtualClock()
    client = redis.Redis.from_url(db_url(server, f"ours:{version}"))
    client.flushdb()
    with AsynqGoBroker(db_url(server, f"asynq:{version}"), version, CONFORM_POLICY, clock) as go:
        go.reset()
        yield Broker(client, AsynqGoBroker.variant_for(version), CONFORM_POLICY, clock), go
        client.flushdb()
        go.client.flushdb()
    client.close()


def lay_out_both(ours: Broker, go: AsynqGoBroker, lay_out: Callable[[Side], None]
                 ) -> None:
    """The same keyspace on both sides, each laid out from the same virtual time."""
    start = go.clock.now_ns
    lay_out(go)
    end, go.clock.now_ns = go.clock.now_ns, start
    lay_out(ours)
    assert ours.clock.now_ns == end
    _same_keyspace(ours, go)


def _same_keyspace(ours: Broker, go: AsynqGoBroker) -> None:
    mine, theirs = ours.snapshot(Q), go.snapshot(Q)
    assert mine == theirs, "\n" + mine.diff(theirs, "ours", "asynq")


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("case", CASES)
def test_per_task_op_answers_as_asynq(pair: tuple[Broker, AsynqGoBroker], case: str,
                                      op: str) -> None:
    """(b): the same inconsistent task, the same answer (a script error of the same kind, or
    the same refusal) from Asynq and from our variant, and neither writes anything."""
    ours, go = pair
    lay_out_both(ours, go, CASES[case])
    before = go.snapshot(Q)
    theirs = answer(getattr(go, op), Q, "t1")
    assert theirs == ASYNQ_ANSWERS[(case, op)]
    assert answer(getattr(ours, op), Q, "t1") == theirs
    assert go.snapshot(Q) == before
    _same_keyspace(ours, go)


@pytest.mark.parametrize("state", STATES, ids=lambda s: s.value)
def test_bulk_delete_counts_as_asynq(pair: tuple[Broker, AsynqGoBroker], state: TaskState
                                     ) -> None:
    """(a): Asynq counts the dangling id too; so does our variant; both leave nothing."""
    ours, go = pair
    lay_out_both(ours, go, lambda b: bulk_case(b, state))
    theirs = bulk_delete(go, state)
    assert theirs == ("ok", 2)
    assert bulk_delete(ours, state) == theirs
    _same_keyspace(ours, go)
    assert go.snapshot(Q).get(index_of(state)) is None


def test_dangling_id_alone_is_counted_by_asynq(pair: tuple[Broker, AsynqGoBroker]) -> None:
    """pending [d1] with no t:d1: Asynq's DeleteAllPendingTasks answers 1, as our variant."""
    ours, go = pair

    def lay_out(b: Side) -> None:
        b.register(Q)
        add_dangling(b, "d1", P)
    lay_out_both(ours, go, lay_out)
    assert bulk_delete(go, P) == ("ok", 1)
    assert bulk_delete(ours, P) == ("ok", 1)
    _same_keyspace(ours, go)


# --- our variants and the reference alone (no Go needed) ----------------------------------------
def _broker(variant: str) -> Broker:
    return Broker(fakeredis.FakeRedis(), variant, CONFORM_POLICY, VirtualClock())


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("variant", ["asynq-v0.26.0", "asynq-v0.24.0", "reference"])
def test_per_task_answers_without_go(variant: str, case: str, op: str) -> None:
    """Our variants answer :data:`ASYNQ_ANSWERS`; the reference its own answers. No writes."""
    b = _broker(variant)
    CASES[case](b)
    before = b.snapshot(Q)
    want = reference_answer(case, op) if variant == "reference" else ASYNQ_ANSWERS[(case, op)]
    assert answer(getattr(b, op), Q, "t1") == want
    assert b.snapshot(Q) == before


@pytest.mark.parametrize("state", STATES, ids=lambda s: s.value)
@pytest.mark.parametrize(("variant", "count"),
                         [("asynq-v0.26.0", 2), ("asynq-v0.24.0", 2), ("reference", 1)])
def test_bulk_delete_counts_without_go(variant: str, count: int, state: TaskState) -> None:
    """Asynq's variants count the dangling id; the reference counts the one task it deleted.
    Both delete the same keys."""
    b = _broker(variant)
    bulk_case(b, state)
    assert bulk_delete(b, state) == ("ok", count)
    assert b.snapshot(Q).get(index_of(state)) is None
    assert b.snapshot(Q).task_hash("t1") is None
