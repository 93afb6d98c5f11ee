"""The stateful machine with several server processes: ``keysim check --processes N``.

Each of N Asynq server processes runs its components (:mod:`model.composites`: worker,
recoverer, forwarder, janitor, aggregator, syncer) as coroutines with their local state, and
Hypothesis chooses, at each step, which process advances which component by one atomic
operation (the ``advance`` rule). Clients and inspectors act between any two of those steps
(the rules of :class:`harness.machine.KeyMachine` that run one operation), and time lands on
the next deadline of a kind (``tick``). Model and broker execute every atomic operation in
lockstep, so the reference model still predicts the exact keyspace after every step; the
invariants I1–I14 are checked after every step, the drain runs at the end, and a
:class:`Ledger` checks **conservation** on the broker's real keyspace: every task enqueued
ends completed, archived, or deleted by a named operation, runs at least once unless deleted
(or archived by an inspector, or aggregated) first, and none is lost; duplicate runs
(at-least-once) are counted.

Coverage is the interleaving-sensitive outcomes of :data:`model.composites.INTERLEAVINGS`
(recoverer acting on a task its worker finished or still holds, a report after the lease was
lost, a set reclaimed between check and read, ...): ``keysim check --processes N`` PASSes only
when each ran ``--min-hits`` times.

Two seeded race mutants (:data:`RACES`, ``--variant reference+RACE-1`` / ``RACE-2``) change the
system under test between two steps of a composite only, where the sequential machine cannot
look.

>>> Machine = make_process_machine(MachineConfig(), processes=2)
>>> Machine.processes
2
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, rule

from broker import Broker, calls
from broker.processor import finishing
from broker.variants import variant as variant_named
from harness.attribution import Op
from harness.check import CheckResult, CoverageGoal, check_until_covered, run_check
from harness.config import POLICY_CHOICES, MachineConfig
from harness.leaks import Disagreement, LeakFound, leak
from harness.machine import (
    COVERAGE,
    GROUPS,
    MAX_CALLS_PER_OPERATION,
    QUEUES,
    TASK_IDS,
    KeyMachine,
    RunawayLoop,
    _attempt,
    queues,
    render_args,
    task_ids,
)
from model import keys
from model.composites import (
    DECIDE,
    FINISH,
    FINISHES,
    INTERLEAVINGS,
    LOCAL,
    SEND,
    Answer,
    Context,
    Process,
    Request,
    classify,
)
from model.endings import Finish
from model.errors import TaskNotFoundError
from model.message import TaskMessage
from model.states import TaskState

#: Processes when concurrency is asked for without a number.
DEFAULT_PROCESSES = 2
#: Steps per example of ``keysim check --processes``: every starting point is a few steps from
#: its race, and short examples shrink fast (at 50 steps a race mutant's schedule shrank to
#: 7–18 steps in 20–160 s; at 20, to 4–7 steps in 11–78 s).
PROCESS_STEPS = 20
#: The most processes a machine runs (each step draws one of them).
MAX_PROCESSES = 4
processes_drawn = st.integers(0, MAX_PROCESSES - 1)
#: Starting points an example may draw (see :meth:`ProcessMachine.start`).
PROCESS_SCENARIOS = ("none", "in_flight", "expiring", "listed", "forwarding", "ready_group",
                     "stale_set", "read_set")


@dataclass(frozen=True)
class RaceMutant:
    """A seeded race: the system under test acts on a composite's stale local state."""

    name: str
    doc: str


#: The seeded race mutants, selected as ``reference+RACE-n``.
RACES: dict[str, RaceMutant] = {
    "RACE-1": RaceMutant("stale_recover",
                         "the recoverer acts on its stale list without re-checking the lease: a "
                         "listed task its worker finished meanwhile is retried or archived anyway"),
    "RACE-2": RaceMutant("stale_set_delete",
                         "the aggregator deletes the tasks it read, not the set's current "
                         "members: after a reclaim it deletes tasks back in their group"),
}


