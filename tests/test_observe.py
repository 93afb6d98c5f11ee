"""harness.observe.Observer: the keyspace read in the same round trip as each script call, on
both backends.

What the machine judges after every step must be exactly what a fresh read sees; a read the
observer cannot vouch for (someone took the client, time passed a TTL) must not be answered from
the observation.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from support import inspector_workload, server_workload

from broker import Broker
from harness.observe import Observer
from model.message import TaskMessage
from model.reference import ReferenceModel

Q = "default"


class Checked(Broker):
    """A broker that, after every script call, compares the observed keyspace with a fresh one."""

    observer: Observer

    def call(self, *args: Any, **kwargs: Any) -> list[Any]:
        try:
            return super().call(*args, **kwargs)
        finally:
            self._compare()

    def _compare(self) -> None:
        observed = self.observer.snapshot(Q)
        fresh = Broker(self.client, self.variant, self.policy, self.clock).snapshot(Q)
        assert observed == fresh, fresh.diff(observed, "fresh", "observed")


@pytest.mark.parametrize("variant", ["reference", "asynq-v0.26.0"])
def test_every_observed_keyspace_equals_a_fresh_read(redis_client: redis.Redis,
                                                    variant: str) -> None:
    b = Checked(redis_client, variant)
    b.observer = Observer(b, Q)
    server_workload(b, Q)
    inspector_workload(b, Q)
    assert b.observer.served > 50  # the comparisons were answered from observations


def _counting_reads(b: Broker, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the queue of every snapshot the broker queues (observed or read)."""
    reads: list[str] = []
    queue_snapshot = b.queue_snapshot

    def counting(pipe: Any, queue: str) -> None:
        reads.append(queue)
        queue_snapshot(pipe, queue)

    monkeypatch.setattr(b, "queue_snapshot", counting)
    return reads


