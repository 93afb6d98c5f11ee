"""The differential conformance test: our ``asynq-<version>`` variant against real Asynq.

Hypothesis generates operation sequences; each sequence is applied, step by step, to
:class:`broker.Broker` (our Lua scripts, variant ``asynq-v0.26.0`` or ``asynq-v0.24.0``) on one
Redis database and to :class:`broker.asynq_go.AsynqGoBroker` (Asynq's own Go code) on another
database of the same server, sharing one :class:`~model.clock.VirtualClock`. After every step the
two answers must be equal (results and counts, the same refusal, or a script failing the same
way: see :func:`script_failure`), and so must the two normalised
keyspaces (:meth:`~broker.base.BrokerBase.snapshot`: msg decoded field by field, TTLs as virtual
deadlines). Besides operations, a step may advance the clock or evict a task hash from both
databases. A divergence raises :class:`Divergence` with the diff, both keyspaces and the steps
so far; Hypothesis then shrinks the sequence and prints it.

>>> Op("tick", (61,))
tick(61)
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.base import BrokerBase
from model import keys
from model.clock import EPOCH_NS, VirtualClock
from model.errors import KeysimError, ScriptError
from model.message import TaskMessage
from model.policy import ASYNQ_POLICY, DAY, Policy
from model.snapshot import KeyspaceSnapshot
from model.states import TaskState
from model.transitions import bulk_states

#: Caller-side knobs of Asynq set so that every aggregation branch is reachable in few steps
#: (AggregationCheck takes them as arguments); everything Asynq hard-codes keeps its value.
CONFORM_POLICY = replace(ASYNQ_POLICY, aggregation_grace=10, aggregation_max_delay=30,
                         aggregation_max_size=2)

QUEUE = "default"
TASK_IDS = ("t0", "t1", "t2")
GROUPS = ("g0", "g1")
#: Never b"": Go's proto3 encoding drops an empty payload, so Asynq re-encodes b"" as None.
PAYLOADS = (b"x", b"y", None)
#: Clock steps: within a lease, past lease + recover skew, past the aggregation timeout, a day,
#: and past the 90-day archive cutoff / stats TTL.
TICKS = (1, 11, 31, 61, 121, 3600, DAY, 91 * DAY)

#: Every operation the differential test drives (both implementations offer all of them).
OPERATIONS = (
    "enqueue", "enqueue_unique", "schedule", "schedule_unique", "add_to_group",
    "add_to_group_unique", "dequeue", "done", "mark_as_complete", "requeue", "retry", "archive",
    "forward_if_ready", "delete_expired_completed_tasks", "delete_expired_archived_tasks",
    "list_lease_expired", "recover", "extend_lease", "aggregation_check", "read_aggregation_set",
    "delete_aggregation_set", "reclaim_stale_aggregation_sets", "write_result", "pause",
    "unpause", "delete_task", "archive_task", "run_task", "delete_all_tasks",
    "archive_all_tasks", "run_all_tasks", "remove_queue",
)


#: Operations whose "ok" answer can be empty (None, 0 or []): counted apart in the coverage.
_MAY_BE_EMPTY = frozenset({
    "dequeue", "forward_if_ready", "delete_expired_completed_tasks",
    "delete_expired_archived_tasks", "list_lease_expired", "recover", "extend_lease",
    "aggregation_check", "reclaim_stale_aggregation_sets", "delete_all_tasks",
    "archive_all_tasks", "run_all_tasks",
})


class Divergence(AssertionError):
    """Our variant and real Asynq answered differently, or left different keyspaces."""


@dataclass(frozen=True)
class Op:
    """One generated step: an operation name and its generated arguments."""

    name: str
    args: tuple[Any, ...] = ()

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(_show(a) for a in self.args)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """Hypothesis prints a failing sequence with this (as the call it stands for)."""
        printer.text(repr(self))


def _show(value: Any) -> str:
    return value.value if isinstance(value, TaskState) else repr(value)


@dataclass
class Run:
    """What one sequence has produced so far: messages handed to workers, staged sets, steps."""

    held: list[TaskMessage] = field(default_factory=list)
    sets: list[tuple[str, str]] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)

    def pick_msg(self, pick: int) -> TaskMessage | None:
        return self.held[pick % len(self.held)] if self.held else None

    def pick_set(self, pick: int) -> tuple[str, str] | None:
        return self.sets[pick % len(self.sets)] if self.sets else None


# --- strategies ---------------------------------------------------------------------------------
ids = st.sampled_from(TASK_IDS)
groups = st.sampled_from(GROUPS)
#: Which dequeued message (or staged set) a step uses: mostly the latest, sometimes an older
#: (possibly stale) one.
picks = st.sampled_from((-1, -1, -1, 0, 1, 2))
messages = st.builds(
    lambda task_id, kind, payload, retry, retention: TaskMessage(
        type=kind, payload=payload, id=task_id, queue=QUEUE, retry=retry, retention=retention),
    ids, st.sampled_from(("a", "b")), st.sampled_from(PAYLOADS), st.integers(0, 2),
    st.sampled_from((0, 0, 60)))
ttls = st.sampled_from((1, 30, 120))
delays = st.sampled_from((0, 5, 60, 3600))
bulk = {
    kind: st.sampled_from([s for s in bulk_states(kind) if s is not TaskState.AGGREGATING]).map(
        lambda s: (s, None)) | groups.map(lambda g: (TaskState.AGGREGATING, g))
    for kind in ("delete_all", "archive_all", "run_all")
}

_STRATEGIES: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "enqueue": st.tuples(messages),
    "enqueue_unique": st.tuples(messages, ttls),
    "schedule": st.tuples(messages, delays),
    "schedule_unique": st.tuples(messages, delays, ttls),
    "add_to_group": st.tuples(messages, groups),
    "add_to_group_unique": st.tuples(messages, groups, ttls),
    "dequeue": st.just(()),
    "done": st.tuples(picks),
    "mark_as_complete": st.tuples(picks),
    "requeue": st.tuples(picks),
    "retry": st.tuples(picks, delays, st.booleans()),
    "archive": st.tuples(picks),
    "forward_if_ready": st.just(()),
    "delete_expired_completed_tasks": st.just(()),
    "delete_expired_archived_tasks": st.just(()),
    "list_lease_expired": st.tuples(st.sampled_from((0, 30, 60))),
    "recover": st.just(()),
    "extend_lease": st.tuples(st.lists(ids, max_size=3).map(tuple)),
    "aggregation_check": st.tuples(groups, st.uuids(version=4).map(str)),
    "read_aggregation_set": st.tuples(picks),
    "delete_aggregation_set": st.tuples(picks),
    "reclaim_stale_aggregation_sets": st.just(()),
    "write_result": st.tuples(ids, st.sampled_from((b"r", b""))),
    "pause": st.just(()),
    "unpause": st.just(()),
    "delete_task": st.tuples(ids),
    "archive_task": st.tuples(ids),
    "run_task": st.tuples(ids),
    "delete_all_tasks": st.tuples(bulk["delete_all"]),
    "archive_all_tasks": st.tuples(bulk["archive_all"]),
    "run_all_tasks": st.tuples(bulk["run_all"]),
    "remove_queue": st.tuples(st.booleans()),
}
assert set(_STRATEGIES) == set(OPERATIONS)

#: How often each operation is drawn relative to the others (default 1): tasks must be created
#: and dequeued before the processor's outcomes and the aggregator have something to work on.
_WEIGHTS = {"enqueue": 4, "enqueue_unique": 2, "schedule": 2, "add_to_group": 3,
            "add_to_group_unique": 2, "dequeue": 5, "done": 2, "retry": 2, "archive": 2,
            "forward_if_ready": 2, "recover": 2, "aggregation_check": 3,
            "read_aggregation_set": 2, "delete_aggregation_set": 2}
#: A clock step (the one step that is not an operation) is drawn like a weight-4 operation.
_TICK_WEIGHT = 4


#: Steps that are not operations, by weight: a clock step, and the eviction of a task hash (as Redis under
#: ``maxmemory`` with an ``allkeys-*`` policy does), the same on both databases; an eviction
#: leaves ids without a hash, where answers depend on how each script treats them.
_EVENT_WEIGHTS = {"tick": _TICK_WEIGHT, "evict": 1}
#: Their names.
EVENTS = tuple(_EVENT_WEIGHTS)


def _draw(name: str) -> st.SearchStrategy[Op]:
    if name == "tick":
        return st.sampled_from(TICKS).map(lambda seconds: Op("tick", (seconds,)))
    if name == "evict":
        return ids.map(lambda task_id: Op("evict", (task_id,)))
    return _STRATEGIES[name].map(lambda args: Op(name, args))


#: One step: an operation (or a clock step or an eviction), drawn by weight, with its arguments.
step = st.sampled_from(
    [name for name in (*OPERATIONS, *_EVENT_WEIGHTS)
     for _ in range(_EVENT_WEIGHTS.get(name) or _WEIGHTS.get(name, 1))]
).flatmap(_draw)
sequences = st.lists(step, min_size=8, max_size=40)


# --- hand-written scenarios (run before the generated sequences) ---------------------------------
def _msg(task_id: str, payload: bytes | None = b"x", **fields: Any) -> TaskMessage:
    return TaskMessage(type="a", payload=payload, id=task_id, queue=QUEUE, **fields)


def _set_id(n: int) -> str:
    return str(uuid.UUID(int=n, version=4))


#: Paths random sequences reach rarely: expired leases, the janitor, reclaim, the archive cutoff,
#: lock and counter expiry, queue removal, stubs. Each is one sequence, compared step by step.
SCENARIOS: dict[str, list[Op]] = {
    "processor": [
        Op("enqueue", (_msg("t0"),)), Op("dequeue"), Op("done", (-1,)),
        Op("enqueue", (_msg("t1", retention=60),)), Op("dequeue"), Op("mark_as_complete", (-1,)),
        Op("enqueue_unique", (_msg("t2"), 30)), Op("dequeue"), Op("requeue", (-1,)),
        Op("dequeue"), Op("retry", (-1, 5, True)), Op("tick", (61,)),
        Op("delete_expired_completed_tasks"), Op("forward_if_ready"), Op("dequeue"),
        Op("retry", (-1, 5, False)), Op("tick", (11,)), Op("forward_if_ready"), Op("dequeue"),
        Op("archive", (-1,)), Op("done", (0,)),
    ],
    "leases": [
        Op("enqueue", (_msg("t0", retry=1),)), Op("enqueue", (_msg("t1", retry=0),)),
        Op("dequeue"), Op("dequeue"), Op("tick", (31,)), Op("list_lease_expired", (0,)),
        Op("extend_lease", (("t0", "t2"),)), Op("tick", (61,)), Op("list_lease_expired", (30,)),
        Op("recover"), Op("tick", (3600,)), Op("forward_if_ready"), Op("dequeue"),
        Op("tick", (61,)), Op("recover"), Op("done", (0,)),
    ],
    "aggregation": [
        Op("add_to_group", (_msg("t0"), "g0")), Op("add_to_group_unique", (_msg("t1"), "g0", 30)),
        Op("add_to_group", (_msg("t2"), "g1")), Op("aggregation_check", ("g0", _set_id(1))),
        Op("read_aggregation_set", (-1,)), Op("tick", (11,)),
        Op("aggregation_check", ("g1", _set_id(2))), Op("tick", (121,)),
        Op("reclaim_stale_aggregation_sets"), Op("read_aggregation_set", (0,)),
        Op("aggregation_check", ("g0", _set_id(3))), Op("delete_aggregation_set", (-1,)),
        Op("add_to_group", (_msg("t0"), "g0")), Op("run_all_tasks", ((TaskState.AGGREGATING, "g1"),)),
        Op("dequeue"), Op("retry", (-1, 0, True)), Op("forward_if_ready"),
        Op("archive_all_tasks", ((TaskState.AGGREGATING, "g1"),)),
        Op("delete_all_tasks", ((TaskState.AGGREGATING, "g0"),)),
    ],
    "archive_cutoff": [
        Op("enqueue", (_msg("t0"),)), Op("dequeue"), Op("archive", (-1,)),
        Op("schedule", (_msg("t1"), 60)), Op("archive_task", ("t1",)), Op("tick", (91 * DAY,)),
        Op("enqueue", (_msg("t2"),)), Op("dequeue"), Op("archive", (-1,)),
        Op("tick", (91 * DAY,)), Op("delete_expired_archived_tasks"), Op("enqueue", (_msg("t0"),)),
        Op("archive_all_tasks", ((TaskState.PENDING, None),)),
        Op("run_all_tasks", ((TaskState.ARCHIVED, None),)), Op("delete_task", ("t1",)),
    ],
    "unique_locks": [
        Op("enqueue_unique", (_msg("t0"), 30)), Op("enqueue_unique", (_msg("t1"), 30)),
        Op("enqueue_unique", (_msg("t0", b"y"), 30)), Op("tick", (31,)),
        Op("enqueue_unique", (_msg("t1"), 30)), Op("schedule_unique", (_msg("t2", b"y"), 60, 120)),
        Op("delete_all_tasks", ((TaskState.PENDING, None),)), Op("enqueue_unique", (_msg("t0"), 1)),
        Op("delete_task", ("t2",)), Op("schedule_unique", (_msg("t2", None), 5, 1)),
        Op("tick", (11,)), Op("forward_if_ready"), Op("dequeue"), Op("done", (-1,)),
    ],
    "queue_admin": [
        Op("enqueue", (_msg("t0"),)), Op("pause"), Op("pause"), Op("dequeue"), Op("unpause"),
        Op("mark_as_complete", (0,)), Op("dequeue"), Op("remove_queue", (True,)),
        Op("schedule", (_msg("t1"), 60)), Op("add_to_group", (_msg("t2"), "g0")),
        Op("remove_queue", (False,)), Op("remove_queue", (True,)), Op("delete_task", ("t2",)),
        Op("run_task", ("t2",)), Op("unpause"),
    ],
    "stubs": [
        Op("write_result", ("t0", b"r")), Op("enqueue", (_msg("t0"),)), Op("delete_task", ("t0",)),
        Op("archive_task", ("t0",)), Op("run_task", ("t0",)), Op("enqueue", (_msg("t1"),)),
        Op("dequeue"), Op("done", (-1,)), Op("write_result", ("t1", b"")),
        Op("extend_lease", (("t1",),)), Op("tick", (DAY,)),
    ],
    # Per-task ops on tasks their state's index does not hold: a zombie an inspector archive
    # trim left (BZ-2), a write_result stub (BZ-18), a task staged in an aggregation set.
    "inconsistent_tasks": [
        Op("schedule", (_msg("t0"), 60)), Op("archive_task", ("t0",)), Op("tick", (91 * DAY,)),
        Op("enqueue", (_msg("t1"),)), Op("archive_task", ("t1",)), Op("delete_task", ("t0",)),
        Op("run_task", ("t0",)), Op("archive_task", ("t0",)), Op("write_result", ("t2", b"r")),
        Op("delete_task", ("t2",)), Op("archive_task", ("t2",)), Op("run_task", ("t2",)),
        Op("delete_all_tasks", ((TaskState.ARCHIVED, None),)),
        Op("add_to_group", (_msg("t1"), "g0")), Op("tick", (31,)),
        Op("aggregation_check", ("g0", _set_id(4))), Op("delete_task", ("t1",)),
        Op("archive_task", ("t1",)), Op("run_task", ("t1",)),
    ],
    # Evicted hashes: bulk deletes of indexes holding ids without a hash, in every state;
    # per-task ops on such ids.
    "evictions": [
        Op("enqueue", (_msg("t0"),)), Op("enqueue", (_msg("t1"),)), Op("evict", ("t0",)),
        Op("delete_task", ("t0",)), Op("archive_task", ("t0",)), Op("run_task", ("t0",)),
        Op("delete_all_tasks", ((TaskState.PENDING, None),)),
        Op("schedule", (_msg("t0"), 60)), Op("add_to_group", (_msg("t1"), "g0")),
        Op("add_to_group", (_msg("t2"), "g0")), Op("evict", ("t0",)), Op("evict", ("t1",)),
        Op("delete_all_tasks", ((TaskState.SCHEDULED, None),)),
        Op("delete_all_tasks", ((TaskState.AGGREGATING, "g0"),)),
        Op("enqueue", (_msg("t0", retry=1),)), Op("dequeue"), Op("retry", (-1, 60, True)),
        Op("enqueue", (_msg("t1"),)), Op("archive_task", ("t1",)),
        Op("enqueue", (_msg("t2", retention=60),)), Op("dequeue"), Op("mark_as_complete", (-1,)),
        Op("evict", ("t0",)), Op("evict", ("t1",)), Op("evict", ("t2",)),
        Op("delete_all_tasks", ((TaskState.RETRY, None),)),
        Op("delete_all_tasks", ((TaskState.ARCHIVED, None),)),
        Op("delete_all_tasks", ((TaskState.COMPLETED, None),)),
    ],
}


# --- applying one step --------------------------------------------------------------------------
def call(broker: BrokerBase, op: Op, run: Run, clock: VirtualClock) -> tuple[str, Any] | None:
    """Apply ``op`` to ``broker``; ("ok", value), (outcome, None), or ("script_error", how it
    failed); None when not applicable (no dequeued message or staged set to pick from)."""
    invoke = _invocation(op, run, clock)
    if invoke is None:
        return None
    method, args = invoke
    return answer(getattr(broker, method), *args)


def answer(method: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """``method(*args)`` as the differential test compares it: ("ok", value), (outcome, None)
    for a refusal, or ("script_error", :func:`script_failure`)."""
    try:
        return ("ok", method(*args))
    except ScriptError as err:
        return ("script_error", script_failure(err))
    except KeysimError as err:
        return (err.outcome.value, None)


def script_failure(err: ScriptError) -> str:
    """How a script failed, in words both implementations share (their messages differ):
    ``"lua_error"`` when it died of a Lua runtime error (Redis names the script's line,
    ``user_script:N``), else ``"error_reply"`` (the script returned an error).

    >>> script_failure(ScriptError("run_task: ERR user_script:11: attempt to concatenate"))
    'lua_error'
    >>> script_failure(ScriptError("run_task: task id not found in zset asynq:{q}:retry"))
    'error_reply'
    """
    return "lua_error" if "user_script" in str(err) else "error_reply"


def _invocation(op: Op, run: Run, clock: VirtualClock) -> tuple[str, tuple[Any, ...]] | None:
    now = clock.now_ns // 10**9
    a = op.args
    if op.name in ("done", "mark_as_complete", "requeue", "retry", "archive"):
        msg = run.pick_msg(a[0])
        if msg is None:
            return None
        if op.name == "retry":
            return op.name, (msg, now + a[1], "boom", a[2])
        return op.name, (msg, "gave up") if op.name == "archive" else (msg,)
    if op.name in ("read_aggregation_set", "delete_aggregation_set"):
        staged = run.pick_set(a[0])
        return None if staged is None else (op.name, (QUEUE, *staged))
    builders: dict[str, Callable[[], tuple[Any, ...]]] = {
        "schedule": lambda: (a[0], now + a[1]),
        "schedule_unique": lambda: (a[0], now + a[1], a[2]),
        "list_lease_expired": lambda: (QUEUE, now - a[0]),
        "extend_lease": lambda: (QUEUE, *a[0]),
        "delete_all_tasks": lambda: (QUEUE, *a[0]),
        "archive_all_tasks": lambda: (QUEUE, *a[0]),
        "run_all_tasks": lambda: (QUEUE, *a[0]),
    }
    if op.name in builders:
        return op.name, builders[op.name]()
    if op.name in ("enqueue", "enqueue_unique", "add_to_group", "add_to_group_unique"):
        return op.name, a
    return op.name, (QUEUE, *a)


def _remember(op: Op, answer: tuple[str, Any], run: Run) -> None:
    kind, value = answer
    if kind != "ok":
        return
    if op.name == "dequeue" and value is not None:
        run.held.append(value)
    if op.name == "aggregation_check" and value is not None:
        run.sets.append((op.args[0], value))


# --- the comparison -----------------------------------------------------------------------------
@dataclass
class Differential:
    """Our broker and Asynq's, on one clock; :meth:`check` runs one generated sequence."""

    ours: BrokerBase
    theirs: BrokerBase
    clock: VirtualClock
    reset: Callable[[], None]
    coverage: Counter[tuple[str, str]] = field(default_factory=Counter)
    sequences: int = 0

    def check(self, ops: list[Op]) -> None:
        """Apply ``ops`` to both brokers from empty databases; raise Divergence on a difference."""
        self.reset()
        self.clock.now_ns = EPOCH_NS  # both brokers hold this clock object
        self.sequences += 1
        run = Run()
        for op in ops:
            run.steps.append(repr(op))
            if op.name == "tick":
                self.clock.advance(op.args[0])
            elif op.name == "evict":
                for broker in (self.ours, self.theirs):
                    broker.client.delete(keys.task(QUEUE, op.args[0]))
            else:
                self._step(op, run)
            self._compare_keyspaces(run)

    def _step(self, op: Op, run: Run) -> None:
        expected = call(self.ours, op, run, self.clock)
        actual = call(self.theirs, op, run, self.clock)
        if expected is None:
            return
        outcome = expected[0]
        if outcome == "ok" and expected[1] in (None, 0, []) and op.name in _MAY_BE_EMPTY:
            outcome = "empty"  # ran, but had nothing to do (or nothing to return)
        self.coverage[(op.name, outcome)] += 1
        if expected != actual:
            raise Divergence(f"{op!r} answered differently\n  ours : {expected!r}\n"
                             f"  asynq: {actual!r}\n{self._context(run)}")
        _remember(op, expected, run)

    def _compare_keyspaces(self, run: Run) -> None:
        ours, theirs = self.ours.snapshot(QUEUE), self.theirs.snapshot(QUEUE)
        if ours != theirs:
            raise Divergence(f"keyspaces differ after {run.steps[-1]}\n"
                             f"{ours.diff(theirs, 'ours', 'asynq')}\n{self._context(run)}")

    def _context(self, run: Run) -> str:
        return ("steps:\n  " + "\n  ".join(run.steps) + "\n"
                f"our keyspace:\n{_render(self.ours.snapshot(QUEUE))}\n"
                f"asynq keyspace:\n{_render(self.theirs.snapshot(QUEUE))}")

    def run(self, max_examples: int, seed: int | None = None) -> None:
        """Run ``max_examples`` generated sequences (Hypothesis shrinks a failing one)."""
        test = settings(max_examples=max_examples, deadline=None, database=None,
                        suppress_health_check=list(HealthCheck), print_blob=True,
                        derandomize=seed is not None)(given(sequences)(self.check))
        test()

    def missing(self) -> list[str]:
        """Operations never applied (no sequence reached them)."""
        seen = {name for name, _ in self.coverage}
        return [name for name in OPERATIONS if name not in seen]

    def report(self) -> str:
        """The coverage table: per operation, how often each outcome occurred."""
        lines = [f"conformance coverage: {self.sequences} sequences, "
                 f"{sum(self.coverage.values())} operations"]
        for name in OPERATIONS:
            outcomes = {o: n for (op, o), n in self.coverage.items() if op == name}
            shown = ", ".join(f"{o}={n}" for o, n in sorted(outcomes.items())) or "NOT COVERED"
            lines.append(f"  {name:32} {shown}")
        return "\n".join(lines)