def split_variant(name: str) -> tuple[str, str | None]:
    """``reference+RACE-1`` → (``reference``, ``RACE-1``); other names pass through.

    >>> split_variant("reference+RACE-2"), split_variant("asynq-v0.26.0")
    (('reference', 'RACE-2'), ('asynq-v0.26.0', None))
    """
    base, plus, race = name.partition("+")
    if plus and race in RACES:
        if base != "reference":
            raise ValueError(f"race mutants apply to reference, got {name!r}")
        return base, race
    return name, None


class ProcessMachine(KeyMachine):
    """N server processes of components on one keyspace (see the module docstring)."""

    processes: ClassVar[int] = DEFAULT_PROCESSES
    race: ClassVar[str | None] = None
    #: Duplicate runs seen by every machine of this process (a task dequeued while a live
    #: worker still held it), and runs started: at-least-once, counted not failed.
    DUPLICATES: ClassVar[Counter[str]] = Counter()

    def __init__(self) -> None:
        super().__init__()
        self.procs = [Process.start(i, QUEUES[0], GROUPS) for i in range(self.processes)]
        self.ledger = Ledger()
        self.flags = frozenset(q.value for q in variant_named(self.config.variant).quirks)

    # --- starting points ------------------------------------------------------------------
    def start(self, scenario: str) -> None:
        """A starting point that random steps reach rarely: ``in_flight``, every process's
        worker holds a task; ``expiring``, the same with the leases just past the recoverer's
        cutoff; ``listed``, the same with the last process's recoverer holding its list of
        them; ``forwarding``, three scheduled tasks due and process 0's forwarder past its
        first batch (midway when batches are smaller); ``ready_group``, a group past its grace
        period; ``stale_set``, the same group staged by process 0's aggregator, whose set's
        timeout has just come; ``read_set``, the same set read by that aggregator."""
        queue = QUEUES[0]
        if scenario in ("in_flight", "expiring", "listed"):
            for pid, task_id in zip(range(len(self.procs)), TASK_IDS, strict=False):
                self.enqueue(task_id, queue, b"a", 1, 0, None)
                self.advance(pid, "worker")
            if scenario != "in_flight":
                self._land_on(queue, "lease", 1)
            if scenario == "listed":  # reclaim, drop, list: the last process has listed
                last = len(self.procs) - 1
                self.advance(last, "recoverer")
                while self.procs[last].component("recoverer").phase in ("drop", "list"):
                    self.advance(last, "recoverer")
        elif scenario == "forwarding":
            for task_id in TASK_IDS:
                self.schedule(task_id, queue, b"a", 1, None, None)
            self._land_on(queue, "due", 0)
            self.advance(0, "forwarder")
        elif scenario in ("ready_group", "stale_set", "read_set"):
            for task_id in TASK_IDS[:2]:
                self.add_to_group(task_id, queue, b"a", GROUPS[0], None)
            self._land_on(queue, "grace", 1)
            if scenario != "ready_group":
                self.advance(0, "aggregator")
                self._land_on(queue, "set_timeout", 0)
            if scenario == "read_set":
                self.advance(0, "aggregator")

    # --- the scheduler's choice: which process advances which component --------------------
    @rule(process=processes_drawn, choice=st.sampled_from(FINISHES))
    def worker(self, process: int, choice: str) -> None:
        """A worker of ``process`` dequeues, or ends the task it holds as ``choice`` says
        (heartbeat, crash and lost keep or drop it without ending it)."""
        self.advance(process, "worker", choice)

    @rule(process=processes_drawn)
    def recover_step(self, process: int) -> None:
        """The recoverer of ``process`` takes its next step."""
        self.advance(process, "recoverer")

    @rule(process=processes_drawn)
    def forward_step(self, process: int) -> None:
        """The forwarder of ``process`` forwards its next batch."""
        self.advance(process, "forwarder")

    @rule(process=processes_drawn)
    def janitor_step(self, process: int) -> None:
        """The janitor of ``process`` deletes its next batch."""
        self.advance(process, "janitor")

    @rule(process=processes_drawn)
    def aggregator_step(self, process: int) -> None:
        """The aggregator of ``process`` takes its next step."""
        self.advance(process, "aggregator")

    @rule(process=processes_drawn)
    def syncer_step(self, process: int) -> None:
        """The syncer of ``process`` retries (or drops) its oldest report."""
        self.advance(process, "syncer")

    def advance(self, process: int, kind: str, choice: str = "") -> None:
        """Process ``process`` advances its ``kind`` component by one atomic step."""
        pid = process % len(self.procs)
        proc = self.procs[pid]
        ctx = self._context()
        part = proc.component(kind)
        if not part.runnable(ctx):
            return
        request = part.request(ctx, choice)
        held_by_others = self._held(exclude=(pid, kind))
        set_gone = request is not None and request.operation == "delete_aggregation_set" and \
            self.truth(QUEUES[0]).get(keys.group_set(*request.args)) is None
        answer = self.perform(request, f"p{pid}.{kind}", part)
        pair = classify(kind, request, answer, held_by_others, set_gone)
        if pair is not None:
            COVERAGE[pair] += 1
        self.procs[pid] = proc.advanced(kind, request, answer, ctx)

    def _context(self) -> Context:
        return Context(self.clock.seconds, self.policy, self.flags)

    def _held(self, exclude: tuple[int, str] = (-1, "")) -> frozenset[str]:
        """Ids live workers hold (all processes but ``exclude``'s worker)."""
        return frozenset(p.component("worker").held.id for p in self.procs
                         if p.component("worker").held is not None
                         and (p.index, "worker") != exclude)

    def perform(self, request: Request | None, label: str, part: Any) -> Answer:
        """Execute ``request`` on model and broker in lockstep; their answers must agree."""
        if request is None:
            self.steps.append(f"{label}: local step")
            self.step_ops.append(Op(label, (), "ok"))
            return LOCAL
        operation, args, kwargs = request.operation, request.args, dict(request.kwargs)
        if operation in (FINISH, DECIDE):
            call = self._decide(*args)
            if operation == DECIDE:
                self.steps.append(f"{label}: {call.operation} not sent (to the syncer)")
                return Answer("ok", call)
            operation, args, kwargs = call.operation, call.args, dict(call.kwargs)
        elif operation == SEND:
            operation, args, kwargs = args[0].operation, args[0].args, dict(args[0].kwargs)
        answer = self._lockstep(label, operation, args, kwargs, request, part)
        if operation == "dequeue" and answer.ok and isinstance(answer.value, TaskMessage):
            if self.ledger.run(answer.value.id, self._held()):
                ProcessMachine.DUPLICATES["duplicate"] += 1
            ProcessMachine.DUPLICATES["runs"] += 1
        return answer

    def _decide(self, msg: TaskMessage, ending: Any, error: str) -> Finish:
        """The call that ends ``msg``: the implementation's decision, which must be the model's."""
        call = finishing(msg, ending, error, self.clock.seconds, self.policy)
        if self.config.oracle:
            expected = self.model.finishing(msg, ending, error)
            if expected != call:
                raise self._leak(Disagreement.ENDING_DIFFERS, f"{ending} of {msg.id!r} ended "
                                 f"differently", f"  model : {expected!r}\n  broker: {call!r}")
        return call

    def _lockstep(self, label: str, operation: str, args: tuple[Any, ...],
                  kwargs: dict[str, Any], request: Request, part: Any) -> Answer:
        self.step_ok = False
        self.steps.append(f"{label}: {operation}{render_args(args, kwargs)}")
        self._calls_left = MAX_CALLS_PER_OPERATION
        try:
            actual = _attempt(self._sut_operation(operation, request, part), args, kwargs)
        except RunawayLoop as err:
            raise self._leak(Disagreement.RUNAWAY, f"{operation} did not end", str(err)) from None
        expected = _attempt(getattr(self.model, operation), args, kwargs) \
            if self.config.oracle else actual
        self.step_ops.append(Op(operation, args, expected[0]))
        if expected != actual:
            answers = f"  model : {expected!r}\n  broker: {actual!r}"
            self._check_invariants(note=f"{operation} answered differently:\n{answers}")
            raise self._leak(Disagreement.ANSWER_DIFFERS, f"{operation} answered differently",
                             answers, answer=actual)
        return Answer(*expected)

    def _sut_operation(self, operation: str, request: Request, part: Any
                       ) -> Callable[..., Any]:
        """The broker's side of one atomic operation (a race mutant's, when one is seeded)."""
        atomic = _BROKER_STEPS.get(operation)
        method: Callable[..., Any] = (lambda *a: atomic(self.sut, *a)) if atomic \
            else getattr(self.sut, operation)
        behind = self._behind_the_broker
        if self.race == "RACE-1" and part.kind == "recoverer" and request.operation == FINISH:
            return lambda *a, **k: _without_recheck(self.sut, behind(), method, operation, a, k)
        if self.race == "RACE-2" and operation == "delete_aggregation_set":
            return lambda *a: _delete_what_was_read(behind(), method, a, part.read)
        return method

    # --- time -------------------------------------------------------------------------------
    @rule(to=st.sampled_from(["lease", "due", "grace", "set_timeout", "retention", "cutoff",
                              "unique", "second"]))
    def tick(self, to: str) -> None:
        """Time lands one second past the next deadline of a kind (or one second passes)."""
        if to == "second" or not self._land_on(QUEUES[0], to, 1):
            self._advance(1)

    # The sequential machine's composite rules run a composite to its end in one step: here
    # the processes run them step by step instead, so they are plain methods, not rules; so
    # are the rules that only add noise between interleavings (results, pause, bulk moves).
    def write_result(self, queue: str, task_id: str, data: bytes) -> None:
        super().write_result(queue, task_id, data)

    def extend_lease_of_any(self, queue: str, task_id: str) -> None:
        super().extend_lease_of_any(queue, task_id)

    def queue_admin(self, queue: str, action: str) -> None:
        super().queue_admin(queue, action)

    def archive_all(self, queue: str, state: TaskState, group: str) -> None:
        super().archive_all(queue, state, group)

    def run_all(self, queue: str, state: TaskState, group: str) -> None:
        super().run_all(queue, state, group)

    def jump(self, to: str, serve: bool) -> None:
        super().jump(to, False)

    def dequeue(self, queue: str) -> None:
        super().dequeue(queue)

    def work(self, queue: str, how: str, retention: int) -> None:
        super().work(queue, how, retention)

    def finish(self, pick: int, how: str) -> None:
        super().finish(pick, how)

    def late_worker(self, pick: int, how: str) -> None:
        super().late_worker(pick, how)

    def heartbeat(self) -> None:
        super().heartbeat()

    def forwarder(self, queue: str) -> None:
        super().forwarder(queue)

    def janitor(self, queue: str) -> None:
        super().janitor(queue)

    def recoverer(self, queue: str) -> None:
        super().recoverer(queue)

    def aggregation_check(self, queue: str, group: str, then: str, early: bool = True) -> None:
        super().aggregation_check(queue, group, then, early)

    def aggregate(self, pick: int, crash: bool) -> None:
        super().aggregate(pick, crash)

    def archive_pressure(self, queue: str, size: int, server: bool) -> None:
        super().archive_pressure(queue, size, server)

    # --- inspectors: one interleaving-sensitive outcome is theirs ------------------------
    @rule(queue=queues, task_id=task_ids,
          op=st.sampled_from(["delete_task", "archive_task", "run_task"]))
    def inspect_task(self, queue: str, task_id: str, op: str) -> None:
        before = self.truth(queue).task_hash(task_id) or {}
        midway = {p.component("forwarder").source.value for p in self.procs
                  if p.component("forwarder").midway}  # the sources a forwarder is midway in
        super().inspect_task(queue, task_id, op)
        if self.step_ops and self.step_ops[-1].outcome == "ok" and before.get("state") in midway:
            COVERAGE[("inspector.move_due", "forwarder_midway")] += 1

    # --- checks -----------------------------------------------------------------------------
    @invariant()
    def keyspace_is_sound(self) -> None:
        ops = list(self.step_ops)
        super().keyspace_is_sound()
        for queue in QUEUES:
            self._account(queue, ops)

    def _account(self, queue: str, ops: list[Op]) -> None:
        snap = self.read(queue)
        tasks = {i: str((snap.task_hash(i) or {}).get("state", "")) for i in snap.task_ids()}
        lost = self.ledger.observe(tasks, ops)
        if lost:
            raise self._conservation(lost)

    def _conservation(self, problems: list[str]) -> LeakFound:
        found = leak("conservation", problems[0], "\n".join(f"  {p}" for p in problems))
        return found

    def drain(self) -> None:
        """Every held task ends (success), the syncers' queues are dropped, then the
        sequential drain; then every task enqueued must have ended, none lost."""
        for proc in self.procs:
            worker = proc.component("worker")
            if worker.held is not None:
                self._process(worker.held, "succeed")
        self.procs = [Process.start(p.index, QUEUES[0], GROUPS) for p in self.procs]
        super().drain()
        problems = self.ledger.unended()
        if problems:
            raise self._conservation(problems)



