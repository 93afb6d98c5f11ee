"""Our composites against Asynq's own components: the differential test of the loops above the
scripts.

The recoverer, forwarder, janitor, aggregator and the processor's finish path decide, between
script calls, what to call next. Ours are Python (``broker.processor``, ``broker.server_ops``);
Asynq's are Go (``recoverer.go``, ``forwarder.go``, ``janitor.go``, ``aggregator.go``,
``processor.go``), run one pass at a time by the conformance driver
(``conformance/components``, :class:`broker.asynq_go.AsynqGoBroker` with ``components=True``).

Each example is a sequence of the conformance test's steps (``harness.conform``: operations,
clock steps, evictions), applied to our ``asynq-<version>`` variant and to Asynq on two
databases, so both start every pass from the same keyspace (checked after every step), with
composite passes mixed in:

* ``recover``, ``forward_if_ready``, ``delete_expired_completed_tasks``,
  ``reclaim_stale_aggregation_sets``: ours (``Broker``'s Python loop over our scripts) against
  Asynq's component pass; answers are the counts;
* ``aggregate``: :func:`broker.processor.aggregate_groups` against Asynq's aggregator, both
  naming sets and aggregated tasks alike; answers are the sets handed to the handler;
* ``process(pick, ending)``: :func:`broker.processor.finish` against Asynq's processor for a
  dequeued message (the latest, or an older, possibly stale one) and a handler result; the
  answer is whether the write went through (ours: no refusal; Asynq's: nothing logged).

After every step the two normalised keyspaces must be equal. A difference raises
:class:`~harness.conform.Divergence`, which Hypothesis shrinks to a minimal sequence.
"""

from __future__ import annotations

import uuid
from typing import Any

import hypothesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.processor import aggregate_groups, finish
from harness import conform
from harness.conform import QUEUE, Differential, Divergence, Op, Run
from model import keys
from model.endings import Ending
from model.errors import KeysimError
from model.message import TaskMessage

#: The composite passes compared (besides the operations the conformance test draws).
COMPOSITES = ("recover", "forward_if_ready", "delete_expired_completed_tasks",
              "reclaim_stale_aggregation_sets", "aggregate", "process")
#: Handler results a processed task may end with.
ENDINGS = tuple(Ending)

#: Weights of the steps: tasks are created, dequeued and left to age so that every pass has
#: work (the conformance test's inspector operations are rarer here).
WEIGHTS = {"enqueue": 4, "enqueue_unique": 1, "schedule": 2, "schedule_unique": 1,
           "add_to_group": 3, "add_to_group_unique": 1, "dequeue": 5, "extend_lease": 1,
           "write_result": 1, "pause": 1, "unpause": 1, "delete_task": 1, "run_task": 1,
           "archive_task": 1, "remove_queue": 1, "tick": 5, "evict": 1,
           "recover": 3, "forward_if_ready": 3, "delete_expired_completed_tasks": 2,
           "reclaim_stale_aggregation_sets": 2, "aggregate": 3, "process": 6}


def _draw(name: str) -> st.SearchStrategy[Op]:
    if name == "aggregate":
        return st.just(Op(name))
    if name == "process":
        return st.tuples(conform.picks, st.sampled_from(ENDINGS)).map(
            lambda args: Op("process", args))
    return conform._draw(name)


#: One step, drawn by :data:`WEIGHTS`.
step = st.sampled_from([name for name, weight in WEIGHTS.items() for _ in range(weight)]
                       ).flatmap(_draw)
sequences = st.lists(step, min_size=8, max_size=40)


#: The differences found so far, by name: what Asynq's component does that ours does not.
#: A differential that accepts one makes our side do as Asynq does there, so that the search
#: goes on past it (docs/findings.md, "Composites compared with Asynq's own components").
KNOWN_DIFFERENCES = {
    "lease_skip": "Asynq's processor writes nothing for a task whose lease has expired (its "
                  "Lease.IsValid is false: 'let recoverer take care of it'); ours writes the "
                  "ending (Done, MarkAsComplete, Retry, Archive, Requeue) whatever the lease.",
    "uncounted_always_retried": "Before v0.25.0 Asynq's processor retries an uncounted failure "
                                "(IsFailure false) whatever its retry count or SkipRetry; ours "
                                "archives it once its retries are used up, as v0.25.0+ do.",
}
LEASE_SKIP = "lease_skip"
UNCOUNTED_RETRIED = "uncounted_always_retried"


