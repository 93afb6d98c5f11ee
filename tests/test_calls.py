"""Every script's call shape (``broker/calls.py``) against the script's Lua header: each builder
produces the KEYS and ARGV its header declares, in that order, and each slot holds what the
header says it holds.

The test is an oracle of its own: it builds every call in one world of distinct values (so a
value in the wrong slot cannot pass for the right one) and computes, from the slot's name in
the header alone, the value the slot must hold (:data:`EXPECTED`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from broker import calls
from broker.scripting import Arg, header, script_names, script_text
from broker.variants import variant
from model import keys
from model.clock import NS
from model.message import TaskMessage
from model.policy import Policy
from model.states import TaskState

# --- one world of distinct values ------------------------------------------------------------------
Q, TASK_ID, GROUP, SET_ID, OTHER_ID = "q", "t-1", "grp", "set-1", "t-2"
NOW_NS = 1_767_225_600 * NS + 123_456_789
NOW_S, NOW_MS = NOW_NS // NS, NOW_NS // 1_000_000
DATE = "2026-01-01"
POLICY = Policy(lease_duration=31, stats_ttl=41, archive_cutoff_days=2, max_archive_size=77,
                forward_batch=13, janitor_batch_size=17, aggregation_grace=61,
                aggregation_max_delay=67, aggregation_max_size=5, aggregation_timeout=121)
LOCK = keys.unique(Q, "email", b"x")
MSG = TaskMessage(type="email", payload=b"x", id=TASK_ID, queue=Q, unique_key=LOCK,
                  group_key=GROUP, retention=37)
ENCODED, DATA = b"<encoded msg>", b"<result>"
TTL, PROCESS_AT, RETRY_AT, CUTOFF = 7, NOW_S + 300, NOW_S + 500, NOW_S - 700
FOUND = (keys.paused(Q), keys.unique(Q, "other", None))  # what remove_queue's SCAN found
REFERENCE, LOCK_IN_KEYS = variant("reference"), variant("reference+BZ-4")

#: What the slot a header names holds in this world (an example may override a name).
EXPECTED: dict[str, Arg] = {
    # KEYS
    "task hash": keys.task(Q, TASK_ID), "pending list": keys.pending(Q),
    "active list": keys.active(Q), "lease zset": keys.lease(Q),
    "scheduled zset": keys.scheduled(Q), "retry zset": keys.retry(Q),
    "archived zset": keys.archived(Q), "completed zset": keys.completed(Q),
    "paused flag": keys.paused(Q), "groups set": keys.groups(Q),
    "aggregation_sets": keys.aggregation_sets(Q), "group zset": keys.group(Q, GROUP),
    "aggregation set": keys.group_set(Q, GROUP, SET_ID),
    "processed daily": keys.processed_daily(Q, DATE), "processed total": keys.processed_total(Q),
    "failed daily": keys.failed_daily(Q, DATE), "failed total": keys.failed_total(Q),
    "unique lock": LOCK, "unique lock from msg.unique_key": LOCK,
    # ARGV
    "msg": ENCODED, "task id": TASK_ID, "now_ns": NOW_NS, "now_ms": NOW_MS, "now_s": NOW_S,
    "lock deadline in virtual ms": NOW_MS + TTL * 1000, "process_at": PROCESS_AT,
    'group name from msg.group_key, "" for none': GROUP, "group name": GROUP,
    "lease expiry": NOW_S + POLICY.lease_duration, "new lease expiry": NOW_S + POLICY.lease_duration,
    "task key prefix": keys.task_prefix(Q), "task-hash prefix": keys.task_prefix(Q),
    "group key prefix": keys.group_prefix(Q), "group-key prefix": keys.group_prefix(Q),
    "queue prefix": keys.queue_prefix(Q),
    "daily counter deadline in virtual ms": (NOW_S + POLICY.stats_ttl) * 1000,
    "expiry score": NOW_S + MSG.retention, "retry_at": RETRY_AT, "is_failure": 1,
    "cutoff": NOW_S - POLICY.archive_cutoff, "archive cutoff in s": NOW_S - POLICY.archive_cutoff,
    "capacity": POLICY.archive_capacity, "archive capacity": POLICY.archive_capacity,
    "batch size": POLICY.janitor_batch_size, "max_size": POLICY.aggregation_max_size,
    "max_delay in seconds": POLICY.aggregation_max_delay,
    "grace period in seconds": POLICY.aggregation_grace,
    "set deadline": NOW_S + POLICY.aggregation_timeout, "force": 1, "result bytes": DATA,
    "MATCH pattern for the queue's keys": keys.queue_pattern(Q),
}


@dataclass(frozen=True)
class Example:
    """One builder call, and what its slots hold where the header's name alone does not say."""

    build: Callable[[], calls.Call]
    overrides: dict[str, Any] = field(default_factory=dict)
    #: Values of a variadic tail (``KEYS[n] and on``, ``ARGV[n..]``).
    tail: tuple[Arg, ...] = ()


