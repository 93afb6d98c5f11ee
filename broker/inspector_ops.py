"""Inspector operations (T28–T41): per-task and bulk delete/archive/run, queue removal.

Every operation validates its input before anything is written, then runs one Lua script whose
KEYS all carry the queue's ``{q}`` hash tag (one Cluster slot). ``remove_queue`` finds the
queue's keys by SCAN first and SREMs ``asynq:queues`` after its script, as Asynq does.

>>> import fakeredis
>>> from broker import Broker
>>> from model import TaskMessage
>>> b = Broker(fakeredis.FakeRedis())
>>> b.enqueue(TaskMessage(type="email", payload=b"hi", id="t1", queue="q"))
>>> b.archive_task("q", "t1")
>>> b.run_all_tasks("q", TaskState.ARCHIVED)
1
>>> b.delete_task("q", "t1")
>>> sorted(b.snapshot("q").entries)
[]
"""

from __future__ import annotations

from broker import calls
from broker.base import BrokerBase, text
from broker.variants import Quirk
from model import keys, validation
from model.errors import QueueNotFoundError
from model.states import TaskState
from model.transitions import bulk_states


class InspectorOps(BrokerBase):
    """What Asynq's ``Inspector`` does to Redis."""

    # --- one task (T28–T30) -------------------------------------------------------------------
    def delete_task(self, queue: str, task_id: str) -> None:
        """T28: delete a task that is not active, releasing its unique lock.

        Raises TaskNotFoundError (no hash, or not in its index — e.g. staged in an aggregation
        set; Asynq's variants raise ScriptError for the latter, as every per-task op does),
        TaskActiveError.
        """
        self._check_task(queue, task_id)
        self.call(*calls.delete_task(queue, task_id, self.clock.now_ns))

    def archive_task(self, queue: str, task_id: str) -> None:
        """T29: archive a pending, scheduled, retry, completed or grouped task; trim the archive.

        Raises TaskNotFoundError, TaskActiveError, AlreadyInStateError (already archived).
        """
        self._check_task(queue, task_id)
        self.call(*calls.archive_task(queue, task_id, self.clock.now_ns, self.policy))

    def run_task(self, queue: str, task_id: str) -> None:
        """T30: make a scheduled, retry, archived, completed or grouped task pending.

        Raises TaskNotFoundError, TaskActiveError, AlreadyInStateError (already pending).
        """
        self._check_task(queue, task_id)
        self.call(*calls.run_task(queue, task_id))

    # --- bulk (T31–T38) -----------------------------------------------------------------------
    def delete_all_tasks(self, queue: str, state: TaskState, group: str | None = None) -> int:
        """T36–T38: delete every task in ``state`` (of ``group`` for AGGREGATING); return how many
        (Asynq's variants: how many ids the index held, hashes present or not).

        >>> import fakeredis
        >>> from broker import Broker
        >>> Broker(fakeredis.FakeRedis()).delete_all_tasks("q", TaskState.ACTIVE)
        Traceback (most recent call last):
        ...
        ValueError: state 'active' is not accepted by delete_all_tasks; expected one of: \
pending, scheduled, retry, archived, completed, aggregating
        """
        state = self._check_bulk("delete_all", queue, state, group)
        reply = self.call(*calls.delete_all(queue, state, group, self.clock.now_ns))
        return int(reply[0])

    def archive_all_tasks(self, queue: str, state: TaskState, group: str | None = None) -> int:
        """T33–T35: archive every pending, scheduled, retry or grouped task; trim; return how many."""
        state = self._check_bulk("archive_all", queue, state, group)
        reply = self.call(*calls.archive_all(queue, state, group, self.clock.now_ns, self.policy))
        return int(reply[0])

    def run_all_tasks(self, queue: str, state: TaskState, group: str | None = None) -> int:
        """T31–T32: make every scheduled, retry, archived or grouped task pending; return how many."""
        state = self._check_bulk("run_all", queue, state, group)
        reply = self.call(*calls.run_all(queue, state, group))
        return int(reply[0])

    # --- the queue (T40–T41) ------------------------------------------------------------------
    def remove_queue(self, queue: str, force: bool = False) -> None:
        """T40/T41: delete every key of the queue, then SREM it from ``asynq:queues``.

        Raises QueueNotEmptyError (non-force, the queue holds tasks) or TaskActiveError (force,
        an active task). Asynq (BZ-12) deletes only the five task indexes, lease and their hashes.
        """
        validation.check_queue(queue)
        if not isinstance(force, bool):
            raise TypeError(f"force must be a bool, got {force!r}")
        self._require_queue(queue)
        found = () if self.quirk(Quirk.REMOVE_QUEUE_LEAVES_KEYS) else self._scan_queue(queue)
        self.call(*calls.remove_queue(queue, force, found))
        self._command("SREM", keys.ALL_QUEUES, queue)
        self.published_queues.discard(queue)  # this client's cache only (BZ-13)

    # --- helpers ------------------------------------------------------------------------------
    def _require_queue(self, queue: str) -> None:
        """Asynq's inspector (checkQueueExists) refuses a queue missing from asynq:queues."""
        if self.quirk(Quirk.INSPECTOR_REQUIRES_QUEUE) and not self.client.sismember(
                keys.ALL_QUEUES, queue):
            raise QueueNotFoundError(f"queue {queue!r} is not in {keys.ALL_QUEUES}")

    def _check_task(self, queue: str, task_id: str) -> None:
        """Validate a per-task call; the queue must be known where Asynq requires it."""
        validation.check_queue(queue)
        validation.check_task_id(task_id)
        self._require_queue(queue)

    def _check_bulk(self, kind: str, queue: str, state: object, group: str | None) -> TaskState:
        """Validate a bulk call (``group`` is given exactly for AGGREGATING); return the state."""
        validation.check_queue(queue)
        accepted = bulk_states(kind)
        parsed = _as_state(state)
        if parsed not in accepted:
            names = ", ".join(s.value for s in accepted)
            shown = parsed.value if parsed is not None else state
            raise ValueError(
                f"state {shown!r} is not accepted by {kind}_tasks; expected one of: {names}")
        assert parsed is not None
        if parsed is TaskState.AGGREGATING:
            if group is None:
                raise ValueError(f"group is required when state is {parsed.value!r}")
            self.check_group(group)
        elif group is not None:
            raise ValueError(f"group must be None unless state is 'aggregating', got {group!r}")
        self._require_queue(queue)
        return parsed

    def _scan_queue(self, queue: str) -> list[str]:
        """Every key of ``queue``, by SCAN (never KEYS); a key may come more than once."""
        pattern = keys.queue_pattern(queue)
        return [text(k) for k in self.client.scan_iter(match=pattern, count=calls.SCAN_COUNT)]


def _as_state(state: object) -> TaskState | None:
    """``state`` as a TaskState (a state's string value is accepted too), or None."""
    if isinstance(state, TaskState):
        return state
    if not isinstance(state, str):
        return None
    try:
        return TaskState(state)
    except ValueError:
        return None
