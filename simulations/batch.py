"""Pipelining independent broker calls: one round trip for many script calls.

:class:`Batch` runs the real :class:`broker.Broker` methods (so keys, arguments and validation
are exactly the broker's), but against a deferred twin whose ``call`` queues the script on a
pipeline instead of running it; :meth:`Batch.flush` executes the pipeline and returns, per
submitted operation, its status (``"ok"`` or the error's name) and the script's reply values.
Only operations whose Python side does not depend on the reply may be submitted (enqueue
family, dequeue, done, mark_as_complete, retry, archive, extend_lease); their replies are read
from the flush result.

Speed (the engine's fast path; the plain path above stays, and a test checks both give the
same keyspace): on a real Redis the pipeline is a :class:`broker.wire.Wire` — hiredis packs
each command as it is queued, chunks are streamed while the engine keeps building, and replies
are parsed by hiredis and handed over one by one (:meth:`Batch.results`) — and the three calls of a plain
lifecycle have shortcuts (:meth:`Batch.enqueue_new` from a per-queue :class:`Template`,
:meth:`Batch.dequeue`, :meth:`Batch.done` of a :class:`Dequeued` that is never fully decoded)
queueing the very commands the broker methods would (the same :mod:`broker.calls` builders).

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

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import redis
from redis.cluster import RedisCluster

from broker import calls
from broker.base import text
from broker.cluster_wire import wire_for
from broker.codec import encode_message
from broker.core import Broker
from broker.proto.taskmessage_pb2 import TaskMessage as TaskMessagePB
from broker.scripting import Arg, full_source
from broker.wire import Wire, pack_command, wire_capable
from model import keys
from model.errors import ERROR_FOR
from model.message import TaskMessage
from model.transitions import Outcome
from model.validation import check_message, check_queue, check_task_id

# What the deferred call hands back to the broker method so that it returns without parsing
# a real reply (the real reply is read after the flush).
_PLACEHOLDER: dict[str, list[Any]] = {"extend_lease": [0]}


@dataclass(slots=True)
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

    def dequeued(self, broker: Broker | None = None) -> Dequeued | None:
        """A dequeue's task as :class:`Dequeued` (None when the queue was empty or paused);
        with ``broker``, its message is decoded right away (as :meth:`message` does)."""
        if not self.ok or not self.values or self.values[0] is None:
            return None
        raw = self.values[0]
        return Dequeued(raw, broker.decode(raw) if broker is not None else None)


class Template:
    """Messages that differ only in id and payload — one queue's arrivals — encoded from one
    protobuf: :meth:`encode` gives ``encode_message(replace(msg, id=..., payload=...))`` byte
    for byte, without building a :class:`TaskMessage` per task.

    >>> from dataclasses import replace
    >>> from broker.codec import encode_message
    >>> template = Template(TaskMessage(type="t", payload=None, id="x", queue="q", retry=3))
    >>> template.encode("a", b"p") == encode_message(replace(template.msg, id="a", payload=b"p"))
    True
    """

    def __init__(self, msg: TaskMessage) -> None:
        self.msg = check_message(msg)
        # The codec's fields and checks, with no payload (so each task's may stay absent).
        self._pb = TaskMessagePB.FromString(encode_message(replace(msg, payload=None)))

    def encode(self, task_id: str, payload: bytes | None) -> bytes:
        """The encoded message with ``task_id`` and ``payload`` (None = absent)."""
        # A fresh copy: a reused message would keep every assigned value in its arena (upb).
        pb = TaskMessagePB()
        pb.CopyFrom(self._pb)
        pb.id = task_id
        if payload is not None:  # the template has none: absent stays absent
            pb.payload = payload
        return bytes(pb.SerializeToString(deterministic=True))


class Dequeued:
    """A dequeued task: its ``msg`` bytes, the fields the simulator reads for every task (by a
    bare protobuf parse), and the :class:`TaskMessage` decoded by the broker's codec only when
    asked (:meth:`message`) — a task that just succeeds never needs it.

    >>> from broker.codec import encode_message
    >>> task = Dequeued(encode_message(TaskMessage(type="t", payload=b"", id="a", queue="q")))
    >>> task.id, task.queue, task.unique_key, task.retention
    ('a', 'q', '', 0)
    """

    __slots__ = ("_msg", "id", "queue", "raw", "retention", "unique_key")

    def __init__(self, raw: bytes, msg: TaskMessage | None = None) -> None:
        self.raw = raw
        self._msg = msg
        head: Any = msg if msg is not None else TaskMessagePB.FromString(raw)
        self.id: str = head.id
        self.queue: str = head.queue
        self.unique_key: str = head.unique_key
        self.retention: int = head.retention

    def message(self, broker: Broker) -> TaskMessage:
        """The full message (``broker.decode`` of the bytes, once)."""
        if self._msg is None:
            self._msg = broker.decode(self.raw)
        return self._msg


class _Deferred(Broker):
    """A broker whose script calls (and queue registration) go onto a pipeline."""

    def __init__(self, parent: Broker, wire: bool) -> None:
        super().__init__(parent.client, parent.variant, parent.policy, parent.clock)
        self._run = parent._run  # share the registered scripts
        # On a cluster client the wire is a ClusterWire: each command to its key's master.
        self.pipe: Any = (wire_for(parent.client) if wire
                          else parent.client.pipeline(transaction=False))
        self.queued = 0  # commands on the pipeline (scripts and SADDs)
        self.scripts = 0  # script calls among them
        self.last_call = -1  # index of the latest script call

    def call(self, script: str, keys_: Sequence[str], args: Sequence[Arg] = (), *,
             register: str | None = None) -> list[Any]:
        if register is not None:
            self.register(register)
        self._run.queue_on(self.pipe, script, keys_, args)
        self.queued_script()
        return list(_PLACEHOLDER.get(script, []))

    def queued_script(self) -> int:
        """Count a script call just put on the pipeline; return its index there."""
        self.last_call = self.queued
        self.queued += 1
        self.scripts += 1
        return self.last_call

    def reset(self) -> None:
        """The pipeline was sent: count afresh."""
        self.queued = self.scripts = 0
        self.last_call = -1

    def register(self, queue: str) -> None:
        self.pipe.sadd(keys.ALL_QUEUES, queue)
        self.queued += 1


class Batch:
    """Collects broker operations and runs them in one pipeline.

    ``wire``: send through :class:`Wire` (hiredis packing and parsing, no redis-py pipeline;
    on a cluster client a :class:`~broker.cluster_wire.ClusterWire`, one Wire per master);
    None (default) = whenever the client allows it (:func:`wire_capable`, or a cluster client).
    Both give the same replies, so the same keyspace.

    Besides :meth:`submit` (any broker method), the three calls of a plain lifecycle have
    shortcuts — :meth:`enqueue_new`, :meth:`dequeue`, :meth:`done` — that queue exactly the
    commands the broker method would (the same :mod:`broker.calls` builders; a test compares
    the keyspaces) with each queue validated once and no message decoded.
    """

    def __init__(self, broker: Broker, wire: bool | None = None) -> None:
        self.broker = broker
        if wire is None:
            client = broker.client
            wire = isinstance(client, RedisCluster) or wire_capable(client)
        self.wire = wire
        self._deferred = _Deferred(broker, wire)
        self._ops: list[tuple[object, int]] = []
        # Per validated queue, the SADD Broker.register sends before an enqueue, packed once.
        self._registers: dict[str, bytes] = {}
        self._sha: dict[str, str] = {}  # SHA1 of the scripts the shortcuts loaded
        pipe = self._deferred.pipe
        self._emit: Callable[[tuple[Arg, ...]], None] = (
            pipe.queue_command if wire else lambda command: pipe.execute_command(*command))
        self._emit_register: Callable[[str, bytes], None] = (
            (lambda _queue, packed: pipe.queue_packed(packed)) if isinstance(pipe, Wire)
            else lambda queue, _packed: pipe.sadd(keys.ALL_QUEUES, queue))
        self.script_calls = 0

    def __len__(self) -> int:
        return len(self._ops)

    def submit(self, tag: object, op: Callable[[Broker], object]) -> None:
        """Queue ``op(deferred_broker)``; its last script call is the one whose reply counts."""
        d = self._deferred
        before = d.scripts
        op(d)
        if d.scripts == before:
            raise ValueError(f"operation {tag!r} made no script call")
        self._ops.append((tag, d.last_call))

    def enqueue_new(self, tag: object, template: Template, task_id: str, payload: bytes | None
                    ) -> None:
        """``enqueue`` of ``replace(template.msg, id=task_id, payload=payload)``, without
        building that message."""
        check_task_id(task_id)
        queue = template.msg.queue
        register = self._checked(queue)
        encoded = template.encode(task_id, payload)
        d = self._deferred
        self._emit_register(queue, register)  # what d.register(queue) queues
        d.queued += 1
        self._script(tag, calls.enqueue(queue, task_id, encoded, d.clock.now_ns))

    def dequeue(self, tag: object, queue: str) -> None:
        """``submit(tag, lambda d: d.dequeue(queue))``, faster; read the task with
        :meth:`Result.dequeued`."""
        self._checked(queue)
        d = self._deferred
        self._script(tag, calls.dequeue(queue, d.clock.now_ns, d.policy))

    def done(self, tag: object, task: Dequeued) -> None:
        """``submit(tag, lambda d: d.done(msg))`` for the dequeued ``task``, faster."""
        self._checked(task.queue)
        d = self._deferred
        self._script(tag, calls.done(task, d.clock.now_ns, d.policy, d.variant))

    def _checked(self, queue: str) -> bytes:
        """Validate ``queue`` (once); return the packed SADD that registers it."""
        packed = self._registers.get(queue)
        if packed is None:
            check_queue(queue)
            packed = self._registers[queue] = pack_command(("SADD", keys.ALL_QUEUES, queue))
        return packed

    def _script(self, tag: object, call: calls.Call) -> None:
        """Queue ``EVALSHA <script> numkeys keys… args…``, as the broker's runner would, minus
        its lookups."""
        script, keys_, args = call
        sha = self._sha.get(script)
        if sha is None:
            sha = self._sha[script] = self._load(script)
        self._emit(("EVALSHA", sha, len(keys_), *keys_, *args))
        self._ops.append((tag, self._deferred.queued_script()))

    def _load(self, script: str) -> str:
        """Load ``script`` (idempotent) and return its SHA1, as ScriptRunner.queue_on does."""
        source = full_source(script, self.broker.variant)
        sha = str(self.broker.client.script_load(source))
        if sha != hashlib.sha1(source.encode()).hexdigest():
            raise RuntimeError(f"SCRIPT LOAD of {script!r} answered an unexpected SHA1 {sha!r}")
        return sha

    def flush(self) -> list[Result]:
        """Run everything submitted, in order; return one :class:`Result` per operation."""
        return list(self.results())

    def results(self) -> Iterator[Result]:
        """As :meth:`flush`, yielding each operation's :class:`Result` as soon as its reply
        has arrived (through :class:`Wire`; a redis-py pipeline answers all at once).
        Consume it fully before submitting more."""
        if not self._ops:
            return
        d = self._deferred
        ops, self._ops = self._ops, []
        self.script_calls += d.scripts
        d.reset()
        replies = d.pipe.replies() if self.wire else d.pipe.execute(raise_on_error=False)
        pending = iter(ops)
        tag, index = next(pending)
        # Every command has a reply; only each operation's (last) script call is reported.
        for position, reply in enumerate(replies):
            if position == index:
                yield _result(tag, reply)
                tag, index = next(pending, (None, -1))


def _result(tag: object, reply: Any) -> Result:
    if type(reply) is list and reply and reply[0] == b"OK":  # the common case, first
        return Result(tag, "ok", reply[1:])
    if isinstance(reply, redis.ResponseError):
        kind = "OOMError" if "OOM" in str(reply) or "maxmemory" in str(reply) else "ScriptError"
        return Result(tag, kind, [str(reply)])
    if isinstance(reply, Exception):
        return Result(tag, type(reply).__name__, [str(reply)])
    status = text(reply[0])
    if status == "OK":
        return Result(tag, "ok", list(reply[1:]))
    return Result(tag, ERROR_FOR[Outcome(status.lower())].__name__, list(reply[1:]))
