"""The stateful machine: the reference model drives a broker step by step and checks every key.

:func:`make_machine` builds a Hypothesis ``RuleBasedStateMachine`` for one
:class:`MachineConfig` (variant, backend, policy, alphabets). Every rule performs one operation
of the transition table on the reference model *and* on the broker under test, compares the two
answers, and after every step the invariants I1–I14 are checked on the broker's real keyspace
and the keyspace is compared, key by key, with the model's prediction. At the end of every run a
**drain** completes, recovers and deletes everything and checks the leftover keyspace against
the documented baseline (see :func:`drain_baseline`).

>>> Machine = make_machine(MachineConfig(variant="reference"))
>>> Machine.TestCase.settings.stateful_step_count > 0
True
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import fakeredis
import redis
from hypothesis import HealthCheck, currently_in_test_context, event, settings, target
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from broker import Broker
from broker.scripting import TTL_SHIFT_MS
from model import keys
from model.clock import VirtualClock
from model.errors import KeysimError, ScriptError
from model.invariants import Violation, check_all
from model.message import TaskMessage
from model.policy import Policy
from model.reference import ReferenceModel
from model.snapshot import KeyspaceSnapshot
from model.states import TaskState
from model.transitions import TRANSITIONS, Outcome, bulk_states, by_operation

#: Outcomes recorded by every machine in this process: (transition name, outcome) -> count.
COVERAGE: Counter[tuple[str, str]] = Counter()

#: The machine's policy: small caps and short times so trims, expiries and archives happen.
MACHINE_POLICY = Policy(max_archive_size=3, archive_cutoff_days=2, aggregation_grace=10,
                        aggregation_max_size=3, aggregation_max_delay=0, stats_ttl=3 * 86400)

settings.register_profile("dev", max_examples=60, stateful_step_count=30, deadline=None,
                          suppress_health_check=list(HealthCheck))
settings.register_profile("ci", max_examples=150, stateful_step_count=40, deadline=None,
                          suppress_health_check=list(HealthCheck), print_blob=True)
settings.register_profile("deep", max_examples=3000, stateful_step_count=80, deadline=None,
                          suppress_health_check=list(HealthCheck), print_blob=True)


class LeakFound(AssertionError):
    """An invariant broke, the broker disagreed with the model, or the drain left keys behind.

    ``invariant`` names the check: ``I1``…``I14``, ``agreement`` or ``drain``.
    """

    def __init__(self, invariant: str, message: str, detail: str = "") -> None:
        super().__init__(f"[{invariant}] {message}" + (f"\n{detail}" if detail else ""))
        self.invariant = invariant
        self.message = message
        self.detail = detail


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


@dataclass(frozen=True)
class MachineConfig:
    """What to test: the broker variant, the backend, the policy, whether to drain at the end."""

    variant: str = "reference"
    backend: str = "fakeredis"  # "fakeredis", "server" (private real Redis) or a redis:// URL
    policy: Policy = MACHINE_POLICY
    drain: bool = True
    #: Compare every answer and keyspace with the reference model. Off for the Asynq variants,
    #: whose intended differences are not leaks: then only invariants and the drain judge.
    oracle: bool = True
    #: Builds the system under test instead of ``Broker(client, variant, policy, clock)``
    #: (e.g. the Go-backed ``AsynqGoBroker``); it must offer ``snapshot`` and ``expire_due``.
    broker_factory: Callable[[VirtualClock, Policy], Any] | None = None


def make_client(backend: str) -> redis.Redis:
    """A fresh, empty Redis database for one run of the machine."""
    if backend == "fakeredis":
        return fakeredis.FakeRedis(server=fakeredis.FakeServer())
    url = backend if backend.startswith(("redis://", "rediss://", "unix://")) else _server_url()
    client = redis.Redis.from_url(url)
    client.flushdb()
    return client


_SERVER: list[Any] = []


def _server_url() -> str:
    """URL of a private real Redis started once per process (REDIS_URL wins)."""
    if not _SERVER:
        from broker.servers import start_server

        _SERVER.append(start_server())
    return str(_SERVER[0].url)


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
        self.clock = VirtualClock()
        self.model = ReferenceModel(cfg.policy, self.clock)
        self.sut: Any = (cfg.broker_factory(self.clock, cfg.policy) if cfg.broker_factory
                         else Broker(make_client(cfg.backend), cfg.variant, cfg.policy, self.clock))
        self.in_hand: dict[str, TaskMessage] = {}  # dequeued by a live worker
        self.stale: dict[str, TaskMessage] = {}  # held by a worker that crashed or lost its lease
        self.staged: list[tuple[str, str, str]] = []  # (queue, group, set id)
        self.counter = 0
        self.steps: list[str] = []
        self.reached: set[str] = set()  # transitions executed with outcome ok in this run
        self.step_ok = True

    # --- the lockstep core ----------------------------------------------------------------
    def both(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``operation`` on the model and the broker; their answers must agree."""
        self.step_ok = False
        self.steps.append(f"{operation}{_render_args(args, kwargs)}")
        actual = _attempt(getattr(self.sut, operation), args, kwargs)
        expected = _attempt(getattr(self.model, operation), args, kwargs) \
            if self.config.oracle else actual
        name = transition_for(operation, **_named(operation, args, kwargs))
        outcome = self._outcome(operation, expected)
        if name is not None:  # read-only operations have no row
            COVERAGE[(name, outcome)] += 1
            if outcome == Outcome.OK.value:
                self.reached.add(name)
        _event(f"{name or operation}: {outcome}")
        if expected != actual:
            answers = f"  model : {expected!r}\n  broker: {actual!r}"
            self._check_invariants(note=f"{operation} answered differently:\n{answers}")
            raise leak("agreement", f"{operation} answered differently", answers)
        return expected[1] if expected[0] == "ok" else None

    def _outcome(self, operation: str, answer: tuple[str, Any]) -> str:
        kind, value = answer
        if kind != "ok":
            return str(kind)
        if value is None and operation == "dequeue":
            return Outcome.PAUSED.value if self._paused_seen else Outcome.EMPTY.value
        if value in (0, None) and operation in _BULK_COUNTS:
            return Outcome.NOT_FOUND.value if operation == "extend_lease" else Outcome.EMPTY.value
        return Outcome.OK.value

    _paused_seen = False

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
        msg = self.message(task_id, queue, payload, retry, retention)
        if unique:
            self.both("enqueue_unique", msg, unique)
        else:
            self.both("enqueue", msg)

    @rule(task_id=task_ids, queue=queues, payload=payloads, delay=st.sampled_from([1, 10, 120]),
          unique=st.sampled_from([None, 1, 30]), group=st.sampled_from((None, *GROUPS)))
    def schedule(self, task_id: str, queue: str, payload: bytes | None, delay: int,
                 unique: int | None, group: str | None) -> None:
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
    @rule(pick=picks, how=st.sampled_from(["succeed", "fail", "skip_retry"]))
    def late_worker(self, pick: int, how: str) -> None:
        """A worker that crashed or lost its lease still reports (refused, or harmless)."""
        task_id = sorted(self.stale)[pick % len(self.stale)]
        self._process(self.stale.pop(task_id), how)

    def _process(self, msg: TaskMessage, how: str) -> None:
        if how == "succeed":
            self.both("mark_as_complete" if msg.retention > 0 else "done", msg)
        elif how == "requeue":
            self.both("requeue", msg)
        elif how == "skip_retry" or msg.retried >= msg.retry:
            self.both("archive", msg, "boom")
        else:
            delay = self.config.policy.retry_delay_for(msg.id, msg.retried)
            self.both("retry", msg, self.clock.seconds + delay, "boom",
                      is_failure=how != "fail_uncounted")

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
        self.both("delete_expired_completed_tasks", queue)
        self.both("delete_expired_archived_tasks", queue)

    @rule(queue=queues)
    def recoverer(self, queue: str) -> None:
        self.both("recover", queue)
        self.both("reclaim_stale_aggregation_sets", queue)

    @rule(queue=queues, group=groups, then=st.sampled_from(["aggregate", "crash", "later"]))
    def aggregation_check(self, queue: str, group: str, then: str) -> None:
        """The aggregator checks one group; a staged set is then aggregated at once, or the
        aggregator crashes after reading it, or it is left for a later :meth:`aggregate`."""
        self.counter += 1
        set_id = f"s{self.counter}"
        if self.both("aggregation_check", queue, group, set_id) != set_id:
            return
        if then == "later":
            self.staged.append((queue, group, set_id))
        else:
            self._aggregate(queue, group, set_id, crash=then == "crash")

    @precondition(lambda self: bool(self.staged))
    @rule(pick=picks, crash=st.booleans())
    def aggregate(self, pick: int, crash: bool) -> None:
        """The aggregator reads a staged set, enqueues the aggregated task, deletes the set."""
        self._aggregate(*self.staged.pop(pick % len(self.staged)), crash=crash)

    def _aggregate(self, queue: str, group: str, set_id: str, crash: bool) -> None:
        self.both("read_aggregation_set", queue, group, set_id)
        if crash:  # the set stays until the recoverer reclaims it
            self.steps.append(f"aggregator crash({set_id})")
            return
        self.counter += 1
        self.both("enqueue", self.message(f"agg{self.counter}", queue, b"agg", 0, 0))
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
        p = self.config.policy
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
            self.forwarder(queue)
            self.janitor(queue)
            self.recoverer(queue)
            listed = self.truth(queue).get(keys.groups(queue))
            for group in sorted(listed.set()) if listed is not None else ():
                self.aggregation_check(queue, group, "aggregate")

    def _advance(self, seconds: int) -> None:
        self.steps.append(f"advance({seconds})")
        self.clock.advance(seconds)

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
        for _ in range(size):
            self.counter += 1
            fresh.append(f"p{self.counter}")
            self.both("enqueue", self.message(fresh[-1], queue, b"p", 0, 0))
        if not server:
            self.both("archive_all_tasks", queue, TaskState.PENDING, None)
            return
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
                raise leak("agreement", f"keyspace of {queue!r} differs from the model",
                                expected.diff(actual, "model", "broker"))
        self.step_ok = True

    def _paused(self, queue: str) -> bool:
        return self.truth(queue).get(keys.paused(queue)) is not None

    def truth(self, queue: str) -> KeyspaceSnapshot:
        """What the rules steer by: the model's keyspace, or the broker's without the oracle."""
        return self.model.snapshot(queue) if self.config.oracle else self.read(queue)

    def read(self, queue: str) -> KeyspaceSnapshot:
        """The broker's keyspace of ``queue`` now (read straight from a fakeredis server's
        memory when possible: same content as ``sut.snapshot``, without the Lua round trip)."""
        fast = _fake_snapshot(self.sut, queue)
        return fast if fast is not None else self.sut.snapshot(queue)

    def _check_invariants(self, queue: str = QUEUES[0], note: str = "") -> KeyspaceSnapshot:
        """Raise the first invariant the broker's keyspace breaks; return the snapshot."""
        actual = self.read(queue)
        violations = check_all(actual, self.config.policy, strict_locks=self.config.oracle)
        if violations:
            leak = _violation(violations, actual)
            if note:
                leak.add_note(note)
            raise leak
        return actual

    def teardown(self) -> None:
        if currently_in_test_context():
            # Steer generation toward runs that execute many different transitions.
            target(float(len(self.reached)), label="transitions executed")
        if self.config.drain and self.step_ok and self.steps:
            self.drain()

    def drain(self) -> None:
        """Finish everything, pass every deadline, delete what remains, compare to baseline."""
        self.steps.append("--- drain ---")
        for msg in list(self.in_hand.values()):
            self._process(msg, "succeed")
        self.in_hand.clear()
        self.stale.clear()
        p = self.config.policy
        for queue in QUEUES:
            self._drain_queue(queue, p)
        self._advance(max(p.stats_ttl, p.archive_cutoff) + 3600)
        for queue in QUEUES:
            self.sut.expire_due(queue)
            self.keyspace_is_sound()
            self._check_leftovers(queue)
            self.both("remove_queue", queue, True)
            left = self.read(queue)
            if left.entries or left.registered:
                raise leak("drain", f"remove_queue({queue!r}) left keys behind",
                                KeyspaceSnapshot(queue, left.now_ms, {}).diff(left))

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
        for state in (TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRY,
                      TaskState.ARCHIVED, TaskState.COMPLETED):
            if truth.get(keys.state_index(queue, state)) is not None:
                self.both("delete_all_tasks", queue, state, None)
        for group in GROUPS:
            if truth.get(keys.group(queue, group)) is not None:
                self.both("delete_all_tasks", queue, TaskState.AGGREGATING, group)

    def _check_leftovers(self, queue: str) -> None:
        snap = self.read(queue)
        extra = sorted(set(snap.entries) - drain_baseline(queue))
        if extra:
            detail = "\n".join(f"  {k}: {snap.entries[k].describe()}" for k in extra)
            raise leak("drain", f"{len(extra)} key(s) of {queue!r} survived the drain",
                            detail)


