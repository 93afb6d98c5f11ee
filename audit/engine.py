"""The audit itself: stream one queue's keys, judge them with ``model.invariants``, re-confirm.

First one SCAN of ``asynq:*`` (:func:`audit.ownership.survey`) finds the queues and decides who
owns the keys that several queue names could name; a queue judges only its own keys (ambiguous
and unrecognised ones are listed once, never judged). Last, :mod:`audit.registry` accounts for
the keys outside every queue (without ``--queue``).

Per queue, three passes (all reads, SCAN with a bounded COUNT, optional pauses):

A. **Indexes.** The members of pending, active, lease, scheduled, retry, archived, completed and
   every ``g:<group>`` / ``g:<group>:<set>`` zset (found by SCAN) are read page by page into an
   :class:`IdIndex` (11 bytes per id, not the ids themselves).
B. **Keys.** SCAN over the queue's prefix. Keys are handled in chunks of ``chunk`` keys: task
   hashes are read by :class:`TaskReader` (HMGET of the lifecycle fields, PEXPIRETIME, MEMORY
   USAGE; one read-only EVAL_RO per batch when permitted, else one pipeline). A *plain* task —
   a hash without TTL whose msg decodes to its own id and queue, whose state has one index
   and whose id sits exactly once in exactly that index — breaks none of the per-key rules
   below, so it is only counted. Every other task becomes part of a small
   :class:`KeyspaceSnapshot` holding those hashes plus the index entries of just their ids, on
   which ``check_i1``/``i4``/``i11``/``i12`` run unchanged; unique locks and their owners go
   through ``check_i6`` (strict: a live lock's owner must exist and name it); the other keys
   through ``check_i11``/``i12``/``i13``.
C. **References.** Index ids whose hash pass B never saw (I2), active ⇔ lease (I3), ``groups`` ⇔
   group zsets (I7), ``aggregation_sets`` ⇔ set keys (I8), archive size (I10), and the queue's
   membership in ``asynq:queues`` (I12).

A live Redis changes while it is read, so every candidate of I1–I4, I6, I7, I8 is read again
(:mod:`audit.verify`: atomically with MULTI … EXEC, or, for a user without them, twice with
plain reads and a pause between) and dropped when it no longer holds. A key whose proof needs
a read the server refused (no deadline readable, a re-read refused) is UNVERIFIED
(:mod:`audit.unverified`), never a finding. Client memory: the IdIndex (11 B per indexed id),
one chunk of keys, and the findings themselves.

Time-dependent checks that need a quiescent keyspace (I5, I9, I8/I10 deadlines) are not run: a
live queue legitimately holds entries the next recoverer/janitor pass will take.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import redis

from audit.asynq_estimate import AsynqEstimate, asynq_estimate
from audit.capabilities import Capabilities, Expiry, Unread, probe
from audit.idindex import IdIndex
from audit.ownership import Ownership, Unattributed, survey
from audit.registry import RegistryReport, account_registries
from audit.taskread import (
    READ_MODES,
    TASK_FIELDS,
    Inflight,
    PendingTasks,
    TaskReader,
    now_ms,
    peek_message,
)
from audit.unverified import Unverified, note
from audit.verify import DEFAULT_PAUSE_MS, Candidate, Recheck, Verifier
from broker.base import text
from broker.codec import decode_message
from broker.proto.taskmessage_pb2 import TaskMessage as TaskMessagePB
from broker.scripting import decode_deadline, is_shifted
from model import keys
from model.invariants import (
    EXPECTED_TYPE,
    Family,
    Invariant,
    KeyInfo,
    Kind,
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
from model.states import INDEXED_STATES, TaskState

CLOCKS = ("auto", "real")
# Positions in a task's replies (taskread.TaskReplies): its fields, then PEXPIRETIME, MEMORY USAGE.
_MSG, _STATE, _SINCE = (TASK_FIELDS.index(f) for f in ("msg", "state", "pending_since"))
_PEXP, _BYTES = len(TASK_FIELDS), len(TASK_FIELDS) + 1
# Plain strings for the per-task hot path (an enum's .value is a descriptor call).
_PENDING, _COMPLETED = TaskState.PENDING.value, TaskState.COMPLETED.value
_FAILED_STATES = frozenset({TaskState.RETRY.value, TaskState.ARCHIVED.value})
_TASK = Family.TASK.value
_LISTS = frozenset(f for f, kind in EXPECTED_TYPE.items() if kind is KeyType.LIST)
#: Families a server still works on: a queue holding one of them is not a dead leftover.
_LIVE = (Family.PENDING, Family.ACTIVE, Family.LEASE, Family.SCHEDULED, Family.RETRY)
#: Reads whose refusal the audit works around (a deadline read, an exact size); any other
#: refused read stops it.
_OPTIONAL_READS = frozenset({"pexpiretime", "pttl", "memory_usage"})
#: I13 findings that are about a counter's TTL (not checkable without a deadline).
_TTL_KINDS = frozenset({Kind.DAILY_COUNTER_WITHOUT_TTL, Kind.DAILY_COUNTER_TTL_TOO_LONG,
                        Kind.TOTAL_COUNTER_WITH_TTL})


@dataclass(frozen=True)
class AuditOptions:
    """How to audit. ``now_ms`` overrides the real clock (for broker-seeded virtual time).

    ``clock="auto"`` reads a deadline above ``TTL_SHIFT_MS`` (year 2033) as one the keysim
    broker encoded (``broker.scripting.encode_deadline``) and decodes it; ``"real"`` takes every
    deadline as is. Real Asynq keyspaces are the same under both. ``reads`` picks how task hashes
    are read (:mod:`audit.taskread`): ``"auto"`` (EVAL_RO, or a pipeline when refused),
    ``"script"`` or ``"pipeline"``; the findings are the same. ``verify_pause_ms``: without
    MULTI/EXEC, the pause between a candidate's two plain re-reads.

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
    reads: str = "auto"
    verify_pause_ms: int = DEFAULT_PAUSE_MS
    #: How long past its deadline a registry member or scheduler history must be before it is
    #: called stale or orphaned (:mod:`audit.registry`).
    registry_grace_s: int = 600

    def __post_init__(self) -> None:
        for name, low, high in (("scan_count", 1, 100_000), ("pause_ms", 0, 60_000),
                                ("verify_pause_ms", 0, 60_000),
                                ("chunk", 1, 100_000), ("lpos_maxlen", 0, 10**9),
                                ("registry_grace_s", 0, 10**7)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"{name} must be an int in {low}..{high}, got {value!r}")
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, got {self.clock!r}")
        if self.reads not in READ_MODES:
            raise ValueError(f"reads must be one of {READ_MODES}, got {self.reads!r}")
        if self.now_ms is not None and (not isinstance(self.now_ms, int) or self.now_ms < 0):
            raise ValueError(f"now_ms must be a non-negative int, got {self.now_ms!r}")
        for queue in self.queues:
            keys.validate_asynq_queue(queue)


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
    #: Keys that could not be judged (a read refused), per kind and reason.
    unverified: list[Unverified] = field(default_factory=list)
    #: Keys whose MEMORY USAGE was refused: they count 0 bytes in every figure above.
    bytes_unknown: int = 0

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
    #: How task hashes were read: "script" or "pipeline" ("auto": there was none to read).
    #: Not part of the report.
    reads: str = ""
    #: The server as it names itself ("Valkey 9.1.2", "Redis 6.2.14"; "" when INFO is refused).
    server: str = ""
    #: How deadlines were read and candidates confirmed.
    capabilities: Capabilities = field(default_factory=Capabilities)
    #: Keys no single queue owns (:mod:`audit.ownership`) and global keys of no known kind
    #: (:mod:`audit.registry`): listed, never a finding.
    unattributed: list[Unattributed] = field(default_factory=list)
    #: The global keys (:mod:`audit.registry`); None when the audit was limited to ``--queue``.
    registries: RegistryReport | None = None

    @property
    def ambiguous(self) -> list[Unattributed]:
        return [u for u in self.unattributed if u.ambiguous]

    @property
    def unrecognised(self) -> list[Unattributed]:
        return [u for u in self.unattributed if not u.ambiguous]

    @property
    def findings(self) -> list[Finding]:
        extra = self.registries.findings if self.registries is not None else []
        return [f for q in self.queues for f in q.findings] + extra

    @property
    def unverified(self) -> list[Unverified]:
        return [u for q in self.queues for u in q.unverified]

    @property
    def exit_code(self) -> int:
        """0 when clean, 1 when anything was found, 3 (incomplete) when nothing was found but
        some key could not be verified."""
        return 1 if self.findings else 3 if self.unverified else 0


