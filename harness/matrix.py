"""The leak matrix: which Asynq release has which defect (``keysim matrix``).

For every release asked for, :func:`run_matrix` builds the conformance driver against that
release's own Go code (``conformance/build.sh``; a release it cannot drive keeps the build's
reason), then hunts defects on it with the stateful machine as ``keysim zoo --asynq`` does: no
oracle, only the invariants and the drain judge (strict about locks), one defect per round,
each found defect ignored in the next rounds, then once more with each zoo case's focus and
faults (and the BZ-15 flood). The machine runs with the nearest ``asynq-v*`` variant
(:meth:`broker.asynq_go.AsynqGoBroker.variant_for`) and never draws an operation the release
lacks (task groups before v0.23.0). Each failure is attributed to a defect
(:func:`harness.attribution.attribute`).

The results are data (:class:`ReleaseRun`, saved as JSON); :func:`render` writes the markdown
from them alone, so ``docs/asynq-versions.md`` is regenerated from ``docs/asynq-versions.json``
byte for byte (a test checks it). A cell is *found* (with its minimal program), *not present*
(nothing found within the release's stated search budget), *n/a* (the release lacks the
operations the defect lives in) or *not run* (the release could not be driven).

>>> expand_versions("v0.22.0..v0.24.0,master")
['v0.22.1', 'v0.23.0', 'v0.24.1', 'master']
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from broker.asynq_go import GROUP_OPERATIONS
from broker.variants import MUTANTS, Quirk
from harness.check import CheckResult, goal_for, run_check
from harness.config import MachineConfig
from harness.swarm import rule_names
from harness.zoo import CASES, ZooCase

#: Asynq's release tags from v0.20.0 on (the Go module proxy's version list is incomplete, so
#: a range is expanded from these: the latest patch of each minor release).
ASYNQ_TAGS = ("v0.20.0", "v0.21.0", "v0.22.0", "v0.22.1", "v0.23.0", "v0.24.0", "v0.24.1",
              "v0.25.0", "v0.25.1", "v0.26.0")
#: Asynq's default branch, asked of the module proxy as ``@master``.
DEFAULT_BRANCH = "master"
DEFAULT_VERSIONS = "v0.20.0..v0.26.0,master"
MODULE = "github.com/hibiken/asynq"

#: The defects the matrix hunts: every bug-zoo defect with a mutant, plus the registry leak of
#: ``Pause`` on an unregistered queue.
DEFECTS: tuple[str, ...] = (*MUTANTS, Quirk.PAUSE_UNREGISTERED.value)
#: Defects that live in task groups and aggregation (Asynq v0.23.0 and later).
GROUP_DEFECTS = frozenset({"BZ-8", "BZ-9", "BZ-10", "BZ-11"})
#: The machine rules that only drive groups (not drawn on a release without them).
GROUP_RULES = frozenset({"add_to_group", "aggregation_check", "aggregate"})

@dataclass(frozen=True)
class SpecEntry:
    """What the spec (asynq-spec.md §4, §7) says of one defect: what it is, when it came and
    went (as it words it), and the first release that has it and the first that no longer
    does (None: none has it / still open at its baseline, v0.26.0 + 22 commits)."""

    what: str
    introduced: str
    fixed: str
    first: str | None
    gone: str | None

    def present_in(self, release: str) -> bool:
        """Whether the spec says ``release`` (or the default branch) has the defect."""
        if self.first is None:
            return False
        later = _minor_patch(release)
        return later >= _minor_patch(self.first) and (
            self.gone is None or later < _minor_patch(self.gone))


def _minor_patch(release: str) -> tuple[int, int, int]:
    """A release as numbers; the default branch after every release."""
    if release == DEFAULT_BRANCH:
        return (1 << 30, 0, 0)
    match = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+).*", release)
    if match is None:
        raise ValueError(f"not a release: {release!r}")
    return int(match[1]), int(match[2]), int(match[3])


SPEC: Mapping[str, SpecEntry] = {
    "BZ-1": SpecEntry("server archive trim keeps trimmed hashes", "v0.18.0 (7af3981)",
                      "v0.25.0 (0dc670d, PR #743)", "v0.18.0", "v0.25.0"),
    "BZ-2": SpecEntry("inspector archive ops keep trimmed hashes",
                      "v0.18.0 (7af3981); groups: v0.23.0", "open", "v0.18.0", None),
    "BZ-3": SpecEntry("inspector delete keeps the unique lock", "v0.7.0",
                      "v0.17.2 (ebe482a); hash model: 68dd6d9, v0.18.0", None, None),
    "BZ-4": SpecEntry("locks kept by DeleteAllPending, group-unique tasks",
                      "v0.18.0; groups: v0.23.0", "open", "v0.18.0", None),
    "BZ-5": SpecEntry("lock taken on a task id conflict", "v0.19.0",
                      "open (PR #1102 unmerged)", "v0.19.0", None),
    "BZ-7": SpecEntry("dangling lease entries never cleared", "v0.18.0; lease: v0.22.0",
                      "symptom only: v0.25.0 (1e0bf88, PR #709)", "v0.18.0", None),
    "BZ-8": SpecEntry("set deletion keeps its aggregation_sets entry", "7849b11 (unreleased)",
                      "e63f41f, before v0.23.0", None, None),
    "BZ-9": SpecEntry("emptied group stays in groups", "99c00bf (unreleased)",
                      "74d2eea, eb064c2, before v0.23.0", None, None),
    "BZ-10": SpecEntry("reclaim orphans groups", "v0.23.0 (1c388ba)", "open", "v0.23.0", None),
    "BZ-11": SpecEntry("forward to a group orphans it", "v0.23.0 (61854ea)", "open",
                       "v0.23.0", None),
    "BZ-12": SpecEntry("RemoveQueue leaves keys", "v0.19.0 (completed); v0.23.0 (groups)",
                       "open (PRs #514, #1088 unmerged)", "v0.19.0", None),
    "BZ-15": SpecEntry("archive unpack overflow at >= 8000 expired ids", "v0.25.0 (0dc670d)",
                       "open", "v0.25.0", None),
    "BZ-16": SpecEntry("archive cap trims the id just archived",
                       "v0.18.0; server form: v0.25.0", "open", "v0.18.0", None),
    "BZ-17": SpecEntry("stub hashes from dangling ids", "v0.18.0; lease: v0.22.0", "open",
                       "v0.18.0", None),
    "BZ-18": SpecEntry("WriteResult re-creates a deleted task", "v0.19.0", "open", "v0.19.0",
                       None),
    "BZ-20": SpecEntry("MarkAsComplete fails after its writes", "v0.19.0 (f4ddac4)",
                       "v0.24.0 (bafed90)", "v0.19.0", "v0.24.0"),
}

#: Why a cell disagrees with the spec, where the reason is known (printed under the matrix).
NOTES: Mapping[str, str] = {
    "BZ-11": "on Asynq only a grouped task the inspector runs, then retried and forwarded, "
             "reaches it (at least six particular steps); the zoo's focus schedules a task "
             "with a group, which Asynq's scheduleCmd never stores, so forward takes it to "
             "pending",
    "BZ-15": "needs >= 8000 archived ids past the cutoff: only the flood plan meets it, a "
             "few examples of seconds each",
    "BZ-16": "needs 9,999 archived entries scored at or after now: Asynq hard-codes its "
             "archive cap to 10,000, so the machine's small caps never trim on Asynq's code",
    "BZ-20": "the v0.24.0 fix turned the Lua runtime error into an error reply; the writes "
             "before it stay, and that is what the machine finds (harness.zoo.asynq_expected)",
}

# --- which releases ------------------------------------------------------------------------
def expand_versions(text: str) -> list[str]:
    """The releases ``text`` names, in order: ``vA..vB`` is the latest patch (of
    :data:`ASYNQ_TAGS`) of every minor release from A's to B's; ``vX.Y.Z`` itself;
    ``master`` the default branch.

    >>> expand_versions("v0.26.0,v0.24.0")
    ['v0.26.0', 'v0.24.0']
    >>> expand_versions("v9.9.9")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: v9.9.9 is not an Asynq release (known: v0.20.0, ..., v0.26.0, or master)
    >>> expand_versions("v0.30.0..v0.31.0")
    Traceback (most recent call last):
    ...
    ValueError: no Asynq release from v0.30.0 to v0.31.0 (known: v0.20.0 ... v0.26.0)
    """
    chosen: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if item == DEFAULT_BRANCH:
            found = [item]
        elif ".." in item:
            low, _, high = item.partition("..")
            found = _latest_patches(_minor(low), _minor(high))
            if not found:
                raise ValueError(f"no Asynq release from {low} to {high} "
                                 f"(known: {ASYNQ_TAGS[0]} ... {ASYNQ_TAGS[-1]})")
        else:
            _minor(item)
            if item not in ASYNQ_TAGS:
                raise ValueError(f"{item} is not an Asynq release (known: "
                                 f"{', '.join(ASYNQ_TAGS)}, or {DEFAULT_BRANCH})")
            found = [item]
        chosen += [v for v in found if v not in chosen]
    if not chosen:
        raise ValueError("no version given")
    return chosen


def _minor(version: str) -> tuple[int, int]:
    match = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"a version looks like v0.26.0 (or a range v0.20.0..v0.26.0, or "
                         f"{DEFAULT_BRANCH}), got {version!r}")
    return int(match[1]), int(match[2])


def _latest_patches(low: tuple[int, int], high: tuple[int, int]) -> list[str]:
    latest: dict[tuple[int, int], str] = {}
    for tag in ASYNQ_TAGS:  # ascending: the last of a minor wins
        if low <= _minor(tag) <= high:
            latest[_minor(tag)] = tag
    return list(latest.values())


def resolve(name: str) -> tuple[str | None, str]:
    """The module version to build for ``name`` and "" — or None and why it cannot be had.
    A release names itself; the default branch is asked of the Go module proxy (a
    pseudo-version when the proxy serves it)."""
    if name != DEFAULT_BRANCH:
        return name, ""
    try:
        done = subprocess.run(["go", "list", "-m", "-json", f"{MODULE}@{name}"],
                              capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, f"`go list -m {MODULE}@{name}` failed: {err}"
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        return None, (f"the Go module proxy does not serve Asynq's default branch "
                      f"(`go list -m {MODULE}@{name}`: {' '.join(lines)[-300:]})")
    return str(json.loads(done.stdout)["Version"]), ""


# --- the search --------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """How hard each release is searched: per seed, up to ``rounds`` rounds with every rule
    (``max_examples`` examples of up to ``steps`` steps each) until one finds nothing new,
    then (``focused``) the rounds of each zoo case with a focus or faults (its own size; up
    to ``focus_rounds`` while it finds other defects than its own), and (``flood``)
    BZ-15's 8000-task flood."""

    seeds: int = 2
    rounds: int = 12
    max_examples: int = 200
    steps: int = 15
    focused: bool = True
    flood: bool = True
    #: Rounds a focus plan may run while it finds other defects than its own (each then
    #: ignored): BZ-15's flood, for one, first meets BZ-2's zombies.
    focus_rounds: int = 3

    def __post_init__(self) -> None:
        if min(self.seeds, self.rounds, self.max_examples, self.steps) < 1:
            raise ValueError(f"every budget figure must be >= 1, got {self}")