def _bulk(state: TaskState) -> dict[str, Any]:
    """A bulk call on ``state``: its index is the source, no group name."""
    return {"source index": keys.state_index(Q, state), "source state": state.value,
            "group name": ""}


_AGGREGATING = {"source index": keys.group(Q, GROUP), "source state": "aggregating"}
_NOT_UNIQUE: dict[str, Any] = {}

EXAMPLES: dict[str, list[Example]] = {
    "enqueue": [
        Example(lambda: calls.enqueue(Q, TASK_ID, ENCODED, NOW_NS)),
        Example(lambda: calls.enqueue(Q, TASK_ID, ENCODED, NOW_NS, LOCK, TTL)),
    ],
    "schedule": [
        Example(lambda: calls.schedule(MSG, ENCODED, PROCESS_AT, NOW_NS)),
        Example(lambda: calls.schedule(MSG, ENCODED, PROCESS_AT, NOW_NS, LOCK, TTL)),
    ],
    "add_to_group": [
        Example(lambda: calls.add_to_group(MSG, ENCODED, NOW_NS)),
        Example(lambda: calls.add_to_group(MSG, ENCODED, NOW_NS, LOCK, TTL)),
    ],
    "dequeue": [Example(lambda: calls.dequeue(Q, NOW_NS, POLICY))],
    "done": [
        Example(lambda: calls.done(MSG, NOW_NS, POLICY, REFERENCE)),
        Example(lambda: calls.done(MSG, NOW_NS, POLICY, LOCK_IN_KEYS)),
    ],
    "mark_as_complete": [
        Example(lambda: calls.mark_as_complete(MSG, ENCODED, NOW_NS, POLICY, REFERENCE)),
        Example(lambda: calls.mark_as_complete(MSG, ENCODED, NOW_NS, POLICY, LOCK_IN_KEYS)),
    ],
    "requeue": [Example(lambda: calls.requeue(Q, TASK_ID))],
    "retry": [
        Example(lambda: calls.retry(MSG, ENCODED, RETRY_AT, True, NOW_NS, POLICY)),
        Example(lambda: calls.retry(MSG, ENCODED, RETRY_AT, False, NOW_NS, POLICY),
                {"is_failure": 0}),
    ],
    "archive": [Example(lambda: calls.archive(MSG, ENCODED, NOW_NS, POLICY))],
    "forward": [
        Example(lambda: calls.forward(Q, TaskState.SCHEDULED, NOW_NS, POLICY),
                {"source zset": keys.scheduled(Q), "batch size": POLICY.forward_batch}),
        Example(lambda: calls.forward(Q, TaskState.RETRY, NOW_NS, POLICY),
                {"source zset": keys.retry(Q), "batch size": POLICY.forward_batch}),
    ],
    "delete_expired_completed": [
        Example(lambda: calls.delete_expired_completed(Q, NOW_NS, POLICY))],
    "delete_expired_archived": [Example(lambda: calls.delete_expired_archived(Q, NOW_NS, POLICY))],
    "list_lease_expired": [Example(lambda: calls.list_lease_expired(Q, CUTOFF), {"cutoff": CUTOFF})],
    "drop_dangling_leases": [
        Example(lambda: calls.drop_dangling_leases(Q, CUTOFF), {"cutoff": CUTOFF})],
    "extend_lease": [
        Example(lambda: calls.extend_lease(Q, [TASK_ID, OTHER_ID], NOW_NS, POLICY),
                tail=(TASK_ID, OTHER_ID)),
        Example(lambda: calls.extend_lease(Q, [], NOW_NS, POLICY)),
    ],
    "aggregation_check": [
        Example(lambda: calls.aggregation_check(Q, GROUP, SET_ID, NOW_NS, POLICY))],
    "read_aggregation_set": [Example(lambda: calls.read_aggregation_set(Q, GROUP, SET_ID))],
    "delete_aggregation_set": [
        Example(lambda: calls.delete_aggregation_set(Q, GROUP, SET_ID, NOW_NS))],
    "reclaim_stale_aggregation_sets": [
        Example(lambda: calls.reclaim_stale_aggregation_sets(Q, NOW_NS))],
    "write_result": [Example(lambda: calls.write_result(Q, TASK_ID, DATA))],
    "pause": [Example(lambda: calls.pause(Q, NOW_NS))],
    "unpause": [Example(lambda: calls.unpause(Q))],
    "delete_task": [Example(lambda: calls.delete_task(Q, TASK_ID, NOW_NS))],
    "archive_task": [Example(lambda: calls.archive_task(Q, TASK_ID, NOW_NS, POLICY))],
    "run_task": [Example(lambda: calls.run_task(Q, TASK_ID))],
    "delete_all": [
        Example(lambda: calls.delete_all(Q, TaskState.COMPLETED, None, NOW_NS),
                _bulk(TaskState.COMPLETED)),
        Example(lambda: calls.delete_all(Q, TaskState.AGGREGATING, GROUP, NOW_NS), _AGGREGATING),
    ],
    "archive_all": [
        Example(lambda: calls.archive_all(Q, TaskState.PENDING, None, NOW_NS, POLICY),
                _bulk(TaskState.PENDING)),
        Example(lambda: calls.archive_all(Q, TaskState.AGGREGATING, GROUP, NOW_NS, POLICY),
                _AGGREGATING),
    ],
    "run_all": [
        Example(lambda: calls.run_all(Q, TaskState.ARCHIVED, None), _bulk(TaskState.ARCHIVED)),
        Example(lambda: calls.run_all(Q, TaskState.AGGREGATING, GROUP), _AGGREGATING),
    ],
    "remove_queue": [
        Example(lambda: calls.remove_queue(Q, True, [*FOUND, keys.pending(Q), FOUND[0]]),
                tail=FOUND),
        Example(lambda: calls.remove_queue(Q, False), {"force": 0}),
    ],
    "snapshot": [Example(lambda: calls.snapshot(Q), {"SCAN COUNT hint": calls.SCAN_COUNT})],
    "sweep_expired": [
        Example(lambda: calls.sweep_expired(Q, NOW_NS), {"SCAN COUNT hint": calls.SCAN_COUNT})],
}


