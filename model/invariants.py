"""Invariants I1–I14 of spec §5.1, made checkable on one queue's :class:`KeyspaceSnapshot`.

Each ``check_iN`` returns the :class:`Violation` s of one invariant; :func:`check_all` runs them
all, in order, and :data:`INVARIANTS` maps an id to its title and function. Every violation
names its :class:`Invariant` (whose value is the spec's id, ``I1``…) and its :class:`Kind`, what
was found; its message is for people only.

Two flags widen what is checked:

``quiescent``
    The caller asserts that, after the last write, every background pass ran at the snapshot's
    time ``now_ms``: forwarder, janitor (expired completed *and* expired archived tasks) and
    recoverer (lease recovery and stale-aggregation-set reclaim). Only then can the
    time-dependent parts be judged: I5 (no lease with score <= now - recover_skew), the
    deadline part of I8 (no aggregation set whose deadline <= now), I9 (no completed score
    <= now) and the age part of I10 (no archived score <= now - archive cutoff). Without the
    flag they are skipped, because a snapshot taken between passes legitimately holds such
    entries.
``strict_locks``
    The design releases unique locks early (the reference design does; Asynq does not, BZ-4/5).
    Then every live lock's owner must exist, not be completed, and carry ``unique_key`` equal to
    the lock's key (I6). Without it only the lock's TTL is checked.

Keys the queue's key functions cannot produce, keys of the wrong Redis type, empty collections
(Redis deletes those) and keys of other queues are reported under **I12** ("the queue's
keyspace is exactly its registered key families"); the other checks then ignore such keys.
I14 looks only at the snapshot's ``extra`` mapping: per-queue snapshots carry no global
registry keys, so I14 is vacuous unless a caller fills ``extra``.

>>> from model.snapshot import KeyEntry, KeyType
>>> key = keys.task("q", "abc")
>>> zombie = KeyEntry(key, KeyType.HASH, {"msg": "?", "state": "archived"})
>>> snap = KeyspaceSnapshot("q", now_ms=0, entries={key: zombie}, registered=True)
>>> [(v.kind, v.message) for v in check_i1(snap)][-1]
(<Kind.ZOMBIE: 'zombie'>, 'zombie: t:abc is archived but in no index (expected archived)')
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from model import keys
from model.message import TaskMessage
from model.policy import Policy
from model.snapshot import HashValue, KeyEntry, KeyspaceSnapshot, KeyType
from model.states import TaskState


class Invariant(StrEnum):
    """The invariants of spec §5.1. The value is the spec's id (``I1``…``I14``), what the docs,
    the CLI and saved records show; a member compares equal to its id.

    >>> Invariant.LOCK_OWNER_ALIVE == "I6", f"{Invariant.LOCK_OWNER_ALIVE}"
    (True, 'I6')
    """

    NO_ORPHAN_HASH = "I1"  # no orphan hash
    NO_DANGLING_ENTRY = "I2"  # no dangling index entry
    ACTIVE_MATCHES_LEASE = "I3"  # active ⇔ lease
    SINGLE_MEMBERSHIP = "I4"  # single membership
    LEASES_RECOVERED = "I5"  # lease liveness (quiescent)
    LOCK_OWNER_ALIVE = "I6"  # unique locks: a TTL, and (strict) a live owner that names the lock
    GROUPS_REGISTERED = "I7"  # groups registry
    AGGREGATION_SETS_INDEXED = "I8"  # aggregation index
    COMPLETED_EXPIRED = "I9"  # completed bounded (quiescent)
    ARCHIVE_BOUNDED = "I10"  # archive bounded
    TASK_DATA_NEVER_EXPIRES = "I11"  # no TTL on task data
    QUEUE_REGISTERED = "I12"  # queue registry and key layout
    STATS_COUNTERS_SOUND = "I13"  # stats counters
    REGISTRIES_LIVE = "I14"  # global registries (extra keys only)


class Kind(StrEnum):
    """What a violation found: one kind per thing a check reports, each of one invariant
    (:attr:`invariant`). Code that tells violations apart matches these, never the message.

    >>> Kind.ORPHAN_GROUP.invariant == Invariant.GROUPS_REGISTERED
    True
    """

    # I1: a task hash that is malformed or sits where its state does not put it
    STUB = "stub"  # a hash without msg or state (written by an HSET on a missing task)
    UNDECODABLE_MESSAGE = "undecodable message"
    FOREIGN_MESSAGE = "foreign message"  # the msg of another task id or queue
    UNKNOWN_STATE = "unknown state"
    AGGREGATING_WITHOUT_GROUP = "aggregating without group"
    ZOMBIE = "zombie"  # in no index at all
    MISPLACED = "misplaced"  # in an index, but not the one its state requires
    # I2
    DANGLING = "dangling"  # an index holds an id whose hash does not exist
    # I3
    DUPLICATE_IN_ACTIVE = "duplicate in active"
    ACTIVE_WITHOUT_LEASE = "active without lease"
    LEASE_WITHOUT_ACTIVE = "lease without active"
    # I4
    IN_SEVERAL_INDEXES = "in several indexes"
    DUPLICATE_IN_PENDING = "duplicate in pending"
    # I5
    EXPIRED_LEASE = "expired lease"
    # I6
    LOCK_WITHOUT_TTL = "lock without ttl"
    STALE_LOCK = "stale lock"  # a live lock whose owner is gone, completed or names another lock
    # I7
    STALE_GROUP = "stale group"  # listed in groups, but its zset is empty
    ORPHAN_GROUP = "orphan group"  # a group zset not listed in groups
    # I8
    UNINDEXED_AGGREGATION_SET = "unindexed aggregation set"
    DANGLING_AGGREGATION_SET = "dangling aggregation set"  # listed, but not an existing set
    OVERDUE_AGGREGATION_SET = "overdue aggregation set"
    # I9
    OVERDUE_COMPLETED = "overdue completed"
    # I10
    ARCHIVE_OVER_CAPACITY = "archive over capacity"
    ARCHIVED_PAST_CUTOFF = "archived past cutoff"
    # I11
    TTL_ON_TASK_DATA = "ttl on task data"
    # I12
    FOREIGN_KEY = "foreign key"
    UNKNOWN_KEY = "unknown key"
    WRONG_TYPE = "wrong type"
    EMPTY_COLLECTION = "empty collection"
    UNREGISTERED_QUEUE = "unregistered queue"
    # I13
    COUNTER_NOT_INTEGER = "counter not integer"
    DAILY_COUNTER_WITHOUT_TTL = "daily counter without ttl"
    DAILY_COUNTER_TTL_TOO_LONG = "daily counter ttl too long"
    TOTAL_COUNTER_WITH_TTL = "total counter with ttl"
    # I14
    REGISTRY_NOT_A_ZSET = "registry not a zset"
    REGISTRY_MEMBER_MISSING = "registry member missing"
    REGISTRY_MEMBER_WITHOUT_TTL = "registry member without ttl"

    @property
    def invariant(self) -> Invariant:
        """The invariant this kind of violation breaks."""
        return _INVARIANT_OF[self]


#: The kinds of violation each invariant's check reports.
KINDS: Mapping[Invariant, tuple[Kind, ...]] = {
    Invariant.NO_ORPHAN_HASH: (
        Kind.STUB, Kind.UNDECODABLE_MESSAGE, Kind.FOREIGN_MESSAGE, Kind.UNKNOWN_STATE,
        Kind.AGGREGATING_WITHOUT_GROUP, Kind.ZOMBIE, Kind.MISPLACED),
    Invariant.NO_DANGLING_ENTRY: (Kind.DANGLING,),
    Invariant.ACTIVE_MATCHES_LEASE: (
        Kind.DUPLICATE_IN_ACTIVE, Kind.ACTIVE_WITHOUT_LEASE, Kind.LEASE_WITHOUT_ACTIVE),
    Invariant.SINGLE_MEMBERSHIP: (Kind.IN_SEVERAL_INDEXES, Kind.DUPLICATE_IN_PENDING),
    Invariant.LEASES_RECOVERED: (Kind.EXPIRED_LEASE,),
    Invariant.LOCK_OWNER_ALIVE: (Kind.LOCK_WITHOUT_TTL, Kind.STALE_LOCK),
    Invariant.GROUPS_REGISTERED: (Kind.STALE_GROUP, Kind.ORPHAN_GROUP),
    Invariant.AGGREGATION_SETS_INDEXED: (
        Kind.UNINDEXED_AGGREGATION_SET, Kind.DANGLING_AGGREGATION_SET,
        Kind.OVERDUE_AGGREGATION_SET),
    Invariant.COMPLETED_EXPIRED: (Kind.OVERDUE_COMPLETED,),
    Invariant.ARCHIVE_BOUNDED: (Kind.ARCHIVE_OVER_CAPACITY, Kind.ARCHIVED_PAST_CUTOFF),
    Invariant.TASK_DATA_NEVER_EXPIRES: (Kind.TTL_ON_TASK_DATA,),
    Invariant.QUEUE_REGISTERED: (
        Kind.FOREIGN_KEY, Kind.UNKNOWN_KEY, Kind.WRONG_TYPE, Kind.EMPTY_COLLECTION,
        Kind.UNREGISTERED_QUEUE),
    Invariant.STATS_COUNTERS_SOUND: (
        Kind.COUNTER_NOT_INTEGER, Kind.DAILY_COUNTER_WITHOUT_TTL,
        Kind.DAILY_COUNTER_TTL_TOO_LONG, Kind.TOTAL_COUNTER_WITH_TTL),
    Invariant.REGISTRIES_LIVE: (
        Kind.REGISTRY_NOT_A_ZSET, Kind.REGISTRY_MEMBER_MISSING,
        Kind.REGISTRY_MEMBER_WITHOUT_TTL),
}
_INVARIANT_OF: Mapping[Kind, Invariant] = {
    kind: invariant for invariant, kinds in KINDS.items() for kind in kinds}


@dataclass(frozen=True)
class Violation:
    """One broken invariant: which (``"I1"``..``"I14"``), on which key, for which task, why (the
    message, for people) and what was found (the :class:`Kind`, for code).

    Checks of this module build violations with :meth:`of`, so every one carries a kind; a kind
    of None is left to checks written elsewhere (e.g. a test's own stand-in invariant).

    >>> v = Violation.of(Kind.ACTIVE_WITHOUT_LEASE, "asynq:{q}:active", "t1",
    ...                  "t1 is in active but has no lease entry")
    >>> str(v)
    'I3 [asynq:{q}:active] t1 is in active but has no lease entry'
    >>> v.invariant == "I3", v.kind.invariant is Invariant.ACTIVE_MATCHES_LEASE
    (True, True)
    """

    invariant: str
    key: str
    task_id: str | None
    message: str
    kind: Kind | None = None

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind.invariant != self.invariant:
            raise ValueError(f"a {self.kind} violation breaks {self.kind.invariant}, "
                             f"not {self.invariant}")

    @classmethod
    def of(cls, kind: Kind, key: str, task_id: str | None, message: str) -> Violation:
        """A violation of ``kind`` (its invariant is the kind's)."""
        return cls(kind.invariant, key, task_id, message, kind)

    def __str__(self) -> str:
        return f"{self.invariant} [{self.key}] {self.message}"


class Check(Protocol):
    """The signature every ``check_iN`` shares."""

    def __call__(self, snapshot: KeyspaceSnapshot, policy: Policy | None = None, *,
                 quiescent: bool = False, strict_locks: bool = False) -> list[Violation]: ...


# --- key families ----------------------------------------------------------------------------


class Family(StrEnum):
    """The kinds of key a queue may hold (spec §1.1, §1.3, §1.4)."""

    TASK = "task"
    PENDING = "pending"
    ACTIVE = "active"
    LEASE = "lease"
    SCHEDULED = "scheduled"
    RETRY = "retry"
    ARCHIVED = "archived"
    COMPLETED = "completed"
    GROUP = "group"
    GROUP_SET = "aggregation set"
    GROUPS = "groups"
    AGGREGATION_SETS = "aggregation_sets"
    PAUSED = "paused"
    UNIQUE = "unique lock"
    PROCESSED_TOTAL = "processed total"
    FAILED_TOTAL = "failed total"
    PROCESSED_DAILY = "processed daily"
    FAILED_DAILY = "failed daily"


EXPECTED_TYPE: Mapping[Family, KeyType] = {
    Family.TASK: KeyType.HASH,
    Family.PENDING: KeyType.LIST,
    Family.ACTIVE: KeyType.LIST,
    Family.LEASE: KeyType.ZSET,
    Family.SCHEDULED: KeyType.ZSET,
    Family.RETRY: KeyType.ZSET,
    Family.ARCHIVED: KeyType.ZSET,
    Family.COMPLETED: KeyType.ZSET,
    Family.GROUP: KeyType.ZSET,
    Family.GROUP_SET: KeyType.ZSET,
    Family.GROUPS: KeyType.SET,
    Family.AGGREGATION_SETS: KeyType.ZSET,
    Family.PAUSED: KeyType.STRING,
    Family.UNIQUE: KeyType.STRING,
    Family.PROCESSED_TOTAL: KeyType.STRING,
    Family.FAILED_TOTAL: KeyType.STRING,
    Family.PROCESSED_DAILY: KeyType.STRING,
    Family.FAILED_DAILY: KeyType.STRING,
}

#: Families whose members are task ids (the "indexes" of I2 and I4).
INDEX_FAMILIES = frozenset({Family.PENDING, Family.ACTIVE, Family.LEASE, Family.SCHEDULED,
                            Family.RETRY, Family.ARCHIVED, Family.COMPLETED, Family.GROUP,
                            Family.GROUP_SET})
#: Families that may carry a TTL; I11 forbids it on the others except the totals (I13's).
_TTL_FAMILIES = frozenset({Family.UNIQUE, Family.PROCESSED_DAILY, Family.FAILED_DAILY})
_COUNTERS = frozenset({Family.PROCESSED_TOTAL, Family.FAILED_TOTAL, Family.PROCESSED_DAILY,
                       Family.FAILED_DAILY})
#: Families that must never carry a TTL (I11).
_NEVER_EXPIRE = frozenset(Family) - _TTL_FAMILIES - _COUNTERS
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class KeyInfo:
    """What a key is: its family and the name inside it (task id, group, lock suffix or date).

    >>> classify("q", keys.group_set("q", "g1", "s1"))
    KeyInfo(family=<Family.GROUP_SET: 'aggregation set'>, name='g1', set_id='s1')
    >>> classify("q", "asynq:{q}:g:") is None
    True
    """

    family: Family
    name: str = ""
    set_id: str = ""


@functools.lru_cache(maxsize=16_384)
def classify(queue: str, key: str) -> KeyInfo | None:
    """The family of ``key`` within ``queue``, or None when no key function of the queue makes it.

    A group zset has exactly one segment after ``g:`` (group names cannot contain ``:``); two
    segments, ``g:<group>:<setID>``, make an aggregation set.
    """
    exact = _exact_names(queue)
    if key in exact:
        return KeyInfo(exact[key])
    return _classify_prefixed(queue, key)


@functools.lru_cache(maxsize=256)
def _exact_names(queue: str) -> Mapping[str, Family]:
    return {
        keys.pending(queue): Family.PENDING, keys.active(queue): Family.ACTIVE,
        keys.lease(queue): Family.LEASE, keys.scheduled(queue): Family.SCHEDULED,
        keys.retry(queue): Family.RETRY, keys.archived(queue): Family.ARCHIVED,
        keys.completed(queue): Family.COMPLETED, keys.groups(queue): Family.GROUPS,
        keys.aggregation_sets(queue): Family.AGGREGATION_SETS, keys.paused(queue): Family.PAUSED,
        keys.processed_total(queue): Family.PROCESSED_TOTAL,
        keys.failed_total(queue): Family.FAILED_TOTAL,
    }


def _classify_prefixed(queue: str, key: str) -> KeyInfo | None:
    for prefix, family in ((keys.task_prefix(queue), Family.TASK),
                           (keys.unique_prefix(queue), Family.UNIQUE)):
        if key.startswith(prefix) and len(key) > len(prefix):
            return KeyInfo(family, key[len(prefix):])
    if key.startswith(keys.group_prefix(queue)):
        return _classify_group(key[len(keys.group_prefix(queue)):])
    for prefix, family in ((keys.processed_daily(queue, ""), Family.PROCESSED_DAILY),
                           (keys.failed_daily(queue, ""), Family.FAILED_DAILY)):
        if key.startswith(prefix) and _is_date(key[len(prefix):]):
            return KeyInfo(family, key[len(prefix):])
    return None


def _classify_group(rest: str) -> KeyInfo | None:
    name, sep, set_id = rest.partition(":")
    if not name or (sep and (not set_id or ":" in set_id)):
        return None
    return KeyInfo(Family.GROUP_SET, name, set_id) if sep else KeyInfo(Family.GROUP, name)


def _is_date(text: str) -> bool:
    if not _DATE.fullmatch(text):
        return False
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


# --- a checked view of one snapshot ----------------------------------------------------------


@dataclass
class _View:
    """The snapshot's well-formed keys by family, plus the layout problems found on the way."""

    snap: KeyspaceSnapshot
    info: dict[str, KeyInfo] = field(default_factory=dict)
    layout: list[Violation] = field(default_factory=list)
    #: The well-formed entries of each family, sorted by key (what :meth:`of` walks).
    families: dict[Family, list[tuple[KeyEntry, KeyInfo]]] = field(default_factory=dict)
    _prefix: str = ""
    _slots: dict[str, set[str]] | None = None

    @classmethod
    def build(cls, snap: KeyspaceSnapshot) -> _View:
        view = cls(snap, _prefix=keys.queue_prefix(snap.queue))
        for key in sorted(snap.entries):
            view._admit(key, snap.entries[key])
        for key, info in view.info.items():
            view.families.setdefault(info.family, []).append((snap.entries[key], info))
        return view

    def _admit(self, key: str, entry: KeyEntry) -> None:
        info = classify(self.snap.queue, key)
        if not key.startswith(self._prefix):  # a name may hold '}:': no hash-tag test
            self._problem(key, Kind.FOREIGN_KEY,
                          f"foreign key: {key} is not a key of queue {self.snap.queue!r}")
        elif info is None:
            self._problem(key, Kind.UNKNOWN_KEY,
                          f"unknown key: {self.short(key)} is under the queue's prefix "
                               "but no key function produces it")
        elif entry.type is not EXPECTED_TYPE[info.family]:
            self._problem(key, Kind.WRONG_TYPE, f"wrong type: {self.short(key)} is a {entry.type}, "
                               f"expected a {EXPECTED_TYPE[info.family]}")
        elif entry.type is not KeyType.STRING and not entry.value:
            self._problem(key, Kind.EMPTY_COLLECTION,
                          f"empty {entry.type}: {self.short(key)} exists with no elements "
                               "(Redis deletes empty collections)")
        else:
            self.info[key] = info

    def _problem(self, key: str, kind: Kind, message: str) -> None:
        self.layout.append(Violation.of(kind, key, None, message))

    @property
    def queue(self) -> str:
        return self.snap.queue

    @property
    def now_s(self) -> int:
        return self.snap.now_ms // 1000

    def short(self, key: str) -> str:
        """``key`` without the queue prefix, for messages: ``t:abc``, ``g:g1``."""
        prefix = self._prefix
        return key[len(prefix):] if key.startswith(prefix) else key

    def of(self, *families: Family) -> Iterator[tuple[KeyEntry, KeyInfo]]:
        """Well-formed entries of the given families, sorted by key."""
        if len(families) == 1:
            yield from self.families.get(families[0], ())
            return
        wanted = frozenset(families)
        for key, info in self.info.items():
            if info.family in wanted:
                yield self.snap.entries[key], info

    def entry(self, key: str) -> KeyEntry | None:
        """The entry of ``key`` when it is well formed, else None."""
        return self.snap.entries[key] if key in self.info else None

    def members(self, key: str) -> tuple[str, ...]:
        entry = self.entry(key)
        return () if entry is None else entry.members()

    def zset(self, key: str) -> tuple[tuple[str, float], ...]:
        entry = self.entry(key)
        return () if entry is None else entry.zset()

    def task_hash(self, task_id: str) -> HashValue | None:
        entry = self.entry(keys.task(self.queue, task_id))
        return None if entry is None else entry.hash()

    def slots(self) -> dict[str, set[str]]:
        """Task id → the index keys holding it; lease counts as the active slot (I3 pairs them).
        Worked out once per view (I1 and I4 both ask); callers must not change it."""
        if self._slots is None:
            out: dict[str, set[str]] = {}
            for entry, info in self.of(*INDEX_FAMILIES):
                slot = keys.active(self.queue) if info.family is Family.LEASE else entry.key
                for task_id in entry.members():
                    out.setdefault(task_id, set()).add(slot)
            self._slots = out
        return self._slots


def _num(score: float) -> str:
    """A zset score as Redis prints it: ``1700000000``, not ``1.7e+09``."""
    return str(int(score)) if score.is_integer() else repr(score)


def _state_of(fields: HashValue) -> TaskState | None:
    raw = fields.get("state")
    return _STORED_STATES.get(raw) if isinstance(raw, str) else None


#: The ``state`` field values of stored tasks.
_STORED_STATES = {state.value: state for state in TaskState if state.stored}


# --- I1 --------------------------------------------------------------------------------------


def _i1(view: _View, policy: Policy, quiescent: bool, strict_locks: bool) -> list[Violation]:
    """I1 no orphan hash: every ``t:<id>`` has a decodable ``msg`` for ``<id>`` in this queue and a
    valid ``state``, and its id sits in the index its state requires (spec §2.1): pending →
    pending, active → active or lease (I3 pairs the two), scheduled/retry/archived/completed →
    that zset, aggregating → ``g:<group field>`` or one of that group's aggregation sets.

    Being in *additional* indexes is I4's, so a task breaks at most one placement rule here.
    """
    slots = view.slots()
    out: list[Violation] = []
    for entry, info in view.of(Family.TASK):
        fields = entry.hash()
        out.extend(_hash_problems(view, entry.key, info.name, fields))
        state = _state_of(fields)
        if state is not None:
            out.extend(_placement(view, entry.key, info.name, state, fields,
                                  slots.get(info.name, set())))
    return out


def _hash_problems(view: _View, key: str, task_id: str, fields: HashValue) -> list[Violation]:
    name = view.short(key)
    missing = [f for f in ("msg", "state") if f not in fields]
    if missing:
        have = ", ".join(sorted(fields)) or "none"
        what = " or ".join(missing)
        return [Violation.of(Kind.STUB, key, task_id, f"stub: {name} has no {what} field (fields: {have})")]
    out = []
    msg, state = fields["msg"], fields["state"]
    if not isinstance(msg, TaskMessage):
        out.append(Violation.of(Kind.UNDECODABLE_MESSAGE, key, task_id,
                                f"{name} has a msg that does not decode"))
    elif (msg.id, msg.queue) != (task_id, view.queue):
        out.append(Violation.of(Kind.FOREIGN_MESSAGE, key, task_id,
                                f"{name} holds the message of task {msg.id!r} "
                                f"in queue {msg.queue!r}"))
    if _state_of(fields) is None:
        out.append(Violation.of(Kind.UNKNOWN_STATE, key, task_id,
                                f"{name} has state {state!s:.40}, which is not "
                                "the state of a stored task"))
    return out


def _placement(view: _View, key: str, task_id: str, state: TaskState, fields: HashValue,
               slots: set[str]) -> list[Violation]:
    name, q = view.short(key), view.queue
    if state is TaskState.AGGREGATING:
        group = fields.get("group")
        if not isinstance(group, str) or not group:
            return [Violation.of(Kind.AGGREGATING_WITHOUT_GROUP, key, task_id,
                                 f"{name} is aggregating but has no group field")]
        home = {s for s in slots if _in_group(view, s, group)}
        expected = f"g:{group} or one of its aggregation sets"
    else:
        index = keys.state_index(q, state)
        home = slots & {index}
        expected = view.short(index)
    if home:
        return []
    if not slots:
        return [Violation.of(Kind.ZOMBIE, key, task_id, f"zombie: {name} is {state} but in no index "
                                                        f"(expected {expected})")]
    where = ", ".join(view.short(s) for s in sorted(slots))
    return [Violation.of(Kind.MISPLACED, key, task_id,
                         f"{name} is {state} but sits in {where}, not in {expected}")]


def _in_group(view: _View, slot: str, group: str) -> bool:
    info = view.info.get(slot)
    return info is not None and info.family in (Family.GROUP, Family.GROUP_SET) and info.name == group


# --- I2, I3, I4 ------------------------------------------------------------------------------


def _i2(view: _View, policy: Policy, quiescent: bool, strict_locks: bool) -> list[Violation]:
    """I2 no dangling index entry: every id in pending, active, lease, scheduled, retry, archived,
    completed, a group zset or an aggregation set has a task hash. One violation per index and id.
    """
    out = []
    for entry, _ in view.of(*INDEX_FAMILIES):
        for task_id in dict.fromkeys(entry.members()):
            if view.task_hash(task_id) is None:
                task = view.short(keys.task(view.queue, task_id))
                message = f"dangling: {view.short(entry.key)} holds {task_id!r} but {task} does not exist"
                out.append(Violation.of(Kind.DANGLING, entry.key, task_id, message))
    return out


def _i3(view: _View, policy: Policy, quiescent: bool, strict_locks: bool) -> list[Violation]:
    """I3 active ⇔ lease: the active list, as a set, equals the lease members, and no id appears
    twice in active.
    """
    active_key, lease_key = keys.active(view.queue), keys.lease(view.queue)
    active = Counter(view.members(active_key))
    lease = set(view.members(lease_key))
    out = [Violation.of(Kind.DUPLICATE_IN_ACTIVE, active_key, t, f"{t} appears {n} times in active")
           for t, n in active.items() if n > 1]
    out += [Violation.of(Kind.ACTIVE_WITHOUT_LEASE, active_key, t, f"{t} is in active but has no lease entry")
            for t in active if t not in lease]
    out += [Violation.of(Kind.LEASE_WITHOUT_ACTIVE, lease_key, t,
                         f"{t} has a lease entry but is not in active")
            for t in sorted(lease - set(active))]
    return out


def _i4(view: _View, policy: Policy, quiescent: bool, strict_locks: bool) -> list[Violation]:
    """I4 single membership: an id is in at most one index (active and lease count as one; group
    zsets and aggregation sets count as indexes) and at most once in the pending list.
    """
    out = []
    for task_id, slots in sorted(view.slots().items()):
        if len(slots) > 1:
            where = ", ".join(view.short(s) for s in sorted(slots))
            out.append(Violation.of(Kind.IN_SEVERAL_INDEXES, keys.task(view.queue, task_id), task_id,
                                    f"{task_id} is in {len(slots)} indexes at once: {where}"))
    pending_key = keys.pending(view.queue)
    out += [Violation.of(Kind.DUPLICATE_IN_PENDING, pending_key, t, f"{t} appears {n} times in pending")
            for t, n in Counter(view.members(pending_key)).items() if n > 1]
    return out


# --- I5 – I10: liveness, locks, groups, bounds -------------------------------------------------


def _i5(view: _View, policy: Policy, quiescent: bool, strict_locks: bool) -> list[Violation]:
    """I5 lease liveness (quiescent only): a recoverer pass at ``now`` recovers every lease with
    score <= now − recover_skew, so none may remain. Dangling lease ids (BZ-7) count too.
    """
    if not quiescent:
        return []
    cutoff = view.now_s - policy.recover_skew
    lease_key = keys.lease(view.queue)
    return [Violation.of(Kind.EXPIRED_LEASE, lease_key, t,
                         f"{t}'s lease expired at {_num(score)}; a recoverer pass at "
                         f"now={view.now_s} (cutoff {cutoff}) left it in lease")
            for t, score in view.zset(lease_key) if score <= cutoff]


def _i6(view: _View, policy: Policy, quiescent: bool, strict_locks: bool) -> list[Violation]:
    """I6 unique locks: every lock has a TTL. With ``strict_locks``, a lock not yet expired is
    held by an existing task that is not completed and whose ``unique_key`` is this lock
    (aggregating and archived owners hold their locks legitimately).
    """
    out = []
    for entry, _ in view.of(Family.UNIQUE):
        name = view.short(entry.key)
        if not entry.has_ttl:
            out.append(Violation.of(Kind.LOCK_WITHOUT_TTL, entry.key, entry.string() or None,
                                    f"{name} has no TTL"))
        elif strict_locks and entry.expire_at_ms is not None and entry.expire_at_ms > view.snap.now_ms:
            out.extend(_lock_owner(view, entry))
    return out


def _lock_owner(view: _View, entry: KeyEntry) -> list[Violation]:
    owner, name = entry.string(), view.short(entry.key)
    fields = view.task_hash(owner)
    if fields is None:
        problem = "which does not exist"
    elif _state_of(fields) is TaskState.COMPLETED:
        problem = "which is completed"
    elif fields.get("unique_key") != entry.key:
        problem = f"whose unique_key is {fields.get('unique_key', '(unset)')!s:.60}"
    else:
        return []
    return [Violation.of(Kind.STALE_LOCK, entry.key, owner, f"early-release failure: {name} is held by "
                                                            f"{owner!r}, {problem}")]


def _i7(view: _View, policy: Policy, quiescent: bool, strict_locks: bool) -> list[Violation]:
    """I7 groups registry: a name is in ``groups`` ⇔ ``g:<name>`` is a non-empty group zset.
    Aggregation-set keys ``g:<name>:<setID>`` are not groups.
    """
    groups_key = keys.groups(view.queue)
    listed = set(view.members(groups_key))
    present = {info.name: entry for entry, info in view.of(Family.GROUP)}
    out = [Violation.of(Kind.STALE_GROUP, groups_key, None,
                        f"stale group: groups lists {name!r} but "
                        f"{view.short(keys.group(view.queue, name))} is empty")
           for name in sorted(listed - set(present))]
    out += [Violation.of(Kind.ORPHAN_GROUP, present[name].key, None,
                         f"orphan group: g:{name} holds {len(present[name].zset())} task(s) "
                         f"but {name!r} is not in groups")
            for name in sorted(set(present) - listed)]
    return out


def _i8(view: _View, policy: Policy, quiescent: bool, strict_locks: bool) -> list[Violation]:
    """I8 aggregation index: an aggregation-set key exists ⇔ it is a member of
    ``aggregation_sets``. Quiescent: a reclaim pass at ``now`` leaves no deadline <= now.
    """
    index_key = keys.aggregation_sets(view.queue)
    index = dict(view.zset(index_key))
    sets = {entry.key for entry, _ in view.of(Family.GROUP_SET)}
    out = [Violation.of(Kind.UNINDEXED_AGGREGATION_SET, k, None,
                        f"aggregation set {view.short(k)} is not in aggregation_sets")
           for k in sorted(sets - set(index))]
    for member in sorted(set(index) - sets):
        info = classify(view.queue, member)
        why = ("but that set does not exist" if info is not None and info.family is Family.GROUP_SET
               else f"which is not an aggregation-set key of queue {view.queue!r}")
        out.append(Violation.of(Kind.DANGLING_AGGREGATION_SET, index_key, None,
                                f"aggregation_sets lists {view.short(member)} {why}"))
    if quiescent:
        out += [Violation.of(Kind.OVERDUE_AGGREGATION_SET, index_key, None,
                             f"aggregation set {view.short(m)} passed its "
                             f"deadline {_num(d)}; a reclaim pass at now="
                             f"{view.now_s} left it")
                for m, d in view.zset(index_key) if d <= view.now_s]
    return out


def _i9(view: _View, policy: Policy, quiescent: bool, strict_locks: bool) -> list[Violation]:
    """I9 completed bounded (quiescent only): a janitor pass at ``now`` deletes every completed
    task whose expiry score <= now, so none may remain.
    """
    if not quiescent:
        return []
    completed = keys.completed(view.queue)
    return [Violation.of(Kind.OVERDUE_COMPLETED, completed, t,
                         f"{t} expired from completed at {_num(score)}; a janitor pass "
                         f"at now={view.now_s} left it")
            for t, score in view.zset(completed) if score <= view.now_s]


def _i10(view: _View, policy: Policy, quiescent: bool, strict_locks: bool) -> list[Violation]:
    """I10 archive bounded: ZCARD archived <= ``policy.archive_capacity``. Quiescent: a janitor
    pass at ``now`` leaves no archived score <= now − archive cutoff.
    """
    archived = keys.archived(view.queue)
    entries = view.zset(archived)
    out = []
    if len(entries) > policy.archive_capacity:
        out.append(Violation.of(Kind.ARCHIVE_OVER_CAPACITY, archived, None,
                                f"archived holds {len(entries)} entries, above "
                                f"the capacity {policy.archive_capacity}"))
    if quiescent:
        cutoff = view.now_s - policy.archive_cutoff
        out += [Violation.of(Kind.ARCHIVED_PAST_CUTOFF, archived, t,
                             f"{t} was archived at {_num(score)}, before the cutoff "
                             f"{cutoff}; a janitor pass at now={view.now_s} left it")
                for t, score in entries if score <= cutoff]
    return out


# --- I11 – I14: TTLs, registries ---------------------------------------------------------------


def _i11(view: _View, policy: Policy, quiescent: bool, strict_locks: bool) -> list[Violation]:
    """I11 no TTL on task data: task hashes, every index, ``groups``, ``aggregation_sets`` and
    ``paused`` never expire. (Counters are I13's; locks must have a TTL, I6.)
    """
    return [Violation.of(Kind.TTL_ON_TASK_DATA, entry.key, info.name if info.family is Family.TASK else None,
                         f"{view.short(entry.key)} has a TTL (expires at {entry.expire_at_ms} ms); "
                         f"a {info.family} key must never expire")
            for entry, info in view.of(*_NEVER_EXPIRE)
            if entry.has_ttl]


def _i12(view: _View, policy: Policy, quiescent: bool, strict_locks: bool) -> list[Violation]:
    """I12 queue registry and layout: a queue holding any key is in ``asynq:queues``; every key is
    one a key function of this queue produces, with the Redis type that family has, and no
    collection is empty.
    """
    out = list(view.layout)
    if view.snap.entries and not view.snap.registered:
        out.append(Violation.of(Kind.UNREGISTERED_QUEUE, keys.ALL_QUEUES, None,
                                f"queue {view.queue!r} has {len(view.snap.entries)} key(s) but is not "
                                f"in {keys.ALL_QUEUES}"))
    return out


def _i13(view: _View, policy: Policy, quiescent: bool, strict_locks: bool) -> list[Violation]:
    """I13 stats: a daily counter has a TTL at most ``stats_ttl`` from now; total counters have
    none; every counter holds an integer.
    """
    limit = view.snap.now_ms + policy.stats_ttl * 1000
    out = []
    for entry, info in view.of(*_COUNTERS):
        name, daily = view.short(entry.key), info.family in _TTL_FAMILIES
        if not re.fullmatch(r"-?\d+", entry.string()):
            out.append(Violation.of(Kind.COUNTER_NOT_INTEGER, entry.key, None,
                                    f"{name} holds {entry.string()!r:.40}, "
                                    "not an integer"))
        if daily and entry.expire_at_ms is None:
            out.append(Violation.of(Kind.DAILY_COUNTER_WITHOUT_TTL, entry.key, None, f"{name} has no TTL"))
        elif daily and entry.expire_at_ms is not None and entry.expire_at_ms > limit:
            out.append(Violation.of(Kind.DAILY_COUNTER_TTL_TOO_LONG, entry.key, None,
                                    f"{name} expires at {entry.expire_at_ms} ms, "
                                    f"more than stats_ttl from now ({limit} ms)"))
        elif not daily and entry.has_ttl:
            out.append(Violation.of(Kind.TOTAL_COUNTER_WITH_TTL, entry.key, None,
                                    f"{name} has a TTL; totals never expire"))
    return out


REGISTRIES = (keys.SERVERS, keys.WORKERS, keys.SCHEDULERS)


def _i14(view: _View, policy: Policy, quiescent: bool, strict_locks: bool) -> list[Violation]:
    """I14 registries, judged on ``snapshot.extra`` only (empty for per-queue snapshots): each of
    ``asynq:servers|workers|schedulers`` present is a zset; a member with score >= now names a
    key present in ``extra`` (except workers: a server without workers has no workers hash);
    every member key present has a TTL.
    """
    now_s = view.snap.now_ms // 1000
    out = []
    for registry in REGISTRIES:
        entry = view.snap.extra.get(registry)
        if entry is None:
            continue
        if entry.type is not KeyType.ZSET:
            out.append(Violation.of(Kind.REGISTRY_NOT_A_ZSET, registry, None,
                                    f"{registry} is a {entry.type}, expected a zset"))
            continue
        for member, score in entry.zset():
            live = view.snap.extra.get(member)
            if live is None and score >= now_s and registry != keys.WORKERS:
                out.append(Violation.of(Kind.REGISTRY_MEMBER_MISSING, registry, None,
                                        f"{registry} lists {member} as live until "
                                        f"{_num(score)} but that key does not exist"))
            elif live is not None and not live.has_ttl:
                out.append(Violation.of(Kind.REGISTRY_MEMBER_WITHOUT_TTL, member, None,
                                        f"{member} has no TTL"))
    return out


# --- registry --------------------------------------------------------------------------------

_Impl = Callable[[_View, Policy, bool, bool], list[Violation]]

#: Invariant id → (title, check), in order.
INVARIANTS: dict[str, tuple[str, Check]] = {}
_IMPLS: dict[str, _Impl] = {}


def _register(invariant: Invariant, title: str, impl: _Impl) -> Check:
    """Record ``impl`` under ``invariant`` and return its public ``check_iN``."""

    def check(snapshot: KeyspaceSnapshot, policy: Policy | None = None, *,
              quiescent: bool = False, strict_locks: bool = False) -> list[Violation]:
        _validate(snapshot, policy)
        return impl(_View.build(snapshot), policy or Policy(), quiescent, strict_locks)

    check.__name__ = check.__qualname__ = f"check_{invariant.lower()}"
    check.__doc__ = impl.__doc__
    INVARIANTS[invariant] = (title, check)
    _IMPLS[invariant] = impl
    return check


def _validate(snapshot: object, policy: object) -> None:
    if not isinstance(snapshot, KeyspaceSnapshot):
        raise TypeError(f"snapshot must be a KeyspaceSnapshot, got {type(snapshot).__name__}")
    if policy is not None and not isinstance(policy, Policy):
        raise TypeError(f"policy must be a Policy or None, got {type(policy).__name__}")


check_i1 = _register(Invariant.NO_ORPHAN_HASH, "no orphan hash", _i1)
check_i2 = _register(Invariant.NO_DANGLING_ENTRY, "no dangling index entry", _i2)
check_i3 = _register(Invariant.ACTIVE_MATCHES_LEASE, "active ⇔ lease", _i3)
check_i4 = _register(Invariant.SINGLE_MEMBERSHIP, "single membership", _i4)
check_i5 = _register(Invariant.LEASES_RECOVERED, "lease liveness (quiescent)", _i5)
check_i6 = _register(Invariant.LOCK_OWNER_ALIVE, "unique locks", _i6)
check_i7 = _register(Invariant.GROUPS_REGISTERED, "groups registry", _i7)
check_i8 = _register(Invariant.AGGREGATION_SETS_INDEXED, "aggregation index", _i8)
check_i9 = _register(Invariant.COMPLETED_EXPIRED, "completed bounded (quiescent)", _i9)
check_i10 = _register(Invariant.ARCHIVE_BOUNDED, "archive bounded", _i10)
check_i11 = _register(Invariant.TASK_DATA_NEVER_EXPIRES, "no TTL on task data", _i11)
check_i12 = _register(Invariant.QUEUE_REGISTERED, "queue registry and key layout", _i12)
check_i13 = _register(Invariant.STATS_COUNTERS_SOUND, "stats counters", _i13)
check_i14 = _register(Invariant.REGISTRIES_LIVE, "global registries (extra keys only)", _i14)


def check_all(snapshot: KeyspaceSnapshot, policy: Policy | None = None, *,
              quiescent: bool = False, strict_locks: bool = False) -> list[Violation]:
    """Every violation of I1–I14, in invariant order; empty when the snapshot is sound.

    ``policy`` defaults to ``Policy()``; see the module docstring for ``quiescent`` and
    ``strict_locks``. The snapshot is parsed once for all fourteen checks.

    >>> check_all(KeyspaceSnapshot("q", now_ms=0, entries={}))
    []
    """
    _validate(snapshot, policy)
    view, policy = _View.build(snapshot), policy or Policy()
    return [v for impl in _IMPLS.values() for v in impl(view, policy, quiescent, strict_locks)]