@dataclass
class Hit:
    """One defect found on one release: its shortest program over the seeds."""

    bug: str
    invariant: str
    shrunk_steps: int
    program: list[str]
    seeds: list[int] = field(default_factory=list)
    #: The attribution named more than one defect (``BZ-3/BZ-4``): the program fits each.
    attributed_as: str = ""


@dataclass
class ReleaseRun:
    """One release's row of results (JSON-ready)."""

    name: str
    module_version: str | None = None
    driven: bool = False
    reason: str = ""
    variant: str = ""
    features: dict[str, bool] = field(default_factory=dict)
    build_seconds: float = 0.0
    hunt_seconds: float = 0.0
    budget: dict[str, Any] = field(default_factory=dict)
    #: Examples and steps run over every round and seed; the focus plans' examples by defect.
    examples: int = 0
    steps: int = 0
    focus_examples: dict[str, int] = field(default_factory=dict)
    #: (transition, outcome) pairs run at least once, of those the variant's goal requires
    #: (less the group transitions, on a release without groups).
    pairs_reached: int = 0
    pairs_required: int = 0
    hits: dict[str, Hit] = field(default_factory=dict)
    #: Failures no defect was recognised in (their programs).
    unattributed: list[list[str]] = field(default_factory=list)

    def applicable(self, bug: str) -> bool:
        """Whether the release has the operations ``bug`` lives in."""
        return self.features.get("groups", True) or bug not in GROUP_DEFECTS

    def cell(self, bug: str) -> str:
        """``found``, ``found?`` (only as one of several defects the program fits),
        ``not present``, ``n/a`` or ``not run``."""
        if not self.driven:
            return "not run"
        if not self.applicable(bug):
            return "n/a"
        hit = self.hits.get(bug)
        if hit is None:
            return "not present"
        return "found?" if hit.attributed_as else "found"


