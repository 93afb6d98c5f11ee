"""``keysim audit`` is not fooled by queue names: Asynq accepts any non-blank name, ``}:`` and
glob characters included, so one key can read as a key of two queues (audit/ownership.py).

Healthy queues are built through the broker (and, where the Go driver is built, through Asynq's
own code). The broker refuses braces in queue names (its own layout rule, for Cluster slots);
Asynq does not, and neither do the broker's scripts, so :func:`asynq_names` lifts that one rule
while a test builds its keyspace. Leaks are seeded with raw writes, spelled by model.keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
import redis
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from support import driver_or_skip, go_backend_or_skip

from audit import AuditOptions, AuditResult, audit, connect
from audit.engine import UnknownQueue
from audit.ownership import readings
from audit.plan import ServerIdentity, build_plan
from broker import Broker
from broker.asynq_go import AsynqGoBroker
from broker.codec import encode_message
from broker.scripting import encode_deadline
from broker.servers import RedisServer
from model import keys
from model.clock import VirtualClock
from model.invariants import Family
from model.message import TaskMessage
from model.policy import ASYNQ_POLICY
from model.states import INDEXED_STATES


@contextmanager
def asynq_names() -> Iterator[None]:
    """Let the broker take any queue name Asynq takes (braces too) while building keyspaces."""
    with mock.patch.object(keys, "FORBIDDEN_CHARS", keys.FORBIDDEN_CHARS - {"{", "}"}):
        yield


def msg(task_id: str, queue: str, **kw: Any) -> TaskMessage:
    return TaskMessage(type="email", payload=task_id.encode(), id=task_id, queue=queue, **kw)


def healthy_queue(b: Any, q: str, archived: int = 5) -> None:
    """Every state at once, nothing leaked: pending, a unique pending task, scheduled, active with
    its lease, retry, ``archived`` archived, completed, aggregating, pause and counters."""
    for task_id in ("r1", "c1", "a1", *(f"x{i}" for i in range(archived))):
        b.enqueue(msg(task_id, q, retention=3600))
        got = b.dequeue(q)
        assert got is not None and got.id == task_id
        if task_id == "r1":
            b.retry(got, b.clock.seconds + 60, "flaky")
        elif task_id == "c1":
            b.mark_as_complete(got)
        elif task_id != "a1":
            b.archive(got, "dead")
    b.enqueue(msg("p1", q))
    b.enqueue_unique(msg("u1", q), ttl=3600)
    b.schedule(msg("s1", q), b.clock.seconds + 600)
    b.add_to_group(msg("g1", q), "grp")
    b.pause(q)


def run(url: str, clock: VirtualClock, **kw: Any) -> AuditResult:
    client = connect(url)
    try:
        return audit(client, AuditOptions(now_ms=clock.now_ns // 10**6, chunk=7, scan_count=9, **kw))
    finally:
        client.close()


def by_queue(result: AuditResult) -> set[tuple[str, str, str, bool]]:
    return {(r.queue, f.kind, f.key, f.leaked) for r in result.queues for f in r.findings}


def assert_every_key_counted_once(result: AuditResult, raw: redis.Redis) -> None:
    """Queues, unattributed keys and global keys partition the keyspace, bytes included."""
    assert result.registries is not None
    counted = sum(r.keys for r in result.queues) + len(result.unattributed) + result.registries.keys
    assert counted == raw.dbsize()
    total = sum(raw.memory_usage(k, samples=0) or 0 for k in raw.scan_iter(count=1000))
    assert (sum(r.bytes for r in result.queues) + sum(u.bytes for u in result.unattributed)
            + result.registries.bytes) == total


# --- the two reported cases ------------------------------------------------------------------------
CASES = [("a", "a}:t:b{"), ("a", "a}:x")]


@pytest.mark.parametrize(("first", "second"), CASES)
def test_two_healthy_queues_whose_names_overlap_give_no_finding(
        real_server: RedisServer, real_client: redis.Redis, first: str, second: str) -> None:
    clock = VirtualClock()
    with asynq_names():
        for q in (first, second):
            healthy_queue(Broker(real_client, "asynq-v0.26.0", ASYNQ_POLICY, clock), q)
    result = run(real_server.url, clock)
    assert by_queue(result) == set()
    assert [r.queue for r in result.queues] == sorted((first, second))
    assert all(r.tasks_by_state["archived"] == 5 and r.registered for r in result.queues)
    assert_every_key_counted_once(result, real_client)
    assert build_plan(result, ServerIdentity("run", 0)).actions == ()


@pytest.mark.parametrize(("first", "second"), CASES)
def test_asynq_own_keyspace_with_overlapping_names_gives_no_finding(
        real_server: RedisServer, real_client: redis.Redis, first: str, second: str) -> None:
    """The same, written by Asynq's own Go code (skips without the conformance driver)."""
    go_backend_or_skip(real_server)
    driver_or_skip("v0.26.0")
    clock = VirtualClock()
    with asynq_names(), AsynqGoBroker(real_server.url, "v0.26.0", clock=clock) as b:
        for q in (first, second):
            healthy_queue(b, q)
    result = run(real_server.url, clock)
    assert by_queue(result) == set()
    assert all(r.tasks_by_state["archived"] == 5 for r in result.queues)
    assert_every_key_counted_once(result, real_client)


