"""Exceptions shared by the reference model and every broker, mirroring Asynq's error kinds.

Each carries the :class:`~model.transitions.Outcome` it stands for, so a test can compare the
model's answer with a broker's without caring which raised it.
"""

from __future__ import annotations

from model.transitions import Outcome


class KeysimError(Exception):
    """Base class: an operation refused to run; nothing was written."""

    outcome: Outcome = Outcome.OK


class TaskIdConflictError(KeysimError):
    """ErrTaskIdConflict: a task with this id already exists in the queue."""

    outcome = Outcome.CONFLICT


class DuplicateTaskError(KeysimError):
    """ErrDuplicateTask: the unique lock is held by another task."""

    outcome = Outcome.DUPLICATE


class TaskNotFoundError(KeysimError):
    """ErrTaskNotFound / "NOT FOUND": the task is not where the operation expects it."""

    outcome = Outcome.NOT_FOUND


class TaskActiveError(KeysimError):
    """The inspector refuses to touch an active task (or a force-removed queue with active tasks)."""

    outcome = Outcome.TASK_ACTIVE


class AlreadyInStateError(KeysimError):
    """The task (or queue) is already in the state the operation would move it to."""

    outcome = Outcome.ALREADY


class QueueNotEmptyError(KeysimError):
    """ErrQueueNotEmpty: a non-force RemoveQueue found tasks."""

    outcome = Outcome.QUEUE_NOT_EMPTY


class QueueNotFoundError(KeysimError):
    """ErrQueueNotFound: the queue is not in ``asynq:queues``."""

    outcome = Outcome.QUEUE_NOT_FOUND


class ScriptError(KeysimError):
    """A script failed part-way (an Asynq defect reproduced by a variant); writes may remain."""


#: Exception type for each refusing outcome.
ERROR_FOR: dict[Outcome, type[KeysimError]] = {
    cls.outcome: cls
    for cls in (TaskIdConflictError, DuplicateTaskError, TaskNotFoundError, TaskActiveError,
                AlreadyInStateError, QueueNotEmptyError, QueueNotFoundError)
}
