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

import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import fakeredis
import redis
from hypothesis import HealthCheck, event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from broker import Broker
from model import keys
from model.clock import VirtualClock
from model.errors import KeysimError, ScriptError
from model.invariants import Violation, check_all
from model.message import TaskMessage
from model.policy import Policy
from model.reference import ReferenceModel
from model.snapshot import KeyspaceSnapshot
from model.states import TaskState
from model.transitions import TRANSITIONS, Outcome, by_operation

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


@dataclass(frozen=True)
class MachineConfig:
    """What to test and with which alphabets (small on purpose, so ids and locks collide)."""

    variant: str = "reference"
    backend: str = "fakeredis"  # "fakeredis", "server" (private real Redis) or a redis:// URL
    policy: Policy = MACHINE_POLICY
    queues: tuple[str, ...] = ("default",)
    task_ids: tuple[str, ...] = ("t0", "t1", "t2")
    groups: tuple[str, ...] = ("g0", "g1")
    payloads: tuple[bytes | None, ...] = (b"a", b"b", None)
    drain: bool = True


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


def transition_for(operation: str, **args: Any) -> str:
    """The table row an operation call performs (``retry`` has two, bulk ops one per state)."""
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
        self.sut = Broker(make_client(cfg.backend), cfg.variant, cfg.policy, self.clock)
        self.in_hand: dict[str, TaskMessage] = {}  # dequeued by a live worker
        self.stale: dict[str, TaskMessage] = {}  # held by a worker that crashed or lost its lease
        self.staged: list[tuple[str, str, str]] = []  # (queue, group, set id)
        self.counter = 0
        self.steps: list[str] = []
        self.step_ok = True

    # --- the lockstep core ----------------------------------------------------------------
    def both(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``operation`` on the model and the broker; their answers must agree."""
        self.step_ok = False
        self.steps.append(f"{operation}{_render_args(args, kwargs)}")
        expected = _attempt(getattr(self.model, operation), args, kwargs)
        actual = _attempt(getattr(self.sut, operation), args, kwargs)
        name = transition_for(operation, **_named(operation, args, kwargs))
        outcome = self._outcome(operation, expected)
        COVERAGE[(name, outcome)] += 1
        event(f"{name}: {outcome}")
        if expected != actual:
            raise LeakFound("agreement", f"{operation} answered differently",
                            f"  model : {expected!r}\n  broker: {actual!r}")
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
    @rule(data=st.data(), retry=st.integers(0, 2), retention=st.sampled_from([0, 0, 30]),
          unique=st.booleans(), ttl=st.sampled_from([1, 30]))
    def enqueue(self, data: st.DataObject, retry: int, retention: int, unique: bool,
                ttl: int) -> None:
        msg = self._draw_message(data, retry, retention)
        if unique:
            self.both("enqueue_unique", msg, ttl)
        else:
            self.both("enqueue", msg)

    @rule(data=st.data(), delay=st.sampled_from([1, 10, 120]), unique=st.booleans(),
          ttl=st.sampled_from([1, 30]), grouped=st.booleans())
    def schedule(self, data: st.DataObject, delay: int, unique: bool, ttl: int,
                 grouped: bool) -> None:
        msg = self._draw_message(data, 1, 0)
        if grouped:
            msg = replace(msg, group_key=data.draw(st.sampled_from(self.config.groups)))
        process_at = self.clock.seconds + delay
        if unique:
            self.both("schedule_unique", msg, process_at, delay + ttl)
        else:
            self.both("schedule", msg, process_at)

    @rule(data=st.data(), unique=st.booleans(), ttl=st.sampled_from([1, 30]))
    def add_to_group(self, data: st.DataObject, unique: bool, ttl: int) -> None:
        msg = self._draw_message(data, 1, 0)
        group = data.draw(st.sampled_from(self.config.groups))
        if unique:
            self.both("add_to_group_unique", msg, group, ttl)
        else:
            self.both("add_to_group", msg, group)

    def _draw_message(self, data: st.DataObject, retry: int, retention: int) -> TaskMessage:
        cfg = self.config
        return self.message(data.draw(st.sampled_from(cfg.task_ids)),
                            data.draw(st.sampled_from(cfg.queues)),
                            data.draw(st.sampled_from(cfg.payloads)), retry, retention)

    # --- server: processing ---------------------------------------------------------------
    @rule(data=st.data())
    def dequeue(self, data: st.DataObject) -> None:
        queue = data.draw(st.sampled_from(self.config.queues))
        self._paused_seen = self.model.snapshot(queue).get(keys.paused(queue)) is not None
        msg = self.both("dequeue", queue)
        if isinstance(msg, TaskMessage):
            self.in_hand[msg.id] = msg
            self.stale.pop(msg.id, None)

    @precondition(lambda self: bool(self.in_hand))
    @rule(data=st.data(), how=st.sampled_from(
        ["succeed", "succeed", "fail", "fail_uncounted", "skip_retry", "requeue", "crash"]))
    def finish(self, data: st.DataObject, how: str) -> None:
        """A worker ends its task the way Asynq's processor would."""
        task_id = data.draw(st.sampled_from(sorted(self.in_hand)))
        msg = self.in_hand.pop(task_id)
        if how == "crash":
            self.stale[task_id] = msg
            self.steps.append(f"crash({task_id})")
            return
        self._process(msg, how)

    @precondition(lambda self: bool(self.stale))
    @rule(data=st.data(), how=st.sampled_from(["succeed", "fail", "skip_retry"]))
    def late_worker(self, data: st.DataObject, how: str) -> None:
        """A worker that lost its lease still reports (its write must be refused or harmless)."""
        task_id = data.draw(st.sampled_from(sorted(self.stale)))
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
        for queue in self.config.queues:
            ids = sorted(i for i, m in self.in_hand.items() if m.queue == queue)
            if ids:
                self.both("extend_lease", queue, *ids)

    @rule(data=st.data())
    def extend_lease_of_any(self, data: st.DataObject) -> None:
        """A heartbeat for an id that may no longer hold a lease (must not re-create one)."""
        task_id = data.draw(st.sampled_from(self.config.task_ids))
        self.both("extend_lease", data.draw(st.sampled_from(self.config.queues)), task_id)

    @rule(data=st.data(), payload=st.sampled_from([b"r1", b"r2"]))
    def write_result(self, data: st.DataObject, payload: bytes) -> None:
        """ResultWriter.Write, possibly late (after the task finished)."""
        task_id = data.draw(st.sampled_from(self.config.task_ids))
        self.both("write_result", data.draw(st.sampled_from(self.config.queues)), task_id,
                  payload)

    # --- server: background loops ---------------------------------------------------------
    @rule(data=st.data(), loop=st.sampled_from(
        ["forward_if_ready", "delete_expired_completed_tasks", "delete_expired_archived_tasks",
         "recover", "reclaim_stale_aggregation_sets"]))
    def background(self, data: st.DataObject, loop: str) -> None:
        self.both(loop, data.draw(st.sampled_from(self.config.queues)))

    @rule(data=st.data())
    def aggregation_check(self, data: st.DataObject) -> None:
        queue = data.draw(st.sampled_from(self.config.queues))
        group = data.draw(st.sampled_from(self.config.groups))
        self.counter += 1
        set_id = f"s{self.counter}"
        if self.both("aggregation_check", queue, group, set_id) == set_id:
            self.staged.append((queue, group, set_id))

    @precondition(lambda self: bool(self.staged))
    @rule(data=st.data(), crash=st.booleans())
    def aggregate(self, data: st.DataObject, crash: bool) -> None:
        """The aggregator reads a staged set, enqueues the aggregated task, deletes the set."""
        queue, group, set_id = data.draw(st.sampled_from(self.staged))
        self.staged.remove((queue, group, set_id))
        self.both("read_aggregation_set", queue, group, set_id)
        if crash:  # the set stays until the recoverer reclaims it
            self.steps.append(f"aggregator crash({set_id})")
            return
        self.counter += 1
        self.both("enqueue", self.message(f"agg{self.counter}", queue, b"agg", 0, 0))
        self.both("delete_aggregation_set", queue, group, set_id)

    @rule(data=st.data(), pause=st.booleans())
    def pause(self, data: st.DataObject, pause: bool) -> None:
        self.both("pause" if pause else "unpause", data.draw(st.sampled_from(self.config.queues)))

    # --- time ------------------------------------------------------------------------------
    @rule(seconds=st.sampled_from([1, 5, 10, 31]))
    def tick(self, seconds: int) -> None:
        self._advance(seconds)

    @rule(to=st.sampled_from(["lease", "retention", "retry", "unique", "aggregation",
                              "cutoff"]))
    def jump(self, to: str) -> None:
        """Jump just past one of the deadlines the lifecycle depends on."""
        p = self.config.policy
        seconds = {"lease": p.lease_duration + p.recover_skew + 1, "retention": 31,
                   "retry": 16 + 30 * 3 + 81, "unique": 31,
                   "aggregation": p.aggregation_timeout + 1,
                   "cutoff": p.archive_cutoff + 1}[to]
        self._advance(seconds)

    def _advance(self, seconds: int) -> None:
        self.steps.append(f"advance({seconds})")
        self.clock.advance(seconds)

    # --- inspector -------------------------------------------------------------------------
    @rule(data=st.data(), op=st.sampled_from(["delete_task", "archive_task", "run_task"]))
    def inspect_task(self, data: st.DataObject, op: str) -> None:
        self.both(op, data.draw(st.sampled_from(self.config.queues)),
                  data.draw(st.sampled_from(self.config.task_ids)))

    @rule(data=st.data(), kind=st.sampled_from(["delete_all", "archive_all", "run_all"]))
    def inspect_all(self, data: st.DataObject, kind: str) -> None:
        states = [t.sources[0] for t in TRANSITIONS.values() if t.operation == f"{kind}_tasks"]
        state = data.draw(st.sampled_from(states))
        group = data.draw(st.sampled_from(self.config.groups)) if state is TaskState.AGGREGATING \
            else None
        self.both(f"{kind}_tasks", data.draw(st.sampled_from(self.config.queues)), state, group)

    @rule(data=st.data(), size=st.integers(2, 5))
    def archive_pressure(self, data: st.DataObject, size: int) -> None:
        """Many archived tasks at once, so the cap and cutoff trims run."""
        queue = data.draw(st.sampled_from(self.config.queues))
        for _ in range(size):
            self.counter += 1
            self.both("enqueue", self.message(f"p{self.counter}", queue, b"p", 0, 0))
        self.both("archive_all_tasks", queue, TaskState.PENDING, None)

    @rule(data=st.data(), force=st.booleans())
    def remove_queue(self, data: st.DataObject, force: bool) -> None:
        self.both("remove_queue", data.draw(st.sampled_from(self.config.queues)), force)

    # --- checks ----------------------------------------------------------------------------
    @invariant()
    def keyspace_is_sound(self) -> None:
        """Invariants on the real keyspace, then exact agreement with the model."""
        for queue in self.config.queues:
            actual = self.sut.snapshot(queue)
            violations = check_all(actual, self.config.policy)
            if violations:
                raise _violation(violations, actual)
            expected = self.model.snapshot(queue)
            if expected != actual:
                raise LeakFound("agreement", f"keyspace of {queue!r} differs from the model",
                                expected.diff(actual, "model", "broker"))
        self.step_ok = True

    def teardown(self) -> None:
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
        for queue in self.config.queues:
            self._drain_queue(queue, p)
        self._advance(max(p.stats_ttl, p.archive_cutoff) + 3600)
        for queue in self.config.queues:
            self.sut.expire_due(queue)
            self.keyspace_is_sound()
            self._check_leftovers(queue)
            self.both("remove_queue", queue, True)
            left = self.sut.snapshot(queue)
            if left.entries or left.registered:
                raise LeakFound("drain", f"remove_queue({queue!r}) left keys behind",
                                KeyspaceSnapshot(queue, left.now_ms, {}).diff(left))

    def _drain_queue(self, queue: str, p: Policy) -> None:
        if self.model.snapshot(queue).get(keys.paused(queue)) is not None:
            self.both("unpause", queue)
        self._advance(p.lease_duration + p.recover_skew + 1)
        self.both("recover", queue)
        self._advance(p.aggregation_timeout + 1)
        self.both("reclaim_stale_aggregation_sets", queue)
        for state in (TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRY,
                      TaskState.ARCHIVED, TaskState.COMPLETED):
            self.both("delete_all_tasks", queue, state, None)
        for group in self.config.groups:
            self.both("delete_all_tasks", queue, TaskState.AGGREGATING, group)

    def _check_leftovers(self, queue: str) -> None:
        snap = self.sut.snapshot(queue)
        extra = sorted(set(snap.entries) - drain_baseline(queue))
        if extra:
            detail = "\n".join(f"  {k}: {snap.entries[k].describe()}" for k in extra)
            raise LeakFound("drain", f"{len(extra)} key(s) of {queue!r} survived the drain",
                            detail)


_BULK_COUNTS = frozenset({
    "forward_if_ready", "delete_expired_completed_tasks", "delete_expired_archived_tasks",
    "recover", "reclaim_stale_aggregation_sets", "aggregation_check", "delete_all_tasks",
    "archive_all_tasks", "run_all_tasks", "extend_lease",
})


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
    return LeakFound(first.invariant, first.message, f"{detail}\n keyspace:\n{keyspace}")


def make_machine(config: MachineConfig, name: str | None = None) -> type[KeyMachine]:
    """A machine class bound to ``config``; ``Machine.TestCase`` runs it under unittest/pytest."""
    label = name or f"KeyMachine[{config.variant}]"
    machine = type(label.replace("-", "_").replace("+", "_").replace(".", "_"),
                   (KeyMachine,), {"config": config})
    return machine


def iter_transitions() -> Iterator[str]:
    """Every transition name of the table (what the coverage gate expects to see)."""
    yield from TRANSITIONS


def profile_from_env() -> str:
    """The settings profile: ``KEYSIM_PROFILE`` or ``dev``."""
    return os.environ.get("KEYSIM_PROFILE", "dev")


__all__ = ["COVERAGE", "MACHINE_POLICY", "KeyMachine", "LeakFound", "MachineConfig",
           "drain_baseline", "make_machine", "transition_for"]

