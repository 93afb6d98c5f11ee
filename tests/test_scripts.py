"""The Lua scripts' contracts: headers declare every KEYS/ARGV they use, and every call's keys
live in one Redis Cluster slot.

The slot function is written here from the Redis Cluster specification (CRC16/XMODEM of the
key, or of its hash tag, modulo 16384) and pinned by known answers that a cluster-enabled
redis-server 7.0 gave for ``CLUSTER KEYSLOT``; it does not reuse any code under test.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

import fakeredis
import pytest
import redis
from support import inspector_workload, server_workload

from benchmarks import lifecycles as bench
from broker import Broker
from broker.scripting import (
    PRELUDE,
    ScriptRunner,
    full_source,
    header,
    script_names,
    script_text,
)
from broker.servers import RedisServer
from model.keys import queue_pattern
from model.message import TaskMessage

SLOTS = 16384
USE = re.compile(r"\b(KEYS|ARGV)\[(\d+)\]")


# --- Redis Cluster key slots --------------------------------------------------------------------
def crc16_xmodem(data: bytes) -> int:
    """CRC16/XMODEM (polynomial 0x1021, initial value 0), the checksum Redis Cluster uses."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key: str | bytes) -> int:
    """The cluster slot of ``key``: only the hash tag is hashed when there is a non-empty one
    (the bytes between the first ``{`` and the first ``}`` after it)."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1:end]
    return crc16_xmodem(data) % SLOTS


def test_crc16_known_answer() -> None:
    assert crc16_xmodem(b"123456789") == 0x31C3  # the Redis Cluster spec's check value
    assert crc16_xmodem(b"") == 0


@pytest.mark.parametrize(("key", "slot"), [
    ("somekey", 11058), ("foo", 12182), ("123456789", 12739), ("foo{hash_tag}", 2515),
    ("asynq:{default}:pending", 5718),
    ("foo{}{bar}", 8363),  # empty tag: the whole key is hashed
    ("foo{{bar}}zap", 4015), ("{bar", 4015),  # the tag is "{bar"; a lone "{" hashes the key
])
def test_key_slot_matches_redis_cluster_keyslot(key: str, slot: int) -> None:
    assert key_slot(key) == slot


def test_hash_tag_groups_keys() -> None:
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")
    assert key_slot("foo{bar}{zap}") == key_slot("bar")


# --- headers ----------------------------------------------------------------------------------------
def _header_and_body(name: str) -> tuple[list[str], list[str]]:
    lines = script_text(name).splitlines()
    cut = next((i for i, line in enumerate(lines) if not line.startswith("--")), len(lines))
    return lines[:cut], lines[cut:]


def _used(lines: Sequence[str]) -> set[str]:
    """``KEYS[n]`` / ``ARGV[n]`` referenced by code (comments stripped)."""
    code = (line.split("--", 1)[0] for line in lines)
    return {f"{m.group(1)}[{m.group(2)}]" for line in code for m in USE.finditer(line)}


def _declared(name: str) -> set[str]:
    return {entry.split()[0] for kind in ("KEYS", "ARGV") for entry in header(name)[kind]}


SCRIPTS = script_names()


def test_there_are_scripts() -> None:
    assert {"delete_task", "archive_task", "run_task", "delete_all", "archive_all", "run_all",
            "remove_queue", "enqueue"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_header_names_the_script_and_declares_keys_and_argv(name: str) -> None:
    head, body = _header_and_body(name)
    assert head and head[0].startswith(f"-- {name}: "), f"{name}: first line must be '-- {name}: ...'"
    text = "\n".join(head)
    for kind in ("KEYS", "ARGV"):
        assert re.search(rf"^--\s*{kind}(\[\d+\]|: none)", text, re.M), \
            f"{name}: header declares no {kind} (write '-- {kind}: none' when there are none)"
    assert body, f"{name}: no code after the header"


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_keys_and_argv_used_is_declared(name: str) -> None:
    _, body = _header_and_body(name)
    undeclared = _used(body) - _declared(name)
    assert not undeclared, f"{name}: used but not declared in the header: {sorted(undeclared)}"


@pytest.mark.parametrize("name", SCRIPTS)
def test_declarations_are_numbered_from_one_without_gaps(name: str) -> None:
    for kind, entries in header(name).items():
        numbers = [int(re.match(rf"{kind}\[(\d+)\]", e).group(1)) for e in entries]  # type: ignore[union-attr]
        assert numbers == list(range(1, len(numbers) + 1)), f"{name}: {kind} declared as {numbers}"


def test_prelude_uses_no_keys_or_argv() -> None:
    """The prelude is shared by every script, so it may not rely on any script's KEYS/ARGV."""
    assert not _used(script_text(PRELUDE).splitlines())