def test_a_zombie_of_either_queue_is_found_in_that_queue(real_server: RedisServer,
                                                         real_client: redis.Redis) -> None:
    clock = VirtualClock()
    first, second = CASES[0]
    with asynq_names():
        for q in (first, second):
            healthy_queue(Broker(real_client, "asynq-v0.26.0", ASYNQ_POLICY, clock), q)
    for q in (first, second):  # an archived hash in no index: what an inspector trim leaves
        real_client.hset(keys.task(q, "zz"), mapping={"msg": encode_message(msg("zz", q)),
                                                     "state": "archived"})
    result = run(real_server.url, clock)
    assert by_queue(result) == {(q, "zombie", keys.task(q, "zz"), True) for q in (first, second)}


def test_a_stub_is_its_queues_unless_another_known_queue_could_own_it(
        real_server: RedisServer, real_client: redis.Redis) -> None:
    """A result-only hash (BZ-18) has no msg to tell its queue: ``asynq:{a}:t:b{}:t:late`` is
    ``a}:t:b{``'s while ``a`` is no queue, and ambiguous once ``a`` is one."""
    clock = VirtualClock()
    second = "a}:t:b{"
    with asynq_names():
        b = Broker(real_client, "asynq-v0.26.0", ASYNQ_POLICY, clock)
        healthy_queue(b, second)
        b.write_result(second, "late", b"42")
    stub = keys.task(second, "late")
    assert by_queue(run(real_server.url, clock)) == {(second, "result-only hash", stub, True)}
    with asynq_names():
        healthy_queue(Broker(real_client, "asynq-v0.26.0", ASYNQ_POLICY, clock), "a")
    result = run(real_server.url, clock)
    assert by_queue(result) == set()
    assert {u.key: u.candidates for u in result.ambiguous} == {stub: ("a", second)}


def test_a_key_two_queues_can_own_is_listed_never_judged(real_server: RedisServer,
                                                         real_client: redis.Redis) -> None:
    """``asynq:{a}:g:x}:archived`` is queue ``a}:g:x``'s archived index and, by name and type,
    an aggregation set of group ``x}`` in queue ``a``: counted once, in no queue, no finding."""
    clock = VirtualClock()
    with asynq_names():
        for q in ("a", "a}:g:x"):
            healthy_queue(Broker(real_client, "asynq-v0.26.0", ASYNQ_POLICY, clock), q)
    result = run(real_server.url, clock)
    assert by_queue(result) == set()
    shared = {u.key: u.candidates for u in result.unattributed}
    assert shared[keys.archived("a}:g:x")] == ("a", "a}:g:x")
    # Exactly the zsets of a}:g:x (their names read as aggregation sets of group "x}" in a).
    zsets = [keys.archived, keys.retry, keys.scheduled, keys.completed, keys.lease]
    assert shared == {index("a}:g:x"): ("a", "a}:g:x") for index in zsets}
    assert_every_key_counted_once(result, real_client)
    # Its archived tasks stay healthy (the index may be theirs) and are not zombies.
    assert next(r for r in result.queues if r.queue == "a}:g:x").tasks_by_state["archived"] == 5


