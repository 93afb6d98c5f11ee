"""The discrete-event simulation: a workload driven through a broker in virtual time.

Time advances in steps of ``spec.step`` seconds (default 1). At each step, in this order:

1. operator actions due (inspector calls);
2. handler completions due, by outcome, as ``broker.processor.finishing`` decides — success:
   ``done`` (retention 0) or ``mark_as_complete``; failure: ``retry`` at now + retry delay
   while ``retried < retry``, else ``archive``; skip-retry: ``archive``; revoke: ``done``;
   crash: nothing (the process died, nobody extends the lease, a recoverer moves the task
   later);
3. arrivals: enqueue / schedule / add-to-group, unique or not, as Asynq's client routes them;
4. heartbeats due: ``extend_lease`` for every in-flight, non-crashed task of that server;
5. (2–4 run as one pipeline, :class:`simulations.batch.Batch`)
6. background loops due, per server and covered queue, with Asynq's intervals (spec §3):
   forwarder 5 s, janitor 8 s, recoverer 60 s (also at start), aggregator min(7 s, grace);
   a cheap probe (``ZRANGE … BYSCORE LIMIT 0 1``, ``SMEMBERS groups``) skips a loop's script
   when it could not do anything (a no-op script changes no key);
7. dispatch: free workers dequeue from their covered queues (weighted by priority, no more
   dequeues than pending tasks), in one pipeline whose replies are handled as they arrive
   (Redis runs the later dequeues meanwhile); each dequeued task gets a handler duration
   and an outcome; it completes at the first step at or after ``now + duration`` (a worker
   finishes at most one task per step).

A sample (:class:`simulations.measure.Sampler`) is taken every ``spec.sample_interval``
seconds and streamed to the sink, so the engine's memory does not grow with the run length.
"""

from __future__ import annotations

import functools
import heapq
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import redis

from broker.core import Broker
from broker.processor import finishing, success_operation
from broker.scripting import Client, full_source, script_names
from broker.variants import Quirk
from broker.variants import variant as lookup_variant
from model import keys
from model.clock import EPOCH_NS, NS, VirtualClock
from model.endings import Ending
from model.errors import KeysimError
from model.message import TaskMessage
from model.policy import Policy
from model.states import TaskState
from simulations.batch import Batch, Dequeued, Result, Template
from simulations.estimator import Calibration
from simulations.measure import Sampler, info_stats
from simulations.spec import Action, Distribution, QueueSpec, ServerSpec, WorkloadSpec

#: The counter an outcome increments when its task finishes (skip-retry has none).
_ENDING_COUNTER = {"success": "succeeded", "revoke": "revoked", "failure": "failed_attempts"}
#: The counter (first element of the batch tag) an ending operation's success increments.
_OPERATION_COUNTER = {"done": "processed", "mark_as_complete": "processed", "retry": "retried",
                      "archive": "archived"}
#: Operations whose success the engine counts (by the first element of their batch tag).
_COUNTED = frozenset({"processed", "retried", "archived", "enqueued"})
AGGREGATOR_MAX_INTERVAL = 7


class BackendUnsupported(Exception):
    """The spec needs something the backend lacks (e.g. eviction on fakeredis)."""


class SampleSink(Protocol):
    """Where samples and events go (a run directory, or a list in tests)."""

    def sample(self, row: dict[str, float]) -> None: ...
    def event(self, t: int, kind: str, detail: str) -> None: ...


@dataclass
class ListSink:
    """Keeps samples and events in memory (tests, short runs)."""

    rows: list[dict[str, float]] = field(default_factory=list)
    events: list[tuple[int, str, str]] = field(default_factory=list)

    def sample(self, row: dict[str, float]) -> None:
        self.rows.append(row)

    def event(self, t: int, kind: str, detail: str) -> None:
        self.events.append((t, kind, detail))


@dataclass(slots=True)
class InFlight:
    """A task a worker is running."""

    task: Dequeued
    server: int
    outcome: str


@dataclass
class ServerState:
    """One simulated server: free workers, in-flight tasks, next due time of each loop."""

    spec: ServerSpec
    free: int
    running: dict[str, InFlight] = field(default_factory=dict)
    due: dict[str, int] = field(default_factory=dict)


