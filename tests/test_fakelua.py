"""harness.fakeserver: compile-once Lua and handed-over commands change how fast fakeredis runs the
broker's scripts, nothing else."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import fakeredis
import pytest
import redis
from support import inspector_workload, server_workload

from broker import Broker
from broker.scripting import Client
from harness.backends import release_client
from harness.fakeserver import MAX_CHUNKS, CompiledChunks, compile_once, hand_over
from harness.machine import MachineConfig, make_machine
from model.errors import KeysimError


def _fake(compiled: bool) -> fakeredis.FakeRedis:
    """A stock fakeredis client, or one as the machine uses it (compiled, commands handed over)."""
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    if compiled:
        assert compile_once(client)
        assert hand_over(client)
    return client


def _dump(client: Client) -> dict[str, Any]:
    """Every key of both queues, decoded (DUMP would compare fakeredis' pickles, not values)."""
    reader = Broker(client)
    return {q: reader.snapshot(q) for q in QUEUES}


QUEUES = ("default", "critical")


class Recording(Broker):
    """A broker that keeps every script's reply and the whole keyspace after it."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.trace: list[tuple[Any, dict[str, Any]]] = []

    def call(self, *args: Any, **kwargs: Any) -> list[Any]:
        try:
            reply = super().call(*args, **kwargs)
        except KeysimError as err:
            self.trace.append((repr(err), _dump(self._client)))
            raise
        self.trace.append((reply, _dump(self._client)))
        return reply


@pytest.mark.parametrize("variant", ["reference", "asynq-v0.24.0", "asynq-v0.26.0"])
def test_every_script_answers_and_writes_alike_compiled_or_not(
        variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    traces = []
    for compiled in (False, True):
        ids = (uuid.UUID(int=n, version=4) for n in itertools.count(1))
        monkeypatch.setattr(uuid, "uuid4", ids.__next__)  # the same aggregation set ids
        client = _fake(compiled)
        b = Recording(client, variant)
        for q in QUEUES:
            server_workload(b, q)
            inspector_workload(b, q)
        traces.append(b.trace)
    assert traces[0] == traces[1]
    assert len(traces[0]) > 50
    assert any(len(snap.entries) > 5 for _, keyspace in traces[0] for snap in keyspace.values())


def test_errors_and_the_globals_guard_are_fakeredis_own() -> None:
    stock, compiled = _fake(False), _fake(True)
    for script in ("return redis.call('NOSUCH')", "x = 1 return redis.call('SET', 'k', 1)",
                   "return nil + 1", "this is not lua",
                   "rawset(_G, 'y', 1) return 1",  # no metamethod: the pass at the end sees it
                   "z = 1 z = nil w = 2 return 1"):
        answers = []
        for client in (stock, compiled):
            with pytest.raises(redis.ResponseError) as err:
                client.eval(script, 0)
            answers.append(str(err.value))
            assert client.keys("*") == []  # refused before its redis.call wrote anything
            assert client.eval("return 7", 0) == 7  # the offending globals were cleaned up
        assert answers[0] == answers[1], script
    # A global created and removed again within one script is no error, on either server.
    assert stock.eval("q = 1 q = nil return 1", 0) == compiled.eval("q = 1 q = nil return 1", 0)
    runtime = compiled.connection_pool.connection_kwargs["server"]._lua_runtime
    assert runtime._alarm  # the flag, not the full pass, guarded the redis.calls above
    assert not runtime.may_have_new_global()
    assert stock.eval("return KEYS[1] .. ARGV[1]", 1, "a", "b") == \
        compiled.eval("return KEYS[1] .. ARGV[1]", 1, "a", "b") == b"ab"


def test_a_chunk_runs_afresh_each_call() -> None:
    client = _fake(True)
    script = "local n = 0 n = n + 1 return n"
    assert [client.eval(script, 0) for _ in range(3)] == [1, 1, 1]
    server = client.connection_pool.connection_kwargs["server"]
    assert isinstance(server._lua_runtime, CompiledChunks)
    assert script.encode() in server._lua_runtime.chunks


def test_the_chunk_cache_is_bounded() -> None:
    client = _fake(True)
    runtime = client.connection_pool.connection_kwargs["server"]._lua_runtime
    for i in range(MAX_CHUNKS + 5):
        assert client.eval(f"return {i}", 0) == i
    assert len(runtime.chunks) <= MAX_CHUNKS


def test_compile_once_is_idempotent_and_declines_a_real_client() -> None:
    client = _fake(True)
    assert compile_once(client)
    runtime = client.connection_pool.connection_kwargs["server"]._lua_runtime
    assert isinstance(runtime.runtime, CompiledChunks) is False  # not wrapped twice
    assert compile_once(redis.Redis(host="127.0.0.1", port=1)) is False  # never connects


def test_the_machine_reuses_a_released_server_emptied_and_never_a_live_one() -> None:
    machine = make_machine(MachineConfig())
    first, second = machine(), machine()
    assert first.sut.client is not second.sut.client  # two live machines, two servers
    first.enqueue(task_id="t0", queue="default", payload=b"a", retry=0, retention=0,
                  unique=None)
    used = first.sut.client
    release_client(used)
    third = machine()
    assert third.sut.client is used
    assert used.keys("*") == []  # flushed for its new run
    runtime = used.connection_pool.connection_kwargs["server"]._lua_runtime
    assert isinstance(runtime, CompiledChunks)
