"""`keysim audit` on a keyspace written by real Asynq v0.26.0 (its Go code, via the driver).

The leaks are produced by Asynq's own ``rdb.RDB``; the audit (read-only) must report exactly
them and nothing about the healthy task next to them.
"""

from __future__ import annotations

from support import db_url

from audit import AuditOptions, audit, connect
from broker.asynq_go import AsynqGoBroker
from broker.servers import RedisServer
from model import keys
from model.message import TaskMessage
from model.policy import ASYNQ_POLICY
from model.states import TaskState

Q = "default"


def msg(task_id: str) -> TaskMessage:
    return TaskMessage(type="email", payload=task_id.encode(), id=task_id, queue=Q)


def test_audit_reports_exactly_the_leaks_real_asynq_made(go_broker: AsynqGoBroker,
                                                          asynq_server: RedisServer) -> None:
    b = go_broker
    b.enqueue(msg("live"))  # healthy, must not be reported
    b.write_result(Q, "ghost", b"42")  # BZ-18: a hash holding only `result`
    b.enqueue_unique(msg("u1"), 3600)
    b.delete_task(Q, "live")
    b.delete_all_tasks(Q, TaskState.PENDING)  # BZ-4: u1's lock outlives it
    b.enqueue(msg("live"))
    b.add_to_group(msg("g1"), "grp")
    b.clock.advance(ASYNQ_POLICY.aggregation_grace)
    assert b.aggregation_check(Q, "grp") is not None
    b.clock.advance(ASYNQ_POLICY.aggregation_timeout + 1)
    b.reclaim_stale_aggregation_sets(Q)  # BZ-10: g:grp is back, "grp" not in groups

    client = connect(db_url(asynq_server, "findings"))
    try:
        result = audit(client, AuditOptions(now_ms=b.clock.now_ns // 10**6))
    finally:
        client.close()
    found = {(f.invariant, f.kind, f.key) for f in result.findings}
    assert found == {
        ("I1", "result-only hash", keys.task(Q, "ghost")),
        ("I6", "orphan lock", keys.unique(Q, "email", b"u1")),
        ("I7", "orphan group", keys.group(Q, "grp")),
    }
    assert result.exit_code == 1
