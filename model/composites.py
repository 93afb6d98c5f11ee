"""Asynq's server components as data: atomic operations plus the local state kept between them.

Every script Asynq runs is atomic; its races live *between* the scripts of one component, in
what the component remembers meanwhile. Each component here is a frozen dataclass whose
fields are exactly that local state, with two pure methods:

* :meth:`request` — the next atomic operation (a :class:`Request`), or None for a step that
  touches no key (a worker that crashes, a syncer dropping a request past its deadline);
* :meth:`after` — the component once that operation answered (an :class:`Answer`).

Nothing here runs anything: the reference model (:func:`perform_on_model`, used by
:mod:`model.explore_procs`) and the stateful machine (``harness.processes``, model and broker
in lockstep) execute the same requests in the same order, so the model still predicts the
exact keyspace after every atomic step.

The components, one per Asynq goroutine (``recoverer.go``, ``forwarder.go``, ``janitor.go``,
``aggregator.go``, ``processor.go``, ``syncer.go``):

* :class:`Recoverer` — reclaim stale aggregation sets, drop expired leases whose hash is gone
  (reference only), *list* the expired leases, then retry or archive each listed message. The
  list is its local state: by the time it acts on an entry, the entry's worker may have
  finished it (refused: not found) or renewed its lease (the recoverer wins anyway; the
  worker's late report is then refused: a duplicate run, never a loss);
* :class:`Forwarder` — batches of due scheduled, then retry, tasks until one comes back short;
* :class:`Janitor` — batches of expired completed tasks, then of archived tasks past the
  cutoff (not under Asynq's ``lazy_cutoff``);
* :class:`Aggregator` — check a group (stages a set: its id is local state), read the set
  (the messages are local state), enqueue the aggregated task, delete the set;
* :class:`Worker` — dequeue, hold the message (heartbeats renew its lease), then end it;
  a crash forgets it, a report that cannot reach Redis goes to the syncer;
* :class:`Syncer` — the queue of reports that failed, retried later until their deadline
  (the lease's end), as Asynq's syncer does.

A :class:`Process` is one server: one of each. Which process advances which component, and
when, is the scheduler's choice (Hypothesis in the machine, every order in the explorer).

>>> from model.reference import ReferenceModel
>>> from model.message import TaskMessage
>>> model = ReferenceModel()
>>> model.enqueue(TaskMessage(type="t", payload=b"", id="t1", queue="q"))
>>> worker = Worker("q")
>>> worker = worker.after(perform_on_model(model, worker.request(FINISHES[0])))
>>> worker.held.id if worker.held else None
't1'
>>> worker = worker.after(perform_on_model(model, worker.request("succeed")))
>>> worker.held is None, model.tasks("q")
(True, {})
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from model.endings import LEASE_EXPIRED, Ending, Finish
from model.errors import KeysimError, ScriptError
from model.message import TaskMessage
from model.policy import Policy
from model.states import TaskState

#: The pseudo-operation of a request that ends a task: ``args`` are (msg, ending, error).
#: Which script ends it (done, retry, archive, ...) each implementation decides on its own:
#: the model by :meth:`ReferenceModel.finishing`, an implementation by
#: ``broker.processor.finishing`` — the machine compares the two decisions.
FINISH = "finish"
#: The pseudo-operation of a report that cannot reach Redis: decided, not sent (the worker
#: hands it to its process's syncer).
DECIDE = "decide"
#: The pseudo-operation of a syncer retrying a report: ``args`` are a decided :class:`Finish`.
SEND = "send"

#: Quirk flags (``broker.variants.Quirk`` values) that change a component's steps.
RECOVER_SKIPS_MISSING_HASHES = "recover_skips_missing_hashes"
LAZY_CUTOFF = "lazy_cutoff"

#: A worker's choices while it holds a task: the endings it reports, then the steps that do
#: not end it. ``lost``: the report (success) cannot reach Redis and goes to the syncer.
ENDINGS: Mapping[str, Ending] = {
    "succeed": Ending.SUCCESS, "fail": Ending.FAILURE,
    "fail_uncounted": Ending.UNCOUNTED_FAILURE, "skip_retry": Ending.SKIP_RETRY,
    "requeue": Ending.ABORTED}
FINISHES: tuple[str, ...] = (*ENDINGS, "heartbeat", "crash", "lost")


@dataclass(frozen=True)
class Request:
    """One atomic operation a component asks for: ``operation(*args, **kwargs)`` of
    :class:`~model.api.KeyProtocol`, the atomic steps of :class:`~model.reference.ReferenceModel`
    (``forward_batch`` …), or :data:`FINISH` / :data:`DECIDE` / :data:`SEND`."""

    operation: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()

    def __repr__(self) -> str:
        shown = [f"msg({a.id})" if isinstance(a, TaskMessage) else
                 a.value if isinstance(a, (TaskState, Ending)) else
                 f"{a.operation}(msg({a.args[0].id}))" if isinstance(a, Finish) else repr(a)
                 for a in self.args]
        return f"{self.operation}({', '.join(shown)})"


@dataclass(frozen=True)
class Answer:
    """What an atomic operation answered: ``outcome`` "ok" (with its ``value``) or the refusal's
    outcome value (``not_found``, ``script_error`` …)."""

    outcome: str
    value: Any = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


#: The answer of a step that touched no key.
LOCAL = Answer("local")


@dataclass(frozen=True)
class Context:
    """What a component reads besides its own state: the time, the policy, the design's
    quirk flags."""

    now_s: int
    policy: Policy
    flags: frozenset[str] = frozenset()


class Component(Protocol):
    """A server component: its local state and its next atomic step."""

    kind: str

    @property
    def idle(self) -> bool:
        """True between two rounds (nothing remembered)."""

    def runnable(self, ctx: Context) -> bool:
        """Whether the component has a step to take now."""

    def request(self, ctx: Context, choice: str = "") -> Request | None:
        """The next atomic operation; None for a step that touches no key."""

    def after(self, answer: Answer, ctx: Context | None = None) -> Component:
        """The component once its step answered ``answer``."""


@dataclass(frozen=True)
class Recoverer:
    """Asynq's recoverer: ``phase`` is reclaim → drop → list → each; ``listed`` the messages of
    the expired leases it listed and has not acted on yet.

    Asynq's recoverer runs the lease recovery, then the set reclaim, at every tick: as an
    endless loop that is this cycle, begun at the reclaim (so a stale set is one step away)."""

    queue: str
    phase: str = "reclaim"
    listed: tuple[TaskMessage, ...] = ()
    kind = "recoverer"

    @property
    def idle(self) -> bool:
        return self.phase == "reclaim"

    def runnable(self, ctx: Context) -> bool:
        return True

    def request(self, ctx: Context, choice: str = "") -> Request | None:
        cutoff = ctx.now_s - ctx.policy.recover_skew
        phase = self.phase
        if phase == "drop" and RECOVER_SKIPS_MISSING_HASHES in ctx.flags:
            phase = "list"
        if phase == "drop":
            return Request("drop_dangling_leases", (self.queue, cutoff))
        if phase == "list":
            return Request("list_lease_expired", (self.queue, cutoff))
        if phase == "each":
            return Request(FINISH, (self.listed[0], Ending.FAILURE, LEASE_EXPIRED))
        return Request("reclaim_stale_aggregation_sets", (self.queue,))

    def after(self, answer: Answer, ctx: Context | None = None) -> Recoverer:
        if self.phase == "reclaim":
            return replace(self, phase="drop")
        if self.phase == "drop":
            return replace(self, phase="list")
        if self.phase == "list":
            listed = tuple(answer.value) if answer.ok else ()
            return replace(self, phase="each" if listed else "reclaim", listed=listed)
        rest = self.listed[1:]
        return replace(self, phase="each" if rest else "reclaim", listed=rest)


@dataclass(frozen=True)
class Forwarder:
    """Asynq's forwarder: batches from ``source`` (scheduled, then retry) until one comes back
    short; ``midway`` after a full batch (the next one may find more)."""

    queue: str
    source: TaskState = TaskState.SCHEDULED
    midway: bool = False
    kind = "forwarder"

    @property
    def idle(self) -> bool:
        return self.source is TaskState.SCHEDULED and not self.midway

    def runnable(self, ctx: Context) -> bool:
        return True

    def request(self, ctx: Context, choice: str = "") -> Request | None:
        return Request("forward_batch", (self.queue, self.source))

    def after(self, answer: Answer, ctx: Context | None = None) -> Forwarder:
        taken = answer.value[0] if answer.ok else 0
        if ctx is not None and taken >= ctx.policy.forward_batch:
            return replace(self, midway=True)
        return replace(self, midway=False, source=TaskState.RETRY
                       if self.source is TaskState.SCHEDULED else TaskState.SCHEDULED)


@dataclass(frozen=True)
class Janitor:
    """Asynq's janitor: batches of expired completed tasks, then (reference) of archived tasks
    past the cutoff, each until one comes back short."""

    queue: str
    index: TaskState = TaskState.COMPLETED
    kind = "janitor"

    @property
    def idle(self) -> bool:
        return self.index is TaskState.COMPLETED

    def runnable(self, ctx: Context) -> bool:
        return True

    def request(self, ctx: Context, choice: str = "") -> Request | None:
        if self.index is TaskState.COMPLETED:
            return Request("delete_expired_completed_batch", (self.queue,))
        return Request("delete_expired_archived_batch", (self.queue,))

    def after(self, answer: Answer, ctx: Context | None = None) -> Janitor:
        deleted = int(answer.value) if answer.ok else 0
        if ctx is not None and deleted >= ctx.policy.janitor_batch_size:
            return self
        if self.index is TaskState.COMPLETED and (ctx is None or LAZY_CUTOFF not in ctx.flags):
            return replace(self, index=TaskState.ARCHIVED)
        return replace(self, index=TaskState.COMPLETED)


def set_id_for(process: int, group: str) -> str:
    """The aggregation set id of ``process``'s aggregator for ``group``: one id per process is
    enough (a round deletes its set, or the recoverer reclaimed it, before the next round
    stages another), and a fixed id keeps runs replayable (Asynq draws a uuid4).

    >>> set_id_for(0, "g0") != set_id_for(1, "g0")
    True
    """
    return str(uuid.UUID(int=(process + 1) << 8 | sum(map(ord, group)) % 256, version=4))


@dataclass(frozen=True)
class Aggregator:
    """Asynq's aggregator for one queue: ``phase`` check → read → enqueue → delete over the
    groups in turn (``group``); ``staged`` is the set id its check created, ``read`` the
    messages it read from that set; ``made`` counts the aggregated tasks it enqueued (their
    ids: ``agg<process>.<n>``)."""

    queue: str
    groups: tuple[str, ...]
    process: int = 0
    group: int = 0
    phase: str = "check"
    read: tuple[TaskMessage, ...] = ()
    made: int = 0
    kind = "aggregator"

    @property
    def idle(self) -> bool:
        return self.phase == "check"

    def runnable(self, ctx: Context) -> bool:
        return bool(self.groups)

    @property
    def set_id(self) -> str:
        return set_id_for(self.process, self.groups[self.group])

    def aggregated(self) -> TaskMessage:
        """The task the aggregation of the set it read enqueues."""
        return TaskMessage(type="aggregated", payload=b"agg", id=f"agg{self.process}.{self.made}",
                           queue=self.queue, retry=0)

    def request(self, ctx: Context, choice: str = "") -> Request | None:
        group = self.groups[self.group]
        if self.phase == "check":
            return Request("aggregation_check", (self.queue, group, self.set_id))
        if self.phase == "read":
            return Request("read_aggregation_set", (self.queue, group, self.set_id))
        if self.phase == "enqueue":
            return Request("enqueue", (self.aggregated(),))
        return Request("delete_aggregation_set", (self.queue, group, self.set_id))

    def after(self, answer: Answer, ctx: Context | None = None) -> Aggregator:
        nxt = (self.group + 1) % len(self.groups)
        if self.phase == "check":
            staged = answer.ok and answer.value is not None
            return replace(self, phase="read") if staged else replace(self, group=nxt)
        if self.phase == "read":
            if not answer.ok:  # reclaimed meanwhile: Asynq logs it and moves on
                return replace(self, phase="check", group=nxt, read=())
            msgs = tuple(answer.value[0])
            return replace(self, phase="enqueue" if msgs else "delete", read=msgs)
        if self.phase == "enqueue":
            return replace(self, phase="delete", made=self.made + 1)
        return replace(self, phase="check", group=nxt, read=())


@dataclass(frozen=True)
class Worker:
    """One of Asynq's processor workers: ``held`` is the message it dequeued and runs, until
    it reports how the run ended (the choice of each step, :data:`FINISHES`); ``lease_until``
    the lease's end it last set (its reports' deadline, as Asynq's processor passes it)."""

    queue: str
    held: TaskMessage | None = None
    lease_until: int = 0
    kind = "worker"

    @property
    def idle(self) -> bool:
        return self.held is None

    def runnable(self, ctx: Context) -> bool:
        return True

    def request(self, ctx: Context, choice: str = "") -> Request | None:
        if self.held is None:
            return Request("dequeue", (self.queue,))
        if choice == "heartbeat":
            return Request("extend_lease", (self.queue, self.held.id))
        if choice == "crash":
            return None
        if choice == "lost":
            return Request(DECIDE, (self.held, Ending.SUCCESS, ""))
        return Request(FINISH, (self.held, ENDINGS.get(choice, Ending.SUCCESS), "boom"))

    def after(self, answer: Answer, ctx: Context | None = None) -> Worker:
        now = ctx.now_s if ctx is not None else 0
        lease = ctx.policy.lease_duration if ctx is not None else 0
        if self.held is None:
            got = answer.value if answer.ok and isinstance(answer.value, TaskMessage) else None
            return replace(self, held=got, lease_until=now + lease if got else 0)
        if answer.ok and isinstance(answer.value, int):  # a heartbeat: still held
            return replace(self, lease_until=now + lease) if answer.value else self
        return replace(self, held=None, lease_until=0)


