"""broker.wire: the lean pipeline every script call goes out on — the same replies as a
redis-py pipeline on every kind of client, and a read that polls before it blocks."""

from __future__ import annotations

import os
from typing import Any

import fakeredis
import pytest
import redis

from broker import Broker, calls
from broker.servers import RedisServer
from broker.wire import SPIN_US, Wire, default_spin_us, hand_over_to, pack_command, wire_capable
from harness.fakeserver import hand_over
from harness.observe import Observer
from model import keys

MIXED_REPLY = ("return {1, 'two', false, {3, {'four'}}, redis.status_reply('FIVE'), "
               "redis.error_reply('SIX nested')}")


def _queue(pipe: Any, sha: str, failing: str) -> None:
    """The same commands on a redis-py pipeline or a Wire (both offer these three)."""
    pipe.sadd("s", "a")
    pipe.evalsha(sha, 0)
    pipe.sadd("s", "a", 2, 3.5)
    pipe.evalsha(failing, 1, "k")
    pipe.evalsha("0" * 40, 0)  # NOSCRIPT
    pipe.sadd("s", b"\xff")
    pipe.sismember("s", "a")
    pipe.sismember("s", "zz")


def _normal(value: Any) -> Any:
    if isinstance(value, Exception):
        return (type(value), str(value))
    if isinstance(value, bool):
        return int(value)  # redis-py's SISMEMBER callback; the Wire keeps the 0/1
    return [_normal(v) for v in value] if isinstance(value, list) else value


def _clients(kind: str, request: pytest.FixtureRequest) -> redis.Redis:
    if kind == "fakeredis":
        return fakeredis.FakeRedis()
    if kind == "fakeredis-handover":
        client = fakeredis.FakeRedis()
        assert hand_over(client)
        return client
    server: RedisServer = request.getfixturevalue("real_server")
    return redis.Redis.from_url(server.url, decode_responses=kind == "redis-decoded")


@pytest.mark.parametrize("kind", ["fakeredis", "fakeredis-handover", "redis", "redis-decoded"])
@pytest.mark.parametrize("spin_us", [0, SPIN_US])
def test_wire_replies_equal_a_redis_py_pipeline(kind: str, spin_us: int,
                                                request: pytest.FixtureRequest) -> None:
    client = _clients(kind, request)
    client.flushdb()
    sha = client.script_load(MIXED_REPLY)
    failing = client.script_load("return redis.call('INCR', KEYS[1], 'x')")
    pipe = client.pipeline(transaction=False)
    _queue(pipe, sha, failing)
    expected = pipe.execute(raise_on_error=False)
    client.flushdb()
    wire = Wire(client, send_every=64, spin_us=spin_us)  # streams mid-way
    _queue(wire, sha, failing)
    assert len(wire) == 8
    got = wire.execute()
    assert len(wire) == 0 and wire.execute() == []
    assert _normal(got) == _normal(expected)
    assert isinstance(got[4], redis.exceptions.NoScriptError)
    assert isinstance(got[3], redis.ResponseError) and got[0] == 1 and got[2] == 2
    client.flushdb()


def test_a_socket_client_is_read_by_polling_first(real_client: redis.Redis,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    polls: list[int] = []
    readv = os.readv

    def counting_readv(fd: int, buffers: Any) -> int:
        polls.append(fd)
        return readv(fd, buffers)

    monkeypatch.setattr(os, "readv", counting_readv)
    wire = Wire(real_client, spin_us=SPIN_US)
    for i in range(20):
        wire.sadd("s", i)
        assert wire.execute() == [1]
    assert polls, "the reply was never polled for"
    polls.clear()
    Wire(real_client, spin_us=0).execute()
    quiet = Wire(real_client, spin_us=0)
    quiet.sadd("s", "x")
    assert quiet.execute() == [1] and not polls  # spin_us=0: straight to the blocking read


def test_a_reply_slower_than_the_spin_is_waited_for(real_client: redis.Redis) -> None:
    # The script keeps the server busy for milliseconds, far past a 100 µs spin: the read must
    # then block. (A loop on TIME would never end on Valkey, whose scripts see a frozen clock.)
    slow = "local x = 0 for i = 1, 3000000 do x = x + i end return 'late'"
    wire = Wire(real_client, spin_us=100)
    wire.evalsha(real_client.script_load(slow), 0)
    wire.sadd("s", "after")
    assert wire.execute() == [b"late", 1]


def test_polling_needs_a_second_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0}, raising=False)
    assert default_spin_us() == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    assert default_spin_us() == SPIN_US


def test_wire_stopped_early_drops_its_connection(real_client: redis.Redis) -> None:
    wire = Wire(real_client, send_every=1)  # every command is sent as it is queued
    for i in range(50):
        wire.sadd("s", i)
    replies = wire.replies()
    assert next(replies) == 1
    replies.close()  # 49 replies unread: the connection must not go back to the pool as is
    assert real_client.scard("s") == 50 and real_client.ping()
    wire.sadd("s", "x")
    assert wire.execute() == [1]


