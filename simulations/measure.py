"""What a sample measures: keys by family and task state, bytes (estimated, and on real Redis
measured), and leak counters.

Bytes are grouped for the memory plot: task hashes by their ``state`` field (``task:<state>``;
``task:stub`` for a hash without msg or state), and the other families in coarse groups —
``indexes`` (pending, active, lease, scheduled, retry, archived, completed), ``groups`` (group
zsets, aggregation sets, ``groups``, ``aggregation_sets``), ``locks`` (unique locks),
``counters`` (processed/failed totals and dailies), ``other`` (``paused``), ``outside`` (keys
no key function of the queue makes) and ``global`` (``asynq:queues``).

Leak counters come from :func:`model.invariants.check_all` on each queue's snapshot: orphan
hashes (distinct task hashes with an I1 violation), dangling ids (I2 violations) and keys outside
the allowed set (I12); leaked bytes are the bytes of the orphan hashes and outside keys.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis

from broker.core import Broker
from broker.scripting import read_deadlines
from model import keys
from model.invariants import Family, Invariant, check_all, classify
from model.snapshot import KeyEntry, KeyspaceSnapshot
from model.states import LIVE_STATES
from simulations.estimator import Calibration, Estimator, model_for_family, server_family

TASK_STATES = (*(s.value for s in LIVE_STATES), "stub")
FAMILIES = tuple(f.value for f in Family)
BYTE_GROUPS = (*(f"task:{s}" for s in TASK_STATES),
               "indexes", "groups", "locks", "counters", "other", "outside", "global")
_GROUP_OF = {
    Family.PENDING: "indexes", Family.ACTIVE: "indexes", Family.LEASE: "indexes",
    Family.SCHEDULED: "indexes", Family.RETRY: "indexes", Family.ARCHIVED: "indexes",
    Family.COMPLETED: "indexes", Family.GROUP: "groups", Family.GROUP_SET: "groups",
    Family.GROUPS: "groups", Family.AGGREGATION_SETS: "groups", Family.PAUSED: "other",
    Family.UNIQUE: "locks", Family.PROCESSED_TOTAL: "counters", Family.FAILED_TOTAL: "counters",
    Family.PROCESSED_DAILY: "counters", Family.FAILED_DAILY: "counters",
}


def slug(name: str) -> str:
    """A CSV-friendly column suffix: ``'unique lock'`` → ``'unique_lock'``, ``task:x`` → ``task_x``."""
    return name.replace(" ", "_").replace(":", "_")


def columns(real: bool) -> list[str]:
    """The measurement columns of a sample row, in order."""
    cols = ["keys_total", *(f"keys_{slug(f)}" for f in FAMILIES), "keys_outside",
            *(f"tasks_{s}" for s in TASK_STATES),
            "bytes_est_total", *(f"bytes_est_{slug(g)}" for g in BYTE_GROUPS), "bytes_est_overhead",
            "leak_orphans", "leak_dangling", "leak_outside", "leak_bytes"]
    if real:
        cols += ["bytes_mem_total", *(f"bytes_mem_{slug(g)}" for g in BYTE_GROUPS),
                 "used_memory_delta"]
    return cols


@dataclass
class Sample:
    """One measurement: a flat row of numbers keyed by :func:`columns`."""

    row: dict[str, float] = field(default_factory=dict)


class Sampler:
    """Measures a broker's keyspace: on real Redis also ``MEMORY USAGE`` and ``INFO memory``."""

    def __init__(self, broker: Broker, queues: list[str], real: bool,
                 estimator: Estimator | None = None, leak_check_limit: int = 200_000,
                 memory_model: Calibration | None = None) -> None:
        self.broker = broker
        self.queues = queues
        self.real = real
        self.leak_check_limit = leak_check_limit
        self.baseline = self.used_memory() if real else 0
        #: The real server's family (see ``simulations.estimator.server_family``); None on
        #: fakeredis. The estimate is calibrated for it only when it is the model's.
        self.server_family = family_of(broker.server_client) if real else None
        if estimator is None:
            # An explicit model wins; on a real server, the shipped model of its family.
            model = memory_model or (model_for_family(self.server_family) if self.server_family else None)
            estimator = Estimator(model)
        self.estimator = estimator

    @property
    def estimate_calibrated(self) -> bool:
        """Whether the estimator's constants were measured on this server's family (always
        on fakeredis, whose estimate stands in for the calibration's server)."""
        return self.server_family in (None, self.estimator.cal.family)

    def used_memory(self) -> int:
        """``INFO memory`` used_memory (real Redis only)."""
        return int(self.broker.client.info("memory")["used_memory"])

    def sweep_expired(self) -> int:
        """Delete TTL keys whose virtual deadline passed (Redis's active expiry, in virtual
        time): locks and daily counters are strings, so only strings are examined."""
        client = self.broker.client
        due = 0
        for queue in self.queues:
            pattern = keys.queue_prefix(queue).replace("{", "\\{").replace("}", "\\}") + "*"
            names = list(client.scan_iter(match=pattern, count=1000, _type="STRING"))
            if not names:
                continue
            deadlines = read_deadlines(client, names)
            expired = [n for n, deadline in zip(names, deadlines, strict=True)
                       if deadline is not None and deadline <= self.broker.now_ms]
            if expired:
                client.delete(*expired)
                due += len(expired)
        return due

    def measure(self) -> Sample:
        """Sweep expired keys, snapshot every queue and measure it."""
        self.sweep_expired()
        row: Counter[str] = Counter()
        present: set[str] = set()
        for queue in self.queues:
            snap = self.broker.snapshot(queue)
            present.update(snap.entries)
            self._measure_queue(snap, row)
        self.estimator.retain(present)
        self._measure_global(row)
        if self.real:  # even when asynq:queues is gone (e.g. evicted)
            row["used_memory_delta"] = self.used_memory() - self.baseline
        sample = Sample({c: float(row.get(c, 0)) for c in columns(self.real)})
        return sample

    def _measure_queue(self, snap: KeyspaceSnapshot, row: Counter[str]) -> None:
        entries = list(snap.entries.values())
        groups = [self._group(snap.queue, e, row) for e in entries]
        est = [self.estimator.key_bytes(e) for e in entries]
        for group, size in zip(groups, est, strict=True):
            row[f"bytes_est_{slug(group)}"] += size
            row["bytes_est_total"] += size
        row["keys_total"] += len(entries)
        row["bytes_est_overhead"] += self._keyspace_overhead(entries)
        sizes = dict(zip((e.key for e in entries), est, strict=True))
        if self.real:
            measured = self._memory_usage([e.key for e in entries])
            for group, size in zip(groups, measured, strict=True):
                row[f"bytes_mem_{slug(group)}"] += size
                row["bytes_mem_total"] += size
            sizes = dict(zip((e.key for e in entries), measured, strict=True))
        if len(entries) <= self.leak_check_limit:
            self._leaks(snap, sizes, row)

    def _group(self, queue: str, entry: KeyEntry, row: Counter[str]) -> str:
        info = classify(queue, entry.key)
        if info is None:
            row["keys_outside"] += 1
            return "outside"
        row[f"keys_{slug(info.family.value)}"] += 1
        if info.family is Family.TASK:
            fields = entry.value if isinstance(entry.value, dict) else {}
            state = fields.get("state")
            name = state if isinstance(state, str) and state in TASK_STATES and "msg" in fields \
                else "stub"
            row[f"tasks_{name}"] += 1
            return f"task:{name}"
        return _GROUP_OF.get(info.family, "other")

    def _keyspace_overhead(self, entries: list[KeyEntry]) -> int:
        return keyspace_overhead(entries)

    def _measure_global(self, row: Counter[str]) -> None:
        client = self.broker.client
        members = client.smembers(keys.ALL_QUEUES)
        if not members:
            return
        from model.snapshot import KeyType

        entry = KeyEntry(keys.ALL_QUEUES, KeyType.SET, frozenset(
            m.decode() if isinstance(m, bytes) else str(m) for m in members))
        size = self.estimator.key_bytes(entry)
        row["bytes_est_global"] += size
        row["bytes_est_total"] += size
        row["keys_total"] += 1
        if self.real:
            (measured,) = self._memory_usage([keys.ALL_QUEUES])
            row["bytes_mem_global"] += measured
            row["bytes_mem_total"] += measured

    def _memory_usage(self, names: list[str]) -> list[int]:
        pipe = self.broker.client.pipeline(transaction=False)
        for name in names:
            pipe.memory_usage(name, samples=0)
        return [int(v or 0) for v in pipe.execute()]

    def _leaks(self, snap: KeyspaceSnapshot, sizes: dict[str, int], row: Counter[str]) -> None:
        orphans: set[str] = set()
        outside: set[str] = set()
        for violation in check_all(snap, self.broker.policy):
            if violation.invariant == Invariant.NO_ORPHAN_HASH and violation.key in snap.entries:
                orphans.add(violation.key)
            elif violation.invariant == Invariant.NO_DANGLING_ENTRY:
                row["leak_dangling"] += 1
            elif violation.invariant == Invariant.QUEUE_REGISTERED and violation.key in snap.entries:
                outside.add(violation.key)
        row["leak_orphans"] += len(orphans)
        row["leak_outside"] += len(outside)
        row["leak_bytes"] += sum(sizes.get(k, 0) for k in orphans | outside)


