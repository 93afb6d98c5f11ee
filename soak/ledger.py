"""The books of ``keysim soak``: conservation from the processes' own logs, and what every audit
finding is attributed to.

Pure functions over the JSON-lines events of ``conformance/load`` (soak.go): the client's
``enqueued``/``deleted``, the servers' ``running``/``handled``, and the Inspector's ``final``.
:func:`account` decides, task by task, how it ended:

- **done** — a run of it succeeded and the hash is gone (Asynq's Done deletes it);
- **aggregated** — a group task: a batch holding it ran successfully, and the hash is gone
  (DeleteAggregationSet deletes the members);
- **completed** — a retention task, completed with its handler's result;
- **archived** — by its handler's failure (the ``archive`` mix), or **by the recoverer** (its
  lease expired after a kill and its retries were used up: ``asynq: task lease expired``);
- **deleted by Inspector.DeleteTask** — the client deleted it (the ``delete`` mix);
- **lost** — gone, yet no run of it succeeded and nothing named deleted it, or a retention task
  gone before its retention ended: a failure;
- **stuck** — still pending, active, scheduled, retry or aggregating after the drain: a failure
  unless an attributed audit finding holds it (a group BZ-10 orphaned);
- anything else the Inspector reports that the log does not explain (a completed task that never
  succeeded, a wrong result, an id listed in another state than GetTaskInfo says, a task nobody
  enqueued) is a **problem**: a failure.

Asynq delivers at least once: a run a kill cuts short begins again once the recoverer has
retried the task (a **re-run**), and a server killed after the handler returned but before Done
makes a second successful run (a **duplicate**). Both are counted, never called loss.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from audit import Finding
from harness.attribution import Op, attribute
from model import keys
from model.invariants import Kind

#: The LastErr Asynq's recoverer writes when it retries or archives a task whose lease expired.
LEASE_EXPIRED = "asynq: task lease expired"
#: Inspector states a drained queue has no task in.
STUCK_STATES = frozenset({"pending", "active", "scheduled", "retry", "aggregating"})
#: Where a task ends: the Inspector's state for the ones it still has.
KEPT_STATES = frozenset({"completed", "archived"})
DELETED_BY_INSPECTOR = "Inspector.DeleteTask"

Event = Mapping[str, Any]


@dataclass(frozen=True)
class Problem:
    """One task the books do not balance for."""

    task_id: str
    mix: str
    why: str

    def __str__(self) -> str:
        return f"{self.task_id} ({self.mix}): {self.why}" if self.task_id else self.why


@dataclass
class Ledger:
    """What the logs and the Inspector say became of every enqueued task."""

    tasks: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    handler_runs: int = 0
    #: Runs whose "running" has no "handled" from the same process: cut short by a kill.
    interrupted_runs: int = 0
    #: Runs that began again after a kill cut one of the same task short (Asynq's
    #: at-least-once redelivery, by the recoverer).
    reruns: int = 0
    #: Successful runs beyond each task's first.
    duplicates: int = 0
    duplicated_tasks: int = 0
    lost: list[Problem] = field(default_factory=list)
    #: (task, its Inspector state, its group or "").
    stuck: list[tuple[Problem, str]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def account(client: Iterable[Event], servers: Iterable[Event], final: Event) -> Ledger:
    """Balance the books: the client's events, every server's events (any order) and the
    Inspector's ``final`` (see the module docstring).

    >>> client = [{"ev": "enqueued", "id": "a", "mix": "plain", "marker": "m0"}]
    >>> runs = [{"ev": "handled", "id": "a", "markers": ["m0"], "ok": True, "proc": "p0.0"}] * 2
    >>> ledger = account(client, runs, {"tasks": {"a": {"state": "missing"}}, "listed": {}})
    >>> ledger.outcomes, ledger.duplicates, ledger.lost
    (Counter({'done': 1}), 1, [])
    """
    client = list(client)
    enqueued = {e["id"]: e for e in client if e["ev"] == "enqueued"}
    deleted = {e["id"]: e["by"] for e in client if e["ev"] == "deleted"}
    ledger = Ledger(tasks=len(enqueued))
    oks: Counter[str] = Counter()  # marker -> successful runs
    entered: Counter[str] = Counter()  # task (or batch) id -> runs begun
    open_runs: Counter[tuple[str, str, int]] = Counter()
    for e in servers:
        if e["ev"] not in ("running", "handled"):
            continue
        run = (str(e.get("proc", "")), str(e["id"]), int(e.get("retried", 0)))
        if e["ev"] == "running":
            open_runs[run] += 1
            entered[run[1]] += 1
            continue
        ledger.handler_runs += 1
        open_runs[run] -= 1
        if e["ok"]:
            oks.update(e["markers"])
    cut: Counter[str] = Counter()
    for (_, run_id, _), n in open_runs.items():
        cut[run_id] += max(0, n)
    ledger.interrupted_runs = sum(cut.values())
    ledger.reruns = sum(min(n, entered[run_id] - n) for run_id, n in cut.items())
    states = final["tasks"]
    for task_id, e in enqueued.items():
        state = states.get(task_id)
        if state is None:
            ledger.problems.append(Problem(task_id, e["mix"], "the Inspector was not asked about it"))
            continue
        _settle(ledger, task_id, e, state, oks[e["marker"]], deleted.get(task_id))
        extra = max(0, oks[e["marker"]] - 1)
        ledger.duplicates += extra
        ledger.duplicated_tasks += extra > 0
    ledger.problems += _listing_problems(enqueued, states, final.get("listed", {}))
    if "queue_error" in final:
        ledger.problems.append(Problem("", "", f"Inspector.GetQueueInfo failed (as Asynq v0.26.0 does on "
                                                f"a dangling index id, BZ-21): {final['queue_error']}"))
    return ledger


def _settle(ledger: Ledger, task_id: str, e: Event, info: Mapping[str, Any], oks: int,
            deleted_by: str | None) -> None:
    """Record how one task ended."""
    mix, state = e["mix"], info["state"]
    if deleted_by is not None and oks:
        ledger.problems.append(Problem(task_id, mix, f"ran although {deleted_by} deleted it"))
    if state in STUCK_STATES:
        ledger.stuck.append((Problem(task_id, mix, f"still {state} after the drain"),
                             str(info.get("group") or e.get("group") or "")))
    elif state == "missing":
        if deleted_by is not None:
            ledger.outcomes[f"deleted by {deleted_by}"] += 1
        elif mix == "retention":
            ledger.lost.append(Problem(task_id, mix, "gone before its retention (1 h) ended"))
        elif oks:
            ledger.outcomes["aggregated" if mix == "group" else "done"] += 1
        else:
            ledger.lost.append(Problem(task_id, mix, "gone, but no run of it succeeded and no "
                                                     "named operation deleted it"))
    elif state == "completed":
        if mix == "retention" and oks and info.get("result") == f"ok:{e['marker']}":
            ledger.outcomes["completed"] += 1
        else:
            ledger.problems.append(Problem(task_id, mix, f"completed with result {info.get('result')!r} "
                                                         f"after {oks} successful run(s)"))
    elif state == "archived" and info.get("last_err") == LEASE_EXPIRED:
        ledger.outcomes["archived by the recoverer"] += 1
    elif state == "archived" and mix == "archive" and not oks:
        ledger.outcomes["archived"] += 1
    else:
        said = info.get("error") or f"last error {info.get('last_err')!r}"
        ledger.problems.append(Problem(task_id, mix, f"{state} ({said}) after {oks} successful run(s)"))


def _listing_problems(enqueued: Mapping[str, Event], states: Mapping[str, Mapping[str, Any]],
                      listed: Mapping[str, Sequence[str]]) -> list[Problem]:
    """The Inspector's listings against its GetTaskInfo answers: a task listed in a state it is
    not in, or in two, and a listed task nobody enqueued (after the drain every aggregated batch
    is done, so every listed task is the client's)."""
    found: list[Problem] = []
    where: dict[str, list[str]] = defaultdict(list)
    for state, ids in listed.items():
        for task_id in ids:
            where[task_id].append(state)
    for task_id, in_states in sorted(where.items()):
        mix = enqueued[task_id]["mix"] if task_id in enqueued else "?"
        if task_id not in enqueued:  # an empty id: Asynq lists a gone hash as an empty message
            found.append(Problem("", mix, f"task {task_id!r} listed as {'/'.join(in_states)}, never "
                                          f"enqueued by the client"))
        elif in_states != [states[task_id]["state"]]:
            found.append(Problem(task_id, mix, f"listed as {'/'.join(in_states)}, but GetTaskInfo "
                                               f"says {states[task_id]['state']}"))
    for task_id, info in states.items():
        if info["state"] in KEPT_STATES | STUCK_STATES and task_id not in where:
            found.append(Problem(task_id, enqueued[task_id]["mix"] if task_id in enqueued else "?",
                                 f"{info['state']} by GetTaskInfo, in no listing"))
    return found


# --- attribution of audit findings -----------------------------------------------------------
@dataclass(frozen=True)
class Cause:
    """How the soak's workload can produce one kind of audit finding: the Asynq operations
    (as :func:`harness.attribution.attribute` knows them) or the defect the audit names, and why.
    ``needs_kill``: only a SIGKILL leads there (without one such a finding is NEW)."""

    reason: str
    ops: tuple[Op, ...] = ()
    kind: Kind | None = None
    needs_kill: bool = True


#: Audit finding kind -> how the soak triggers it. Anything not here is NEW.
SOAK_CAUSES: Mapping[str, Cause] = {
    "orphan group": Cause(
        "a server killed between AggregationCheck and DeleteAggregationSet leaves the staged "
        "set; 2 min later the recoverer's reclaim puts its members back into g:<group> without "
        "registering the group, which AggregationCheck had unregistered when it emptied it",
        ops=(Op("reclaim_stale_aggregation_sets", (), "ok"),), kind=Kind.ORPHAN_GROUP),
    "stale registry member": Cause(
        "a SIGKILLed server never runs ClearServerState: its asynq:servers and asynq:workers "
        "members outlive their keys until an Inspector lists the servers"),
}


@dataclass(frozen=True)
class Attribution:
    """One audit finding and the known defect it is attributed to (None: NEW)."""

    finding: Finding
    defect: str | None
    reason: str

    @property
    def label(self) -> str:
        return self.defect or "NEW"


def attribute_finding(finding: Finding, kills: int) -> Attribution:
    """The defect behind ``finding``, given how many servers the soak killed.

    >>> f = Finding("I7", "orphan group", "asynq:{q}:g:g0", None, "orphan group: …")
    >>> attribute_finding(f, kills=3).label, attribute_finding(f, kills=0).label
    ('BZ-10', 'NEW')
    """
    cause = SOAK_CAUSES.get(finding.kind)
    if cause is None:
        return Attribution(finding, None, "no known defect the soak's workload triggers explains it")
    if cause.needs_kill and kills == 0:
        return Attribution(finding, None, f"explained only by a kill, and no server was killed "
                                          f"({cause.reason})")
    defect = attribute(cause.kind, cause.ops) if cause.kind is not None else finding.invariant
    if defect is None or not defect.startswith("BZ-"):
        return Attribution(finding, None, f"the known cause names no defect ({cause.reason})")
    return Attribution(finding, defect, cause.reason)


@dataclass
class Verdict:
    """PASS (exit 0) or FAIL (exit 1), with every reason to fail."""

    failures: list[str]
    #: Stuck tasks an attributed finding holds: (task, defect).
    explained_stuck: list[tuple[Problem, str]]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1


def judge(ledger: Ledger, attributions: Sequence[Attribution], queue: str,
          errors: Sequence[str] = ()) -> Verdict:
    """Fail on a lost task, a problem, a NEW finding, a stuck task no attributed finding holds,
    or an ``errors`` entry (a process that failed, a queue that did not drain).

    >>> judge(Ledger(tasks=1, outcomes=Counter(done=1)), [], "q").passed
    True
    >>> judge(Ledger(lost=[Problem("a", "plain", "gone")]), [], "q").failures
    ['lost: a (plain): gone']
    """
    failures = list(errors)
    failures += [f"lost: {p}" for p in ledger.lost]
    failures += [f"problem: {p}" for p in ledger.problems]
    failures += [f"NEW finding: {a.finding.kind} {a.finding.key}: {a.finding.message} ({a.reason})"
                 for a in attributions if a.defect is None]
    holders = {a.finding.key: a.defect for a in attributions if a.defect is not None}
    explained = []
    for problem, group in ledger.stuck:
        defect = holders.get(keys.group(queue, group)) if group else None
        if defect is None:
            failures.append(f"stuck: {problem}")
        else:
            explained.append((problem, defect))
    return Verdict(failures, explained)
