"""The bug zoo: does the stateful machine find every known defect, quickly and minimally?

Every mutant ``reference+BZ-n`` (the reference with one Asynq defect switched on, see
:mod:`broker.variants`) has a :class:`ZooCase`: the machine configuration that hunts it, the
search budget, and the check expected to catch it (an invariant ``I1``…``I14``, ``agreement``
with the model, or the ``drain``). :func:`hunt` runs one case for one seed; :func:`run_zoo`
runs cases over several seeds and :func:`format_table` prints what ``keysim zoo`` shows: the
check that caught the mutant, the defect recognised in the failure, the examples Hypothesis
generated before the first failure, the length of the shrunk program and the wall time
(medians over the seeds).

Some defects need an environment fault to be reachable at all, and the case says so:
``faults`` adds an ``evict`` rule (Redis eviction or a manual DEL of a task hash: BZ-7, BZ-17,
BZ-20), ``flood`` a burst of 8000 archived tasks (BZ-15: Asynq's unpack limit). None is
reachable through the public API alone.

>>> print(CASES["BZ-2"].invariant)
I1
>>> missing_cases()
[]
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from broker.variants import MUTANTS, Quirk, variant
from harness.check import CheckResult, run_check
from harness.config import MACHINE_POLICY, MachineConfig
from model.invariants import Invariant
from model.policy import Policy

#: The machine's policy with an archive cap large enough to hold a BZ-15 flood.
FLOOD_POLICY = replace(MACHINE_POLICY, max_archive_size=10_000)


@dataclass(frozen=True)
class ZooCase:
    """How to hunt one defect and what must catch it."""

    bug: str
    #: The check expected to catch it: ``I1``…``I14``, ``agreement`` or ``drain``.
    invariant: str
    max_examples: int = 300
    steps: int = 15
    #: Add the ``evict`` fault rule (see :class:`harness.config.MachineConfig`).
    faults: bool = False
    #: Archive-flood size (0: none).
    flood: int = 0
    policy: Policy = MACHINE_POLICY
    #: Focus: only these machine rules — for defects whose path needs several specific steps,
    #: too unlikely among all rules. None: every rule.
    rules: frozenset[str] | None = None
    #: Shrink the failure (off only where every example is too costly to shrink).
    shrink: bool = True
    #: Why the defect needs what it needs (printed by ``keysim zoo``).
    note: str = ""
    #: Checks besides ``invariant`` that may legitimately catch it first on some seeds.
    also: frozenset[str] = field(default_factory=frozenset)

    @property
    def variant(self) -> str:
        """The mutant's variant name."""
        return f"reference+{self.bug}"

    def config(self, backend: str = "fakeredis") -> MachineConfig:
        """The machine configuration that hunts this mutant."""
        return MachineConfig(variant=self.variant, backend=backend, policy=self.policy,
                             faults=self.faults, flood=self.flood, rules=self.rules)


_EVICT = "needs a fault: a task hash evicted (allkeys-* policy) or DEL'd by hand"
#: One case per mutant of broker.variants.MUTANTS.
CASES: dict[str, ZooCase] = {c.bug: c for c in (
    ZooCase("BZ-1", Invariant.NO_ORPHAN_HASH),
    ZooCase("BZ-2", Invariant.NO_ORPHAN_HASH),
    ZooCase("BZ-3", Invariant.LOCK_OWNER_ALIVE),
    ZooCase("BZ-4", Invariant.LOCK_OWNER_ALIVE),
    ZooCase("BZ-5", Invariant.LOCK_OWNER_ALIVE),
    ZooCase("BZ-7", "agreement", faults=True,
            rules=frozenset({"enqueue", "dequeue", "evict_rule", "jump"}),
            note=_EVICT + " while active; focus: enqueue, dequeue, evict, jump"),
    ZooCase("BZ-8", Invariant.AGGREGATION_SETS_INDEXED),
    ZooCase("BZ-9", Invariant.GROUPS_REGISTERED),
    ZooCase("BZ-10", Invariant.GROUPS_REGISTERED, rules=frozenset({"add_to_group", "aggregation_check"}),
            note="focus: group rules (a crashed aggregation reclaimed later)"),
    ZooCase("BZ-11", Invariant.GROUPS_REGISTERED, rules=frozenset({"schedule", "jump"}),
            note="focus: schedule + jump (a task scheduled with a group, then forwarded)"),
    ZooCase("BZ-12", Invariant.QUEUE_REGISTERED, also=frozenset({"drain"})),
    ZooCase("BZ-15", Invariant.NO_ORPHAN_HASH, flood=8000, policy=FLOOD_POLICY, max_examples=10, steps=6,
            rules=frozenset({"archive_pressure"}), shrink=False,
            note="needs 8000 archived tasks older than the cutoff (a flood); not shrunk: "
                 "each example costs seconds, and has at most 6 steps",
            also=frozenset({Invariant.NO_DANGLING_ENTRY, Invariant.ACTIVE_MATCHES_LEASE, "agreement"})),
    ZooCase("BZ-16", Invariant.NO_ORPHAN_HASH, rules=frozenset({"archive_pressure"}),
            note="focus: archive pressure (a burst archived while the archive is at its cap)"),
    ZooCase("BZ-17", Invariant.NO_ORPHAN_HASH, faults=True,
            rules=frozenset({"enqueue", "evict_rule", "dequeue"}),
            note=_EVICT + "; focus: enqueue, evict, dequeue"),
    ZooCase("BZ-18", Invariant.NO_ORPHAN_HASH),
    ZooCase("BZ-20", Invariant.NO_ORPHAN_HASH, faults=True, rules=frozenset({"work", "evict_rule"}),
            note=_EVICT + ", then the id resubmitted while its completed entry remains; "
                 "focus: work + evict",
            also=frozenset({"agreement", Invariant.ACTIVE_MATCHES_LEASE, Invariant.SINGLE_MEMBERSHIP})),
)}