@dataclass
class Life:
    """One incarnation of a task id: from the step its hash appeared to the step it went."""

    task_id: str
    created_by: tuple[str, ...]
    runs: int = 0
    state: str = ""
    archived_by_server: bool = False
    ended: str = ""


@dataclass
class Ledger:
    """Conservation, read from the broker's real keyspace after every step."""

    live: dict[str, Life] = field(default_factory=dict)
    ended: list[Life] = field(default_factory=list)

    def run(self, task_id: str, held: frozenset[str]) -> bool:
        """A worker dequeued ``task_id``; True when a live worker already held it (a
        duplicate run)."""
        life = self.live.setdefault(task_id, Life(task_id, ("enqueue",)))
        life.runs += 1
        return task_id in held

    def observe(self, tasks: dict[str, str], ops: list[Op]) -> list[str]:
        """The keyspace's tasks (id → state) after a step that ran ``ops``; what the step lost."""
        problems = []
        for task_id, state in tasks.items():
            life = self.live.get(task_id)
            if life is None:
                life = self.live[task_id] = Life(task_id, tuple(op.name for op in ops))
            if state == TaskState.ARCHIVED.value and life.state != state:
                life.archived_by_server = "archive" in _names(ops, task_id)
            life.state = state
        for task_id in [i for i in self.live if i not in tasks]:
            life = self.live.pop(task_id)
            life.ended = _ending(life, ops)
            self.ended.append(life)
            problem = _judge(life)
            if problem:
                problems.append(problem)
        return problems

    def unended(self) -> list[str]:
        """After the drain: tasks still present (never ended)."""
        return [f"task {i!r} never ended (state {life.state})" for i, life in self.live.items()]


