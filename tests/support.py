"""Helpers several test modules share: the expected-keyspace builders, the test message,
expectations keyed by quirk, broker workloads that run every script, and the plumbing of the
tests that run Asynq's own code through the Go driver.

Test modules import them from here (``from support import ...``; pytest puts ``tests/`` on the
import path), never from one another.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

from broker import Broker
from broker.asynq_go import DriverUnavailable, build_driver, require_asynq
from broker.servers import PEXPIRETIME_VERSION, RedisServer, ServerUnavailable, parse_version, start_server
from broker.variants import Quirk
from broker.variants import variant as variant_named
from model import keys
from model.message import TaskMessage
from model.snapshot import FieldValue, KeyEntry, KeyspaceSnapshot, KeyType, zset_value
from model.states import TaskState

Q = "q"
ASYNQ = "asynq-v0.26.0"
VARIANTS = ["reference", ASYNQ]


# --- expected keyspaces -------------------------------------------------------------------------
def thash(queue: str, task_id: str, **fields: FieldValue) -> KeyEntry:
    """The task hash of ``task_id`` with exactly ``fields``."""
    return KeyEntry(keys.task(queue, task_id), KeyType.HASH, dict(fields))


def zset(key: str, members: dict[str, int]) -> KeyEntry:
    return KeyEntry(key, KeyType.ZSET, zset_value(members.items()))


def lst(key: str, *items: str) -> KeyEntry:
    return KeyEntry(key, KeyType.LIST, tuple(items))


def sset(key: str, *members: str) -> KeyEntry:
    return KeyEntry(key, KeyType.SET, frozenset(members))


def string(key: str, value: str | int, expire_at_ms: int | None = None) -> KeyEntry:
    return KeyEntry(key, KeyType.STRING, str(value), expire_at_ms)


def expected(b: Broker, queue: str, *entries: KeyEntry, registered: bool = True
             ) -> KeyspaceSnapshot:
    """A snapshot of ``queue`` holding exactly ``entries``, as of the broker's clock."""
    return KeyspaceSnapshot(queue, b.now_ms, {e.key: e for e in entries}, registered=registered)


def assert_keyspace(b: Broker, queue: str, *entries: KeyEntry, registered: bool = True) -> None:
    """The queue's whole keyspace is exactly ``entries`` (diff printed on failure)."""
    want = expected(b, queue, *entries, registered=registered)
    got = b.snapshot(queue)
    assert got == want, "\n" + want.diff(got)


def message(task_id: str, queue: str = Q, **kw: Any) -> TaskMessage:
    """A message with a payload unique to the id (so each id has its own lock key)."""
    fields: dict[str, Any] = {"payload": task_id.encode(), **kw}
    return TaskMessage(type="email", id=task_id, queue=queue, **fields)


def lock_key(task_id: str, queue: str = Q) -> str:
    return keys.unique(queue, "email", task_id.encode())


# --- expectations that differ between variants ---------------------------------------------------
# A test whose expectation depends on the variant reads it from a table keyed by the quirk that
# makes the difference (None: the reference design); a variant with none of the table's quirks
# expects what the reference does.
Expected = TypeVar("Expected")


def expectation(variant: str, table: Mapping[Quirk | None, Expected]) -> Expected:
    """The entry of ``table`` for the one quirk of ``variant`` it names, else its None entry."""
    quirks = [q for q in table if q is not None and variant_named(variant).has(q)]
    assert len(quirks) <= 1, f"{variant}: {quirks} each change this expectation"
    return table[quirks[0] if quirks else None]


#: An expected error and the pattern its message matches (None: any), or None for no error.
Raised = tuple[type[Exception], str | None] | None


def raises(error: Raised) -> AbstractContextManager[object]:
    """``pytest.raises`` for an expected error; nothing when None."""
    return pytest.raises(error[0], match=error[1]) if error else nullcontext()


def assert_snapshot(b: Broker, want: KeyspaceSnapshot) -> None:
    """The queue's whole keyspace is ``want`` (diff printed on failure)."""
    got = b.snapshot(Q)
    assert got == want, "\n" + want.diff(got)


# --- workloads that call every script -----------------------------------------------------------
def server_workload(b: Broker, q: str) -> None:
    """Client and server operations: every processor outcome and every background pass."""
    b.enqueue(message("e1", q))
    b.enqueue_unique(message("e2", q), 60)
    b.enqueue(message("e3", q))
    b.schedule(message("s1", q), b.now_s + 10)
    b.schedule_unique(message("s2", q), b.now_s + 10, 60)
    b.add_to_group(message("g1", q), "grp")
    b.add_to_group_unique(message("g2", q), "grp", 60)
    outcomes = [b.done, b.mark_as_complete, b.requeue]
    for outcome in outcomes:
        task = b.dequeue(q)
        assert task is not None
        outcome(task)
    task = b.dequeue(q)
    assert task is not None
    b.retry(task, b.now_s + 5, "boom")  # the requeued task, dequeued again
    for task_id in ("e4", "e5"):
        b.enqueue(message(task_id, q))
    archived, leased = b.dequeue(q), b.dequeue(q)
    assert archived is not None and leased is not None
    b.archive(archived, "fatal")
    b.extend_lease(q, leased.id)
    b.write_result(q, leased.id, b"result")
    b.pause(q)
    b.unpause(q)
    b.clock.advance(200)
    b.list_lease_expired(q, b.now_s)
    b.recover(q)
    b.forward_if_ready(q)
    b.delete_expired_completed_tasks(q)
    b.delete_expired_archived_tasks(q)
    set_id = b.aggregation_check(q, "grp")
    assert set_id is not None
    b.read_aggregation_set(q, "grp", set_id)
    b.delete_aggregation_set(q, "grp", set_id)
    b.add_to_group(message("g3", q), "grp")
    b.clock.advance(100)
    assert b.aggregation_check(q, "grp") is not None
    b.clock.advance(200)
    b.reclaim_stale_aggregation_sets(q)