class UnknownQueue(ValueError):
    """``--queue`` names a queue that is neither registered nor has any key (exit code 2)."""


def audit(client: redis.Redis, options: AuditOptions | None = None) -> AuditResult:
    """Audit every queue (``options.queues`` or all discovered) through read-only ``client``."""
    opts = options or AuditOptions()
    if client.get_encoder().decode_responses:
        raise ValueError("client must not decode responses (decode_responses=False, as connect() "
                         "makes it): the audit reads key names as raw bytes")
    started = time.monotonic()
    found = survey(client, scan_raw(client, keys.NAMESPACE + "*", opts))
    for queue in opts.queues:
        _require_queue(client, queue, found.queues)
    queues = list(opts.queues) or found.queues
    caps = probe(client)
    reader = TaskReader(client, opts.reads, caps.expiry.command)
    reports = [QueueAudit(client, q, opts, reader, found.groups.get(q), caps=caps,
                          ownership=found.ownership).run() for q in queues]
    result = AuditResult(reports, reads=reader.mode, capabilities=caps)
    result.unattributed = [u for u in found.ownership.ambiguous() + found.ownership.unrecognised()
                           if not opts.queues or set(u.candidates) & set(opts.queues)]
    if not opts.queues:
        now_ms = opts.now_ms if opts.now_ms is not None else int(time.time() * 1000)
        result.registries = account_registries(client, found.global_keys, now_ms,
                                               opts.registry_grace_s)
        result.unattributed += result.registries.unrecognised
    result.seconds = time.monotonic() - started
    _server_facts(client, result)
    return result


def _require_queue(client: redis.Redis, queue: str, known_queues: list[str]) -> None:
    """Raise :class:`UnknownQueue` unless ``queue`` is registered or owns a key
    (``known_queues``, from :func:`audit.ownership.survey`)."""
    if queue in known_queues:
        return
    known = ", ".join(repr(text(q)) for q in sorted(client.smembers(keys.ALL_QUEUES))) or "none"
    raise UnknownQueue(f"no queue {queue!r}: it is not in {keys.ALL_QUEUES} and has no key "
                       f"(registered queues: {known})")


def _server_facts(client: redis.Redis, result: AuditResult) -> None:
    try:
        info = client.info("server") | client.info("memory")
    except redis.exceptions.NoPermissionError:
        return  # INFO is optional: an ACL user without +info still gets the audit
    result.redis_version = str(info.get("redis_version", ""))
    result.server = server_name(info)
    result.used_memory = int(info["used_memory"]) if "used_memory" in info else None


