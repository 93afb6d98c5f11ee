"""The audit's fast paths give exactly the findings of the full checks.

Task hashes are read by one EVAL_RO per batch (``reads="script"``) or by a pipeline (``"pipeline"``,
what a read-only ACL user without ``+eval_ro`` gets); plain tasks skip the snapshot checks. One
keyspace holds plain tasks of every state next to every kind of per-task anomaly, so both paths
and both read modes are exercised on the same keys and must agree, exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.typing import EncodableT, FieldT
from support import needs_redis_7

from audit import AuditOptions, AuditResult, WriteRefused, audit, connect, readonly
from audit.idindex import IdIndex
from audit.taskread import peek_message
from broker.codec import decode_message, encode_message
from broker.servers import RedisServer
from model import keys
from model.message import TaskMessage

Q, OTHER, DEAD = "default", "other", "dead"
NOW_MS = 10**12


def raw_msg(task_id: str, queue: str = Q, **kw: Any) -> bytes:
    return encode_message(TaskMessage(type="t", payload=b"x", id=task_id, queue=queue, **kw))


def t(task_id: str, queue: str = Q) -> str:
    return keys.task(queue, task_id)


@pytest.fixture
def raw(real_client: redis.Redis) -> redis.Redis:
    return real_client


def seed(r: redis.Redis) -> None:
    """Plain tasks in every state, healthy tasks that are not plain, and each per-task anomaly."""
    r.sadd(keys.ALL_QUEUES, Q, OTHER)
    for i in range(12):  # plain pending; every other one with pending_since (oldest: p1)
        fields: dict[FieldT, EncodableT] = {"msg": raw_msg(f"p{i}"), "state": "pending"}
        if i % 2:
            fields["pending_since"] = str((1_700_000_000 + i) * 10**9)
        r.hset(t(f"p{i}"), mapping=fields)
        r.lpush(keys.pending(Q), f"p{i}")
    for state, index in (("scheduled", keys.scheduled), ("retry", keys.retry),
                         ("archived", keys.archived), ("completed", keys.completed)):
        for i in range(4):
            tid = f"{state[:2]}{i}"
            r.hset(t(tid), mapping={"msg": raw_msg(tid, last_failed_at=900 - i, completed_at=800 + i),
                                    "state": state})
            r.zadd(index(Q), {tid: 100 + i})
    r.hset(t("a1"), mapping={"msg": raw_msg("a1"), "state": "active"})  # active + lease: not plain
    r.lpush(keys.active(Q), "a1")
    r.zadd(keys.lease(Q), {"a1": 10**10})
    for tid, group_key in (("g1", keys.group(Q, "grp")), ("gs", keys.group_set(Q, "grp", "s1"))):
        r.hset(t(tid), mapping={"msg": raw_msg(tid), "state": "aggregating", "group": "grp"})
        r.zadd(group_key, {tid: 5})
    r.sadd(keys.groups(Q), "grp")
    r.zadd(keys.aggregation_sets(Q), {keys.group_set(Q, "grp", "s1"): 10**10})
    # anomalies, one per task
    hashes = {"two": "pending", "dup": "pending", "mis": "pending", "zom": "retry", "ttl": "pending",
              "wid": "pending", "wq": "pending", "bogus": "bogus", "del": "deleted"}
    messages = {"wid": raw_msg("other-id"), "wq": raw_msg("wq", OTHER)}
    for tid, state in hashes.items():
        r.hset(t(tid), mapping={"msg": messages.get(tid, raw_msg(tid)), "state": state})
    r.hset(t("bad"), mapping={"msg": b"\xffgarbage", "state": "pending"})
    r.lpush(keys.pending(Q), "two", "dup", "dup", "ttl", "bad", "wid", "wq", "bogus", "del", "ghost")
    r.zadd(keys.scheduled(Q), {"two": 1})
    r.zadd(keys.archived(Q), {"mis": 3})
    r.pexpire(t("ttl"), 10**9)
    r.hset(t("stub"), mapping={"state": "pending", "x": "1"})
    r.hset(t("res"), mapping={"result": "42"})
    r.set(t("str"), "v")
    r.lpush(keys.active(Q), "noLease")
    r.hset(t("noLease"), mapping={"msg": raw_msg("noLease"), "state": "active"})
    r.set(keys.unique(Q, "t", b"x"), "p1", ex=100)  # p1 exists but has no unique_key
    r.set(keys.processed_total(Q), "5")
    r.set(keys.failed_daily(Q, "2024-01-01"), "3")
    r.hset(t("o1", OTHER), mapping={"msg": raw_msg("o1", OTHER), "state": "scheduled"})
    r.zadd(keys.scheduled(OTHER), {"o1": 1})
    r.hset(t("d1", DEAD), mapping={"msg": raw_msg("d1", DEAD), "state": "completed"})
    r.zadd(keys.completed(DEAD), {"d1": 1})


EXPECTED = {
    ("I1", "misplaced", t("mis"), False), ("I1", "misplaced", t("bad"), False),
    ("I1", "misplaced", t("wid"), False), ("I1", "misplaced", t("wq"), False),
    ("I1", "misplaced", t("bogus"), False), ("I1", "misplaced", t("del"), False),
    ("I1", "zombie", t("zom"), True), ("I1", "stub", t("stub"), True),
    ("I1", "zombie", t("stub"), True),  # state pending, in no index: a stub and a zombie
    ("I1", "result-only hash", t("res"), True),
    ("I4", "duplicate", t("two"), False), ("I4", "duplicate", keys.pending(Q), False),
    ("I11", "ttl on task data", t("ttl"), False), ("I12", "bad key", t("str"), False),
    ("I2", "dangling id", keys.pending(Q), False), ("I3", "active without lease", keys.active(Q), False),
    ("I6", "orphan lock", keys.unique(Q, "t", b"x"), True),
    ("I13", "counter without ttl", keys.failed_daily(Q, "2024-01-01"), True),
    ("I12", "unregistered leftover", t("d1", DEAD), True),
    ("I12", "unregistered leftover", keys.completed(DEAD), True),
    ("I12", "unregistered queue", keys.ALL_QUEUES, False),
}


def run(url: str, **kw: Any) -> AuditResult:
    client = connect(url)
    try:
        return audit(client, AuditOptions(now_ms=NOW_MS, **kw))
    finally:
        client.close()


def found(result: AuditResult) -> set[tuple[str, str, str, bool]]:
    return {(f.invariant, f.kind, f.key, f.leaked) for f in result.findings}


def comparable(result: AuditResult) -> dict[str, Any]:
    """Everything the audit reports, minus timing, server facts and the read mode."""
    doc = dataclasses.asdict(result)
    for name in ("seconds", "used_memory", "reads"):
        doc.pop(name)
    return doc


def test_script_and_pipeline_reads_report_exactly_the_same(real_server: RedisServer,
                                                           raw: redis.Redis) -> None:
    needs_redis_7(real_server, "EVAL_RO")
    seed(raw)
    results = {(reads, chunk): run(real_server.url, reads=reads, chunk=chunk, scan_count=chunk)
               for reads in ("script", "pipeline") for chunk in (1, 7, 1000)}
    first = results["script", 1000]
    assert found(first) == EXPECTED
    assert {r.reads for r in results.values()} == {"script", "pipeline"}
    for (reads, chunk), result in results.items():
        assert comparable(result) == comparable(results["script", chunk]), (reads, chunk)  # in order
        assert sorted(map(repr, result.findings)) == sorted(map(repr, first.findings))  # chunk: order
    default = next(q for q in first.queues if q.queue == Q)
    assert default.tasks_by_state == {"pending": 19, "scheduled": 4, "retry": 5, "archived": 4,
                                      "completed": 4, "active": 2, "aggregating": 2, "bogus": 1,
                                      "deleted": 1, "stub": 2, "invalid": 1}
    assert default.oldest == {"pending": ("p1", 1_700_000_001), "retry": ("re3", 897),
                              "archived": ("ar3", 897), "completed": ("co0", 800)}


def test_read_only_acl_user_falls_back_to_the_pipeline(real_server: RedisServer,
                                                        raw: redis.Redis) -> None:
    needs_redis_7(real_server, "EVAL_RO")
    seed(raw)
    raw.acl_setuser("reader", reset=True, enabled=True, passwords=["+pw"], keys=["*"],
                    reset_channels=True, categories=["+@read", "-@write", "-@dangerous"],
                    commands=["+multi", "+exec", "+select", "+ping"])
    raw.acl_setuser("scripter", reset=True, enabled=True, passwords=["+pw"], keys=["*"],
                    reset_channels=True, categories=["+@read", "-@write", "-@dangerous"],
                    commands=["+multi", "+exec", "+select", "+ping", "+eval_ro"])
    try:
        as_reader = real_server.url.replace("redis://", "redis://reader:pw@", 1)
        as_scripter = real_server.url.replace("redis://", "redis://scripter:pw@", 1)
        fallback, scripted = run(as_reader), run(as_scripter)
        assert (fallback.reads, scripted.reads) == ("pipeline", "script")
        assert found(fallback) == found(scripted) == EXPECTED
        with pytest.raises(redis.exceptions.NoPermissionError):
            run(as_reader, reads="script")
    finally:
        raw.acl_deluser("reader", "scripter")


def test_a_script_cannot_write_even_when_sent(real_server: RedisServer, raw: redis.Redis) -> None:
    """EVAL_RO is allowed because Redis itself refuses a write inside it."""
    needs_redis_7(real_server, "EVAL_RO")
    client = connect(real_server.url)
    try:
        with pytest.raises(redis.exceptions.ResponseError, match=r"(?i)write commands are not allowed"):
            client.execute_command(  # type: ignore[no-untyped-call]
                "EVAL_RO", "return redis.call('SET', KEYS[1], 'x')", 1, "k")
    finally:
        client.close()
    assert raw.dbsize() == 0


@pytest.mark.parametrize("command", [("EVAL", "return 1", 0), ("EVALSHA", "ab", 0), ("FCALL", "f", 0),
                                     ("FCALL_RO", "f", 0), ("SCRIPT", "LOAD", "return 1"),
                                     ("FUNCTION", "LOAD", "x")])
def test_guard_allows_eval_ro_only(command: tuple[Any, ...]) -> None:
    readonly.check_command(("EVAL_RO", "return 1", 0))
    with pytest.raises(WriteRefused, match=f"refused {command[0]}"):
        readonly.check_command(command)


def test_guard_remembers_only_what_it_allowed() -> None:
    for allowed in [(b"HGET", b"k", b"f"), (b"MEMORY", b"USAGE", b"k"), ("MEMORY USAGE", "k")]:
        readonly.check_command(allowed)
        readonly.check_command(allowed)  # now from the remembered spellings
    for refused in [(b"MEMORY", b"PURGE"), ("MEMORY PURGE",), (b"DEL", b"k"), (b"HSET", b"k", b"f", b"v")]:
        with pytest.raises(WriteRefused):
            readonly.check_command(refused)


messages = st.builds(
    TaskMessage, type=st.text(max_size=5), payload=st.none() | st.binary(max_size=5),
    id=st.text(max_size=8), queue=st.text(max_size=8), last_failed_at=st.integers(0, 2**40),
    completed_at=st.integers(0, 2**40),
    headers=st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2).map(
        lambda d: tuple(sorted(d.items()))))


@settings(max_examples=200, deadline=None)
@given(st.one_of(messages.map(encode_message), st.binary(max_size=40),
                 messages.map(encode_message).flatmap(lambda b: st.binary(max_size=6).map(lambda x: b + x))))
def test_peek_accepts_only_what_decode_accepts_with_the_same_fields(data: bytes) -> None:
    pb = peek_message(data)
    if pb is None:
        return  # the audit takes the full path, with decode_message
    msg = decode_message(data)
    assert (pb.id, pb.queue, pb.last_failed_at, pb.completed_at) == (
        msg.id, msg.queue, msg.last_failed_at, msg.completed_at)


def test_peek_accepts_every_message_the_codec_writes() -> None:
    msg = TaskMessage(type="t", payload=None, id="i", queue="q", headers=(("a", "b"),))
    assert peek_message(encode_message(msg)) is not None


def test_id_index_locate_counts_repeats_and_marks_seen() -> None:
    ix = IdIndex()
    pending, archived = ix.slot("p"), ix.slot("a")
    ix.add(pending, [b"x", b"y", b"y"])
    ix.add(archived, [b"x", b"z"])
    ix.freeze()
    starts, counts, firsts = ix.locate([b"y", b"x", b"gone"])
    assert counts == [2, 2, 0] and firsts[2] == -1
    assert sorted(ix.slots_at(starts[1], counts[1])) == [pending, archived]
    assert ix.slots_at(starts[0], counts[0]) == [pending, pending]
    assert ix.unseen(archived, [b"x", b"z", b"z"]) == [b"z", b"z"]


def test_a_decoding_client_is_refused_before_anything_is_sent(real_server: RedisServer) -> None:
    client = redis.Redis.from_url(real_server.url, decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses"):
            audit(client, AuditOptions())
    finally:
        client.close()