@dataclass(frozen=True)
class SyncItem:
    """A report that could not reach Redis: the decided call and its deadline (Unix s)."""

    call: Finish
    deadline: int

    def __hash__(self) -> int:
        return hash((self.call.operation, self.call.args, tuple(self.call.kwargs.items()),
                     self.deadline))


@dataclass(frozen=True)
class Syncer:
    """Asynq's syncer: ``queue`` holds the reports that failed, retried in turn; one past its
    deadline is dropped (the lease ended: the recoverer owns the task now)."""

    queue: tuple[SyncItem, ...] = ()
    kind = "syncer"

    @property
    def idle(self) -> bool:
        return not self.queue

    def runnable(self, ctx: Context) -> bool:
        return bool(self.queue)

    def request(self, ctx: Context, choice: str = "") -> Request | None:
        head = self.queue[0]
        if ctx.now_s > head.deadline:
            return None
        return Request(SEND, (head.call,))

    def after(self, answer: Answer, ctx: Context | None = None) -> Syncer:
        head, rest = self.queue[0], self.queue[1:]
        if answer.outcome in ("ok", "local"):
            return replace(self, queue=rest)
        return replace(self, queue=(*rest, head))  # refused: again later, until its deadline

    def with_item(self, item: SyncItem) -> Syncer:
        return replace(self, queue=(*self.queue, item))