def server_name(info: dict[str, Any]) -> str:
    """The server as it names itself in INFO server: Valkey reports its own version next to the
    Redis version it is compatible with.

    >>> server_name({"redis_version": "7.2.4", "valkey_version": "9.1.2", "server_name": "valkey"})
    'Valkey 9.1.2'
    >>> server_name({"redis_version": "6.2.14"})
    'Redis 6.2.14'
    """
    if "valkey_version" in info:
        return f"Valkey {info['valkey_version']}"
    return f"Redis {info.get('redis_version', '?')}"


def scan(client: redis.Redis, match: str, opts: AuditOptions) -> Iterator[list[str]]:
    """SCAN pages (as text) for ``match``, pausing ``pause_ms`` between round trips."""
    for batch in scan_raw(client, match, opts):
        yield [text(k) for k in batch]


def scan_raw(client: redis.Redis, match: str, opts: AuditOptions) -> Iterator[list[bytes]]:
    """SCAN pages (raw key names) for ``match``, pausing ``pause_ms`` between round trips.

    Without a pause the next page is asked for before this one is handed out, so the server
    scans while the caller works on the page."""
    ahead: Inflight | None = _send_scan(client, b"0", match, opts)
    try:
        while ahead is not None:
            (reply,) = ahead.collect()
            if isinstance(reply, Exception):
                raise reply
            cursor, batch = reply
            done = int(cursor) == 0
            ahead = None if done or opts.pause_ms else _send_scan(client, cursor, match, opts)
            if batch:
                yield cast(list[bytes], batch)  # the audit's client never decodes replies
            if not done and ahead is None:
                time.sleep(opts.pause_ms / 1000)
                ahead = _send_scan(client, cursor, match, opts)
    finally:
        if ahead is not None:
            ahead.abandon()  # the caller stopped early


def _send_scan(client: redis.Redis, cursor: bytes, match: str, opts: AuditOptions) -> Inflight:
    return Inflight(client, [(b"SCAN", cursor, b"MATCH", match, b"COUNT", opts.scan_count)])


def discover_queues(client: redis.Redis, opts: AuditOptions) -> list[str]:
    """Members of ``asynq:queues`` plus every queue that owns a key (:mod:`audit.ownership`),
    sorted."""
    return survey(client, scan_raw(client, keys.NAMESPACE + "*", opts)).queues


