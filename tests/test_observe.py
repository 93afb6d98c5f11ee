"""Broker.observe: the keyspace read in the same round trip as each script, on both backends.

What the machine judges after every step must be exactly what a fresh read sees; a read the
broker cannot vouch for (someone took the client, time passed a TTL) must not be answered from
the observation.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from support import inspector_workload, server_workload

from broker import Broker
from model.message import TaskMessage

Q = "default"


class Checked(Broker):
    """A broker that, after every script call, compares the observed keyspace with a fresh one."""

    served = 0

    def call(self, *args: Any, **kwargs: Any) -> list[Any]:
        try:
            return super().call(*args, **kwargs)
        finally:
            self._compare()

    def _compare(self) -> None:
        if self._observed is not None:
            type(self).served += 1
        observed = self.snapshot(Q)
        fresh = Broker(self._client, self.variant, self.policy, self.clock).snapshot(Q)
        assert observed == fresh, fresh.diff(observed, "fresh", "observed")


@pytest.mark.parametrize("variant", ["reference", "asynq-v0.26.0"])
def test_every_observed_keyspace_equals_a_fresh_read(redis_client: redis.Redis,
                                                    variant: str) -> None:
    Checked.served = 0
    b = Checked(redis_client, variant)
    b.observe(Q)
    server_workload(b, Q)
    inspector_workload(b, Q)
    assert Checked.served > 50  # the comparisons were answered from observations


def test_calls_in_an_unobserved_block_skip_the_read_and_leave_nothing_stale(
        redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    b = Broker(redis_client)
    b.observe(Q)
    reads: list[str] = []
    queue_on = b._run.queue_on

    def counting(pipe: Any, name: str, *args: Any) -> None:
        reads.append(name)
        queue_on(pipe, name, *args)

    monkeypatch.setattr(b._run, "queue_on", counting)

    def fresh() -> Any:
        return Broker(redis_client).snapshot(Q)

    b.enqueue(TaskMessage(type="t", payload=None, id="t1", queue=Q))
    assert reads.count("snapshot") == 1 and b._observed is not None
    with b.unobserved():
        b.enqueue(TaskMessage(type="t", payload=None, id="t2", queue=Q))
        assert b._observed is None  # what was seen before the block is forgotten
        with b.unobserved():
            b.enqueue(TaskMessage(type="t", payload=None, id="t3", queue=Q))
        b.enqueue(TaskMessage(type="t", payload=None, id="t4", queue=Q))
    assert reads.count("snapshot") == 1  # none of the three calls read the keyspace back
    assert b.snapshot(Q) == fresh()  # asked for, it is read in a round trip of its own
    b.enqueue(TaskMessage(type="t", payload=None, id="t5", queue=Q))  # observed again
    assert b._observed is not None and b.snapshot(Q) == fresh()
    assert len(b.snapshot(Q).task_ids()) == 5


def test_taking_the_client_forgets_the_observation(redis_client: redis.Redis) -> None:
    b = Broker(redis_client)
    b.observe(Q)
    b.enqueue(TaskMessage(type="t", payload=None, id="t1", queue=Q))
    b.client.set("asynq:{default}:paused", 1)  # behind the broker's back
    assert "asynq:{default}:paused" in b.snapshot(Q).entries


def test_ttls_are_judged_when_the_snapshot_is_made(redis_client: redis.Redis) -> None:
    b = Broker(redis_client)
    b.observe(Q)
    b.enqueue_unique(TaskMessage(type="t", payload=b"p", id="t1", queue=Q), ttl=10)
    lock = next(k for k in b.snapshot(Q).entries if ":unique:" in k)
    b.clock.advance(11)  # the lock's virtual TTL passes: no script ran since
    assert lock not in b.snapshot(Q).entries


def test_observe_refuses_a_bad_queue_name_and_changes_nothing(redis_client: redis.Redis) -> None:
    b = Broker(redis_client)
    b.enqueue(TaskMessage(type="t", payload=None, id="t1", queue=Q))
    before = sorted(redis_client.keys("*"))
    with pytest.raises(ValueError, match="queue must be a non-blank string"):
        b.observe("")
    assert b._observing is None
    assert sorted(redis_client.keys("*")) == before


def test_an_observing_broker_survives_a_script_flush(real_client: redis.Redis) -> None:
    b = Broker(real_client)
    b.observe(Q)
    b.enqueue(TaskMessage(type="t", payload=None, id="t1", queue=Q))
    real_client.script_flush()  # Redis forgets every script (a restart, SCRIPT FLUSH)
    b.enqueue(TaskMessage(type="t", payload=None, id="t2", queue=Q))
    assert b.snapshot(Q).members("asynq:{default}:pending") == ("t2", "t1")
    assert b.dequeue(Q) is not None


def _keys(client: redis.Redis) -> set[str]:
    return {k.decode() if isinstance(k, bytes) else k for k in client.keys("*")}


def test_expire_due_sweeps_only_keys_past_their_virtual_deadline(redis_client: redis.Redis
                                                                  ) -> None:
    b = Broker(redis_client)
    b.observe(Q)
    b.enqueue_unique(TaskMessage(type="t", payload=b"a", id="t1", queue=Q), ttl=10)
    b.enqueue_unique(TaskMessage(type="u", payload=b"b", id="t2", queue=Q), ttl=100)
    short, long = sorted((k for k in b.snapshot(Q).entries if ":unique:" in k),
                         key=lambda k: b.snapshot(Q).entries[k].expire_at_ms or 0)
    before = _keys(redis_client)
    assert b.expire_due(Q) == 0
    b.clock.advance(11)
    assert b.expire_due(Q) == 1  # t1's lock; t2's lock, the hashes, the list and the registry stay
    assert _keys(redis_client) == before - {short}
    assert long in b.snapshot(Q).entries and short not in b.snapshot(Q).entries


def test_expire_due_refuses_a_bad_queue_name_and_changes_nothing(redis_client: redis.Redis
                                                                 ) -> None:
    b = Broker(redis_client)
    b.enqueue_unique(TaskMessage(type="t", payload=b"a", id="t1", queue=Q), ttl=10)
    b.clock.advance(11)
    before = sorted(redis_client.keys("*"))
    with pytest.raises(ValueError, match="queue"):
        b.expire_due("bad{queue}")
    assert sorted(redis_client.keys("*")) == before