_READ_ONLY = frozenset({"read_aggregation_set", "list_lease_expired"})
_BULK_COUNTS = frozenset({
    "forward_if_ready", "delete_expired_completed_tasks", "delete_expired_archived_tasks",
    "recover", "reclaim_stale_aggregation_sets", "aggregation_check", "delete_all_tasks",
    "archive_all_tasks", "run_all_tasks", "extend_lease",
})


def _fake_snapshot(sut: Any, queue: str) -> KeyspaceSnapshot | None:
    """``sut.snapshot(queue)`` read from a fakeredis server's memory; None when ``sut`` is not a
    Broker on fakeredis or the store looks unfamiliar (the caller then asks Redis).

    The entries go through the broker's own decoder in the shape the snapshot script replies
    with, so the result is the same snapshot (tests/test_bench_machine.py checks it).
    """
    client = getattr(sut, "client", None)
    if not isinstance(sut, Broker) or not isinstance(client, fakeredis.FakeRedis):
        return None
    try:
        where = client.connection_pool.connection_kwargs
        store = where["server"].dbs[where.get("db") or 0]._dict
        prefix = keys.queue_prefix(queue).encode()
        now_ms = sut.now_ms
        raw = []
        for key, item in list(store.items()):
            if key.startswith(prefix):
                entry = _fake_entry(key, item.value, item.expireat, now_ms)
                if entry is not None:
                    raw.append(entry)
        registry = store.get(keys.ALL_QUEUES.encode())
        registered = registry is not None and queue.encode() in registry.value
        entries = {entry.key: entry for entry in map(sut._entry, raw)}
    except (AttributeError, KeyError, TypeError):
        return None
    return KeyspaceSnapshot(queue, now_ms, entries, registered=registered)


