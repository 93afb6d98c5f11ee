"""Every defect docs/findings.md lists, reproduced on real Asynq v0.26.0 (its Go ``rdb.RDB``,
through :class:`broker.asynq_go.AsynqGoBroker`), each failing the leak invariants as described.

Each test is a minimal reproducer: it drives Asynq's own code, then asserts the exact
violation (:func:`model.invariants.check_all`) and the leaked keys.
"""

from __future__ import annotations

import uuid

import pytest

from broker import Broker
from broker.asynq_go import AsynqGoBroker
from model import keys
from model.errors import QueueNotFoundError, ScriptError, TaskIdConflictError
from model.invariants import Violation, check_all
from model.message import TaskMessage
from model.policy import ASYNQ_POLICY, DAY
from model.states import TaskState

Q = "default"


def msg(task_id: str, payload: bytes | None = b"p", **fields: object) -> TaskMessage:
    return TaskMessage(type="email", payload=payload, id=task_id, queue=Q, **fields)  # type: ignore[arg-type]


def violations(b: AsynqGoBroker, *, strict_locks: bool = False) -> list[Violation]:
    return check_all(b.snapshot(Q), ASYNQ_POLICY, strict_locks=strict_locks)


def found(vs: list[Violation], invariant: str, text: str) -> list[Violation]:
    """The violations of ``invariant`` whose message contains ``text``."""
    return [v for v in vs if v.invariant == invariant and text in v.message]


def test_f1_inspector_archive_trim_leaves_zombie_hash(go_broker: AsynqGoBroker) -> None:
    """BZ-2: archive_task's 90-day trim removes the old id from `archived` but keeps its hash."""
    b = go_broker
    b.enqueue(msg("old"))
    b.archive_task(Q, "old")
    b.clock.advance(91 * DAY)
    b.enqueue(msg("new"))
    b.archive_task(Q, "new")
    snap = b.snapshot(Q)
    assert snap.members(keys.archived(Q)) == ("new",)
    assert snap.task_hash("old") is not None
    assert found(violations(b), "I1", "zombie: t:old is archived but in no index")
    with pytest.raises(ScriptError, match="not found in zset"):  # issue #885
        b.delete_task(Q, "old")
    assert b.snapshot(Q).task_hash("old") is not None


def test_f2_delete_all_pending_keeps_unique_lock(go_broker: AsynqGoBroker) -> None:
    """BZ-4: DeleteAllPendingTasks deletes the hash but not its unique lock."""
    b = go_broker
    b.enqueue_unique(msg("t1"), ttl=3600)
    assert b.delete_all_tasks(Q, TaskState.PENDING) == 1
    lock = keys.unique(Q, "email", b"p")
    assert b.snapshot(Q).get(lock) is not None
    assert found(violations(b, strict_locks=True), "I6", "held by 't1', which does not exist")


def test_f3_group_unique_lock_never_released(go_broker: AsynqGoBroker) -> None:
    """BZ-4 (groups): AddToGroupUnique writes no unique_key, so no path releases the lock —
    not even deleting the aggregation set after the aggregated task was enqueued."""
    b = go_broker
    b.add_to_group_unique(msg("t1"), "g", ttl=3600)
    assert "unique_key" not in (b.snapshot(Q).task_hash("t1") or {})
    b.clock.advance(ASYNQ_POLICY.aggregation_grace)
    set_id = b.aggregation_check(Q, "g")
    assert set_id is not None
    b.delete_aggregation_set(Q, "g", set_id)
    assert b.snapshot(Q).task_ids() == frozenset()
    assert found(violations(b, strict_locks=True), "I6", "held by 't1', which does not exist")


def test_f4_unique_lock_taken_on_id_conflict(go_broker: AsynqGoBroker) -> None:
    """BZ-5: EnqueueUnique sets the lock before the id check; a conflict leaves the lock."""
    b = go_broker
    b.enqueue(msg("t1", payload=b"a"))
    with pytest.raises(TaskIdConflictError):
        b.enqueue_unique(msg("t1", payload=b"b"), ttl=3600)
    lock = keys.unique(Q, "email", b"b")
    entry = b.snapshot(Q).get(lock)
    assert entry is not None and entry.value == "t1"
    assert found(violations(b, strict_locks=True), "I6", "whose unique_key is (unset)")


def test_f5_reclaim_orphans_group(go_broker: AsynqGoBroker) -> None:
    """BZ-10: AggregationCheck emptied the group (SREM groups); reclaim puts the tasks back
    into g:<group> without SADD groups, so the aggregator never sees them again."""
    b = go_broker
    b.add_to_group(msg("t1"), "g")
    b.clock.advance(ASYNQ_POLICY.aggregation_grace)
    assert b.aggregation_check(Q, "g") is not None
    b.clock.advance(ASYNQ_POLICY.aggregation_timeout)
    assert b.reclaim_stale_aggregation_sets(Q) == 1
    assert b.snapshot(Q).members(keys.group(Q, "g")) == ("t1",)
    assert found(violations(b), "I7", "orphan group: g:g holds 1 task(s)")