def keyspace_overhead(entries: list[KeyEntry]) -> int:
    """Bytes outside MEMORY USAGE: the keyspace's bucket pointers (8 per key, at a load
    factor of ~1) and an expires-dict entry + bucket for each key with a TTL."""
    ttl = sum(1 for e in entries if e.expire_at_ms is not None)
    return 8 * len(entries) + (24 + 8) * ttl


def family_of(client: redis.Redis) -> str:
    """The server family of a real Redis (see ``simulations.estimator.server_family``)."""
    return server_family({**client.info("server"), **client.info("memory")})


def memory_model_for(client: redis.Redis, model: Calibration | None = None) -> Calibration:
    """The memory model a simulation on the real server ``client`` estimates with: ``model``
    when given, else the shipped model of the server's family, else the default model."""
    if model is not None:
        return model
    found = model_for_family(family_of(client))
    return found if found is not None else Calibration.load()


def estimate_note(client: redis.Redis, calibration_family: str) -> str | None:
    """Why the memory estimate is not bounded on the real server ``client`` (its family is not
    ``calibration_family``), or None when it is calibrated for it."""
    family = family_of(client)
    if family == calibration_family:
        return None
    return (f"the estimate (bytes_est_*) is calibrated for {calibration_family}, not for this "
            f"{family} (calibrate it: python -m simulations.calibrate --server URL); measured "
            f"bytes (MEMORY USAGE) are exact")


def info_stats(client: redis.Redis) -> dict[str, Any]:
    """``INFO stats`` of a real Redis (evicted keys, rejected calls)."""
    return dict(client.info("stats"))
