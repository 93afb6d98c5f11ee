"""The stateful machine: the reference model drives a broker step by step and checks every key.

:func:`make_machine` builds a Hypothesis ``RuleBasedStateMachine`` for one
:class:`MachineConfig` (variant, backend, policy, alphabets). Every rule performs one operation
of the transition table on the reference model *and* on the broker under test, compares the two
answers, and after every step the invariants I1–I14 are checked on the broker's real keyspace
and the keyspace is compared, key by key, with the model's prediction. At the end of every run a
**drain** completes, recovers and deletes everything and checks the leftover keyspace against
the documented baseline (see :func:`drain_baseline`).

Beyond the defaults, a config can add environment faults (``faults``: an ``evict`` rule that
deletes a task hash, as Redis eviction or a manual DEL would — the index entries it leaves
dangling are tolerated until the design heals them), a ``flood`` of archived tasks, a fixed
rule ``focus`` or ``swarm`` testing, and ``ignore`` defects already known. The default
``keysim check`` also draws each example's policy and starting scenario in a first ``setup``
step (``policies``, ``scenarios``) and adds a ``deadline`` rule that lands time exactly on a
deadline, one second before or after (``deadlines``). Every failure is
a :class:`LeakFound` naming the check that caught it and, when
:func:`harness.attribution.attribute` recognises it, the bug-zoo defect (``LeakFound.bug``).

This module holds the rules and the checks. Around it: :mod:`harness.config` (what to test),
:mod:`harness.backends` (where the broker runs), :mod:`harness.faults` (the keyspace as judged
after injected faults), :mod:`harness.attribution` (which defect a failure points to),
:mod:`harness.leaks` (what a failure raises), :mod:`harness.swarm` (rule subsets per example),
:mod:`harness.profiles` (Hypothesis settings) and :mod:`harness.fakeserver` (fakeredis'
internals).

>>> Machine = make_machine(MachineConfig(variant="reference"))
>>> Machine.TestCase.settings.stateful_step_count > 0
True
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from functools import partial
from typing import Any, ClassVar

import fakeredis
from hypothesis import currently_in_test_context, event, target
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from broker import Broker
from broker.processor import finishing
from harness.attribution import Op, attribute
from harness.backends import ASYNQ_BACKEND, make_broker, release_client
from harness.config import MACHINE_POLICY, POLICY_CHOICES, SCENARIOS, MachineConfig
from harness.fakeserver import snapshot_from_memory
from harness.faults import dangles_outside_completed, without_fault_entries
from harness.leaks import Disagreement, LeakFound, disagreement_leak, violation_leak
from harness.observe import Observer
from harness.swarm import swarm_rules
from model import keys
from model.clock import VirtualClock
from model.endings import Ending, Finish
from model.errors import KeysimError, ScriptError
from model.invariants import Invariant, Violation, check_all
from model.message import TaskMessage
from model.policy import MAX_INT64, Policy
from model.reference import ReferenceModel
from model.snapshot import KeyspaceSnapshot
from model.states import TaskState
from model.transitions import Outcome, bulk_states, by_operation

#: Outcomes recorded by every machine in this process: (transition name, outcome) -> count.
COVERAGE: Counter[tuple[str, str]] = Counter()

#: Script calls one operation may make. A composite loops over batches until one comes back
#: short; the machine's keyspace holds a few tasks, so even batches of one end far below this.
#: A loop that makes no progress (a batch that never shrinks its source) would hang the check:
#: it fails it instead, as the liveness bug it is.
MAX_CALLS_PER_OPERATION = 2_000


class RunawayLoop(Exception):
    """An operation exceeded :data:`MAX_CALLS_PER_OPERATION` script calls."""


#: Alphabets, small on purpose so that ids, unique locks and groups collide often.
QUEUES = ("default",)
TASK_IDS = ("t0", "t1", "t2")
GROUPS = ("g0", "g1")
PAYLOADS = (b"a", b"b", None)

queues = st.sampled_from(QUEUES)
task_ids = st.sampled_from(TASK_IDS)
groups = st.sampled_from(GROUPS)
payloads = st.sampled_from(PAYLOADS)
picks = st.integers(0, 3)
#: How a worker's run of a task ends (weighted toward the usual outcomes by repetition).
outcomes = st.sampled_from(
    ["succeed", "succeed", "fail", "fail", "fail_uncounted", "skip_retry", "requeue", "crash"])
#: The ending each outcome but ``crash`` reports (a crashed worker reports nothing).
ENDINGS = {"succeed": Ending.SUCCESS, "fail": Ending.FAILURE,
            "fail_uncounted": Ending.UNCOUNTED_FAILURE, "skip_retry": Ending.SKIP_RETRY,
            "requeue": Ending.ABORTED}


def transition_for(operation: str, **args: Any) -> str | None:
    """The table row an operation call performs (``retry`` has two, bulk ops one per state);
    None for read-only operations such as ``read_aggregation_set``."""
    if operation in _READ_ONLY:
        return None
    if operation == "retry":
        return "retry_failure" if args.get("is_failure", True) else "retry_nonfailure"
    if operation in ("delete_all_tasks", "archive_all_tasks", "run_all_tasks"):
        return f"{operation[:-6]}_{TaskState(args['state']).value}"
    if operation == "remove_queue":
        return "remove_queue_force" if args.get("force") else "remove_queue"
    return by_operation(operation)[0].name


def drain_baseline(queue: str) -> frozenset[str]:
    """Keys allowed to remain after the drain: the queue's two total counters (they never expire).

    Everything else — task hashes, indexes, groups, aggregation sets, locks, daily counters,
    ``paused`` — must be gone; the queue stays registered until ``remove_queue``, after which
    nothing of the queue remains at all.
    """
    return frozenset({keys.processed_total(queue), keys.failed_total(queue)})


class KeyMachine(RuleBasedStateMachine):
    """Model and broker in lockstep. Subclassed by :func:`make_machine` with a config."""

    config: ClassVar[MachineConfig] = MachineConfig()

    def __init__(self) -> None:
        super().__init__()
        cfg = self.config
        #: This example's policy: the config's, unless the example draws its own (``setup``).
        self.policy = cfg.policy
        self.clock = VirtualClock()
        self.model = ReferenceModel(cfg.policy, self.clock)
        self.sut: Any = make_broker(cfg, self.clock)
        self._calls_left = MAX_CALLS_PER_OPERATION
        if isinstance(self.sut, Broker):  # on this instance only: the class stays as shipped
            self.sut.call = self._counted(self.sut.call)  # type: ignore[method-assign]
        self.in_memory = isinstance(getattr(self.sut, "client", None), fakeredis.FakeRedis)
        # A real server: read the keyspace in each script's round trip (fakeredis is read
        # from memory instead, see read()).
        self.observer = Observer(self.sut, QUEUES[0]) \
            if isinstance(self.sut, Broker) and not self.in_memory else None
        self.in_hand: dict[str, TaskMessage] = {}  # dequeued by a live worker
        self.stale: dict[str, TaskMessage] = {}  # held by a worker that crashed or lost its lease
        self.staged: list[tuple[str, str, str]] = []  # (queue, group, set id)
        self.counter = 0
        self.steps: list[str] = []
        self.reached: set[str] = set()  # transitions executed with outcome ok in this run
        self.step_ok = True
        self.step_ops: list[Op] = []  # operations since the last check
        self.self_trimmed: set[str] = set()  # ids an archive trimmed from the index it added to
        self.evicted: set[tuple[str, str]] = set()  # (queue, id) whose hash a fault removed
        self.ever_evicted: set[tuple[str, str]] = set()  # the same, healed ones included
        self.ignored: set[tuple[str, str]] = set()  # (invariant, key) of tolerated defects

    # --- the lockstep core ----------------------------------------------------------------
    def both(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``operation`` on the model and the broker; their answers must agree. An
        operation the broker lacks (an Asynq release before task groups) is not run."""
        lacks = getattr(self.sut, "lacks", None)
        if lacks is not None and lacks(operation, args):
            return None
        self.step_ok = False
        self.steps.append(f"{operation}{render_args(args, kwargs)}")
        self._calls_left = MAX_CALLS_PER_OPERATION
        try:
            actual = _attempt(getattr(self.sut, operation), args, kwargs)
        except RunawayLoop as err:
            raise self._leak(Disagreement.RUNAWAY, f"{operation} did not end", str(err)) from None
        expected = _attempt(getattr(self.model, operation), args, kwargs) \
            if self.config.oracle else actual
        name = transition_for(operation, **_named(operation, args, kwargs))
        outcome = self._outcome(operation, expected)
        if name is not None:  # read-only operations have no row
            COVERAGE[(name, outcome)] += 1
            if outcome == Outcome.OK.value:
                self.reached.add(name)
        _event(f"{name or operation}: {outcome}")
        self.step_ops.append(Op(operation, args, outcome))
        if operation == "archive" and actual[0] == "ok":
            self._note_self_trim(args[0])
        if expected != actual:
            answers = f"  model : {expected!r}\n  broker: {actual!r}"
            self._check_invariants(note=f"{operation} answered differently:\n{answers}")
            raise self._leak(Disagreement.ANSWER_DIFFERS, f"{operation} answered differently",
                             answers, answer=actual)
        return expected[1] if expected[0] == "ok" else None

    def _counted(self, call: Callable[..., Any]) -> Callable[..., Any]:
        """``call`` (the broker's script call), refusing to run past this operation's budget."""
        def counted(*args: Any, **kwargs: Any) -> Any:
            self._calls_left -= 1
            if self._calls_left < 0:
                raise RunawayLoop(f"more than {MAX_CALLS_PER_OPERATION} script calls; the last "
                                  f"was {args[0] if args else '?'}")
            return call(*args, **kwargs)
        return counted

    def _outcome(self, operation: str, answer: tuple[str, Any]) -> str:
        kind, value = answer
        if kind != "ok":
            return str(kind)
        if value is None and operation == "dequeue":
            return Outcome.PAUSED.value if self._paused_seen else Outcome.EMPTY.value
        if value in (0, None) and operation in _BULK_COUNTS:
            return Outcome.NOT_FOUND.value if operation == "extend_lease" else Outcome.EMPTY.value
        if operation == "delete_aggregation_set" and self._set_gone:
            return Outcome.EMPTY.value
        return Outcome.OK.value

    _paused_seen = False
    _set_gone = False

    @contextmanager
    def _not_last(self) -> Iterator[None]:
        """The broker calls in the block are not the step's last: a real server need not send
        the keyspace back after each of them (``Observer.quiet``); the check after the step
        reads it in any case."""
        if self.observer is not None:
            with self.observer.quiet():
                yield
        else:
            yield

    def message(self, task_id: str, queue: str, payload: bytes | None, retry: int,
                retention: int) -> TaskMessage:
        """A fresh task message from the alphabets."""
        return TaskMessage(type="job", payload=payload, id=task_id, queue=queue, retry=retry,
                           retention=retention)

    # --- client ---------------------------------------------------------------------------
    @rule(task_id=task_ids, queue=queues, payload=payloads, retry=st.integers(0, 2),
          retention=st.sampled_from([0, 30]), unique=st.sampled_from([None, 1, 30]))
    def enqueue(self, task_id: str, queue: str, payload: bytes | None, retry: int,
                retention: int, unique: int | None) -> None:
        if self._blocked(queue, task_id):
            return
        msg = self.message(task_id, queue, payload, retry, retention)
        if unique:
            self.both("enqueue_unique", msg, unique)
        else:
            self.both("enqueue", msg)

    @rule(task_id=task_ids, queue=queues, payload=payloads, delay=st.sampled_from([1, 10, 120]),
          unique=st.sampled_from([None, 1, 30]), group=st.sampled_from((None, *GROUPS)))
    def schedule(self, task_id: str, queue: str, payload: bytes | None, delay: int,
                 unique: int | None, group: str | None) -> None:
        if self._blocked(queue, task_id):
            return
        msg = replace(self.message(task_id, queue, payload, 1, 0), group_key=group or "")
        process_at = self.clock.seconds + delay
        if unique:
            self.both("schedule_unique", msg, process_at, delay + unique)
        else:
            self.both("schedule", msg, process_at)

    @rule(task_id=task_ids, queue=queues, payload=payloads, group=groups,
          unique=st.sampled_from([None, 1, 30]))
    def add_to_group(self, task_id: str, queue: str, payload: bytes | None, group: str,
                     unique: int | None) -> None:
        if self._blocked(queue, task_id):
            return
        msg = self.message(task_id, queue, payload, 1, 0)
        if unique:
            self.both("add_to_group_unique", msg, group, unique)
        else:
            self.both("add_to_group", msg, group)

    # --- server: processing ---------------------------------------------------------------
    @rule(queue=queues)
    def dequeue(self, queue: str) -> None:
        self._paused_seen = self._paused(queue)
        msg = self.both("dequeue", queue)
        if isinstance(msg, TaskMessage):
            self.in_hand[msg.id] = msg
            self.stale.pop(msg.id, None)

    @rule(queue=queues, how=outcomes, retention=st.sampled_from([0, 30]))
    def work(self, queue: str, how: str, retention: int) -> None:
        """A worker dequeues one task and runs it to its end in one step (the common path).
        When nothing is pending, a fresh task arrives first."""
        with self._not_last():
            if self.truth(queue).get(keys.pending(queue)) is None:
                self.counter += 1
                self.both("enqueue", self.message(f"w{self.counter}", queue, b"w", 1, retention))
            self.dequeue(queue)
        fresh = [i for i, m in self.in_hand.items() if m.queue == queue]
        if fresh:
            self.finish(sorted(self.in_hand).index(fresh[-1]), how)

    @precondition(lambda self: bool(self.in_hand))
    @rule(pick=picks, how=outcomes)
    def finish(self, pick: int, how: str) -> None:
        """The ``pick``-th task in hand ends the way Asynq's processor would end it."""
        task_id = sorted(self.in_hand)[pick % len(self.in_hand)]
        msg = self.in_hand.pop(task_id)
        if how == "crash":
            self.stale[task_id] = msg
            self.steps.append(f"crash({task_id})")
            return
        self._process(msg, how)

    @precondition(lambda self: bool(self.stale))
    @rule(pick=picks, how=st.sampled_from(
        ["succeed", "fail", "skip_retry", "fail_uncounted", "requeue"]))
    def late_worker(self, pick: int, how: str) -> None:
        """A worker that crashed or lost its lease still reports (refused, or harmless), with
        any ending a live worker could report."""
        task_id = sorted(self.stale)[pick % len(self.stale)]
        self._process(self.stale.pop(task_id), how)

    def _process(self, msg: TaskMessage, how: str) -> None:
        """The worker's ending: decided (see :meth:`decided`), then run on both."""
        call = self.decided(msg, ENDINGS[how], "boom")
        self.both(call.operation, *call.args, **call.kwargs)

    def decided(self, msg: TaskMessage, ending: Ending, error: str) -> Finish:
        """The call that ends ``msg`` now: the implementations decide it
        (``broker.processor``), the model decides on its own, and the two must agree."""
        call = finishing(msg, ending, error, self.clock.seconds, self.policy)
        if self.config.oracle:
            expected = self.model.finishing(msg, ending, error)
            if expected != call:
                raise self._leak(Disagreement.ENDING_DIFFERS,
                                 f"{ending.value} of {msg.id!r} ended differently",
                                 f"  model : {expected!r}\n  broker: {call!r}")
        return call

    @precondition(lambda self: bool(self.in_hand))
    @rule()
    def heartbeat(self) -> None:
        for queue in QUEUES:
            ids = sorted(i for i, m in self.in_hand.items() if m.queue == queue)
            if ids:
                self.both("extend_lease", queue, *ids)

    @rule(queue=queues, task_id=task_ids)
    def extend_lease_of_any(self, queue: str, task_id: str) -> None:
        """A heartbeat for an id that may no longer hold a lease (must not re-create one)."""
        self.both("extend_lease", queue, task_id)

    @rule(queue=queues, task_id=task_ids, data=st.sampled_from([b"r1", b"r2"]))
    def write_result(self, queue: str, task_id: str, data: bytes) -> None:
        """ResultWriter.Write, possibly late (after the task finished)."""
        self.both("write_result", queue, task_id, data)

    # --- server: background loops ---------------------------------------------------------
    @rule(queue=queues)
    def forwarder(self, queue: str) -> None:
        self.both("forward_if_ready", queue)

    @rule(queue=queues)
    def janitor(self, queue: str) -> None:
        with self._not_last():
            self.both("delete_expired_completed_tasks", queue)
        self.both("delete_expired_archived_tasks", queue)

    @rule(queue=queues)
    def recoverer(self, queue: str) -> None:
        with self._not_last():
            self.both("recover", queue)
        self.both("reclaim_stale_aggregation_sets", queue)

    @rule(queue=queues, group=groups, then=st.sampled_from(["aggregate", "crash", "later"]),
          early=st.booleans())
    def aggregation_check(self, queue: str, group: str, then: str, early: bool = True) -> None:
        """The aggregator checks one group — once its grace period has passed, or ``early``
        (right now); a staged set is then aggregated at once, or the aggregator crashes after
        reading it (the set times out and the recoverer reclaims it), or it is left for a
        later :meth:`aggregate`. (Waiting is ``early=False`` so that shrinking, which prefers
        False, keeps one waiting check rather than many small ticks.)"""
        if not early:
            self._advance(self.policy.aggregation_grace + 1)
        self.counter += 1
        # Asynq names sets with a random UUID (its driver insists); a counter keeps runs replayable.
        set_id = str(uuid.UUID(int=self.counter, version=4))
        if self.both("aggregation_check", queue, group, set_id) != set_id:
            return
        if then == "later":
            self.staged.append((queue, group, set_id))
            return
        self._aggregate(queue, group, set_id, crash=then == "crash")
        if then == "crash":
            self._advance(self.policy.aggregation_timeout + 1)
            self.recoverer(queue)

    @precondition(lambda self: bool(self.staged))
    @rule(pick=picks, crash=st.booleans())
    def aggregate(self, pick: int, crash: bool) -> None:
        """The aggregator reads a staged set, enqueues the aggregated task, deletes the set."""
        self._aggregate(*self.staged.pop(pick % len(self.staged)), crash=crash)

    def _aggregate(self, queue: str, group: str, set_id: str, crash: bool) -> None:
        staged = self.both("read_aggregation_set", queue, group, set_id)
        if crash:  # the set stays until the recoverer reclaims it
            self.steps.append(f"aggregator crash({set_id})")
            return
        self.counter += 1
        self.both("enqueue", self.message(f"agg{self.counter}", queue, b"agg", 0, 0))
        # The delete answers nothing: a set gone before the read (reclaimed meanwhile) is
        # its EMPTY outcome, which must delete nothing.
        self._set_gone = staged is None
        self.both("delete_aggregation_set", queue, group, set_id)

    @rule(queue=queues, action=st.sampled_from(
        ["pause", "unpause", "remove_queue", "remove_queue_force"]))
    def queue_admin(self, queue: str, action: str) -> None:
        """The operator pauses, resumes or removes a queue."""
        if action.startswith("remove_queue"):
            self.both("remove_queue", queue, action.endswith("force"))
        else:
            self.both(action, queue)

    # --- time ------------------------------------------------------------------------------
    @rule(seconds=st.sampled_from([1, 5, 10, 31]), serve=st.booleans())
    def tick(self, seconds: int, serve: bool) -> None:
        """Time passes; with ``serve`` a server's background loops then run, as they would."""
        self._advance(seconds)
        if serve:
            self._serve()

    @rule(to=st.sampled_from(["lease", "retention", "retry", "unique", "aggregation",
                              "cutoff"]), serve=st.booleans())
    def jump(self, to: str, serve: bool) -> None:
        """Jump just past one of the deadlines the lifecycle depends on (then maybe serve)."""
        p = self.policy
        seconds = {"lease": p.lease_duration + p.recover_skew + 1, "retention": 31,
                   "retry": 16 + 30 * 3 + 81, "unique": 31,
                   "aggregation": p.aggregation_timeout + 1,
                   "cutoff": p.archive_cutoff + 1}[to]
        self._advance(seconds)
        if serve:
            self._serve()

    def _serve(self) -> None:
        """One pass of a server's background loops: forwarder, janitor, recoverer and the
        aggregator, which (as Asynq's) checks only the groups listed in ``groups``."""
        for queue in QUEUES:
            with self._not_last():
                self.forwarder(queue)
                self.janitor(queue)
            self.recoverer(queue)
            for group in self._listed_groups(queue):
                self.aggregation_check(queue, group, "aggregate")

    def _listed_groups(self, queue: str) -> list[str]:
        """The groups the broker's ``groups`` set lists: what Asynq's aggregator reads from
        Redis (never the model's view, or a group missing from it would be aggregated anyway)."""
        listed = self.read(queue).get(keys.groups(queue))
        return sorted(listed.set()) if listed is not None else []

    def _advance(self, seconds: int) -> None:
        self.steps.append(f"advance({seconds})")
        self.clock.advance(seconds)

    def next_deadline(self, queue: str, kind: str, offset: int) -> int | None:
        """The earliest deadline of ``kind`` (see :data:`DEADLINES`) such that landing
        ``offset`` seconds from it is still ahead of now, in whole virtual seconds; None when
        no key holds one."""
        snap, p, now = self.truth(queue), self.policy, self.clock.seconds

        def scores(key: str) -> list[float]:
            entry = snap.get(key)
            return [score for _, score in entry.zset()] if entry is not None else []

        times: list[float]
        if kind == "retention":
            times = scores(keys.completed(queue))
        elif kind == "cutoff":
            times = [s + p.archive_cutoff for s in scores(keys.archived(queue))]
        elif kind == "lease":  # the recoverer takes leases older than now - skew
            times = [s + p.recover_skew for s in scores(keys.lease(queue))]
        elif kind == "due":
            times = scores(keys.scheduled(queue)) + scores(keys.retry(queue))
        elif kind == "unique":
            times = [e.expire_at_ms / 1000 for e in snap.with_prefix(keys.unique_prefix(queue))
                     if e.expire_at_ms is not None]
        elif kind == "grace":
            groups = [scores(keys.group(queue, g)) for g in GROUPS]
            times = [max(g) + p.aggregation_grace for g in groups if g]
            if p.aggregation_max_delay:
                times += [min(g) + p.aggregation_max_delay for g in groups if g]
        elif kind == "set_timeout":
            times = scores(keys.aggregation_sets(queue))
        else:
            raise ValueError(f"unknown deadline kind {kind!r}; expected one of {DEADLINES}")
        ahead = [math.ceil(t) for t in times if math.ceil(t) + offset > now]
        return min(ahead) if ahead else None

    # --- per-example setup (MachineConfig.policies, MachineConfig.scenarios) ---------------
    @staticmethod
    def fix_policy(policy: Policy) -> Policy:
        """``policy`` as the system under test accepts it (on the ``asynq`` backend the fields
        Asynq hard-codes keep Asynq's values, see :func:`make_machine`)."""
        return policy

    def begin(self, scenario: str = "none", **policy: Any) -> None:
        """This example's first step: its own policy (model, broker and checks get the same),
        then its starting scenario."""
        if policy:
            chosen = self.fix_policy(replace(self.policy, **policy))
            self.policy = self.model.policy = self.sut.policy = chosen
            self._last_checked = None
            self.steps.append(f"policy({policy})")
        self.scenario(scenario)

    def scenario(self, name: str) -> None:
        """Set up one precondition of :data:`harness.config.SCENARIOS` with ordinary steps."""
        queue = QUEUES[0]
        if name == "none":
            return
        if name == "lost_leases":  # three workers crashed and lost their leases: each late
            for task_id in TASK_IDS:  # report (any ending) must be refused
                self.enqueue(task_id, queue, b"a", 1, 30, None)
                self.dequeue(queue)
                self.finish(0, "crash")
            self.jump("lease", serve=True)
        elif name in ("in_hand", "completed"):
            # A live worker holds t0 (requeue, heartbeat, delete_task -> task_active) ...
            self.enqueue("t0", queue, b"a", 1, 30 if name == "completed" else 0, None)
            self.dequeue(queue)
            if name == "completed":  # ... or completed it, retained until now exactly
                self.finish(0, "succeed")
                self._land_on(queue, "retention", 0)
        elif name == "archive_full":  # one more than a small cap: the trim runs at once
            # (Asynq's own code hard-codes a cap of 10,000: a burst that size is no scenario.)
            self.archive_pressure(queue, min(self.policy.max_archive_size + 1, 5),
                                  server=False)
        elif name == "paused":
            self.enqueue("t0", queue, b"a", 1, 0, None)
            self.queue_admin(queue, "pause")
        elif name in ("staged", "stalled_aggregator"):
            # A set staged for a later aggregate (or its timeout) ...
            for task_id in ("t0", "t1"):
                self.add_to_group(task_id, queue, b"a", GROUPS[0], None)
            self.aggregation_check(queue, GROUPS[0], "later", early=False)
            if name == "stalled_aggregator":  # ... or whose aggregator stalled past it: the
                self.jump("aggregation", serve=False)  # set is reclaimed, then its late
                self.recoverer(queue)  # aggregate reads nothing and deletes nothing
                self.aggregate(len(self.staged) - 1, crash=False)
        elif name == "locked":  # a unique lock held by t0; another task with its payload
            self.enqueue("t0", queue, b"a", 1, 0, 30)
        elif name == "evicted_lease":  # a crashed worker's task whose hash Redis then evicted:
            self.enqueue("t0", queue, b"a", 1, 0, None)  # the recoverer meets a lease with
            self.dequeue(queue)  # no message behind it, exactly at its cutoff
            self.finish(0, "crash")
            self.evict(queue, 0)
            if self._land_on(queue, "lease", 0):
                self.recoverer(queue)
        elif name == "evicted_due":  # a scheduled task whose hash was evicted, due now: the
            self.schedule("t0", queue, b"a", 5, None, None)  # forwarder meets an id with no
            self.evict(queue, 0)  # message behind it
            self._land_on(queue, "due", 0)
        elif name == "crowded_group":  # every task in one group: with a drawn max size below
            for task_id in TASK_IDS:  # three, the aggregator stages a set and leaves the rest
                self.add_to_group(task_id, queue, b"a", GROUPS[0], None)
        elif name == "counters_at_max":  # a queue that has run for ages: its total counters
            self.enqueue("t0", queue, b"a", 1, 0, None)  # wrap to 1 on the next task processed
            self.seed_totals(queue, MAX_INT64)
        else:
            raise ValueError(f"unknown scenario {name!r}; expected one of {SCENARIOS}")

    def _land_on(self, queue: str, kind: str, offset: int) -> bool:
        """Advance the clock to ``offset`` seconds from the next deadline of ``kind``."""
        due = self.next_deadline(queue, kind, offset)
        if due is None:
            return False
        self._advance(due + offset - self.clock.seconds)
        return True

    # --- inspector -------------------------------------------------------------------------
    @rule(queue=queues, task_id=task_ids,
          op=st.sampled_from(["delete_task", "archive_task", "run_task"]))
    def inspect_task(self, queue: str, task_id: str, op: str) -> None:
        self.both(op, queue, task_id)

    @rule(queue=queues, state=st.sampled_from(bulk_states("delete_all")), group=groups)
    def delete_all(self, queue: str, state: TaskState, group: str) -> None:
        self._bulk("delete_all", queue, state, group)

    @rule(queue=queues, state=st.sampled_from(bulk_states("archive_all")), group=groups)
    def archive_all(self, queue: str, state: TaskState, group: str) -> None:
        self._bulk("archive_all", queue, state, group)

    @rule(queue=queues, state=st.sampled_from(bulk_states("run_all")), group=groups)
    def run_all(self, queue: str, state: TaskState, group: str) -> None:
        self._bulk("run_all", queue, state, group)

    def _bulk(self, kind: str, queue: str, state: TaskState, group: str) -> None:
        # Prefer an index that holds tasks: an empty one only exercises the EMPTY outcome.
        snap = self.truth(queue)
        holding = [(s, g) for s in bulk_states(kind) for g in GROUPS
                   if snap.get(_index_key(queue, s, g)) is not None]
        if snap.get(_index_key(queue, state, group)) is None and holding:
            state, group = holding[0]
        self.both(f"{kind}_tasks", queue, state,
                  group if state is TaskState.AGGREGATING else None)

    @rule(queue=queues, size=st.integers(2, 5), server=st.booleans())
    def archive_pressure(self, queue: str, size: int, server: bool) -> None:
        """Many tasks archived at once, so the cap and cutoff trims run: by the inspector
        (archive all pending) or by the server (each task fails with SkipRetry)."""
        fresh = []
        with self._not_last():
            for _ in range(size):
                self.counter += 1
                fresh.append(f"p{self.counter}")
                self.both("enqueue", self.message(fresh[-1], queue, b"p", 0, 0))
        if not server:
            self.both("archive_all_tasks", queue, TaskState.PENDING, None)
            return
        with self._not_last():  # each archive is read back (see _note_self_trim)
            for _ in range(size):
                self.dequeue(queue)
        for task_id in fresh:
            if task_id in self.in_hand:
                self.both("archive", self.in_hand.pop(task_id), "skip")

    # --- checks ----------------------------------------------------------------------------
    @invariant()
    def keyspace_is_sound(self) -> None:
        """Invariants on the real keyspace, then exact agreement with the model."""
        for queue in QUEUES:
            actual = self._check_invariants(queue)
            expected = self.model.snapshot(queue) if self.config.oracle else actual
            if expected != actual:
                raise self._leak(Disagreement.KEYSPACE_DIFFERS,
                                 f"keyspace of {queue!r} differs from the model",
                                 expected.diff(actual, "model", "broker"),
                                 keys=_differing_keys(expected, actual))
        self.step_ok = True
        self.step_ops.clear()

    def _paused(self, queue: str) -> bool:
        return self.truth(queue).get(keys.paused(queue)) is not None

    def truth(self, queue: str) -> KeyspaceSnapshot:
        """What the rules steer by: the model's keyspace, or the broker's without the oracle."""
        return self.model.snapshot(queue) if self.config.oracle else self.read(queue)

    def read(self, queue: str) -> KeyspaceSnapshot:
        """The broker's keyspace of ``queue`` now (read straight from a fakeredis server's
        memory when possible: same content as ``sut.snapshot``, without the Lua round trip)."""
        fast = snapshot_from_memory(self.sut, queue) if self.in_memory else None
        if fast is not None:
            return fast
        return self.sut.snapshot(queue) if self.observer is None else self.observer.snapshot(queue)

    def _check_invariants(self, queue: str = QUEUES[0], note: str = "") -> KeyspaceSnapshot:
        """Raise the first invariant the broker's keyspace breaks; return the snapshot.

        Index entries a fault left dangling (and the design has not healed yet) are not judged,
        nor are violations of defects the config ignores.
        """
        actual = self.read(queue)
        judged = self._without_fault_entries(actual)
        violations = [v for v in self._violations(judged) if not self._tolerated(v, actual)]
        if violations:
            found = violation_leak(violations, actual)
            found.bug = self._violation_bug(violations[0], actual)
            if note:
                found.add_note(note)
            raise found
        return actual

    def _violations(self, snap: KeyspaceSnapshot) -> list[Violation]:
        """``check_all`` of ``snap``, remembered for the next step: about half the steps leave
        the keyspace (and the clock) as they found it, and the verdict is a function of both."""
        if self._last_checked is not None and self._last_checked[0] == snap:
            return self._last_checked[1]
        found = check_all(snap, self.policy, strict_locks=self.config.strict)
        self._last_checked = (snap, found)
        return found

    _last_checked: tuple[KeyspaceSnapshot, list[Violation]] | None = None

    def _tolerated(self, v: Violation, snap: KeyspaceSnapshot) -> bool:
        """True for a violation of an ignored defect (remembered by invariant and key; for an
        unregistered queue, BZ-12, every key it holds, so the drain tolerates them too)."""
        if not self.config.ignore:
            return False
        if (v.invariant, v.key) not in self.ignored:
            bug = self._violation_bug(v, snap)
            if not set((bug or "").split("/")) & self.config.ignore:
                return False
            self.ignored.add((v.invariant, v.key))
        if v.invariant == Invariant.QUEUE_REGISTERED:
            self.ignored.update((Invariant.QUEUE_REGISTERED, key) for key in snap.entries)
        return True

    def _leak(self, kind: Disagreement, message: str, detail: str = "", *,
              keys: Collection[str] = (), answer: Any = None) -> LeakFound:
        """The failure of one of the machine's own checks, with the defect it points to."""
        found = disagreement_leak(kind, message, detail, keys)
        found.bug = attribute(kind, self.step_ops, keys=keys, answer=answer,
                              self_trimmed=self.self_trimmed)
        return found

    def _violation_bug(self, v: Violation, snap: KeyspaceSnapshot) -> str | None:
        """The defect violation ``v`` of ``snap`` points to (see :func:`attribute`)."""
        task = snap.task_hash(v.task_id) if v.task_id is not None else None
        return attribute(v.kind, self.step_ops, task_id=v.task_id, task=task, keys=(v.key,),
                         self_trimmed=self.self_trimmed)

    def _note_self_trim(self, msg: TaskMessage) -> None:
        """Remember an id the archive trim removed from the very index it was just added to
        (BZ-16's signature, told apart from BZ-1's older victims by :func:`attribute`)."""
        archived = self.read(msg.queue).get(keys.archived(msg.queue))
        if archived is None or msg.id not in archived.members():
            self.self_trimmed.add(msg.id)

    # --- faults ----------------------------------------------------------------------------
    def _without_fault_entries(self, snap: KeyspaceSnapshot) -> KeyspaceSnapshot:
        """``snap`` as the checks judge it after faults (see
        :func:`harness.faults.without_fault_entries`); evicted ids it finds healed are
        forgotten."""
        mine = {i for q, i in self.evicted if q == snap.queue}
        lost = {i for q, i in self.ever_evicted if q == snap.queue}
        judged, healed = without_fault_entries(snap, mine, lost)
        self.evicted -= {(snap.queue, i) for i in healed}
        return judged

    def _blocked(self, queue: str, task_id: str) -> bool:
        """An evicted id is not reused while it dangles outside ``completed``."""
        if (queue, task_id) not in self.evicted:
            return False
        blocked = dangles_outside_completed(self.truth(queue), task_id)
        if blocked:
            self.steps.append(f"(id {task_id} not reused: it still dangles)")
        return blocked

    def evict(self, queue: str, pick: int, resubmit: bool = False) -> None:
        """Fault: Redis evicts a task hash (or an operator DELs it); its entries dangle.
        With ``resubmit`` the producer, seeing the task gone, enqueues it again under the same
        id (allowed only while the old id dangles nowhere but in ``completed``)."""
        truth = self.truth(queue)
        ids = sorted(truth.task_ids())
        if not ids:
            return
        task_id = ids[pick % len(ids)]
        old = (truth.task_hash(task_id) or {}).get("msg")
        self.steps.append(f"evict({queue!r}, {task_id!r})")
        self.step_ops.append(Op("evict", (queue, task_id), "ok"))
        self.model.evict(queue, task_id)
        self._behind_the_broker().delete(keys.task(queue, task_id))
        self.evicted.add((queue, task_id))
        self.ever_evicted.add((queue, task_id))
        if resubmit and isinstance(old, TaskMessage) and not self._blocked(queue, task_id):
            self.both("enqueue", self.message(task_id, queue, old.payload, old.retry,
                                              old.retention))

    def seed_totals(self, queue: str, value: int) -> None:
        """A starting state, not an operation: both total counters of ``queue`` already hold
        ``value``, written behind the broker (a queue that has processed that many tasks)."""
        self.steps.append(f"seed_totals({queue!r}, {value})")
        self.model.seed_totals(queue, value)
        client = self._behind_the_broker()
        for key in (keys.processed_total(queue), keys.failed_total(queue)):
            client.set(key, value)

    def _behind_the_broker(self) -> Any:
        """The broker's client, for a write the broker does not make (what was observed is
        forgotten)."""
        return self.sut.client if self.observer is None else self.observer.client

    def flood(self, queue: str) -> None:
        """A burst of ``config.flood`` tasks, all archived at once; then the archive cutoff
        passes in quiet. The tasks arrive by a bulk import written exactly as ``enqueue``
        writes them. With the oracle, the import writes them archived at once, exactly as the
        model's ``archive_all_tasks`` leaves them (the agreement check after the step holds it
        to that), which spares the costly 8000-task script; without, the archive is the real
        one."""
        if self.flooded:
            return
        self.flooded = True
        self.steps.append(f"flood({queue!r}, {self.config.flood})")
        msgs = [self.message(f"f{i}", queue, b"f", 0, 0) for i in range(self.config.flood)]
        for msg in msgs:
            self.model.enqueue(msg)
        direct = self.config.oracle
        if direct:
            self.model.archive_all_tasks(queue, TaskState.PENDING)
        state = TaskState.ARCHIVED if direct else TaskState.PENDING
        pipe = self._behind_the_broker().pipeline(transaction=False)
        pipe.sadd(keys.ALL_QUEUES, queue)
        for msg in msgs:
            pipe.hset(keys.task(queue, msg.id), mapping={
                "msg": self.sut.encode(msg), "state": state.value,
                "pending_since": str(self.clock.now_ns)})
        if direct:
            pipe.zadd(keys.archived(queue), dict.fromkeys((m.id for m in msgs), self.sut.now_s))
        else:
            pipe.lpush(keys.pending(queue), *(m.id for m in msgs))
        pipe.execute()
        if not direct:
            self.both("archive_all_tasks", queue, TaskState.PENDING, None)
        self._advance(self.policy.archive_cutoff + 1)

    flooded = False
    #: Rules a swarm example may use (every rule outside swarm mode).
    enabled: frozenset[str] = frozenset()

    def teardown(self) -> None:
        if currently_in_test_context():
            # Steer generation toward runs that execute many different transitions.
            target(float(len(self.reached)), label="transitions executed")
        try:
            if self.config.drain and self.step_ok and self.steps:
                self.drain()
        finally:  # a failed run keeps its server (it is not reused) but not the connection
            if isinstance(self.sut, Broker):
                self.sut.release_connection()
        release_client(getattr(self.sut, "client", None))

    def drain(self) -> None:
        """Finish everything, pass every deadline, delete what remains, compare to baseline."""
        self.steps.append("--- drain ---")
        with self._not_last():
            for msg in list(self.in_hand.values()):
                self._process(msg, "succeed")
            self.in_hand.clear()
            self.stale.clear()
            p = self.policy
            for queue in QUEUES:
                self._drain_queue(queue, p)
        self._advance(max(p.stats_ttl, p.archive_cutoff) + 3600)
        for queue in QUEUES:
            self.sut.expire_due(queue)
            self.keyspace_is_sound()
            self._check_leftovers(queue)
            with self._not_last():  # SREM asynq:queues follows, outside the script
                self.both("remove_queue", queue, True)
            left = self.read(queue)
            if (left.entries or left.registered) and "BZ-12" not in self.config.ignore:
                raise self._leak(Disagreement.REMOVE_QUEUE_LEFT_KEYS,
                                 f"remove_queue({queue!r}) left keys behind",
                                 KeyspaceSnapshot(queue, left.now_ms, {}).diff(left),
                                 keys=left.entries)

    def _drain_queue(self, queue: str, p: Policy) -> None:
        """Recover, reclaim, then delete every index that holds tasks. Indexes the truth shows
        empty are skipped: the keyspace check at the end still sees anything left behind."""
        if self._paused(queue):
            self.both("unpause", queue)
        truth = self.truth(queue)
        if truth.get(keys.lease(queue)) is not None:
            self._advance(p.lease_duration + p.recover_skew + 1)
            self.both("recover", queue)
        if truth.get(keys.aggregation_sets(queue)) is not None:
            self._advance(p.aggregation_timeout + 1)
            self.both("reclaim_stale_aggregation_sets", queue)
        truth = self.truth(queue)
        for state in bulk_states("delete_all"):
            if state is not TaskState.AGGREGATING and truth.get(keys.state_index(queue, state)) is not None:
                self.both("delete_all_tasks", queue, state, None)
        for group in GROUPS:
            if truth.get(keys.group(queue, group)) is not None:
                self.both("delete_all_tasks", queue, TaskState.AGGREGATING, group)

    def _check_leftovers(self, queue: str) -> None:
        """Only the baseline may survive the drain (keys of ignored defects excepted)."""
        snap = self.read(queue)
        tolerated = {key for _, key in self.ignored}
        extra = sorted(set(snap.entries) - drain_baseline(queue) - tolerated)
        if not extra:
            return
        detail = "\n".join(f"  {k}: {snap.entries[k].describe()}" for k in extra)
        found = self._leak(Disagreement.SURVIVED_DRAIN,
                           f"{len(extra)} key(s) of {queue!r} survived the drain", detail,
                           keys=extra)
        if not set((found.bug or "").split("/")) & self.config.ignore:
            raise found


