"""Client operations (T1–T6): the enqueue family."""

from __future__ import annotations

from dataclasses import replace

from broker.base import BrokerBase
from model import keys
from model.message import TaskMessage


class ClientOps(BrokerBase):
    """What Asynq's ``Client`` does to Redis."""

    def enqueue(self, msg: TaskMessage) -> None:
        """T1: a new pending task. Raises TaskIdConflictError when the id is taken."""
        self.check_message(msg)
        self._enqueue(msg, lock=None, ttl=0)

    def enqueue_unique(self, msg: TaskMessage, ttl: int) -> None:
        """T2: as :meth:`enqueue`, holding the unique lock for ``ttl`` seconds.

        Raises DuplicateTaskError while another task holds the lock.
        """
        self.check_message(msg)
        self.check_ttl(ttl)
        lock = msg.unique_key or keys.unique(msg.queue, msg.type, msg.payload)
        self._enqueue(replace(msg, unique_key=lock), lock=lock, ttl=ttl)

    def _enqueue(self, msg: TaskMessage, lock: str | None, ttl: int) -> None:
        self.register(msg.queue)
        task_keys = [keys.task(msg.queue, msg.id), keys.pending(msg.queue)]
        args: list[str | bytes | int] = [self.encode(msg), msg.id, self.clock.now_ns, self.now_ms]
        if lock is not None:
            task_keys.append(lock)
            args.append(self.now_ms + ttl * 1000)
        self.call("enqueue", task_keys, args)