#: Called after each round: (release, seed, plan name, the round's result or None if skipped).
Progress = Callable[[str, int, str, CheckResult | None], None]


def plans_for(budget: Budget, groups: bool) -> list[ZooCase | None]:
    """The rounds' plans: None (every rule), then each zoo case with a focus or faults the
    release can run (a group defect's not, without groups; BZ-15's only with ``flood``)."""
    plans: list[ZooCase | None] = [None]
    if budget.focused:
        plans += [c for c in CASES.values() if (c.rules or c.faults)
                  and (budget.flood or not c.flood) and (groups or c.bug not in GROUP_DEFECTS)]
    return plans


def hunt_release(run: ReleaseRun, budget: Budget, progress: Progress | None = None) -> None:
    """Hunt defects on the built release ``run`` names, filling in its results."""
    assert run.module_version is not None
    groups = run.features.get("groups", True)
    base = MachineConfig(variant=run.variant, backend="asynq", oracle=False,
                         strict_locks=True, asynq_version=run.module_version)
    if not groups:  # the rules that drive groups only are never drawn
        every = set(rule_names(_machine_class(base)))
        base = replace(base, rules=frozenset(every - GROUP_RULES))
    coverage: Counter[tuple[str, str]] = Counter()
    start = time.perf_counter()
    plans = plans_for(budget, groups)
    for seed in range(budget.seeds):
        for plan, result in _hunt_seed(base, plans, seed, budget, run, progress):
            coverage.update(result.coverage)
            run.examples += result.examples
            run.steps += result.steps
            if plan is not None:
                run.focus_examples[plan.bug] = run.focus_examples.get(plan.bug, 0) \
                    + result.examples
            _record(run, result, seed)
    run.hunt_seconds = round(time.perf_counter() - start, 1)
    required = [pair for pair in goal_for(base).required
                if groups or not is_group_transition(pair[0])]
    run.pairs_required = len(required)
    run.pairs_reached = sum(1 for pair in required if coverage[pair] > 0)
    run.budget = asdict(budget)


