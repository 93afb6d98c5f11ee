"""Invariants I1–I14: a clean keyspace passes; each hand-made defect trips exactly its invariant."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from model import keys
from model.invariants import (
    INVARIANTS,
    KINDS,
    Family,
    Invariant,
    KeyInfo,
    Kind,
    Violation,
    check_all,
    classify,
)
from model.message import TaskMessage
from model.policy import DAY, Policy
from model.snapshot import KeyEntry, KeyspaceSnapshot, KeyType, zset_value

Q = "q"
NOW = 1_700_000_000
NOW_MS = NOW * 1000 + 500
TODAY = dt.datetime.fromtimestamp(NOW, dt.UTC).date().isoformat()
LOCK = keys.unique(Q, "email", b"{}")
GROUP_SET = keys.group_set(Q, "g2", "set1")
Entries = dict[str, KeyEntry]


# --- builders ---------------------------------------------------------------------------------


def task(task_id: str, state: str, *, msg: bool = True, **fields: str) -> KeyEntry:
    value: dict[str, Any] = {"state": state, **fields}
    if msg:
        value["msg"] = TaskMessage(type="email", payload=b"{}", id=task_id, queue=Q)
    return KeyEntry(keys.task(Q, task_id), KeyType.HASH, value)


def zset(key: str, *pairs: tuple[str, float], ttl: int | None = None) -> KeyEntry:
    return KeyEntry(key, KeyType.ZSET, zset_value(pairs), ttl)


def lst(key: str, *ids: str, ttl: int | None = None) -> KeyEntry:
    return KeyEntry(key, KeyType.LIST, ids, ttl)


def string(key: str, value: str, ttl: int | None = None) -> KeyEntry:
    return KeyEntry(key, KeyType.STRING, value, ttl)


def clean() -> Entries:
    """A sound queue with a task in every state, a lock, a group, an aggregation set and stats."""
    items = [
        task("p1", "pending", pending_since=str(NOW * 10**9)),
        task("u1", "pending", unique_key=LOCK),
        task("a1", "active"),
        task("s1", "scheduled"),
        task("r1", "retry"),
        task("ar1", "archived"),
        task("c1", "completed"),
        task("ag1", "aggregating", group="g1"),
        task("ag2", "aggregating", group="g2"),
        lst(keys.pending(Q), "u1", "p1"),
        lst(keys.active(Q), "a1"),
        zset(keys.lease(Q), ("a1", NOW + 30)),
        zset(keys.scheduled(Q), ("s1", NOW + 100)),
        zset(keys.retry(Q), ("r1", NOW + 50)),
        zset(keys.archived(Q), ("ar1", NOW - 10)),
        zset(keys.completed(Q), ("c1", NOW + 3600)),
        zset(keys.group(Q, "g1"), ("ag1", NOW - 5)),
        zset(GROUP_SET, ("ag2", NOW - 70)),
        zset(keys.aggregation_sets(Q), (GROUP_SET, NOW + 50)),
        KeyEntry(keys.groups(Q), KeyType.SET, frozenset({"g1"})),
        string(keys.paused(Q), str(NOW)),
        string(LOCK, "u1", ttl=NOW_MS + 60_000),
        string(keys.processed_total(Q), "7"),
        string(keys.failed_total(Q), "2"),
        string(keys.processed_daily(Q, TODAY), "7", ttl=(NOW + 90 * DAY) * 1000),
        string(keys.failed_daily(Q, TODAY), "2", ttl=(NOW + 90 * DAY) * 1000),
    ]
    return {e.key: e for e in items}


def snap(entries: Entries, *, registered: bool = True,
         extra: dict[str, KeyEntry] | None = None) -> KeyspaceSnapshot:
    return KeyspaceSnapshot(Q, NOW_MS, entries, registered=registered, extra=extra or {})


def put(entries: Entries, *new: KeyEntry) -> Entries:
    return {**entries, **{e.key: e for e in new}}


def drop(entries: Entries, *names: str) -> Entries:
    return {k: v for k, v in entries.items() if k not in names}


def check(snapshot: KeyspaceSnapshot, policy: Policy | None = None,
          flags: dict[str, bool] | None = None) -> list[Violation]:
    """check_all with the flags of a case (quiescent, strict_locks) given as a dict."""
    flags = flags or {}
    return check_all(snapshot, policy, quiescent=flags.get("quiescent", False),
                     strict_locks=flags.get("strict_locks", False))


def found(snapshot: KeyspaceSnapshot) -> list[tuple[str, str, str | None]]:
    return [(v.invariant, v.key, v.task_id) for v in check_all(snapshot)]


STRICT = {"quiescent": True, "strict_locks": True}


# --- the clean keyspace -------------------------------------------------------------------------


def test_clean_keyspace_with_every_state_has_no_violation() -> None:
    entries = clean()
    states = {e.hash()["state"] for e in entries.values() if e.type is KeyType.HASH}
    assert states == {"pending", "active", "scheduled", "retry", "archived", "completed", "aggregating"}
    assert check(snap(entries), flags=STRICT) == []
    assert check_all(snap(entries)) == []


def test_empty_unregistered_queue_is_clean() -> None:
    assert check(snap({}, registered=False), flags=STRICT) == []


# --- one case per defect -----------------------------------------------------------------------

T = keys.task
Case = tuple[Callable[[], KeyspaceSnapshot], dict[str, bool], list[tuple[str, str, str | None]], str]

CASES: dict[str, Case] = {
    "I1 zombie archived": (
        lambda: snap(drop(clean(), keys.archived(Q))),
        {}, [("I1", T(Q, "ar1"), "ar1")],
        "zombie: t:ar1 is archived but in no index (expected archived)"),
    "I1 stub with only a result": (
        lambda: snap(put(clean(), KeyEntry(T(Q, "w"), KeyType.HASH, {"result": "r"}))),
        {}, [("I1", T(Q, "w"), "w")],
        "stub: t:w has no msg or state field (fields: result)"),
    "I1 state does not match index": (
        lambda: snap(put(drop(clean(), keys.scheduled(Q)), lst(keys.pending(Q), "u1", "p1", "s1"))),
        {}, [("I1", T(Q, "s1"), "s1")],
        "t:s1 is scheduled but sits in pending, not in scheduled"),
    "I1 aggregating without group field": (
        lambda: snap(put(clean(), task("ag1", "aggregating"))),
        {}, [("I1", T(Q, "ag1"), "ag1")], "t:ag1 is aggregating but has no group field"),
    "I1 aggregating in another group": (
        lambda: snap(put(clean(), task("ag1", "aggregating", group="g2"))),
        {}, [("I1", T(Q, "ag1"), "ag1")],
        "t:ag1 is aggregating but sits in g:g1, not in g:g2 or one of its aggregation sets"),
    "I1 message of another task": (
        lambda: snap(put(clean(), KeyEntry(T(Q, "p1"), KeyType.HASH, {
            "state": "pending", "msg": TaskMessage(type="e", payload=None, id="zz", queue=Q)}))),
        {}, [("I1", T(Q, "p1"), "p1")], "t:p1 holds the message of task 'zz' in queue 'q'"),
    "I1 undecodable msg": (
        lambda: snap(put(clean(), KeyEntry(T(Q, "p1"), KeyType.HASH, {"state": "pending", "msg": "\x00"}))),
        {}, [("I1", T(Q, "p1"), "p1")], "t:p1 has a msg that does not decode"),
    "I1 unknown state": (
        lambda: snap(put(clean(), task("p1", "deleted"))),
        {}, [("I1", T(Q, "p1"), "p1")], "t:p1 has state deleted, which is not the state of a stored task"),
    "I2 dangling retry id": (
        lambda: snap(put(clean(), zset(keys.retry(Q), ("r1", NOW + 50), ("ghost", NOW)))),
        {}, [("I2", keys.retry(Q), "ghost")], "dangling: retry holds 'ghost' but t:ghost does not exist"),
    "I2 dangling aggregation-set id": (
        lambda: snap(put(clean(), zset(GROUP_SET, ("ag2", NOW - 70), ("gone", NOW - 60)))),
        {}, [("I2", GROUP_SET, "gone")], "dangling: g:g2:set1 holds 'gone' but t:gone does not exist"),
    "I3 active without lease": (
        lambda: snap(drop(clean(), keys.lease(Q))),
        {}, [("I3", keys.active(Q), "a1")], "a1 is in active but has no lease entry"),
    "I3 lease without active": (
        lambda: snap(drop(clean(), keys.active(Q))),
        {}, [("I3", keys.lease(Q), "a1")], "a1 has a lease entry but is not in active"),
    "I3 duplicate in active": (
        lambda: snap(put(clean(), lst(keys.active(Q), "a1", "a1"))),
        {}, [("I3", keys.active(Q), "a1")], "a1 appears 2 times in active"),
    "I4 pending and scheduled": (
        lambda: snap(put(clean(), zset(keys.scheduled(Q), ("s1", NOW + 100), ("p1", NOW + 9)))),
        {}, [("I4", T(Q, "p1"), "p1")], "p1 is in 2 indexes at once: pending, scheduled"),
    "I4 twice in pending": (
        lambda: snap(put(clean(), lst(keys.pending(Q), "p1", "u1", "p1"))),
        {}, [("I4", keys.pending(Q), "p1")], "p1 appears 2 times in pending"),
    "I5 expired lease after quiescence": (
        lambda: snap(put(clean(), zset(keys.lease(Q), ("a1", NOW - 30)))),
        {"quiescent": True}, [("I5", keys.lease(Q), "a1")],
        f"a1's lease expired at {NOW - 30}; a recoverer pass at now={NOW} (cutoff {NOW - 30}) "
        "left it in lease"),
    "I5 judged only when quiescent": (
        lambda: snap(put(clean(), zset(keys.lease(Q), ("a1", NOW - 3000)))), {}, [], ""),
    "I5 lease within the skew": (
        lambda: snap(put(clean(), zset(keys.lease(Q), ("a1", NOW - 29)))), {"quiescent": True}, [], ""),
    "I6 lock without TTL": (
        lambda: snap(put(clean(), string(LOCK, "u1"))),
        {}, [("I6", LOCK, "u1")], "unique:email:99914b932bd37a50b983c5e7c90ae93b has no TTL"),
    "I6 strict: owner gone": (
        lambda: snap(put(clean(), string(LOCK, "ghost", ttl=NOW_MS + 1))),
        {"strict_locks": True}, [("I6", LOCK, "ghost")],
        "early-release failure: unique:email:99914b932bd37a50b983c5e7c90ae93b is held by 'ghost', "
        "which does not exist"),
    "I6 strict: owner completed": (
        lambda: snap(put(clean(), string(LOCK, "c1", ttl=NOW_MS + 1))),
        {"strict_locks": True}, [("I6", LOCK, "c1")],
        "early-release failure: unique:email:99914b932bd37a50b983c5e7c90ae93b is held by 'c1', "
        "which is completed"),
    "I6 strict: owner has another unique_key": (
        lambda: snap(put(clean(), string(LOCK, "p1", ttl=NOW_MS + 1))),
        {"strict_locks": True}, [("I6", LOCK, "p1")],
        "early-release failure: unique:email:99914b932bd37a50b983c5e7c90ae93b is held by 'p1', "
        "whose unique_key is (unset)"),
    "I6 stale lock allowed when not strict": (
        lambda: snap(put(clean(), string(LOCK, "ghost", ttl=NOW_MS + 1))), {"quiescent": True}, [], ""),
    "I7 stale group name": (
        lambda: snap(put(clean(), KeyEntry(keys.groups(Q), KeyType.SET, frozenset({"g1", "g9"})))),
        {}, [("I7", keys.groups(Q), None)], "stale group: groups lists 'g9' but g:g9 is empty"),
    "I7 set key is not a group": (
        lambda: snap(put(clean(), KeyEntry(keys.groups(Q), KeyType.SET, frozenset({"g1", "g2:set1"})))),
        {}, [("I7", keys.groups(Q), None)], "stale group: groups lists 'g2:set1' but g:g2:set1 is empty"),
    "I7 orphan group": (
        lambda: snap(drop(clean(), keys.groups(Q))),
        {}, [("I7", keys.group(Q, "g1"), None)],
        "orphan group: g:g1 holds 1 task(s) but 'g1' is not in groups"),
    "I8 set not indexed": (
        lambda: snap(drop(clean(), keys.aggregation_sets(Q))),
        {}, [("I8", GROUP_SET, None)], "aggregation set g:g2:set1 is not in aggregation_sets"),
    "I8 index lists a missing set": (
        lambda: snap(put(clean(), zset(keys.aggregation_sets(Q), (GROUP_SET, NOW + 50),
                                       (keys.group_set(Q, "g2", "old"), NOW + 9)))),
        {}, [("I8", keys.aggregation_sets(Q), None)],
        "aggregation_sets lists g:g2:old but that set does not exist"),
    "I8 index lists a non-set key": (
        lambda: snap(put(clean(), zset(keys.aggregation_sets(Q), (GROUP_SET, NOW + 50), ("junk", NOW)))),
        {}, [("I8", keys.aggregation_sets(Q), None)],
        "aggregation_sets lists junk which is not an aggregation-set key of queue 'q'"),
    "I8 set past its deadline after quiescence": (
        lambda: snap(put(clean(), zset(keys.aggregation_sets(Q), (GROUP_SET, NOW)))),
        {"quiescent": True}, [("I8", keys.aggregation_sets(Q), None)],
        f"aggregation set g:g2:set1 passed its deadline {NOW}; a reclaim pass at now={NOW} left it"),
    "I9 expired completed after quiescence": (
        lambda: snap(put(clean(), zset(keys.completed(Q), ("c1", NOW)))),
        {"quiescent": True}, [("I9", keys.completed(Q), "c1")],
        f"c1 expired from completed at {NOW}; a janitor pass at now={NOW} left it"),
    "I9 judged only when quiescent": (
        lambda: snap(put(clean(), zset(keys.completed(Q), ("c1", NOW - 100)))), {}, [], ""),
    "I10 archive over capacity": (
        lambda: snap(put(clean(), task("ar2", "archived"),
                         zset(keys.archived(Q), ("ar1", NOW - 10), ("ar2", NOW)))),
        {}, [("I10", keys.archived(Q), None)],
        "archived holds 2 entries, above the capacity 1"),
    "I10 archived beyond the cutoff after quiescence": (
        lambda: snap(put(clean(), zset(keys.archived(Q), ("ar1", NOW - 90 * DAY)))),
        {"quiescent": True}, [("I10", keys.archived(Q), "ar1")],
        f"ar1 was archived at {NOW - 90 * DAY}, before the cutoff {NOW - 90 * DAY}; "
        f"a janitor pass at now={NOW} left it"),
    "I11 TTL on an index": (
        lambda: snap(put(clean(), lst(keys.pending(Q), "u1", "p1", ttl=NOW_MS + 5))),
        {}, [("I11", keys.pending(Q), None)],
        f"pending has a TTL (expires at {NOW_MS + 5} ms); a pending key must never expire"),
    "I11 TTL on a task hash": (
        lambda: snap(put(clean(), KeyEntry(T(Q, "s1"), KeyType.HASH, task("s1", "scheduled").value, NOW_MS))),
        {}, [("I11", T(Q, "s1"), "s1")],
        f"t:s1 has a TTL (expires at {NOW_MS} ms); a task key must never expire"),
    "I12 unregistered queue": (
        lambda: snap(clean(), registered=False),
        {}, [("I12", keys.ALL_QUEUES, None)], "queue 'q' has 26 key(s) but is not in asynq:queues"),
    "I12 unknown key": (
        lambda: snap(put(clean(), string(keys.queue_prefix(Q) + "bogus", "1"))),
        {}, [("I12", "asynq:{q}:bogus", None)],
        "unknown key: bogus is under the queue's prefix but no key function produces it"),
    "I12 group key with a nested set id": (
        lambda: snap(put(clean(), zset(keys.group_prefix(Q) + "g1:a:b", ("ag1", NOW)))),
        {}, [("I12", "asynq:{q}:g:g1:a:b", None)],
        "unknown key: g:g1:a:b is under the queue's prefix but no key function produces it"),
    "I12 daily counter with an impossible date": (
        lambda: snap(put(clean(), string(keys.processed_daily(Q, "2023-13-45"), "1", ttl=NOW_MS))),
        {}, [("I12", "asynq:{q}:processed:2023-13-45", None)],
        "unknown key: processed:2023-13-45 is under the queue's prefix but no key function produces it"),
    "I12 wrong type": (
        lambda: snap(put(clean(), lst(keys.paused(Q), "x"))),
        {}, [("I12", keys.paused(Q), None)], "wrong type: paused is a list, expected a string"),
    "I12 empty collection": (
        lambda: snap(put(clean(), zset(keys.group(Q, "g9")))),
        {}, [("I12", keys.group(Q, "g9"), None)],
        "empty zset: g:g9 exists with no elements (Redis deletes empty collections)"),
    "I12 foreign key": (
        lambda: snap(put(clean(), lst(keys.pending("other"), "p1"))),
        {}, [("I12", keys.pending("other"), None)],
        "foreign key: asynq:{other}:pending is not a key of queue 'q'"),
    "I13 daily counter without TTL": (
        lambda: snap(put(clean(), string(keys.failed_daily(Q, TODAY), "2"))),
        {}, [("I13", keys.failed_daily(Q, TODAY), None)], f"failed:{TODAY} has no TTL"),
    "I13 daily TTL beyond stats_ttl": (
        lambda: snap(put(clean(), string(keys.processed_daily(Q, TODAY), "7",
                                         ttl=NOW_MS + 90 * DAY * 1000 + 1))),
        {}, [("I13", keys.processed_daily(Q, TODAY), None)],
        f"processed:{TODAY} expires at {NOW_MS + 90 * DAY * 1000 + 1} ms, more than stats_ttl from "
        f"now ({NOW_MS + 90 * DAY * 1000} ms)"),
    "I13 total with TTL": (
        lambda: snap(put(clean(), string(keys.processed_total(Q), "7", ttl=NOW_MS + 1))),
        {}, [("I13", keys.processed_total(Q), None)], "processed has a TTL; totals never expire"),
    "I13 counter not an integer": (
        lambda: snap(put(clean(), string(keys.failed_total(Q), "two"))),
        {}, [("I13", keys.failed_total(Q), None)], "failed holds 'two', not an integer"),
    "I14 live server without its key": (
        lambda: snap(clean(), extra={keys.SERVERS: zset(keys.SERVERS, ("asynq:servers:{h:1:s}", NOW + 5))}),
        {}, [("I14", keys.SERVERS, None)],
        f"asynq:servers lists asynq:servers:{{h:1:s}} as live until {NOW + 5} but that key does not exist"),
    "I14 registry that is not a zset": (
        lambda: snap(clean(), extra={keys.SERVERS: lst(keys.SERVERS, "asynq:servers:{h:1:s}")}),
        {}, [("I14", keys.SERVERS, None)], "asynq:servers is a list, expected a zset"),
    "I14 registry member key without TTL": (
        lambda: snap(clean(), extra={
            keys.SCHEDULERS: zset(keys.SCHEDULERS, ("asynq:schedulers:{x}", NOW + 5)),
            "asynq:schedulers:{x}": lst("asynq:schedulers:{x}", "entry")}),
        {}, [("I14", "asynq:schedulers:{x}", None)], "asynq:schedulers:{x} has no TTL"),
    "I14 stale members and worker-less servers are allowed": (
        lambda: snap(clean(), extra={
            keys.SERVERS: zset(keys.SERVERS, ("asynq:servers:{old}", NOW - 1)),
            keys.WORKERS: zset(keys.WORKERS, ("asynq:workers:{h:1:s}", NOW + 5))}), {}, [], ""),
}

#: Cases that need a non-default policy.
POLICIES = {"I10 archive over capacity": Policy(max_archive_size=1)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_defect_reports_exactly_its_violation(name: str) -> None:
    build, flags, expected, message = CASES[name]
    violations = check(build(), POLICIES.get(name), flags)
    assert [(v.invariant, v.key, v.task_id) for v in violations] == expected
    assert [v.message for v in violations] == ([message] if message else [])


def test_every_invariant_has_a_tripping_case() -> None:
    tripped = {expected[0][0] for _, _, expected, _ in CASES.values() if expected}
    assert tripped == set(INVARIANTS) == {f"I{n}" for n in range(1, 15)}


def test_each_check_in_the_registry_reports_only_its_own_id() -> None:
    for name, (build, flags, expected, _) in CASES.items():
        if not expected:
            continue
        own = expected[0][0]
        _, run = INVARIANTS[own]
        violations = run(build(), POLICIES.get(name), quiescent=flags.get("quiescent", False),
                         strict_locks=flags.get("strict_locks", False))
        assert [v.invariant for v in violations] == [own], name


def test_violation_str_names_invariant_key_and_message() -> None:
    v = check_all(snap(drop(clean(), keys.lease(Q))))[0]
    assert str(v) == "I3 [asynq:{q}:active] a1 is in active but has no lease entry"


def test_time_checks_use_the_policy() -> None:
    entries = put(clean(), zset(keys.lease(Q), ("a1", NOW - 10)))
    assert check_all(snap(entries), quiescent=True) == []
    assert [v.invariant for v in check_all(snap(entries), Policy(recover_skew=10), quiescent=True)] == ["I5"]


def test_zombies_and_dangling_ids_are_reported_per_task() -> None:
    """Asynq's archive trim without DEL (BZ-1/2) leaves one zombie per trimmed id."""
    entries = put(clean(), task("ar2", "archived"), task("ar3", "archived"),
                  zset(keys.archived(Q), ("ar3", NOW), ("old", NOW - 1)))
    assert found(snap(entries)) == [("I1", T(Q, "ar1"), "ar1"), ("I1", T(Q, "ar2"), "ar2"),
                                    ("I2", keys.archived(Q), "old")]


