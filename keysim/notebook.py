"""Helpers for the notebooks in ``notebooks/``: tables that render as HTML in Jupyter (and as
aligned text anywhere else), keyspace tables and diffs, and re-running a shrunk program of the
stateful machine on another variant to compare the keyspaces it leaves.

Nothing here needs pandas or Jupyter: a :class:`Table` is plain data with ``_repr_html_``.

>>> t = Table(("state", "tasks"), [("pending", 1), ("archived", 12)])
>>> print(t)
state    | tasks
---------+------
pending  | 1
archived | 12
"""

from __future__ import annotations

import ast
import html
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from harness.machine import QUEUES, LeakFound, MachineConfig, make_machine
from model.invariants import INVARIANTS, Violation, check_all
from model.snapshot import KeyspaceSnapshot
from model.states import TaskState
from model.transitions import TRANSITIONS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from harness.zoo import Hunt

#: Calls of a printed program that are checks, not rules: a replay skips them.
_CHECKS = frozenset({"keyspace_is_sound", "teardown"})


@dataclass(frozen=True)
class Table:
    """Rows of cells under named columns, with an optional caption.

    Jupyter shows it as an HTML table (:meth:`_repr_html_`); ``str()`` gives aligned text.
    """

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    caption: str = ""

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(f"rows[{i}] has {len(row)} cells, expected {len(self.columns)} "
                                 f"(columns: {', '.join(self.columns)})")

    def __len__(self) -> int:
        return len(self.rows)

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td style='text-align:left'><code>{html.escape(_cell(v))}</code></td>"
                             for v in row) + "</tr>" for row in self.rows)
        caption = f"<caption style='text-align:left'>{html.escape(self.caption)}</caption>" \
            if self.caption else ""
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __str__(self) -> str:
        cells = [list(self.columns), *([_cell(v) for v in row] for row in self.rows)]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.columns))]
        lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                 for r in cells]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        return "\n".join(([self.caption] if self.caption else []) + lines)

    def __repr__(self) -> str:  # the text form is what a terminal (or a text/plain output) shows
        return str(self)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value)


def keyspace_table(snapshot: KeyspaceSnapshot, caption: str | None = None) -> Table:
    """Every key of a snapshot as a table (key, type, value, ttl).

    The default caption names the queue, the key count and whether ``asynq:queues`` holds it.
    """
    if caption is None:
        registered = "registered in" if snapshot.registered else "not in"
        caption = f"queue {snapshot.queue!r}: {len(snapshot.entries)} keys, {registered} asynq:queues"
    return Table(("key", "type", "value", "ttl"), snapshot.to_rows(), caption)


def diff_table(left: KeyspaceSnapshot, right: KeyspaceSnapshot, left_name: str = "left",
               right_name: str = "right") -> Table:
    """The keys whose type, value or TTL differ between two snapshots, side by side
    (``(absent)`` where a side has no such key); ``asynq:queues`` membership as a first row
    when it differs."""
    lrows = {r[0]: r for r in left.to_rows()}
    rrows = {r[0]: r for r in right.to_rows()}
    rows: list[tuple[Any, ...]] = []
    if left.registered != right.registered:
        rows.append(("asynq:queues", f"holds {left.queue!r}: {left.registered}",
                     f"holds {right.queue!r}: {right.registered}"))
    for key in sorted(set(lrows) | set(rrows)):
        a, b = lrows.get(key), rrows.get(key)
        if a != b:
            rows.append((key, _describe(a), _describe(b)))
    return Table(("key", left_name, right_name), rows,
                 f"{len(rows)} difference(s) between {left_name} and {right_name}")


def _describe(row: tuple[str, str, str, str] | None) -> str:
    if row is None:
        return "(absent)"
    _, kind, value, ttl = row
    return f"{kind} {value}" + ("" if ttl == "none" else f" ttl={ttl}")


def violations_table(violations: Iterable[Violation]) -> Table:
    """Invariant violations as a table (invariant, key, task, message)."""
    return Table(("invariant", "key", "task", "message"),
                 [(v.invariant, v.key, v.task_id or "", v.message) for v in violations])


# --- re-running a shrunk program -------------------------------------------------------------


def parse_program(program: str) -> list[tuple[str, dict[str, Any]]]:
    """The rule calls of a program printed by :func:`harness.check.run_check`, as
    ``(rule, kwargs)``; invariant checks and teardown are left out.

    >>> parse_program("state = M()\\nstate.keyspace_is_sound()\\n"
    ...               "state.delete_all(group='g0', queue='default', state=TaskState.PENDING)")
    [('delete_all', {'group': 'g0', 'queue': 'default', 'state': <TaskState.PENDING: 'pending'>})]
    """
    calls = []
    for node in ast.parse(program).body:
        call = node.value if isinstance(node, ast.Expr) else None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                and isinstance(call.func.value, ast.Name) and call.func.value.id == "state"):
            continue
        if call.func.attr in _CHECKS:
            continue
        if call.args or any(k.arg is None for k in call.keywords):
            raise ValueError(f"program line {node.lineno}: expected keyword arguments only")
        calls.append((call.func.attr, {k.arg: _literal(k.value, node.lineno)
                                       for k in call.keywords if k.arg is not None}))
    return calls