def inspector_workload(b: Broker, q: str) -> None:
    """Every inspector operation, on every state each bulk op accepts."""
    for i in range(4):
        b.schedule(message(f"i{i}", q), b.now_s + 1000)
    b.delete_task(q, "i0")
    b.archive_task(q, "i1")
    b.run_task(q, "i1")
    b.archive_all_tasks(q, TaskState.PENDING)
    b.run_all_tasks(q, TaskState.ARCHIVED)
    for state in (TaskState.SCHEDULED, TaskState.RETRY, TaskState.ARCHIVED, TaskState.PENDING):
        b.delete_all_tasks(q, state)
        if state is not TaskState.PENDING:
            b.run_all_tasks(q, state)
        if state is not TaskState.ARCHIVED:
            b.archive_all_tasks(q, state)
    b.add_to_group(message("x1", q), "g")
    b.archive_all_tasks(q, TaskState.AGGREGATING, "g")
    b.run_all_tasks(q, TaskState.ARCHIVED)
    b.delete_all_tasks(q, TaskState.COMPLETED)
    for kind in ("run_all_tasks", "delete_all_tasks"):
        b.add_to_group(message(f"{kind}-t", q), "g")
        getattr(b, kind)(q, TaskState.AGGREGATING, "g")
    b.remove_queue(q, force=True)
    b.register(q)  # Asynq's inspector refuses an unregistered queue (inspector_requires_queue)
    b.remove_queue(q)


# --- Asynq's own code through the Go driver ------------------------------------------------------
# A missing Go or a failed driver build skips these tests with the reason and how to enable them
# — unless KEYSIM_REQUIRE_ASYNQ=1 (CI), which turns the skip into a failure. They run on a
# private real Redis (never REDIS_URL: they flush several databases of it).

#: Databases of the private server: ours and Asynq's per version, and the findings' one.
DATABASES = {"ours:v0.26.0": 1, "asynq:v0.26.0": 2, "ours:v0.24.0": 3, "asynq:v0.24.0": 4,
             "findings": 5, "unit": 6}


def driver_or_skip(version: str) -> Path:
    """The built driver for ``version``; skip (or fail under KEYSIM_REQUIRE_ASYNQ=1) without."""
    try:
        return build_driver(version)
    except DriverUnavailable as err:
        if require_asynq():
            pytest.fail(f"KEYSIM_REQUIRE_ASYNQ=1 but the Asynq driver is unavailable: {err}")
        pytest.skip(str(err))


def go_backend_or_skip(server: RedisServer) -> RedisServer:
    """``server``, or a skip that says why: the Go backend's time normalisation tells its own
    deadlines from the driver's by reading them exactly (PEXPIRETIME, Redis >= 7.0), so it does
    not run on Redis 6.2 (docs/servers.md), whatever KEYSIM_REQUIRE_ASYNQ says."""
    if parse_version(server.version) < PEXPIRETIME_VERSION:
        pytest.skip(f"Asynq's Go backend needs Redis >= 7.0 (PEXPIRETIME); this run's server is "
                    f"{server.version}")
    return server


def needs_redis_7(server: RedisServer, what: str) -> None:
    """Skip, saying why, a test of something Redis 6.2 does not have (``what``: EVAL_RO, an ACL
    rule naming PEXPIRETIME): there is nothing of it to run there. The audit's own path on 6.2
    (pipeline reads, deadlines from PTTL) is tested by test_audit_reads's ``redis62`` cases."""
    if parse_version(server.version) < PEXPIRETIME_VERSION:
        pytest.skip(f"Redis {server.version} has no {what}")


def private_server() -> RedisServer:
    """A launched real Redis (REDIS_URL ignored); skip or fail when none can be started."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    try:
        return start_server(env)
    except ServerUnavailable as err:
        if require_asynq() or os.environ.get("KEYSIM_REQUIRE_REDIS", "") not in ("", "0"):
            pytest.fail(f"no real Redis for the Asynq tests: {err}")
        pytest.skip(f"no real Redis server ({err})")


def db_url(server: RedisServer, name: str) -> str:
    """URL of the named database on ``server``."""
    parts = urlsplit(server.url)
    return urlunsplit(parts._replace(path=f"/{DATABASES[name]}"))


def conform_examples() -> int:
    """How many generated sequences each differential test runs (200 under
    ``KEYSIM_REQUIRE_ASYNQ=1``, else 30; ``KEYSIM_CONFORM_EXAMPLES`` overrides)."""
    default = 200 if require_asynq() else 30
    return int(os.environ.get("KEYSIM_CONFORM_EXAMPLES", default))
