"""How a worker's run of a task ends, and the call that ends it: words, not decisions.

Which operation follows which ending is decided twice, on purpose: by the reference model
(:meth:`model.reference.ReferenceModel.finishing`, the specification) and by the
implementations (``broker.processor``, what Asynq's processor and recoverer do in Go). The
stateful machine compares the two decisions, so neither may borrow the other's; only the
vocabulary below is shared.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any, NamedTuple

#: The error a lease-expired task is retried or archived with (Asynq's ErrLeaseExpired).
LEASE_EXPIRED = "asynq: task lease expired"


class Ending(Enum):
    """How a handler's run of a task ended, as Asynq's processor sees it."""

    #: The handler returned no error.
    SUCCESS = "success"
    #: The handler returned ``RevokeTask``: the task is dropped as done, whatever its retention.
    REVOKE = "revoke"
    #: The handler returned an error that counts as a failure.
    FAILURE = "failure"
    #: The handler returned an error its ``IsFailure`` does not count (the retry is not counted).
    UNCOUNTED_FAILURE = "uncounted_failure"
    #: The handler returned an error wrapping ``SkipRetry``: no retry, whatever the count.
    SKIP_RETRY = "skip_retry"
    #: The server shut down before the handler returned: the task goes back to pending.
    ABORTED = "aborted"


class Finish(NamedTuple):
    """The :class:`~model.api.KeyProtocol` call that ends a task: ``operation(*args, **kwargs)``.

    >>> Finish("archive", ("msg", "boom"))
    Finish(operation='archive', args=('msg', 'boom'), kwargs={})
    """

    operation: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any] = {}


__all__ = ["LEASE_EXPIRED", "Ending", "Finish"]
