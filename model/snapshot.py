"""``KeyspaceSnapshot``: one queue's keys as plain data, filled by a broker or predicted by the model.

A snapshot is the common language of the oracle: the reference model predicts one, a broker reads
one from Redis (by SCAN, never KEYS), the invariants inspect one and a diff explains a mismatch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from model import keys
from model.message import TaskMessage


class KeyType(StrEnum):
    """Redis value types, spelled as Redis' TYPE command answers."""

    STRING = "string"
    LIST = "list"
    SET = "set"
    ZSET = "zset"
    HASH = "hash"


#: A hash field's value: text (decoded with surrogateescape, so any bytes survive), or the
#: decoded TaskMessage for the ``msg`` field when it parses.
FieldValue = str | TaskMessage
ListValue = tuple[str, ...]
SetValue = frozenset[str]
ZSetValue = tuple[tuple[str, float], ...]
HashValue = Mapping[str, FieldValue]
Value = str | ListValue | SetValue | ZSetValue | HashValue


@dataclass(frozen=True)
class KeyEntry:
    """One key: name, type, value and the virtual time (Unix ms) at which it expires, if any.

    Lists keep Redis order (index 0 = head). Zsets are (member, score) pairs sorted as Redis
    sorts them: by score, then member.
    """

    key: str
    type: KeyType
    value: Value
    expire_at_ms: int | None = None

    @property
    def has_ttl(self) -> bool:
        """True when the key carries an expiry."""
        return self.expire_at_ms is not None

    def members(self) -> tuple[str, ...]:
        """Members of a list, set or zset (in order for lists and zsets)."""
        if self.type is KeyType.ZSET:
            return tuple(m for m, _ in self.zset())
        if self.type is KeyType.SET:
            return tuple(sorted(self.set()))
        if self.type is KeyType.LIST:
            return self.list()
        raise TypeError(f"{self.key} is a {self.type}, not a collection")

    def zset(self) -> ZSetValue:
        assert self.type is KeyType.ZSET and isinstance(self.value, tuple)
        return self.value  # type: ignore[return-value]

    def list(self) -> ListValue:
        assert self.type is KeyType.LIST and isinstance(self.value, tuple)
        return self.value  # type: ignore[return-value]

    def set(self) -> SetValue:
        assert self.type is KeyType.SET and isinstance(self.value, frozenset)
        return self.value

    def hash(self) -> HashValue:
        assert self.type is KeyType.HASH and isinstance(self.value, Mapping)
        return self.value

    def string(self) -> str:
        assert self.type is KeyType.STRING and isinstance(self.value, str)
        return self.value

    def describe(self) -> str:
        """A one-line human rendering, e.g. ``zset {t1: 100, t2: 105} ttl=none``."""
        ttl = "none" if self.expire_at_ms is None else f"@{self.expire_at_ms}ms"
        return f"{self.type} {_render(self)} ttl={ttl}"


def _render(entry: KeyEntry) -> str:
    if entry.type is KeyType.ZSET:
        return "{" + ", ".join(f"{m}: {s:g}" for m, s in entry.zset()) + "}"
    if entry.type is KeyType.HASH:
        return "{" + ", ".join(f"{f}: {_short(v)}" for f, v in sorted(entry.hash().items())) + "}"
    if entry.type in (KeyType.LIST, KeyType.SET):
        return "[" + ", ".join(entry.members()) + "]"
    return repr(entry.value)


def _short(value: FieldValue) -> str:
    if isinstance(value, TaskMessage):
        return f"<msg id={value.id} retried={value.retried} err={value.error_msg!r}>"
    return repr(value) if len(value) <= 40 else repr(value[:37] + "...")


def _render_times(entry: KeyEntry, now_s: float) -> str:
    if entry.type is not KeyType.ZSET:
        return _render(entry)
    return "{" + ", ".join(f"{m}: {s:.0f} (now{'+' if s >= now_s else '-'}{_span(abs(s - now_s))})"
                           for m, s in entry.zset()) + "}"


