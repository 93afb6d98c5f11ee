"""Running the stateful machine outside pytest: ``keysim check`` and ``keysim zoo`` use this.

:func:`default_check` is what ``keysim check`` runs by default: rounds of the machine until
every (transition, outcome) pair the table declares reachable (:mod:`model.reachability`) has
run ``min_hits`` times, or until the budget runs out. :func:`run_check` runs one fixed-size
Hypothesis run (``--profile``, the bug zoo, tests). Either way the verdict is PASS only when
no leak was found *and* coverage is complete, FAIL when a leak was found, INCOMPLETE
otherwise.

>>> result = run_check(MachineConfig(variant="reference"), max_examples=3, steps=5, seed=1)
>>> result.passed, result.examples >= 1, result.verdict
(True, True, 'INCOMPLETE')
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import hypothesis
from hypothesis import HealthCheck, Phase, settings, target
from hypothesis.stateful import get_state_machine_test

from broker.variants import variant as variant_named
from harness.backends import CLUSTER_BACKEND
from harness.config import MACHINE_POLICY, MachineConfig
from harness.fault_rules import fault_pairs
from harness.leaks import LeakFound
from harness.machine import ASYNQ_BACKEND, COVERAGE, KeyMachine, make_machine, overriding
from harness.profiles import PROFILES
from model.policy import Policy
from model.reachability import Pair, exclusions, required_pairs
from model.transitions import TRANSITIONS

#: Every declared pair must run this many times (``keysim check --min-hits``).
MIN_HITS = 3
#: ... and the coverage-driven check runs at least this many examples.
MIN_EXAMPLES = 100
#: Default budget of the coverage-driven check in seconds, by backend: a real Redis answers
#: each script over a socket (a cluster's nodes too, a step's batch split between two of
#: them), Asynq's own code through its Go driver on top.
BUDGETS: Mapping[str, float] = {"fakeredis": 60.0, "server": 180.0, CLUSTER_BACKEND: 180.0,
                                ASYNQ_BACKEND: 600.0}
#: Examples per Hypothesis run of the coverage-driven check, and steps per example: many short
#: runs with fresh seeds reach more of the table than one long run (each run's examples
#: mutate its own early ones).
ROUND_EXAMPLES = 25
ROUND_STEPS = 50


@dataclass(frozen=True)
class CoverageGoal:
    """What a run must reach to PASS: each required pair ``min_hits`` times, and at least
    ``min_examples`` examples. ``excluded`` are the declared pairs the design under test cannot
    produce, with their reasons (never demanded, always listed)."""

    min_hits: int
    min_examples: int
    required: tuple[Pair, ...]
    excluded: Mapping[Pair, str]

    def missing(self, coverage: Mapping[Pair, int]) -> list[Pair]:
        """Required pairs run fewer than ``min_hits`` times."""
        return [pair for pair in self.required if coverage.get(pair, 0) < self.min_hits]

    def complete(self, coverage: Mapping[Pair, int], examples: int) -> bool:
        """Whether ``coverage`` after ``examples`` examples meets the goal."""
        return examples >= self.min_examples and not self.missing(coverage)

    def reached(self, coverage: Mapping[Pair, int]) -> int:
        """Required pairs run at least ``min_hits`` times."""
        return len(self.required) - len(self.missing(coverage))


def goal_for(config: MachineConfig, min_hits: int = MIN_HITS, min_examples: int = 0
             ) -> CoverageGoal:
    """The coverage goal of ``config``'s variant: the table's pairs minus the exclusions of
    the reference design and of the variant's quirks (``model.reachability``).

    >>> goal = goal_for(MachineConfig(variant="asynq-v0.26.0"))
    >>> ("delete_expired_archived", "ok") in goal.excluded, len(goal.required) > 90
    (True, True)
    """
    if min_hits < 1 or min_examples < 0:
        raise ValueError(f"min_hits must be >= 1 and min_examples >= 0, got {min_hits}, "
                         f"{min_examples}")
    quirks = sorted(q.value for q in variant_named(config.variant).quirks)
    required = required_pairs(quirks) + fault_pairs(config.fault_rules)
    return CoverageGoal(min_hits, min_examples, required, exclusions(quirks))


def default_budget(backend: str) -> float:
    """The coverage-driven check's default budget on ``backend`` (a redis:// URL counts as a
    real server)."""
    return BUDGETS.get(backend, BUDGETS["server"])


@dataclass
class CheckResult:
    """What one run of the machine found."""

    config: MachineConfig
    passed: bool
    examples: int
    steps: int
    seconds: float
    failure: LeakFound | None = None
    program: str = ""
    shrunk_steps: int = 0
    #: Every distinct defect Hypothesis reported (one per invariant that broke), shrunk.
    failures: list[LeakFound] = field(default_factory=list)
    examples_to_failure: int = 0
    coverage: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: What PASS demands of the coverage (see :class:`CoverageGoal`).
    goal: CoverageGoal | None = None
    #: How the run was sized: "budget 60 s" (coverage-driven) or "profile dev" (fixed size).
    sizing: str = ""
    seed: int | None = None
    rounds: int = 1

    @property
    def complete(self) -> bool:
        """Whether the coverage goal was met (True when there is no goal)."""
        return self.goal is None or self.goal.complete(self.coverage, self.examples)

    @property
    def verdict(self) -> str:
        """PASS (no leak, coverage complete), FAIL (a leak) or INCOMPLETE (no leak found, but
        coverage short of the goal: never a pass)."""
        if not self.passed:
            return "FAIL"
        return "PASS" if self.complete else "INCOMPLETE"

    @property
    def exit_code(self) -> int:
        """``keysim check``'s exit code: 0 PASS, 1 FAIL, 3 INCOMPLETE."""
        return {"PASS": 0, "FAIL": 1, "INCOMPLETE": 3}[self.verdict]

    def coverage_line(self) -> str:
        """The coverage reached against the goal, in one line."""
        if self.goal is None:
            return f"{len(+self.coverage)} pairs reached"
        goal = self.goal
        excluded = f", {len(goal.excluded)} excluded" if goal.excluded else ""
        return (f"coverage {goal.reached(self.coverage)}/{len(goal.required)} pairs reached "
                f">= {goal.min_hits} times{excluded}")

    def summary(self) -> str:
        """One paragraph for the terminal."""
        seed = f", seed {self.seed}" if self.seed is not None else ""
        rounds = f", {self.rounds} rounds" if self.rounds > 1 else ""
        sizing = f" ({self.sizing}{seed}{rounds})" if self.sizing or seed else ""
        head = (f"{self.config.variant} on {self.config.backend}: {self.coverage_line()}; "
                f"{self.examples} examples, {self.steps} steps in {self.seconds:.1f} s{sizing}")
        if self.verdict == "PASS":
            return f"PASS  {head}; no leak, no disagreement"
        if self.verdict == "INCOMPLETE":
            assert self.goal is not None
            return (f"INCOMPLETE  {head}; no leak found, but coverage is short of the goal "
                    f"(not a pass)\n{missing_pairs_text(self.goal, self.coverage, self.examples)}")
        assert self.failure is not None
        return (f"FAIL  {head}\n\nviolated: {self.failure.invariant} — {self.failure.message}\n"
                f"{self.failure.detail}\n\nminimal failing program ({self.shrunk_steps} steps):\n"
                f"{self.program}")