def _msg(task_id: str, payload: bytes | None = b"x", **fields: Any) -> TaskMessage:
    return TaskMessage(type="a", payload=payload, id=task_id, queue=QUEUE, **fields)


#: Hand-written sequences, run first, in which every pass has work: the recoverer retries and
#: archives, the forwarder forwards, the janitor deletes, the aggregator aggregates (grace and
#: max size), stale sets are reclaimed, and each handler result is processed under a live lease.
SCENARIOS: dict[str, list[Op]] = {
    "recoverer": [
        Op("enqueue", (_msg("t0", retry=1),)), Op("enqueue", (_msg("t1", retry=0),)),
        Op("dequeue"), Op("dequeue"), Op("tick", (61,)), Op("recover"), Op("tick", (3600,)),
        Op("forward_if_ready"), Op("dequeue"), Op("tick", (61,)), Op("recover"),
    ],
    "processor": [
        *(step for i, ending in enumerate(ENDINGS) for step in (
            Op("enqueue", (_msg(f"p{i}", retry=1),)), Op("dequeue"),
            Op("process", (-1, ending)), Op("tick", (3600,)), Op("forward_if_ready"),
            Op("delete_expired_completed_tasks"))),
    ],
    "janitor": [
        Op("enqueue", (_msg("c0", retention=60),)), Op("dequeue"),
        Op("process", (-1, Ending.SUCCESS)), Op("tick", (61,)),
        Op("delete_expired_completed_tasks"),
    ],
    "aggregator": [
        Op("add_to_group", (_msg("t0"), "g0")), Op("add_to_group", (_msg("t1"), "g0")),
        Op("add_to_group", (_msg("t2"), "g1")), Op("aggregate"), Op("tick", (11,)),
        Op("aggregate"), Op("add_to_group", (_msg("p0", payload=None), "g1")),
        Op("add_to_group", (_msg("p1"), "g1")),
        Op("aggregation_check", ("g1", str(uuid.UUID(int=99, version=4)))), Op("tick", (121,)),
        Op("reclaim_stale_aggregation_sets"), Op("aggregate"),
    ],
}


