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

from broker.base import BrokerBase, queue_pattern, text
from broker.scripting import Arg
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
        set), TaskActiveError.
        """
        task_keys = self._task_keys(queue, task_id)
        self._require_queue(queue)
        self.call("delete_task", task_keys,
                  [task_id, keys.group_prefix(queue), self.now_ms])

    def archive_task(self, queue: str, task_id: str) -> None:
        """T29: archive a pending, scheduled, retry, completed or grouped task; trim the archive.

        Raises TaskNotFoundError, TaskActiveError, AlreadyInStateError (already archived).
        """
        task_keys = self._task_keys(queue, task_id)
        self._require_queue(queue)
        self.call("archive_task", task_keys,
                  [task_id, keys.group_prefix(queue), self.now_ms, *self._trim_args(queue)])

    def run_task(self, queue: str, task_id: str) -> None:
        """T30: make a scheduled, retry, archived, completed or grouped task pending.

        Raises TaskNotFoundError, TaskActiveError, AlreadyInStateError (already pending).
        """
        task_keys = self._task_keys(queue, task_id)
        self._require_queue(queue)
        self.call("run_task", task_keys, [task_id, keys.group_prefix(queue)])

    # --- bulk (T31–T38) -----------------------------------------------------------------------
    def delete_all_tasks(self, queue: str, state: TaskState, group: str | None = None) -> int:
        """T36–T38: delete every task in ``state`` (of ``group`` for AGGREGATING); return how many.

        >>> import fakeredis
        >>> from broker import Broker
        >>> Broker(fakeredis.FakeRedis()).delete_all_tasks("q", TaskState.ACTIVE)
        Traceback (most recent call last):
        ...
        ValueError: state 'active' is not accepted by delete_all_tasks; expected one of: \
pending, scheduled, retry, archived, completed, aggregating
        """
        state, source, name = self._bulk_source("delete_all", queue, state, group)
        reply = self.call("delete_all", [source, keys.groups(queue)],
                          [state.value, keys.task_prefix(queue), self.now_ms, name])
        return int(reply[0])

    def archive_all_tasks(self, queue: str, state: TaskState, group: str | None = None) -> int:
        """T33–T35: archive every pending, scheduled, retry or grouped task; trim; return how many."""
        state, source, name = self._bulk_source("archive_all", queue, state, group)
        reply = self.call("archive_all", [source, keys.archived(queue), keys.groups(queue)],
                          [state.value, keys.task_prefix(queue), self.now_ms,
                           *self._trim_args(queue)[:3], name])
        return int(reply[0])

    def run_all_tasks(self, queue: str, state: TaskState, group: str | None = None) -> int:
        """T31–T32: make every scheduled, retry, archived or grouped task pending; return how many."""
        state, source, name = self._bulk_source("run_all", queue, state, group)
        reply = self.call("run_all", [source, keys.pending(queue), keys.groups(queue)],
                          [state.value, keys.task_prefix(queue), name])
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
        fixed = [keys.pending(queue), keys.active(queue), keys.scheduled(queue), keys.retry(queue),
                 keys.archived(queue), keys.lease(queue), keys.completed(queue), keys.groups(queue),
                 keys.aggregation_sets(queue)]
        found = [] if self.quirk(Quirk.REMOVE_QUEUE_LEAVES_KEYS) else self._scan_queue(queue, exclude=fixed)
        self.call("remove_queue", fixed + found,
                  [int(force), keys.task_prefix(queue), keys.group_prefix(queue),
                   keys.queue_prefix(queue)])
        self.client.srem(keys.ALL_QUEUES, queue)

    # --- helpers ------------------------------------------------------------------------------
    def _require_queue(self, queue: str) -> None:
        """Asynq's inspector (checkQueueExists) refuses a queue missing from asynq:queues."""
        if self.quirk(Quirk.INSPECTOR_REQUIRES_QUEUE) and not self.client.sismember(
                keys.ALL_QUEUES, queue):
            raise QueueNotFoundError(f"queue {queue!r} is not in {keys.ALL_QUEUES}")

    @staticmethod
    def _task_keys(queue: str, task_id: str) -> list[str]:
        """KEYS of the per-task scripts: the hash, every state index but active, and groups."""
        validation.check_queue(queue)
        validation.check_task_id(task_id)
        return [keys.task(queue, task_id), keys.pending(queue), keys.scheduled(queue),
                keys.retry(queue), keys.archived(queue), keys.completed(queue), keys.groups(queue)]

    def _trim_args(self, queue: str) -> list[Arg]:
        """now_s, the archive cutoff, the archive capacity and the task-hash prefix."""
        return [self.now_s, self.now_s - self.policy.archive_cutoff, self.policy.archive_capacity,
                keys.task_prefix(queue)]

    def _bulk_source(
        self, kind: str, queue: str, state: object, group: str | None
    ) -> tuple[TaskState, str, str]:
        """Validate a bulk call; return the state, its source index key and the group name."""
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
            self._require_queue(queue)
            return parsed, keys.group(queue, group), group
        if group is not None:
            raise ValueError(f"group must be None unless state is 'aggregating', got {group!r}")
        self._require_queue(queue)
        return parsed, keys.state_index(queue, parsed), ""

    def _scan_queue(self, queue: str, exclude: list[str]) -> list[str]:
        """Every key of ``queue`` not in ``exclude``, by SCAN (never KEYS), without repeats."""
        pattern = queue_pattern(queue)
        skip = set(exclude)
        found = (text(k) for k in self.client.scan_iter(match=pattern, count=1000))
        return [k for k in dict.fromkeys(found) if k not in skip]


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