def missing_pairs_text(goal: CoverageGoal, coverage: Mapping[Pair, int], examples: int) -> str:
    """What an incomplete run lacks: pairs never reached, pairs reached too rarely, examples."""
    missing = goal.missing(coverage)
    never = [f"{t} {o}" for t, o in missing if not coverage.get((t, o), 0)]
    rare = [f"{t} {o} ({coverage[(t, o)]}x)" for t, o in missing if coverage.get((t, o), 0)]
    lines = []
    if never:
        lines.append(f"never reached ({len(never)}): {', '.join(never)}")
    if rare:
        lines.append(f"reached fewer than {goal.min_hits} times ({len(rare)}): {', '.join(rare)}")
    if examples < goal.min_examples:
        lines.append(f"examples: {examples} of the {goal.min_examples} required")
    return "\n".join(lines)


def missing_transitions(coverage: Counter[tuple[str, str]]) -> list[str]:
    """Transitions of the table never executed successfully (outcome ok) in ``coverage``."""
    done = {name for (name, outcome), n in coverage.items() if outcome == "ok" and n}
    return [name for name in TRANSITIONS if name not in done]


def coverage_table(coverage: Counter[tuple[str, str]], goal: CoverageGoal | None = None) -> str:
    """Every transition with each outcome it can return and how often it was seen; with a
    ``goal``, excluded pairs are marked and their reasons listed."""
    excluded = goal.excluded if goal is not None else {}
    lines = [f"{'transition':34} outcomes (seen / expected)"]
    for name, row in TRANSITIONS.items():
        cells = []
        for outcome in row.outcomes:
            n = coverage.get((name, outcome.value), 0)
            mark = "excluded" if (name, outcome.value) in excluded else "MISSING"
            cells.append(f"{outcome.value}={n}" if n else f"{outcome.value}={mark}")
        lines.append(f"{name:34} " + "  ".join(cells))
    lines += [f"excluded: {t} {o}: {why}" for (t, o), why in excluded.items()]
    return "\n".join(lines)