def is_group_transition(name: str) -> bool:
    """Whether the transition ``name`` (model/transitions.py) needs task groups.

    >>> is_group_transition("delete_all_aggregating"), is_group_transition("delete_all_pending")
    (True, False)
    """
    return name in GROUP_OPERATIONS or name.endswith("_aggregating")


def _machine_class(config: MachineConfig) -> type:
    from harness.machine import make_machine

    return make_machine(config)


def _hunt_seed(base: MachineConfig, plans: Sequence[ZooCase | None], seed: int,
               budget: Budget, run: ReleaseRun, progress: Progress | None
               ) -> Iterable[tuple[ZooCase | None, CheckResult]]:
    """One seed's rounds (see :class:`Budget`), each ignoring the defects found before."""
    known: set[str] = set()
    for plan in plans:
        for _ in range(budget.rounds if plan is None else budget.focus_rounds):
            result = _round(base, plan, known, seed, budget)
            if progress is not None:
                progress(run.name, seed, plan.bug if plan else "all rules", result)
            yield plan, result
            failure = result.failure
            if failure is None:
                break
            bugs = set((failure.bug or "?").split("/"))
            if "?" in bugs or bugs <= known:
                break  # nothing nameable, or a known defect in a form the ignore list misses
            known |= bugs
            if plan is not None and plan.bug in bugs:
                break  # the focus found its own defect


