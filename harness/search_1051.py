"""Asynq #1051 (spec BZ-25): every point at which a script that touches active or lease can stop
part-way, and which of them leaves a task active without a lease (I3).

For each variant and each such operation (the dequeue, and every report a worker or the
recoverer sends), the script is run once per cut point: stopped by a Lua error at its
(i+1)-th write command, the first i writes kept, as Redis keeps them (docs/faults.md, abort).
Each torn keyspace is checked; the answer names the command the cut fell on, so whether a
real Redis error can occur there can be judged. docs/findings.md, section "#1051", has the
result. Run: ``python -m harness.search_1051 [REDIS_URL]`` (fakeredis without a URL).

:func:`eviction_traffic` is the other candidate, measured on a real Redis: Asynq-like traffic
(enqueue, dequeue, heartbeats, completion with retention, the recoverer) under ``maxmemory``
and an eviction policy, with I3 checked every few ticks. Run:
``python -m harness.search_1051 --evict REDIS_URL POLICY [TICKS [SEED [VARIANT]]]`` (it changes that
server's memory settings, and restores them; VARIANT ``asynq`` runs Asynq's own Go code).

:func:`machine_search` runs the stateful machine (``keysim check``'s, with every fault of
``--faults all`` and the ``evict`` rule) on an Asynq variant, looking past every known defect
(``MachineConfig.ignore``) but never past I3. Run:
``python -m harness.search_1051 --machine BACKEND EXAMPLES STEPS SEED...``.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import fakeredis
import redis as redis_py

from broker import Broker
from harness.check import CheckResult, default_check_config, run_check
from harness.config import MACHINE_POLICY
from harness.fault_rules import FAULTS, _CuttingRunner
from harness.machine import make_machine
from harness.zoo import CASES
from model import keys
from model.clock import VirtualClock
from model.errors import KeysimError, ScriptError
from model.invariants import Invariant, Kind, check_all
from model.message import TaskMessage

Q = "default"
VARIANTS = ("reference", "asynq-v0.26.0")
#: Operations whose scripts write active or lease; ``None`` for the dequeue (no task in hand).
OPERATIONS: dict[str, Callable[[Broker, TaskMessage], Any]] = {
    "dequeue": lambda b, _m: b.dequeue(Q),
    "done": lambda b, m: b.done(m),
    "mark_as_complete": lambda b, m: b.mark_as_complete(m),
    "requeue": lambda b, m: b.requeue(m),
    "retry": lambda b, m: b.retry(m, b.now_s + 60, "boom"),
    "archive": lambda b, m: b.archive(m, "boom"),
}
#: More cut points than any of these scripts has writes.
MAX_WRITES = 16


@dataclass(frozen=True)
class Cut:
    """One torn run: ``kept`` writes kept, the cut at ``command`` (None: the script ran whole
    with ``kept`` writes allowed), and the I3 violations it left (their kinds, sorted)."""

    variant: str
    operation: str
    kept: int
    command: str | None
    i3: tuple[str, ...]


def in_flight(client: redis_py.Redis, variant: str, operation: str
              ) -> tuple[Broker, TaskMessage | None]:
    """An empty database with two tasks enqueued and, unless ``operation`` is the dequeue,
    one of them dequeued (the message in hand)."""
    client.flushdb()
    broker = Broker(client, variant, MACHINE_POLICY, VirtualClock())
    for task_id in ("t0", "t1"):
        broker.enqueue(TaskMessage(type="job", payload=b"x", id=task_id, queue=Q, retry=3))
    return broker, (None if operation == "dequeue" else broker.dequeue(Q))


def cut_run(client: redis_py.Redis, variant: str, operation: str, kept: int) -> Cut:
    """``operation`` with its script stopped at write ``kept`` + 1, and what it left."""
    broker, msg = in_flight(client, variant, operation)
    runner = broker._run
    cutting: Any = _CuttingRunner(runner, broker.variant, kept)
    broker._run = cutting
    command = None
    try:
        OPERATIONS[operation](broker, msg)  # type: ignore[arg-type]
    except ScriptError as err:
        command = str(err).rsplit(" at ", 1)[-1].split()[0] if " at " in str(err) else str(err)
    finally:
        broker._run = runner
    i3 = sorted(v.kind.value for v in check_all(broker.snapshot(Q), MACHINE_POLICY)
                if v.kind is not None and v.kind.invariant is Invariant.ACTIVE_MATCHES_LEASE)
    return Cut(variant, operation, kept, command, tuple(i3))


def search(client: redis_py.Redis) -> Iterator[Cut]:
    """Every cut point of every operation on every variant, up to the script's whole run."""
    for variant in VARIANTS:
        for operation in OPERATIONS:
            for kept in range(MAX_WRITES):
                cut = cut_run(client, variant, operation, kept)
                yield cut
                if cut.command is None:
                    break