COUNTERS = ("enqueued", "duplicates", "dequeued", "processed", "succeeded", "failed_attempts",
            "retried", "archived", "revoked", "crashed", "recovered", "forwarded",
            "janitor_deleted", "aggregated_sets", "errors", "oom_errors", "script_calls",
            "evicted_keys")


def make_policy(spec: WorkloadSpec, variant_name: str) -> Policy:
    """The variant's policy with the spec's overrides, seed and retry delay."""
    base = lookup_variant(variant_name).policy
    overrides: dict[str, Any] = dict(spec.policy)
    policy = replace(base, seed=spec.seed, **overrides)
    if spec.retry_delay >= 0:
        fixed = spec.retry_delay
        policy = replace(policy, retry_delay=lambda _n, _rng: fixed)
    return policy


def sample_value(dist: Distribution, rng: random.Random) -> float:
    """One draw of ``dist`` (never negative)."""
    if dist.kind == "fixed":
        return dist.value
    if dist.kind == "uniform":
        return rng.uniform(dist.low, dist.high)
    if dist.kind == "exponential":
        return rng.expovariate(1.0 / dist.mean) if dist.mean > 0 else 0.0
    return dist.median * math.exp(rng.gauss(0.0, dist.sigma))


def poisson(rate: float, rng: random.Random) -> int:
    """A Poisson draw (Knuth for small means, a rounded normal above 50)."""
    if rate <= 0:
        return 0
    if rate > 50:
        return max(0, round(rng.gauss(rate, math.sqrt(rate))))
    limit, k, p = math.exp(-rate), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class Engine:
    """Runs one :class:`WorkloadSpec` against one Redis client (or a cluster's, with
    ``real=False``: see :mod:`simulations.cluster`).

    ``real`` says the client is a real Redis (enables MEMORY USAGE/INFO and eviction settings).
    ``progress`` is called after every sample with the row just written. ``fast`` (default)
    sends batches through :class:`broker.wire.Wire` when the client allows it and uses
    the batch's enqueue/dequeue/done shortcuts; ``fast=False`` is the plain path (broker
    methods on a redis-py pipeline) — both give the same keyspace.
    """

    def __init__(self, spec: WorkloadSpec, client: Client, *, variant: str | None = None,
                 real: bool = False, sink: SampleSink | None = None,
                 progress: Callable[[dict[str, float]], None] | None = None,
                 fast: bool = True, memory_model: Calibration | None = None) -> None:
        self.spec = spec
        #: The estimator's memory model (None: the real server's family's, or the default).
        self.memory_model = memory_model
        self.variant = variant or spec.variant
        if spec.redis.maxmemory and not real:
            raise BackendUnsupported(
                f"spec {spec.name!r} sets redis.maxmemory (eviction): fakeredis implements "
                "neither maxmemory nor eviction; run it with --backend redis")
        if real and not isinstance(client, redis.Redis):
            raise BackendUnsupported("memory figures (MEMORY USAGE, INFO) are one server's: "
                                     "on a cluster client the simulator runs with real=False")
        self.real = real
        self.client = client
        self.clock = VirtualClock(EPOCH_NS)
        self.policy = make_policy(spec, self.variant)
        self.broker = Broker(client, self.variant, self.policy, self.clock)
        self.fast = fast
        self.batch = Batch(self.broker, None if fast else False)
        self.rng = random.Random(spec.seed)
        self.sink: SampleSink = sink if sink is not None else ListSink()
        self.progress = progress
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.servers = [ServerState(s, s.workers) for s in spec.servers]
        self._completions: list[tuple[int, int, str]] = []
        self._owner: dict[str, int] = {}
        self._seq = 0
        self._carry: dict[str, float] = {q.name: 0.0 for q in spec.queues}
        self._actions = sorted(((a.at, i, a) for i, a in enumerate(spec.actions)),
                               key=lambda x: (x[0], x[1]))
        self._queues = {q.name: q for q in spec.queues}
        # Every arrival of a queue is this message with its own id and payload.
        self._templates = {q.name: Template(TaskMessage(
            type=f"{q.name}:work", payload=None, id="template", queue=q.name, retry=q.max_retry,
            retention=q.retention)) for q in spec.queues}
        self.sampler: Sampler | None = None
        self._wall0 = 0.0
        self._evicted0 = 0

    # --- setup -------------------------------------------------------------------------------
    def _prepare(self) -> None:
        if self.real:
            # Load every script first so the memory baseline already holds the script cache.
            for name in script_names():
                self.client.script_load(full_source(name, self.broker.variant))
        self.sampler = Sampler(self.broker, [q.name for q in self.spec.queues], self.real,
                               memory_model=self.memory_model)
        if self.real:
            self._evicted0 = int(info_stats(self.broker.server_client).get("evicted_keys", 0))
            if self.spec.redis.maxmemory:
                self.client.config_set("maxmemory-policy", self.spec.redis.maxmemory_policy)
                self.client.config_set("maxmemory", str(self.sampler.baseline + self.spec.redis.maxmemory))
        for server in self.servers:
            phase = self.rng.randrange(5)  # servers do not start in lockstep
            server.due = {"forwarder": phase, "janitor": phase, "recoverer": 0,
                          "heartbeat": phase, "aggregator": phase}

    def _restore(self) -> None:
        if self.real and self.spec.redis.maxmemory:
            self.client.config_set("maxmemory", "0")
            self.client.config_set("maxmemory-policy", "noeviction")

    # --- the loop ----------------------------------------------------------------------------
    def run(self) -> dict[str, int]:
        """Run the whole spec; return the engine's counters."""
        self._prepare()
        self._wall0 = time.perf_counter()
        try:
            t = 0
            last_sample = -1
            while t <= self.spec.duration:
                self.step(t)
                if t % self.spec.sample_interval == 0:
                    self._sample(t)
                    last_sample = t
                t += self.spec.step
            if last_sample != t - self.spec.step:
                self._sample(t - self.spec.step)
        finally:
            self._restore()
        return dict(self.counts)

    def step(self, t: int) -> None:
        """Everything that happens at virtual second ``t`` of the run."""
        self.clock.set(EPOCH_NS + t * NS)
        self._run_actions(t)
        self._complete_due(t)
        self._arrive(t)
        self._heartbeat(t)
        self._flush()
        self._background(t)
        self._dispatch(t)

    # --- operator actions --------------------------------------------------------------------
    def _run_actions(self, t: int) -> None:
        while self._actions and self._actions[0][0] <= t:
            _, i, action = heapq.heappop(self._actions)
            detail = self._apply(action)
            self.sink.event(t, action.action, detail)
            if action.every > 0:
                heapq.heappush(self._actions, (t + action.every, i, action))

    def _apply(self, action: Action) -> str:
        b, q = self.broker, action.queue
        try:
            if action.action == "archive-all":
                before = int(self.client.zcard(keys.archived(q)))
                n = b.archive_all_tasks(q, TaskState(action.state))
                self._forget(keys.state_index(q, TaskState(action.state)))
                if self.sampler is not None:  # the archive held before + n ids before its trim
                    self.sampler.estimator.note(keys.archived(q), before + n)
                return f"{q} {action.state}: {n}"
            if action.action in ("delete-all", "run-all"):
                state = TaskState(action.state)
                bulk = b.delete_all_tasks if action.action == "delete-all" else b.run_all_tasks
                n = bulk(q, state)
                self._forget(keys.state_index(q, state))  # the bulk call DELs the index
                return f"{q} {action.state}: {n}"
            if action.action == "remove-queue":
                b.remove_queue(q, action.force)
                return f"{q} removed"
            if action.action == "pause":
                b.pause(q)
            else:
                b.unpause(q)
            return q
        except (KeysimError, redis.RedisError) as err:
            self._error(type(err).__name__)
            return f"{q}: {type(err).__name__}: {err}"

    # --- processor ---------------------------------------------------------------------------
    def _complete_due(self, t: int) -> None:
        while self._completions and self._completions[0][0] <= t:
            _, _, task_id = heapq.heappop(self._completions)
            server = self.servers[self._owner.pop(task_id)]
            job = server.running.pop(task_id)
            server.free += 1
            self._finish(job)

    def _finish(self, job: InFlight) -> None:
        """End a task the way Asynq's processor would (``broker.processor.finishing``); the
        handler's error is named after the outcome."""
        task, outcome = job.task, job.outcome
        if outcome == "crash":
            self.counts["crashed"] += 1
            return
        if outcome in _ENDING_COUNTER:
            self.counts[_ENDING_COUNTER[outcome]] += 1
        ending = Ending(outcome)
        if self.fast and success_operation(ending, task.retention) == "done":
            self.batch.done(("processed", task.id), task)  # no message to decode
            return
        msg = task.message(self.broker)
        call = finishing(msg, ending, outcome, self.broker.now_s, self.policy)
        self.batch.submit((_OPERATION_COUNTER[call.operation], msg.id),
                          lambda d: getattr(d, call.operation)(*call.args, **call.kwargs))

    def _arrive(self, t: int) -> None:
        for queue in self.spec.queues:
            for _ in range(self._arrivals(queue, t)):
                self._new_task(queue)

    def _arrivals(self, queue: QueueSpec, t: int) -> int:
        a = queue.arrival
        if a.until and t >= a.until:
            return 0
        rate = a.rate
        if a.kind == "bursts" and t % a.burst_every < a.burst_length:
            rate += a.burst_rate
        if a.kind == "constant":
            self._carry[queue.name] += rate * self.spec.step
            n = int(self._carry[queue.name])
            self._carry[queue.name] -= n
            return n
        return poisson(rate * self.spec.step, self.rng)

    def _task_id(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}"

    def _payload(self, queue: QueueSpec, unique: bool) -> bytes:
        size = max(0, int(sample_value(queue.payload, self.rng)))
        self._seq += 1
        if unique and queue.unique.key_space:
            head = f"u{self.rng.randrange(queue.unique.key_space)}:".encode()
        else:
            head = f"{self._seq}:".encode()
        return (head + b"x" * size)[:max(size, len(head))]

    def _new_task(self, queue: QueueSpec) -> None:
        r = self.rng.random()
        unique = self.rng.random() < queue.unique.share
        payload = self._payload(queue, unique)
        task_id = self._task_id()
        if self.fast and not unique and r >= queue.scheduled.share + queue.grouped.share:
            # A plain enqueue, the common case: no TaskMessage built (same bytes, see Template).
            self.batch.enqueue_new(("enqueued", task_id), self._templates[queue.name], task_id, payload)
            return
        msg = replace(self._templates[queue.name].msg, payload=payload, id=task_id)
        ttl = queue.unique.ttl
        now = self.broker.now_s
        if r < queue.scheduled.share:
            delay = max(1, int(sample_value(queue.scheduled.delay, self.rng)))
            at = now + delay
            op: Callable[[Broker], object] = (
                (lambda d: d.schedule_unique(msg, at, delay + ttl)) if unique
                else (lambda d: d.schedule(msg, at)))
        elif r < queue.scheduled.share + queue.grouped.share:
            group = f"g{self.rng.randrange(queue.grouped.groups)}"
            op = ((lambda d: d.add_to_group_unique(msg, group, ttl)) if unique
                  else (lambda d: d.add_to_group(msg, group)))
        else:
            op = (lambda d: d.enqueue_unique(msg, ttl)) if unique else (lambda d: d.enqueue(msg))
        self.batch.submit(("enqueued", msg.id), op)

    def _heartbeat(self, t: int) -> None:
        for server in self.servers:
            if server.due["heartbeat"] > t:
                continue
            server.due["heartbeat"] = t + self.policy.heartbeat_interval
            by_queue: dict[str, list[str]] = {}
            for task_id, job in server.running.items():
                if job.outcome != "crash":
                    by_queue.setdefault(job.task.queue, []).append(task_id)
            for queue, ids in by_queue.items():
                self.batch.submit(("lease", queue), _extend(queue, ids))

    def _flush(self) -> None:
        for _ in self._results():
            pass

    def _results(self) -> Iterator[Result]:
        """Run the batch; count each result as it arrives and yield it."""
        counts = self.counts
        for result in self.batch.results():
            tag = result.tag
            kind = tag[0] if type(tag) is tuple else str(tag)
            if result.status == "ok":
                if kind in _COUNTED:
                    counts[kind] += 1
            elif result.status == "DuplicateTaskError":
                counts["duplicates"] += 1
            elif kind != "dequeue":
                self._error(result.status)
            yield result

    def _error(self, name: str) -> None:
        self.counts["errors"] += 1
        if name == "OOMError" or "OutOfMemory" in name:
            self.counts["oom_errors"] += 1
        self.errors[name] += 1

    # --- background loops --------------------------------------------------------------------
    def _background(self, t: int) -> None:
        p = self.policy
        loops: list[tuple[str, int, Callable[[ServerState], None]]] = [
            ("forwarder", p.forwarder_interval, self._forwarder),
            ("janitor", p.janitor_interval, self._janitor),
            ("recoverer", p.recoverer_interval, self._recoverer),
            ("aggregator", min(AGGREGATOR_MAX_INTERVAL, p.aggregation_grace), self._aggregator),
        ]
        for server in self.servers:
            for name, interval, loop in loops:
                if name in server.spec.loops and server.due[name] <= t:
                    server.due[name] = t + interval
                    self._guard(functools.partial(loop, server))

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except (KeysimError, redis.RedisError) as err:
            self._error(type(err).__name__)

    def _probe(self, checks: list[tuple[str, float]]) -> list[bool]:
        """Whether each zset has a member with score <= the bound (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for key, bound in checks:
            pipe.zrangebyscore(key, "-inf", bound, start=0, num=1)
        return [bool(r) for r in pipe.execute()]

    def _forwarder(self, server: ServerState) -> None:
        now = self.broker.now_s
        for q in server.spec.queues:
            if any(self._probe([(keys.scheduled(q), now), (keys.retry(q), now)])):
                self.counts["forwarded"] += self.broker.forward_if_ready(q)

    def _janitor(self, server: ServerState) -> None:
        now = self.broker.now_s
        cutoff = now - self.policy.archive_cutoff
        lazy = self.broker.quirk(Quirk.LAZY_CUTOFF)
        for q in server.spec.queues:
            completed, archived = self._probe([(keys.completed(q), now), (keys.archived(q), cutoff)])
            if completed:
                self.counts["janitor_deleted"] += self.broker.delete_expired_completed_tasks(q)
            if archived and not lazy:
                self.counts["janitor_deleted"] += self.broker.delete_expired_archived_tasks(q)

    def _recoverer(self, server: ServerState) -> None:
        now = self.broker.now_s
        for q in server.spec.queues:
            lease, sets = self._probe([(keys.lease(q), now - self.policy.recover_skew),
                                       (keys.aggregation_sets(q), now)])
            if lease:
                self.counts["recovered"] += self.broker.recover(q)
            if sets:
                self.broker.reclaim_stale_aggregation_sets(q)

    def _aggregator(self, server: ServerState) -> None:
        for q in server.spec.queues:
            for raw in sorted(self.client.smembers(keys.groups(q))):
                group = raw.decode() if isinstance(raw, bytes) else str(raw)
                set_id = self.broker.aggregation_check(q, group, uuid_hex(self.rng))
                if set_id is None:
                    continue
                if not self.client.exists(keys.group(q, group)):
                    self._forget(keys.group(q, group))  # emptied: Redis deleted the zset
                msgs, _ = self.broker.read_aggregation_set(q, group, set_id)
                self._enqueue_aggregate(self._queues[q], msgs)
                self.broker.delete_aggregation_set(q, group, set_id)
                self.counts["aggregated_sets"] += 1

    def _forget(self, key: str) -> None:
        """Tell the estimator a collection was deleted between samples (see Estimator.note)."""
        if self.sampler is not None:
            self.sampler.estimator.forget(key)

    def _enqueue_aggregate(self, queue: QueueSpec, msgs: list[TaskMessage]) -> None:
        """The GroupAggregator's task: one task whose payload joins the members' payloads."""
        payload = b"\n".join(m.payload or b"" for m in msgs)
        msg = TaskMessage(type=f"{queue.name}:aggregated", payload=payload, id=self._task_id(),
                          queue=queue.name, retry=queue.max_retry, retention=queue.retention)
        try:
            self.broker.enqueue(msg)
            self.counts["enqueued"] += 1
        except KeysimError as err:
            self._error(type(err).__name__)

    # --- dispatch ----------------------------------------------------------------------------
    def _dispatch(self, t: int) -> None:
        covered = sorted({q for s in self.servers if s.free for q in s.spec.queues})
        if not covered:
            return
        pipe = self.client.pipeline(transaction=False)
        for q in covered:
            pipe.llen(keys.pending(q))
        left = dict(zip(covered, (int(n) for n in pipe.execute()), strict=True))
        order = list(range(len(self.servers)))
        self.rng.shuffle(order)
        batch = self.batch
        for index in order:
            server = self.servers[index]
            tag = ("dequeue", index)
            weights = list(zip(server.spec.queues, server.spec.priorities, strict=True))
            for _ in range(server.free):
                queue = self._pick(weights, left)
                if queue is None:
                    break
                left[queue] -= 1
                if self.fast:
                    batch.dequeue(tag, queue)
                else:
                    batch.submit(tag, _dequeue(queue))
        decode = None if self.fast else self.broker  # the plain path decodes every message
        # Each task starts as its reply arrives, while Redis still runs the later dequeues.
        for result in self._results():
            tag = result.tag  # type: ignore[assignment]
            task = result.dequeued(decode) if tag[0] == "dequeue" else None
            if task is not None:
                self._start(self.servers[tag[1]], tag[1], task, t)

    def _pick(self, weights: list[tuple[str, int]], left: dict[str, int]) -> str | None:
        """A queue with pending tasks, drawn by priority among ``weights`` (queue, priority)."""
        options = [(q, p) for q, p in weights if left.get(q, 0) > 0]
        if not options:
            return None
        total = sum(p for _, p in options)
        x = self.rng.random() * total
        for q, p in options:
            x -= p
            if x < 0:
                return q
        return options[-1][0]

    def _start(self, server: ServerState, index: int, task: Dequeued, t: int) -> None:
        queue = self._queues.get(task.queue)
        if queue is None:
            return
        self.counts["dequeued"] += 1
        server.free -= 1
        outcome = self._outcome(queue)
        seconds = sample_value(queue.duration, self.rng)
        steps = max(1, math.ceil(seconds / self.spec.step))
        server.running[task.id] = InFlight(task, index, outcome)
        self._owner[task.id] = index
        heapq.heappush(self._completions, (t + steps * self.spec.step, self._next(), task.id))

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _outcome(self, queue: QueueSpec) -> str:
        x = self.rng.random()
        for name, p in queue.outcomes.items():
            x -= p
            if x < 0:
                return name
        return "success"

    # --- sampling ----------------------------------------------------------------------------
    def _sample(self, t: int) -> None:
        assert self.sampler is not None
        sample = self.sampler.measure()
        row: dict[str, Any] = {"t": t, "hours": round(t / 3600, 6),
                               "wall_s": round(time.perf_counter() - self._wall0, 3)}
        self.counts["script_calls"] = self.batch.script_calls
        if self.real:
            evicted = int(info_stats(self.broker.server_client).get("evicted_keys", 0))
            self.counts["evicted_keys"] = evicted - self._evicted0
        row.update({c: self.counts.get(c, 0) for c in COUNTERS})
        row["in_flight"] = sum(len(s.running) for s in self.servers)
        row.update(sample.row)
        self.sink.sample(row)
        if self.progress is not None:
            self.progress(row)


def _extend(queue: str, ids: list[str]) -> Callable[[Broker], object]:
    return lambda d: d.extend_lease(queue, *ids)


def _dequeue(queue: str) -> Callable[[Broker], object]:
    return lambda d: d.dequeue(queue)


def uuid_hex(rng: random.Random) -> str:
    """A 32-hex-digit id from ``rng`` (aggregation set ids, reproducible per seed)."""
    return f"{rng.getrandbits(128):032x}"
