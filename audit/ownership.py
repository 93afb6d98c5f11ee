"""Which queue owns a key, when queue names are arbitrary strings.

Asynq accepts any non-blank queue name, ``}:`` and glob characters included, so a per-queue key
``asynq:{<q>}:<suffix>`` can read as a key of several queues: with queues ``a`` and ``a}:t:b{``,
``asynq:{a}:t:b{}:archived`` is queue ``a}:t:b{``'s archived index *and*, by name, a task hash
of queue ``a`` (id ``b{}:archived``). The hash tag alone (the text up to the first ``}:``) is
therefore no owner. A key is attributed by parsing it against the key grammar
(:func:`model.invariants.classify`, built on :mod:`model.keys`: nothing here spells a suffix)
for every queue name its ``}:`` positions allow, then narrowing those *readings*:

1. by Redis type: a reading stands only if the key has its family's type (the archived zset
   above is no task hash);
2. by content, for task hashes: a ``msg`` that decodes names its queue and id, and so the one
   key it belongs at;
3. by the known queues (``asynq:queues`` plus queues discovered from keys that read one way
   only): when some readings name a known queue, the others are dropped.

One reading left: that queue owns the key. Several: the key is **ambiguous**, none: it is
**unrecognised**. Both are counted once (with their bytes) and listed, and are never a leak
nor part of any queue's findings: the queues that might own an ambiguous key use it to place
their tasks (being in it can only make a task healthy), but nothing is reported about it.

Most keys have a single ``}:`` after ``asynq:{``, so exactly one queue name to try; only the
others are read here (TYPE, ``msg``, MEMORY USAGE), in one pipeline per batch.

>>> [r.queue for r in readings("asynq:{a}:t:b{}:archived")]
['a', 'a}:t:b{']
>>> readings("asynq:{a}:pending")[0].info.family.value
'pending'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import redis

from audit.taskread import execute, peek_message
from broker.base import text
from model import keys
from model.invariants import EXPECTED_TYPE, Family, KeyInfo, classify

#: ``asynq:{`` — every per-queue key starts with it (queue_prefix("") is ``asynq:{}:``).
QUEUE_OPEN = keys.queue_prefix("")[:-2]
_OPEN_RAW = QUEUE_OPEN.encode()
_CLOSE, _CLOSE_RAW = "}:", b"}:"
_GROUPS = (Family.GROUP, Family.GROUP_SET)


@dataclass(frozen=True, slots=True)
class Reading:
    """One way to read a key: as ``queue``'s key of family ``info.family``."""

    queue: str
    info: KeyInfo


def tags(key: str) -> list[str]:
    """Every queue name ``q`` with ``key.startswith(keys.queue_prefix(q))``, shortest first.

    >>> tags("asynq:{a}:x}:pending")
    ['a', 'a}:x']
    """
    if not key.startswith(QUEUE_OPEN):
        return []
    out, start = [], len(QUEUE_OPEN)
    end = key.find(_CLOSE, start)
    while end >= 0:
        out.append(key[start:end])
        end = key.find(_CLOSE, end + 1)
    return out


def readings(key: str) -> list[Reading]:
    """Every (queue, family) the key grammar makes of ``key``, over every non-blank tag."""
    return [Reading(q, info) for q in tags(key) if q.strip()
            for info in (classify(q, key),) if info is not None]


def single_tag(raw: bytes) -> bytes | None:
    """The one queue name a raw key can belong to when it holds a single ``}:`` after
    ``asynq:{`` (the common case, decided without decoding), else None."""
    if not raw.startswith(_OPEN_RAW):
        return None
    end = raw.find(_CLOSE_RAW, len(_OPEN_RAW))
    if end < 0 or raw.find(_CLOSE_RAW, end + 1) >= 0:
        return None
    return raw[len(_OPEN_RAW):end]


@dataclass(frozen=True, slots=True)
class Unattributed:
    """A key no single queue owns: ``candidates`` are the queues that could (empty when no
    queue's grammar makes it, or it is an ``asynq:`` key of no known kind)."""

    key: str
    type: str
    bytes: int
    candidates: tuple[str, ...] = ()

    @property
    def ambiguous(self) -> bool:
        return len(self.candidates) > 1


@dataclass(frozen=True, slots=True)
class _Facts:
    """What was read of a key with several tags: its type, a decoded msg's (queue, id), size."""

    type: str
    msg: tuple[str, str] | None
    bytes: int


def _facts(client: redis.Redis, names: list[str]) -> dict[str, _Facts]:
    commands: list[tuple[bytes, ...]] = []
    for name in names:
        raw = name.encode("utf-8", "surrogateescape")
        commands += [(b"TYPE", raw), (b"HGET", raw, b"msg"), (b"MEMORY", b"USAGE", raw, b"SAMPLES", b"0")]
    replies = execute(client, commands)
    out = {}
    for n, name in enumerate(names):
        kind, msg, size = replies[3 * n: 3 * n + 3]
        pb = peek_message(msg) if isinstance(msg, bytes) else None
        out[name] = _Facts(text(kind) if isinstance(kind, bytes | str) else "?",
                           (pb.queue, pb.id) if pb is not None else None,
                           size if isinstance(size, int) else 0)
    return out


def _fits(reading: Reading, facts: _Facts) -> bool:
    """The key's type and content allow this reading (an unreadable type allows every one)."""
    if facts.type != "?" and EXPECTED_TYPE[reading.info.family].value != facts.type:
        return False
    return (facts.msg is None or reading.info.family is not Family.TASK
            or facts.msg == (reading.queue, reading.info.name))