# --- the header's slots ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Slot:
    """One declared KEYS or ARGV entry: its name, and whether a call may leave it out."""

    name: str
    optional: bool
    variadic: bool


_VARIADIC = re.compile(r"^--\s*(KEYS|ARGV)\[\d+\.\.\]\s*(.*)$", re.M)


def slot_name(description: str) -> str:
    """The name a header gives a slot: its description up to a wide gap, a parenthesis or a colon.

    >>> slot_name("task key prefix      asynq:{q}:t:  (task hashes are computed: prefix .. id)")
    'task key prefix'
    >>> slot_name("cutoff (Unix seconds): leases with score <= cutoff")
    'cutoff'
    """
    return re.split(r"\s{2,}|\s\(|:\s", description, maxsplit=1)[0].strip()


def slots(script: str, kind: str) -> list[Slot]:
    """The ``kind`` (KEYS or ARGV) slots ``script``'s header declares, in order, variadic
    tails (``KEYS[10] and on``, ``ARGV[2..]``) last."""
    declared = [entry.split(" ", 1)[1] if " " in entry else "" for entry in header(script)[kind]]
    out = [Slot(slot_name(d), "(only " in d, d.startswith("and on")) for d in declared]
    out += [Slot(slot_name(d), False, True) for k, d in _VARIADIC.findall(script_text(script))
            if k == kind]
    return out


def expected(script: str, kind: str, example: Example, produced: int) -> list[Any]:
    """What ``produced`` values of ``kind`` must be, from the header's names: every slot in
    order, leaving out trailing optional ones, then the variadic tail."""
    declared = slots(script, kind)
    fixed = [s for s in declared if not s.variadic]
    variadic = [s for s in declared if s.variadic]
    names = {**EXPECTED, **example.overrides}
    values = [names[s.name] for s in fixed[:produced]]
    assert all(s.optional for s in fixed[produced:]), \
        f"{script} {kind}: leaves out {[s.name for s in fixed[produced:]]}, not declared optional"
    if variadic:
        values += list(example.tail)
    return values


CASES = [(name, i) for name in script_names() for i in range(len(EXAMPLES.get(name, [])))]