def test_classify_key_families() -> None:
    assert classify(Q, keys.group(Q, "g1")) == KeyInfo(Family.GROUP, "g1")
    assert classify(Q, GROUP_SET) == KeyInfo(Family.GROUP_SET, "g2", "set1")
    assert classify(Q, keys.task(Q, "a:b")) == KeyInfo(Family.TASK, "a:b")
    assert classify(Q, LOCK) == KeyInfo(Family.UNIQUE, "email:99914b932bd37a50b983c5e7c90ae93b")
    assert classify(Q, keys.unique(Q, "email", None)) == KeyInfo(Family.UNIQUE, "email:")
    assert classify(Q, keys.processed_daily(Q, TODAY)) == KeyInfo(Family.PROCESSED_DAILY, TODAY)
    for bad in ("asynq:{q}:g:", "asynq:{q}:g::s", "asynq:{q}:g:a:", "asynq:{q}:t:", "asynq:{q}:pendingx",
                "asynq:{q}:failed:today"):
        assert classify(Q, bad) is None, bad


def test_check_all_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="snapshot must be a KeyspaceSnapshot, got dict"):
        check_all({})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="policy must be a Policy or None, got int"):
        check_all(snap({}), 3)  # type: ignore[arg-type]


def test_violation_is_frozen_data() -> None:
    v = Violation("I2", "k", None, "m")
    with pytest.raises(AttributeError):
        v.key = "other"  # type: ignore[misc]


def test_every_violation_carries_a_kind_of_its_own_invariant() -> None:
    reported: set[Kind] = set()
    for name, (build, flags, _, _) in CASES.items():
        for v in check(build(), POLICIES.get(name), flags):
            assert v.kind is not None and v.kind.invariant == v.invariant, (name, v)
            reported.add(v.kind)
    assert reported == set(Kind)  # no kind the checks never report


def test_a_violation_refuses_a_kind_of_another_invariant() -> None:
    with pytest.raises(ValueError, match="a stub violation breaks I1, not I2"):
        Violation("I2", "k", "t0", "m", Kind.STUB)
    stub = Violation.of(Kind.STUB, "k", "t0", "m")
    assert stub.invariant == "I1"
    assert stub.invariant is Invariant.NO_ORPHAN_HASH


def test_every_kind_belongs_to_exactly_one_invariant() -> None:
    listed = [kind for kinds in KINDS.values() for kind in kinds]
    assert sorted(listed) == sorted(Kind)
    assert list(KINDS) == list(Invariant) and list(INVARIANTS) == list(Invariant)
