"""Every interleaving of the server processes' atomic steps, up to a depth, with partial-order
reduction: ``keysim explore --processes 2 --tasks 2 --depth D``.

The alphabet: each process's components (:mod:`model.composites`; a worker holding a task
chooses how it ends: success, failure, heartbeat, crash, or a report lost to its syncer), a
client enqueueing each task id, an inspector archiving or deleting each task id, and time
jumping past each of the policy's thresholds (:func:`model.explore.time_steps`). The search is
breadth first from an empty keyspace, so the first schedule found to a state (and to a
violation) is a shortest one; every reachable state is checked against I1–I14 (strict locks).

**Partial-order reduction (sleep sets).** Two steps commute when their key footprints are
disjoint (:func:`footprint`: the keys a step reads and writes, with ``t:*`` for task hashes a
step cannot name beforehand; two steps of one process never commute, they share its local
state; a time jump commutes with nothing). After exploring step *a* from a state, every later
sibling *b* that commutes with *a* carries *a* in its sleep set: the order *b a* is not
explored again, its end state being the one *a b* reached. A state met again with a sleep set
that is not a superset of the first is explored again for the steps it had slept
(the standard sleep-set-with-state-caching rule), so no interleaving's end state is missed.

**The abstract state** merges states as :func:`model.explore.abstract_state` does, plus each
process's local state with times relative to now (a lease end or report deadline already past
is just "past") and messages reduced to what a component branches on (id, retried, retention).

The counts: *states* distinct abstract states, *steps* executed, *slept* steps the reduction
skipped, *schedules* the step sequences the explored graph represents (each counted once per
path, merged states included) — every interleaving up to the depth is one of them or equal,
step for step, to one of them up to commuting steps.

>>> report = explore_processes(processes=1, tasks=1, depth=2)
>>> report.states > 1, report.violations
(True, [])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from functools import partial

from model.composites import (
    DECIDE,
    FINISH,
    KINDS,
    SEND,
    Answer,
    Component,
    Context,
    Process,
    Request,
    perform_on_model,
)
from model.explore import QUEUE, abstract_state, base_message, explore_policy, time_steps
from model.invariants import check_all
from model.message import TaskMessage
from model.policy import Policy
from model.reference import ReferenceModel
from model.states import TaskState

#: How a worker holding a task may go on, in the exploration.
WORKER_CHOICES = ("succeed", "fail", "heartbeat", "crash", "lost")
#: Components explored (the aggregator is left out: the alphabet adds no group).
EXPLORED_KINDS = tuple(k for k in KINDS if k != "aggregator")
#: Inspector operations on one task, in the alphabet.
INSPECTOR_OPS = ("archive_task", "delete_task")


@dataclass(frozen=True)
class Move:
    """One letter: a process's component step (``process``, ``kind``, ``choice``), a client or
    inspector call (``operation`` on ``task``) or a time jump (``seconds``)."""

    process: int = -1
    kind: str = ""
    choice: str = ""
    operation: str = ""
    task: str = ""
    seconds: int = 0

    @property
    def label(self) -> str:
        if self.seconds:
            return f"advance(+{self.seconds}s)"
        if self.operation:
            return f"{self.operation}({self.task})"
        return f"p{self.process}.{self.kind}" + (f":{self.choice}" if self.choice else "")

    def __repr__(self) -> str:
        return self.label


def moves(procs: tuple[Process, ...], ctx: Context, tasks: int) -> list[Move]:
    """Every move enabled with these processes at ``ctx``, in a fixed order."""
    out: list[Move] = []
    for proc in procs:
        for kind in EXPLORED_KINDS:
            part = proc.component(kind)
            if not part.runnable(ctx):
                continue
            if kind == "worker" and part.held is not None:
                out += [Move(proc.index, kind, choice) for choice in WORKER_CHOICES]
            else:
                out.append(Move(proc.index, kind))
    ids = [f"t{i}" for i in range(tasks)]
    out += [Move(operation="enqueue", task=t) for t in ids]
    out += [Move(operation=op, task=t) for op in INSPECTOR_OPS for t in ids]
    out += [Move(seconds=s) for s in time_steps(ctx.policy)]
    return out


def request_of(move: Move, procs: tuple[Process, ...], ctx: Context) -> Request | None:
    """The atomic operation ``move`` performs (None: a local step or a time jump)."""
    if move.seconds:
        return None
    if move.operation == "enqueue":
        return Request("enqueue", (base_message(move.task),))
    if move.operation:
        return Request(move.operation, (QUEUE, move.task))
    part: Component = procs[move.process].component(move.kind)
    return part.request(ctx, move.choice)


def execute(move: Move, procs: tuple[Process, ...], ctx: Context,
            perform: Callable[[Request | None], Answer], advance: Callable[[int], None]
            ) -> tuple[Process, ...]:
    """Run ``move`` (on whatever ``perform`` executes requests on); the processes after it."""
    if move.seconds:
        advance(move.seconds)
        return procs
    request = request_of(move, procs, ctx)
    answer = perform(request)
    if move.operation:
        return procs
    changed = list(procs)
    changed[move.process] = procs[move.process].advanced(move.kind, request, answer, ctx)
    return tuple(changed)


# --- which steps commute -------------------------------------------------------------------------
_ANY_TASK = "t:*"
_EVERY_KEY = "*"


def footprint(move: Move, procs: tuple[Process, ...], ctx: Context, model: ReferenceModel
              ) -> tuple[frozenset[str], frozenset[str]]:
    """The keys ``move`` reads and writes at this state (index keys by name, ``t:<id>`` task
    hashes, ``t:*`` any task hash, ``p<n>`` the local state of process n, ``*`` all). Total
    counters are left out: increments commute."""
    if move.seconds:
        return frozenset(), frozenset({_EVERY_KEY})
    if move.operation:
        t = f"t:{move.task}"
        store = model.store(QUEUE)
        h = store.hashes.get(move.task)
        if move.operation == "enqueue":
            return (frozenset({t}), frozenset({"queues"})) if h is not None else \
                (frozenset(), frozenset({"pending", t, "locks", "queues"}))
        if h is None or h.get("state") == TaskState.ACTIVE.value:
            return frozenset({t}), frozenset()  # refused: it only looked
        trims = {_ANY_TASK} if move.operation == "archive_task" else set()
        return frozenset(), frozenset({t, *trims, "pending", "scheduled", "retry", "archived",
                                       "completed", "groups", "g:*", "locks"})
    local = frozenset({f"p{move.process}"})
    request = request_of(move, procs, ctx)
    if request is None or request.operation == DECIDE:
        return frozenset(), local
    reads, writes = _request_footprint(request, model)
    return reads, writes | local


_WRITES: dict[str, frozenset[str]] = {
    "dequeue": frozenset({"pending", "active", "lease", _ANY_TASK}),
    "extend_lease": frozenset({"lease"}),
    "drop_dangling_leases": frozenset({"lease", "active"}),
    "reclaim_stale_aggregation_sets": frozenset({"aggregation_sets", "g:*", "groups"}),
    "delete_expired_completed_batch": frozenset({"completed", _ANY_TASK}),
    "delete_expired_archived_batch": frozenset({"archived", _ANY_TASK, "locks"}),
    "list_lease_expired": frozenset(),
}
_READS: dict[str, frozenset[str]] = {
    "dequeue": frozenset({"paused"}),
    "drop_dangling_leases": frozenset({_ANY_TASK}),
    "list_lease_expired": frozenset({"lease", _ANY_TASK}),
}
#: What each way of ending a task writes beside active, lease and its own hash.
_ENDING_WRITES: dict[str, frozenset[str]] = {
    "done": frozenset({"locks"}), "mark_as_complete": frozenset({"completed", "locks"}),
    "requeue": frozenset({"pending"}), "retry": frozenset({"retry"}),
    "archive": frozenset({"archived", _ANY_TASK, "locks"})}


def _request_footprint(request: Request, model: ReferenceModel
                       ) -> tuple[frozenset[str], frozenset[str]]:
    """Reads and writes of one request at the model's state: a step that will find nothing to
    do (an empty dequeue, nothing due, a refusal) only reads."""
    store = model.store(QUEUE)
    operation, args = request.operation, request.args
    now = model.now_s
    if operation in (FINISH, SEND):
        call = model.finishing(*args) if operation == FINISH else args[0]
        msg: TaskMessage = call.args[0]
        mine = frozenset({"active", "lease", f"t:{msg.id}"})
        if msg.id not in store.active or msg.id not in store.lease or msg.id not in store.hashes:
            return mine, frozenset()  # refused: it only looked
        return frozenset(), mine | _ENDING_WRITES[call.operation]
    if operation == "dequeue":
        ready = [i for i in store.pending if i in store.hashes]
        if store.paused is not None or not store.pending:
            return frozenset({"paused", "pending"}), frozenset()
        taken = {f"t:{ready[-1]}"} if ready else set()
        return frozenset({"paused"}), frozenset({"pending", "active", "lease", *taken})
    if operation == "forward_batch":
        source: TaskState = args[1]
        zset = store.index[source]
        due = [i for i, score in zset.items() if score <= now]
        if not due:
            return frozenset({source.value}), frozenset()
        return frozenset(), frozenset({source.value, "pending", "groups", "g:*",
                                       *(f"t:{i}" for i in due)})
    if operation == "delete_expired_completed_batch":
        due = [i for i, score in store.index[TaskState.COMPLETED].items() if score <= now]
        return (frozenset({"completed"}), frozenset()) if not due else \
            (frozenset(), frozenset({"completed", *(f"t:{i}" for i in due)}))
    if operation == "delete_expired_archived_batch":
        limit = now - model.policy.archive_cutoff
        due = [i for i, score in store.index[TaskState.ARCHIVED].items() if score <= limit]
        return (frozenset({"archived"}), frozenset()) if not due else \
            (frozenset(), frozenset({"archived", "locks", *(f"t:{i}" for i in due)}))
    if operation == "reclaim_stale_aggregation_sets" and not any(
            d <= now for d in store.agg_deadlines.values()):
        return frozenset({"aggregation_sets"}), frozenset()
    if operation == "drop_dangling_leases" and not any(
            s <= args[1] and i not in store.hashes for i, s in store.lease.items()):
        return frozenset({"lease", _ANY_TASK}), frozenset()
    if operation in _WRITES:
        return _READS.get(operation, frozenset()), _WRITES[operation]
    return frozenset(), frozenset({_EVERY_KEY})  # anything else: commutes with nothing


def _overlap(a: frozenset[str], b: frozenset[str]) -> bool:
    if not a or not b:
        return False
    if _EVERY_KEY in a or _EVERY_KEY in b or a & b:
        return True
    for wild, prefix in ((_ANY_TASK, "t:"), ("g:*", "g:")):
        if (wild in a and any(k.startswith(prefix) for k in b)) or \
                (wild in b and any(k.startswith(prefix) for k in a)):
            return True
    return False


def commute(one: tuple[frozenset[str], frozenset[str]],
            other: tuple[frozenset[str], frozenset[str]]) -> bool:
    """Whether two steps with these (reads, writes) footprints commute: neither writes what
    the other reads or writes.

    >>> commute((frozenset(), frozenset({"lease"})), (frozenset({"t:*"}), frozenset()))
    True
    >>> commute((frozenset(), frozenset({"t:t0"})), (frozenset({"t:*"}), frozenset()))
    False
    """
    (r1, w1), (r2, w2) = one, other
    return not (_overlap(w1, r2 | w2) or _overlap(w2, r1))


# --- the abstract state ----------------------------------------------------------------------------
def _msg(msg: TaskMessage | None) -> Hashable:
    """What a component branches on in a message it holds."""
    return None if msg is None else (msg.id, min(msg.retried, msg.retry), msg.retention)


def _local(proc: Process, now: int) -> Hashable:
    """A process's local state without absolute times (a time already past is just -1) or the
    message details no component branches on."""
    worker, recoverer, forwarder, janitor, aggregator, syncer = proc.components
    return (
        (_msg(worker.held), max(worker.lease_until - now, -1) if worker.held else 0),
        (recoverer.phase, tuple(_msg(m) for m in recoverer.listed)),
        (forwarder.source, forwarder.midway), janitor.index,
        (aggregator.group, aggregator.phase, tuple(_msg(m) for m in aggregator.read)),
        tuple((item.call.operation, _msg(item.call.args[0]), max(item.deadline - now, -1))
              for item in syncer.queue),
    )


def state_key(model: ReferenceModel, procs: tuple[Process, ...]) -> Hashable:
    """The abstract state of keyspace and processes."""
    now = model.now_s
    return abstract_state(model, QUEUE), tuple(_local(p, now) for p in procs)


# --- the search ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScheduleViolation:
    """A violation and the shortest schedule that reaches it."""

    invariant: str
    key: str
    message: str
    schedule: tuple[Move, ...]

    def format(self) -> str:
        steps = " → ".join(m.label for m in self.schedule)
        return f"{self.invariant} {self.key}: {self.message}\n  schedule ({len(self.schedule)} " \
               f"steps): {steps}"


@dataclass
class ProcessReport:
    """What :func:`explore_processes` covered."""

    processes: int
    tasks: int
    depth: int
    states: int = 0
    steps: int = 0
    slept: int = 0
    schedules: int = 0
    depth_reached: int = 0
    seconds: float = 0.0
    #: Seconds from the start to the end of each depth (index 0: depth 1).
    level_seconds: list[float] = field(default_factory=list)
    violations: list[ScheduleViolation] = field(default_factory=list)
    #: With ``keep_edges``: each expanded state's first (shortest) schedule and the moves
    #: executed from it, breadth first — every step the search ran, for replaying elsewhere.
    edges: list[tuple[tuple[Move, ...], tuple[Move, ...]]] = field(default_factory=list)
    stopped: str = ""

    def format(self) -> str:
        head = (f"explored {self.processes} processes, {self.tasks} tasks, depth "
                f"{self.depth_reached}/{self.depth}{' (' + self.stopped + ')' if self.stopped else ''}: "
                f"{self.states:,} states, {self.steps:,} steps executed, {self.slept:,} skipped "
                f"as commuting, {self.schedules:,} schedules covered, {self.seconds:.1f} s")
        if not self.violations:
            return head + "\nno violation"
        return head + "\n" + "\n".join(v.format() for v in self.violations)


@dataclass
class _Node:
    model: ReferenceModel
    procs: tuple[Process, ...]
    sleep: frozenset[Move]
    schedule: tuple[Move, ...]
    paths: int
    #: A state expanded before: only these moves (asleep then) are left to run.
    only: frozenset[Move] | None = None


def explore_processes(processes: int = 2, tasks: int = 2, depth: int = 4,
                      policy: Policy | None = None, *, budget: float | None = None,
                      flags: Iterable[str] = (), keep_edges: bool = False,
                      reduce: bool = True) -> ProcessReport:
    """Breadth-first search of every interleaving up to ``depth`` steps (see the module
    docstring). ``budget`` (s) stops the search between two levels once passed: the report
    says which depth was completed. ``reduce=False`` explores every order (no sleep sets), to
    check the reduction loses no state."""
    policy = policy or explore_policy()
    flagset = frozenset(flags)
    report = ProcessReport(processes, tasks, depth)
    start = time.perf_counter()
    root_model = ReferenceModel(policy)
    root = _Node(root_model, tuple(Process.start(i, QUEUE, ()) for i in range(processes)),
                 frozenset(), (), 1)
    seen: dict[Hashable, frozenset[Move]] = {state_key(root_model, root.procs): frozenset()}
    report.states = 1
    frontier = [root]
    found: set[tuple[str, str]] = set()
    for level in range(depth):
        if budget is not None and time.perf_counter() - start > budget:
            report.stopped = f"budget {budget:g} s"
            break
        nxt: dict[Hashable, _Node] = {}
        for node in frontier:
            ran = _expand(node, policy, flagset, tasks, seen, nxt, report, found, reduce)
            if keep_edges:
                report.edges.append((node.schedule, ran))
        frontier = list(nxt.values())
        report.depth_reached = level + 1
        report.level_seconds.append(time.perf_counter() - start)
        if not frontier:
            break
    report.seconds = time.perf_counter() - start
    return report


def _expand(node: _Node, policy: Policy, flags: frozenset[str], tasks: int,
            seen: dict[Hashable, frozenset[Move]], nxt: dict[Hashable, _Node],
            report: ProcessReport, found: set[tuple[str, str]], reduce: bool = True
            ) -> tuple[Move, ...]:
    """Run every move enabled at ``node`` and not asleep; return those it ran."""
    ctx = Context(node.model.now_s, policy, flags)
    tried: list[tuple[Move, tuple[frozenset[str], frozenset[str]]]] = []
    enabled = moves(node.procs, ctx, tasks)
    prints = {move: footprint(move, node.procs, ctx, node.model) for move in enabled}
    for move in enabled:
        if node.only is not None and move not in node.only:
            continue  # ran when this state was expanded before
        if move in node.sleep:
            report.slept += 1
            continue
        model = node.model.clone()
        procs = execute(move, node.procs, ctx, partial(perform_on_model, model),
                        model.clock.advance)
        report.steps += 1
        report.schedules += node.paths
        schedule = (*node.schedule, move)
        key = state_key(model, procs)
        earlier = seen.get(key)
        if earlier is None:  # an abstract state is judged once (its verdict is shared)
            _check(model, policy, schedule, report, found)
        mine = prints[move]
        sleep = frozenset(b for b in node.sleep | {m for m, _ in tried}
                          if reduce and commute(mine, prints[b]))
        tried.append((move, mine))
        if earlier is None:
            report.states += 1
            seen[key] = sleep
            nxt[key] = _Node(model, procs, sleep, schedule, node.paths)
            continue
        old = nxt.get(key)
        if old is not None:
            old.paths += node.paths
        if earlier <= sleep:
            continue
        # Met again with fewer steps asleep: the steps it slept before must run now.
        redo = earlier - sleep
        seen[key] = earlier & sleep
        if old is None:
            nxt[key] = _Node(model, procs, sleep, schedule, node.paths, redo)
        else:
            old.sleep &= sleep
            old.only = None if old.only is None else old.only | redo
    return tuple(m for m, _ in tried)


def _check(model: ReferenceModel, policy: Policy, schedule: tuple[Move, ...],
           report: ProcessReport, found: set[tuple[str, str]]) -> None:
    """Every invariant on the state ``schedule`` reached; the first schedule of each
    (invariant, key) is kept (breadth first: a shortest one)."""
    for v in check_all(model.snapshot(QUEUE), policy, strict_locks=True):
        if (v.invariant, v.key) not in found:
            found.add((v.invariant, v.key))
            report.violations.append(ScheduleViolation(v.invariant, v.key, v.message, schedule))


__all__ = ["EXPLORED_KINDS", "INSPECTOR_OPS", "WORKER_CHOICES", "Move", "ProcessReport",
           "ScheduleViolation", "commute", "execute", "explore_processes", "footprint", "moves",
           "request_of", "state_key"]