#: Eviction traffic: the memory limit, tasks in flight, completed tasks' retention (s).
TRAFFIC_MAXMEMORY = 2 * 1024 * 1024
WORKERS = 20
RETENTION_S = 3600
CHECK_EVERY = 50


#: ``eviction_traffic``'s variant that runs Asynq v0.26.0's own Go code (the driver).
ASYNQ_CODE = "asynq"


def eviction_traffic(client: redis_py.Redis, policy: str, ticks: int, seed: int,
                     variant: str = "asynq-v0.26.0") -> Counter[str]:
    """Asynq-like traffic for ``ticks`` ticks of 0.2 s under ``maxmemory`` and ``policy``:
    2 enqueues a tick (512-byte payloads, kept 1 h once complete), dequeues up to WORKERS in
    flight, the oldest finished each tick, heartbeats every 5 s, the recoverer every 60 s.
    Returns counts: the I3 kinds seen at the checks (every CHECK_EVERY ticks), ``checks``,
    ``lease_key_missing`` / ``active_key_missing`` (at a check, one of the two keys absent while
    the other holds tasks), ``refused`` (operations refused, e.g. on an evicted task) and
    ``oom`` (writes Redis refused)."""
    rng = random.Random(seed)
    client.flushdb()
    broker = _traffic_broker(client, variant)
    counts: Counter[str] = Counter()
    held: list[TaskMessage] = []
    client.config_set("maxmemory-policy", policy)
    client.config_set("maxmemory", TRAFFIC_MAXMEMORY)
    try:
        for tick in range(ticks):
            broker.clock.advance(0.2)
            _traffic_tick(broker, held, rng, tick, counts)
            if tick % CHECK_EVERY == CHECK_EVERY - 1:
                _check_i3(broker, counts)
    finally:
        client.config_set("maxmemory", 0)
        client.config_set("maxmemory-policy", "noeviction")
        if variant == ASYNQ_CODE:
            broker.close()
    return counts


def _traffic_broker(client: redis_py.Redis, variant: str) -> Any:
    """Our scripts of ``variant`` on ``client``'s database, or (``ASYNQ_CODE``) Asynq v0.26.0's
    own ``RDB`` and components through the Go driver, on the same database."""
    if variant != ASYNQ_CODE:
        return Broker(client, variant, MACHINE_POLICY, VirtualClock())
    from broker.asynq_go import AsynqGoBroker

    kwargs = client.connection_pool.connection_kwargs
    url = f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"
    return AsynqGoBroker(url, "v0.26.0", clock=VirtualClock())


def _traffic_tick(broker: Any, held: list[TaskMessage], rng: random.Random, tick: int,
                  counts: Counter[str]) -> None:
    """One tick of the traffic (see :func:`eviction_traffic`); refusals are counted."""
    def enqueue(n: int) -> None:
        broker.enqueue(TaskMessage(type="job", payload=rng.randbytes(512), id=f"t{tick}-{n}",
                                   queue=Q, retention=RETENTION_S))

    steps: list[Callable[[], Any]] = [partial(enqueue, n) for n in range(2)]
    if held:
        steps.append(lambda: broker.mark_as_complete(held.pop(0)))
    if tick % 25 == 0 and held:
        steps.append(lambda: broker.extend_lease(Q, *(m.id for m in held)))
    if tick % 300 == 0:
        steps.append(lambda: broker.recover(Q))
    for step in steps:
        _counted(step, counts)
    while len(held) < WORKERS:
        msg = _counted(lambda: broker.dequeue(Q), counts)
        if msg is None:
            break
        held.append(msg)