#: Operations that delete a task by name (beyond completing or archiving it).
_DELETING = frozenset({"delete_task", "delete_all_tasks", "remove_queue", "delete_aggregation_set",
                       "delete_expired_completed_batch", "delete_expired_completed_tasks"})
_ARCHIVING = frozenset({"archive", "archive_task", "archive_all_tasks",
                        "delete_expired_archived_batch", "delete_expired_archived_tasks"})


def _names(ops: list[Op], task_id: str) -> list[str]:
    """The operations among ``ops`` that named task ``task_id`` (its message or its id)."""
    def names(op: Op) -> bool:
        return any(isinstance(a, TaskMessage) and a.id == task_id for a in op.args) or (
            op.name in ("delete_task", "archive_task", "run_task") and op.args[1:2] == (task_id,))
    return [op.name for op in ops if op.outcome in _DONE and names(op)]


#: Outcomes of an operation that ran (the others refused and wrote nothing).
_DONE = frozenset({"ok", "empty"})


def _ending(life: Life, ops: list[Op]) -> str:
    """How an incarnation that vanished in a step running ``ops`` ended: by the operation that
    named it, else by its last state, else by a bulk operation of the step."""
    mine = _names(ops, life.task_id)
    if {"done", "mark_as_complete"} & set(mine) or (
            not mine and life.state == TaskState.COMPLETED.value):
        return "completed"
    if set(mine) & _ARCHIVING or (not mine and life.state == TaskState.ARCHIVED.value):
        return "archived"
    named = sorted(set(mine or [op.name for op in ops if op.outcome in _DONE]) & _DELETING)
    every = "/".join(op.name for op in ops) or "no operation"
    return f"deleted by {named[0]}" if named else f"lost in {every}"