def _round(base: MachineConfig, plan: ZooCase | None, known: set[str], seed: int,
           budget: Budget) -> CheckResult:
    config = replace(base, ignore=frozenset(known))
    max_examples, steps, shrink = budget.max_examples, budget.steps, True
    if plan is not None:
        # A focus keeps its rules (the fault rules included), less any group rule the
        # release lacks (base.rules then names the rest).
        rules = base.rules if plan.rules is None else \
            plan.rules - (GROUP_RULES if base.rules is not None else frozenset())
        config = replace(config, faults=plan.faults, flood=plan.flood, policy=plan.policy,
                         rules=rules)
        max_examples, steps, shrink = plan.max_examples, plan.steps, plan.shrink
    return run_check(config, max_examples=max_examples, steps=steps, seed=seed,
                     targeting=False, shrink=shrink)


def _record(run: ReleaseRun, result: CheckResult, seed: int) -> None:
    failure = result.failure
    if failure is None:
        return
    program = result.program.splitlines()
    if not failure.bug:
        run.unattributed.append(program)
        return
    named = failure.bug.split("/")
    for bug in named:
        hit = run.hits.get(bug)
        if hit is None or result.shrunk_steps < hit.shrunk_steps:
            seeds = hit.seeds if hit is not None else []
            hit = run.hits[bug] = Hit(bug, failure.invariant, result.shrunk_steps, program,
                                      seeds, failure.bug if len(named) > 1 else "")
        elif len(named) == 1 and hit.attributed_as:  # a program of this defect alone
            hit.attributed_as = ""
        if seed not in hit.seeds:
            hit.seeds.append(seed)


def drive_release(name: str, budget: Budget, progress: Progress | None = None) -> ReleaseRun:
    """Resolve, build and hunt one release (a release that cannot be driven keeps why)."""
    from broker.asynq_go import AsynqGoBroker, DriverUnavailable, build_driver

    run = ReleaseRun(name)
    run.module_version, run.reason = resolve(name)
    if run.module_version is None:
        return run
    start = time.perf_counter()
    try:
        build_driver(run.module_version)
    except (DriverUnavailable, ValueError) as err:
        run.reason = _build_reason(str(err))
        return run
    run.build_seconds = round(time.perf_counter() - start, 1)
    run.variant = AsynqGoBroker.variant_for(run.module_version)
    run.features = _features(run.module_version)
    run.driven = True
    hunt_release(run, budget, progress)
    return run


def _build_reason(error: str) -> str:
    """The build's own words: its last ``build.sh:`` line, else the error's last line."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    said = [line for line in lines if line.startswith("build.sh:")]
    return (said or lines or ["the build failed"])[-1].removeprefix("build.sh: ")


def _features(version: str) -> dict[str, bool]:
    """What the driver built for ``version`` reports it has (one private server, once)."""
    from broker.asynq_go import asynq_fixed
    from harness.backends import _asynq_broker
    from model.clock import VirtualClock
    from model.policy import ASYNQ_POLICY

    broker = _asynq_broker(version, VirtualClock(), asynq_fixed(ASYNQ_POLICY, version))
    return dict(broker.features)


def run_matrix(names: Sequence[str], budget: Budget, progress: Progress | None = None,
               on_release: Callable[[ReleaseRun], None] | None = None) -> list[ReleaseRun]:
    """Every release of ``names``, one after the other (Go builds are heavy)."""
    runs = []
    for name in names:
        runs.append(drive_release(name, budget, progress))
        if on_release is not None:
            on_release(runs[-1])
    return runs


# --- results as data ---------------------------------------------------------------------
def to_data(runs: Sequence[ReleaseRun], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON document of a matrix run."""
    return {"meta": dict(meta), "releases": [asdict(r) for r in runs]}


def from_data(data: Mapping[str, Any]) -> tuple[list[ReleaseRun], dict[str, Any]]:
    """The inverse of :func:`to_data`."""
    runs = []
    for raw in data["releases"]:
        fields = dict(raw)
        fields["hits"] = {bug: Hit(**hit) for bug, hit in fields["hits"].items()}
        runs.append(ReleaseRun(**fields))
    return runs, dict(data["meta"])


def save(path: Path, runs: Sequence[ReleaseRun], meta: Mapping[str, Any]) -> None:
    """Write the results as JSON (sorted keys, one trailing newline)."""
    path.write_text(json.dumps(to_data(runs, meta), indent=1, sort_keys=True) + "\n")


