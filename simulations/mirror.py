"""Measure a simulation's keyspaces on a server the broker does not run on, by copying them.

The broker's scripts need Redis ≥ 7.0 (PEXPIRETIME), so a preset cannot run on Redis 6.2
itself. To check the memory estimate there all the same, :func:`mirror_errors` runs the preset
on fakeredis and, at every sample, writes the sampled keyspace to the other server with plain
commands (``HSET`` of all fields, ``ZADD``/``SADD`` of all members, ``LPUSH`` in push order,
``SET``), touches every collection until its table finished rehashing, and compares the sum of
``MEMORY USAGE … SAMPLES 0`` with the estimate of the same keys under that server's memory
model. A copy has no history: a zset is re-created at its current size (a skiplist that
shrank back below 128 members becomes a ziplist again, and the estimator, given no history,
says the same), and a list's nodes are filled as pushed, not as popped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import fakeredis
import redis

from model import keys
from model.snapshot import KeyEntry, KeyType
from simulations.engine import Engine, ListSink
from simulations.estimator import Calibration, Estimator, raw_bytes
from simulations.spec import WorkloadSpec


def write_entries(client: redis.Redis, entries: Iterable[KeyEntry]) -> None:
    """Write ``entries`` to ``client`` (which must not hold them yet) with plain commands."""
    pipe = client.pipeline(transaction=False)
    for entry in entries:
        value = entry.value
        if isinstance(value, Mapping):
            pipe.hset(entry.key, mapping={raw_bytes(f): raw_bytes(v) for f, v in value.items()})
        elif isinstance(value, str):
            pipe.set(entry.key, raw_bytes(value))
        elif isinstance(value, frozenset):
            pipe.sadd(entry.key, *(raw_bytes(m) for m in value))
        elif entry.type is KeyType.ZSET:
            pipe.zadd(entry.key, {raw_bytes(pair[0]): float(pair[1]) for pair in value})
        else:  # a list: pushed at the head, last item first, as LPUSH built it
            pipe.lpush(entry.key, *(raw_bytes(str(v)) for v in reversed(value)))
    pipe.execute()


#: A read that steps a collection's incremental rehash by one bucket, per type.
_TOUCH = {KeyType.HASH: "hexists", KeyType.SET: "sismember", KeyType.ZSET: "zscore"}


def settle(client: redis.Redis, entries: Iterable[KeyEntry]) -> None:
    """Touch each collection once per element (at least as many times as its old table has
    buckets), so no table is caught half rehashed, as in a long-lived keyspace."""
    pipe = client.pipeline(transaction=False)
    for entry in entries:
        command = _TOUCH.get(entry.type)
        if command is None or len(entry.value) <= 4:
            continue
        for _ in range(len(entry.value) + 8):
            getattr(pipe, command)(entry.key, "\x00")
    pipe.execute()


def measure_copy(client: redis.Redis, entries: list[KeyEntry], model: Calibration) -> tuple[int, int]:
    """(Σ MEMORY USAGE, Σ estimate) of ``entries`` copied to ``client``'s (flushed) database."""
    client.flushdb()
    write_entries(client, entries)
    settle(client, entries)
    pipe = client.pipeline(transaction=False)
    for entry in entries:
        pipe.memory_usage(entry.key, samples=0)
    measured = sum(int(v or 0) for v in pipe.execute())
    estimator = Estimator(model)  # no history: the copy has none either
    estimated = sum(estimator.key_bytes(e) for e in entries)
    client.flushdb()
    return measured, estimated


def mirror_errors(spec: WorkloadSpec, client: redis.Redis,
                  model: Calibration) -> list[tuple[int, int]]:
    """Run ``spec`` on fakeredis and measure every sample's keyspace on ``client``: one
    (Σ MEMORY USAGE, Σ estimate) per non-empty sample."""
    engine = Engine(spec, fakeredis.FakeRedis(server=fakeredis.FakeServer()), sink=ListSink())
    results: list[tuple[int, int]] = []

    def copy(_: dict[str, float]) -> None:
        entries: dict[str, KeyEntry] = {}
        for queue in spec.queues:
            entries.update(engine.broker.snapshot(queue.name).entries)
        members = engine.client.smembers(keys.ALL_QUEUES)
        if members:
            entries[keys.ALL_QUEUES] = KeyEntry(keys.ALL_QUEUES, KeyType.SET, frozenset(
                m.decode() if isinstance(m, bytes) else str(m) for m in members))
        if entries:
            results.append(measure_copy(client, list(entries.values()), model))

    engine.progress = copy
    engine.run()
    return results