def _span(seconds: float) -> str:
    """A duration for people: ``45s``, ``2.5m``, ``3.0h``, ``90.0d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:g}s"


def zset_value(pairs: Iterable[tuple[str, float]]) -> ZSetValue:
    """Sort (member, score) pairs the way Redis orders a zset."""
    return tuple(sorted(((m, float(s)) for m, s in pairs), key=lambda p: (p[1], p[0])))


@dataclass(frozen=True)
class KeyspaceSnapshot:
    """All keys of one queue, plus the queue's membership in the global ``asynq:queues`` set.

    ``now_ms`` is the virtual time at which the snapshot was taken; TTL checks compare against it.

    >>> snap = KeyspaceSnapshot("q", now_ms=0, entries={})
    >>> snap.task_ids()
    frozenset()
    """

    queue: str
    now_ms: int
    entries: Mapping[str, KeyEntry]
    registered: bool = False
    extra: Mapping[str, KeyEntry] = field(default_factory=dict)

    def __iter__(self) -> Iterator[KeyEntry]:
        return iter(self.entries[k] for k in sorted(self.entries))

    def get(self, key: str) -> KeyEntry | None:
        """The entry of ``key`` or None."""
        return self.entries.get(key)

    def members(self, key: str) -> tuple[str, ...]:
        """Members of a collection key, or () when it does not exist."""
        entry = self.entries.get(key)
        return () if entry is None else entry.members()

    def task_ids(self) -> frozenset[str]:
        """Ids that have a task hash."""
        prefix = keys.task_prefix(self.queue)
        return frozenset(k[len(prefix):] for k in self.entries if k.startswith(prefix))

    def task_hash(self, task_id: str) -> HashValue | None:
        """The fields of a task's hash, or None when it has none."""
        entry = self.entries.get(keys.task(self.queue, task_id))
        return None if entry is None or entry.type is not KeyType.HASH else entry.hash()

    def with_prefix(self, prefix: str) -> list[KeyEntry]:
        """Entries whose key starts with ``prefix``, sorted by key."""
        return [self.entries[k] for k in sorted(self.entries) if k.startswith(prefix)]

    def to_rows(self) -> list[tuple[str, str, str, str]]:
        """One ``(key, type, value, ttl)`` row of text per key, sorted by key (for tables).

        Zset scores are Unix seconds here (every zset of the layout holds times), so each is
        shown with its offset from the snapshot's time; ``ttl`` is ``none`` or the time left.

        >>> lease = KeyEntry("asynq:{q}:lease", KeyType.ZSET, (("t1", 30.0),))
        >>> lock = KeyEntry("asynq:{q}:unique:x", KeyType.STRING, "t1", expire_at_ms=7_200_000)
        >>> for row in KeyspaceSnapshot("q", 0, {e.key: e for e in (lease, lock)}).to_rows():
        ...     print(row)
        ('asynq:{q}:lease', 'zset', '{t1: 30 (now+30s)}', 'none')
        ('asynq:{q}:unique:x', 'string', "'t1'", '2.0h')
        """
        now_s = self.now_ms / 1000
        return [(e.key, e.type.value, _render_times(e, now_s),
                 "none" if e.expire_at_ms is None else _span((e.expire_at_ms - self.now_ms) / 1000))
                for e in self]

    def diff(self, other: KeyspaceSnapshot, left: str = "expected", right: str = "actual") -> str:
        """A readable, line-per-key difference; empty when the keyspaces are equal."""
        lines = []
        if self.registered != other.registered:
            lines.append(f"  asynq:queues membership: {left}={self.registered} {right}={other.registered}")
        for key in sorted(set(self.entries) | set(other.entries)):
            a, b = self.entries.get(key), other.entries.get(key)
            if a == b:
                continue
            lines.append(f"  {key}")
            lines.append(f"    {left:>8}: {'(absent)' if a is None else a.describe()}")
            lines.append(f"    {right:>8}: {'(absent)' if b is None else b.describe()}")
        return "\n".join(lines)
