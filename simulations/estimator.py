"""Bytes a key takes in a server, estimated from its contents (for fakeredis, which has no
``MEMORY USAGE``), under the memory model of one server family.

The estimate follows what ``MEMORY USAGE <key> SAMPLES 0`` adds up on that server. On
redis-server 7.0 (x86-64, jemalloc 5.3): the key's ``sds`` and its ``dictEntry`` in the
keyspace, the value's ``robj``, and the value's structures — sds strings, dict tables and
entries, listpacks, quicklist nodes, skiplist nodes — each rounded up to a jemalloc size class.
Encodings follow the server's thresholds (``hash-max-listpack-entries 512``, ``-value 64``,
zsets 128 and 64, ``set-max-intset-entries 512``, 8 KiB list nodes). Redis 6.2 has ziplists
instead of listpacks and counts them, intsets and embedded strings by their length; Valkey 8.1+
embeds the key, its TTL and short values in the value's object and keeps hashes, sets and
skiplist members in open hashtables of 7-entry buckets; both run on glibc's ``malloc`` in the
builds measured here (see :class:`Calibration`). Three things are not deterministic and are
estimated by their expectation: skiplist node levels (p = 1/4), how full list nodes are, and
how many chained buckets a Valkey hashtable needs (hash collisions).

A model (:class:`Calibration`) holds the layout, the allocator, the structure sizes and the
per-encoding corrections ``python -m simulations.calibrate`` fitted on a real server; the
shipped ones are in ``simulations/models/`` (``redis-7.0`` is the default, ``valkey-9.1``,
``redis-6.2``), and a simulation on a real server uses its family's (:func:`model_for_family`).

>>> from model.snapshot import KeyEntry, KeyType
>>> Estimator().key_bytes(KeyEntry("c", KeyType.STRING, "1"))   # an INCR counter: int encoding
48
>>> Estimator().key_bytes(KeyEntry("asynq:{q}:x", KeyType.STRING, "a" * 36))  # embstr
104
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from broker.codec import encode_message
from model.message import TaskMessage
from model.snapshot import FieldValue, KeyEntry, KeyType

#: The shipped memory models, one JSON file per server family (``<name>.json``).
MODELS_DIR = Path(__file__).with_name("models")
#: The default model (fakeredis, and a server family no shipped model covers).
CALIBRATION_FILE = MODELS_DIR / "redis-7.0.json"

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


def libc_size(n: int) -> int:
    """The usable size glibc's malloc hands out for a request of ``n`` bytes (x86-64): chunks
    are 16-byte aligned, 32 bytes at least, and keep 8 bytes of their own header; requests of
    128 KiB and more are mmapped whole pages (16 bytes of header).

    >>> [libc_size(n) for n in (1, 24, 25, 40, 41, 100, 1006, 200_000)]
    [24, 24, 40, 40, 56, 104, 1016, 200688]
    """
    if n >= MMAP_THRESHOLD:
        return (n + 8 + 4095) // 4096 * 4096 - 16
    return max(32, (n + 8 + 15) // 16 * 16) - 8


#: glibc's default M_MMAP_THRESHOLD.
MMAP_THRESHOLD = 128 * 1024

#: Usable size of an allocation, by allocator name (``INFO memory`` ``mem_allocator``).
ALLOCATORS: dict[str, Callable[[int], int]] = {"jemalloc": jemalloc_size, "libc": libc_size}


def sds_header(length: int) -> int:
    """Header bytes of an sds string of ``length`` bytes (by length class)."""
    if length < 32:
        return 1 if length else 3  # sdsnewlen never makes an empty type-5 string
    if length < 256:
        return 3
    if length < 65536:
        return 5
    return 9


def sds_size(length: int, alloc: Callable[[int], int] = jemalloc_size) -> int:
    """Allocation of an sds string of ``length`` bytes (header by length class, + NUL)."""
    return alloc(sds_header(length) + length + 1)


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
        body = 1 if 0 <= value <= 127 else 2 if -4096 <= value <= 4095 else _wide_int_bytes(value)
    else:
        n = len(data)
        body = n + (1 if n < 64 else 2 if n < 4096 else 5)
    back = 1 if body <= 127 else 2 if body < 16383 else 3 if body < 2097151 else 4 if body < 268435455 else 5
    return body + back


def lp_bytes(items: Iterable[bytes]) -> int:
    """Total bytes of a listpack holding ``items`` (6-byte header, end byte)."""
    return 7 + sum(lp_entry_size(i) for i in items)


def zl_entry_size(data: bytes, previous: int) -> int:
    """Bytes of one ziplist entry (Redis ≤ 6.2) after an entry of ``previous`` bytes: the
    previous entry's length (1 or 5 bytes), the encoding and the data (integers of up to 31
    digits are stored as integers, 0–12 inside the encoding byte)."""
    prevlen = 1 if previous < 254 else 5
    value = as_int64(data) if len(data) < 32 else None
    if value is None:
        n = len(data)
        return prevlen + (1 if n <= 63 else 2 if n <= 16383 else 5) + n
    body = 1 if 0 <= value <= 12 else 2 if -(2**7) <= value < 2**7 else _wide_int_bytes(value)
    return prevlen + body


def _wide_int_bytes(value: int) -> int:
    """Encoding byte + payload of an integer entry of 16, 24, 32 or 64 bits (listpacks and
    ziplists store these alike; they differ only for small integers)."""
    for bits, size in ((16, 3), (24, 4), (32, 5)):
        if -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
            return size
    return 9


def zl_bytes(items: Iterable[bytes]) -> int:
    """Total bytes of a ziplist holding ``items`` (10-byte header, end byte).

    >>> zl_bytes([]), zl_bytes([b"7"]), zl_bytes([b"state", b"pending"])
    (11, 13, 27)
    """
    total, previous = 11, 0
    for item in items:
        previous = zl_entry_size(item, previous)
        total += previous
    return total


def dict_slots(n: int) -> int:
    """Buckets of a dict that grew to ``n`` entries (initial 4, doubling when full)."""
    return max(4, 1 << max(0, n - 1).bit_length()) if n > 4 else 4


def hashtable_buckets(n: int, per_bucket: int = 7) -> int:
    """Buckets of a Valkey 8.1+ hashtable that grew to ``n`` entries one insert at a time:
    ``per_bucket`` entries fill a bucket before it doubles (a power of two, at least one).

    >>> [hashtable_buckets(n) for n in (1, 7, 8, 14, 15, 29, 1000)]
    [1, 1, 2, 2, 4, 8, 256]
    """
    need = max(1, -(-n // per_bucket))
    return 1 << (need - 1).bit_length()


def expected_child_buckets(n: int, buckets: int, per_bucket: int = 7) -> float:
    """Expected child buckets of a Valkey hashtable holding ``n`` entries in ``buckets``
    buckets: a bucket that receives k > ``per_bucket`` entries chains children, each giving one
    slot to the next link (so ``per_bucket - 1`` entries per full link). Entries land in buckets
    by hash: Poisson with mean n / buckets (all in the one bucket when there is one).

    >>> expected_child_buckets(7, 1), expected_child_buckets(9, 1)
    (0.0, 1.0)
    >>> round(expected_child_buckets(3000, 512), 1)
    122.8
    """
    if buckets == 1:
        return float(max(0, -(-(n - per_bucket) // (per_bucket - 1))))
    mean = n / buckets
    p = math.exp(-mean)
    total = 0.0
    for k in range(1, per_bucket + 8 * (per_bucket - 1) + 1):
        p *= mean / k
        if k > per_bucket:
            total += p * -(-(k - per_bucket) // (per_bucket - 1))
    return buckets * total


#: How a server lays out a key in memory (see :class:`Calibration`).
LAYOUTS = ("redis", "redis-ziplist", "valkey")


@dataclass(frozen=True)
class Calibration:
    """A memory model: how one server family stores keys, and the corrections
    ``bytes' = round(scale·bytes + offset)`` per encoding that a calibration fitted on top.

    ``layout`` ``"redis"`` (Redis 7.0): a key is an sds plus a ``dictEntry`` in the keyspace, the
    value a 16-byte ``robj``; hashes, sets and skiplist zsets are chained dicts (8-byte buckets,
    a ``dictEntry`` per element). ``"redis-ziplist"`` (Redis 6.2): the same, but small hashes,
    zsets and list nodes are ziplists, and ``MEMORY USAGE`` counts them, intsets and embedded
    strings by their length, not their allocation. ``"valkey"`` (Valkey 8.1+): the key (and its
    TTL) is embedded in the value's object, a short string value too (``embed_max``: the largest
    allocation that still embeds it), and those collections are open hashtables of
    ``bucket``-byte buckets of ``bucket_entries`` pointers, hash fields and values living in one
    entry allocation.
    ``allocator`` names the ``malloc`` whose size classes round every allocation (``jemalloc``
    or ``libc``, as ``INFO memory`` reports ``mem_allocator``). The thresholds are the server's
    defaults for listpack encodings (``listpack_max_entries`` for zsets, ``hash_…`` for hashes,
    ``listpack_max_value`` for both); ``set_listpack_max_entries`` (Redis 7.2+, Valkey) and
    ``list_listpack_bytes`` (a list stays one plain listpack up to this many bytes) are 0 where
    the server has no such encoding.

    ``family`` is the server family the constants hold for (see :func:`server_family`), ``name``
    the model's short name (``--memory-model``), ``server`` the exact server measured, and
    ``errors`` the calibration run's worst per-key relative error per encoding.
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
    family: str = "redis 7.0 jemalloc"
    name: str = "redis-7.0"
    layout: str = "redis"
    allocator: str = "jemalloc"
    listpack_max_entries: int = 128
    listpack_max_value: int = 64
    hash_listpack_max_entries: int = 512
    set_listpack_max_entries: int = 0
    list_listpack_bytes: int = 0
    embed_max: int = 0
    hashtable_struct: int = 88
    bucket: int = 64
    bucket_entries: int = 7

    @classmethod
    def structural(cls, layout: str) -> Calibration:
        """The uncalibrated structural model of ``layout``: Redis 7.0's defaults, Redis 6.2's
        (glibc malloc, ziplists, a 96-byte dict), or Valkey 9.1's (glibc malloc, sets and short
        lists as listpacks, values embedded up to 128-byte allocations, 16-byte skiplist nodes
        before their levels and member)."""
        if layout == "valkey":
            return cls(layout="valkey", allocator="libc", family="valkey 9.1 libc",
                       name="valkey-9.1", server="", set_listpack_max_entries=128,
                       list_listpack_bytes=8192, embed_max=128, skiplist_node=16)
        if layout == "redis-ziplist":
            return cls(layout=layout, allocator="libc", family="redis 6.2 libc", name="redis-6.2",
                       server="", dict_struct=96)
        return cls(layout=layout, server="")

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"memory model {self.name!r}: layout must be one of "
                             f"{', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.allocator not in ALLOCATORS:
            raise ValueError(f"memory model {self.name!r}: allocator must be one of "
                             f"{', '.join(ALLOCATORS)}, got {self.allocator!r}")

    @classmethod
    def load(cls, path: Path = CALIBRATION_FILE) -> Calibration:
        """The memory model stored at ``path``, or the built-in defaults when it is absent."""
        if not path.is_file():
            return cls()
        raw = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: not a memory model (unknown fields {', '.join(unknown)})")
        raw["corrections"] = {k: (float(v[0]), float(v[1])) for k, v in raw.get("corrections", {}).items()}
        return cls(**raw)

    def save(self, path: Path = CALIBRATION_FILE) -> None:
        """Write this memory model as JSON."""
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


