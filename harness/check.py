"""Running the stateful machine outside pytest: ``keysim check`` and ``keysim zoo`` use this.

>>> result = run_check(MachineConfig(variant="reference"), max_examples=3, steps=5, seed=1)
>>> result.passed, result.examples >= 1
(True, True)
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

import hypothesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import get_state_machine_test

from harness.config import MACHINE_POLICY, MachineConfig
from harness.leaks import LeakFound
from harness.machine import COVERAGE, KeyMachine, make_machine, overriding
from harness.profiles import PROFILES
from model.policy import Policy
from model.transitions import TRANSITIONS


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

    def summary(self) -> str:
        """One paragraph for the terminal."""
        head = (f"{self.config.variant} on {self.config.backend}: {self.examples} examples, "
                f"{self.steps} steps in {self.seconds:.1f} s")
        if self.passed:
            missing = missing_transitions(self.coverage)
            cov = "every transition exercised" if not missing else \
                f"never exercised: {', '.join(missing)}"
            return f"PASS  {head}; no leak, no disagreement; {cov}"
        assert self.failure is not None
        return (f"FAIL  {head}\n\nviolated: {self.failure.invariant} — {self.failure.message}\n"
                f"{self.failure.detail}\n\nminimal failing program ({self.shrunk_steps} steps):\n"
                f"{self.program}")


def missing_transitions(coverage: Counter[tuple[str, str]]) -> list[str]:
    """Transitions of the table never executed successfully (outcome ok) in ``coverage``."""
    done = {name for (name, outcome), n in coverage.items() if outcome == "ok" and n}
    return [name for name in TRANSITIONS if name not in done]


def coverage_table(coverage: Counter[tuple[str, str]]) -> str:
    """Every transition with each outcome it can return and how often it was seen."""
    lines = [f"{'transition':34} outcomes (seen / expected)"]
    for name, row in TRANSITIONS.items():
        cells = []
        for outcome in row.outcomes:
            n = coverage.get((name, outcome.value), 0)
            cells.append(f"{outcome.value}={n}" if n else f"{outcome.value}=MISSING")
        lines.append(f"{name:34} " + "  ".join(cells))
    return "\n".join(lines)


def run_check(config: MachineConfig, *, max_examples: int | None = None,
              steps: int | None = None, seed: int | None = None, profile: str = "dev",
              database: bool = False, report_multiple: bool = False,
              min_steps: int = 0, targeting: bool = True, shrink: bool = True) -> CheckResult:
    """Run the machine of ``config`` under a Hypothesis profile; never raises for a leak.

    ``report_multiple`` lets Hypothesis shrink and report every distinct defect (one per
    invariant) instead of stopping at the first — slower, used to list a variant's defects.
    ``min_steps`` makes every example at least that long (deeper states, better coverage).
    ``targeting=False`` skips Hypothesis' target phase (hill-climbing on transitions reached):
    it helps coverage, not the hunt for a known defect, and costs examples.
    ``shrink=False`` reports the failing program as generated (for examples so costly that
    shrinking would take minutes; keep ``steps`` small then).
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
    machine = _counting(make_machine(config), counts)
    before = COVERAGE.copy()
    test = get_state_machine_test(machine, settings=chosen, _min_steps=min_steps)
    if seed is not None:
        test = hypothesis.seed(seed)(test)
    start = time.perf_counter()
    failures: list[LeakFound] = []
    try:
        test()
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
                       coverage=COVERAGE - before)


def program_length(program: str) -> int:
    """Rule calls in a printed program (invariant checks and teardown excluded)."""
    return sum(1 for line in program.splitlines()
               if line.startswith("state.") and not line.startswith(
                   ("state.keyspace_is_sound", "state.teardown")))


def _counting(machine: type[KeyMachine], counts: dict[str, int]) -> type[KeyMachine]:
    """A subclass that counts examples and steps, and the example of the first failure."""

    class Counting(machine):  # type: ignore[valid-type,misc]
        def __init__(self) -> None:
            super().__init__()
            counts["examples"] += 1

        def teardown(self) -> None:
            counts["steps"] += len(self.steps)
            failed = not self.step_ok
            try:
                super().teardown()
            except LeakFound:  # the drain's verdict
                failed = True
                raise
            finally:
                if failed and not counts["first_failure"]:
                    counts["first_failure"] = counts["examples"]

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
