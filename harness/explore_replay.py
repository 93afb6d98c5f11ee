"""Explored interleavings replayed on a broker variant: ``keysim explore --processes N
--variant V``.

:func:`model.explore_procs.explore_processes` searches the reference model, which cannot take
a variant's quirks: an Asynq variant's scripts do what the model does not. So every maximal
schedule the search explored (each explored state's shortest schedule that no other extends)
is run again, step by step, on a fresh broker of the variant (fakeredis), the processes' local
state following the broker's answers and the variant's quirk flags, and the invariants
I1–I14 are checked on the broker's keyspace after every step (locks judged strictly only on
the reference, as the machine does). The shortest failing prefix is reported.

This finds what a variant does wrong one step away from every state the reference explored,
reached by that state's first schedule. States the reference merges may differ on the variant,
and steps that commute on the reference may not on it: a defect that needs such a state, or
the skipped order, is outside this search — said, not hidden.

>>> from model.explore_procs import explore_processes
>>> report = explore_processes(1, 1, 2, keep_edges=True)
>>> replay_schedules(report.edges, "reference").violation is None
True
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis

from broker import Broker
from broker.variants import variant as variant_named
from harness.backends import make_client, release_client
from harness.fakeserver import snapshot_from_memory
from harness.processes import perform_on_broker
from harness.replay import _dump, _restore_all
from model.clock import VirtualClock
from model.composites import Context, Process
from model.explore import QUEUE, explore_policy
from model.explore_procs import Move, ScheduleViolation, execute
from model.invariants import check_all
from model.policy import Policy


@dataclass
class ReplayResult:
    """What replaying explored schedules on a variant found."""

    variant: str
    schedules: int = 0
    steps: int = 0
    seconds: float = 0.0
    violation: ScheduleViolation | None = None
    stopped: str = ""
    seen: list[ScheduleViolation] = field(default_factory=list)

    def format(self) -> str:
        head = (f"replayed {self.schedules:,} schedules ({self.steps:,} steps) on "
                f"{self.variant} in {self.seconds:.1f} s"
                + (f" ({self.stopped})" if self.stopped else ""))
        if self.violation is None:
            return head + ": no violation"
        return head + ":\n" + self.violation.format()


def replay_schedules(edges: Sequence[tuple[tuple[Move, ...], tuple[Move, ...]]],
                     variant: str, *, processes: int | None = None,
                     policy: Policy | None = None, budget: float | None = None) -> ReplayResult:
    """Run every explored step on ``variant`` (fakeredis): for each explored state (breadth
    first), its schedule once, then each move the search ran from it, from a saved copy of the
    database; I1–I14 after each move. The first violation (a shortest schedule) ends it."""
    policy = policy or explore_policy()
    flags = frozenset(q.value for q in variant_named(variant).quirks)
    strict = variant == "reference"
    count = processes or 1 + max((m.process for s, ms in edges for m in (*s, *ms)), default=0)
    result = ReplayResult(variant)
    start = time.perf_counter()
    client = make_client("fakeredis")
    assert isinstance(client, redis.Redis)
    try:
        for schedule, ran in edges:
            if budget is not None and time.perf_counter() - start > budget:
                result.stopped = f"budget {budget:g} s"
                break
            client.flushall()
            clock = VirtualClock()
            sut = Broker(client, variant, policy, clock)
            procs = tuple(Process.start(i, QUEUE, ()) for i in range(count))
            for move in schedule:
                procs = _step(sut, move, procs, Context(clock.seconds, policy, flags))
            result.steps += len(schedule)
            saved, now = _dump(client), clock.now_ns
            for move in ran:
                result.schedules += 1
                sut = Broker(client, variant, policy, VirtualClock(now))  # time back too
                _step(sut, move, procs, Context(sut.clock.seconds, policy, flags))
                result.steps += 1
                snap = snapshot_from_memory(sut, QUEUE) or sut.snapshot(QUEUE)
                found = check_all(snap, policy, strict_locks=strict)
                if found:
                    v = found[0]
                    result.violation = ScheduleViolation(v.invariant, v.key, v.message,
                                                         (*schedule, move))
                    return _done(result, start)
                _restore_all(client, saved)
    finally:
        release_client(client)
    return _done(result, start)


def _step(sut: Broker, move: Move, procs: tuple[Process, ...], ctx: Context
          ) -> tuple[Process, ...]:
    return execute(move, procs, ctx, lambda r: perform_on_broker(sut, r), sut.clock.advance)


def _done(result: ReplayResult, start: float) -> ReplayResult:
    result.seconds = time.perf_counter() - start
    return result