def test_used_detects_code_but_not_comments() -> None:
    assert _used(["local a = KEYS[1] -- ARGV[9]", "return ARGV[12]"]) == {"KEYS[1]", "ARGV[12]"}


# --- one slot per call -----------------------------------------------------------------------------
NOW = 1_767_225_600


class Spy:
    """Records (script, keys, args) of every script the brokers queue (every call goes on a
    pipeline)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], list[Any]]] = []


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Spy]:
    recorder = Spy()
    queue_original = ScriptRunner.queue_on

    def recording_queued(self: ScriptRunner, pipe: Any, name: str, keys: Sequence[str],
                         args: Sequence[Any] = ()) -> None:
        recorder.calls.append((name, list(keys), list(args)))
        queue_original(self, pipe, name, keys, args)

    monkeypatch.setattr(ScriptRunner, "queue_on", recording_queued)
    yield recorder


QUEUES = ("default", "critical", "a b*[c]?:d")


def test_every_call_keeps_its_keys_in_one_slot(spy: Spy) -> None:
    called: set[str] = set()
    for variant in ("reference", "asynq-v0.26.0"):
        client = fakeredis.FakeRedis()
        for q in QUEUES:
            spy.calls.clear()
            b = Broker(client, variant)
            server_workload(b, q)
            inspector_workload(b, q)
            b.expire_due(q)
            b.snapshot(q)
            slot = key_slot("{" + q + "}")
            for name, keys, args in spy.calls:
                assert keys, f"{name} was called without KEYS: a cluster could not route it"
                slots = {key_slot(k) for k in keys}
                assert slots == {slot}, f"{variant} {name} on {q!r}: keys {keys} span slots {slots}"
                # Keys a script computes from ARGV (prefixes .. id) must share the slot too: a
                # server only refuses them when they live on another node.
                named = [a for a in args if isinstance(a, str) and a.startswith("asynq:")
                         and a != queue_pattern(q)]
                assert {key_slot(a) for a in named} <= {slot}, f"{name} on {q!r}: ARGV {named}"
            called |= {name for name, _, _ in spy.calls}
    missing = set(SCRIPTS) - called
    assert not missing, f"the workload never ran: {sorted(missing)}"


# --- the lifecycle benchmark runs (figures only, no timing assertions) -------------------------------
def test_bench_runs_on_fakeredis(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--seconds", "0.2", "--backend", "fakeredis"]) == 0
    out = capsys.readouterr().out
    match = re.search(r"^fakeredis\s+([\d.]+) lifecycles/s", out, re.M)
    assert match and float(match.group(1)) > 0, out


def test_bench_runs_on_real_redis(real_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    result = bench.bench_redis(real_server, 0.2, "asynq-v0.26.0")
    out = capsys.readouterr().out
    assert result.lifecycles > 0 and re.search(r"^redis\s+[\d.]+ lifecycles/s", out, re.M), out
    assert "redis-benchmark" in out  # either a rate and a ratio, or the reason it was skipped
    client = redis.Redis.from_url(real_server.url)
    try:  # the benchmark queue is gone again
        assert not [k for k in client.scan_iter(match="asynq:{bench-*") if k]
    finally:
        client.close()


def test_scripts_are_loaded_once_then_sent_by_sha_and_survive_a_script_flush(
        redis_client: redis.Redis) -> None:
    b = Broker(redis_client)
    lease = "asynq:{default}:lease"
    redis_client.zadd(lease, {"t1": 10})
    assert b.extend_lease("default", "t1") == 1
    sha = hashlib.sha1(full_source("extend_lease", b.variant).encode()).hexdigest()
    assert redis_client.script_exists(sha) == [True]  # loaded, then EVALSHA
    redis_client.script_flush()
    b.clock.advance(5)
    assert b.extend_lease("default", "t1", "t2") == 1  # NOSCRIPT: reloaded, run again once
    assert redis_client.zscore(lease, "t1") == b.now_s + b.policy.lease_duration


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_carry_only_the_prelude_definitions_they_use(name: str) -> None:
    from broker.scripting import full_source, prelude_definitions
    from broker.variants import variant

    source = full_source(name, variant("reference"))
    body = script_text(name)
    for definition, text in prelude_definitions().items():
        sent = text in source
        if re.search(rf"\b{definition}\b", body):
            assert sent, f"{name} uses {definition} but it is not sent"
        if sent:  # used by the script or by a definition that is sent
            assert re.search(rf"\b{definition}\b", source.replace(text, "")), definition


def test_snapshot_pipeline_survives_a_script_flush(redis_client: redis.Redis) -> None:
    b = Broker(redis_client)
    b.enqueue(TaskMessage(type="email", payload=b"", id="t1", queue="default"))
    before = b.snapshot("default")
    redis_client.script_flush()
    assert b.snapshot("default") == before
    assert before.registered and "asynq:{default}:t:t1" in {e.key for e in before}