# --- tests -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("script", script_names())
def test_every_script_has_a_builder_named_after_it_and_examples(script: str) -> None:
    builder = getattr(calls, script, None)
    assert callable(builder), f"broker/calls.py has no builder for {script}.lua"
    assert EXAMPLES.get(script), f"no example call of {script}"
    assert {example.build().script for example in EXAMPLES[script]} == {script}


def test_every_example_names_a_script() -> None:
    assert set(EXAMPLES) <= set(script_names())


@pytest.mark.parametrize(("script", "index"), CASES)
def test_builder_fills_the_slots_its_header_declares(script: str, index: int) -> None:
    example = EXAMPLES[script][index]
    call = example.build()
    for kind, produced in (("KEYS", call.keys), ("ARGV", call.args)):
        assert list(produced) == expected(script, kind, example, len(produced)), \
            f"{script} {kind} (example {index}) differs from the header's order"


@pytest.mark.parametrize("script", script_names())
def test_examples_fill_every_declared_slot(script: str) -> None:
    """Together the examples reach every slot, optional ones and variadic tails included."""
    built = [(example.build(), example) for example in EXAMPLES[script]]
    for kind in ("KEYS", "ARGV"):
        declared = slots(script, kind)
        fixed = sum(1 for s in declared if not s.variadic)
        variadic = any(s.variadic for s in declared)
        sizes = [len(call.keys if kind == "KEYS" else call.args) - (len(ex.tail) if variadic else 0)
                 for call, ex in built]
        assert max(sizes) == fixed, f"{script} {kind}: examples fill {max(sizes)} of {fixed} slots"
        if variadic:
            assert any(ex.tail for _, ex in built), f"{script} {kind}: no example of the tail"


def test_the_message_lock_goes_in_keys_only_where_the_variant_releases_it_and_only_its_queues() -> None:
    """BZ-4: Asynq releases the lock the message names; the reference reads it in the script.
    A lock of another queue would leave the call's Cluster slot, so it never goes in KEYS."""
    foreign = TaskMessage(type="email", payload=b"x", id=TASK_ID, queue=Q,
                          unique_key=keys.unique("other", "email", b"x"))
    assert LOCK in calls.done(MSG, NOW_NS, POLICY, LOCK_IN_KEYS).keys
    assert LOCK not in calls.done(MSG, NOW_NS, POLICY, REFERENCE).keys
    for builder in (calls.done, lambda m, *a: calls.mark_as_complete(m, ENCODED, *a)):
        assert builder(foreign, NOW_NS, POLICY, LOCK_IN_KEYS).keys[-1] == keys.processed_total(Q)
    assert variant("asynq-v0.26.0").quirks >= LOCK_IN_KEYS.quirks  # Asynq's own variants do


def test_daily_counters_change_at_utc_midnight() -> None:
    before = calls.retry(MSG, ENCODED, RETRY_AT, True, 1_767_311_999 * NS, POLICY)
    after = calls.retry(MSG, ENCODED, RETRY_AT, True, 1_767_312_000 * NS, POLICY)
    assert before.keys[4] == keys.processed_daily(Q, "2026-01-01")
    assert after.keys[4] == keys.processed_daily(Q, "2026-01-02")
    assert after.keys[6] == keys.failed_daily(Q, "2026-01-02")


# --- nobody else spells a call --------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
#: A script call whose name is spelled at the call site instead of coming from a builder.
SPELLED_CALL = re.compile(r"\b(?:call|queue_on)\(\s*(?:\w+\s*,\s*)?[\"']")


@pytest.mark.parametrize("package", ["broker", "simulations", "harness", "audit", "benchmarks"])
def test_no_call_site_spells_a_script_name(package: str) -> None:
    spelled = [f"{path.relative_to(ROOT)}:{n}"
               for path in sorted((ROOT / package).rglob("*.py"))
               for n, line in enumerate(path.read_text().splitlines(), 1)
               if SPELLED_CALL.search(line) and "redis.call" not in line]
    assert not spelled, f"script calls built outside broker/calls.py: {spelled}"


def test_spelled_call_pattern_finds_what_it_must() -> None:
    assert SPELLED_CALL.search('self.call("done", [k], [a])')
    assert SPELLED_CALL.search("self._run.queue_on(pipe, 'snapshot', [], [p])")
    assert not SPELLED_CALL.search("self.call(*calls.done(msg, now_ns, policy, variant))")