def model_names() -> list[str]:
    """Names of the shipped memory models (``--memory-model NAME``).

    >>> model_names()
    ['redis-6.2', 'redis-7.0', 'valkey-9.1']
    """
    return sorted(p.stem for p in MODELS_DIR.glob("*.json"))


def load_model(name_or_path: str | Path) -> Calibration:
    """A shipped memory model by name, or a model file (as ``python -m simulations.calibrate``
    writes it) by path; an unknown name raises ``ValueError`` listing the names.

    >>> load_model("valkey-9.1").family
    'valkey 9.1 libc'
    """
    text = str(name_or_path)
    if text in model_names():
        return Calibration.load(MODELS_DIR / f"{text}.json")
    path = Path(text)
    if not path.is_file():
        raise ValueError(f"unknown memory model {text!r}: not a file, nor one of "
                         f"{', '.join(model_names())}")
    try:
        return Calibration.load(path)
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{path}: not a memory model ({err})") from None


def model_for_family(family: str) -> Calibration | None:
    """The shipped memory model calibrated on ``family`` (see :func:`server_family`), if any.

    >>> model_for_family("redis 7.0 jemalloc").name, model_for_family("redis 7.2 jemalloc")
    ('redis-7.0', None)
    """
    for name in model_names():
        model = load_model(name)
        if model.family == family:
            return model
    return None