def test_wire_capable_and_bad_arguments(real_server: RedisServer) -> None:
    assert wire_capable(redis.Redis.from_url(real_server.url))
    assert not wire_capable(redis.Redis.from_url(real_server.url, decode_responses=True))
    assert not wire_capable(redis.Redis.from_url(real_server.url, protocol=3))
    assert not wire_capable(fakeredis.FakeRedis())
    with pytest.raises(ValueError, match="send_every must be >= 1, got 0"):
        Wire(redis.Redis.from_url(real_server.url), send_every=0)
    with pytest.raises(ValueError, match="spin_us must be >= 0, got -1"):
        Wire(fakeredis.FakeRedis(), spin_us=-1)
    with pytest.raises(ValueError, match="raise_on_error: Wire returns errors as values only"):
        Wire(redis.Redis.from_url(real_server.url)).execute(raise_on_error=True)


def test_a_call_that_cannot_be_encoded_leaves_keyspace_and_broker_as_they_were(
        redis_client: redis.Redis) -> None:
    _refuse_unencodable(redis_client)


def test_a_handed_over_call_that_cannot_be_encoded_changes_nothing_either() -> None:
    client = fakeredis.FakeRedis()
    assert hand_over(client)
    _refuse_unencodable(client)


def _refuse_unencodable(client: redis.Redis) -> None:
    broker = Broker(client)
    observer = Observer(broker, "q")
    broker.register("q")
    before = sorted(client.keys("*"))
    with pytest.raises(TypeError):
        script, keys_, _ = calls.pause("q", broker.clock.now_ns)
        broker.call(script, keys_, [object()])  # type: ignore[list-item]
    assert sorted(client.keys("*")) == before
    broker.pause("q")  # the broker's pipeline was emptied: the next call is its own
    assert observer.snapshot("q").get(keys.paused("q")) is not None


@pytest.mark.parametrize("kind", ["fakeredis", "redis"])
def test_a_holding_wire_keeps_one_connection_and_returns_it_when_gone(
        kind: str, request: pytest.FixtureRequest) -> None:
    client = _clients(kind, request)
    pool = client.connection_pool
    wire = Wire(client, hold=True)
    held = set()
    for i in range(5):
        wire.sadd("held", i)
        assert wire.execute() == [1]
        held.add(id(wire._conn))
    assert len(held) == 1 and wire._conn in pool._in_use_connections
    wire.reset()  # nothing in flight: the connection stays
    assert wire._conn is not None
    for i in range(3):
        wire.sadd("held", "again", i)
    replies = wire.replies()
    next(replies)
    replies.close()  # stopped early: that connection is dropped, a new one serves next time
    assert wire._conn is None
    wire.sadd("held", "x")
    assert wire.execute() == [1]
    conn = wire._conn
    del wire
    assert conn not in pool._in_use_connections  # back in the pool with its Wire gone
    assert client.scard("held") == 7
    client.delete("held")


def test_a_wire_never_reuses_a_connection_from_before_a_fork(real_client: redis.Redis) -> None:
    wire = Wire(real_client, hold=True)
    wire.sadd("f", "a")
    assert wire.execute() == [1]
    parents = wire._conn
    wire._pid = -1  # as a forked child sees it: the held connection is its parent's
    wire.sadd("f", "b")
    assert wire.execute() == [1]
    assert wire._conn is not parents
    wire.release()
    assert wire._conn is None and real_client.scard("f") == 2


def test_machines_give_their_connections_back_even_when_they_fail() -> None:
    # Every example builds a broker on a pooled fakeredis client; a mutant fails and shrinks,
    # so many of those runs end in an exception that keeps its machine alive for a while.
    from harness.backends import _FAKE_POOL
    from harness.check import run_check
    from harness.config import MachineConfig

    result = run_check(MachineConfig(variant="reference+BZ-2"), max_examples=150, steps=20, seed=1)
    assert result.failure is not None  # it did fail, and shrink
    clients = list(_FAKE_POOL)
    assert clients
    for client in clients:
        assert not client.connection_pool._in_use_connections


def test_a_handed_over_command_is_the_words_resp_would_carry() -> None:
    client = fakeredis.FakeRedis()
    seen: list[list[bytes]] = []

    def handover(conn: Any, words: list[bytes]) -> None:
        seen.append(words)
        conn.send_packed_command([pack_command(tuple(words))], check_health=False)

    hand_over_to(client, handover)
    wire = Wire(client)
    wire.sadd("s", "é", 7, 2.5, b"\xff")
    wire.queue_packed(pack_command(("SCARD", "s")))  # already RESP: sent as it is
    assert wire.execute() == [4, 4]
    assert seen == [[b"SADD", b"s", "é".encode(), b"7", b"2.5", b"\xff"]]
    with pytest.raises(TypeError, match="command word None"):
        wire.sadd("s", None)  # type: ignore[arg-type]
    assert len(wire) == 0 and client.scard("s") == 4
