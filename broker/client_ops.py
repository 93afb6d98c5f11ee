"""Client operations (T1–T6): the enqueue family."""

from __future__ import annotations

from dataclasses import replace

from broker import calls
from broker.base import BrokerBase
from model import keys
from model.message import TaskMessage
from model.validation import check_int, check_unique_key


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
        msg, lock = self._claiming(msg, ttl)
        self._enqueue(msg, lock=lock, ttl=ttl)

    def _enqueue(self, msg: TaskMessage, lock: str | None, ttl: int) -> None:
        encoded = self.encode(msg)  # may raise on bad field values: before any write
        self.call(*calls.enqueue(msg.queue, msg.id, encoded, self.clock.now_ns, lock, ttl),
                  register=msg.queue)

    def schedule(self, msg: TaskMessage, process_at: int) -> None:
        """T3: a new task, scheduled for ``process_at`` (Unix seconds).

        The hash gets ``group`` when msg.group_key is set (Asynq never writes it), so the
        forwarder later moves the task into its group. Raises TaskIdConflictError.

        >>> import fakeredis
        >>> from broker import Broker
        >>> b = Broker(fakeredis.FakeRedis())
        >>> b.schedule(TaskMessage(type="t", payload=b"", id="s1", queue="q"), b.now_s + 60)
        >>> b.snapshot("q").members("asynq:{q}:scheduled")
        ('s1',)
        """
        self._check_schedule(msg, process_at)
        self._schedule(msg, process_at, lock=None, ttl=0)

    def schedule_unique(self, msg: TaskMessage, process_at: int, ttl: int) -> None:
        """T4: as :meth:`schedule`, holding the unique lock for ``ttl`` seconds from now.

        Raises DuplicateTaskError while another task holds the lock.
        """
        self._check_schedule(msg, process_at)
        msg, lock = self._claiming(msg, ttl)
        self._schedule(msg, process_at, lock=lock, ttl=ttl)

    def add_to_group(self, msg: TaskMessage, group: str) -> None:
        """T5: a new task waiting in ``group`` (msg.group_key is set to it).

        Raises TaskIdConflictError when the id is taken.
        """
        self.check_message(msg)
        self.check_group(group)
        self._add_to_group(replace(msg, group_key=group), lock=None, ttl=0)

    def add_to_group_unique(self, msg: TaskMessage, group: str, ttl: int) -> None:
        """T6: as :meth:`add_to_group`, holding the unique lock for ``ttl`` seconds.

        Raises DuplicateTaskError while another task holds the lock.
        """
        self.check_message(msg)
        self.check_group(group)
        msg, lock = self._claiming(replace(msg, group_key=group), ttl)
        self._add_to_group(msg, lock=lock, ttl=ttl)

    def _claiming(self, msg: TaskMessage, ttl: int) -> tuple[TaskMessage, str]:
        """Check a unique call's lock TTL and key; return the message naming its lock (its own
        unique_key, else Asynq's ``unique:<type>:<md5(payload)>``) and the lock."""
        self.check_ttl(ttl)
        check_unique_key(msg)
        lock = msg.unique_key or keys.unique(msg.queue, msg.type, msg.payload)
        return replace(msg, unique_key=lock), lock

    def _check_schedule(self, msg: TaskMessage, process_at: int) -> None:
        self.check_message(msg)
        check_int("process_at", process_at)
        if msg.group_key:
            self.check_group(msg.group_key)

    def _schedule(self, msg: TaskMessage, process_at: int, lock: str | None, ttl: int) -> None:
        encoded = self.encode(msg)
        self.call(*calls.schedule(msg, encoded, process_at, self.clock.now_ns, lock, ttl),
                  register=msg.queue)

    def _add_to_group(self, msg: TaskMessage, lock: str | None, ttl: int) -> None:
        encoded = self.encode(msg)
        self.call(*calls.add_to_group(msg, encoded, self.clock.now_ns, lock, ttl),
                  register=msg.queue)
