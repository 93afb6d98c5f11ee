"""The operations every implementation of the key protocol offers, as one typed Protocol.

The reference model (:class:`model.reference.ReferenceModel`), the Redis-backed
``broker.Broker`` and the Go-backed conformance broker all satisfy :class:`KeyProtocol`, so the
stateful machine can drive any two of them in lockstep. Method names follow Asynq's ``RDB`` and
``Inspector`` in snake_case; each cites its transition(s) in :data:`model.transitions.TRANSITIONS`.

Conventions shared by all implementations:

* Time is never an argument: every method reads the shared :class:`~model.clock.VirtualClock`.
  Scores are whole Unix seconds, ``pending_since`` nanoseconds, TTL deadlines milliseconds.
* Refusals raise a :class:`~model.errors.KeysimError` subclass and write nothing.
* Bad input (blank names, names with ``{``, ``}`` or control characters, unique TTL < 1 s,
  payload not bytes, unknown state) raises ``ValueError``/``TypeError`` naming the parameter,
  before anything is written.
"""

from __future__ import annotations

from typing import Protocol

from model.message import TaskMessage
from model.snapshot import KeyspaceSnapshot
from model.states import TaskState


class KeyProtocol(Protocol):
    """Asynq's Redis key protocol: client, server and inspector operations on one keyspace."""

    # --- client (T1–T6). The queue is msg.queue; the queue is registered in asynq:queues
    # before the script runs, whatever the outcome (as Asynq's client does).
    def enqueue(self, msg: TaskMessage) -> None: ...
    def enqueue_unique(self, msg: TaskMessage, ttl: int) -> None:
        """``ttl``: lock TTL in whole seconds (>= 1). msg.unique_key is filled in when empty."""
    def schedule(self, msg: TaskMessage, process_at: int) -> None: ...
    def schedule_unique(self, msg: TaskMessage, process_at: int, ttl: int) -> None:
        """``ttl`` is the lock's TTL as RDB receives it (the client passes process_at + d - now)."""
    def add_to_group(self, msg: TaskMessage, group: str) -> None: ...
    def add_to_group_unique(self, msg: TaskMessage, group: str, ttl: int) -> None: ...

    # --- server (T8–T27)
    def dequeue(self, queue: str) -> TaskMessage | None:
        """The next task (now active with a lease), or None when the queue is empty or paused."""
    def done(self, msg: TaskMessage) -> None: ...
    def mark_as_complete(self, msg: TaskMessage) -> None:
        """Completed until now + msg.retention."""
    def requeue(self, msg: TaskMessage) -> None: ...
    def retry(self, msg: TaskMessage, retry_at: int, error: str, is_failure: bool = True) -> None:
        ...
    def archive(self, msg: TaskMessage, error: str) -> None: ...
    def forward_if_ready(self, queue: str) -> int:
        """Move ready scheduled, then retry, tasks; return how many moved."""
    def delete_expired_completed_tasks(self, queue: str) -> int: ...
    def delete_expired_archived_tasks(self, queue: str) -> int:
        """Reference design only: apply the archive cutoff (Asynq variants return 0)."""
    def list_lease_expired(self, queue: str, cutoff: int) -> list[TaskMessage]: ...
    def recover(self, queue: str) -> int:
        """The recoverer's lease pass: retry or archive every task whose lease expired
        more than ``policy.recover_skew`` seconds ago; return how many."""
    def extend_lease(self, queue: str, *task_ids: str) -> int:
        """Return how many of the ids still had a lease (the others are ignored)."""
    def aggregation_check(self, queue: str, group: str, set_id: str | None = None) -> str | None:
        """Stage a ready group into aggregation set ``set_id``; return it, or None."""
    def read_aggregation_set(
        self, queue: str, group: str, set_id: str
    ) -> tuple[list[TaskMessage], int]: ...
    def delete_aggregation_set(self, queue: str, group: str, set_id: str) -> None: ...
    def reclaim_stale_aggregation_sets(self, queue: str) -> int: ...
    def write_result(self, queue: str, task_id: str, data: bytes) -> int: ...
    def pause(self, queue: str) -> None: ...
    def unpause(self, queue: str) -> None: ...

    # --- inspector (T28–T41)
    def delete_task(self, queue: str, task_id: str) -> None: ...
    def archive_task(self, queue: str, task_id: str) -> None: ...
    def run_task(self, queue: str, task_id: str) -> None: ...
    def delete_all_tasks(self, queue: str, state: TaskState, group: str | None = None) -> int: ...
    def archive_all_tasks(self, queue: str, state: TaskState, group: str | None = None) -> int:
        ...
    def run_all_tasks(self, queue: str, state: TaskState, group: str | None = None) -> int: ...
    def remove_queue(self, queue: str, force: bool = False) -> None: ...

    # --- observation
    def snapshot(self, queue: str) -> KeyspaceSnapshot:
        """Every key of ``queue`` as of now (keys whose TTL passed are absent)."""
    def queues(self) -> frozenset[str]:
        """Members of ``asynq:queues``."""