def test_a_restricted_audit_leaves_other_queues_keys_alone(real_server: RedisServer,
                                                           real_client: redis.Redis) -> None:
    """``--queue a`` with ``a`` unregistered and empty: the keys of ``a}:x`` match its SCAN
    pattern but are not its leftovers."""
    clock = VirtualClock()
    with asynq_names():
        healthy_queue(Broker(real_client, "asynq-v0.26.0", ASYNQ_POLICY, clock), "a}:x")
    with pytest.raises(UnknownQueue, match="no queue 'a'"):  # it owns none of those keys
        run(real_server.url, clock, queues=("a",))
    real_client.sadd(keys.ALL_QUEUES, "a")  # registered, still empty
    (report,) = run(real_server.url, clock, queues=("a",)).queues
    assert (report.keys, report.findings) == (0, [])


def test_a_restricted_audit_does_not_take_another_queues_key_for_its_index(
        real_server: RedisServer, real_client: redis.Redis) -> None:
    """Queue ``a``'s aggregation set ``g:x}:archived`` is, by name, the archived index of queue
    ``a}:g:x``; audited alone (unknown: unregistered, no key), ``a}:g:x`` must not read it."""
    clock = VirtualClock()
    with asynq_names():
        b = Broker(real_client, "asynq-v0.26.0", ASYNQ_POLICY, clock)
        b.add_to_group(msg("g1", "a"), "x}")
        clock.advance(b.policy.aggregation_grace)
        b.aggregation_check("a", "x}", "archived")
    assert real_client.exists(keys.archived("a}:g:x"))
    with pytest.raises(UnknownQueue):  # the key is queue a's: a}:g:x owns nothing
        run(real_server.url, clock, queues=("a}:g:x",))
    real_client.sadd(keys.ALL_QUEUES, "a}:g:x")  # registered, still empty
    (report,) = run(real_server.url, clock, queues=("a}:g:x",)).queues
    assert (report.keys, report.findings) == (0, [])
    assert by_queue(run(real_server.url, clock)) == set()


