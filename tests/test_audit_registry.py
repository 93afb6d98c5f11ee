"""``keysim audit`` accounts for every ``asynq:`` key outside the queues (audit/registry.py).

The keys are written as Asynq's heartbeat, scheduler and history writers leave them (spec §1.5:
registry zsets scored by deadline in Unix seconds, member keys with a TTL, history zsets
without one), names spelled by model.keys. SchedulerEntry protobufs are built by hand: field 1
is the entry id in Asynq's asynq.proto.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from audit import AuditOptions, AuditResult, audit, connect, render_text, to_json
from audit.plan import ServerIdentity, build_plan
from audit.registry import entry_id, member_registry
from broker.servers import RedisServer
from model import keys

NOW_S = 1_900_000_000  # the audit's clock (now_ms), far from the real one: scores decide
GRACE = 600
PROCESS = "host:42:5f0c"


def scheduler_entry(entry: str, spec: str = "@every 30s") -> bytes:
    """A SchedulerEntry protobuf with ``id`` (field 1) and ``spec`` (field 2)."""
    def field(number: int, value: bytes) -> bytes:
        return bytes([number << 3 | 2, len(value)]) + value
    return field(1, entry.encode()) + field(2, spec.encode())


@pytest.fixture
def r(real_client: redis.Redis) -> Iterator[redis.Redis]:
    yield real_client


def run(server: RedisServer, **kw: object) -> AuditResult:
    client = connect(server.url)
    try:
        return audit(client, AuditOptions(now_ms=NOW_S * 1000, registry_grace_s=GRACE, **kw))  # type: ignore[arg-type]
    finally:
        client.close()


def live_server(r: redis.Redis, process: str, deadline: int = NOW_S + 10) -> None:
    """A server's heartbeat: both registries name its keys, which carry a TTL."""
    r.zadd(keys.SERVERS, {keys.server_info(process): deadline})
    r.zadd(keys.WORKERS, {keys.workers_of(process): deadline})
    r.set(keys.server_info(process), b"info", ex=10)
    r.hset(keys.workers_of(process), "task-1", b"worker")
    r.expire(keys.workers_of(process), 10)


def live_scheduler(r: redis.Redis, scheduler: str, *entries: str, deadline: int = NOW_S + 20) -> None:
    r.zadd(keys.SCHEDULERS, {keys.scheduler_entries(scheduler): deadline})
    if entries:
        r.lpush(keys.scheduler_entries(scheduler), *(scheduler_entry(e) for e in entries))
        r.expire(keys.scheduler_entries(scheduler), 20)


def history(r: redis.Redis, entry: str, newest: int, events: int = 3) -> str:
    key = keys.scheduler_history(entry)
    r.zadd(key, {f"event-{n}".encode(): newest - n for n in range(events)})
    return key


def found(result: AuditResult) -> set[tuple[str, str, str, bool]]:
    return {(f.invariant, f.kind, f.key, f.leaked) for f in result.findings}


def test_live_processes_and_named_history_are_healthy(real_server: RedisServer, r: redis.Redis) -> None:
    live_server(r, PROCESS)
    live_scheduler(r, "host:42:s1", "entry-1", "entry-2")
    history(r, "entry-1", NOW_S - 86_400)  # old, but its entry is registered
    r.sadd(keys.ALL_QUEUES, "default")
    result = run(real_server)
    assert found(result) == set()
    report = result.registries
    assert report is not None
    assert report.history == {"named": 1}
    assert report.members == {f"{keys.SERVERS} live": 1, f"{keys.WORKERS} live": 1,
                              f"{keys.SCHEDULERS} live": 1}
    assert report.keys == r.dbsize() and report.unrecognised == []
    assert report.bytes == sum(r.memory_usage(k, samples=0) or 0 for k in r.scan_iter())
    assert set(report.bytes_by_family) == {"queues", "registry", "server info", "workers",
                                           "scheduler entries", "scheduler history"}


def test_a_crashed_server_leaves_stale_members_a_repair_not_a_deletion(
        real_server: RedisServer, r: redis.Redis) -> None:
    live_server(r, PROCESS, deadline=NOW_S - GRACE - 1)
    r.delete(keys.server_info(PROCESS), keys.workers_of(PROCESS))  # their TTL ran out
    live_server(r, "host:43:late", deadline=NOW_S - GRACE + 5)  # a late heartbeat may still come
    r.delete(keys.server_info("host:43:late"), keys.workers_of("host:43:late"))
    result = run(real_server)
    assert found(result) == {("BZ-23", "stale registry member", keys.SERVERS, False),
                             ("BZ-23", "stale registry member", keys.WORKERS, False)}
    assert all(keys.server_info(PROCESS) in f.message or keys.workers_of(PROCESS) in f.message
               for f in result.findings)
    assert result.registries is not None
    assert result.registries.members[f"{keys.SERVERS} expiring"] == 1
    plan = build_plan(result, ServerIdentity("run", 0))
    assert plan.actions == ()  # deleting asynq:servers would drop every live server
    assert {o[3] for o in plan.not_planned} == {keys.SERVERS, keys.WORKERS}  # listed for the operator


