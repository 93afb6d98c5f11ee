"""Bytes a key takes in Redis 7.0, estimated from its contents (for fakeredis, which has no
``MEMORY USAGE``).

The estimate follows what ``MEMORY USAGE <key> SAMPLES 0`` adds up on redis-server 7.0 (x86-64,
jemalloc 5.3): the key's ``sds`` and its ``dictEntry`` in the keyspace, the value's ``robj``, and
the value's structures — sds strings, dict tables and entries, listpacks, quicklist nodes,
skiplist nodes — each rounded up to a jemalloc size class. Encodings follow the server's
thresholds (``hash-max-listpack-entries 128``, ``-value 64``, the same for zsets,
``set-max-intset-entries 512``, 8 KiB list nodes). Two things are not deterministic in Redis and
are estimated by their expectation: skiplist node levels (p = 1/4) and how full list nodes are.

The structure sizes and the per-encoding corrections live in :class:`Calibration`; the
defaults are the values ``python -m simulations.calibrate`` derived on redis-server 7.0.15 (see
``simulations/calibration.json`` and docs in that module).

>>> from model.snapshot import KeyEntry, KeyType
>>> Estimator().key_bytes(KeyEntry("c", KeyType.STRING, "1"))   # an INCR counter: int encoding
48
>>> Estimator().key_bytes(KeyEntry("asynq:{q}:x", KeyType.STRING, "a" * 36))  # embstr
104
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from broker.codec import encode_message
from model.message import TaskMessage
from model.snapshot import FieldValue, KeyEntry, KeyType

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")

# Redis 7.0 encoding thresholds (server defaults).
LISTPACK_MAX_ENTRIES = 128
LISTPACK_MAX_VALUE = 64
INTSET_MAX_ENTRIES = 512
LIST_NODE_BYTES = 8192
EMBSTR_MAX = 44
_INT64 = (-(2**63), 2**63 - 1)


def jemalloc_size(n: int) -> int:
    """The usable size jemalloc 5.x hands out for a request of ``n`` bytes (4 classes per
    doubling above 128, 16-byte spacing below).

    >>> [jemalloc_size(n) for n in (1, 9, 17, 129, 161, 1025, 9000)]
    [8, 16, 32, 160, 192, 1280, 10240]
    """
    if n <= 8:
        return 8
    if n <= 128:
        return (n + 15) // 16 * 16
    step = 1 << ((n - 1).bit_length() - 3)
    return (n + step - 1) // step * step


def sds_size(length: int) -> int:
    """Allocation of an sds string of ``length`` bytes (header by length class, + NUL)."""
    if length < 32:
        header = 1 if length else 3  # sdsnewlen never makes an empty type-5 string
    elif length < 256:
        header = 3
    elif length < 65536:
        header = 5
    else:
        header = 9
    return jemalloc_size(header + length + 1)


def as_int64(data: bytes) -> int | None:
    """``data`` as the integer Redis would store it as (canonical decimal only), else None."""
    if not data or len(data) > 20 or data != data.strip():
        return None
    try:
        value = int(data)
    except ValueError:
        return None
    if str(value).encode() != data or not _INT64[0] <= value <= _INT64[1]:
        return None
    return value


def lp_entry_size(data: bytes) -> int:
    """Bytes of one listpack entry (encoding, data and back-length)."""
    value = as_int64(data)
    if value is not None:
        if 0 <= value <= 127:
            body = 1
        elif -4096 <= value <= 4095:
            body = 2
        elif -(2**15) <= value < 2**15:
            body = 3
        elif -(2**23) <= value < 2**23:
            body = 4
        elif -(2**31) <= value < 2**31:
            body = 5
        else:
            body = 9
    else:
        n = len(data)
        body = n + (1 if n < 64 else 2 if n < 4096 else 5)
    back = 1 if body <= 127 else 2 if body < 16383 else 3 if body < 2097151 else 4 if body < 268435455 else 5
    return body + back


def lp_bytes(items: Iterable[bytes]) -> int:
    """Total bytes of a listpack holding ``items`` (6-byte header, end byte)."""
    return 7 + sum(lp_entry_size(i) for i in items)


def dict_slots(n: int) -> int:
    """Buckets of a dict that grew to ``n`` entries (initial 4, doubling when full)."""
    return max(4, 1 << max(0, n - 1).bit_length()) if n > 4 else 4


@dataclass(frozen=True)
class Calibration:
    """Structure sizes (bytes) and per-encoding corrections ``bytes' = round(scale·bytes + offset)``.

    ``server`` names the Redis the constants were measured on; ``errors`` keeps the calibration
    run's worst relative error per encoding.
    """

    robj: int = 16
    dict_entry: int = 24
    dict_struct: int = 56
    quicklist: int = 40
    quicklist_node: int = 32
    zset: int = 16
    zskiplist: int = 32
    skiplist_node: int = 24
    skiplist_level: int = 16
    skiplist_max_level: int = 32
    list_node_overhead: int = 11
    corrections: dict[str, tuple[float, float]] = field(default_factory=dict)
    server: str = "redis-server 7.0.15 (jemalloc-5.3.0), x86-64"
    errors: dict[str, float] = field(default_factory=dict)
    #: The server family the constants hold for (see :func:`server_family`): another family
    #: lays out and allocates its keys otherwise, so the estimate is not bounded there.
    family: str = "redis 7.0 jemalloc"

    @classmethod
    def load(cls, path: Path = CALIBRATION_FILE) -> Calibration:
        """The calibration stored at ``path``, or the built-in defaults when it is absent."""
        if not path.is_file():
            return cls()
        raw = json.loads(path.read_text())
        raw["corrections"] = {k: (float(v[0]), float(v[1])) for k, v in raw.get("corrections", {}).items()}
        return cls(**raw)

    def save(self, path: Path = CALIBRATION_FILE) -> None:
        """Write this calibration as JSON."""
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")


def server_family(info: Mapping[str, object]) -> str:
    """``"<name> <major>.<minor> <allocator>"`` of a server from its ``INFO server`` and
    ``INFO memory`` fields: what decides how ``MEMORY USAGE`` counts a key.

    >>> server_family({"redis_version": "7.0.15", "mem_allocator": "jemalloc-5.3.0"})
    'redis 7.0 jemalloc'
    >>> server_family({"redis_version": "7.2.4", "valkey_version": "9.1.2", "mem_allocator": "libc"})
    'valkey 9.1 libc'
    """
    name = "valkey" if "valkey_version" in info else "redis"
    version = str(info.get("valkey_version", info.get("redis_version", "?")))
    allocator = str(info.get("mem_allocator", "?")).split("-")[0]
    return f"{name} {'.'.join(version.split('.')[:2])} {allocator}"


def _expected_skiplist_node(cal: Calibration) -> float:
    """Expected jemalloc size of a skiplist node: level L has probability 3/4·(1/4)^(L-1)."""
    total, p = 0.0, 0.75
    for level in range(1, cal.skiplist_max_level + 1):
        total += p * jemalloc_size(cal.skiplist_node + cal.skiplist_level * level)
        p *= 0.25
    return total


def _raw(value: FieldValue | str) -> bytes:
    if isinstance(value, TaskMessage):
        return encode_message(value)
    return value.encode("utf-8", "surrogateescape")


class Estimator:
    """Estimate ``MEMORY USAGE`` of snapshot entries.

    >>> from model.snapshot import KeyEntry, KeyType
    >>> Estimator().key_bytes(KeyEntry("h", KeyType.HASH, {"msg": "x" * 100, "state": "pending",
    ...                                                    "pending_since": "1767225600000000000"}))
    400
    """

    def __init__(self, calibration: Calibration | None = None) -> None:
        self.cal = calibration if calibration is not None else Calibration.load()
        self._skip_node = _expected_skiplist_node(self.cal)
        # Zsets and sets remember their history, as Redis does: a zset that once outgrew a
        # listpack stays a skiplist, and a dict keeps its buckets until it is < 10% full.
        self._sticky: set[str] = set()
        self._slots: dict[str, int] = {}

    def note(self, key: str, size: int) -> None:
        """Tell the estimator that collection ``key`` momentarily held ``size`` members (e.g.
        inside a script that added, then trimmed), which a later sample cannot see."""
        if size > LISTPACK_MAX_ENTRIES:
            self._sticky.add(key)
        self._slots[key] = max(self._slots.get(key, 4), dict_slots(size))

    def forget(self, key: str) -> None:
        """Drop the history of ``key`` (it was deleted; a re-created key starts afresh)."""
        self._sticky.discard(key)
        self._slots.pop(key, None)

    def retain(self, present: set[str]) -> None:
        """Forget the history of keys that no longer exist (Redis deleted them)."""
        self._sticky &= present
        for key in [k for k in self._slots if k not in present]:
            del self._slots[key]

    def _history_slots(self, key: str, n: int) -> int:
        """Buckets of a collection's dict given its history: grown to fit, shrunk below 10%."""
        slots = max(self._slots.get(key, 4), dict_slots(n))
        if slots > 4 and n * 100 < 10 * slots:
            slots = dict_slots(n)
        self._slots[key] = slots
        return slots

    def key_bytes(self, entry: KeyEntry) -> int:
        """Estimated ``MEMORY USAGE <key> SAMPLES 0`` of one key."""
        encoding, value = self.value_bytes(entry.type, entry.value, entry.key)
        scale, offset = self.cal.corrections.get(encoding, (1.0, 0.0))
        total = sds_size(len(_raw(entry.key))) + self.cal.dict_entry + value
        return round(scale * total + offset)

    def encoding(self, entry: KeyEntry) -> str:
        """The Redis encoding the key has (``hash:listpack``, ``zset:skiplist``, ...)."""
        return self.value_bytes(entry.type, entry.value, entry.key)[0]

    def value_bytes(self, kind: KeyType, value: object, key: str = "") -> tuple[str, float]:
        """(encoding name, bytes of the value object); ``key`` selects the zset/set history."""
        if kind is KeyType.STRING:
            return self._string(_raw(value))  # type: ignore[arg-type]
        if kind is KeyType.LIST:
            return self._list([_raw(v) for v in value])  # type: ignore[attr-defined]
        if kind is KeyType.SET:
            return self._set([_raw(v) for v in value], key)  # type: ignore[attr-defined]
        if kind is KeyType.ZSET:
            return self._zset([(_raw(m), s) for m, s in value], key)  # type: ignore[attr-defined]
        return self._hash([(_raw(f), _raw(v)) for f, v in value.items()])  # type: ignore[attr-defined]

    def _string(self, data: bytes) -> tuple[str, float]:
        if as_int64(data) is not None:
            return "string:int", self.cal.robj
        if len(data) <= EMBSTR_MAX:
            return "string:embstr", jemalloc_size(self.cal.robj + 3 + len(data) + 1)
        return "string:raw", self.cal.robj + sds_size(len(data))

    def _dict(self, n: int) -> int:
        return self.cal.robj + self.cal.dict_struct + 8 * dict_slots(n)

    def _hash(self, pairs: list[tuple[bytes, bytes]]) -> tuple[str, float]:
        if len(pairs) <= LISTPACK_MAX_ENTRIES and all(
                len(f) <= LISTPACK_MAX_VALUE and len(v) <= LISTPACK_MAX_VALUE for f, v in pairs):
            items = [x for pair in pairs for x in pair]
            return "hash:listpack", self.cal.robj + jemalloc_size(lp_bytes(items))
        elements = sum(sds_size(len(f)) + sds_size(len(v)) + self.cal.dict_entry for f, v in pairs)
        return "hash:hashtable", self._dict(len(pairs)) + elements

    def _set(self, members: list[bytes], key: str = "") -> tuple[str, float]:
        ints = [as_int64(m) for m in members]
        if len(members) <= INTSET_MAX_ENTRIES and all(i is not None for i in ints):
            width = max((2 if -(2**15) <= i < 2**15 else 4 if -(2**31) <= i < 2**31 else 8)
                        for i in ints if i is not None) if ints else 2
            return "set:intset", self.cal.robj + jemalloc_size(8 + width * len(members))
        elements = sum(sds_size(len(m)) + self.cal.dict_entry for m in members)
        slots = self._history_slots(key, len(members)) if key else dict_slots(len(members))
        return "set:hashtable", self.cal.robj + self.cal.dict_struct + 8 * slots + elements

    def _zset(self, pairs: list[tuple[bytes, float]], key: str = "") -> tuple[str, float]:
        small = len(pairs) <= LISTPACK_MAX_ENTRIES and all(len(m) <= LISTPACK_MAX_VALUE for m, _ in pairs)
        if not small and key:
            self._sticky.add(key)
        if small and key not in self._sticky:
            items = [x for m, s in pairs for x in (m, _score_text(s))]
            return "zset:listpack", self.cal.robj + jemalloc_size(lp_bytes(items))
        cal = self.cal
        header = jemalloc_size(cal.skiplist_node + cal.skiplist_level * cal.skiplist_max_level)
        slots = self._history_slots(key, len(pairs)) if key else dict_slots(len(pairs))
        fixed = cal.robj + cal.zset + cal.zskiplist + cal.dict_struct + 8 * slots + header
        elements = sum(sds_size(len(m)) + cal.dict_entry + self._skip_node for m, _ in pairs)
        return "zset:skiplist", fixed + elements

    def _list(self, items: list[bytes]) -> tuple[str, float]:
        cal = self.cal
        total = cal.robj + cal.quicklist
        node = 7
        for item in items:
            size = lp_entry_size(item)
            if node > 7 and node + len(item) + cal.list_node_overhead > LIST_NODE_BYTES:
                total += cal.quicklist_node + jemalloc_size(node)
                node = 7
            node += size
        if node > 7:
            total += cal.quicklist_node + jemalloc_size(node)
        return "list:quicklist", total


def _score_text(score: float) -> bytes:
    """How a zset listpack stores a score: integral values as integers, others as %.17g."""
    if score == int(score) and abs(score) < 2**53:
        return str(int(score)).encode()
    return repr(score).encode()


def total_bytes(estimator: Estimator, entries: Mapping[str, KeyEntry]) -> int:
    """Sum of the estimates of ``entries``."""
    return sum(estimator.key_bytes(e) for e in entries.values())