def _fake_entry(key: bytes, value: Any, expire_at_s: float | None, now_ms: int) -> list[Any] | None:
    """One key in the snapshot script's reply shape, or None when its virtual TTL passed."""
    at = -1 if expire_at_s is None else round(expire_at_s * 1000)
    if at > 0 and at - TTL_SHIFT_MS <= now_ms:
        return None
    if isinstance(value, bytes):
        return [key, b"string", at, [value]]
    if isinstance(value, list):
        return [key, b"list", at, list(value)]
    if hasattr(value, "_bylex"):
        return [key, b"zset", at, [x for m, sc in value._bylex.items() for x in (m, sc)]]
    if hasattr(value, "getall"):
        return [key, b"hash", at, [x for f, v in value.getall().items() for x in (f, v)]]
    return [key, b"set", at, list(value)]


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


def _render_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = [_short(a) for a in args] + [f"{k}={_short(v)}" for k, v in kwargs.items()]
    return "(" + ", ".join(parts) + ")"


def _short(value: Any) -> str:
    if isinstance(value, TaskMessage):
        return f"msg({value.id})"
    if isinstance(value, TaskState):
        return value.value
    return repr(value)


def _violation(violations: list[Violation], snap: KeyspaceSnapshot) -> LeakFound:
    first = violations[0]
    detail = "\n".join(f"  {v.invariant} {v.key}: {v.message}" for v in violations)
    keyspace = "\n".join(f"  {e.key}: {e.describe()}" for e in snap)
    return leak(first.invariant, first.message, f"{detail}\n keyspace:\n{keyspace}")