def test_calls_in_a_quiet_block_skip_the_read_and_leave_nothing_stale(
        redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    b = Broker(redis_client)
    observer = Observer(b, Q)
    reads = _counting_reads(b, monkeypatch)

    def fresh() -> Any:
        return Broker(redis_client).snapshot(Q)

    b.enqueue(TaskMessage(type="t", payload=None, id="t1", queue=Q))
    assert len(reads) == 1 and observer.snapshot(Q) == fresh() and observer.served == 1
    with observer.quiet():
        b.enqueue(TaskMessage(type="t", payload=None, id="t2", queue=Q))
        with observer.quiet():
            b.enqueue(TaskMessage(type="t", payload=None, id="t3", queue=Q))
        b.enqueue(TaskMessage(type="t", payload=None, id="t4", queue=Q))
        assert observer.snapshot(Q) == fresh()  # what was seen before the block is forgotten
    assert len(reads) == 2 and observer.served == 1  # the three calls read nothing back
    assert observer.snapshot(Q) == fresh() and observer.served == 2  # the read was kept
    b.enqueue(TaskMessage(type="t", payload=None, id="t5", queue=Q))  # observed again
    assert len(reads) == 3 and observer.snapshot(Q) == fresh() and observer.served == 3
    assert len(observer.snapshot(Q).task_ids()) == 5


def test_writes_outside_scripts_are_observed_too(redis_client: redis.Redis) -> None:
    b = Broker(redis_client)
    observer = Observer(b, Q)
    b.register(Q)
    assert observer.snapshot(Q).registered and observer.served == 1
    b.remove_queue(Q)  # its script, then SREM asynq:queues
    assert observer.snapshot(Q) == Broker(redis_client).snapshot(Q) and observer.served == 2
    assert not observer.snapshot(Q).registered


def test_another_queue_is_read_afresh(redis_client: redis.Redis) -> None:
    b = Broker(redis_client)
    observer = Observer(b, Q)
    b.enqueue(TaskMessage(type="t", payload=None, id="t1", queue="other"))
    assert observer.snapshot("other").task_ids() == {"t1"} and observer.served == 0
    assert observer.snapshot(Q).entries == {} and observer.served == 1


def test_taking_the_client_forgets_the_observation(redis_client: redis.Redis) -> None:
    b = Broker(redis_client)
    observer = Observer(b, Q)
    b.enqueue(TaskMessage(type="t", payload=None, id="t1", queue=Q))
    observer.client.set("asynq:{default}:paused", 1)  # behind the broker's back
    assert "asynq:{default}:paused" in observer.snapshot(Q).entries


def test_ttls_are_judged_when_the_snapshot_is_made(redis_client: redis.Redis) -> None:
    b = Broker(redis_client)
    observer = Observer(b, Q)
    b.enqueue_unique(TaskMessage(type="t", payload=b"p", id="t1", queue=Q), ttl=10)
    lock = next(k for k in observer.snapshot(Q).entries if ":unique:" in k)
    b.clock.advance(11)  # the lock's virtual TTL passes: no script ran since
    assert lock not in observer.snapshot(Q).entries and observer.served == 2


def test_an_observer_refuses_a_bad_queue_name_and_changes_nothing(redis_client: redis.Redis
                                                                   ) -> None:
    b = Broker(redis_client)
    wire = b.wire
    b.enqueue(TaskMessage(type="t", payload=None, id="t1", queue=Q))
    before = sorted(redis_client.keys("*"))
    with pytest.raises(ValueError, match="queue must be a non-blank string"):
        Observer(b, "")
    assert b.wire is wire
    assert sorted(redis_client.keys("*")) == before


def test_only_a_script_broker_can_be_observed() -> None:
    with pytest.raises(TypeError, match="cannot be observed"):
        Observer(ReferenceModel(), Q)


def test_a_closed_observer_leaves_the_broker_as_it_was(redis_client: redis.Redis,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    b = Broker(redis_client)
    wire = b.wire
    observer = Observer(b, Q)
    observer.close()
    assert b.wire is wire
    reads = _counting_reads(b, monkeypatch)
    b.enqueue(TaskMessage(type="t", payload=None, id="t1", queue=Q))
    assert reads == [] and observer.snapshot(Q).task_ids() == {"t1"} and observer.served == 0


def test_an_observed_broker_survives_a_script_flush(real_client: redis.Redis) -> None:
    b = Broker(real_client)
    observer = Observer(b, Q)
    b.enqueue(TaskMessage(type="t", payload=None, id="t1", queue=Q))
    real_client.script_flush()  # Redis forgets every script (a restart, SCRIPT FLUSH)
    b.enqueue(TaskMessage(type="t", payload=None, id="t2", queue=Q))
    assert observer.snapshot(Q).members("asynq:{default}:pending") == ("t2", "t1")
    assert b.dequeue(Q) is not None
    assert observer.snapshot(Q) == Broker(real_client).snapshot(Q)


def _keys(client: redis.Redis) -> set[str]:
    return {k.decode() if isinstance(k, bytes) else k for k in client.keys("*")}


def test_expire_due_sweeps_only_keys_past_their_virtual_deadline(redis_client: redis.Redis
                                                                  ) -> None:
    b = Broker(redis_client)
    observer = Observer(b, Q)
    b.enqueue_unique(TaskMessage(type="t", payload=b"a", id="t1", queue=Q), ttl=10)
    b.enqueue_unique(TaskMessage(type="u", payload=b"b", id="t2", queue=Q), ttl=100)
    short, long = sorted((k for k in b.snapshot(Q).entries if ":unique:" in k),
                         key=lambda k: b.snapshot(Q).entries[k].expire_at_ms or 0)
    before = _keys(redis_client)
    assert b.expire_due(Q) == 0
    b.clock.advance(11)
    assert b.expire_due(Q) == 1  # t1's lock; t2's lock, the hashes, the list and the registry stay
    assert _keys(redis_client) == before - {short}
    assert long in observer.snapshot(Q).entries and short not in observer.snapshot(Q).entries


def test_expire_due_refuses_a_bad_queue_name_and_changes_nothing(redis_client: redis.Redis
                                                                 ) -> None:
    b = Broker(redis_client)
    b.enqueue_unique(TaskMessage(type="t", payload=b"a", id="t1", queue=Q), ttl=10)
    b.clock.advance(11)
    before = sorted(redis_client.keys("*"))
    with pytest.raises(ValueError, match="queue"):
        b.expire_due("bad{queue}")
    assert sorted(redis_client.keys("*")) == before