def test_f6_forward_orphans_group(go_broker: AsynqGoBroker) -> None:
    """BZ-11: a grouped task run by the inspector keeps its group field; after a retry the
    forwarder adds it to g:<group> without SADD groups."""
    b = go_broker
    b.add_to_group(msg("t1"), "g")
    b.run_task(Q, "t1")
    taken = b.dequeue(Q)
    assert taken is not None
    b.retry(taken, b.now_s, "boom")
    assert b.forward_if_ready(Q) == 1
    assert found(violations(b), "I7", "orphan group: g:g holds 1 task(s)")


def test_f7_remove_queue_leaves_keys(go_broker: AsynqGoBroker) -> None:
    """BZ-12: RemoveQueue(force) deletes five indexes and lease only; completed tasks, groups,
    counters and the paused flag survive in an unregistered queue."""
    b = go_broker
    b.enqueue(msg("t1", retention=3600))
    taken = b.dequeue(Q)
    assert taken is not None
    b.mark_as_complete(taken)
    b.add_to_group(msg("t2"), "g")
    b.pause(Q)
    b.remove_queue(Q, force=True)
    snap = b.snapshot(Q)
    assert not snap.registered
    left = {keys.completed(Q), keys.task(Q, "t1"), keys.task(Q, "t2"), keys.group(Q, "g"),
            keys.groups(Q), keys.paused(Q), keys.processed_total(Q)}
    assert left <= set(snap.entries)
    assert found(violations(b), "I12", "")
    # ... and the inspector cannot reach them any more: the queue is not registered.
    with pytest.raises(QueueNotFoundError):
        b.delete_all_tasks(Q, TaskState.COMPLETED)


def test_f8_old_archive_unpack_overflow(go_broker: AsynqGoBroker) -> None:
    """BZ-15: with >= 8000 archived ids older than 90 days, Archive DELs their hashes and then
    fails in ZREM(unpack): 8000 dangling ids, and the task being archived stuck (removed from
    active and lease, hash still active). Every later Archive fails the same way."""
    b = go_broker
    # Setup: 8000 pending tasks written by our asynq-v0.26.0 variant (byte-identical layout, as
    # the differential test shows), archived by Asynq's own ArchiveAllPendingTasks.
    ours = Broker(b.client, "asynq-v0.26.0", clock=b.clock)
    pipe_ids = [f"a{i}" for i in range(8000)]
    for task_id in pipe_ids:
        ours.enqueue(msg(task_id))
    assert b.archive_all_tasks(Q, TaskState.PENDING) == 8000
    b.clock.advance(91 * DAY)
    b.enqueue(msg("t1"))
    taken = b.dequeue(Q)
    assert taken is not None
    with pytest.raises(ScriptError, match="too many results to unpack"):
        b.archive(taken, "boom")
    snap = b.snapshot(Q)
    assert len(snap.members(keys.archived(Q))) == 8001
    assert snap.task_ids() == {"t1"}
    vs = violations(b)
    assert len(found(vs, "I2", "dangling")) >= 8000
    assert found(vs, "I1", "t:t1 is active but")
    b.enqueue(msg("t2"))
    second = b.dequeue(Q)
    assert second is not None
    with pytest.raises(ScriptError, match="too many results to unpack"):
        b.archive(second, "boom")


def test_f9_stub_hash_from_dangling_id(go_broker: AsynqGoBroker) -> None:
    """BZ-17: Dequeue of an id whose hash is gone (here: evicted) HSETs a stub {state: active}
    and answers "queue empty", so the id stays in active and lease with a msg-less hash."""
    b = go_broker
    b.enqueue(msg("t1"))
    b.client.delete(keys.task(Q, "t1"))  # the only raw write: an eviction (BZ-7 source)
    assert b.dequeue(Q) is None
    snap = b.snapshot(Q)
    assert snap.task_hash("t1") == {"state": "active"}
    assert snap.members(keys.active(Q)) == ("t1",)
    assert found(violations(b), "I1", "t:t1")
    assert b.list_lease_expired(Q, b.now_s + 3600) == []  # the recoverer skips it forever


def test_f10_write_result_recreates_deleted_task(go_broker: AsynqGoBroker) -> None:
    """BZ-18: WriteResult after Done re-creates t:<id> holding only `result`."""
    b = go_broker
    b.enqueue(msg("t1"))
    taken = b.dequeue(Q)
    assert taken is not None
    b.done(taken)
    assert b.write_result(Q, "t1", b"late") == 4
    assert b.snapshot(Q).task_hash("t1") == {"result": "late"}
    assert found(violations(b), "I1", "t:t1")
    # DeleteTask cannot remove it: the script fails on the missing state (a Lua error, before
    # any write).
    with pytest.raises(ScriptError, match="attempt to concatenate"):
        b.delete_task(Q, "t1")
    assert b.snapshot(Q).task_hash("t1") == {"result": "late"}


def test_findings_use_asynq_set_ids(go_broker: AsynqGoBroker) -> None:
    """Asynq names aggregation sets with random UUIDs; any other set id is refused up front."""
    with pytest.raises(ValueError, match="set_id must be a canonical random UUID"):
        go_broker.aggregation_check(Q, "g", uuid.uuid4().hex)