def raw_bytes(value: FieldValue | str) -> bytes:
    """The bytes Redis stores for a snapshot value (a task message encoded as the broker does)."""
    if isinstance(value, TaskMessage):
        return encode_message(value)
    return value.encode("utf-8", "surrogateescape")


def _sds_bytes(length: int) -> int:
    """Bytes an sds string of ``length`` takes inside another allocation (header + NUL)."""
    return sds_header(length) + length + 1


class Estimator:
    """Estimate ``MEMORY USAGE`` of snapshot entries under one memory model.

    >>> from model.snapshot import KeyEntry, KeyType
    >>> Estimator().key_bytes(KeyEntry("h", KeyType.HASH, {"msg": "x" * 100, "state": "pending",
    ...                                                    "pending_since": "1767225600000000000"}))
    400
    """

    def __init__(self, calibration: Calibration | None = None) -> None:
        self.cal = calibration if calibration is not None else Calibration.load()
        self.alloc = ALLOCATORS[self.cal.allocator]
        self.valkey = self.cal.layout == "valkey"
        self.ziplist = self.cal.layout == "redis-ziplist"
        self._node_cache: dict[int, float] = {}
        self._children: dict[tuple[int, int], float] = {}
        # Zsets and sets remember their history, as Redis does: a zset that once outgrew a
        # listpack stays a skiplist, and a dict keeps its buckets until it is nearly empty.
        self._sticky: set[str] = set()
        self._slots: dict[str, int] = {}

    def note(self, key: str, size: int) -> None:
        """Tell the estimator that collection ``key`` momentarily held ``size`` members (e.g.
        inside a script that added, then trimmed), which a later sample cannot see."""
        if size > self.cal.listpack_max_entries:
            self._sticky.add(key)
        self._slots[key] = max(self._slots.get(key, 0), self._grown_slots(size))

    def forget(self, key: str) -> None:
        """Drop the history of ``key`` (it was deleted; a re-created key starts afresh)."""
        self._sticky.discard(key)
        self._slots.pop(key, None)

    def retain(self, present: set[str]) -> None:
        """Forget the history of keys that no longer exist (Redis deleted them)."""
        self._sticky &= present
        for key in [k for k in self._slots if k not in present]:
            del self._slots[key]

    def _grown_slots(self, n: int) -> int:
        """Buckets of a table grown to ``n`` entries (dict slots, or hashtable buckets)."""
        return hashtable_buckets(n, self.cal.bucket_entries) if self.valkey else dict_slots(n)

    def _history_slots(self, key: str, n: int) -> int:
        """Buckets of a collection's table given its history: grown to fit, shrunk only when
        nearly empty (a dict below 10 % of its slots, a hashtable below 13 % of capacity)."""
        slots = max(self._slots.get(key, 0), self._grown_slots(n))
        capacity = slots * (self.cal.bucket_entries if self.valkey else 1)
        floor = 13 if self.valkey else 10
        if slots > self._grown_slots(0) and n * 100 < floor * capacity:
            slots = self._grown_slots(n)
        self._slots[key] = slots
        return slots

    def _table(self, n: int, key: str) -> float:
        """Bytes of a collection's table of ``n`` elements (struct and buckets)."""
        slots = self._history_slots(key, n) if key else self._grown_slots(n)
        if self.valkey:
            chained = self._children.get((n, slots))
            if chained is None:
                chained = self._children[n, slots] = expected_child_buckets(n, slots, self.cal.bucket_entries)
            return self.cal.hashtable_struct + self.cal.bucket * (slots + chained)
        return self.cal.dict_struct + 8 * slots

    def key_bytes(self, entry: KeyEntry) -> int:
        """Estimated ``MEMORY USAGE <key> SAMPLES 0`` of one key."""
        encoding, total = self._key_total(entry)
        scale, offset = self.cal.corrections.get(encoding, (1.0, 0.0))
        return round(scale * total + offset)

    def encoding(self, entry: KeyEntry) -> str:
        """The encoding the key has (``hash:listpack``, ``zset:skiplist``, ...)."""
        return self._key_total(entry)[0]

    def _key_total(self, entry: KeyEntry) -> tuple[str, float]:
        """(encoding, uncorrected bytes) of a key: its name, its object and its value."""
        name = raw_bytes(entry.key)
        if self.valkey:
            # The key (and its TTL) live in the value's own object.
            head = self.cal.robj + (8 if entry.expire_at_ms is not None else 0) + 1 + _sds_bytes(len(name))
            if entry.type is KeyType.STRING:
                return self._valkey_string(head, raw_bytes(entry.value))  # type: ignore[arg-type]
            encoding, value = self.value_bytes(entry.type, entry.value, entry.key)
            return encoding, self.alloc(head) + value
        encoding, value = self.value_bytes(entry.type, entry.value, entry.key)
        return encoding, sds_size(len(name), self.alloc) + self.cal.dict_entry + value

    def value_bytes(self, kind: KeyType, value: object, key: str = "") -> tuple[str, float]:
        """(encoding name, bytes of the value); ``key`` selects the collection's history.
        On the ``redis`` layout the value's ``robj`` is included, on ``valkey`` it holds the key
        and is counted with it."""
        if kind is KeyType.STRING:
            return self._string(raw_bytes(value))  # type: ignore[arg-type]
        if kind is KeyType.LIST:
            return self._list([raw_bytes(v) for v in value])  # type: ignore[attr-defined]
        if kind is KeyType.SET:
            return self._set([raw_bytes(v) for v in value], key)  # type: ignore[attr-defined]
        if kind is KeyType.ZSET:
            return self._zset([(raw_bytes(m), s) for m, s in value], key)  # type: ignore[attr-defined]
        return self._hash([(raw_bytes(f), raw_bytes(v)) for f, v in value.items()], key)  # type: ignore[attr-defined]

    @property
    def _obj(self) -> int:
        """The value object's bytes where they are not counted with the key."""
        return 0 if self.valkey else self.cal.robj

    def _string(self, data: bytes) -> tuple[str, float]:
        if as_int64(data) is not None:
            return "string:int", self.cal.robj
        if len(data) <= EMBSTR_MAX:
            if self.ziplist:  # Redis 6.2 counts an embedded string by its length
                return "string:embstr", self.cal.robj + len(data) + 2
            return "string:embstr", self.alloc(self.cal.robj + 3 + len(data) + 1)
        return "string:raw", self.cal.robj + sds_size(len(data), self.alloc)

    def _valkey_string(self, head: int, data: bytes) -> tuple[str, float]:
        if as_int64(data) is not None:
            return "string:int", self.alloc(head)
        # An embedded value replaces the object's pointer and is always a type-8 sds.
        embedded = head - 8 + 3 + len(data) + 1
        if embedded <= self.cal.embed_max:
            return "string:embstr", self.alloc(embedded)
        return "string:raw", self.alloc(head) + sds_size(len(data), self.alloc)

    def _packed(self, items: list[bytes]) -> int:
        """Bytes of a listpack (allocated) or, on Redis 6.2, a ziplist (as long as it is)."""
        return zl_bytes(items) if self.ziplist else self.alloc(lp_bytes(items))

    def _small(self, items: list[bytes], limit: int) -> bool:
        return len(items) <= limit and all(len(i) <= self.cal.listpack_max_value for i in items)

    def _hash(self, pairs: list[tuple[bytes, bytes]], key: str = "") -> tuple[str, float]:
        if self._small([x for pair in pairs for x in pair], 2 * self.cal.hash_listpack_max_entries):
            items = [x for pair in pairs for x in pair]
            return "hash:listpack", self._obj + self._packed(items)
        if self.valkey:
            elements = sum(self._hash_entry(f, v) for f, v in pairs)
        else:
            elements = sum(sds_size(len(f), self.alloc) + sds_size(len(v), self.alloc)
                           + self.cal.dict_entry for f, v in pairs)
        return "hash:hashtable", self._obj + self._table(len(pairs), key) + elements

    def _hash_entry(self, name: bytes, value: bytes) -> int:
        """A Valkey hash entry: the field, then the value embedded (a type-8 sds) when the
        whole fits ``embed_max``, else a pointer to the value's own sds."""
        embedded = 1 + _sds_bytes(len(name)) + 3 + len(value) + 1
        if embedded <= self.cal.embed_max:
            return self.alloc(embedded)
        return self.alloc(1 + _sds_bytes(len(name)) + 8) + sds_size(len(value), self.alloc)

    def _set(self, members: list[bytes], key: str = "") -> tuple[str, float]:
        ints = [as_int64(m) for m in members]
        if len(members) <= INTSET_MAX_ENTRIES and all(i is not None for i in ints):
            width = max((2 if -(2**15) <= i < 2**15 else 4 if -(2**31) <= i < 2**31 else 8)
                        for i in ints if i is not None) if ints else 2
            intset = 8 + width * len(members)
            return "set:intset", self._obj + (intset if self.ziplist else self.alloc(intset))
        if self.cal.set_listpack_max_entries and self._small(members, self.cal.set_listpack_max_entries) \
                and key not in self._sticky:
            return "set:listpack", self._obj + self.alloc(lp_bytes(members))
        if key and self.cal.set_listpack_max_entries:
            self._sticky.add(key)
        per_member = 0 if self.valkey else self.cal.dict_entry
        elements = sum(sds_size(len(m), self.alloc) + per_member for m in members)
        return "set:hashtable", self._obj + self._table(len(members), key) + elements

    def _zset(self, pairs: list[tuple[bytes, float]], key: str = "") -> tuple[str, float]:
        small = self._small([m for m, _ in pairs], self.cal.listpack_max_entries)
        if not small and key:
            self._sticky.add(key)
        if small and key not in self._sticky:
            items = [x for m, s in pairs for x in (m, _score_text(s))]
            return "zset:listpack", self._obj + self._packed(items)
        cal = self.cal
        header = self.alloc(cal.skiplist_node + cal.skiplist_level * cal.skiplist_max_level)
        fixed = self._obj + cal.zset + cal.zskiplist + self._table(len(pairs), key) + header
        if self.valkey:  # the member is embedded in its skiplist node, the table points to it
            elements = sum(self._expected_node(1 + _sds_bytes(len(m))) for m, _ in pairs)
        else:
            node = self._expected_node(0)
            elements = sum(sds_size(len(m), self.alloc) + cal.dict_entry + node for m, _ in pairs)
        return "zset:skiplist", fixed + elements

    def _expected_node(self, extra: int) -> float:
        """Expected allocation of a skiplist node carrying ``extra`` bytes: level L has
        probability 3/4·(1/4)^(L-1)."""
        if extra not in self._node_cache:
            cal, total, p = self.cal, 0.0, 0.75
            for level in range(1, cal.skiplist_max_level + 1):
                total += p * self.alloc(cal.skiplist_node + cal.skiplist_level * level + extra)
                p *= 0.25
            self._node_cache[extra] = total
        return self._node_cache[extra]

    def _list(self, items: list[bytes]) -> tuple[str, float]:
        cal = self.cal
        if cal.list_listpack_bytes and lp_bytes(items) <= cal.list_listpack_bytes:
            return "list:listpack", self._obj + self.alloc(lp_bytes(items))
        if self.ziplist:
            return "list:quicklist", self._ziplist_quicklist(items)
        total = self._obj + cal.quicklist
        node = 7
        for item in items:
            size = lp_entry_size(item)
            if node > 7 and node + len(item) + cal.list_node_overhead > LIST_NODE_BYTES:
                total += cal.quicklist_node + self.alloc(node)
                node = 7
            node += size
        if node > 7:
            total += cal.quicklist_node + self.alloc(node)
        return "list:quicklist", total

    def _ziplist_quicklist(self, items: list[bytes]) -> float:
        """Redis 6.2's quicklist, as MEMORY USAGE counts it: nodes of ziplists of at most 8 KiB
        (a node takes an item while its size + the item + the item's entry header fits),
        each counted by its length. Items are pushed at the head, as the broker does."""
        cal = self.cal
        total = self._obj + cal.quicklist
        node: list[bytes] = []
        size = 11
        for item in reversed(items):  # LPUSH order: the last item was pushed first
            n = len(item)
            header = (1 if n < 254 else 5) + (1 if n < 64 else 2 if n < 16384 else 5)
            if node and size + n + header > LIST_NODE_BYTES:
                total += cal.quicklist_node + zl_bytes(reversed(node))
                node, size = [], 11
            node.append(item)
            size = zl_bytes(reversed(node))
        if node:
            total += cal.quicklist_node + zl_bytes(reversed(node))
        return total


def _score_text(score: float) -> bytes:
    """How a zset listpack stores a score: integral values as integers, others as %.17g."""
    if score == int(score) and abs(score) < 2**53:
        return str(int(score)).encode()
    return repr(score).encode()


def total_bytes(estimator: Estimator, entries: Mapping[str, KeyEntry]) -> int:
    """Sum of the estimates of ``entries``."""
    return sum(estimator.key_bytes(e) for e in entries.values())