class QueueAudit:
    """One queue's three passes (module docstring)."""

    def __init__(self, client: redis.Redis, queue: str, opts: AuditOptions,
                 reader: TaskReader | None = None, group_keys: list[str] | None = None,
                 caps: Capabilities | None = None, ownership: Ownership | None = None) -> None:
        """``group_keys``: the queue's group and aggregation-set keys if already known (else
        pass A SCANs for them); ``caps``: what the server permits (else probed here);
        ``ownership``: who owns keys that several queue names could name (else it is decided
        here, against this queue and ``asynq:queues``)."""
        self.client, self.queue, self.opts = client, queue, opts
        self.group_keys = group_keys
        self.caps = caps or probe(client)
        self.expiry: Expiry = self.caps.expiry
        self.verifier = Verifier(client, self.caps.atomic, opts.verify_pause_ms)
        self.reader = reader or TaskReader(client, opts.reads, self.expiry.command)
        self._sent_ms = 0  # when the last _pipe was sent
        self.ownership = ownership or Ownership(
            {queue} | {text(q) for q in client.smembers(keys.ALL_QUEUES)})
        #: Only a name without ``}:`` makes every key with one ``}:`` after the prefix its own.
        self._simple_name = "}:" not in queue
        self._task_prefix = keys.task_prefix(queue)
        self._task_prefix_raw = self._task_prefix.encode("utf-8", "surrogateescape")
        #: state as stored (bytes) -> (state, slot of its index); filled once the indexes are read.
        self._home: dict[bytes, tuple[str, int]] = {}
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
        self.verifier.drain()
        try:
            self.report.asynq = asynq_estimate(self.client, self.queue)
        except redis.exceptions.NoPermissionError:
            self.report.asynq = None  # Asynq's figure is made of MEMORY USAGE reads: none without
        return self.report

    def _add(self, violation: Violation, kind: str, leaked: bool = False, nbytes: int = 0) -> None:
        if self.ownership.is_shared(violation.key):
            return  # ambiguous: listed once by the audit, reported by no queue
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

    def _deadline(self, reply: Any, sent_ms: int, command: bytes | None = None) -> int | Unread | None:
        """The deadline in a reply of ``command`` (default: the audit's deadline read) sent at
        ``sent_ms`` (None: no TTL; :class:`Unread`: refused), un-shifted under ``clock="auto"``."""
        expiry = self.expiry if command in (None, self.expiry.command) else Expiry(command)
        at = expiry.deadline(reply, sent_ms)
        if not isinstance(at, int):
            return at
        return decode_deadline(at) if self.opts.clock == "auto" and is_shifted(at) else at

    def _size(self, reply: Any) -> int:
        """A MEMORY USAGE reply as bytes; a refused one counts 0 and is counted as unknown."""
        if isinstance(reply, int):
            return reply
        if isinstance(reply, Exception):
            self.report.bytes_unknown += 1
        return 0

    def _unverified(self, key: str, kind: str, reason: str, nbytes: int = 0) -> None:
        note(self.report.unverified, key, kind, reason, nbytes)

    def _submit(self, candidates: list[Candidate]) -> None:
        """Confirm candidates (:mod:`audit.verify`), and the waiting ones whose pause is over."""
        if candidates:
            self.verifier.submit(candidates)
        self.verifier.poll()

    # --- pass A: indexes ---------------------------------------------------------------------
    def _read_indexes(self) -> None:
        exact = {keys.lease(self.queue): Family.LEASE}
        for state in INDEXED_STATES:
            exact[keys.state_index(self.queue, state)] = Family(state.value)
        candidates = {k: exact[k] for k in self._mine(list(exact), shared=True)}
        pages = ([self.group_keys] if self.group_keys is not None
                 else scan(self.client, keys.glob_escape(keys.group_prefix(self.queue)) + "*", self.opts))
        for page in pages:
            for key in self._mine(page, shared=True):
                info = classify(self.queue, key)
                if info is not None and info.family in (Family.GROUP, Family.GROUP_SET):
                    candidates[key] = info.family
        types = self._pipe([("type", k) for k in candidates])
        for (key, family), kind in zip(candidates.items(), types, strict=True):
            if text(kind) == EXPECTED_TYPE[family].value:
                self.present.add(family)
                self.index_types[key] = family
                slot = self.index.slot(key)
                for ids in self._member_pages(key, family):
                    self.index.add(slot, ids)
        self.index.freeze()
        for state in INDEXED_STATES:  # the plain-task fast path
            home = keys.state_index(self.queue, state)
            if home in self.index_types:
                self._home[state.value.encode()] = (state.value, self.index.slot(home))

    def _mine(self, names: list[str], shared: bool = False) -> list[str]:
        """The keys of ``names`` this queue owns (and, if ``shared``, the ambiguous ones it
        could own); see :mod:`audit.ownership`."""
        cut = len(keys.queue_prefix(self.queue))
        several = [n for n in names if not self._simple_name or n.find("}:", cut) >= 0]
        if not several:
            return names
        fresh = self.ownership.undecided(several)
        if fresh:
            self.ownership.decide(self.client, fresh)
        shared_here = self.ownership.shared.get(self.queue, {}) if shared else {}
        drop = {n for n in several if not self.ownership.owns(self.queue, n) and n not in shared_here}
        return [n for n in names if n not in drop]

    def _member_pages(self, key: str, family: Family) -> Iterator[list[bytes]]:
        """Members of an index in pages of ``chunk`` (by position; new pending ids go to the head,
        so a concurrent LPUSH repeats an id rather than hiding one)."""
        start, step = 0, self.opts.chunk
        while True:
            page: list[Any] = (self.client.lrange(key, start, start + step - 1) if family in _LISTS
                               else self.client.zrange(key, start, start + step - 1))
            if page:
                yield page
            if len(page) < step:
                return
            start += step
            self._pause()

    def _pipe(self, calls: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Replies of plain (non-atomic) reads. An error reply of a deadline or MEMORY USAGE read
        stays in its place for the caller to judge; any other error is raised: the audit
        cannot go on without the reads of ``+@read``."""
        pipe = self.client.pipeline(transaction=False)
        for name, *args in calls:
            getattr(pipe, name)(*args)
        self._sent_ms = now_ms()
        replies = list(pipe.execute(raise_on_error=False))
        for (name, *_), reply in zip(calls, replies, strict=True):
            if isinstance(reply, Exception) and name not in _OPTIONAL_READS:
                raise reply
        return replies

    def _ttl_call(self, key: str) -> tuple[Any, ...]:
        return (self.expiry.name.lower(), key)

    # --- pass B: every key ---------------------------------------------------------------------
    def _scan_keys(self) -> None:
        """Chunks are judged in SCAN order, as they fill up. A task chunk's reads are sent when
        it fills but judged only when the next one is sent (or at the end): the server reads
        one chunk while the client judges the previous one. Lock and other chunks wait behind
        a task chunk in flight, so the order of the findings does not depend on timing."""
        tasks: list[bytes] = []  # raw names: task hashes are the bulk, they skip text and classify
        buffers: dict[str, list[tuple[str, KeyInfo | None]]] = {"lock": [], "other": []}
        handlers = {"lock": self._locks, "other": self._others}
        jobs: list[Callable[[], None]] = []  # non-empty only behind a task chunk in flight
        in_flight: list[PendingTasks] = []  # abandoned if anything fails before they are read

        def run_jobs() -> None:
            while jobs:
                jobs.pop(0)()

        def send_tasks(chunk: list[bytes]) -> None:
            pending = self.reader.submit(chunk)
            in_flight.append(pending)
            run_jobs()  # the previous task chunk, and what came after it
            del in_flight[:-1]  # read and judged: let them go
            jobs.append(partial(self._tasks, chunk, pending))

        def handle(kind: str, chunk: list[tuple[str, KeyInfo | None]]) -> None:
            if jobs:
                jobs.append(partial(handlers[kind], chunk))
            else:
                handlers[kind](chunk)

        prefix = self._task_prefix_raw
        try:
            for page in scan_raw(self.client, keys.queue_pattern(self.queue), self.opts):
                for raw in self._mine_raw(page):
                    if raw.startswith(prefix) and len(raw) > len(prefix):  # what classify calls a task
                        tasks.append(raw)
                        if len(tasks) >= self.opts.chunk:
                            send_tasks(tasks)
                            tasks = []
                        continue
                    key = text(raw)
                    info = classify(self.queue, key)
                    kind = "lock" if info and info.family is Family.UNIQUE else "other"
                    buffers[kind].append((key, info))
                    if len(buffers[kind]) >= self.opts.chunk:
                        handle(kind, buffers[kind])
                        buffers[kind] = []
            if tasks:
                send_tasks(tasks)
            for kind, buffer in buffers.items():
                if buffer:
                    handle(kind, buffer)
            run_jobs()
        finally:
            for pending in in_flight:
                pending.abandon()  # no-op for the ones already read

    def _mine_raw(self, page: list[bytes]) -> list[bytes]:
        """:meth:`_mine` on raw names, deciding without decoding when a key has one tag."""
        cut = len(self._task_prefix_raw) - 2  # the end of asynq:{<queue>}:
        if self._simple_name and all(raw.find(b"}:", cut) < 0 for raw in page):
            return page
        mine = set(self._mine([text(raw) for raw in page]))
        return [raw for raw in page if text(raw) in mine]

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
    def _tasks(self, chunk: list[bytes], pending: PendingTasks) -> None:
        """Judge a chunk of task hashes (raw key names) once their reads are in: plain ones are
        only counted, the rest go through the invariant checks (module docstring, pass B)."""
        replies = pending.result()
        flat, wrong, stride = replies.flat, replies.wrong, replies.STRIDE
        cut = len(self._task_prefix_raw)
        raw_ids = [raw[cut:] for raw in chunk]
        starts, counts, firsts = self.index.locate(raw_ids)  # marks every id seen, gone or not
        entries: dict[str, KeyEntry] = {}
        sizes: dict[str, int] = {}
        members: dict[str, list[str]] = {}  # index key -> the chunk's ids it holds
        shared = self.ownership.shared.get(self.queue, {})
        maybe_placed: set[str] = set()  # tasks in an index that may be another queue's
        stubs = []
        plain = self._plain_task
        for n, raw_id in enumerate(raw_ids):
            at = n * stride
            pexp, nbytes = flat[at + _PEXP], flat[at + _BYTES]
            kind = wrong.get(n, "hash") if wrong else "hash"
            if kind == "none" or nbytes is None or pexp == -2:
                continue  # deleted since SCAN returned it
            if counts[n] == 1 and n not in wrong and plain(raw_id, flat[at + _MSG], flat[at + _STATE],
                                                           flat[at + _SINCE], pexp, nbytes, firsts[n]):
                continue
            task_id = text(raw_id)
            key = self._task_prefix + task_id
            sizes[key] = self._size(nbytes)
            deadline = self._deadline(pexp, replies.sent_ms, replies.ttl_command)
            if isinstance(deadline, Unread):
                self._unverified(key, "task hash", f"I11 (TTL on task data) not checked: {deadline.reason}",
                                 sizes[key])
                deadline = None
            entry = self._task_entry(key, kind, flat[at:at + _PEXP], deadline)
            entries[key] = entry
            if entry.type is KeyType.HASH and not {"msg", "state"} <= set(entry.hash()):
                stubs.append(key)
            self._account(key, entry, sizes[key])
            for index_key in self.index.keys_of(self.index.slots_at(starts[n], counts[n])):
                if index_key in shared:
                    maybe_placed.add(key)  # judged without it; placed, if it is ours
                else:
                    members.setdefault(index_key, []).append(task_id)
        if not entries:
            return  # every task was plain: nothing for the checks
        for index_key, ids_in in members.items():
            kind = self._index_type(index_key)
            value = tuple((m, 0.0) for m in ids_in) if kind is KeyType.ZSET else tuple(ids_in)
            entries[index_key] = KeyEntry(index_key, kind, value)
        self._stub_fields(stubs, entries)
        self._judge_tasks(entries, sizes, maybe_placed)

    def _plain_task(self, raw_id: bytes, msg_raw: Any, state_raw: Any, pending_since: Any,
                    pexp: Any, nbytes: int, first_slot: int) -> bool:
        """Count a task that provably breaks none of I1, I4, I11, I12 and return True; return
        False, having done nothing, for any other (it then takes the full path).

        The caller has checked that the key is a hash and its id sits in exactly one index
        (``first_slot``). Plain means: no TTL; state has one index and that is the id's index (so
        I1's placement holds and I4 has nothing to count); msg decodes to this id and queue.
        """
        home = self._home.get(state_raw) if isinstance(state_raw, bytes) else None
        if home is None or home[1] != first_slot or not isinstance(msg_raw, bytes) or (
                not isinstance(pexp, int) or pexp >= 0):  # a TTL, or a refused read of it
            return False
        msg = peek_message(msg_raw)
        task_id = raw_id.decode("utf-8", "surrogateescape")
        if msg is None or msg.id != task_id or msg.queue != self.queue:
            return False
        state, report = home[0], self.report
        size = nbytes if type(nbytes) is int else self._size(nbytes)
        report.tasks_by_state[state] += 1
        report.bytes_by_state[state] += size
        if state != _PENDING or pending_since is not None:  # else _oldest_of finds no stamp
            self._oldest_of(state, task_id, msg, None if pending_since is None else text(pending_since))
        if self.dead:
            self._count_key(self._task_prefix + task_id, _TASK, size)
        else:  # _count_key, inlined for the hot path
            report.keys += 1
            report.bytes += size
            report.bytes_by_family[_TASK] += size
        return True

    def _index_type(self, key: str) -> KeyType:
        return EXPECTED_TYPE[self.index_types[key]]

    def _task_entry(self, key: str, kind: str, values: Any, expire: int | None) -> KeyEntry:
        if kind != KeyType.HASH.value:
            return KeyEntry(key, KeyType(kind) if kind in KeyType._value2member_map_ else KeyType.STRING,
                            _placeholder(kind), expire)
        fields: dict[str, FieldValue] = {}
        for name, raw in zip(TASK_FIELDS, values, strict=True):
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
            since, msg = fields.get("pending_since"), fields.get("msg")
            self._oldest_of(state, key[len(self._task_prefix):],
                            msg if isinstance(msg, TaskMessage) else None,
                            None if since is None else str(since))
        self.report.tasks_by_state[state] += 1
        self.report.bytes_by_state[state] += nbytes
        self._count_key(key, Family.TASK.value, nbytes)

    def _oldest_of(self, state: str, task_id: str, msg: TaskMessage | TaskMessagePB | None,
                   pending_since: str | None) -> None:
        """Age by the msg (retry/archived: last failure, completed: completion) or pending_since;
        ``msg`` is the decoded message (or its protobuf), None when it does not decode."""
        stamp = 0
        if state == _PENDING and (pending_since or "").isdigit():
            stamp = int(pending_since or "") // 10**9
        elif msg is not None and state in _FAILED_STATES:
            stamp = msg.last_failed_at
        elif msg is not None and state == _COMPLETED:
            stamp = msg.completed_at
        best = self.report.oldest.get(state)
        if stamp > 0 and (best is None or stamp < best[1]):
            self.report.oldest[state] = (task_id, stamp)

    def _judge_tasks(self, entries: dict[str, KeyEntry], sizes: dict[str, int],
                     maybe_placed: set[str] | None = None) -> None:
        """``maybe_placed``: tasks also held by an ambiguous index, left out of the snapshot
        (no second membership) and spared a placement finding (it may be their index)."""
        snap = KeyspaceSnapshot(self.queue, self.now_ms, entries, registered=True)
        candidates = []
        for v in check_i1(snap) + check_i4(snap):
            if maybe_placed and v.key in maybe_placed and v.kind in (Kind.ZOMBIE, Kind.MISPLACED):
                continue  # an ambiguous index may be where this task belongs
            stub = v.kind is Kind.STUB
            zombie = v.kind is Kind.ZOMBIE
            entry = entries.get(v.key)  # I4's pending duplicates name the list, not a hash
            fields = entry.hash() if entry is not None and entry.type is KeyType.HASH else {}
            kind = ("result-only hash" if stub and set(fields) == {"result"} else "stub" if stub
                    else "zombie" if zombie
                    else "misplaced" if v.invariant == Invariant.NO_ORPHAN_HASH else "duplicate")
            nbytes = sizes.get(v.key, 0)
            candidates.append(self._candidate(v, kind, self._task_recheck(v, entries),
                                              leaked=stub or zombie, nbytes=nbytes))
        self._submit(candidates)
        for v in check_i11(snap):
            self._add(v, "ttl on task data", nbytes=sizes.get(v.key, 0))
        for v in check_i12(snap):
            self._add(v, "bad key", nbytes=sizes.get(v.key, 0))

    def _candidate(self, v: Violation, kind: str, recheck: Recheck | None, leaked: bool = False,
                   nbytes: int = 0) -> Candidate:
        """A candidate finding that is added once confirmed, or noted as unverified."""
        def unverified(reason: str) -> None:
            self._unverified(v.key, kind, f"{v.invariant} candidate not confirmed: {reason}", nbytes)

        return Candidate(recheck, partial(self._add, v, kind, leaked, nbytes), unverified)

    def _task_recheck(self, v: Violation, entries: dict[str, KeyEntry]) -> Recheck | None:
        """How to re-read a placement, membership or stub candidate (None: no need)."""
        if v.kind is Kind.STUB:
            return self._stub_recheck(v.key)
        if v.task_id is None or not (v.kind in (Kind.ZOMBIE, Kind.MISPLACED)
                                     or v.invariant == Invariant.SINGLE_MEMBERSHIP):
            return None  # undecodable msgs, bad ids: a property of the hash alone, stable
        task_id = v.task_id
        task_key = keys.task(self.queue, task_id)
        entry = entries.get(task_key)
        state = entry.hash().get("state") if entry is not None and entry.type is KeyType.HASH else None
        where = [k for k, e in entries.items() if k in self.index_types and task_id in e.members()]
        placed = v.invariant == Invariant.NO_ORPHAN_HASH  # a placement (I1), not a membership (I4) candidate
        expected = self._expected_indexes(str(state), entry) if placed else []
        probe_keys = list(dict.fromkeys(where + expected))
        calls: list[tuple[Any, ...]] = [("HGET", task_key, "state")]
        calls += [self._member_call(k, task_id, whole=not placed) for k in probe_keys]

        def holds(fresh: list[Any]) -> bool:
            if fresh[0] is None or text(fresh[0]) != str(state):
                return False  # the task moved or vanished meanwhile
            held = {k for k, r in zip(probe_keys, fresh[1:], strict=True) if _holds(r)}
            if v.invariant == Invariant.SINGLE_MEMBERSHIP:
                pending = keys.pending(self.queue)
                again = [r for k, r in zip(probe_keys, fresh[1:], strict=True) if k == pending]
                return len(held - {keys.lease(self.queue)}) > 1 or any(
                    isinstance(r, list) and len(r) > 1 for r in again)
            return not held & set(expected)

        return Recheck(calls, holds)

    def _stub_recheck(self, key: str) -> Recheck:
        """A stub still exists and still lacks msg or state (it was not being written, nor
        deleted, while it was read)."""
        def holds(fresh: list[Any]) -> bool:
            exists, fields = fresh
            return bool(exists) and isinstance(fields, list) and None in fields

        return Recheck([("EXISTS", key), ("HMGET", key, "msg", "state")], holds)

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
        """ZSCORE, or LPOS … COUNT 0 bounded by ``lpos_maxlen`` unless ``whole`` (raw commands).

        By the key's family, not by what the first pass saw: an index that was missing then (an
        empty pending list) may exist by the re-read, and ZSCORE on a list would be WRONGTYPE."""
        info = classify(self.queue, key)
        family = self.index_types.get(key) or (info.family if info is not None else None)
        if family in _LISTS:
            maxlen = 0 if whole else self.opts.lpos_maxlen
            return ("LPOS", key, member, "COUNT", 0, "MAXLEN", maxlen)
        return ("ZSCORE", key, member)

    # locks
    def _locks(self, chunk: list[tuple[str, KeyInfo | None]]) -> None:
        calls: list[tuple[Any, ...]] = []
        for key, _ in chunk:
            calls += [("type", key), ("get", key), self._ttl_call(key), ("memory_usage", key, 0)]
        replies = self._pipe(calls)
        entries: dict[str, KeyEntry] = {}
        sizes: dict[str, int] = {}
        unread: dict[str, str] = {}  # locks whose deadline could not be read -> why
        for n, (key, _) in enumerate(chunk):
            kind, value, pexp, nbytes = replies[4 * n: 4 * n + 4]
            if text(kind) == "none":
                continue
            sizes[key] = self._size(nbytes)
            self._count_key(key, Family.UNIQUE.value, sizes[key])
            deadline = self._deadline(pexp, self._sent_ms)
            if isinstance(deadline, Unread):
                unread[key], deadline = deadline.reason, None
            entries[key] = (KeyEntry(key, KeyType.STRING, text(value), deadline)
                            if isinstance(value, bytes) else
                            KeyEntry(key, KeyType(text(kind)), _placeholder(text(kind)), deadline))
        owners = self._owner_hashes(entries)
        snap = KeyspaceSnapshot(self.queue, self.now_ms, {**entries, **owners}, registered=True)
        for key, reason in unread.items():  # no TTL, or an orphan, or healthy: nothing is known
            self._unverified(key, "unique lock", f"I6 not checked: no deadline ({reason})", sizes[key])
        candidates = []
        for v in check_i6(snap, strict_locks=True):
            if v.key not in unread:
                kind = "lock without ttl" if v.kind is Kind.LOCK_WITHOUT_TTL else "orphan lock"
                candidates.append(self._candidate(v, kind, self._lock_recheck(v), leaked=True,
                                                  nbytes=sizes.get(v.key, 0)))
        self._submit(candidates)
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

    def _lock_recheck(self, v: Violation) -> Recheck | None:
        if v.task_id is None or v.kind is Kind.LOCK_WITHOUT_TTL:
            return None
        owner = v.task_id

        def holds(fresh: list[Any]) -> bool:
            got, fields = fresh
            if got is None or text(got) != owner or not isinstance(fields, list):
                return False
            state, unique_key = fields
            if state is None and unique_key is None:
                return True  # the owner is gone
            return text(state or b"") == TaskState.COMPLETED.value or text(unique_key or b"") != v.key

        return Recheck([("GET", v.key), ("HMGET", keys.task(self.queue, owner), "state", "unique_key")],
                       holds)

    # other keys
    def _others(self, chunk: list[tuple[str, KeyInfo | None]]) -> None:
        calls: list[tuple[Any, ...]] = []
        for key, _ in chunk:
            calls += [("type", key), self._ttl_call(key), ("memory_usage", key, 0)]
        replies = self._pipe(calls)
        sent_ms = self._sent_ms
        kinds = [text(replies[3 * n]) for n in range(len(chunk))]
        strings = [key for (key, _), kind in zip(chunk, kinds, strict=True) if kind == "string"]
        values = dict(zip(strings, self._pipe([("get", k) for k in strings]), strict=True))
        entries: dict[str, KeyEntry] = {}
        sizes: dict[str, int] = {}
        unread: dict[str, str] = {}
        for n, ((key, info), kind) in enumerate(zip(chunk, kinds, strict=True)):
            if kind == "none" or kind not in KeyType._value2member_map_:
                continue
            sizes[key] = self._size(replies[3 * n + 2])
            family = info.family.value if info else "unknown"
            self._count_key(key, family, sizes[key])
            raw = values.get(key)
            value: Any = text(raw) if isinstance(raw, bytes) else _placeholder(kind)
            deadline = self._deadline(replies[3 * n + 1], sent_ms)
            if isinstance(deadline, Unread):
                unread[key], deadline = deadline.reason, None
                self._unverified(key, family, f"I11/I13 (TTL) not checked: no deadline ({unread[key]})",
                                 sizes[key])
            entries[key] = KeyEntry(key, KeyType(kind), value, deadline)
        snap = KeyspaceSnapshot(self.queue, self.now_ms, entries, registered=True)
        for v in check_i11(snap):
            if v.key not in unread:
                self._add(v, "ttl on task data", nbytes=sizes.get(v.key, 0))
        for v in check_i12(snap):
            self._add(v, "bad key", nbytes=sizes.get(v.key, 0))
        for v in check_i13(snap, self.opts.policy):
            if v.key in unread and v.kind in _TTL_KINDS:
                continue
            no_ttl = v.kind is Kind.DAILY_COUNTER_WITHOUT_TTL
            self._add(v, "counter without ttl" if no_ttl else "bad counter", leaked=no_ttl,
                      nbytes=sizes.get(v.key, 0))

    # --- pass C: references --------------------------------------------------------------------
    def _dangling(self) -> None:
        for key, family in self.index_types.items():
            slot = self.index.slot(key)
            for ids in self._member_pages(key, family):
                candidates = [text(i) for i in dict.fromkeys(self.index.unseen(slot, ids))]
                exists = self._pipe([("exists", keys.task(self.queue, i)) for i in candidates])
                gone = [i for i, found in zip(candidates, exists, strict=True) if not found]
                self._submit([self._candidate(self._dangling_violation(key, i), "dangling id",
                                              self._dangling_recheck(key, i)) for i in gone])

    def _dangling_violation(self, key: str, task_id: str) -> Violation:
        task = self.short(keys.task(self.queue, task_id))
        return Violation("I2", key, task_id, f"dangling: {self.short(key)} holds {task_id!r} "
                                             f"but {task} does not exist")

    def _dangling_recheck(self, key: str, task_id: str) -> Recheck:
        member = self._member_call(key, task_id, whole=True)  # the id may sit anywhere

        def holds(fresh: list[Any]) -> bool:
            found, held = fresh
            return not found and _holds(held)

        return Recheck([("EXISTS", keys.task(self.queue, task_id)), member], holds)

    def _active_lease(self) -> None:
        active, lease = keys.active(self.queue), keys.lease(self.queue)
        if active not in self.index_types and lease not in self.index_types:
            return
        a, z = self._pipe([("lrange", active, 0, -1), ("zrange", lease, 0, -1, False, True)])
        entries = {}
        if isinstance(a, list) and a:
            entries[active] = KeyEntry(active, KeyType.LIST, tuple(text(m) for m in a))
        if isinstance(z, list) and z:
            entries[lease] = KeyEntry(lease, KeyType.ZSET, tuple((text(m), float(s)) for m, s in z))
        snap = KeyspaceSnapshot(self.queue, self.now_ms, entries, registered=True)
        candidates = []
        for v in check_i3(snap):  # read apart, not atomically: every candidate is read again
            kind = "active without lease" if v.kind is Kind.ACTIVE_WITHOUT_LEASE else (
                "lease without active" if v.kind is Kind.LEASE_WITHOUT_ACTIVE else "duplicate")
            candidates.append(self._candidate(v, kind, self._active_lease_recheck(v)))
        self._submit(candidates)

    def _active_lease_recheck(self, v: Violation) -> Recheck:
        """The id's places in active (all of them) and its lease entry, read again."""
        task_id = str(v.task_id)
        calls: list[tuple[Any, ...]] = [("LPOS", keys.active(self.queue), task_id, "COUNT", 0),
                                        ("ZSCORE", keys.lease(self.queue), task_id)]

        def holds(fresh: list[Any]) -> bool:
            places, score = fresh
            in_active = len(places) if isinstance(places, list) else 0
            if v.kind is Kind.DUPLICATE_IN_ACTIVE:
                return in_active > 1
            if v.kind is Kind.ACTIVE_WITHOUT_LEASE:
                return in_active > 0 and score is None
            return in_active == 0 and score is not None

        return Recheck(calls, holds)

    def _groups(self) -> None:
        groups_key, sets_key = keys.groups(self.queue), keys.aggregation_sets(self.queue)
        listed_raw, index_raw = self._pipe([("smembers", groups_key), ("zrange", sets_key, 0, -1)])
        listed = {text(m) for m in listed_raw} if isinstance(listed_raw, set) else set()
        indexed = {text(m) for m in index_raw} if isinstance(index_raw, list) else set()
        present = {k: classify(self.queue, k) for k, f in self.index_types.items() if f is Family.GROUP}
        names = {info.name: k for k, info in present.items() if info}
        sets = {k for k, f in self.index_types.items() if f is Family.GROUP_SET}
        candidates = [self._group_candidate(name, stale=True) for name in sorted(listed - set(names))]
        candidates += [self._group_candidate(name, stale=False) for name in sorted(set(names) - listed)]
        candidates += [self._set_candidate(key, unindexed=True) for key in sorted(sets - indexed)]
        candidates += [self._set_candidate(key, unindexed=False) for key in sorted(indexed - sets)]
        self._submit(candidates)

    def _group_candidate(self, name: str, stale: bool) -> Candidate:
        group_key, groups_key = keys.group(self.queue, name), keys.groups(self.queue)
        if stale:
            v = Violation("I7", groups_key, None, f"stale group: groups lists {name!r} but "
                                                  f"{self.short(group_key)} is empty")
        else:
            size = int(self.client.zcard(group_key))
            v = Violation("I7", group_key, None, f"orphan group: g:{name} holds {size} task(s) "
                                                 f"but {name!r} is not in groups")

        def holds(fresh: list[Any]) -> bool:
            member, size = fresh
            return bool(member and not size) if stale else bool(size and not member)

        return self._candidate(v, "stale group" if stale else "orphan group",
                               Recheck([("SISMEMBER", groups_key, name), ("ZCARD", group_key)], holds))

    def _set_candidate(self, key: str, unindexed: bool) -> Candidate:
        sets_key = keys.aggregation_sets(self.queue)
        if unindexed:
            v = Violation("I8", key, None, f"aggregation set {self.short(key)} is not in aggregation_sets")
        else:
            info = classify(self.queue, key)
            why = ("but that set does not exist" if info is not None and info.family is Family.GROUP_SET
                   else f"which is not an aggregation-set key of queue {self.queue!r}")
            v = Violation("I8", sets_key, None, f"aggregation_sets lists {self.short(key)} {why}")

        def holds(fresh: list[Any]) -> bool:
            score, exists = fresh
            return bool(exists and score is None) if unindexed else bool(score is not None and not exists)

        return self._candidate(v, "unindexed aggregation set" if unindexed else "dangling aggregation set",
                               Recheck([("ZSCORE", sets_key, key), ("EXISTS", key)], holds))

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