def _judge(life: Life) -> str:
    """What is wrong with an ended incarnation, or ''."""
    if life.ended.startswith("lost"):
        return f"task {life.task_id!r} was {life.ended} (state {life.state})"
    if life.ended == "completed" and life.runs == 0:
        return f"task {life.task_id!r} completed without ever running"
    if life.ended == "archived" and life.archived_by_server and life.runs == 0:
        return f"task {life.task_id!r} archived by a server without ever running"
    return ""


# --- the broker's atomic steps the Broker class runs only inside its composites -------------
def _forward_batch(sut: Broker, queue: str, source: TaskState) -> tuple[int, int]:
    taken, moved = sut.call(*calls.forward(queue, source, sut.clock.now_ns, sut.policy))
    return int(taken), int(moved)


def _completed_batch(sut: Broker, queue: str) -> int:
    (n,) = sut.call(*calls.delete_expired_completed(queue, sut.clock.now_ns, sut.policy))
    return int(n)


def _archived_batch(sut: Broker, queue: str) -> int:
    (n,) = sut.call(*calls.delete_expired_archived(queue, sut.clock.now_ns, sut.policy))
    return int(n)


def _drop_dangling(sut: Broker, queue: str, cutoff: int) -> int:
    (n,) = sut.call(*calls.drop_dangling_leases(queue, cutoff))
    return int(n)