@dataclass
class Ownership:
    """The owner of every key with several tags, decided once (module docstring); a key with
    one tag belongs to that tag's queue and is never looked up here."""

    known: set[str]
    owner: dict[str, str] = field(default_factory=dict)
    unattributed: dict[str, Unattributed] = field(default_factory=dict)
    #: queue -> its readings of each ambiguous key it could own (used, never reported).
    shared: dict[str, dict[str, KeyInfo]] = field(default_factory=dict)
    _facts: dict[str, _Facts] = field(default_factory=dict)

    def owns(self, queue: str, key: str) -> bool:
        """True when ``queue`` owns ``key`` (for a key already decided by :meth:`decide`)."""
        return self.owner.get(key) == queue

    def is_shared(self, key: str) -> bool:
        """True for an ambiguous or unrecognised key: nothing is reported about it."""
        return key in self.unattributed

    def undecided(self, names: Iterable[str]) -> list[str]:
        """The names of ``names`` never read here (keys created since the survey)."""
        return [n for n in names if n not in self._facts]

    def decide(self, client: redis.Redis, names: Iterable[str]) -> None:
        """Read and attribute the keys of ``names`` not read yet (keys since deleted are
        dropped); queues discovered on the way are added to :attr:`known`."""
        self.read(client, names)
        self.settle()

    def read(self, client: redis.Redis, names: Iterable[str]) -> None:
        """Read what attributing ``names`` needs (TYPE, msg, MEMORY USAGE), unless read before."""
        fresh = [n for n in dict.fromkeys(names) if n not in self._facts]
        if fresh:
            self._facts.update(_facts(client, fresh))

    def settle(self) -> None:
        """Attribute every key read, again until the known queues stop growing: a queue
        discovered from one key can decide another."""
        while True:
            before = len(self.known)
            for name, facts in self._facts.items():
                self._attribute(name, facts)
            if len(self.known) == before:
                return

    def _attribute(self, name: str, facts: _Facts) -> None:
        self.owner.pop(name, None)
        self.unattributed.pop(name, None)
        for shared in self.shared.values():
            shared.pop(name, None)
        if facts.type == "none":
            return  # deleted since the SCAN
        fitting = [r for r in readings(name) if _fits(r, facts)]
        preferred = [r for r in fitting if r.queue in self.known] or fitting
        owners = sorted({r.queue for r in preferred})
        if len(owners) == 1:
            self.owner[name] = owners[0]
            self.known.add(owners[0])
            return
        self.unattributed[name] = Unattributed(name, facts.type, facts.bytes, tuple(owners))
        for r in preferred:
            self.shared.setdefault(r.queue, {})[name] = r.info

    def ambiguous(self) -> list[Unattributed]:
        return sorted((u for u in self.unattributed.values() if u.ambiguous), key=lambda u: u.key)

    def unrecognised(self) -> list[Unattributed]:
        return sorted((u for u in self.unattributed.values() if not u.ambiguous),
                      key=lambda u: u.key)

    def group_keys(self, queue: str) -> list[str]:
        """The decided keys that are ``queue``'s group or aggregation-set zsets, or could be."""
        own = [k for k, q in self.owner.items() if q == queue and _is_group(classify(queue, k))]
        return own + [k for k, info in self.shared.get(queue, {}).items() if info.family in _GROUPS]


def _is_group(info: KeyInfo | None) -> bool:
    return info is not None and info.family in _GROUPS


@dataclass
class Survey:
    """One SCAN of every ``asynq:`` key: the queues, their group keys, who owns the keys with
    several tags, and the keys outside any queue (registries, scheduler history, the rest)."""

    registered: set[str]
    queues: list[str]
    groups: dict[str, list[str]]
    ownership: Ownership
    global_keys: list[str]


def survey(client: redis.Redis, pages: Iterable[list[bytes]],
           decide_batch: int = 500) -> Survey:
    """Read ``asynq:queues`` and walk ``pages`` (SCAN pages of ``asynq:*``, raw names)."""
    registered = {text(q) for q in client.smembers(keys.ALL_QUEUES)}
    simple: set[bytes] = set()
    under_g: dict[bytes, list[bytes]] = {}
    several: list[str] = []
    global_keys: list[str] = []
    for page in pages:
        for raw in page:
            tag = single_tag(raw)
            if tag is None:
                (several if raw.startswith(_OPEN_RAW) else global_keys).append(text(raw))
            elif tag not in simple and not text(tag).strip():
                global_keys.append(text(raw))  # asynq:{}:… or a blank name: no Asynq queue
            else:
                simple.add(tag)
                if raw.startswith(b"g:", len(_OPEN_RAW) + len(tag) + len(_CLOSE_RAW)):
                    under_g.setdefault(tag, []).append(raw)
    ownership = Ownership(registered | {text(t) for t in simple})
    for start in range(0, len(several), decide_batch):
        ownership.read(client, several[start:start + decide_batch])
    ownership.settle()
    owning = {text(t) for t in simple} | set(ownership.owner.values())
    queues = sorted(registered | owning)
    groups = {q: [text(k) for k in under_g.get(q.encode("utf-8", "surrogateescape"), [])]
              + ownership.group_keys(q) for q in queues}
    return Survey(registered, queues, groups, ownership, global_keys)
