"""The recoverer's decision, shared by every implementation of :class:`~model.api.KeyProtocol`.

Asynq's recoverer does not run one script: it lists the tasks whose lease expired (T18), then
calls ``Archive`` (retries used up) or ``Retry`` (T19) for each, skipping a task another actor
moved meanwhile. The reference model, the Redis broker and the Go-backed broker all recover
with :func:`retry_or_archive_expired`, so the composite is written once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from model.errors import ScriptError, TaskNotFoundError
from model.message import TaskMessage
from model.policy import Policy

#: The error a lease-expired task is retried or archived with (Asynq's ErrLeaseExpired).
LEASE_EXPIRED = "asynq: task lease expired"


class Recoverable(Protocol):
    """The two :class:`~model.api.KeyProtocol` operations recovery needs."""

    def retry(self, msg: TaskMessage, retry_at: int, error: str, is_failure: bool = True) -> None:
        ...
    def archive(self, msg: TaskMessage, error: str) -> None: ...


def retry_or_archive_expired(impl: Recoverable, expired: Iterable[TaskMessage], now_s: int,
                             policy: Policy) -> int:
    """Archive each message whose retries are used up, retry the others after the policy's
    delay; return how many moved. A task no longer active (NOT FOUND) or a script failing
    part-way is skipped, as Asynq's recoverer logs and moves on.

    >>> from model.clock import VirtualClock
    >>> from model.policy import ASYNQ_POLICY
    >>> from model.reference import ReferenceModel
    >>> ref = ReferenceModel(ASYNQ_POLICY, VirtualClock())
    >>> ref.enqueue(TaskMessage(id="t1", type="email", payload=b"", queue="default", retry=0))
    >>> msg = ref.dequeue("default")
    >>> retry_or_archive_expired(ref, [msg], ref.now_s, ASYNQ_POLICY)
    1
    >>> ref.state_of("default", "t1")
    <TaskState.ARCHIVED: 'archived'>
    """
    moved = 0
    for msg in expired:
        try:
            if msg.retried >= msg.retry:
                impl.archive(msg, LEASE_EXPIRED)
            else:
                delay = policy.retry_delay_for(msg.id, msg.retried)
                impl.retry(msg, now_s + delay, LEASE_EXPIRED, True)
        except (TaskNotFoundError, ScriptError):
            continue
        moved += 1
    return moved


__all__ = ["LEASE_EXPIRED", "Recoverable", "retry_or_archive_expired"]