def missing_cases() -> list[str]:
    """Mutants of :data:`broker.variants.MUTANTS` without a case (must stay empty)."""
    return sorted(set(MUTANTS) - set(CASES))


@dataclass(frozen=True)
class Hunt:
    """One case, one seed: what the machine found."""

    case: ZooCase
    seed: int
    result: CheckResult

    @property
    def found(self) -> bool:
        """True when the machine failed (it found something)."""
        return not self.result.passed

    @property
    def caught_by(self) -> str:
        """The check that caught it ("" when nothing was found)."""
        return self.result.failure.invariant if self.result.failure else ""

    @property
    def bug(self) -> str:
        """The defect :func:`harness.attribution.attribute` recognised ("?" when none)."""
        failure = self.result.failure
        return (failure.bug or "?") if failure else ""

    @property
    def as_expected(self) -> bool:
        """Found, by an expected check, recognised as this very defect, shrunk to <= 10."""
        return (self.found and self.caught_by in self.case.also | {self.case.invariant}
                and self.case.bug in self.bug.split("/")
                and 1 <= self.result.shrunk_steps <= 10)


def hunt(case: ZooCase, seed: int = 0, backend: str = "fakeredis") -> Hunt:
    """Run the machine on ``case``'s mutant with a fixed seed."""
    result = run_check(case.config(backend), max_examples=case.max_examples, steps=case.steps,
                       seed=seed, targeting=False, shrink=case.shrink)
    return Hunt(case, seed, result)


@dataclass(frozen=True)
class ZooRow:
    """One mutant over several seeds (medians)."""

    case: ZooCase
    hunts: tuple[Hunt, ...]

    @property
    def found(self) -> int:
        """Seeds on which the mutant was found."""
        return sum(h.found for h in self.hunts)

    def median(self, values: Iterable[float]) -> float:
        """The median, 0 for no values."""
        got = list(values)
        return statistics.median(got) if got else 0.0

    def line(self) -> str:
        """The row of the table."""
        hits = [h for h in self.hunts if h.found]
        caught = "/".join(sorted({h.caught_by for h in hits})) or "NOT FOUND"
        bugs = "/".join(sorted({h.bug for h in hits})) or "-"
        ex = self.median(h.result.examples_to_failure for h in hits)
        length = self.median(h.result.shrunk_steps for h in hits)
        secs = self.median(h.result.seconds for h in self.hunts)
        ok = "ok" if all(h.as_expected for h in self.hunts) else "UNEXPECTED"
        return (f"{self.case.variant:18} {caught:14} {bugs:7} {self.found}/{len(self.hunts):<4} "
                f"{ex:8.0f} {length:6.0f} {secs:8.1f}  {ok}  {self.case.note}")


