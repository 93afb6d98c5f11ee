"""The audit itself: stream one queue's keys, judge them with ``model.invariants``, re-confirm.

Per queue, three passes (all reads, SCAN with a bounded COUNT, optional pauses):

A. **Indexes.** The members of pending, active, lease, scheduled, retry, archived, completed and
   every ``g:<group>`` / ``g:<group>:<set>`` zset (found by SCAN) are read page by page into an
   :class:`IdIndex` (11 bytes per id, not the ids themselves).
B. **Keys.** SCAN over the queue's prefix. Keys are handled in chunks of ``chunk`` keys: task
   hashes (HMGET of the lifecycle fields, PEXPIRETIME, MEMORY USAGE) become a small
   :class:`KeyspaceSnapshot` holding those hashes plus the index entries of just their ids, on
   which ``check_i1``/``i4``/``i11``/``i12`` run unchanged; unique locks and their owners go
   through ``check_i6`` (strict: a live lock's owner must exist and name it); the other keys
   through ``check_i11``/``i12``/``i13``.
C. **References.** Index ids whose hash pass B never saw (I2), active ⇔ lease (I3), ``groups`` ⇔
   group zsets (I7), ``aggregation_sets`` ⇔ set keys (I8), archive size (I10), and the queue's
   membership in ``asynq:queues`` (I12).

A live Redis changes while it is read, so every candidate of I1–I4, I6, I7, I8 is read again
atomically (MULTI … EXEC of reads) and dropped when it no longer holds. Client memory: the
IdIndex (11 B per indexed id), one chunk of keys, and the findings themselves.

Time-dependent checks that need a quiescent keyspace (I5, I9, I8/I10 deadlines) are not run: a
live queue legitimately holds entries the next recoverer/janitor pass will take.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from broker.base import glob_escape, text
from broker.codec import decode_message
from broker.scripting import TTL_SHIFT_MS
from keysim.audit.asynq_estimate import AsynqEstimate, asynq_estimate
from keysim.audit.idindex import IdIndex
from model import keys
from model.invariants import (
    EXPECTED_TYPE,
    Family,
    KeyInfo,
    Violation,
    check_i1,
    check_i3,
    check_i4,
    check_i6,
    check_i11,
    check_i12,
    check_i13,
    classify,
)
from model.message import TaskMessage
from model.policy import ASYNQ_POLICY, Policy
from model.snapshot import FieldValue, KeyEntry, KeyspaceSnapshot, KeyType
from model.states import TaskState

CLOCKS = ("auto", "real")
_TASK_FIELDS = ("msg", "state", "group", "unique_key", "pending_since")
_LISTS = frozenset({Family.PENDING, Family.ACTIVE})
#: Families a server still works on: a queue holding one of them is not a dead leftover.
_LIVE = (Family.PENDING, Family.ACTIVE, Family.LEASE, Family.SCHEDULED, Family.RETRY)


@dataclass(frozen=True)
class AuditOptions:
    """How to audit. ``now_ms`` overrides the real clock (for broker-seeded virtual time).

    ``clock="auto"`` reads a PEXPIRETIME above ``TTL_SHIFT_MS`` (year 2033) as a deadline the
    keysim broker shifted (deadline + TTL_SHIFT_MS) and un-shifts it; ``"real"`` takes every
    deadline as is. Real Asynq keyspaces are the same under both.

    >>> AuditOptions(scan_count=0)
    Traceback (most recent call last):
    ...
    ValueError: scan_count must be an int in 1..100000, got 0
    """

    queues: tuple[str, ...] = ()
    scan_count: int = 1000
    pause_ms: int = 0
    chunk: int = 500
    clock: str = "auto"
    now_ms: int | None = None
    policy: Policy = ASYNQ_POLICY
    #: LPOS MAXLEN when re-confirming that a zombie is not in pending/active (new ids sit at the head).
    lpos_maxlen: int = 10_000

    def __post_init__(self) -> None:
        for name, low, high in (("scan_count", 1, 100_000), ("pause_ms", 0, 60_000),
                                ("chunk", 1, 100_000), ("lpos_maxlen", 0, 10**9)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"{name} must be an int in {low}..{high}, got {value!r}")
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, got {self.clock!r}")
        if self.now_ms is not None and (not isinstance(self.now_ms, int) or self.now_ms < 0):
            raise ValueError(f"now_ms must be a non-negative int, got {self.now_ms!r}")
        for queue in self.queues:
            keys.validate_name("queue", queue)


@dataclass(frozen=True, slots=True)
class Finding:
    """One confirmed violation; ``leaked`` keys are the ones the fix plan deletes."""

    invariant: str
    kind: str
    key: str
    task_id: str | None
    message: str
    leaked: bool = False
    bytes: int = 0


@dataclass
class QueueReport:
    """Everything the audit learned about one queue."""

    queue: str
    registered: bool = False
    keys: int = 0
    bytes: int = 0
    tasks_by_state: Counter[str] = field(default_factory=Counter)
    bytes_by_state: Counter[str] = field(default_factory=Counter)
    bytes_by_family: Counter[str] = field(default_factory=Counter)
    oldest: dict[str, tuple[str, int]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    asynq: AsynqEstimate | None = None

    @property
    def leaked_bytes(self) -> int:
        """Bytes of the distinct keys the fix plan would delete."""
        return sum({f.key: f.bytes for f in self.findings if f.leaked}.values())


@dataclass
class AuditResult:
    """The reports of every audited queue plus server facts."""

    queues: list[QueueReport]
    redis_version: str = ""
    used_memory: int | None = None
    seconds: float = 0.0

    @property
    def findings(self) -> list[Finding]:
        return [f for q in self.queues for f in q.findings]

    @property
    def exit_code(self) -> int:
        """0 when clean, 1 when anything was found."""
        return 1 if self.findings else 0


def audit(client: redis.Redis, options: AuditOptions | None = None) -> AuditResult:
    """Audit every queue (``options.queues`` or all discovered) through read-only ``client``."""
    opts = options or AuditOptions()
    started = time.monotonic()
    queues = list(opts.queues) or discover_queues(client, opts)
    reports = [QueueAudit(client, q, opts).run() for q in queues]
    result = AuditResult(reports, seconds=time.monotonic() - started)
    _server_facts(client, result)
    return result


def _server_facts(client: redis.Redis, result: AuditResult) -> None:
    try:
        info = client.info("server") | client.info("memory")
    except redis.exceptions.NoPermissionError:
        return  # INFO is optional: an ACL user without +info still gets the audit
    result.redis_version = str(info.get("redis_version", ""))
    result.used_memory = int(info["used_memory"]) if "used_memory" in info else None


def scan(client: redis.Redis, match: str, opts: AuditOptions) -> Iterator[list[str]]:
    """SCAN pages (as text) for ``match``, pausing ``pause_ms`` between round trips."""
    cursor = 0
    while True:
        cursor, batch = client.scan(cursor, match=match, count=opts.scan_count)
        cursor = int(cursor)
        if batch:
            yield [text(k) for k in batch]
        if cursor == 0:
            return
        if opts.pause_ms:
            time.sleep(opts.pause_ms / 1000)


def discover_queues(client: redis.Redis, opts: AuditOptions) -> list[str]:
    """Members of ``asynq:queues`` plus every queue named in a key's hash tag, sorted."""
    found = {text(q) for q in client.smembers(keys.ALL_QUEUES)}
    for page in scan(client, "asynq:{*", opts):
        found.update(q for q in map(keys.queue_of, page) if q)
    return sorted(found)