def _literal(node: ast.expr, line: int) -> Any:
    """A literal, or ``TaskState.X`` / ``<TaskState.X: 'x'>``-style enum member."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
            and node.value.id == "TaskState":
        return TaskState[node.attr]
    try:
        return ast.literal_eval(node)
    except ValueError as err:
        raise ValueError(f"program line {line}: unsupported argument {ast.unparse(node)}") from err


@dataclass
class Replayed:
    """What a program left: the broker's keyspace, the invariants it breaks, and the
    disagreement with the model (oracle runs) that stopped the replay early, if any."""

    config: MachineConfig
    steps: list[str]
    snapshot: KeyspaceSnapshot
    violations: list[Violation]
    stopped: LeakFound | None = None


def replay_program(program: str, config: MachineConfig, *, drain: bool = False) -> Replayed:
    """Run the rule calls of ``program`` on a fresh machine of ``config`` (invariant checks
    skipped) and return the keyspace of the machine's queue afterwards.

    ``drain=True`` then runs the machine's drain (use it for a failure found by the drain).
    Give the same program two configs (e.g. ``asynq-v0.26.0`` and ``reference``) to see what
    the defect changes in Redis (:func:`diff_table`).
    """
    calls = parse_program(program)
    machine = make_machine(replace(config, drain=False))()
    stopped: LeakFound | None = None
    try:
        for rule, kwargs in calls:
            getattr(machine, rule)(**kwargs)
        if drain:
            machine.drain()
    except LeakFound as err:  # the model and the broker disagreed: the keyspace is as it was then
        stopped = err
    snapshot = machine.read(QUEUES[0])
    violations = check_all(snapshot, config.policy, strict_locks=config.strict)
    return Replayed(config, list(machine.steps), snapshot, violations, stopped)


def bytes_label(n: float) -> str:
    """A byte count with a binary unit.

    >>> bytes_label(1536), bytes_label(3 * 2**30)
    ('1.50 KiB', '3.00 GiB')
    """
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"



def transitions_table(names: Iterable[str] | None = None) -> Table:
    """Rows of :data:`model.transitions.TRANSITIONS` (all, or those in ``names``, in table
    order): name, spec row, actor, source states, target states."""
    wanted = None if names is None else set(names)
    if wanted is not None and (unknown := wanted - set(TRANSITIONS)):
        raise ValueError(f"names: unknown transition(s) {', '.join(sorted(unknown))}")
    return Table(("transition", "spec", "actor", "from", "to"),
                 [(t.name, t.spec, t.actor.value, ", ".join(s.value for s in t.sources) or "—",
                   ", ".join(s.value for s in t.targets) or "—")
                  for t in TRANSITIONS.values() if wanted is None or t.name in wanted])


def presets_table(scale: str = "ci") -> Table:
    """The shipped simulation presets: name, variant, duration at ``scale``, and the finding
    each one states."""
    from simulations import presets
    from simulations.spec import load_spec

    rows = []
    for name in presets.names():
        spec = load_spec(presets.resolve(name), scale)
        rows.append((name, spec.variant, f"{spec.duration / 3600:g} h", spec.finding))
    return Table(("preset", "variant", f"duration ({scale})", "finding"), rows)


def invariants_table() -> Table:
    """The invariants the machine checks after every step (id and title)."""
    return Table(("invariant", "what must hold"), [(i, title) for i, (title, _) in INVARIANTS.items()])


# --- the bug zoo -----------------------------------------------------------------------------


def zoo_table(hunts: Iterable[Hunt]) -> Table:
    """Every case of :data:`harness.zoo.CASES`, with what the given hunts found.

    Columns: mutant, the check expected to catch it, the check that did, the defect the failure
    was attributed to, examples before the first failure, shrunk program length, seconds, the
    verdict (``ok`` = found by an expected check, attributed to this defect, shrunk to <= 10
    steps) and what the defect needs to be reachable. Cases without a hunt are listed as
    ``not run``.
    """
    from harness.zoo import CASES

    by_bug = {h.case.bug: h for h in hunts}
    rows: list[tuple[Any, ...]] = []
    for bug, case in CASES.items():
        h = by_bug.get(bug)
        if h is None:
            rows.append((case.variant, case.invariant, "—", "—", "—", "—", "—", "not run", case.note))
            continue
        r = h.result
        verdict = "ok" if h.as_expected else ("not found" if not h.found else "unexpected")
        rows.append((case.variant, case.invariant, h.caught_by or "—", h.bug or "—",
                     r.examples_to_failure if h.found else f">{r.examples}",
                     r.shrunk_steps if h.found else "—", f"{r.seconds:.1f}", verdict, case.note))
    return Table(("mutant", "expected", "caught by", "defect", "examples", "shrunk steps",
                  "seconds", "verdict", "needs"), rows)


def plot_zoo(hunts: Iterable[Hunt]) -> Figure:
    """Per hunted mutant: examples Hypothesis generated before the first failure, and the length
    of the shrunk program (red: not found within the budget)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    chosen = list(hunts)
    if not chosen:
        raise ValueError("hunts must not be empty")
    names = [h.case.bug for h in chosen]
    colors = ["#009E73" if h.as_expected else "#E69F00" if h.found else "#D55E00" for h in chosen]
    fig = Figure(figsize=(9, 0.45 * len(chosen) + 1.6), dpi=100, layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    left.barh(names, [h.result.examples_to_failure if h.found else h.result.examples
                      for h in chosen], color=colors)
    left.set_xlabel("examples until the first failure")
    right.barh(names, [h.result.shrunk_steps for h in chosen], color=colors)
    right.set_xlabel("steps in the shrunk program")
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.invert_yaxis()  # table order, top to bottom
    fig.suptitle("bug zoo: green = caught as expected, orange = caught otherwise, "
                 "red = not found in budget", fontsize=9)
    return fig