def test_orphaned_scheduler_history_is_a_leak_and_a_recent_one_is_unverified(
        real_server: RedisServer, r: redis.Redis) -> None:
    live_scheduler(r, "host:42:s1", "entry-1")
    history(r, "entry-1", NOW_S - 10)
    old = history(r, "unregistered", NOW_S - 3600, events=5)
    young = history(r, "first-run", NOW_S - 5)  # its scheduler has not had a heartbeat yet
    r.expire(history(r, "expiring", NOW_S - 3600), 3600)  # goes away by itself
    result = run(real_server)
    assert found(result) == {("BZ-19", "orphaned scheduler history", old, True)}
    (finding,) = result.findings
    assert finding.bytes == r.memory_usage(old, samples=0) and finding.bytes > 0
    assert "5 event(s)" in finding.message
    assert result.registries is not None
    assert [k for k, _ in result.registries.unverified] == [young]
    assert result.registries.history == {"named": 1, "orphaned": 1, "unverified": 1, "expiring": 1}
    plan = build_plan(result, ServerIdentity("run", 0))  # listed; deleting it is the operator's call
    assert plan.actions == () and [o[3] for o in plan.not_planned] == [old]
    doc = json.loads(to_json(result, "redis://x"))["global"]
    assert doc["scheduler_history"] == result.registries.history
    assert [f["key"] for f in doc["findings"]] == [old] and doc["unverified"][0]["key"] == young


def test_history_stays_unverified_while_a_recently_registered_scheduler_cannot_be_read(
        real_server: RedisServer, r: redis.Redis) -> None:
    """A scheduler whose deadline passed within the grace and whose entry list is gone may be
    alive (a late heartbeat) and may name any unnamed history."""
    history(r, "unregistered", NOW_S - 3600)
    live_scheduler(r, "host:42:stalled", deadline=NOW_S - 30)
    result = run(real_server)
    assert found(result) == set()
    assert result.registries is not None and result.registries.history == {"unverified": 1}
    # A scheduler with no entries (its deadline ahead, so no list) hides nothing.
    r.zadd(keys.SCHEDULERS, {keys.scheduler_entries("host:42:stalled"): NOW_S + 20})
    assert found(run(real_server)) == {("BZ-19", "orphaned scheduler history",
                                        keys.scheduler_history("unregistered"), True)}
    # An entry list that does not decode hides everything.
    r.rpush(keys.scheduler_entries("host:42:stalled"), b"\xff\xff")
    assert found(run(real_server)) == set()


def test_a_member_key_without_ttl_is_a_leak_only_when_no_process_will_rewrite_it(
        real_server: RedisServer, r: redis.Redis) -> None:
    live_server(r, PROCESS)
    r.persist(keys.server_info(PROCESS))  # its registration is live: the next beat sets a TTL
    assert found(run(real_server)) == set()
    r.set(keys.server_info("host:9:gone"), b"info")  # no registration at all
    assert found(run(real_server)) == {
        ("I14", "registry member without ttl", keys.server_info("host:9:gone"), True)}


def test_unrecognised_asynq_keys_are_listed_with_their_bytes(real_server: RedisServer,
                                                            r: redis.Redis) -> None:
    odd = {"asynq:something": "string", "asynq:{default": "string", "asynq:{ }:pending": "list",
           keys.SERVERS: "string", keys.scheduler_history("e1"): "hash"}
    for key, kind in odd.items():
        if kind == "string":
            r.set(key, "x")
        elif kind == "list":
            r.rpush(key, "x")
        else:
            r.hset(key, "x", "y")
    r.set("other:app:key", "not asynq's")
    result = run(real_server)
    assert found(result) == set() and result.queues == []
    listed = {u.key: (u.type, u.bytes) for u in result.unrecognised}
    assert result.ambiguous == []
    assert listed == {k: (kind, r.memory_usage(k, samples=0)) for k, kind in odd.items()}
    text = render_text(result, "redis://x")
    assert "unrecognised: 5 key(s)" in text and "asynq:something" in text
    doc = json.loads(to_json(result, "redis://x"))
    assert {u["key"] for u in doc["unrecognised"]} == set(odd)


def test_a_restricted_audit_does_not_judge_global_keys(real_server: RedisServer,
                                                       r: redis.Redis) -> None:
    history(r, "unregistered", NOW_S - 3600)
    r.sadd(keys.ALL_QUEUES, "default")
    result = run(real_server, queues=("default",))
    assert result.registries is None and found(result) == set()


def test_entry_ids_and_member_names() -> None:
    assert entry_id(scheduler_entry("5f0c-uuid")) == "5f0c-uuid"
    assert entry_id(b"\x12\x03abc") is None  # a spec but no id
    assert member_registry(keys.scheduler_entries("h:1:x")) == keys.SCHEDULERS
    assert member_registry("asynq:servers:{}") is None
    assert member_registry(keys.scheduler_history("e")) is None
