"""Observation: a queue's keyspace read in the same round trip as each of a broker's script calls.

The stateful machine reads the keyspace after every step. On a real server that read is a round
trip of its own, unless it travels with the step's last script call: :class:`Observer` wraps the
broker's pipeline (``Broker.wire``) so that every batch the broker sends carries the snapshot
commands too (``Broker.queue_snapshot``), keeps their replies, and hands the broker only its own.
:meth:`Observer.snapshot` then answers from the last batch while nothing else has touched the
keyspace since. The broker knows nothing of it.

>>> import fakeredis
>>> from broker import Broker
>>> from model.message import TaskMessage
>>> broker = Broker(fakeredis.FakeRedis())
>>> observer = Observer(broker, "q")
>>> broker.enqueue(TaskMessage(type="t", payload=None, id="t1", queue="q"))
>>> sorted(observer.snapshot("q").entries)  # answered from the enqueue's round trip
['asynq:{q}:pending', 'asynq:{q}:t:t1']
>>> observer.served
1
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from broker import Broker
from broker.scripting import Client
from model import keys
from model.snapshot import KeyspaceSnapshot

#: Commands ``BrokerBase.queue_snapshot`` queues: the snapshot script, then SISMEMBER.
_SNAPSHOT_COMMANDS = 2


class Observer:
    """Reads ``queue``'s keyspace in the round trip of each batch ``broker`` sends.

    ``broker`` must be a :class:`~broker.Broker`, whose every write goes out on
    ``broker.wire``; the Go-backed broker is refused with TypeError (Asynq writes through the
    driver's own connection, so an observation could not be kept up to date).
    """

    def __init__(self, broker: Any, queue: str) -> None:
        if not isinstance(broker, Broker):
            raise TypeError(f"{type(broker).__name__} cannot be observed: its writes do not "
                            "go through a broker pipeline; call snapshot() instead")
        keys.validate_name("queue", queue)
        # Weakly: the broker holds its wire, which holds this observer; a strong reference back
        # would make a cycle that only the garbage collector frees (and with the broker, the
        # connection it holds).
        self.broker: Broker = weakref.proxy(broker)
        self.queue = queue
        self.served = 0  # snapshots answered from an observation
        self._quiet = 0  # depth of quiet() blocks
        self._reading = False  # a snapshot of ``queue`` is being read: keep it, add nothing
        self._seen: tuple[list[Any], Any] | None = None  # (found, registered) since the last change
        self._wire = broker.wire
        broker.wire = _ObservingWire(self, broker.wire)

    def close(self) -> None:
        """Stop observing: the broker sends its calls on its own pipeline again."""
        self.broker.wire = self._wire
        self._seen = None

    @property
    def client(self) -> Client:
        """The broker's client. Whoever takes it may change the keyspace behind the broker's
        back, so taking it forgets what was observed."""
        self._seen = None
        return self.broker.client

    def forget(self) -> None:
        """The keyspace changed behind the broker: the next snapshot is read afresh."""
        self._seen = None

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """Within the block, script calls do not read the keyspace back: the caller makes more
        calls before it looks. What was observed is forgotten at the first of them; the first
        call after the block observes again (a :meth:`snapshot` before it asks Redis)."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def snapshot(self, queue: str) -> KeyspaceSnapshot:
        """``broker.snapshot(queue)``, answered from the last observation when nothing has
        touched the keyspace since (TTLs are judged now, as a fresh read would)."""
        if queue != self.queue:
            return self.broker.snapshot(queue)
        if self._seen is not None:
            self.served += 1
            return self.broker.snapshot_from(queue, *self._seen)
        self._reading = True
        try:
            return self.broker.snapshot(queue)
        finally:
            self._reading = False

    def _batch(self, wire: Any) -> list[Any]:
        """Send the broker's batch on ``wire`` with the snapshot commands after it (unless
        quiet, or the batch is the snapshot itself); keep their replies, return the broker's."""
        replies: list[Any]
        if self._reading:
            replies = wire.execute()
            self._keep(replies[-_SNAPSHOT_COMMANDS:])
            return replies
        if self._quiet:
            self._seen = None
            replies = wire.execute()
            return replies
        self.broker.queue_snapshot(wire, self.queue)
        replies = wire.execute()
        self._keep(replies[-_SNAPSHOT_COMMANDS:])
        return replies[:-_SNAPSHOT_COMMANDS]

    def _keep(self, pair: list[Any]) -> None:
        found, registered = pair
        # A failed read (NOSCRIPT, say) is not kept: the next snapshot asks the broker afresh.
        self._seen = None if isinstance(found, Exception) else (found, registered)


class _ObservingWire:
    """The broker's pipeline, with :meth:`Observer._batch` run at each execute; every other
    method is the wrapped pipeline's own."""

    def __init__(self, observer: Observer, wire: Any) -> None:
        self._observer = observer
        self._wire = wire

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wire, name)

    def execute(self) -> list[Any]:
        return self._observer._batch(self._wire)


__all__ = ["Observer"]
