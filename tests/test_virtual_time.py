"""The virtual time base (broker/scripting.py, broker/scripts/_clock.lua): a deadline survives
being encoded, read up to a millisecond off (TIME + PTTL on Redis 6.2) and decoded, in Python
and in Lua alike; and the broker runs exactly on Redis 6.2, which has no PEXPIRETIME."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.scripting import (
    TTL_SHIFT_MS,
    decode_deadline,
    encode_deadline,
    is_shifted,
    read_deadlines,
    with_prelude,
)
from broker.servers import RedisServer
from harness.check import run_check
from harness.machine import MachineConfig

#: Virtual deadlines far beyond any run (year 5138 at 10**14 ms), from the epoch on.
DEADLINES = st.integers(min_value=0, max_value=10**14)
#: The read errors the decoding absorbs: TIME + PTTL is at most 1 ms early once TIME before and
#: after PTTL agree within 1 ms; a reading 1 ms late or 2 ms early decodes the same.
READ_ERRORS = st.integers(min_value=-2, max_value=1)

_LUA_TWINS = with_prelude(
    "return {encode_deadline(ARGV[1]), decode_deadline(tonumber(ARGV[2]))}")


@given(deadline=DEADLINES, error=READ_ERRORS)
def test_a_deadline_read_within_a_millisecond_decodes_exactly(deadline: int, error: int) -> None:
    at = encode_deadline(deadline)
    assert is_shifted(at)
    assert decode_deadline(at + error) == deadline


@given(deadline=DEADLINES)
def test_a_read_off_by_more_decodes_to_a_neighbour(deadline: int) -> None:
    """The tolerance is what the docstrings say, not more: 2 ms late or 3 ms early is another
    deadline (so a reader that is further off would be wrong, and must not be)."""
    at = encode_deadline(deadline)
    assert decode_deadline(at + 2) == deadline + 1
    assert decode_deadline(at - 3) == deadline - 1


def test_nearby_deadlines_never_collide() -> None:
    """Two deadlines 1 ms apart are 4 ms apart when stored: their tolerance windows are disjoint."""
    windows = [{encode_deadline(d) + e for e in range(-2, 2)} for d in range(100, 110)]
    assert all(a.isdisjoint(b) for i, a in enumerate(windows) for b in windows[i + 1:])


@settings(max_examples=60)
@given(deadline=DEADLINES, error=READ_ERRORS)
def test_the_lua_twins_compute_what_python_does(deadline: int, error: int) -> None:
    client = fakeredis.FakeRedis()
    at = encode_deadline(deadline)
    assert client.eval(_LUA_TWINS, 0, deadline, at + error) == [at, deadline]


def test_time_base_constants_are_spelled_once() -> None:
    """The Lua side gets the constants from Python: the prelude and clock files name no number."""
    from broker.scripting import script_text

    for name in ("_clock", "_prelude"):
        assert str(TTL_SHIFT_MS) not in script_text(name)
        assert "local TTL_SHIFT_MS" not in script_text(name)


def _keys_with_deadlines(client: redis.Redis, deadlines: list[int]) -> list[str]:
    names = [f"k{i}" for i in range(len(deadlines))]
    for name, deadline in zip(names, deadlines, strict=True):
        client.set(name, "v")
        client.pexpireat(name, encode_deadline(deadline))
    client.set("no-ttl", "v")
    return names


def test_read_deadlines_on_fakeredis() -> None:
    client = fakeredis.FakeRedis()
    names = _keys_with_deadlines(client, [1_767_225_600_000, 1_767_225_600_001, 0])
    assert read_deadlines(client, [*names, "no-ttl", "missing"]) == \
        [1_767_225_600_000, 1_767_225_600_001, 0, None, None]


@pytest.fixture
def client62(redis62_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis62_server.url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.mark.real_redis
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(deadlines=st.lists(DEADLINES, min_size=1, max_size=50))
def test_read_deadlines_is_exact_on_redis_62(client62: redis.Redis, deadlines: list[int]) -> None:
    """Redis 6.2 has no PEXPIRETIME: the reader takes TIME + PTTL, a millisecond off at most,
    and still gives every deadline exactly. (The database is emptied for each example.)"""
    client62.flushdb()
    with pytest.raises(redis.ResponseError, match="unknown command"):
        client62.execute_command("PEXPIRETIME", "k0")  # type: ignore[no-untyped-call]
    names = _keys_with_deadlines(client62, deadlines)
    assert read_deadlines(client62, [*names, "no-ttl", "missing"]) == [*deadlines, None, None]


@pytest.mark.real_redis
def test_the_stateful_machine_passes_on_redis_62(redis62_server: RedisServer) -> None:
    """A short run of the stateful machine on Redis 6.2: every step compares each key's exact
    virtual deadline with the model's, so a deadline read 1 ms off would fail it."""
    run = run_check(MachineConfig(backend=redis62_server.url), max_examples=25, steps=30, seed=0)
    assert run.failure is None, run.program
    assert run.examples == 25
    locks_taken = run.coverage[("enqueue_unique", "ok")] + run.coverage[("schedule_unique", "ok")]
    assert locks_taken > 0, "no unique lock was taken: no deadline was compared"