_BROKER_STEPS: dict[str, Callable[..., Any]] = {
    "forward_batch": _forward_batch, "delete_expired_completed_batch": _completed_batch,
    "delete_expired_archived_batch": _archived_batch, "drop_dangling_leases": _drop_dangling}


def _without_recheck(sut: Broker, client: Any, method: Callable[..., Any], operation: str,
                     args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """RACE-1: the recoverer's retry or archive; refused (the task is not active any more), it
    writes anyway, as a recoverer trusting its stale list would."""
    try:
        return method(*args, **kwargs)
    except TaskNotFoundError:
        if operation not in ("retry", "archive"):
            raise
    msg: TaskMessage = args[0]
    queue, now = msg.queue, sut.clock.seconds
    pipe = client.pipeline(transaction=True)
    pipe.lrem(keys.active(queue), 0, msg.id)
    pipe.zrem(keys.lease(queue), msg.id)
    if operation == "retry":
        pipe.zadd(keys.retry(queue), {msg.id: args[1]})
        pipe.hset(keys.task(queue, msg.id), mapping={
            "msg": sut.encode(msg.failed(args[2], now)), "state": "retry"})
    else:
        pipe.zadd(keys.archived(queue), {msg.id: now})
        pipe.hset(keys.task(queue, msg.id), mapping={
            "msg": sut.encode(msg.archived(args[1], now)), "state": "archived"})
    pipe.execute()
    return None


def _delete_what_was_read(client: Any, method: Callable[..., Any], args: tuple[Any, ...],
                          read: tuple[TaskMessage, ...]) -> Any:
    """RACE-2: delete the set, then the hashes of the messages read from it earlier."""
    method(*args)
    for msg in read:
        client.delete(keys.task(msg.queue, msg.id))
    return None


def make_process_machine(config: MachineConfig, processes: int = DEFAULT_PROCESSES,
                         race: str | None = None) -> type[ProcessMachine]:
    """A process machine class bound to ``config`` (its variant without a ``+RACE-n``)."""
    if not 1 <= processes <= MAX_PROCESSES:
        raise ValueError(f"processes must be 1..{MAX_PROCESSES}, got {processes}")
    if race is not None and race not in RACES:
        raise ValueError(f"unknown race mutant {race!r}; expected one of {', '.join(RACES)}")
    config = replace(config, scenarios=False, deadlines=False, faults=False, flood=0)
    label = f"Processes{processes}_{config.variant}{'_' + race if race else ''}"
    ident = "".join(c if c.isalnum() else "_" for c in label)
    body = {"config": config, "processes": processes, "race": race, "setup": _setup(config)}
    return type(ident, (ProcessMachine,), body)


def _setup(config: MachineConfig) -> Any:
    """The one initialize step: the example's policy (drawn with ``config.policies``) first,
    then its starting point (:data:`PROCESS_SCENARIOS`), so every lease and deadline the
    starting point sets follows the policy the example runs with."""
    arguments: dict[str, st.SearchStrategy[Any]] = {
        "scenario": st.sampled_from(PROCESS_SCENARIOS)}
    if config.policies:
        arguments.update({name: st.sampled_from(choices)
                          for name, choices in POLICY_CHOICES.items()})

    def setup(self: ProcessMachine, scenario: str = "none", **policy: int) -> None:
        """This example's policy, then its starting point."""
        self.begin("none", **policy)
        self.start(scenario)

    make: Callable[..., Any] = initialize
    return make(**arguments)(setup)


def process_goal(min_hits: int, min_examples: int) -> CoverageGoal:
    """PASS of ``keysim check --processes``: every pair of :data:`INTERLEAVINGS`
    ``min_hits`` times (the sequential check owns the transition table's pairs)."""
    return CoverageGoal(min_hits, min_examples, tuple(INTERLEAVINGS), {})


def process_check(variant: str = "reference", backend: str = "fakeredis", *,
                  processes: int = DEFAULT_PROCESSES, seed: int | None = None,
                  budget: float | None = None, min_hits: int = 3, min_examples: int = 100,
                  max_examples: int | None = None, steps: int | None = None) -> CheckResult:
    """``keysim check --processes N``: coverage-driven rounds of the process machine (or a
    fixed run of ``max_examples``), judged against :func:`process_goal`. A race mutant is
    named as a variant, ``reference+RACE-n``."""
    base, race = split_variant(variant)
    steps = steps or PROCESS_STEPS
    config = MachineConfig(variant=base, backend=backend, oracle=not base.startswith("asynq-"),
                           policies=True)
    machine = make_process_machine(config, processes, race)
    goal = process_goal(min_hits, min_examples if max_examples is None else 0)
    if max_examples is not None:
        result = run_check(config, max_examples=max_examples, steps=steps, seed=seed,
                           goal=goal, machine=machine)
    else:
        result = check_until_covered(config, seed=seed, budget=budget, min_hits=min_hits,
                                     min_examples=min_examples, steps=steps, goal=goal,
                                     machine=machine)
    config = replace(config, variant=variant)
    return replace(result, config=config,
                   program=_process_program(result.program, processes, race))


_MAKE_LINE = re.compile(r"^(\w+) = make_machine\((.*)\)$", re.M)


def _process_program(program: str, processes: int, race: str | None) -> str:
    """The printed program, building the process machine instead of the sequential one."""
    if not program:
        return program
    extra = f", processes={processes}" + (f", race={race!r}" if race else "")
    program = _MAKE_LINE.sub(rf"\1 = make_process_machine(\2{extra})", program)
    return program.replace("from harness.machine import MachineConfig, make_machine",
                           "from harness.machine import MachineConfig\n"
                           "from harness.processes import make_process_machine")


def timed(fn: Callable[[], CheckResult]) -> tuple[CheckResult, float]:
    """``fn()`` and its wall time in seconds."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def perform_on_broker(sut: Broker, request: Request | None) -> Answer:
    """Execute ``request`` on a broker alone (no model): the implementation decides a
    :data:`FINISH` (``broker.processor.finishing``). For replaying explored schedules."""
    if request is None:
        return LOCAL
    operation, args, kwargs = request.operation, request.args, dict(request.kwargs)
    if operation in (FINISH, DECIDE):
        msg, ending, error = args
        call = finishing(msg, ending, error, sut.clock.seconds, sut.policy)
        if operation == DECIDE:
            return Answer("ok", call)
        operation, args, kwargs = call.operation, call.args, dict(call.kwargs)
    elif operation == SEND:
        operation, args, kwargs = args[0].operation, args[0].args, dict(args[0].kwargs)
    atomic = _BROKER_STEPS.get(operation)
    method: Callable[..., Any] = (lambda *a: atomic(sut, *a)) if atomic \
        else getattr(sut, operation)
    return Answer(*_attempt(method, args, kwargs))
