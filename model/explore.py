"""Exhaustive small-scope exploration of the reference model.

:func:`explore` runs every sequence of up to ``depth`` actions over a bounded alphabet — one
queue, task ids ``t0..t{n-1}``, one group, one payload (so every unique lock collides), fixed
arguments — breadth first, from an empty keyspace, checks the invariants of
:mod:`model.invariants` on every distinct reachable state and reports which transitions of
:data:`~model.transitions.TRANSITIONS` fired with which outcome, which never fired OK, and the
shortest trace to every violation.

**The alphabet.** Every operation of the table appears with fixed arguments, for every task id
where it takes one, whether or not it is enabled: refused calls exercise the guards. Server
exits (done, retry, ...) pass the message stored in the task's hash (what the worker got from
dequeue), or a fresh message when there is none. ``aggregation_check`` stages into the first
free set id ``s0, s1, ...`` (a deterministic stand-in for uuid4); ``delete_aggregation_set``
names each of those ids. Time moves only by *advance* actions, each jumping just past one or
more of the policy's thresholds (process_at delay, retry delay, retention, unique TTL,
lease + recover skew, aggregation grace / max delay / timeout, archive cutoff; equal jumps are
merged). The policy's retry delay must be constant for the state space to stay small
(:func:`explore_policy` uses :func:`fixed_retry_delay`).

**The abstract state** (what two visited states must share to be merged) is time-independent:

* every score and deadline is taken relative to now. Within a *family* of values compared with
  each other (lease; scheduled; retry; completed; archived; group and aggregation-set member
  scores, which a reclaim merges; aggregation-set deadlines), values at or below ``now - k`` for
  the largest ``k`` the family is compared against are renumbered by rank. Every later
  comparison is ``score <= now' - k`` with ``now' >= now``, so such values compare alike forever
  and only their order matters, which renumbering keeps. Lock deadlines are always ahead of
  now (expired locks are gone) and are kept exactly;
* what no operation branches on is dropped: the ``result`` and ``pending_since`` fields, the
  pause time (kept as paused / not paused), and of a message everything but id, queue,
  ``unique_key``, ``group_key`` and ``retried`` — capped at ``retry``, since only ``retried >=
  retry`` is ever tested;
* counters are kept only as "some counter exists": their values and daily-key dates depend on
  absolute time and feed nothing but themselves (the MaxInt64 wrap is out of reach);
* aggregation-set ids are dropped (sets are ordered by deadline, group and members).

So the abstract state space is finite for a constant retry delay. Invariants are checked on the
concrete representative of each abstract state, with ``strict_locks`` (the reference releases
locks early). Merging can hide only a violation that lives in a dropped value (a counter's
TTL, say), and the model writes those values the same way on every path.

``keysim explore --tasks 2 --depth 6`` visits 7,936 abstract states in about 7 s of CPU,
``--depth 8`` 23,258 in about 28 s of CPU; the command prints the wall time, and
BENCHMARKS.md keeps the measurements.

>>> report = explore(tasks=1, depth=2, check=lambda snap, policy: [])
>>> report.states > 1, report.violations
(True, [])
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from model import keys
from model.errors import KeysimError
from model.message import TaskMessage
from model.policy import DAY, Policy
from model.reference import QueueStore, ReferenceModel
from model.snapshot import KeyspaceSnapshot
from model.states import TaskState
from model.transitions import TRANSITIONS, Outcome
from model.validation import check_group, check_queue

QUEUE = "q"
GROUP = "g"
TASK_TYPE = "job"
PAYLOAD = b"p"
#: Seconds. Every small threshold of the alphabet is 5 s, so one time step (+6 s) passes them
#: all while the lock of schedule_unique (process_at + ttl = 10 s) outlives it; the archive
#: cutoff (one day) has its own step. Few distinct steps keep the relative times few.
SCHEDULE_DELAY = 5
UNIQUE_TTL = 5
RETENTION = 5
RETRY_DELAY = 5
#: msg.retry: one counted failure exhausts the retries (so recover archives on the second lease loss).
MAX_RETRY = 1
ERROR = "boom"
RESULT = b"r"


def fixed_retry_delay(retried: int, rng: random.Random) -> int:
    """A constant retry delay (:data:`RETRY_DELAY` s), so the explored state space stays finite."""
    return RETRY_DELAY


def explore_policy(max_archive_size: int = 1) -> Policy:
    """The small-scope policy :func:`explore` uses by default.

    Archive cap ``max_archive_size`` (1: every second archive trims), a one-day cutoff and
    stats TTL, lease 3 s + recover skew 2 s, aggregation grace and timeout 5 s, groups
    aggregated at 2 tasks (case A) or after the grace (case C), a constant retry delay.

    >>> sorted(time_steps(explore_policy()))
    [6, 86401]
    """
    return Policy(max_archive_size=max_archive_size, archive_cutoff_days=1, lease_duration=3,
                  recover_skew=2, aggregation_grace=5, aggregation_max_size=2,
                  aggregation_max_delay=0, aggregation_timeout=5, stats_ttl=DAY,
                  retry_delay=fixed_retry_delay)


class ViolationLike(Protocol):
    """What :func:`explore` needs of an invariant violation (``model.invariants.Violation``)."""

    @property
    def invariant(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def task_id(self) -> str | None: ...
    @property
    def message(self) -> str: ...


Checker = Callable[[KeyspaceSnapshot, Policy], Sequence[ViolationLike]]


# --- the alphabet --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """One letter of the alphabet: a labelled call on the model.

    ``transition`` names the row of TRANSITIONS it exercises (None for time steps); ``run``
    performs it and returns the outcome when it does not raise (a refusal's outcome comes from
    its exception).
    """

    label: str
    transition: str | None
    run: Callable[[ReferenceModel], Outcome]
    client: bool = False

    def __repr__(self) -> str:
        return self.label


def base_message(task_id: str) -> TaskMessage:
    """The one message shape of the alphabet: same type and payload for every id."""
    return TaskMessage(type=TASK_TYPE, payload=PAYLOAD, id=task_id, queue=QUEUE, retry=MAX_RETRY,
                       retention=RETENTION)


def _worker_message(model: ReferenceModel, task_id: str) -> TaskMessage:
    """What a worker holds for ``task_id``: the stored message, else a fresh one."""
    msg = model.store(QUEUE).hashes.get(task_id, {}).get("msg")
    return msg if isinstance(msg, TaskMessage) else base_message(task_id)


def _ok(value: object) -> Outcome:
    """OK for a truthy result (something moved), EMPTY otherwise."""
    return Outcome.OK if value else Outcome.EMPTY


def _done(call: Callable[[ReferenceModel], object]) -> Callable[[ReferenceModel], Outcome]:
    """Wrap a call that returns nothing useful: reaching its end means OK."""
    def run(model: ReferenceModel) -> Outcome:
        call(model)
        return Outcome.OK
    return run


def _client_actions(t: str) -> list[Action]:
    m = base_message(t)

    def at(model: ReferenceModel) -> int:
        return model.now_s + SCHEDULE_DELAY

    return [
        Action(f"enqueue({t})", "enqueue", _done(lambda x: x.enqueue(m)), client=True),
        Action(f"enqueue_unique({t})", "enqueue_unique",
               _done(lambda x: x.enqueue_unique(m, UNIQUE_TTL)), client=True),
        Action(f"schedule({t})", "schedule", _done(lambda x: x.schedule(m, at(x))), client=True),
        Action(f"schedule_unique({t})", "schedule_unique",
               _done(lambda x: x.schedule_unique(m, at(x), SCHEDULE_DELAY + UNIQUE_TTL)),
               client=True),
        Action(f"add_to_group({t})", "add_to_group", _done(lambda x: x.add_to_group(m, GROUP)),
               client=True),
        Action(f"add_to_group_unique({t})", "add_to_group_unique",
               _done(lambda x: x.add_to_group_unique(m, GROUP, UNIQUE_TTL)), client=True),
    ]


def _worker_actions(t: str) -> list[Action]:
    def w(model: ReferenceModel) -> TaskMessage:
        return _worker_message(model, t)

    def extend(model: ReferenceModel) -> Outcome:
        return Outcome.OK if model.extend_lease(QUEUE, t) else Outcome.NOT_FOUND

    return [
        Action(f"done({t})", "done", _done(lambda x: x.done(w(x)))),
        Action(f"mark_as_complete({t})", "mark_as_complete",
               _done(lambda x: x.mark_as_complete(w(x)))),
        Action(f"requeue({t})", "requeue", _done(lambda x: x.requeue(w(x)))),
        Action(f"retry({t}, failure)", "retry_failure",
               _done(lambda x: x.retry(w(x), x.now_s + RETRY_DELAY, ERROR, True))),
        Action(f"retry({t}, no failure)", "retry_nonfailure",
               _done(lambda x: x.retry(w(x), x.now_s + RETRY_DELAY, ERROR, False))),
        Action(f"archive({t})", "archive", _done(lambda x: x.archive(w(x), ERROR))),
        Action(f"extend_lease({t})", "extend_lease", extend),
        Action(f"write_result({t})", "write_result",
               _done(lambda x: x.write_result(QUEUE, t, RESULT))),
    ]


def _inspector_task_actions(t: str) -> list[Action]:
    return [
        Action(f"delete_task({t})", "delete_task", _done(lambda x: x.delete_task(QUEUE, t))),
        Action(f"archive_task({t})", "archive_task", _done(lambda x: x.archive_task(QUEUE, t))),
        Action(f"run_task({t})", "run_task", _done(lambda x: x.run_task(QUEUE, t))),
    ]


def _set_key(set_id: str) -> str:
    return keys.group_set(QUEUE, GROUP, set_id)


def _free_set_id(model: ReferenceModel, tasks: int) -> str:
    """The first of s0, s1, ... not in use (each set holds a task, so one is always free)."""
    store = model.store(QUEUE)
    used = set(store.agg_sets) | set(store.agg_deadlines)
    return next(f"s{i}" for i in range(tasks + 1) if _set_key(f"s{i}") not in used)


def _server_actions(tasks: int) -> list[Action]:
    def dequeue(model: ReferenceModel) -> Outcome:
        if model.dequeue(QUEUE) is not None:
            return Outcome.OK
        return Outcome.PAUSED if model.store(QUEUE).paused is not None else Outcome.EMPTY

    def check(model: ReferenceModel) -> Outcome:
        return _ok(model.aggregation_check(QUEUE, GROUP, _free_set_id(model, tasks)))

    def delete_set(set_id: str) -> Callable[[ReferenceModel], Outcome]:
        def run(model: ReferenceModel) -> Outcome:
            existed = _set_key(set_id) in model.store(QUEUE).agg_sets
            model.delete_aggregation_set(QUEUE, GROUP, set_id)
            return _ok(existed)
        return run

    return [
        Action("dequeue", "dequeue", dequeue),
        Action("forward_if_ready", "forward", lambda x: _ok(x.forward_if_ready(QUEUE))),
        Action("delete_expired_completed_tasks", "delete_expired_completed",
               lambda x: _ok(x.delete_expired_completed_tasks(QUEUE))),
        Action("delete_expired_archived_tasks", "delete_expired_archived",
               lambda x: _ok(x.delete_expired_archived_tasks(QUEUE))),
        Action("recover", "recover", lambda x: _ok(x.recover(QUEUE))),
        Action("aggregation_check", "aggregation_check", check),
        *(Action(f"delete_aggregation_set(s{i})", "delete_aggregation_set", delete_set(f"s{i}"))
          for i in range(tasks)),
        Action("reclaim_stale_aggregation_sets", "reclaim_stale_aggregation_sets",
               lambda x: _ok(x.reclaim_stale_aggregation_sets(QUEUE))),
        Action("pause", "pause", _done(lambda x: x.pause(QUEUE))),
        Action("unpause", "unpause", _done(lambda x: x.unpause(QUEUE))),
    ]


def _bulk_actions() -> list[Action]:
    out = []
    for name, row in TRANSITIONS.items():
        if row.operation not in ("delete_all_tasks", "archive_all_tasks", "run_all_tasks"):
            continue
        state = row.sources[0]
        group = GROUP if state is TaskState.AGGREGATING else None
        op = row.operation

        def run(model: ReferenceModel, op: str = op, state: TaskState = state,
                group: str | None = group) -> Outcome:
            return _ok(getattr(model, op)(QUEUE, state, group))

        out.append(Action(f"{op}({state.value})", name, run))
    out.append(Action("remove_queue", "remove_queue",
                      _done(lambda x: x.remove_queue(QUEUE, False))))
    out.append(Action("remove_queue(force)", "remove_queue_force",
                      _done(lambda x: x.remove_queue(QUEUE, True))))
    return out


def time_steps(policy: Policy) -> dict[int, list[str]]:
    """Jump (s) → the thresholds it passes; each jump is one past a threshold of the alphabet."""
    thresholds = {
        "process_at": SCHEDULE_DELAY,
        "retry delay": max(policy.retry_delay_for(f"t{i}", r) for i in range(2)
                           for r in range(MAX_RETRY + 1)),
        "retention": RETENTION,
        "unique ttl": UNIQUE_TTL,
        "lease+skew": policy.lease_duration + policy.recover_skew,
        "grace": policy.aggregation_grace,
        "aggregation timeout": policy.aggregation_timeout,
        "archive cutoff": policy.archive_cutoff,
    }
    if policy.aggregation_max_delay > 0:
        thresholds["max delay"] = policy.aggregation_max_delay
    steps: dict[int, list[str]] = {}
    for name, seconds in thresholds.items():
        steps.setdefault(seconds + 1, []).append(name)
    return dict(sorted(steps.items()))


def _advance(seconds: int) -> Callable[[ReferenceModel], Outcome]:
    def run(model: ReferenceModel) -> Outcome:
        model.clock.advance(seconds)
        return Outcome.OK
    return run


def alphabet(tasks: int, policy: Policy) -> list[Action]:
    """Every action of the exploration, in a fixed order."""
    ids = [f"t{i}" for i in range(tasks)]
    actions = [a for t in ids for a in _client_actions(t)]
    actions += _server_actions(tasks)
    actions += [a for t in ids for a in _worker_actions(t)]
    actions += [a for t in ids for a in _inspector_task_actions(t)]
    actions += _bulk_actions()
    actions += [Action(f"advance(+{s}s: {', '.join(names)})", None, _advance(s))
                for s, names in time_steps(policy).items()]
    return actions


# --- the abstract state --------------------------------------------------------------------------


def _family(*zsets: dict[str, int], now: int, horizon: int) -> list[tuple[tuple[str, int], ...]]:
    """Canonical forms of zsets whose scores are compared with each other.

    Scores become relative to now; those <= now - horizon are renumbered -horizon, -horizon-1,
    ... by rank over all the zsets together (order and ties kept).
    """
    limit = now - horizon
    old = sorted({s for z in zsets for s in z.values() if s <= limit}, reverse=True)
    canon = {s: -horizon - i for i, s in enumerate(old)}
    return [tuple(sorted((m, canon[s] if s in canon else s - now) for m, s in z.items()))
            if z else () for z in zsets]


def _zset(zset: dict[str, int], now: int, horizon: int) -> tuple[tuple[str, int], ...]:
    """:func:`_family` of one zset (with a fast path for the common empty case)."""
    return _family(zset, now=now, horizon=horizon)[0] if zset else ()


#: Hash fields no operation ever branches on (they are only written, copied or deleted).
_DATA_FIELDS = frozenset({"pending_since", "result"})


def _message(msg: object) -> Hashable:
    """The parts of a message an operation branches on: id, retried (capped), lock and group."""
    if not isinstance(msg, TaskMessage):
        return msg if isinstance(msg, str) else repr(msg)
    return (msg.id, msg.queue, min(msg.retried, msg.retry), msg.unique_key, msg.group_key)


def _hash(fields: dict[str, Any]) -> tuple[tuple[str, Hashable], ...]:
    return tuple((name, _message(value) if name == "msg" else value)
                 for name, value in sorted(fields.items()) if name not in _DATA_FIELDS)


def abstract_state(model: ReferenceModel, queue: str = QUEUE) -> Hashable:
    """The time-independent abstraction of ``queue`` (see the module docstring)."""
    store: QueueStore = model.store(queue)
    p, now, now_ms = model.policy, model.now_s, model.now_ms
    index = store.index
    return (
        queue in model.queues(),
        store.paused is not None,
        tuple((i, _hash(h)) for i, h in sorted(store.hashes.items())),
        tuple(store.pending), tuple(store.active),
        _zset(store.lease, now, p.recover_skew),
        _zset(index[TaskState.SCHEDULED], now, 0),
        _zset(index[TaskState.RETRY], now, 0),
        _zset(index[TaskState.COMPLETED], now, 0),
        _zset(index[TaskState.ARCHIVED], now, p.archive_cutoff),
        _groups_and_sets(queue, store, now, max(p.aggregation_grace, p.aggregation_max_delay)),
        tuple(sorted(store.group_names)),
        tuple(sorted((k, owner, d - now_ms) for k, (owner, d) in store.locks.items()
                     if d > now_ms)),
        any(d is None or d > now_ms for _, d in store.counters.values()),
    )


def _groups_and_sets(queue: str, store: QueueStore, now: int, horizon: int) -> Hashable:
    """Groups, then aggregation sets renamed s0, s1, ... in (deadline, members) order.

    Group and set-member scores are one family (a reclaim merges them); deadlines another.
    """
    if not (store.groups or store.agg_sets or store.agg_deadlines):
        return (), ()
    group_names = sorted(store.groups)
    set_keys = sorted(set(store.agg_sets) | set(store.agg_deadlines))
    zsets = [store.groups[g] for g in group_names] + [store.agg_sets.get(k, {}) for k in set_keys]
    canon = _family(*zsets, now=now, horizon=horizon)
    deadline = dict(_zset(store.agg_deadlines, now, 0))
    prefix = keys.group_prefix(queue)
    sets = []
    for k, members in zip(set_keys, canon[len(group_names):], strict=True):
        indexed = k in deadline
        sets.append((indexed, deadline.get(k, 0), k[len(prefix):].split(":", 1)[0], members,
                     k in store.agg_sets))
    sets.sort()
    return tuple(zip(group_names, canon[:len(group_names)], strict=True)), tuple(sets)


# --- the search ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """A violation and the shortest action sequence that reaches it."""

    invariant: str
    key: str
    task_id: str | None
    message: str
    trace: tuple[str, ...]


@dataclass
class ExploreReport:
    """What :func:`explore` found. ``ok`` is True when nothing was violated and every
    transition fired OK at least once."""

    tasks: int
    depth: int
    policy: Policy
    states: int = 0
    fired: dict[str, Counter[Outcome]] = field(default_factory=dict)
    steps: Counter[str] = field(default_factory=Counter)
    per_depth: list[int] = field(default_factory=list)
    violations: list[Found] = field(default_factory=list)
    violating_states: int = 0
    seconds: float = 0.0
    #: The search tree: abstract state → (parent state, action label) of its first discovery,
    #: None for the initial state; in discovery (breadth-first) order. harness.replay walks it.
    parents: dict[Hashable, tuple[Hashable, str] | None] = field(
        default_factory=dict, repr=False, compare=False)

    @property
    def never_enabled(self) -> list[str]:
        """Transitions that never fired with outcome OK within the bound, in table order."""
        return [n for n in TRANSITIONS if not self.fired.get(n, Counter())[Outcome.OK]]

    @property
    def transitions_fired(self) -> int:
        return sum(sum(c.values()) for c in self.fired.values())

    @property
    def ok(self) -> bool:
        return not self.violations and not self.never_enabled

    def format(self) -> str:
        """A human-readable report."""
        p = self.policy
        lines = [
            f"explore: {self.tasks} task(s), depth {self.depth}, max_archive_size="
            f"{p.max_archive_size} (capacity {p.archive_capacity})",
            f"states explored: {self.states} (new per depth: "
            f"{', '.join(map(str, self.per_depth))}); transitions fired: "
            f"{self.transitions_fired}; {self.seconds:.1f} s",
            "time steps taken: " + (", ".join(f"{k} x{v}" for k, v in self.steps.items())
                                    or "none"),
            "",
            *self._table(),
            "",
            "never enabled: " + (", ".join(self.never_enabled) or "none"),
        ]
        if not self.violations:
            lines.append("violations: none")
        else:
            lines.append(f"violations: {len(self.violations)} distinct, in "
                         f"{self.violating_states} state(s)")
            for v in self.violations:
                where = f" task {v.task_id}" if v.task_id else ""
                lines.append(f"  {v.invariant} [{v.key}]{where}: {v.message}")
                lines.append(f"    shortest trace ({len(v.trace)}): "
                             + (" ; ".join(v.trace) or "(initial state)"))
        return "\n".join(lines)

    def _table(self) -> list[str]:
        outcomes = [o for o in Outcome if any(c[o] for c in self.fired.values())]
        width = max(len(n) for n in TRANSITIONS)
        head = f"{'transition':<{width}}  " + "  ".join(f"{o.value:>9}" for o in outcomes)
        rows = [head]
        for name in TRANSITIONS:
            counts = self.fired.get(name, Counter())
            rows.append(f"{name:<{width}}  " + "  ".join(f"{counts[o]:>9}" for o in outcomes))
        return rows


def _default_checker() -> Checker:
    # Imported lazily: the invariants module is independent of the exploration.
    from model.invariants import check_all

    def check(snapshot: KeyspaceSnapshot, policy: Policy) -> Sequence[ViolationLike]:
        return check_all(snapshot, policy, strict_locks=True)
    return check


def explore(tasks: int, depth: int, policy: Policy | None = None, *,
            check: Checker | None = None) -> ExploreReport:
    """Breadth-first search over every action sequence of length <= ``depth``.

    ``tasks``: how many task ids (>= 1); ``depth``: the longest sequence (>= 0); ``policy``
    defaults to :func:`explore_policy`; ``check`` maps a snapshot to its invariant violations
    (default: ``model.invariants.check_all`` with strict locks).
    """
    if not isinstance(tasks, int) or isinstance(tasks, bool) or tasks < 1:
        raise ValueError(f"tasks must be an int >= 1, got {tasks!r}")
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 0:
        raise ValueError(f"depth must be an int >= 0, got {depth!r}")
    check_queue(QUEUE)
    check_group(GROUP)
    policy = policy if policy is not None else explore_policy()
    checker = check if check is not None else _default_checker()
    return _Search(tasks, depth, policy, checker).run()


class _Search:
    """The state of one breadth-first search."""

    def __init__(self, tasks: int, depth: int, policy: Policy, check: Checker) -> None:
        self.actions = alphabet(tasks, policy)
        self.check = check
        self.report = ExploreReport(tasks, depth, policy)
        self.report.fired = {name: Counter() for name in TRANSITIONS}
        #: abstract state → (parent abstract state, action label); the root has no parent.
        self.parent: dict[Hashable, tuple[Hashable, str] | None] = {}
        self.seen_violations: set[tuple[str, str, str | None]] = set()

    def run(self) -> ExploreReport:
        started = time.perf_counter()
        root = ReferenceModel(self.report.policy)
        key = abstract_state(root)
        self.parent[key] = None
        self._visit(root, key)
        frontier = [(root, key)]
        for _ in range(self.report.depth):
            frontier = self._expand(frontier)
            self.report.per_depth.append(len(frontier))
            if not frontier:
                break
        self.report.states = len(self.parent)
        self.report.parents = self.parent
        self.report.seconds = time.perf_counter() - started
        return self.report

    def _expand(self, frontier: list[tuple[ReferenceModel, Hashable]]
                ) -> list[tuple[ReferenceModel, Hashable]]:
        fresh = []
        fired = self.report.fired
        for model, key in frontier:
            registered = QUEUE in model.queues()
            work = model.clone()
            for action in self.actions:
                try:
                    outcome = action.run(work)
                except KeysimError as refusal:
                    outcome = refusal.outcome
                    if registered or not action.client:
                        # Refusals write nothing (bar lazy expiry): the work copy is reusable.
                        self._count(action, outcome, fired)
                        continue
                self._count(action, outcome, fired)
                child_key = abstract_state(work)
                if child_key not in self.parent:
                    self.parent[child_key] = (key, action.label)
                    self._visit(work, child_key)
                    fresh.append((work, child_key))
                work = model.clone()
        return fresh

    def _count(self, action: Action, outcome: Outcome, fired: dict[str, Counter[Outcome]]
               ) -> None:
        if action.transition is None:
            self.report.steps[action.label.split(":")[0] + ")"] += 1
        else:
            fired[action.transition][outcome] += 1

    def _visit(self, model: ReferenceModel, key: Hashable) -> None:
        violations = self.check(model.snapshot(QUEUE), model.policy)
        if violations:
            self.report.violating_states += 1
        for v in violations:
            ident = (v.invariant, v.key, v.task_id)
            if ident not in self.seen_violations:
                self.seen_violations.add(ident)
                self.report.violations.append(
                    Found(v.invariant, v.key, v.task_id, v.message, self._trace(key)))

    def _trace(self, key: Hashable) -> tuple[str, ...]:
        labels: list[str] = []
        link = self.parent[key]
        while link is not None:
            key, label = link
            labels.append(label)
            link = self.parent[key]
        return tuple(reversed(labels))