_READ_ONLY = frozenset({"read_aggregation_set", "list_lease_expired"})
_BULK_COUNTS = frozenset({
    "forward_if_ready", "delete_expired_completed_tasks", "delete_expired_archived_tasks",
    "recover", "reclaim_stale_aggregation_sets", "aggregation_check", "delete_all_tasks",
    "archive_all_tasks", "run_all_tasks", "extend_lease",
})


def _differing_keys(expected: KeyspaceSnapshot, actual: KeyspaceSnapshot) -> frozenset[str]:
    """The keys whose entries differ between the two keyspaces (absent on one side included)."""
    return frozenset(k for k in expected.entries.keys() | actual.entries.keys()
                     if expected.entries.get(k) != actual.entries.get(k))


def _index_key(queue: str, state: TaskState, group: str) -> str:
    """The key holding ``state``'s tasks (the group zset for aggregating)."""
    return keys.group(queue, group) if state is TaskState.AGGREGATING \
        else keys.state_index(queue, state)


def _event(label: str) -> None:
    """Record a Hypothesis event when running under Hypothesis (printed programs run outside)."""
    if currently_in_test_context():
        event(label)


def _attempt(method: Callable[..., Any], args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> tuple[str, Any]:
    """("ok", value) or (outcome, None) for a refusal; a script failure is its own outcome."""
    try:
        return ("ok", method(*args, **kwargs))
    except ScriptError as err:
        return ("script_error", str(err).split(":")[0])
    except KeysimError as err:
        return (err.outcome.value, None)


def _named(operation: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    named = dict(kwargs)
    if operation.endswith("_all_tasks"):
        named["state"] = args[1]
    if operation == "remove_queue" and len(args) > 1:
        named["force"] = args[1]
    return named


def render_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """An operation's arguments as a person reads them: messages by id, states by value.

    >>> render_args(("default", TaskState.PENDING), {"group": None})
    "('default', pending, group=None)"
    """
    parts = [_short(a) for a in args] + [f"{k}={_short(v)}" for k, v in kwargs.items()]
    return "(" + ", ".join(parts) + ")"


def _short(value: Any) -> str:
    if isinstance(value, TaskMessage):
        return f"msg({value.id})"
    if isinstance(value, TaskState):
        return value.value
    return repr(value)


class EvictRule(KeyMachine):
    """The ``evict`` fault as a rule (mixed in when ``MachineConfig.faults``)."""

    @rule(queue=queues, pick=picks, resubmit=st.booleans())
    def evict_rule(self, queue: str, pick: int, resubmit: bool) -> None:
        """Redis evicts one task hash (or an operator DELs it); maybe the task is resubmitted."""
        self.evict(queue, pick, resubmit)


class FloodRule(KeyMachine):
    """The ``flood`` burst, first thing in every example (mixed in when ``MachineConfig.flood``:
    each example then costs seconds, so such runs are short)."""

    @initialize(queue=queues)
    def flood_rule(self, queue: str) -> None:
        """A burst of archived tasks, then the archive cutoff passes."""
        self.flood(queue)


#: The deadline kinds the ``deadline`` rule lands on (see :meth:`KeyMachine.next_deadline`).
DEADLINES = ("retention", "cutoff", "lease", "due", "unique", "grace", "set_timeout")


class DeadlineRule(KeyMachine):
    """Time steps that land on deadlines (mixed in when ``MachineConfig.deadlines``)."""

    @rule(queue=queues, kind=st.sampled_from(DEADLINES), offset=st.sampled_from([0, -1, 1]),
          serve=st.booleans())
    def deadline(self, queue: str, kind: str, offset: int, serve: bool) -> None:
        """Time lands exactly on the next deadline of ``kind`` (``offset`` 0), one second
        before it or one after — off-by-one at a boundary is where such code breaks; with
        ``serve`` the server's background loops then run."""
        if self._land_on(queue, kind, offset) and serve:
            self._serve()


def _setup_rule(config: MachineConfig, fix: Callable[[Policy], Policy]) -> dict[str, Any]:
    """The ``setup`` initialize step: this example's policy and starting scenario, drawn.
    Fields that ``fix`` overrides (Asynq's hard-coded ones on its own code) are not drawn."""
    arguments: dict[str, st.SearchStrategy[Any]] = {}
    if config.scenarios:
        arguments["scenario"] = st.sampled_from(SCENARIOS)
    if config.policies:
        arguments.update({
            name: st.sampled_from(choices) for name, choices in POLICY_CHOICES.items()
            if all(getattr(fix(replace(config.policy, **dict[str, Any]({name: c}))), name) == c
                   for c in choices)})

    def setup(self: KeyMachine, scenario: str = "none", **policy: int) -> None:
        """The example's own policy and starting scenario (see :meth:`KeyMachine.begin`)."""
        self.begin(scenario, **policy)

    make: Callable[..., Any] = initialize
    return {"setup": make(**arguments)(setup)}


def make_machine(config: MachineConfig, name: str | None = None) -> type[KeyMachine]:
    """A machine class bound to ``config``; ``Machine.TestCase`` runs it under unittest/pytest.

    The fault rules exist only in machines whose config asks for them, so the default machine
    (and the programs Hypothesis generates for it) does not change. Fields set by
    :func:`overriding` replace the config's; on the ``asynq`` backend the policy's fields Asynq
    hard-codes take Asynq's values (``broker.asynq_go.asynq_fixed``).
    """
    config = replace(config, **(_OVERRIDES.get() or {}))
    body: dict[str, Any] = {}
    if config.backend == ASYNQ_BACKEND:
        from broker.asynq_go import asynq_fixed, version_of

        fix = partial(asynq_fixed, version=config.asynq_version or version_of(config.variant))
        config = replace(config, policy=fix(config.policy))
        body["fix_policy"] = staticmethod(fix)
    label = name or f"KeyMachine_{config.variant}"
    ident = "".join(c if c.isalnum() else "_" for c in label)
    from harness.fault_rules import fault_mixins  # its rules subclass KeyMachine

    bases: tuple[type[KeyMachine], ...] = (
        *fault_mixins(config.fault_rules),
        *((EvictRule,) if config.faults else ()), *((FloodRule,) if config.flood else ()),
        *((DeadlineRule,) if config.deadlines else ()), KeyMachine)
    body["config"] = config
    if config.policies or config.scenarios:
        body.update(_setup_rule(config, body.get("fix_policy", KeyMachine.fix_policy)))
    if config.swarm or config.rules is not None:
        body.update(swarm_rules(bases, config.rules))
    return type(ident, bases, body)


_OVERRIDES: ContextVar[dict[str, Any] | None] = ContextVar("machine_overrides", default=None)


@contextmanager
def overriding(**fields: Any) -> Iterator[None]:
    """Within the block, :func:`make_machine` replaces these config fields — to replay a printed
    program on another backend, e.g. ``overriding(backend="asynq")``."""
    names = {f.name for f in dataclasses.fields(MachineConfig)}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise ValueError(f"unknown MachineConfig field(s): {', '.join(unknown)}")
    token = _OVERRIDES.set({**(_OVERRIDES.get() or {}), **fields})
    try:
        yield
    finally:
        _OVERRIDES.reset(token)


#: Re-exported for printed programs and notebooks: ``from harness.machine import MachineConfig,
#: make_machine`` (and ``MACHINE_POLICY``, ``ASYNQ_BACKEND``, ``LeakFound``) keeps working.
__all__ = ["ASYNQ_BACKEND", "COVERAGE", "MACHINE_POLICY", "QUEUES", "KeyMachine", "LeakFound",
           "MachineConfig", "drain_baseline", "make_machine", "overriding", "render_args",
           "transition_for"]