def run_zoo(bugs: Sequence[str] | None = None, seeds: int = 3,
            backend: str = "fakeredis") -> list[ZooRow]:
    """Hunt every case of ``bugs`` (default: all) with seeds ``0 .. seeds-1``."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    chosen = list(CASES) if bugs is None else list(bugs)
    unknown = [b for b in chosen if b not in CASES]
    if unknown:
        raise ValueError(f"unknown bug ids {unknown}; expected some of {', '.join(CASES)}")
    return [ZooRow(CASES[b], tuple(hunt(CASES[b], s, backend) for s in range(seeds)))
            for b in chosen]


def format_table(rows: Sequence[ZooRow]) -> str:
    """The ``keysim zoo`` table (times and counts are medians over the seeds)."""
    head = (f"{'mutant':18} {'caught by':14} {'defect':7} {'found':6} {'examples':>8} "
            f"{'shrunk':>6} {'time s':>8}  verdict  needs")
    return "\n".join([head, *(r.line() for r in rows)])


def asynq_expected(name: str) -> frozenset[str]:
    """What the machine must find in an Asynq variant: its bug-zoo quirks, plus BZ-20 where
    ``late_guards`` keeps its partial writes (the v0.24.0 fix changed only the error) and
    ``pause_unregistered``. Lock defects (BZ-4, BZ-5) show under the strict lock check, BZ-7,
    BZ-17 and BZ-20 with the eviction fault, BZ-15 with the flood.

    >>> sorted(asynq_expected("asynq-v0.24.0") - asynq_expected("asynq-v0.26.0"))
    ['BZ-1']
    """
    chosen = variant(name)
    found = {bug for bug, quirk in MUTANTS.items() if chosen.has(quirk)}
    if chosen.has(Quirk.LATE_GUARDS):
        found.add("BZ-20")
    if chosen.has(Quirk.PAUSE_UNREGISTERED):
        found.add(Quirk.PAUSE_UNREGISTERED.value)
    return frozenset(found)


#: The Asynq variants the zoo hunts.
ASYNQ_VARIANTS = ("asynq-v0.24.0", "asynq-v0.26.0")


@dataclass(frozen=True)
class Defect:
    """One defect found in an Asynq variant: the run that found it (shrunk)."""

    bug: str
    result: CheckResult

    @property
    def invariant(self) -> str:
        """The check that caught it."""
        assert self.result.failure is not None
        return self.result.failure.invariant


def asynq_defects(variant: str, *, seed: int = 0, rounds: int = 12, max_examples: int = 200,
                  steps: int = 15, focused: bool = True, flood: bool = False,
                  backend: str = "fakeredis", ignore: Iterable[str] = ()) -> list[Defect]:
    """The defects the machine finds in an Asynq variant, one per round. Each round runs the
    machine without the oracle (only invariants and the drain judge, strict about locks),
    ignoring the defects already found — cheaper than Hypothesis' ``report_multiple_bugs``:
    one shrink each. Rounds run with every rule until one passes, finds nothing it can name,
    or ``rounds`` are spent; then (``focused``) once more with each zoo case's focus and
    faults (and, with ``flood``, BZ-15's burst), to reach the defects that need them.
    """
    known = set(ignore)
    found: list[Defect] = []
    plans: list[ZooCase | None] = [None]
    if focused:
        plans += [c for c in CASES.values() if (c.rules or c.faults) and (flood or not c.flood)]
    for plan in plans:
        for _ in range(rounds if plan is None else 1):
            defect = _asynq_round(variant, plan, known, seed, max_examples, steps, backend)
            if defect is None:
                break
            found.append(defect)
            bugs = set(defect.bug.split("/"))
            if defect.bug == "?" or bugs <= known:
                break  # nothing nameable, or a form of a known defect the ignore list misses
            known |= bugs
    return found


def _asynq_round(variant: str, plan: ZooCase | None, known: set[str], seed: int,
                 max_examples: int, steps: int, backend: str) -> Defect | None:
    config = MachineConfig(variant=variant, backend=backend, oracle=False, strict_locks=True,
                           ignore=frozenset(known))
    if plan is not None:
        config = replace(config, faults=plan.faults, rules=plan.rules, flood=plan.flood,
                         policy=plan.policy)
        max_examples, steps = plan.max_examples, plan.steps
    result = run_check(config, max_examples=max_examples, steps=steps, seed=seed,
                       targeting=False, shrink=plan is None or plan.shrink)
    if result.failure is None:
        return None
    return Defect(result.failure.bug or "?", result)


def asynq_report(name: str, found: Sequence[Defect], seed: int = 0) -> str:
    """What ``keysim zoo --asynq`` prints for one variant: each defect ``found`` (by
    ``asynq_defects(name, seed=seed, flood=True)``: check, shrunk length, time) and the expected
    ones not found."""
    lines = [f"{name}: {len(found)} defects found (seed {seed})"]
    for d in found:
        lines.append(f"  {d.bug:20} {d.invariant:10} {d.result.shrunk_steps:3d} steps "
                     f"{d.result.seconds:6.1f} s  {d.result.failure.message if d.result.failure else ''}")
    missing = sorted(asynq_expected(name) - {b for d in found for b in d.bug.split("/")})
    lines.append(f"  not found: {', '.join(missing) or 'none'}")
    return "\n".join(lines)


def regression_entry(defect: Defect) -> dict[str, object]:
    """``defect``'s minimal program as a saved counterexample: the record
    tests/regressions/asynq_counterexamples.json holds, replayed there by one test each."""
    failure = defect.result.failure
    assert failure is not None
    return {"variant": defect.result.config.variant, "bug": defect.bug,
            "invariant": failure.invariant, "message": failure.message,
            "program": defect.result.program.splitlines()}


def load_counterexamples(path: Path) -> list[dict[str, Any]]:
    """The records a ``keysim zoo --asynq --save`` file holds (see :func:`regression_entry`)."""
    records: list[dict[str, Any]] = json.loads(path.read_text())
    return records