# --- glob characters ---------------------------------------------------------------------------
GLOB_NAMES = st.text(st.sampled_from("ab*?[]\\^-!{}: é"), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(queue=GLOB_NAMES, others=st.lists(GLOB_NAMES, max_size=4))
def test_scan_patterns_match_exactly_the_queue_prefix(real_server: RedisServer, queue: str,
                                                      others: list[str]) -> None:
    """On a real server, SCAN MATCH of the queue's patterns returns exactly the keys that start
    with its prefixes, whatever glob characters the names hold."""
    r = redis.Redis.from_url(real_server.url)
    try:
        r.flushdb()
        names = [keys.pending(q) for q in [queue, *others]] + [
            keys.group(q, "g") for q in [queue, *others]] + [keys.task(q, "t") for q in others]
        for name in names:
            r.set(name, 1)
        for pattern, prefix in ((keys.queue_pattern(queue), keys.queue_prefix(queue)),
                                (keys.glob_escape(keys.group_prefix(queue)) + "*",
                                 keys.group_prefix(queue))):
            got = {k.decode() for k in r.scan_iter(match=pattern, count=100)}
            assert got == {n for n in names if n.startswith(prefix)}
    finally:
        r.flushdb()
        r.close()


# --- the property ----------------------------------------------------------------------------------
#: Pieces of names: the layout's own separators and suffixes, glob characters, space, unicode.
PIECES = st.sampled_from(["a", "b", "x", "é", "日", " ", "{", "}", ":", "*", "?", "[", "]", "\\",
                          "}:", "t:", "g:", "unique:", "pending", "archived", "paused", "grp"])
NAMES = st.lists(PIECES, min_size=1, max_size=5).map("".join).map(
    lambda s: s if s.strip() else s + "a")  # Asynq refuses a blank name
#: What follows ``<first>}:`` in the second name: often a layout prefix, so that the second
#: queue's keys also read as the first queue's tasks, locks or groups.
SUFFIXES = st.tuples(st.sampled_from(["", "t:", "g:", "unique:", "unique:email:"]),
                     st.lists(PIECES, max_size=3).map("".join)).map("".join)
PAIRS = st.one_of(
    st.tuples(NAMES, NAMES).map(lambda p: p if p[0] != p[1] else (p[0], p[1] + "b")),
    st.tuples(NAMES, SUFFIXES).map(lambda p: (p[0], f"{p[0]}}}:{p[1]}")),
)
LEAKS = ("zombie", "dangling id", "orphan lock")


def family_keys(q: str) -> dict[str, Family]:
    """One key of every family of queue ``q``, made by model.keys."""
    made = {keys.task(q, "t1"): Family.TASK, keys.unique(q, "email", b"x"): Family.UNIQUE,
            keys.group(q, "grp"): Family.GROUP, keys.group_set(q, "grp", "s1"): Family.GROUP_SET,
            keys.processed_daily(q, "2026-01-02"): Family.PROCESSED_DAILY,
            keys.failed_daily(q, "2026-01-02"): Family.FAILED_DAILY,
            keys.lease(q): Family.LEASE, keys.groups(q): Family.GROUPS,
            keys.aggregation_sets(q): Family.AGGREGATION_SETS, keys.paused(q): Family.PAUSED,
            keys.processed_total(q): Family.PROCESSED_TOTAL, keys.failed_total(q): Family.FAILED_TOTAL}
    made |= {keys.state_index(q, s): Family(s.value) for s in INDEXED_STATES}
    return made


@settings(max_examples=300, deadline=None)
@given(pair=PAIRS)
def test_every_key_reads_as_its_own_queue_and_family(pair: tuple[str, str]) -> None:
    """The parser (no Redis): a key a queue's key functions make always has that reading, and
    any other reading it has is of a queue whose prefix it starts with."""
    for q in pair:
        for key, family in family_keys(q).items():
            found = readings(key)
            assert (q, family) in {(r.queue, r.info.family) for r in found}
            assert all(key.startswith(keys.queue_prefix(r.queue)) for r in found)


def seed_leak(r: redis.Redis, q: str, leak: str, now_ms: int) -> tuple[str, bool]:
    """Write one leak into queue ``q``; return the key its finding names and whether it is a
    leak the fix plan deletes."""
    if leak == "zombie":
        key = keys.task(q, "zz")
        r.hset(key, mapping={"msg": encode_message(msg("zz", q)), "state": "archived"})
        return key, True
    if leak == "dangling id":
        r.lpush(keys.pending(q), "ghost")
        return keys.pending(q), False
    key = keys.unique(q, "email", b"gone")  # a live lock whose owner does not exist
    r.set(key, "gone")
    r.pexpireat(key, encode_deadline(now_ms + 3_600_000))
    return key, True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pair=PAIRS, leaky=st.sampled_from([0, 1]), leak=st.sampled_from(LEAKS))
@example(pair=("a", "a}:t:b{"), leaky=1, leak="zombie")
@example(pair=("a", "a}:x"), leaky=0, leak="dangling id")
@example(pair=("a", "a}:unique:email"), leaky=1, leak="orphan lock")  # also a's lock, by name
def test_any_two_healthy_queues_give_no_finding_and_a_seeded_leak_is_found_in_its_queue(
        real_server: RedisServer, pair: tuple[str, str], leaky: int, leak: str) -> None:
    r = redis.Redis.from_url(real_server.url)
    try:
        r.flushdb()
        clock = VirtualClock()
        with asynq_names():
            for q in pair:
                healthy_queue(Broker(r, "asynq-v0.26.0", ASYNQ_POLICY, clock), q, archived=2)
        healthy = run(real_server.url, clock)
        assert by_queue(healthy) == set(), pair
        assert_every_key_counted_once(healthy, r)

        q = pair[leaky]
        key, leaked = seed_leak(r, q, leak, clock.now_ns // 10**6)
        result = run(real_server.url, clock)
        event(f"ambiguous keys when healthy: {min(len(healthy.unattributed), 3)}+")
        event(f"seeded {leak}: {'ambiguous' if key in {u.key for u in result.unattributed} else 'found'}")
        if key in {u.key for u in result.unattributed}:  # another queue could own it
            assert by_queue(result) == set()
            assert len({rd.queue for rd in readings(key)}) > 1
        else:
            assert by_queue(result) == {(q, leak, key, leaked)}
    finally:
        r.flushdb()
        r.close()