#: The component kinds of a process, in the order a :class:`Process` holds them.
KINDS: tuple[str, ...] = ("worker", "recoverer", "forwarder", "janitor", "aggregator", "syncer")


@dataclass(frozen=True)
class Process:
    """One Asynq server: one component of each kind (:data:`KINDS`), all on ``queue``."""

    index: int
    components: tuple[Any, ...] = field(default=())

    @staticmethod
    def start(index: int, queue: str, groups: tuple[str, ...]) -> Process:
        return Process(index, (Worker(queue), Recoverer(queue), Forwarder(queue),
                               Janitor(queue), Aggregator(queue, groups, index), Syncer()))

    def component(self, kind: str) -> Any:
        return self.components[KINDS.index(kind)]

    def with_component(self, kind: str, new: Any) -> Process:
        parts = list(self.components)
        parts[KINDS.index(kind)] = new
        return replace(self, components=tuple(parts))

    def advanced(self, kind: str, request: Request | None, answer: Answer,
                 ctx: Context) -> Process:
        """The process once its ``kind`` component's step (``request``) answered ``answer``:
        a report decided but not sent (:data:`DECIDE`) joins the syncer's queue."""
        done = self.with_component(kind, self.component(kind).after(answer, ctx))
        if request is not None and request.operation == DECIDE and answer.ok:
            worker = self.component("worker")
            item = SyncItem(answer.value, worker.lease_until)
            done = done.with_component("syncer", done.component("syncer").with_item(item))
        return done


