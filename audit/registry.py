"""The ``asynq:`` keys outside every queue: process registries, scheduler history, the rest.

Asynq keeps three registries (spec §1.5), zsets whose members name per-process keys and whose
scores are those keys' deadlines (Unix seconds): ``asynq:servers`` → ``asynq:servers:{<host:pid:
sid>}`` (STRING, TTL 10 s), ``asynq:workers`` → ``asynq:workers:{…}`` (HASH, TTL 10 s; absent
while a server has no workers) and ``asynq:schedulers`` → ``asynq:schedulers:{<scheduler id>}``
(LIST of SchedulerEntry, TTL 2 × the scheduler's heartbeat). Each entry of a scheduler records
its enqueues in ``asynq:scheduler_history:<entry id>`` (ZSET scored by enqueue time), which
has **no TTL** and is deleted only by a graceful ``Scheduler.Shutdown`` for the entries still
registered then: ``Unregister`` and crashes leave it for good (BZ-19; entry ids are random, so
nothing reads it again).

What is judged, with ``grace`` seconds of margin so that nothing a live process will still
write or clean is ever called a leak:

* a registry member whose deadline passed more than ``grace`` ago and whose key is gone is
  **stale** (BZ-23: only an Inspector listing prunes it). A finding, not a leak: the repair is
  a ZREM of one member, not a deletion of the registry;
* a member key without TTL is a **leak** only when no registration younger than ``grace``
  names it (a live process rewrites the key with a TTL at its next heartbeat);
* a scheduler history is **orphaned**, a leak, when no scheduler entry list names its entry,
  its newest event is older than ``grace`` (a new scheduler writes its entry list only at its
  first heartbeat, after its first enqueues) and no scheduler registered within ``grace`` has
  an entry list that cannot be read (that scheduler may be alive and name it). Otherwise an
  unnamed history is **unverified**: counted and listed, never a leak.

Every other ``asynq:`` key outside a queue's hash tag (and any key of the wrong type) is
**unrecognised**: counted with its bytes and listed, never a leak. The reads are TYPE, PTTL,
MEMORY USAGE, ZRANGE and LRANGE; history is read before the registries and entry lists, so a
scheduler that registers meanwhile is seen.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
from google.protobuf import empty_pb2
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from audit import engine
from audit.ownership import Unattributed
from broker.base import text
from model import keys
from model.invariants import Kind

if TYPE_CHECKING:
    from audit.engine import Finding

#: The Redis type of each registry's member keys (spec §1.5).
MEMBER_TYPE = {keys.SERVERS: "string", keys.WORKERS: "hash", keys.SCHEDULERS: "list"}
_FAMILY = {keys.SERVERS: "server info", keys.WORKERS: "workers", keys.SCHEDULERS: "scheduler entries"}
HISTORY_PREFIX = keys.scheduler_history("")
#: SchedulerEntry's ``id`` field number (Asynq's asynq.proto: ``string id = 1``).
_ENTRY_ID_FIELD = 1
_LENGTH_DELIMITED = 2
_BATCH = 500


@dataclass
class RegistryReport:
    """What the audit found among the global keys; ``findings`` join the audit's findings."""

    keys: int = 0
    bytes: int = 0
    bytes_by_family: Counter[str] = field(default_factory=Counter)
    #: "<registry> <status>" -> members (status: live, expiring, stale).
    members: Counter[str] = field(default_factory=Counter)
    #: status -> history keys (named, expiring, recent, unverified, orphaned).
    history: Counter[str] = field(default_factory=Counter)
    #: Global keys of no known kind (the audit lists them with the other unattributed keys).
    unrecognised: list[Unattributed] = field(default_factory=list)
    #: (key, why) of each key that is neither healthy nor proven a leak.
    unverified: list[tuple[str, str]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def entry_id(raw: bytes) -> str | None:
    """The ``id`` of a SchedulerEntry protobuf, or None when the bytes are not one.

    >>> entry_id(b"\\x0a\\x04abcd\\x12\\x09@every 1s")
    'abcd'
    >>> entry_id(b"\\xff") is None
    True
    """
    message = empty_pb2.Empty()
    try:
        message.ParseFromString(raw)
    except DecodeError:
        return None
    fields = UnknownFieldSet(message)
    for n in range(len(fields)):
        f = fields[n]
        if f.field_number == _ENTRY_ID_FIELD and f.wire_type == _LENGTH_DELIMITED:
            return text(f.data)
    return None


def member_registry(key: str) -> str | None:
    """The registry whose members name keys like ``key`` (None for another key).

    >>> member_registry("asynq:workers:{h:1:x}"), member_registry("asynq:workers")
    ('asynq:workers', None)
    """
    for registry, name in keys.REGISTRY_MEMBERS.items():
        opening = name("")[:-1]  # "asynq:servers:{"
        if key.startswith(opening) and key.endswith("}") and len(key) > len(opening) + 1:
            return registry
    return None


@dataclass(frozen=True, slots=True)
class _Key:
    """One global key as read: type, PTTL (None when refused), size, and for a history zset its
    event count and newest score."""

    name: str
    type: str
    pttl: int | None
    bytes: int
    events: int = 0
    newest: float | None = None


def _int(reply: Any) -> int | None:
    return reply if isinstance(reply, int) and not isinstance(reply, bool) else None


def _read(client: redis.Redis, names: Sequence[str]) -> Iterator[_Key]:
    for start in range(0, len(names), _BATCH):
        batch = names[start:start + _BATCH]
        pipe = client.pipeline(transaction=False)
        for name in batch:
            pipe.type(name)
            pipe.pttl(name)
            pipe.memory_usage(name, samples=0)
            if name.startswith(HISTORY_PREFIX):
                pipe.zcard(name)
                pipe.zrange(name, -1, -1, withscores=True)
        replies = iter(pipe.execute(raise_on_error=False))
        for name in batch:
            kind, pttl, size = next(replies), next(replies), next(replies)
            events, newest = 0, None
            if name.startswith(HISTORY_PREFIX):
                card, top = next(replies), next(replies)
                events = _int(card) or 0
                newest = float(top[0][1]) if isinstance(top, list) and top else None
            yield _Key(name, text(kind) if isinstance(kind, bytes | str) else "?", _int(pttl),
                       _int(size) or 0, events, newest)


class _Accounting:
    """One pass over the global keys (module docstring)."""

    def __init__(self, client: redis.Redis, now_ms: int, grace_s: int) -> None:
        self.client, self.now_s, self.grace = client, now_ms / 1000, grace_s
        self.report = RegistryReport()
        #: registry -> member -> deadline (Unix seconds).
        self.deadlines: dict[str, dict[str, float]] = {}

    def run(self, global_keys: Sequence[str]) -> RegistryReport:
        read = {k.name: k for k in _read(self.client, list(dict.fromkeys(global_keys)))}
        read = {n: k for n, k in read.items() if k.type != "none"}  # deleted since the SCAN
        for name in sorted(read):
            self._count(read[name])
        self._registries(read)
        self._member_keys(read)
        self._history(read)
        return self.report

    def _count(self, k: _Key) -> None:
        family = self._family(k)
        if family is None:
            self.report.unrecognised.append(Unattributed(k.name, k.type, k.bytes))
            return
        self.report.keys += 1
        self.report.bytes += k.bytes
        self.report.bytes_by_family[family] += k.bytes

    @staticmethod
    def _family(k: _Key) -> str | None:
        """The family of a well-typed global key, or None (unrecognised)."""
        if k.name == keys.ALL_QUEUES:
            return "queues" if k.type == "set" else None
        if k.name in MEMBER_TYPE:
            return "registry" if k.type == "zset" else None
        registry = member_registry(k.name)
        if registry is not None:
            return _FAMILY[registry] if k.type == MEMBER_TYPE[registry] else None
        if k.name.startswith(HISTORY_PREFIX) and len(k.name) > len(HISTORY_PREFIX):
            return "scheduler history" if k.type == "zset" else None
        return None

    # --- registries ----------------------------------------------------------------------------
    def _registries(self, read: dict[str, _Key]) -> None:
        registries = [r for r in MEMBER_TYPE if r in read and read[r].type == "zset"]
        pipe = self.client.pipeline(transaction=False)
        for registry in registries:
            pipe.zrange(registry, 0, -1, withscores=True)
        for registry, reply in zip(registries, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(reply, list):
                self.deadlines[registry] = {text(m): float(s) for m, s in reply}
            else:
                self.report.unverified.append((registry, f"its members could not be read: {reply}"))
        members = [(r, m) for r, ms in self.deadlines.items() for m in ms]
        pipe = self.client.pipeline(transaction=False)
        for _, member in members:
            pipe.exists(member)
        for (registry, member), exists in zip(members, pipe.execute(raise_on_error=False),
                                              strict=True):
            self._member(registry, member, self.deadlines[registry][member], exists)

    def _member(self, registry: str, member: str, deadline: float, exists: Any) -> None:
        if deadline >= self.now_s:
            status = "live"
        elif deadline >= self.now_s - self.grace or _int(exists) != 0:
            status = "expiring"  # a late heartbeat may still come, or the key has yet to expire
        else:
            status = "stale"
            size = len(member.encode("utf-8", "surrogateescape")) + 8
            self._finding("BZ-23", "stale registry member", registry,
                          f"{registry} lists {member}, whose deadline passed at {_when(deadline)} "
                          f"and whose key is gone; only an Inspector listing removes it "
                          f"(ZREM, ≈ {size} B)", leaked=False, nbytes=size)
        self.report.members[f"{registry} {status}"] += 1

    def _registered_recently(self, key: str) -> bool:
        registry = member_registry(key)
        deadline = self.deadlines.get(registry or "", {}).get(key)
        return deadline is not None and deadline >= self.now_s - self.grace

    def _member_keys(self, read: dict[str, _Key]) -> None:
        for name, k in read.items():
            registry = member_registry(name)
            if registry is None or k.type != MEMBER_TYPE[registry]:
                continue
            if k.pttl is None:
                self.report.unverified.append((name, "its TTL could not be read"))
            elif k.pttl == -1 and not self._registered_recently(name):
                self._finding("I14", Kind.REGISTRY_MEMBER_WITHOUT_TTL.value, name,
                              f"{name} has no TTL and no registration in {registry} younger than "
                              f"{self.grace} s: no live process will rewrite it", leaked=True,
                              nbytes=k.bytes)

    # --- scheduler history ---------------------------------------------------------------------
    def _history(self, read: dict[str, _Key]) -> None:
        histories = [k for n, k in read.items() if self._family(k) == "scheduler history"]
        if not histories:
            return
        named, blind = self._entry_ids(read)
        for k in histories:
            entry = k.name[len(HISTORY_PREFIX):]
            status, why = self._history_status(k, entry in named, blind)
            self.report.history[status] += 1
            if status == "unverified":
                self.report.unverified.append((k.name, why))
            elif status == "orphaned":
                self._finding("BZ-19", "orphaned scheduler history", k.name,
                              f"{k.name}: {k.events} event(s), newest at {_when(k.newest or 0)}, "
                              f"and no scheduler lists entry {entry!r} (unregistered, or its "
                              "scheduler crashed)", leaked=True, nbytes=k.bytes)

    def _history_status(self, k: _Key, named: bool, blind: list[str]) -> tuple[str, str]:
        """(status, why it is unverified) of one history zset."""
        if k.pttl is None or k.newest is None:
            return "unverified", "its TTL or events could not be read"
        if k.pttl >= 0:
            return "expiring", ""
        if named:
            return "named", ""
        if k.newest >= self.now_s - self.grace:
            return "unverified", (f"no scheduler lists it, but its newest event is less than "
                                  f"{self.grace} s old (a new scheduler lists its entries only "
                                  "at its first heartbeat)")
        if blind:
            return "unverified", (f"no scheduler lists it, but {blind[0]} registered within "
                                  f"{self.grace} s and its entries cannot be read")
        return "orphaned", ""

    def _entry_ids(self, read: dict[str, _Key]) -> tuple[set[str], list[str]]:
        """Entry ids every scheduler entry list names, and the scheduler keys registered within
        ``grace`` whose entries could not be read (the key is gone, or an entry does not decode)."""
        registered = self.deadlines.get(keys.SCHEDULERS, {})
        lists = sorted({n for n in read if member_registry(n) == keys.SCHEDULERS} | set(registered))
        pipe = self.client.pipeline(transaction=False)
        for name in lists:
            pipe.lrange(name, 0, -1)
        named: set[str] = set()
        blind = []
        for name, reply in zip(lists, pipe.execute(raise_on_error=False), strict=True):
            ids = [entry_id(r) for r in reply] if isinstance(reply, list) else [None]
            named.update(i for i in ids if i is not None)
            deadline = registered.get(name)
            # Its registration and its list share one deadline: a list gone before it is a
            # scheduler without entries, one gone after it a scheduler that may come back.
            unreadable = None in ids and (deadline is None or deadline >= self.now_s - self.grace)
            lapsed = not reply and deadline is not None and \
                self.now_s - self.grace <= deadline < self.now_s
            if unreadable or lapsed:
                blind.append(name)
        if keys.SCHEDULERS in read and keys.SCHEDULERS not in self.deadlines:
            blind.append(keys.SCHEDULERS)  # the registry itself could not be read
        return named, blind

    def _finding(self, invariant: str, kind: str, key: str, message: str, *, leaked: bool,
                 nbytes: int) -> None:
        self.report.findings.append(engine.Finding(invariant, kind, key, None, message, leaked,
                                                   nbytes))


def _when(stamp: float) -> str:
    return dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def account_registries(client: redis.Redis, global_keys: Sequence[str], now_ms: int,
                       grace_s: int) -> RegistryReport:
    """Account for ``global_keys`` (the ``asynq:`` keys outside every queue's hash tag)."""
    return _Accounting(client, now_ms, grace_s).run(global_keys)