def _render(snap: KeyspaceSnapshot) -> str:
    lines = [f"  {e.key}: {e.describe()}" for e in snap]
    lines.append(f"  (registered in asynq:queues: {snap.registered})")
    return "\n".join(lines)


def conform(ours_url: str, theirs_url: str, version: str, max_examples: int,
            policy: Policy = CONFORM_POLICY, seed: int | None = None) -> Differential:
    """Run the differential test of ``asynq-<version>`` against real Asynq ``version``.

    ``ours_url`` and ``theirs_url`` name two databases that will be flushed: two of one server,
    or two Redis Clusters (``redis+cluster://host:port``, see
    :func:`broker.asynq_go.client_for`), which have one database each. Returns the
    :class:`Differential` (its :meth:`~Differential.report` is the coverage); raises
    :class:`Divergence` (via Hypothesis, with the shrunk sequence) on a difference.
    """
    from broker import Broker
    from broker.asynq_go import AsynqGoBroker, client_for

    clock = VirtualClock()
    client = client_for(ours_url)
    with AsynqGoBroker(theirs_url, version, policy, clock) as theirs:
        ours = Broker(client, AsynqGoBroker.variant_for(version), policy, clock)

        diff = Differential(ours, theirs, clock, lambda: reset_both(client, ours, theirs))
        try:
            for ops in SCENARIOS.values():
                diff.check(ops)
            diff.run(max_examples, seed)
        finally:
            client.close()
    return diff


def reset_both(client: Any, ours: BrokerBase, theirs: Any) -> None:
    """Start both sides of a differential afresh: our database (``client``) flushed, Asynq's
    flushed with a fresh RDB (an empty ``queuesPublished`` cache, ``AsynqGoBroker.reset``), and
    our broker's published-queues cache emptied the same way."""
    client.flushdb()
    theirs.reset()
    ours.published_queues.clear()