def load(path: Path) -> tuple[list[ReleaseRun], dict[str, Any]]:
    """Read results :func:`save` wrote."""
    data: dict[str, Any] = json.loads(path.read_text())
    return from_data(data)


# --- the document ------------------------------------------------------------------------
_LEGEND = {
    "found": "the machine found it on this release's own code (program below)",
    "found?": "found only as one of two defects the program fits (see its program)",
    "not present": "not found within the release's search budget (below)",
    "n/a": "the release lacks the operations it lives in (task groups: v0.23.0)",
    "not run": "the release could not be driven (reason below)",
}


def render(runs: Sequence[ReleaseRun], meta: Mapping[str, Any]) -> str:
    """``docs/asynq-versions.md`` from the results alone."""
    out = ["# Which Asynq release leaks what", "",
           f"Generated by `{meta.get('command', 'keysim matrix')}` on {meta.get('date', '?')} "
           f"(Go {meta.get('go', '?')}, {meta.get('server', '?')}); do not edit: the data is "
           f"[asynq-versions.json](asynq-versions.json), `keysim matrix` rewrites both.", "",
           "Each release's own Go code (`internal/rdb`) runs under the stateful machine "
           "(`--backend asynq`), judged by the invariants and the drain alone, one defect per "
           "round; each failure is attributed to a bug-zoo defect (`harness/attribution.py`). "
           "*Introduced* and *fixed* are what the specification's bug zoo says.", ""]
    out += _matrix_table(runs)
    out += ["", *(f"- **{k}**: {v}" for k, v in _LEGEND.items()),
            "- **†**: the cell disagrees with the spec's history of the defect:", *_notes(runs),
            ""]
    out += _release_section(runs)
    out += _programs_section(runs)
    return "\n".join(out).rstrip("\n") + "\n"


_NO_SPEC = SpecEntry("Pause of an unregistered queue leaves `paused`", "", "", None, None)