#: (component step, outcome) pairs that only interleavings produce, with what each means: the
#: coverage ``keysim check --processes N`` demands (each ``--min-hits`` times).
Pair = tuple[str, str]
INTERLEAVINGS: Mapping[Pair, str] = {
    ("recoverer.finish", "ok"): "the recoverer retries or archives a task it listed",
    ("recoverer.finish", "held"):
        "the recoverer retries or archives a listed task a live worker still holds (its lease "
        "ran out, or was renewed after the list): the worker's report will be refused and the "
        "task runs again (a duplicate, never a loss)",
    ("recoverer.finish", "not_found"):
        "a task the recoverer listed was finished by its worker after the list: refused",
    ("worker.finish", "ok"): "a worker reports the end of its run",
    ("worker.finish", "not_found"):
        "a worker reports after the recoverer moved its task (done after the lease was lost)",
    ("aggregator.read", "ok"): "the aggregator reads the set its check staged",
    ("aggregator.read", "not_found"):
        "the recoverer reclaimed the aggregator's set between its check and its read",
    ("aggregator.delete", "ok"): "the aggregator deletes the set it read",
    ("aggregator.delete", "reclaimed"):
        "the recoverer reclaimed the aggregator's set between its read and its delete: the "
        "delete must leave the reclaimed tasks alone",
    ("syncer.send", "ok"): "the syncer delivers a report that could not reach Redis",
    ("syncer.drop", "expired"): "the syncer drops a report whose lease ended meanwhile",
    ("inspector.move_due", "forwarder_midway"):
        "an inspector moves a due task out of the index a forwarder is between two batches of",
}