def _counted(step: Callable[[], Any], counts: Counter[str]) -> Any:
    """``step()``, or None with the refusal counted (``oom`` or ``refused``)."""
    try:
        return step()
    except redis_py.exceptions.OutOfMemoryError:
        counts["oom"] += 1
    except (KeysimError, redis_py.exceptions.ResponseError):
        counts["refused"] += 1
    return None


def _check_i3(broker: Any, counts: Counter[str]) -> None:
    """Count the I3 violations of one snapshot (one script: one instant), and whether the
    lease or the active key was missing in it while the other held tasks."""
    counts["checks"] += 1
    snap = broker.snapshot(Q)
    for v in check_all(snap, MACHINE_POLICY):
        if v.kind is not None and v.kind.invariant is Invariant.ACTIVE_MATCHES_LEASE:
            counts[v.kind.value] += 1
    has_lease, has_active = keys.lease(Q) in snap.entries, keys.active(Q) in snap.entries
    counts["lease_key_missing"] += has_active and not has_lease
    counts["active_key_missing"] += has_lease and not has_active


def machine_search(backend: str, examples: int, steps: int, seed: int,
                   variant: str = "asynq-v0.26.0") -> CheckResult:
    """One run of the machine with every fault, every known defect tolerated except I3's."""
    config = replace(default_check_config(variant, backend, frozenset(FAULTS)), faults=True,
                     ignore=frozenset(CASES) | {"BZ-13", "pause_unregistered"})
    base = make_machine(config)

    class NeverPastI3(base):  # type: ignore[valid-type,misc]
        def _tolerated(self, v: Any, snap: Any) -> bool:
            return v.invariant != Invariant.ACTIVE_MATCHES_LEASE and bool(
                super()._tolerated(v, snap))

    return run_check(config, max_examples=examples, steps=steps, seed=seed, machine=NeverPastI3)


def main(argv: list[str]) -> int:
    """Print every cut (or, with ``--evict``, the traffic's counts); exit 1 when a task is
    found active without a lease."""
    if argv[:1] == ["--machine"]:
        backend, examples, steps, *seeds = argv[1:]
        failed = 0
        for seed in map(int, seeds):
            result = machine_search(backend, int(examples), int(steps), seed)
            verdict = "no violation" if result.failure is None else str(result.failure)
            print(f"{backend} seed {seed}: {result.examples} examples, {result.steps} steps, "
                  f"{result.seconds:.0f} s: {verdict}")
            failed += result.failure is not None
            if result.failure is not None:
                print(result.program)
        return 1 if failed else 0
    if argv[:1] == ["--evict"]:
        url, policy, *rest = argv[1:]
        ticks, seed = (int(rest[0]) if rest else 3000), (int(rest[1]) if len(rest) > 1 else 0)
        variant = rest[2] if len(rest) > 2 else "asynq-v0.26.0"
        counts = eviction_traffic(redis_py.Redis.from_url(url), policy, ticks, seed, variant)
        print(f"{variant}, {policy}, {ticks} ticks, seed {seed}: {dict(sorted(counts.items()))}")
        return 1 if counts[Kind.ACTIVE_WITHOUT_LEASE.value] else 0
    client = (redis_py.Redis.from_url(argv[0]) if argv
              else fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    found = 0
    for cut in search(client):
        where = f"cut at write {cut.kept + 1} ({cut.command})" if cut.command else "whole"
        print(f"{cut.variant:14} {cut.operation:17} {where:36} "
              f"I3: {', '.join(cut.i3) or '-'}")
        found += Kind.ACTIVE_WITHOUT_LEASE.value in cut.i3
    print(f"{found} cut(s) leave a task active without a lease")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
