"""What Asynq's processor and recoverer decide in Go, above the scripts: the implementations' side.

When a handler returns, Asynq's processor picks the operation that ends the task; its recoverer
ends every task whose lease expired as a failure. Both decisions are written here once, for
every implementation of the key protocol — the Redis broker (``broker.core.Broker``), the
Go-backed ``AsynqGoBroker`` (Asynq's driver runs single operations, not these loops), the
simulation engine and the stateful machine's workers. The reference model decides on its own
(``ReferenceModel.finishing``), so the machine catches a bug here as a disagreement.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any, Protocol

from model.endings import LEASE_EXPIRED, Ending, Finish
from model.errors import KeysimError, ScriptError, TaskNotFoundError
from model.message import TaskMessage
from model.policy import Policy


class Processing(Protocol):
    """What ending a task needs of an implementation: its clock, its policy and (looked up by
    name, see :class:`~model.endings.Finish`) the :class:`~model.api.KeyProtocol` operations."""

    @property
    def now_s(self) -> int: ...
    @property
    def policy(self) -> Policy: ...


def retries_exhausted(msg: TaskMessage) -> bool:
    """Asynq's retry limit: a failing task that has been retried ``retry`` times is archived.

    >>> retries_exhausted(TaskMessage(type="t", payload=b"", id="a", queue="q", retry=1, retried=1))
    True
    """
    return msg.retried >= msg.retry


def success_operation(ending: Ending, retention: int) -> str | None:
    """The operation that ends a run that succeeded (``mark_as_complete`` while the task has a
    ``retention``, else ``done``) or was revoked (``done``); None for any other ending. Only
    the retention decides, so a caller holding the task undecoded can ask.

    >>> success_operation(Ending.REVOKE, 30), success_operation(Ending.FAILURE, 0)
    ('done', None)
    """
    if ending is Ending.REVOKE or (ending is Ending.SUCCESS and retention <= 0):
        return "done"
    return "mark_as_complete" if ending is Ending.SUCCESS else None


def finishing(msg: TaskMessage, ending: Ending, error: str, now_s: int, policy: Policy
              ) -> Finish:
    """The call that ends the run of active task ``msg`` the way ``ending`` says, at ``now_s``.

    An uncounted failure of a task whose retries are used up is archived, like a counted one,
    as Asynq v0.25.0 and later do (v0.24.0 retries it, uncounted, whatever its count: see
    docs/findings.md, "Composites compared with Asynq's own components").

    >>> from model.policy import ASYNQ_POLICY
    >>> msg = TaskMessage(type="t", payload=b"", id="a", queue="q", retry=2, retention=30)
    >>> finishing(msg, Ending.SUCCESS, "", 0, ASYNQ_POLICY).operation
    'mark_as_complete'
    >>> finishing(msg, Ending.FAILURE, "boom", 0, ASYNQ_POLICY).operation
    'retry'
    """
    settled = success_operation(ending, msg.retention)
    if settled is not None:
        return Finish(settled, (msg,))
    if ending is Ending.ABORTED:
        return Finish("requeue", (msg,))
    if ending is Ending.SKIP_RETRY or retries_exhausted(msg):
        return Finish("archive", (msg, error))
    retry_at = now_s + policy.retry_delay_for(msg.id, msg.retried)
    return Finish("retry", (msg, retry_at, error),
                  {"is_failure": ending is not Ending.UNCOUNTED_FAILURE})


def finish(impl: Processing, msg: TaskMessage, ending: Ending, error: str) -> str:
    """End active task ``msg`` on ``impl`` as :func:`finishing` decides; return the operation's
    name. Its errors propagate."""
    call = finishing(msg, ending, error, impl.now_s, impl.policy)
    getattr(impl, call.operation)(*call.args, **call.kwargs)
    return call.operation


def recover_expired(impl: Processing, expired: Iterable[TaskMessage]) -> int:
    """Asynq's recoverer: end each lease-expired message on ``impl`` as a failure with
    :data:`~model.endings.LEASE_EXPIRED`; return how many moved. A task no longer active (NOT
    FOUND) or a script failing part-way is skipped, as Asynq's recoverer logs and moves on."""
    moved = 0
    for msg in expired:
        try:
            finish(impl, msg, Ending.FAILURE, LEASE_EXPIRED)
        except (TaskNotFoundError, ScriptError):
            continue
        moved += 1
    return moved


#: The type of the task :func:`aggregate_groups` enqueues for a set (the aggregator's handler).
AGGREGATED_TYPE = "aggregated"


def aggregated_task(queue: str, task_id: str, payloads: Iterable[bytes | None]) -> TaskMessage:
    """The task the aggregator's handler makes of a set, as Asynq's ``Client.Enqueue`` writes
    it with no option: type :data:`AGGREGATED_TYPE`, the members' payloads joined by ``|``
    (None when that is empty: Go's proto3 encoding drops an empty payload), the default
    retry limit (25) and timeout (1800 s).

    >>> aggregated_task("q", "a1", [b"x", None, b"y"]).payload
    b'x||y'
    """
    joined = b"|".join(p or b"" for p in payloads)
    return TaskMessage(type=AGGREGATED_TYPE, payload=joined or None, id=task_id, queue=queue)


def aggregate_groups(impl: Processing, queue: str, groups: Iterable[str],
                     set_ids: dict[str, str], task_ids: dict[str, str]
                     ) -> list[tuple[str, list[bytes]]]:
    """Asynq's aggregator, one pass over ``queue``'s ``groups`` (as its ``groups`` set lists
    them): check each group (staging a set named ``set_ids[group]``); for a staged set read
    it, enqueue :func:`aggregated_task` (id ``task_ids[group]``) and delete the set. A step
    that fails is logged by Asynq and the group skipped: here it is skipped. Returns (group,
    member payloads) per set read."""
    seen: list[tuple[str, list[bytes]]] = []
    ops: Any = impl
    for group in groups:
        try:
            set_id = ops.aggregation_check(queue, group, set_ids[group])
            if set_id is None:
                continue
            msgs, _deadline = ops.read_aggregation_set(queue, group, set_id)
            payloads = [m.payload or b"" for m in msgs]
            seen.append((group, payloads))
            ops.enqueue(aggregated_task(queue, task_ids[group], payloads))
        except KeysimError:
            continue
        with contextlib.suppress(KeysimError):  # Asynq logs a failed delete and goes on
            ops.delete_aggregation_set(queue, group, set_id)
    return seen


__all__ = ["AGGREGATED_TYPE", "Processing", "aggregate_groups", "aggregated_task", "finish",
           "finishing", "recover_expired", "retries_exhausted", "success_operation"]
