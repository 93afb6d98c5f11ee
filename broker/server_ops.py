"""Server operations (T8–T27): processor outcomes, forwarder, janitor, recoverer, aggregator."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from broker.base import BrokerBase
from broker.variants import Quirk
from model import keys, validation
from model.errors import QueueNotFoundError
from model.message import TaskMessage
from model.recovery import retry_or_archive_expired
from model.validation import check_bool, check_bytes, check_int, check_set_id, check_text

__all__ = ["ServerOps"]


class ServerOps(BrokerBase):
    """What Asynq's server loops do to Redis.

    >>> import fakeredis
    >>> from broker import Broker
    >>> b = Broker(fakeredis.FakeRedis())
    >>> b.enqueue(TaskMessage(type="t", payload=b"x", id="t1", queue="q"))
    >>> msg = b.dequeue("q")
    >>> b.done(msg)
    >>> sorted(k for k in b.snapshot("q").entries)
    ['asynq:{q}:processed', 'asynq:{q}:processed:2026-01-01']
    """

    # --- processor (T8–T16) ------------------------------------------------------------------
    def dequeue(self, queue: str) -> TaskMessage | None:
        """T8: the oldest pending task, now active with a lease; None when empty or paused."""
        validation.check_queue(queue)
        reply = self.call(
            "dequeue",
            [keys.pending(queue), keys.paused(queue), keys.active(queue), keys.lease(queue)],
            [self.now_s + self.policy.lease_duration, keys.task_prefix(queue)])
        return self.decode(reply[0]) if reply and reply[0] is not None else None

    def done(self, msg: TaskMessage) -> None:
        """T9/T10: success with retention 0: delete the task, release its lock, count it.

        Raises TaskNotFoundError unless the task is active (in active, in lease, with a hash).
        """
        self.check_message(msg)
        q = msg.queue
        task_keys = [keys.active(q), keys.lease(q), keys.task(q, msg.id),
                     *self.stats_keys(q)[:2], *self._msg_lock(msg)]
        self.call("done", task_keys, [msg.id, self.now_ms, self.stats_deadline_ms()])

    def mark_as_complete(self, msg: TaskMessage) -> None:
        """T11/T12: success with retention: completed until now + msg.retention.

        Raises TaskNotFoundError unless the task is active.
        """
        self.check_message(msg)
        q = msg.queue
        encoded = self.encode(msg.completed(self.now_s))
        task_keys = [keys.active(q), keys.lease(q), keys.completed(q), keys.task(q, msg.id),
                     *self.stats_keys(q)[:2], *self._msg_lock(msg)]
        self.call("mark_as_complete", task_keys,
                  [msg.id, encoded, self.now_s + msg.retention, self.now_ms,
                   self.stats_deadline_ms()])

    def requeue(self, msg: TaskMessage) -> None:
        """T13: back to pending, next in line (shutdown abort). Raises TaskNotFoundError."""
        self.check_message(msg)
        q = msg.queue
        self.call("requeue", [keys.active(q), keys.lease(q), keys.pending(q), keys.task(q, msg.id)],
                  [msg.id])

    def retry(self, msg: TaskMessage, retry_at: int, error: str, is_failure: bool = True) -> None:
        """T14/T15: wait in retry until ``retry_at``; a failure counts and increments retried.

        Raises TaskNotFoundError unless the task is active.
        """
        self.check_message(msg)
        check_int("retry_at", retry_at)
        check_text("error", error)
        check_bool("is_failure", is_failure)
        q = msg.queue
        encoded = self.encode(msg.failed(error, self.now_s, count=is_failure))
        task_keys = [keys.active(q), keys.lease(q), keys.retry(q), keys.task(q, msg.id),
                     *self.stats_keys(q)]
        self.call("retry", task_keys, [msg.id, encoded, retry_at, int(is_failure), self.now_ms,
                                       self.stats_deadline_ms()])

    def archive(self, msg: TaskMessage, error: str) -> None:
        """T16: archived now, then the archive trimmed (cutoff, then cap); counted as failed.

        Raises TaskNotFoundError unless the task is active. Asynq variants can fail part-way
        with ScriptError (BZ-15).
        """
        self.check_message(msg)
        check_text("error", error)
        q = msg.queue
        encoded = self.encode(msg.archived(error, self.now_s))
        task_keys = [keys.active(q), keys.lease(q), keys.archived(q), keys.task(q, msg.id),
                     *self.stats_keys(q)]
        self.call("archive", task_keys,
                  [msg.id, encoded, self.now_s, self.now_s - self.policy.archive_cutoff,
                   self.policy.archive_capacity, keys.task_prefix(q), self.now_ms,
                   self.stats_deadline_ms()])

    def _msg_lock(self, msg: TaskMessage) -> list[str]:
        """Asynq (BZ-4 variants) releases the lock the message names, so it goes in KEYS —
        only when it is a lock of the message's queue (a foreign key would leave the slot)."""
        own = msg.unique_key.startswith(keys.unique_prefix(msg.queue))
        return [msg.unique_key] if own and self.quirk(Quirk.LOCKS_KEPT_UNTIL_TTL) else []

    # --- forwarder and janitor (T17, T25) ------------------------------------------------------
    def forward_if_ready(self, queue: str) -> int:
        """T17: move every ready scheduled, then retry, task to pending (or its group).

        Runs batches of ``policy.forward_batch`` until one is empty; returns how many moved.
        """
        validation.check_queue(queue)
        moved = 0
        with self.unobserved():  # the retry source comes next
            moved += self._forward_all(queue, keys.scheduled(queue))
        return moved + self._forward_all(queue, keys.retry(queue))

    def _forward_all(self, queue: str, source: str) -> int:
        moved = 0
        while True:
            taken, n = self.call(
                "forward", [source, keys.pending(queue), keys.groups(queue)],
                [self.now_s, keys.task_prefix(queue), self.clock.now_ns,
                 keys.group_prefix(queue), self.policy.forward_batch])
            moved += int(n)
            # Every id a batch takes leaves the source: a short batch took the last ready one.
            if int(taken) < self.policy.forward_batch:
                return moved

    def delete_expired_completed_tasks(self, queue: str) -> int:
        """T25: delete completed tasks whose retention ended; return how many."""
        validation.check_queue(queue)
        return self._batches("delete_expired_completed", [keys.completed(queue)],
                             [self.now_s, keys.task_prefix(queue)])

    def delete_expired_archived_tasks(self, queue: str) -> int:
        """The reference janitor's archive cutoff: delete archived tasks older than
        ``policy.archive_cutoff`` (hash and lock too); return how many. Asynq variants
        (lazy_cutoff) do nothing and return 0."""
        validation.check_queue(queue)
        if self.quirk(Quirk.LAZY_CUTOFF):
            return 0
        return self._batches("delete_expired_archived", [keys.archived(queue)],
                             [self.now_s - self.policy.archive_cutoff, keys.task_prefix(queue)],
                             [self.now_ms])

    def _batches(self, script: str, keys_: list[str], args: list[Any],
                 more_args: Sequence[Any] = ()) -> int:
        """Run a janitor script (its ARGV: ``args``, the batch size, ``more_args``) until a
        batch comes back short: every id a batch takes leaves the index, so a short one took
        the last due id."""
        size = self.policy.janitor_batch_size
        total = 0
        while True:
            (n,) = self.call(script, keys_, [*args, size, *more_args])
            total += int(n)
            if int(n) < size:
                return total

    # --- recoverer (T18, T19, T24) -------------------------------------------------------------
    def list_lease_expired(self, queue: str, cutoff: int) -> list[TaskMessage]:
        """T18: messages of tasks whose lease ended at or before ``cutoff`` (Unix seconds), in
        lease order; ids without a hash (or without a msg) are skipped."""
        validation.check_queue(queue)
        check_int("cutoff", cutoff)
        reply = self.call("list_lease_expired", [keys.lease(queue)],
                          [cutoff, keys.task_prefix(queue)])
        return [self.decode(raw) for raw in reply]

    def recover(self, queue: str) -> int:
        """T19: retry (or archive, once retries are used up) every task whose lease ended more
        than ``policy.recover_skew`` seconds ago; return how many moved.

        As Asynq's recoverer, a task another actor moved meanwhile (NOT FOUND) or a script that
        fails part-way (ScriptError) is skipped, not raised. Expired lease ids whose hash is
        gone are first dropped from lease and active (Asynq leaves them: quirk
        ``recover_skips_missing_hashes``).
        """
        cutoff = self.now_s - self.policy.recover_skew
        # the reference drops leases whose hash is gone
        if not self.quirk(Quirk.RECOVER_SKIPS_MISSING_HASHES):
            with self.unobserved():  # the listing comes next
                self.call("drop_dangling_leases", [keys.lease(queue), keys.active(queue)],
                          [cutoff, keys.task_prefix(queue)])
        expired = self.list_lease_expired(queue, cutoff)
        return retry_or_archive_expired(self, expired, self.now_s, self.policy)

    def extend_lease(self, queue: str, *task_ids: str) -> int:
        """T20: renew the leases of ``task_ids`` to now + lease_duration; return how many of
        them still had a lease (the others are not added)."""
        validation.check_queue(queue)
        for task_id in task_ids:
            validation.check_task_id(task_id)
        (n,) = self.call("extend_lease", [keys.lease(queue)],
                         [self.now_s + self.policy.lease_duration, *task_ids])
        return int(n)

    # --- aggregator (T21–T24) ------------------------------------------------------------------
    def aggregation_check(self, queue: str, group: str, set_id: str | None = None) -> str | None:
        """T21: when ``group`` is ready (max size, max delay or grace period), stage its tasks
        in aggregation set ``set_id`` (a new uuid4 hex when None) and return the set id; else
        return None."""
        validation.check_queue(queue)
        self.check_group(group)
        set_id = uuid.uuid4().hex if set_id is None else check_set_id(set_id)
        p = self.policy
        (created,) = self.call(
            "aggregation_check",
            [keys.group(queue, group), keys.group_set(queue, group, set_id),
             keys.aggregation_sets(queue), keys.groups(queue)],
            [p.aggregation_max_size, p.aggregation_max_delay, p.aggregation_grace,
             self.now_s + p.aggregation_timeout, self.now_s, group])
        return set_id if int(created) else None

    def read_aggregation_set(self, queue: str, group: str, set_id: str
                             ) -> tuple[list[TaskMessage], int]:
        """T22: the set's messages in set order and its deadline (Unix seconds).

        Raises TaskNotFoundError when the set is not in ``aggregation_sets``.
        """
        validation.check_queue(queue)
        self.check_group(group)
        check_set_id(set_id)
        deadline, *msgs = self.call(
            "read_aggregation_set",
            [keys.group_set(queue, group, set_id), keys.aggregation_sets(queue)],
            [keys.task_prefix(queue)])
        return [self.decode(raw) for raw in msgs], int(float(deadline))

    def delete_aggregation_set(self, queue: str, group: str, set_id: str) -> None:
        """T23: delete the set's member tasks (releasing their locks) and the set itself."""
        validation.check_queue(queue)
        self.check_group(group)
        check_set_id(set_id)
        self.call("delete_aggregation_set",
                  [keys.group_set(queue, group, set_id), keys.aggregation_sets(queue)],
                  [keys.task_prefix(queue), self.now_ms])

    def reclaim_stale_aggregation_sets(self, queue: str) -> int:
        """T24: put the members of every set whose deadline passed back into its group;
        return how many sets."""
        validation.check_queue(queue)
        (n,) = self.call("reclaim_stale_aggregation_sets",
                         [keys.aggregation_sets(queue), keys.groups(queue)],
                         [self.now_s, keys.group_prefix(queue)])
        return int(n)

    # --- result writer and queue flag (T26, T27) -----------------------------------------------
    def write_result(self, queue: str, task_id: str, data: bytes) -> int:
        """T26: store ``data`` in the task's ``result`` field; return len(data).

        Raises TaskNotFoundError when the task has no hash (Asynq, BZ-18: re-creates it).
        """
        validation.check_queue(queue)
        validation.check_task_id(task_id)
        check_bytes("data", data)
        self.call("write_result", [keys.task(queue, task_id)], [data])
        return len(data)

    def pause(self, queue: str) -> None:
        """T27: stop dequeuing ``queue``.

        Raises QueueNotFoundError when the queue is not in ``asynq:queues`` and
        AlreadyInStateError when it is already paused.
        """
        validation.check_queue(queue)
        if not self.quirk(Quirk.PAUSE_UNREGISTERED):
            self._require_registered(queue)
        self.call("pause", [keys.paused(queue)], [self.now_s])

    def unpause(self, queue: str) -> None:
        """T27: resume ``queue``. Raises QueueNotFoundError (unregistered queue) or
        AlreadyInStateError (not paused)."""
        validation.check_queue(queue)
        if not self.quirk(Quirk.PAUSE_UNREGISTERED):
            self._require_registered(queue)
        self.call("unpause", [keys.paused(queue)])

    def _require_registered(self, queue: str) -> None:
        # asynq:queues is a global key, so it is read by its own command, not in the script.
        if not self.client.sismember(keys.ALL_QUEUES, queue):
            raise QueueNotFoundError(f"queue {queue!r} is not in {keys.ALL_QUEUES}")