def run_check(config: MachineConfig, *, max_examples: int | None = None,
              steps: int | None = None, seed: int | None = None, profile: str = "dev",
              database: bool = False, report_multiple: bool = False,
              min_steps: int = 0, targeting: bool = True, shrink: bool = True,
              goal: CoverageGoal | None = None, steer: bool = True,
              stop: Callable[[Counter[Pair], int], bool] | None = None,
              machine: type[KeyMachine] | None = None) -> CheckResult:
    """Run the machine of ``config`` under a Hypothesis profile; never raises for a leak.

    The result's verdict judges coverage against ``goal`` (default: :func:`goal_for`
    ``config``). With a ``goal`` and ``steer``, each example is steered (Hypothesis
    ``target``) toward the pairs still short of it; ``stop(coverage, examples)``, asked after
    each example that passed while nothing failed yet, ends the run early when it answers True.

    ``report_multiple`` lets Hypothesis shrink and report every distinct defect (one per
    invariant) instead of stopping at the first — slower, used to list a variant's defects.
    ``min_steps`` makes every example at least that long (deeper states, better coverage).
    ``targeting=False`` skips Hypothesis' target phase (hill-climbing on transitions reached):
    it helps coverage, not the hunt for a known defect, and costs examples.
    ``shrink=False`` reports the failing program as generated (for examples so costly that
    shrinking would take minutes; keep ``steps`` small then). ``machine`` runs that machine
    class instead of ``make_machine(config)`` (``harness.processes``).
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    base = settings.get_profile(profile)
    chosen = settings(base, max_examples=max_examples or base.max_examples,
                      stateful_step_count=steps or base.stateful_step_count,
                      suppress_health_check=list(HealthCheck), deadline=None,
                      database=settings().database if database else None,
                      phases=[p for p in Phase if p is not Phase.explain
                              and (targeting or p is not Phase.target)
                              and (shrink or p is not Phase.shrink)],
                      report_multiple_bugs=report_multiple)
    counts = {"examples": 0, "steps": 0, "first_failure": 0}
    before = COVERAGE.copy()
    machine = _counting(machine or make_machine(config), counts,
                        _Steering(before, goal if steer else None, stop))
    test = get_state_machine_test(machine, settings=chosen, _min_steps=min_steps)
    if seed is not None:
        test = hypothesis.seed(seed)(test)
    start = time.perf_counter()
    failures: list[LeakFound] = []
    try:
        test()
    except _RunOver:  # the stop rule ended the run between two examples
        pass
    except BaseException as err:  # a leak (or a group of them); anything else re-raised
        failures = _leaks(err)
        if not failures:
            raise
    seconds = time.perf_counter() - start
    for leak in failures:  # a kept traceback would keep the failing machine and its keyspace
        leak.__traceback__ = None
        leak.__context__ = leak.__cause__ = None
    failure = failures[0] if failures else None
    program = _program(failure, config) if failure else ""
    return CheckResult(config, failure is None, counts["examples"], counts["steps"], seconds,
                       failure=failure, program=program, shrunk_steps=program_length(program),
                       failures=failures, examples_to_failure=counts["first_failure"],
                       coverage=COVERAGE - before, goal=goal or goal_for(config), seed=seed,
                       sizing=f"profile {profile}")


def check_until_covered(config: MachineConfig, *, seed: int | None = None,
                        budget: float | None = None, min_hits: int = MIN_HITS,
                        min_examples: int = MIN_EXAMPLES, steps: int | None = None,
                        round_examples: int = ROUND_EXAMPLES, steer: bool = True,
                        goal: CoverageGoal | None = None,
                        machine: type[KeyMachine] | None = None) -> CheckResult:
    """Rounds of the machine, each a Hypothesis run with a fresh seed drawn from ``seed``,
    until the coverage goal is met (each required pair ``min_hits`` times, at least
    ``min_examples`` examples) or ``budget`` seconds (default :func:`default_budget`) have
    passed, or a leak is found. A round stops between examples as soon as either happens;
    a leak found within the budget is shrunk to its minimal program even past it.
    ``steer=False`` turns off the ``target`` toward pairs still missing (to measure it).
    ``goal`` replaces :func:`goal_for` ``config``'s and ``machine`` the machine class (see
    :func:`run_check`).
    """
    goal = goal or goal_for(config, min_hits, min_examples)
    budget = default_budget(config.backend) if budget is None else budget
    if budget <= 0:
        raise ValueError(f"budget must be > 0 seconds, got {budget}")
    seed = random.randrange(2**32) if seed is None else seed
    seeds = random.Random(seed)
    start = time.perf_counter()
    ends = start + budget
    total: Counter[Pair] = Counter()
    examples = steps_run = rounds = 0
    failed: CheckResult | None = None
    while time.perf_counter() < ends and not goal.complete(total, examples):
        run = run_check(config, max_examples=round_examples, steps=steps or ROUND_STEPS,
                        seed=seeds.getrandbits(32), goal=goal, steer=steer,
                        stop=_stop_rule(goal, ends, total, examples), machine=machine)
        rounds += 1
        total.update(run.coverage)
        examples += run.examples
        steps_run += run.steps
        if not run.passed:
            failed = run
            break
    sizing = f"budget {budget:g} s"
    common: dict[str, Any] = {"examples": examples, "steps": steps_run, "coverage": total, "goal": goal,
              "seconds": time.perf_counter() - start, "sizing": sizing, "seed": seed,
              "rounds": rounds}
    if failed is not None:
        return replace(failed, **common)
    return CheckResult(config, True, **common)


def _stop_rule(goal: CoverageGoal, ends: float, earlier: Counter[Pair], examples: int
               ) -> Callable[[Counter[Pair], int], bool]:
    """A round's stop rule: the budget ran out, or the goal is met counting the rounds before
    (``earlier`` coverage, ``examples``)."""
    def stop(coverage: Counter[Pair], ran: int) -> bool:
        return time.perf_counter() >= ends or goal.complete(earlier + coverage, examples + ran)
    return stop


def default_check_config(variant: str = "reference", backend: str = "fakeredis",
                         faults: frozenset[str] = frozenset()) -> MachineConfig:
    """The machine ``keysim check`` runs by default: policies and starting scenarios drawn
    per example, time steps landing on deadlines, and the ``faults`` asked for
    (``--faults``, :mod:`harness.fault_rules`). An Asynq variant differs from the reference
    design on purpose: it is judged by the invariants and the drain alone, not by agreement
    with the model."""
    return MachineConfig(variant=variant, backend=backend,
                         oracle=not variant.startswith("asynq-"),
                         policies=True, scenarios=True, deadlines=True, fault_rules=faults)


def default_check(variant: str = "reference", backend: str = "fakeredis", *,
                  seed: int | None = None, budget: float | None = None,
                  min_hits: int = MIN_HITS) -> CheckResult:
    """Exactly what ``keysim check`` runs without ``--profile``/``--max-examples``: the
    coverage-driven check of :func:`default_check_config` (see :func:`check_until_covered`)."""
    return check_until_covered(default_check_config(variant, backend), seed=seed,
                               budget=budget, min_hits=min_hits)


def program_length(program: str) -> int:
    """Rule calls in a printed program (invariant checks and teardown excluded)."""
    return sum(1 for line in program.splitlines()
               if line.startswith("state.") and not line.startswith(
                   ("state.keyspace_is_sound", "state.teardown")))


class _RunOver(BaseException):
    """Ends a Hypothesis run between two examples (the stop rule of :func:`run_check`). Not an
    Exception, so Hypothesis does not take it for a failure to shrink."""


@dataclass
class _Steering:
    """What a run steers by: the coverage before it, the goal and the stop rule."""

    before: Counter[Pair]
    goal: CoverageGoal | None
    stop: Callable[[Counter[Pair], int], bool] | None

    def wanted(self, example: Counter[Pair], earlier: Counter[Pair]) -> int:
        """Pairs of this ``example`` still short of the goal after the ``earlier`` examples."""
        if self.goal is None:
            return 0
        hits = self.goal.min_hits
        return sum(1 for pair in example if earlier.get(pair, 0) < hits
                   and pair in self.goal.required)


def _counting(machine: type[KeyMachine], counts: dict[str, int],
              steering: _Steering) -> type[KeyMachine]:
    """A subclass that counts examples and steps, and the example of the first failure; it
    steers toward the pairs still missing and ends the run when the stop rule says so."""

    class Counting(machine):  # type: ignore[valid-type,misc]
        def __init__(self) -> None:
            super().__init__()
            counts["examples"] += 1
            self.coverage_at_start = COVERAGE.copy() if steering.goal is not None else None

        def teardown(self) -> None:
            counts["steps"] += len(self.steps)
            failed = not self.step_ok
            if self.coverage_at_start is not None and hypothesis.currently_in_test_context():
                example = COVERAGE - self.coverage_at_start
                earlier = self.coverage_at_start - steering.before
                target(float(steering.wanted(example, earlier)), label="pairs still missing")
            try:
                super().teardown()
            except LeakFound:  # the drain's verdict
                failed = True
                raise
            finally:
                if failed and not counts["first_failure"]:
                    counts["first_failure"] = counts["examples"]
            if (steering.stop is not None and not failed and not counts["first_failure"]
                    and steering.stop(COVERAGE - steering.before, counts["examples"])):
                raise _RunOver

    Counting.__name__ = Counting.__qualname__ = machine.__name__
    return Counting


def _leaks(err: BaseException) -> list[LeakFound]:
    if isinstance(err, LeakFound):
        return [err]
    return [leak for sub in getattr(err, "exceptions", ()) for leak in _leaks(sub)]


def _program(failure: LeakFound, config: MachineConfig) -> str:
    """The shrunk program Hypothesis printed, made runnable."""
    notes: list[Any] = getattr(failure, "__notes__", [])
    # Hypothesis prints enum arguments as <TaskState.PENDING: 'pending'>: make them Python.
    body = [_ENUM_REPR.sub(r"\1.\2", str(n)) for n in notes if str(n).startswith("state")]
    name = body[0].split("=", 1)[1].strip().removesuffix("()") if body else "Machine"
    header = ["from harness.machine import MachineConfig, make_machine",
              *(["from model.states import TaskState"] if any("TaskState." in b for b in body)
                else []),
              *(["from dataclasses import replace", "from harness.machine import MACHINE_POLICY"]
                if config.policy != MACHINE_POLICY else []),
              f"{name} = make_machine({config_source(config)})"]
    return "\n".join(header + body)


_ENUM_REPR = re.compile(r"<(TaskState)\.(\w+): '[^']*'>")


def config_source(config: MachineConfig) -> str:
    """Python text that rebuilds ``config`` (its non-default fields; a broker factory cannot be
    written down and is left out).

    >>> config_source(MachineConfig(variant="reference+BZ-2", faults=True))
    "MachineConfig(variant='reference+BZ-2', faults=True)"
    >>> from dataclasses import replace
    >>> config_source(MachineConfig(policy=replace(MACHINE_POLICY, retention=5)))
    'MachineConfig(policy=replace(MACHINE_POLICY, retention=5))'
    """
    default = MachineConfig()
    parts = []
    for f in fields(MachineConfig):
        value = getattr(config, f.name)
        if f.name == "broker_factory" or value == getattr(default, f.name):
            continue
        if isinstance(value, Policy):
            changed = {p.name: getattr(value, p.name) for p in fields(Policy)
                       if getattr(value, p.name) != getattr(MACHINE_POLICY, p.name)}
            text = ", ".join(f"{k}={v!r}" for k, v in changed.items())
            parts.append(f"policy=replace(MACHINE_POLICY, {text})")
        elif isinstance(value, frozenset):  # sorted, so the text is stable across runs
            parts.append(f"{f.name}=frozenset({sorted(value)!r})")
        else:
            parts.append(f"{f.name}={value!r}")
    return f"MachineConfig({', '.join(parts)})"


def replay_program(program: str, **overrides: Any) -> LeakFound | None:
    """Run a printed program (see :attr:`CheckResult.program`); return the LeakFound it raises,
    None when it passes. ``overrides`` replace fields of the program's MachineConfig (e.g.
    ``backend="asynq"`` replays it on Asynq's own code).

    >>> lines = ["from harness.machine import MachineConfig, make_machine",
    ...          "M = make_machine(MachineConfig(variant='reference+BZ-18'))",
    ...          "state = M()", "state.write_result(queue='default', task_id='t0', data=b'x')",
    ...          "state.keyspace_is_sound()"]
    >>> replay_program("\\n".join(lines)).bug
    'BZ-18'
    """
    try:
        with overriding(**overrides):
            exec(compile(program, "<program>", "exec"), {})  # a program we printed
    except LeakFound as failure:
        return failure
    return None