def classify(kind: str, request: Request | None, answer: Answer, held: frozenset[str],
             set_gone: bool = False) -> Pair | None:
    """The interleaving-sensitive pair a component's step produced, if any. ``held``: the
    ids live workers other than this component hold; ``set_gone``: the set an aggregator's
    delete names was gone before it ran.

    >>> msg = TaskMessage(type="t", payload=b"", id="t1", queue="q")
    >>> classify("recoverer", Request(FINISH, (msg, Ending.FAILURE, "x")), Answer("ok"),
    ...          frozenset({"t1"}))
    ('recoverer.finish', 'held')
    """
    if request is None:
        return ("syncer.drop", "expired") if kind == "syncer" else None
    operation = request.operation
    if kind == "recoverer" and operation == FINISH:
        held_now = answer.ok and request.args[0].id in held
        return ("recoverer.finish", "held" if held_now else answer.outcome)
    if kind == "worker" and operation == FINISH:
        return ("worker.finish", answer.outcome)
    if kind == "aggregator" and operation == "read_aggregation_set":
        return ("aggregator.read", answer.outcome)
    if kind == "aggregator" and operation == "delete_aggregation_set" and answer.ok:
        return ("aggregator.delete", "reclaimed" if set_gone else "ok")
    if kind == "syncer" and operation == SEND:
        return ("syncer.send", answer.outcome)
    return None


class Performer(Protocol):
    """What executes a request: the reference model alone, or model and broker in lockstep."""

    def __call__(self, request: Request) -> Answer: ...


def perform_on_model(model: Any, request: Request | None) -> Answer:
    """Execute ``request`` on a :class:`~model.reference.ReferenceModel` (None: a local step).
    The model decides a :data:`FINISH` itself (:meth:`ReferenceModel.finishing`)."""
    if request is None:
        return LOCAL
    operation, args, kwargs = request.operation, request.args, dict(request.kwargs)
    if operation in (FINISH, DECIDE):
        call = model.finishing(*args)
        if operation == DECIDE:
            return Answer("ok", call)
        operation, args, kwargs = call.operation, call.args, dict(call.kwargs)
    elif operation == SEND:
        call = args[0]
        operation, args, kwargs = call.operation, call.args, dict(call.kwargs)
    try:
        value = getattr(model, operation)(*args, **kwargs)
    except ScriptError as err:
        return Answer("script_error", str(err).split(":")[0])
    except KeysimError as err:
        return Answer(err.outcome.value)
    return Answer("ok", value)


__all__ = [
    "DECIDE",
    "ENDINGS",
    "FINISH",
    "FINISHES",
    "INTERLEAVINGS",
    "KINDS",
    "LOCAL",
    "SEND",
    "Aggregator",
    "Answer",
    "Component",
    "Context",
    "Forwarder",
    "Janitor",
    "Process",
    "Recoverer",
    "Request",
    "SyncItem",
    "Syncer",
    "Worker",
    "classify",
    "perform_on_model",
    "set_id_for",
]
