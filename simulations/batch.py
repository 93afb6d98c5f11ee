"""Pipelining independent broker calls: one round trip for many script calls.

:class:`Batch` runs the real :class:`broker.Broker` methods (so keys, arguments and validation
are exactly the broker's), but against a deferred twin whose ``call`` queues the script on a
pipeline instead of running it; :meth:`Batch.flush` executes the pipeline and returns, per
submitted operation, its status (``"ok"`` or the error's name) and the script's reply values.
Only operations whose Python side does not depend on the reply may be submitted (enqueue
family, dequeue, done, mark_as_complete, retry, archive, extend_lease); their replies are read
from the flush result.

>>> import fakeredis
>>> from broker import Broker
>>> from model import TaskMessage
>>> b = Broker(fakeredis.FakeRedis())
>>> batch = Batch(b)
>>> batch.submit("e1", lambda d: d.enqueue(TaskMessage(type="t", payload=b"", id="a", queue="q")))
>>> batch.submit("e2", lambda d: d.enqueue(TaskMessage(type="t", payload=b"", id="a", queue="q")))
>>> batch.submit("d", lambda d: d.dequeue("q"))
>>> [(r.tag, r.status) for r in batch.flush()]
[('e1', 'ok'), ('e2', 'TaskIdConflictError'), ('d', 'ok')]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from broker.base import text
from broker.core import Broker
from broker.scripting import Arg
from model import keys
from model.errors import ERROR_FOR
from model.message import TaskMessage
from model.transitions import Outcome

# What the deferred call hands back to the broker method so that it returns without parsing
# a real reply (the real reply is read after the flush).
_PLACEHOLDER: dict[str, list[Any]] = {"extend_lease": [0]}


@dataclass
class Result:
    """One submitted operation's outcome after the flush."""

    tag: object
    status: str
    values: list[Any]

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def message(self, broker: Broker) -> TaskMessage | None:
        """A dequeue's task (None when the queue was empty or paused)."""
        if not self.ok or not self.values or self.values[0] is None:
            return None
        return broker.decode(self.values[0])


class _Deferred(Broker):
    """A broker whose script calls (and queue registration) go onto a pipeline."""

    def __init__(self, parent: Broker) -> None:
        super().__init__(parent.client, parent.variant, parent.policy, parent.clock)
        self._run = parent._run  # share the registered scripts
        self.pipe: Any = parent.client.pipeline(transaction=False)
        self.calls: list[int] = []

    def call(self, script: str, keys_: Sequence[str], args: Sequence[Arg] = ()) -> list[Any]:
        self._run.queue_on(self.pipe, script, keys_, args)
        self.calls.append(len(self.pipe.command_stack) - 1)
        return list(_PLACEHOLDER.get(script, []))

    def register(self, queue: str) -> None:
        self.pipe.sadd(keys.ALL_QUEUES, queue)


class Batch:
    """Collects broker operations and runs them in one pipeline."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._deferred = _Deferred(broker)
        self._ops: list[tuple[object, int]] = []
        self.script_calls = 0

    def __len__(self) -> int:
        return len(self._ops)

    def submit(self, tag: object, op: Callable[[Broker], object]) -> None:
        """Queue ``op(deferred_broker)``; its last script call is the one whose reply counts."""
        before = len(self._deferred.calls)
        op(self._deferred)
        if len(self._deferred.calls) == before:
            raise ValueError(f"operation {tag!r} made no script call")
        self._ops.append((tag, self._deferred.calls[-1]))

    def flush(self) -> list[Result]:
        """Run everything submitted, in order; return one :class:`Result` per operation."""
        if not self._ops:
            return []
        pipe = self._deferred.pipe
        replies = pipe.execute(raise_on_error=False)
        self.script_calls += len(self._deferred.calls)
        results = [_result(tag, replies[index]) for tag, index in self._ops]
        self._ops.clear()
        self._deferred.calls.clear()
        return results


def _result(tag: object, reply: Any) -> Result:
    if isinstance(reply, redis.ResponseError):
        kind = "OOMError" if "OOM" in str(reply) or "maxmemory" in str(reply) else "ScriptError"
        return Result(tag, kind, [str(reply)])
    if isinstance(reply, Exception):
        return Result(tag, type(reply).__name__, [str(reply)])
    status = text(reply[0])
    if status == "OK":
        return Result(tag, "ok", list(reply[1:]))
    return Result(tag, ERROR_FOR[Outcome(status.lower())].__name__, list(reply[1:]))
