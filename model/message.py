"""The decoded form of Asynq's protobuf ``TaskMessage`` (spec §1.2), free of any codec."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class TaskMessage:
    """What Asynq stores in a task hash's ``msg`` field; the broker's codec encodes it.

    Times are Unix seconds; ``retention`` and ``timeout`` are seconds.

    >>> m = TaskMessage(type="email", payload=b"{}", id="t1", queue="default")
    >>> m.retried, m.retry
    (0, 25)
    >>> m.failed("boom", at=100).retried
    1
    """

    type: str
    payload: bytes | None
    id: str
    queue: str
    retry: int = 25
    retried: int = 0
    error_msg: str = ""
    last_failed_at: int = 0
    timeout: int = 1800
    deadline: int = 0
    unique_key: str = ""
    group_key: str = ""
    retention: int = 0
    completed_at: int = 0
    headers: tuple[tuple[str, str], ...] = field(default=())

    def failed(self, error: str, at: int, count: bool = True) -> TaskMessage:
        """The message after a failed attempt (Retry increments ``retried`` only when it counts)."""
        return replace(self, retried=self.retried + (1 if count else 0), error_msg=error,
                       last_failed_at=at)

    def archived(self, error: str, at: int) -> TaskMessage:
        """The message a server-side Archive writes: error recorded, ``retried`` unchanged."""
        return replace(self, error_msg=error, last_failed_at=at)

    def completed(self, at: int) -> TaskMessage:
        """The message MarkAsComplete writes."""
        return replace(self, completed_at=at)
