"""How fast is the stateful machine? Steps per second against a no-op machine of the same shape.

The figure of merit is the **ratio**: the machine's steps/s divided by the steps/s of a
:class:`RuleBasedStateMachine` with the same rules and argument strategies but empty bodies
(no model, no broker, no checks), run in the same process with the same settings. It measures
what the lockstep model + broker + per-step invariant and keyspace checks + the end-of-run
drain cost on top of Hypothesis' own generation. A *step* is one rule execution; the machine's
time includes the invariant checks after every step and the drain at the end of every example.

>>> noop = noop_machine()
>>> sorted(noop.rules_named())[:2]
['add_to_group', 'aggregate']
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import hypothesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import (
    RULE_MARKER,
    RuleBasedStateMachine,
    get_state_machine_test,
    invariant,
    rule,
)

from benchmarks.servers import known_servers, servers_to_measure, start_labelled
from harness.machine import KeyMachine, MachineConfig, make_machine

#: The default measurement: examples per run and steps per example.
EXAMPLES = 40
STEPS = 30
#: Seeds per measurement (each one run of the machine and one of the no-op machine).
REPEATS = 7


@dataclass(frozen=True)
class Rate:
    """Steps executed and the wall time they took (all repeats pooled)."""

    label: str
    steps: int
    seconds: float

    @property
    def per_second(self) -> float:
        """Steps per second."""
        return self.steps / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class BenchResult:
    """The machine on one backend against the no-op machine."""

    backend: str
    machine: Rate
    noop: Rate
    #: The ratio of each seed's pair of runs: their spread shows how far to trust :attr:`ratio`.
    per_seed: tuple[float, ...] = ()

    @property
    def ratio(self) -> float:
        """Machine steps/s ÷ no-op steps/s (goal: ≥ 0.25)."""
        return self.machine.per_second / self.noop.per_second if self.noop.per_second else 0.0

    def line(self) -> str:
        """One row of the table :func:`format_results` prints."""
        spread = f"{min(self.per_seed):.0%}–{max(self.per_seed):.0%}" if self.per_seed else "-"
        return (f"{self.backend:20} {self.machine.steps:7d} {self.machine.per_second:10.0f} "
                f"{self.noop.per_second:10.0f} {self.ratio:8.1%} {spread:>10}")


class _NoopBase(RuleBasedStateMachine):
    """Base of the generated no-op machine: counts nothing, checks nothing."""

    @classmethod
    def rules_named(cls) -> list[str]:
        """Names of its rules (the machine's rule names)."""
        return [name for name in dir(cls) if getattr(getattr(cls, name), RULE_MARKER, None)]

    @invariant()
    def nothing(self) -> None:
        """The no-op counterpart of the machine's per-step keyspace check."""


def noop_machine(machine: type[KeyMachine] = KeyMachine) -> type[_NoopBase]:
    """A machine with ``machine``'s rules and argument strategies and empty bodies.

    Preconditions are dropped (they read state the no-op machine does not keep), so every rule
    is always eligible: the generation work per step is the same or larger.
    """
    body: dict[str, Any] = {}
    for name in dir(machine):
        marker = getattr(getattr(machine, name), RULE_MARKER, None)
        if marker is not None:
            make_rule: Callable[..., Any] = rule
            body[name] = make_rule(**marker.arguments)(_noop(name))
    return type("NoopMachine", (_NoopBase,), body)


def _noop(name: str) -> Callable[..., None]:
    def step(self: Any, **_: Any) -> None:
        """Does nothing."""
    step.__name__ = name
    return step


def _counted(machine: type[RuleBasedStateMachine], counter: list[int]
             ) -> type[RuleBasedStateMachine]:
    """A subclass counting rule executions (invariant rounds minus the one after __init__)."""

    class Counted(machine):  # type: ignore[valid-type,misc]
        def __init__(self) -> None:
            super().__init__()
            self._first = True

        def check_invariants(self, *args: Any, **kwargs: Any) -> None:
            if not self._first:
                counter[0] += 1
            self._first = False
            super().check_invariants(*args, **kwargs)

    Counted.__name__ = machine.__name__
    return Counted


def time_machine(machine: type[RuleBasedStateMachine], label: str, *, examples: int,
                 steps: int, seed: int) -> Rate:
    """Run ``machine`` (generation only: it must not fail) and time its steps."""
    counter = [0]
    chosen = settings(max_examples=examples, stateful_step_count=steps, deadline=None,
                      database=None, suppress_health_check=list(HealthCheck),
                      phases=[Phase.generate])
    test = hypothesis.seed(seed)(
        get_state_machine_test(_counted(machine, counter), settings=chosen,
                               _min_steps=steps - 1))
    start = time.perf_counter()
    test()
    return Rate(label, counter[0], time.perf_counter() - start)


def bench(backend: str = "fakeredis", *, examples: int = EXAMPLES, steps: int = STEPS,
          repeats: int = REPEATS, seed: int = 0) -> BenchResult:
    """The reference machine on ``backend`` and the no-op machine, each run once per seed
    ``seed .. seed + repeats - 1``, in pairs (so load on the host affects both alike).

    The rates pool every run: total steps over total time. Pooling over several seeds matters:
    how much Hypothesis draws per step depends on the seed (the no-op machine's rate varies
    twofold from one seed to another), and both machines meet the same seeds.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    machine = make_machine(MachineConfig(backend=backend), name="BenchMachine")
    noop = noop_machine()
    time_machine(machine, "warm-up", examples=2, steps=steps, seed=seed - 1)  # imports, scripts
    runs: dict[str, list[Rate]] = {"machine": [], "noop": []}
    for i in range(repeats):
        for label, which in (("noop", noop), ("machine", machine)):
            gc.collect()  # start each run with the same (empty) collector debt
            runs[label].append(time_machine(which, label, examples=examples, steps=steps,
                                            seed=seed + i))
    pairs = tuple(m.per_second / n.per_second if n.per_second else 0.0
                  for m, n in zip(runs["machine"], runs["noop"], strict=True))
    return BenchResult(backend, _pooled(runs["machine"]), _pooled(runs["noop"]), pairs)


def _pooled(rates: Sequence[Rate]) -> Rate:
    return Rate(rates[0].label, sum(r.steps for r in rates), sum(r.seconds for r in rates))


def format_results(results: Sequence[BenchResult]) -> str:
    """The table: backend, steps measured, machine steps/s, no-op steps/s, the pooled ratio
    and the range of the per-seed ratios."""
    head = (f"{'backend':20} {'steps':>7} {'machine/s':>10} {'no-op/s':>10} {'ratio':>8} "
            f"{'per seed':>10}")
    return "\n".join([head, *(r.line() for r in results)])


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.machine [--backend B]... [--server LABEL]... [--examples N]
    [--steps N] [--repeats N]``: print the table (default backends: fakeredis and a private real
    Redis; ``--server`` adds a private server of each named family, :mod:`benchmarks.servers`)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.machine",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backend", action="append", default=None, metavar="B",
                        help="fakeredis, server (a private real Redis) or a redis:// URL "
                             "(repeatable; default: fakeredis and server)")
    parser.add_argument("--server", action="append", default=None, metavar="LABEL",
                        help="a private server of this family, measured in the same run "
                             f"(repeatable; {', '.join(label for label, _ in known_servers())}, "
                             "or 'all')")
    parser.add_argument("--examples", type=int, default=EXAMPLES, metavar="N")
    parser.add_argument("--steps", type=int, default=STEPS, metavar="N")
    parser.add_argument("--repeats", type=int, default=REPEATS, metavar="N",
                        help=f"seeds to pool (default {REPEATS})")
    args = parser.parse_args(argv)
    for name in ("examples", "steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    sizes = {"examples": args.examples, "steps": args.steps, "repeats": args.repeats}
    backends = args.backend or ([] if args.server else ["fakeredis", "server"])
    results = [bench(b, **sizes) for b in backends]
    chosen = None if args.server == ["all"] else args.server
    for label, launcher in servers_to_measure(chosen) if args.server else ():
        with start_labelled(launcher) as server:
            result = bench(server.url, **sizes)
            results.append(replace(result, backend=f"{label} {server.version}"))
    print(format_results(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