def _matrix_table(runs: Sequence[ReleaseRun]) -> list[str]:
    head = ["defect", "what", *(r.name for r in runs), "introduced", "fixed"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for bug in DEFECTS:
        spec = SPEC.get(bug)
        shown = spec or _NO_SPEC
        cells = [_cell_text(r, bug, spec) for r in runs]
        rows.append("| " + " | ".join([bug, shown.what, *cells, shown.introduced or "—",
                                       shown.fixed or "—"]) + " |")
    return rows


def disagrees(run: ReleaseRun, bug: str, spec: SpecEntry | None) -> bool:
    """Whether ``run``'s cell for ``bug`` contradicts the spec: *found* where it says the
    release is free of it, *not present* where it says the release has it."""
    cell = run.cell(bug)
    if spec is None or cell not in ("found", "not present"):
        return False
    return (cell == "found") != spec.present_in(run.name)


def _cell_text(run: ReleaseRun, bug: str, spec: SpecEntry | None) -> str:
    cell = run.cell(bug)
    mark = " †" if disagrees(run, bug, spec) else ""
    if not cell.startswith("found"):
        return cell + mark
    hit = run.hits[bug]
    return (f"**{cell}**{mark} {len(hit.seeds)}/{run.budget.get('seeds', '?')} "
            f"({hit.invariant}, {hit.shrunk_steps} st.)")


def _notes(runs: Sequence[ReleaseRun]) -> list[str]:
    """One line per defect whose cells disagree with the spec: where, and why if known."""
    out = []
    for bug in DEFECTS:
        where = [r.name for r in runs if disagrees(r, bug, SPEC.get(bug))]
        if where:
            why = NOTES.get(bug, "not known")
            out.append(f"  - {bug} ({', '.join(where)}): {why}.")
    return out


def _release_section(runs: Sequence[ReleaseRun]) -> list[str]:
    out = ["## Releases and search budgets", "",
           "*not present* is claimed only within these budgets: per seed, rounds with every "
           "rule until one finds nothing new, then the rounds of each zoo case that needs a "
           "focus, a fault or BZ-15's flood (examples of each focus listed). *pairs "
           "reached*: (transition, outcome) pairs run at least once, of those the variant's "
           "coverage goal requires (less the group pairs, without groups). *build s* is the "
           "driver build as this run met it (cached or not; `python -m benchmarks.matrix` "
           "measures both).", "",
           "| release | module | variant | groups | build s | hunt s | seeds | examples "
           "| steps | pairs reached | budget |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        if not r.driven:
            out.append(f"| {r.name} | {r.module_version or '—'} | — | — | — | — | — | — | — "
                       f"| — | not driven: {r.reason} |")
            continue
        b = r.budget
        focus = ", ".join(f"{bug} {n}" for bug, n in sorted(r.focus_examples.items()))
        out.append(
            f"| {r.name} | {r.module_version} | {r.variant} | "
            f"{'yes' if r.features.get('groups', True) else 'no'} | {r.build_seconds:.1f} | "
            f"{r.hunt_seconds:.1f} | {b.get('seeds')} | {r.examples:,} | {r.steps:,} | "
            f"{r.pairs_reached}/{r.pairs_required} | ≤ {b.get('rounds')} rounds × "
            f"{b.get('max_examples')} examples × ≤ {b.get('steps')} steps; focus"
            f"{_focus_rounds(b)}: {focus or 'none'} |")
    unnamed = [(r.name, p) for r in runs for p in r.unattributed]
    if unnamed:
        out += ["", f"Failures no defect was recognised in: {len(unnamed)} "
                    f"({', '.join(sorted({name for name, _ in unnamed}))}); their programs "
                    f"are in the JSON."]
    return [*out, ""]


def _focus_rounds(budget: Mapping[str, Any]) -> str:
    """How many rounds a focus plan had, when the run recorded it."""
    rounds = budget.get("focus_rounds")
    return f" (≤ {rounds} rounds each while finding other defects)" if rounds else ""


def _programs_section(runs: Sequence[ReleaseRun]) -> list[str]:
    out = ["## Minimal programs", "",
           "Each replays with `harness.check.replay_program` (needs Go and Redis >= 7.0)."]
    for bug in DEFECTS:
        hits = [(r, r.hits[bug]) for r in runs if r.driven and bug in r.hits]
        if not hits:
            continue
        out += ["", f"### {bug}", ""]
        for run, hit in hits:
            also = f", attributed as {hit.attributed_as}" if hit.attributed_as else ""
            out += [f"<details><summary>{run.name}: {hit.invariant}, {hit.shrunk_steps} "
                    f"steps{also}</summary>", "", "```python", *hit.program, "```", "",
                    "</details>"]
    return out


def meta_now(command: str, seeds: int) -> dict[str, Any]:
    """The header facts of a run: command, date, Go version, the server the machine used."""
    go = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True,
                        check=False).stdout.strip()
    return {"command": command, "date": time.strftime("%Y-%m-%d"), "go": go,
            "server": _server_name(), "seeds": seeds}


def _server_name() -> str:
    import redis

    from harness.backends import _server_url

    info = redis.Redis.from_url(_server_url()).info("server")
    name = "Valkey" if "valkey_version" in info else "Redis"
    return f"{name} {info.get('valkey_version', info.get('redis_version', '?'))}"


def run_with_progress(names: Sequence[str], budget: Budget) -> list[ReleaseRun]:
    """:func:`run_matrix` with a progress bar on stderr (a release per step; the current
    release, seed and plan, and the defects found so far)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total} releases"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("matrix", total=len(names))
        found: dict[str, set[str]] = {}

        def show(release: str, seed: int, plan: str, result: CheckResult | None) -> None:
            if result is not None and result.failure is not None and result.failure.bug:
                found.setdefault(release, set()).update(result.failure.bug.split("/"))
            bar.update(task, description=f"{release} seed {seed} {plan:>10}: "
                                         f"{len(found.get(release, ()))} defects")

        def done(run: ReleaseRun) -> None:
            state = f"{len(run.hits)} defects" if run.driven else "not driven"
            bar.console.print(f"{run.name}: {state} (build {run.build_seconds:.1f} s, "
                              f"hunt {run.hunt_seconds:.1f} s){'' if run.driven else ': '}"
                              f"{run.reason}")
            bar.advance(task)

        return run_matrix(names, budget, show, done)