class ComponentDifferential(Differential):
    """:class:`~harness.conform.Differential` with the composite passes: ``theirs`` must be an
    ``AsynqGoBroker`` running Asynq's components. ``accept`` names differences of
    :data:`KNOWN_DIFFERENCES` our side reproduces instead of reporting."""

    passes = 0
    accept: frozenset[str] = frozenset()

    def _step(self, op: Op, run: Run) -> None:
        if op.name == "aggregate":
            self._compare(op, run, *self._aggregate())
        elif op.name == "process":
            msg = run.pick_msg(op.args[0])
            if msg is not None and self._offers(op.args[1]):
                self._compare(op, run, *self._process(msg, op.args[1]))
        else:
            super()._step(op, run)
        if op.name in COMPOSITES:
            self.passes += 1

    def _version(self) -> str:
        return str(getattr(self.theirs, "version", "v0.26.0"))

    def _offers(self, ending: Ending) -> bool:
        """Whether Asynq's processor has this handler result (RevokeTask came in v0.25.0)."""
        return ending is not Ending.REVOKE or self._version() >= "v0.25.0"

    def _compare(self, op: Op, run: Run, ours: Any, theirs: Any) -> None:
        self.coverage[(op.name, "ran")] += 1
        if ours not in ([], ()):
            self.coverage[(op.name, "work")] += 1
        if isinstance(ours, str):
            self.coverage[(op.name, ours)] += 1
        if ours != theirs:
            raise Divergence(f"{op!r} answered differently\n  ours : {ours!r}\n"
                             f"  asynq: {theirs!r}\n{self._context(run)}")

    def _aggregate(self) -> tuple[Any, Any]:
        names = {g: (self._uuid(), self._uuid()) for g in conform.GROUPS}
        set_ids = {g: s for g, (s, _) in names.items()}
        task_ids = {g: t for g, (_, t) in names.items()}
        listed = [m.decode() for m in self.ours.client.sscan_iter(keys.groups(QUEUE))]
        ours = aggregate_groups(self.ours, QUEUE, listed, set_ids, task_ids)
        theirs = self.theirs.aggregate(QUEUE, set_ids, task_ids)  # type: ignore[attr-defined]
        return ours, theirs

    def _process(self, msg: Any, ending: Ending) -> tuple[str, str]:
        lease = self.theirs.client.zscore(keys.lease(msg.queue), msg.id)
        # Asynq's Lease.IsValid: the deadline is now or later (virtual time, whole seconds).
        expired = lease is None or int(lease) * 10**9 < self.clock.now_ns
        if expired and LEASE_SKIP in self.accept:
            ours = "skipped: lease expired"
        else:
            try:
                if ending is Ending.UNCOUNTED_FAILURE and UNCOUNTED_RETRIED in self.accept \
                        and self._version() < "v0.25.0":
                    retry_at = self.ours.now_s + self.ours.policy.retry_delay_for(msg.id, msg.retried)
                    self.ours.retry(msg, retry_at, "boom", False)  # type: ignore[attr-defined]
                else:
                    finish(self.ours, msg, ending, "boom")
                ours = "written"
            except KeysimError:
                ours = "failed"  # Asynq logs the failure (and hands the write to its syncer)
        self.theirs.process(msg, ending, "boom")  # type: ignore[attr-defined]
        if expired:
            return ours, "skipped: lease expired"
        failed = [line for line in self.theirs.component_log  # type: ignore[attr-defined]
                  if "Could not" in line]  # the processor's words for a failed write
        return ours, "failed" if failed else "written"

    _names = 0

    def report(self) -> str:
        """The conformance coverage, then how often each composite pass ran or had work."""
        lines = [super().report(), f"composite passes: {self.passes}"]
        lines.append(f"  {'aggregate':32} ran={self.coverage[('aggregate', 'ran')]}, "
                     f"with a set={self.coverage[('aggregate', 'work')]}")
        ends = {o: n for (op, o), n in self.coverage.items() if op == "process" and o not in
                ("ran", "work")}
        lines.append(f"  {'process':32} " + ", ".join(f"{o}={n}" for o, n in sorted(ends.items())))
        return "\n".join(lines)

    def _uuid(self) -> str:
        self._names += 1
        return str(uuid.UUID(int=self._names, version=4))

    def run(self, max_examples: int, seed: int | None = None) -> None:
        """Run ``max_examples`` generated sequences with composite passes (Hypothesis seeded
        with ``seed`` when given)."""
        test = settings(max_examples=max_examples, deadline=None, database=None,
                        suppress_health_check=list(HealthCheck),
                        print_blob=True)(given(sequences)(self.check))
        if seed is not None:
            test = hypothesis.seed(seed)(test)
        test()


def compare_components(ours_url: str, theirs_url: str, version: str, max_examples: int,
                       seed: int | None = None, accept: frozenset[str] = frozenset()
                       ) -> ComponentDifferential:
    """Run the comparison of our composites on ``asynq-<version>`` with Asynq ``version``'s own
    components; the two URLs name databases that will be flushed. Returns the differential
    (``passes``, ``sequences``, ``report()``); raises Divergence on a difference."""
    from broker import Broker
    from broker.asynq_go import AsynqGoBroker, client_for
    from model.clock import VirtualClock

    clock = VirtualClock()
    client = client_for(ours_url)
    policy = conform.CONFORM_POLICY
    with AsynqGoBroker(theirs_url, version, policy, clock, components=True) as theirs:
        ours = Broker(client, AsynqGoBroker.variant_for(version), policy, clock)

        diff = ComponentDifferential(ours, theirs, clock,
                                     lambda: conform.reset_both(client, ours, theirs))
        diff.accept = _check_accept(accept)
        try:
            for ops in SCENARIOS.values():
                diff.check(ops)
            diff.run(max_examples, seed)
        finally:
            client.close()
    return diff


def _check_accept(accept: frozenset[str]) -> frozenset[str]:
    unknown = set(accept) - set(KNOWN_DIFFERENCES)
    if unknown:
        raise ValueError(f"unknown differences {sorted(unknown)}; known: {sorted(KNOWN_DIFFERENCES)}")
    return frozenset(accept)


__all__ = ["COMPOSITES", "KNOWN_DIFFERENCES", "ComponentDifferential", "compare_components", "sequences"]