@functools.cache
def leak_class(invariant: str) -> type[LeakFound]:
    """A LeakFound subclass per invariant, so Hypothesis reports distinct defects separately."""
    return type(f"LeakFound_{invariant}", (LeakFound,), {})


def leak(invariant: str, message: str, detail: str = "") -> LeakFound:
    """A LeakFound of the class of ``invariant``."""
    return leak_class(invariant)(invariant, message, detail)


def make_machine(config: MachineConfig, name: str | None = None) -> type[KeyMachine]:
    """A machine class bound to ``config``; ``Machine.TestCase`` runs it under unittest/pytest."""
    label = name or f"KeyMachine_{config.variant}"
    ident = "".join(c if c.isalnum() else "_" for c in label)
    return type(ident, (KeyMachine,), {"config": config})


def iter_transitions() -> Iterator[str]:
    """Every transition name of the table (what the coverage gate expects to see)."""
    yield from TRANSITIONS


def profile_from_env() -> str:
    """The settings profile: ``KEYSIM_PROFILE`` or ``dev``."""
    return os.environ.get("KEYSIM_PROFILE", "dev")


__all__ = ["COVERAGE", "MACHINE_POLICY", "KeyMachine", "LeakFound", "MachineConfig",
           "drain_baseline", "make_machine", "transition_for"]