class QueueAudit:
    """One queue's three passes (module docstring)."""

    def __init__(self, client: redis.Redis, queue: str, opts: AuditOptions) -> None:
        self.client, self.queue, self.opts = client, queue, opts
        self.now_ms = opts.now_ms if opts.now_ms is not None else int(time.time() * 1000)
        self.report = QueueReport(queue)
        self.index = IdIndex()
        self.index_types: dict[str, Family] = {}
        self.present: set[Family] = set()
        self.seen: set[tuple[str, str | None, str]] = set()
        self.dead = False

    # --- driver ------------------------------------------------------------------------------
    def run(self) -> QueueReport:
        self.report.registered = bool(self.client.sismember(keys.ALL_QUEUES, self.queue))
        self._read_indexes()
        self.dead = not self.report.registered and not self.present & set(_LIVE)
        self._scan_keys()
        self._dangling()
        self._active_lease()
        self._groups()
        self._archive_size()
        self._registration()
        self.report.asynq = asynq_estimate(self.client, self.queue)
        return self.report

    def _add(self, violation: Violation, kind: str, leaked: bool = False, nbytes: int = 0) -> None:
        mark = (violation.key, violation.task_id, violation.message)
        if mark not in self.seen:  # SCAN may return a key twice
            self.seen.add(mark)
            self.report.findings.append(Finding(violation.invariant, kind, violation.key,
                                                violation.task_id, violation.message, leaked, nbytes))

    def _pause(self) -> None:
        if self.opts.pause_ms:
            time.sleep(self.opts.pause_ms / 1000)

    def short(self, key: str) -> str:
        prefix = keys.queue_prefix(self.queue)
        return key[len(prefix):] if key.startswith(prefix) else key

    def _deadline(self, pexpiretime: Any) -> int | None:
        at = int(pexpiretime) if isinstance(pexpiretime, int) else -1
        if at < 0:
            return None
        return at - TTL_SHIFT_MS if self.opts.clock == "auto" and at > TTL_SHIFT_MS else at

    # --- pass A: indexes ---------------------------------------------------------------------
    def _read_indexes(self) -> None:
        candidates = {keys.lease(self.queue): Family.LEASE}
        for state in (TaskState.PENDING, TaskState.ACTIVE, TaskState.SCHEDULED, TaskState.RETRY,
                      TaskState.ARCHIVED, TaskState.COMPLETED):
            candidates[keys.state_index(self.queue, state)] = Family(state.value)
        for page in scan(self.client, glob_escape(keys.group_prefix(self.queue)) + "*", self.opts):
            for key in page:
                info = classify(self.queue, key)
                if info is not None and info.family in (Family.GROUP, Family.GROUP_SET):
                    candidates[key] = info.family
        types = self._pipe([("type", k) for k in candidates])
        for (key, family), kind in zip(candidates.items(), types, strict=True):
            if text(kind) == EXPECTED_TYPE[family].value:
                self.present.add(family)
                self.index_types[key] = family
                slot = self.index.slot(key)
                for ids in self._members(key, family):
                    self.index.add(slot, ids)
        self.index.freeze()

    def _members(self, key: str, family: Family) -> Iterator[list[str]]:
        """Members of an index in pages of ``chunk`` (by position; new pending ids go to the head,
        so a concurrent LPUSH repeats an id rather than hiding one)."""
        start, step = 0, self.opts.chunk
        while True:
            page: list[Any] = (self.client.lrange(key, start, start + step - 1) if family in _LISTS
                               else self.client.zrange(key, start, start + step - 1))
            if page:
                yield [text(m) for m in page]
            if len(page) < step:
                return
            start += step
            self._pause()

    def _pipe(self, calls: Sequence[tuple[Any, ...]], atomic: bool = False) -> list[Any]:
        pipe = self.client.pipeline(transaction=atomic)
        for name, *args in calls:
            getattr(pipe, name)(*args)
        return list(pipe.execute(raise_on_error=False))

    # --- pass B: every key ---------------------------------------------------------------------
    def _scan_keys(self) -> None:
        buffers: dict[str, list[tuple[str, KeyInfo | None]]] = {"task": [], "lock": [], "other": []}
        handlers = {"task": self._tasks, "lock": self._locks, "other": self._others}
        for page in scan(self.client, glob_escape(keys.queue_prefix(self.queue)) + "*", self.opts):
            for key in page:
                info = classify(self.queue, key)
                kind = ("task" if info and info.family is Family.TASK
                        else "lock" if info and info.family is Family.UNIQUE else "other")
                buffers[kind].append((key, info))
                if len(buffers[kind]) >= self.opts.chunk:
                    handlers[kind](buffers[kind])
                    buffers[kind] = []
        for kind, buffer in buffers.items():
            if buffer:
                handlers[kind](buffer)

    def _count_key(self, key: str, family: str, nbytes: int) -> None:
        self.report.keys += 1
        self.report.bytes += nbytes
        self.report.bytes_by_family[family] += nbytes
        if self.dead:
            self._add(Violation("I12", key, None, f"leftover: {self.short(key)} belongs to queue "
                                                  f"{self.queue!r}, which is not in {keys.ALL_QUEUES} "
                                                  "and has no pending, active, scheduled or retry task"),
                      "unregistered leftover", leaked=True, nbytes=nbytes)

    # tasks
    def _tasks(self, chunk: list[tuple[str, KeyInfo | None]]) -> None:
        calls: list[tuple[Any, ...]] = []
        for key, _ in chunk:  # 3 commands a key: TYPE only when HMGET says WRONGTYPE
            calls += [("hmget", key, list(_TASK_FIELDS)), ("pexpiretime", key), ("memory_usage", key, 0)]
        replies = self._pipe(calls)
        wrong = [n for n in range(len(chunk)) if isinstance(replies[3 * n], Exception)]
        types = dict(zip(wrong, self._pipe([("type", chunk[n][0]) for n in wrong]), strict=True))
        ids = [info.name for _, info in chunk if info]
        slots = self.index.lookup(ids)
        entries: dict[str, KeyEntry] = {}
        sizes: dict[str, int] = {}
        members: dict[str, list[str]] = {}  # index key -> the chunk's ids it holds
        stubs = []
        for n, ((key, info), task_slots) in enumerate(zip(chunk, slots, strict=True)):
            values, pexp, nbytes = replies[3 * n: 3 * n + 3]
            kind = text(types[n]) if n in types else "hash"
            if kind == "none" or nbytes is None:
                continue  # deleted since SCAN returned it
            sizes[key] = int(nbytes or 0)
            entry = self._task_entry(key, kind, values, self._deadline(pexp))
            entries[key] = entry
            if entry.type is KeyType.HASH and not {"msg", "state"} <= set(entry.hash()):
                stubs.append(key)
            self._account(key, entry, sizes[key])
            assert info is not None
            for index_key in self.index.keys_of(task_slots):
                members.setdefault(index_key, []).append(info.name)
        for index_key, ids_in in members.items():
            kind = self._index_type(index_key)
            value = tuple((m, 0.0) for m in ids_in) if kind is KeyType.ZSET else tuple(ids_in)
            entries[index_key] = KeyEntry(index_key, kind, value)
        self._stub_fields(stubs, entries)
        self._judge_tasks(entries, sizes)

    def _index_type(self, key: str) -> KeyType:
        return EXPECTED_TYPE[self.index_types[key]]

    def _task_entry(self, key: str, kind: str, values: Any, expire: int | None) -> KeyEntry:
        if kind != KeyType.HASH.value:
            return KeyEntry(key, KeyType(kind) if kind in KeyType._value2member_map_ else KeyType.STRING,
                            _placeholder(kind), expire)
        fields: dict[str, FieldValue] = {}
        for name, raw in zip(_TASK_FIELDS, values, strict=True):
            if raw is not None:
                fields[name] = _msg(raw) if name == "msg" else text(raw)
        return KeyEntry(key, KeyType.HASH, fields, expire)

    def _stub_fields(self, stubs: list[str], entries: dict[str, KeyEntry]) -> None:
        """Stubs are reported with every field they have, so read their field names."""
        for key, names in zip(stubs, self._pipe([("hkeys", k) for k in stubs]), strict=True):
            if isinstance(names, list):
                fields: dict[str, FieldValue] = dict.fromkeys((text(f) for f in names), "")
                fields.update(entries[key].hash())
                entries[key] = KeyEntry(key, KeyType.HASH, fields, entries[key].expire_at_ms)

    def _account(self, key: str, entry: KeyEntry, nbytes: int) -> None:
        state = "invalid"
        if entry.type is KeyType.HASH:
            fields = entry.hash()
            raw_state = fields.get("state")
            state = "stub" if "msg" not in fields or raw_state is None else str(raw_state)
            self._oldest(state, key, fields)
        self.report.tasks_by_state[state] += 1
        self.report.bytes_by_state[state] += nbytes
        self._count_key(key, Family.TASK.value, nbytes)

    def _oldest(self, state: str, key: str, fields: Any) -> None:
        """Age by the msg (retry/archived: last failure, completed: completion) or pending_since."""
        msg = fields.get("msg")
        stamp = 0
        if state == TaskState.PENDING.value and str(fields.get("pending_since", "")).isdigit():
            stamp = int(str(fields["pending_since"])) // 10**9
        elif isinstance(msg, TaskMessage) and state in (TaskState.RETRY.value, TaskState.ARCHIVED.value):
            stamp = msg.last_failed_at
        elif isinstance(msg, TaskMessage) and state == TaskState.COMPLETED.value:
            stamp = msg.completed_at
        best = self.report.oldest.get(state)
        if stamp > 0 and (best is None or stamp < best[1]):
            self.report.oldest[state] = (key[len(keys.task_prefix(self.queue)):], stamp)

    def _judge_tasks(self, entries: dict[str, KeyEntry], sizes: dict[str, int]) -> None:
        snap = KeyspaceSnapshot(self.queue, self.now_ms, entries, registered=True)
        for v in check_i1(snap) + check_i4(snap):
            if self._confirm_task(v, entries):
                stub = v.message.startswith("stub:")
                zombie = v.message.startswith("zombie:")
                fields = entries[v.key].hash() if v.key in entries else {}
                kind = ("result-only hash" if stub and set(fields) == {"result"} else "stub" if stub
                        else "zombie" if zombie else "misplaced" if v.invariant == "I1" else "duplicate")
                self._add(v, kind, leaked=stub or zombie, nbytes=sizes.get(v.key, 0))
        for v in check_i11(snap):
            self._add(v, "ttl on task data", nbytes=sizes.get(v.key, 0))
        for v in check_i12(snap):
            self._add(v, "bad key", nbytes=sizes.get(v.key, 0))

    def _confirm_task(self, v: Violation, entries: dict[str, KeyEntry]) -> bool:
        """Re-read a placement or membership candidate atomically; True when it still holds."""
        if v.task_id is None or not (v.message.startswith("zombie:") or " sits in " in v.message
                                     or v.invariant == "I4"):
            return True  # stubs, undecodable msgs: a property of the hash alone, stable
        task_key = keys.task(self.queue, v.task_id)
        entry = entries.get(task_key)
        state = entry.hash().get("state") if entry is not None and entry.type is KeyType.HASH else None
        where = [k for k, e in entries.items() if k in self.index_types and v.task_id in e.members()]
        expected = self._expected_indexes(str(state), entry) if v.invariant == "I1" else []
        probe = list(dict.fromkeys(where + expected))
        calls: list[tuple[Any, ...]] = [("hget", task_key, "state")]
        calls += [self._member_call(k, v.task_id, whole=v.invariant == "I4") for k in probe]
        fresh = self._pipe(calls, atomic=True)
        if fresh[0] is None or text(fresh[0]) != str(state):
            return False  # the task moved or vanished meanwhile
        held = {k for k, r in zip(probe, fresh[1:], strict=True) if _holds(r)}
        if v.invariant == "I4":
            pending = keys.pending(self.queue)
            again = [r for k, r in zip(probe, fresh[1:], strict=True) if k == pending]
            return len(held - {keys.lease(self.queue)}) > 1 or any(
                isinstance(r, list) and len(r) > 1 for r in again)
        return not held & set(expected)

    def _expected_indexes(self, state: str, entry: KeyEntry | None) -> list[str]:
        if state == TaskState.AGGREGATING.value and entry is not None:
            group = str(entry.hash().get("group", ""))
            home = keys.group(self.queue, group)
            return [home, *(k for k in self.index_types if k.startswith(home + ":"))]
        try:
            return [keys.state_index(self.queue, TaskState(state))]
        except ValueError:
            return []

    def _member_call(self, key: str, member: str, whole: bool = False) -> tuple[Any, ...]:
        """ZSCORE, or LPOS … COUNT 0 bounded by ``lpos_maxlen`` unless ``whole``."""
        if self.index_types.get(key) in _LISTS:
            maxlen = 0 if whole else self.opts.lpos_maxlen
            return ("execute_command", "LPOS", key, member, "COUNT", 0, "MAXLEN", maxlen)
        return ("zscore", key, member)

    # locks
    def _locks(self, chunk: list[tuple[str, KeyInfo | None]]) -> None:
        calls: list[tuple[Any, ...]] = []
        for key, _ in chunk:
            calls += [("type", key), ("get", key), ("pexpiretime", key), ("memory_usage", key, 0)]
        replies = self._pipe(calls)
        entries: dict[str, KeyEntry] = {}
        sizes: dict[str, int] = {}
        for n, (key, _) in enumerate(chunk):
            kind, value, pexp, nbytes = replies[4 * n: 4 * n + 4]
            if text(kind) == "none":
                continue
            sizes[key] = int(nbytes or 0)
            self._count_key(key, Family.UNIQUE.value, sizes[key])
            deadline = self._deadline(pexp)
            entries[key] = (KeyEntry(key, KeyType.STRING, text(value), deadline)
                            if isinstance(value, bytes) else
                            KeyEntry(key, KeyType(text(kind)), _placeholder(text(kind)), deadline))
        owners = self._owner_hashes(entries)
        snap = KeyspaceSnapshot(self.queue, self.now_ms, {**entries, **owners}, registered=True)
        for v in check_i6(snap, strict_locks=True):
            if self._confirm_lock(v):
                self._add(v, "lock without ttl" if v.message.endswith("no TTL") else "orphan lock",
                          leaked=True, nbytes=sizes.get(v.key, 0))
        for v in check_i12(snap):
            self._add(v, "bad key", nbytes=sizes.get(v.key, 0))

    def _owner_hashes(self, locks: dict[str, KeyEntry]) -> dict[str, KeyEntry]:
        owners = sorted({e.string() for e in locks.values() if e.type is KeyType.STRING and e.string()})
        task_keys = [keys.task(self.queue, o) for o in owners]
        replies = self._pipe([("hmget", k, ["state", "unique_key"]) for k in task_keys])
        out = {}
        for key, reply in zip(task_keys, replies, strict=True):
            if isinstance(reply, list) and any(r is not None for r in reply):
                fields = {n: text(r) for n, r in zip(("state", "unique_key"), reply, strict=True)
                          if r is not None}
                out[key] = KeyEntry(key, KeyType.HASH, fields)
        return out

    def _confirm_lock(self, v: Violation) -> bool:
        if v.task_id is None or v.message.endswith("no TTL"):
            return True
        task_key = keys.task(self.queue, v.task_id)
        got, fields = self._pipe([("get", v.key), ("hmget", task_key, ["state", "unique_key"])],
                                 atomic=True)
        if got is None or text(got) != v.task_id:
            return False
        state, unique_key = (None, None) if not isinstance(fields, list) else fields
        if state is None and unique_key is None:
            return True  # the owner is gone
        return text(state or b"") == TaskState.COMPLETED.value or text(unique_key or b"") != v.key

    # other keys
    def _others(self, chunk: list[tuple[str, KeyInfo | None]]) -> None:
        calls: list[tuple[Any, ...]] = []
        for key, _ in chunk:
            calls += [("type", key), ("pexpiretime", key), ("memory_usage", key, 0)]
        replies = self._pipe(calls)
        kinds = [text(replies[3 * n]) for n in range(len(chunk))]
        strings = [key for (key, _), kind in zip(chunk, kinds, strict=True) if kind == "string"]
        values = dict(zip(strings, self._pipe([("get", k) for k in strings]), strict=True))
        entries: dict[str, KeyEntry] = {}
        sizes: dict[str, int] = {}
        for n, ((key, info), kind) in enumerate(zip(chunk, kinds, strict=True)):
            if kind == "none" or kind not in KeyType._value2member_map_:
                continue
            sizes[key] = int(replies[3 * n + 2] or 0)
            self._count_key(key, info.family.value if info else "unknown", sizes[key])
            raw = values.get(key)
            value: Any = text(raw) if isinstance(raw, bytes) else _placeholder(kind)
            entries[key] = KeyEntry(key, KeyType(kind), value, self._deadline(replies[3 * n + 1]))
        snap = KeyspaceSnapshot(self.queue, self.now_ms, entries, registered=True)
        for v in check_i11(snap):
            self._add(v, "ttl on task data", nbytes=sizes.get(v.key, 0))
        for v in check_i12(snap):
            self._add(v, "bad key", nbytes=sizes.get(v.key, 0))
        for v in check_i13(snap, self.opts.policy):
            no_ttl = v.message.endswith("has no TTL")
            self._add(v, "counter without ttl" if no_ttl else "bad counter", leaked=no_ttl,
                      nbytes=sizes.get(v.key, 0))

    # --- pass C: references --------------------------------------------------------------------
    def _dangling(self) -> None:
        for key, family in self.index_types.items():
            slot = self.index.slot(key)
            for ids in self._members(key, family):
                candidates = list(dict.fromkeys(self.index.unseen(slot, ids)))
                exists = self._pipe([("exists", keys.task(self.queue, i)) for i in candidates])
                for task_id, found in zip(candidates, exists, strict=True):
                    if not found and self._confirm_dangling(key, task_id):
                        task = self.short(keys.task(self.queue, task_id))
                        self._add(Violation("I2", key, task_id, f"dangling: {self.short(key)} holds "
                                                                f"{task_id!r} but {task} does not exist"),
                                  "dangling id")

    def _confirm_dangling(self, key: str, task_id: str) -> bool:
        member = self._member_call(key, task_id, whole=True)  # the id may sit anywhere
        found, held = self._pipe([("exists", keys.task(self.queue, task_id)), member], atomic=True)
        return not found and _holds(held)

    def _active_lease(self) -> None:
        active, lease = keys.active(self.queue), keys.lease(self.queue)
        if active not in self.index_types and lease not in self.index_types:
            return
        a, z = self._pipe([("lrange", active, 0, -1), ("zrange", lease, 0, -1, False, True)], atomic=True)
        entries = {}
        if isinstance(a, list) and a:
            entries[active] = KeyEntry(active, KeyType.LIST, tuple(text(m) for m in a))
        if isinstance(z, list) and z:
            entries[lease] = KeyEntry(lease, KeyType.ZSET, tuple((text(m), float(s)) for m, s in z))
        snap = KeyspaceSnapshot(self.queue, self.now_ms, entries, registered=True)
        for v in check_i3(snap):
            kind = "active without lease" if "no lease" in v.message else (
                "lease without active" if "not in active" in v.message else "duplicate")
            self._add(v, kind)

    def _groups(self) -> None:
        groups_key, sets_key = keys.groups(self.queue), keys.aggregation_sets(self.queue)
        listed_raw, index_raw = self._pipe([("smembers", groups_key), ("zrange", sets_key, 0, -1)],
                                           atomic=True)
        listed = {text(m) for m in listed_raw} if isinstance(listed_raw, set) else set()
        indexed = {text(m) for m in index_raw} if isinstance(index_raw, list) else set()
        present = {k: classify(self.queue, k) for k, f in self.index_types.items() if f is Family.GROUP}
        names = {info.name: k for k, info in present.items() if info}
        sets = {k for k, f in self.index_types.items() if f is Family.GROUP_SET}
        for name in sorted(listed - set(names)):
            self._group_candidate(name, stale=True)
        for name in sorted(set(names) - listed):
            self._group_candidate(name, stale=False)
        for key in sorted(sets - indexed):
            self._set_candidate(key, unindexed=True)
        for key in sorted(indexed - sets):
            self._set_candidate(key, unindexed=False)

    def _group_candidate(self, name: str, stale: bool) -> None:
        group_key, groups_key = keys.group(self.queue, name), keys.groups(self.queue)
        member, size = self._pipe([("sismember", groups_key, name), ("zcard", group_key)], atomic=True)
        if stale and member and not size:
            self._add(Violation("I7", groups_key, None, f"stale group: groups lists {name!r} but "
                                                        f"{self.short(group_key)} is empty"), "stale group")
        elif not stale and size and not member:
            self._add(Violation("I7", group_key, None, f"orphan group: g:{name} holds {size} task(s) "
                                                       f"but {name!r} is not in groups"), "orphan group")

    def _set_candidate(self, key: str, unindexed: bool) -> None:
        sets_key = keys.aggregation_sets(self.queue)
        score, exists = self._pipe([("zscore", sets_key, key), ("exists", key)], atomic=True)
        if unindexed and exists and score is None:
            self._add(Violation("I8", key, None, f"aggregation set {self.short(key)} is not in "
                                                 "aggregation_sets"), "unindexed aggregation set")
        elif not unindexed and score is not None and not exists:
            info = classify(self.queue, key) if keys.queue_of(key) == self.queue else None
            why = ("but that set does not exist" if info is not None and info.family is Family.GROUP_SET
                   else f"which is not an aggregation-set key of queue {self.queue!r}")
            self._add(Violation("I8", sets_key, None, f"aggregation_sets lists {self.short(key)} {why}"),
                      "dangling aggregation set")

    def _archive_size(self) -> None:
        archived = keys.archived(self.queue)
        if archived in self.index_types:
            size, cap = int(self.client.zcard(archived)), self.opts.policy.archive_capacity
            if size > cap:
                self._add(Violation("I10", archived, None, f"archived holds {size} entries, above the "
                                                           f"capacity {cap}"), "archive over capacity")

    def _registration(self) -> None:
        if self.report.keys and not self.report.registered:
            self._add(Violation("I12", keys.ALL_QUEUES, None,
                                f"queue {self.queue!r} has {self.report.keys} key(s) but is not in "
                                f"{keys.ALL_QUEUES}"), "unregistered queue")


def _msg(raw: bytes) -> FieldValue:
    try:
        return decode_message(raw)
    except ValueError:
        return text(raw)


def _placeholder(kind: str) -> Any:
    """A non-empty stand-in value for a key whose content the checks at hand do not read."""
    return {"string": "", "list": ("?",), "set": frozenset({"?"}), "zset": (("?", 0.0),),
            "hash": {"?": ""}}.get(kind, "")


def _holds(reply: Any) -> bool:
    """A ZSCORE or LPOS reply says the member is there."""
    if isinstance(reply, list):
        return bool(reply)
    return reply is not None and not isinstance(reply, Exception)
