"""Inspector operations (T28–T41) on both backends: the exact keyspace after each operation.

Every test writes a starting keyspace, takes a snapshot, runs one operation and compares the
whole snapshot afterwards with the expected one (the starting snapshot with the operation's
edits applied, or a literal keyspace). Variants: ``reference`` (leak-free), ``asynq-v0.26.0``
(BZ-2 zombies from inspector trims, BZ-4 locks kept by delete_all pending/aggregating, BZ-12
remove_queue leftovers, BZ-17 stubs) and single-quirk mutants where v0.26.0 has none (BZ-3).

Starting states are written with the raw client (hash + index, exactly as the client/server
scripts leave them) so that each test pins one inspector script and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

import pytest
import redis
from support import expectation

from broker import Broker
from broker.scripting import encode_deadline
from broker.variants import Quirk
from model import keys
from model.clock import VirtualClock
from model.errors import (
    AlreadyInStateError,
    QueueNotEmptyError,
    ScriptError,
    TaskActiveError,
    TaskNotFoundError,
)
from model.message import TaskMessage
from model.policy import ASYNQ_POLICY, Policy
from model.snapshot import FieldValue, KeyEntry, KeyspaceSnapshot, KeyType, zset_value
from model.states import TaskState
from model.transitions import bulk_states

Q = "q"
NOW = VirtualClock().seconds
LOCK_TTL_MS = 3_600_000
ASYNQ = "asynq-v0.26.0"
P, S, A, R = TaskState.PENDING, TaskState.SCHEDULED, TaskState.ACTIVE, TaskState.RETRY
AR, C, AG = TaskState.ARCHIVED, TaskState.COMPLETED, TaskState.AGGREGATING


# --- building a keyspace -----------------------------------------------------------------------
class World:
    """A broker, with two ways to lay tasks out.

    :meth:`task` uses the client and server operations (the keyspace they really leave);
    :meth:`raw` writes hash and index directly, for shapes those operations cannot reach at the
    current virtual time: chosen scores, ids staged in an aggregation set, zombies, dangling ids.
    """

    def __init__(self, client: redis.Redis, variant: str = "reference",
                 policy: Policy | None = None, queue: str = Q) -> None:
        self.broker = Broker(client, variant, policy)
        self.r = client
        self.q = queue

    @property
    def now_ms(self) -> int:
        return self.broker.now_ms

    def msg(self, task_id: str, group: str = "") -> TaskMessage:
        return TaskMessage(type="email", payload=task_id.encode(), id=task_id, queue=self.q,
                           group_key=group, retention=60)

    def task(self, task_id: str, state: TaskState, group: str = "", lock: bool = False,
             at: int = NOW) -> None:
        """Create ``task_id`` in ``state`` by real operations (``at``: process_at / retry_at).

        Active, retry, archived and completed tasks pass through dequeue, so pending must be
        empty then (dequeue takes the oldest pending task).
        """
        b, msg, ttl = self.broker, self.msg(task_id, group), LOCK_TTL_MS // 1000
        if state is AG:
            b.add_to_group_unique(msg, group, ttl) if lock else b.add_to_group(msg, group)
        elif state is S:
            b.schedule_unique(msg, at, ttl) if lock else b.schedule(msg, at)
        else:
            assert state is P or not self.r.exists(keys.pending(self.q)), "pending must be empty"
            b.enqueue_unique(msg, ttl) if lock else b.enqueue(msg)
            if state is not P:
                self._process(task_id, state, at)

    def _process(self, task_id: str, state: TaskState, at: int) -> None:
        active = self.broker.dequeue(self.q)
        assert active is not None and active.id == task_id
        if state is R:
            self.broker.retry(active, at, "boom")
        elif state is AR:
            self.broker.archive(active, "boom")
        elif state is C:
            self.broker.mark_as_complete(active)

    def raw(self, task_id: str, state: TaskState, score: int = NOW, group: str = "",
            lock: bool = False, set_id: str = "") -> None:
        """Write ``task_id`` in ``state`` directly: hash, index entry with ``score``, lock."""
        q, msg = self.q, self.msg(task_id, group)
        fields: dict[str, str | bytes] = {"msg": self.broker.encode(msg), "state": state.value}
        if state is AG:
            fields["group"] = group
            self.group_member(task_id, group, score, set_id)
        else:
            self.r.zadd(keys.state_index(q, state), {task_id: score})
        if lock:
            fields["unique_key"] = self.lock(task_id)
        self.r.hset(keys.task(q, task_id), items=[x for pair in fields.items() for x in pair])

    def group_member(self, task_id: str, group: str, score: int, set_id: str = "") -> None:
        if set_id:
            set_key = keys.group_set(self.q, group, set_id)
            self.r.zadd(set_key, {task_id: score})
            self.r.zadd(keys.aggregation_sets(self.q), {set_key: NOW + 120})
        else:
            self.r.zadd(keys.group(self.q, group), {task_id: score})
            self.r.sadd(keys.groups(self.q), group)

    def lock(self, owner: str) -> str:
        """A unique lock held by ``owner``, named as enqueue_unique names the owner's lock."""
        key = keys.unique(self.q, "email", owner.encode())
        self.r.set(key, owner)
        self.r.pexpireat(key, encode_deadline(self.now_ms + LOCK_TTL_MS))
        return key

    def zombie(self, task_id: str) -> None:
        """An archived hash in no index (BZ-2/BZ-16 leave these)."""
        self.task(task_id, AR)
        self.r.zrem(keys.archived(self.q), task_id)

    def dangling(self, task_id: str, state: TaskState, group: str = "") -> None:
        """An index entry whose hash is gone (eviction, manual DEL, BZ-15)."""
        if state is P:
            self.r.lpush(keys.pending(self.q), task_id)
        elif state is AG:
            self.group_member(task_id, group, NOW)
        else:
            self.r.zadd(keys.state_index(self.q, state), {task_id: NOW})

    def extras(self) -> None:
        """Non-task keys: processed/failed counters and a lock without a live owner (pausing is
        left to the caller: a paused queue cannot be dequeued)."""
        self.task("counted", AR)  # leaves processed/failed counters, daily and total
        self.broker.delete_task(self.q, "counted")
        self.lock("gone")

    def snap(self) -> KeyspaceSnapshot:
        return self.broker.snapshot(self.q)

    def check(self, expected: KeyspaceSnapshot) -> None:
        actual = self.snap()
        assert actual == expected, "\n" + expected.diff(actual)


# --- expected keyspaces --------------------------------------------------------------------------
def edit(before: KeyspaceSnapshot, drop: Iterable[str] = (), put: Iterable[KeyEntry] = (),
         registered: bool | None = None) -> KeyspaceSnapshot:
    """``before`` without the ``drop`` keys and with the ``put`` entries (an empty collection
    is dropped, as Redis deletes it)."""
    entries = {k: v for k, v in before.entries.items() if k not in set(drop)}
    for entry in put:
        if entry.type in (KeyType.LIST, KeyType.SET, KeyType.ZSET) and not entry.value:
            entries.pop(entry.key, None)
        else:
            entries[entry.key] = entry
    return replace(before, entries=entries,
                   registered=before.registered if registered is None else registered)


def less(before: KeyspaceSnapshot, key: str, *ids: str) -> KeyEntry:
    """The collection ``key`` of ``before`` without ``ids`` (possibly empty)."""
    entry = before.get(key)
    assert entry is not None, key
    if entry.type is KeyType.ZSET:
        return replace(entry, value=tuple(p for p in entry.zset() if p[0] not in ids))
    if entry.type is KeyType.LIST:
        return replace(entry, value=tuple(m for m in entry.list() if m not in ids))
    return replace(entry, value=entry.set() - set(ids))


def zset(key: str, *pairs: tuple[str, int]) -> KeyEntry:
    return KeyEntry(key, KeyType.ZSET, zset_value(pairs))


def lst(key: str, *ids: str) -> KeyEntry:
    return KeyEntry(key, KeyType.LIST, tuple(ids))


def rehash(before: KeyspaceSnapshot, key: str, **fields: FieldValue) -> KeyEntry:
    """The hash ``key`` of ``before`` with ``fields`` overwritten."""
    entry = before.get(key)
    assert entry is not None, key
    return KeyEntry(key, KeyType.HASH, {**entry.hash(), **fields})


def stub(key: str, state: str) -> KeyEntry:
    return KeyEntry(key, KeyType.HASH, {"state": state})


def t(task_id: str) -> str:
    return keys.task(Q, task_id)


def lock_of(task_id: str) -> str:
    return keys.unique(Q, "email", task_id.encode())


@pytest.fixture
def world(redis_client: redis.Redis) -> Callable[..., World]:
    """``world(variant="reference", policy=None, queue=Q)`` on the current backend."""
    return lambda *a, **kw: World(redis_client, *a, **kw)


# --- delete_task (T28) -----------------------------------------------------------------------------
SOURCE = {P: keys.pending(Q), S: keys.scheduled(Q), R: keys.retry(Q), AR: keys.archived(Q),
          C: keys.completed(Q)}


@pytest.mark.parametrize("state", [P, S, R, AR, C])
@pytest.mark.parametrize("variant", ["reference", ASYNQ])
def test_delete_task_removes_hash_index_entry_and_lock(world: Callable[..., World],
                                                       state: TaskState, variant: str) -> None:
    w = world(variant)
    w.task("t1", state, lock=True)
    w.task("t2", state, lock=True)
    before = w.snap()
    assert (before.get(lock_of("t1")) is None) == (state is C)  # completion released it
    w.broker.delete_task(Q, "t1")
    w.check(edit(before, drop=[t("t1"), lock_of("t1")], put=[less(before, SOURCE[state], "t1")]))


def test_delete_task_keeps_lock_with_bz3(world: Callable[..., World]) -> None:
    w = world("reference+BZ-3")
    w.task("t1", S, lock=True)
    before = w.snap()
    w.broker.delete_task(Q, "t1")
    w.check(edit(before, drop=[t("t1"), SOURCE[S]]))


def test_delete_task_leaves_a_lock_owned_by_another_task(world: Callable[..., World]) -> None:
    w = world()
    w.task("t1", S)
    w.r.hset(t("t1"), "unique_key", w.lock("t2"))  # t1's lock expired and t2 took it over
    before = w.snap()
    w.broker.delete_task(Q, "t1")
    w.check(edit(before, drop=[t("t1"), SOURCE[S]]))


def test_delete_task_last_of_group_removes_group_from_groups(world: Callable[..., World]) -> None:
    w = world()
    w.task("t1", AG, group="g1", lock=True)
    w.task("t2", AG, group="g2")
    before = w.snap()
    w.broker.delete_task(Q, "t1")
    w.check(edit(before, drop=[t("t1"), lock_of("t1"), keys.group(Q, "g1")],
                 put=[less(before, keys.groups(Q), "g1")]))


def test_delete_task_from_group_with_other_members_keeps_it(world: Callable[..., World]) -> None:
    w = world()
    w.task("t1", AG, group="g1")
    w.task("t2", AG, group="g1")
    before = w.snap()
    w.broker.delete_task(Q, "t1")
    w.check(edit(before, drop=[t("t1")], put=[less(before, keys.group(Q, "g1"), "t1")]))


# --- errors of the per-task ops --------------------------------------------------------------------
OPS = ("delete_task", "archive_task", "run_task")


#: What a per-task op answers for a hash its state's index does not hold (staged in an aggregation
#: set, a zombie, an orphan): the reference refuses it as not found, Asynq's scripts fail.
INCONSISTENT_TASK: dict[Quirk | None, type[Exception]] = {
    None: TaskNotFoundError, Quirk.INSPECTOR_ERRORS_ON_INCONSISTENT_TASK: ScriptError}


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("variant", ["reference", ASYNQ])
def test_per_task_errors_write_nothing(world: Callable[..., World], op: str, variant: str) -> None:
    w = world(variant)
    w.task("act", A)
    w.raw("staged", AG, group="g", set_id="s1")  # aggregating, but in an aggregation set
    w.zombie("zombie")
    w.r.hset(t("orphan"), "state", "scheduled")  # a hash whose id is in no index
    before = w.snap()
    call = getattr(w.broker, op)
    inconsistent = expectation(variant, INCONSISTENT_TASK)
    cases: list[tuple[str, type[Exception]]] = [
        ("missing", TaskNotFoundError), ("act", TaskActiveError), ("staged", inconsistent),
        ("orphan", inconsistent)]
    if op != "archive_task":  # archiving an archived-state hash is "already" (checked first)
        cases.append(("zombie", inconsistent))  # spec T28: a zombie cannot be deleted
    for task_id, error in cases:
        with pytest.raises(error):
            call(Q, task_id)
    w.check(before)


def test_already_in_state_errors_write_nothing(world: Callable[..., World]) -> None:
    w = world()
    w.task("arch", AR)
    w.task("pend", P)
    before = w.snap()
    with pytest.raises(AlreadyInStateError):
        w.broker.archive_task(Q, "arch")
    with pytest.raises(AlreadyInStateError):
        w.broker.run_task(Q, "pend")
    w.check(before)


BAD_NAMES = [("", "x", "queue"), ("  ", "x", "queue"), ("q", "", "task id"),
             ("q", "a{b}", "task id"), ("q{", "x", "queue")]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(("queue", "task_id", "param"), BAD_NAMES)
def test_per_task_bad_input_names_the_parameter(world: Callable[..., World], op: str, queue: str,
                                                task_id: str, param: str) -> None:
    w = world()
    w.task("x", S)
    before = w.snap()
    with pytest.raises(ValueError, match=f"^{param} "):
        getattr(w.broker, op)(queue, task_id)
    w.check(before)


# --- archive_task (T29) ------------------------------------------------------------------------------
@pytest.mark.parametrize("state", [P, S, R, C, AG])
@pytest.mark.parametrize("variant", ["reference", ASYNQ])
def test_archive_task_moves_one_task_and_keeps_msg_and_lock(world: Callable[..., World],
                                                            state: TaskState, variant: str) -> None:
    w = world(variant)
    w.task("t1", state, group="g" if state is AG else "", lock=True, at=NOW - 5)
    before = w.snap()
    w.broker.archive_task(Q, "t1")
    drop = [keys.group(Q, "g"), keys.groups(Q)] if state is AG else [SOURCE[state]]
    w.check(edit(before, drop=drop, put=[zset(keys.archived(Q), ("t1", NOW)),
                                         rehash(before, t("t1"), state="archived")]))


def test_archive_task_trim_deletes_old_and_excess_hashes(world: Callable[..., World]) -> None:
    w = world("reference", Policy(max_archive_size=2))
    cutoff = NOW - Policy().archive_cutoff
    w.raw("old", AR, score=cutoff, lock=True)  # exactly at the cutoff: trimmed
    w.raw("a1", AR, score=cutoff + 1, lock=True)  # lowest rank after the cutoff: over capacity
    w.raw("a2", AR, score=NOW)
    w.task("t1", P)
    before = w.snap()
    w.broker.archive_task(Q, "t1")
    w.check(edit(before, drop=[t("old"), lock_of("old"), t("a1"), lock_of("a1"), keys.pending(Q)],
                 put=[zset(keys.archived(Q), ("a2", NOW), ("t1", NOW)),
                      rehash(before, t("t1"), state="archived")]))


def test_archive_task_never_trims_the_new_id_in_reference(world: Callable[..., World]) -> None:
    w = world("reference", Policy(max_archive_size=2))
    w.raw("x1", AR)
    w.raw("x2", AR)
    w.task("a0", S)  # same score as x1/x2 and ranks first: still not the one trimmed
    before = w.snap()
    w.broker.archive_task(Q, "a0")
    w.check(edit(before, drop=[t("x1"), keys.scheduled(Q)],
                 put=[zset(keys.archived(Q), ("a0", NOW), ("x2", NOW)),
                      rehash(before, t("a0"), state="archived")]))


def test_archive_task_trim_leaves_zombies_in_asynq(world: Callable[..., World]) -> None:
    # max_archive_size 3 with Asynq's off-by-one keeps 2 (ZREMRANGEBYRANK 0 -3).
    w = world(ASYNQ, replace(ASYNQ_POLICY, max_archive_size=3))
    w.raw("old", AR, score=NOW - Policy().archive_cutoff, lock=True)
    w.raw("x1", AR)
    w.raw("x2", AR)
    w.task("a0", S)  # ranks first among equal scores: Asynq trims the id it just archived
    before = w.snap()
    w.broker.archive_task(Q, "a0")
    w.check(edit(before, drop=[keys.scheduled(Q)],
                 put=[zset(keys.archived(Q), ("x1", NOW), ("x2", NOW)),
                      rehash(before, t("a0"), state="archived")]))
    with pytest.raises(ScriptError):
        w.broker.delete_task(Q, "a0")  # spec T28: the zombie cannot be deleted through the API


# --- run_task (T30) --------------------------------------------------------------------------------
@pytest.mark.parametrize("state", [S, R, AR, C, AG])
@pytest.mark.parametrize("variant", ["reference", ASYNQ])
def test_run_task_makes_one_task_pending(world: Callable[..., World], state: TaskState,
                                         variant: str) -> None:
    w = world(variant)
    w.task("t1", state, group="g" if state is AG else "", lock=True)
    w.task("p0", P)
    before = w.snap()
    w.broker.run_task(Q, "t1")
    drop = [keys.group(Q, "g"), keys.groups(Q)] if state is AG else [SOURCE[state]]
    w.check(edit(before, drop=drop, put=[lst(keys.pending(Q), "t1", "p0"),
                                         rehash(before, t("t1"), state="pending")]))


# --- bulk ops: validation -------------------------------------------------------------------------------
BULK = ("delete_all_tasks", "archive_all_tasks", "run_all_tasks")


@pytest.mark.parametrize("op", BULK)
def test_bulk_bad_input_names_the_parameter(world: Callable[..., World], op: str) -> None:
    w = world()
    w.task("x", S)
    before = w.snap()
    call = getattr(w.broker, op)
    with pytest.raises(ValueError, match=r"^queue "):
        call("", S)
    with pytest.raises(ValueError, match=r"^state 'active' is not accepted by \w+; expected one of"):
        call(Q, A)
    with pytest.raises(ValueError, match=r"^state 'bogus' is not accepted"):
        call(Q, "bogus")
    with pytest.raises(ValueError, match=r"^group is required"):
        call(Q, AG)
    with pytest.raises(ValueError, match=r"^group "):
        call(Q, AG, "a:b")
    with pytest.raises(ValueError, match=r"^group must be None"):
        call(Q, S, "g")
    w.check(before)


@pytest.mark.parametrize(("op", "kind"), [("delete_all_tasks", "delete_all"),
                                          ("archive_all_tasks", "archive_all"),
                                          ("run_all_tasks", "run_all")])
def test_bulk_unsupported_state_lists_the_accepted_ones(world: Callable[..., World], op: str,
                                                        kind: str) -> None:
    accepted = bulk_states(kind)
    refused = [s for s in TaskState if s not in accepted]
    assert refused
    for state in refused:
        with pytest.raises(ValueError) as info:
            getattr(world().broker, op)(Q, state)
        assert f"state {state.value!r}" in str(info.value)
        assert str(info.value).endswith(", ".join(s.value for s in accepted))


# --- delete_all (T36–T38) ------------------------------------------------------------------------------
def _bulk_world(w: World, state: TaskState) -> str:
    """Two tasks with locks and one dangling id in ``state``, and a bystander; return the index."""
    group = "g" if state is AG else ""
    w.task("other", AR if state is not AR else S)  # first: it passes through dequeue
    w.task("t1", state, group=group, lock=True)
    w.task("t2", state, group=group, lock=True, at=NOW + 1)
    w.dangling("gone", state, group=group)
    return keys.group(Q, "g") if state is AG else SOURCE[state]


def _index_drop(state: TaskState, source: str) -> list[str]:
    return [source, keys.groups(Q)] if state is AG else [source]


@pytest.mark.parametrize("state", [P, S, R, AR, C, AG])
def test_delete_all_reference_releases_locks_and_drops_dangling_ids(
        world: Callable[..., World], state: TaskState) -> None:
    w = world()
    source = _bulk_world(w, state)
    before = w.snap()
    assert w.broker.delete_all_tasks(Q, state, "g" if state is AG else None) == 2
    w.check(edit(before, drop=[*_index_drop(state, source), t("t1"), t("t2"), lock_of("t1"),
                               lock_of("t2")]))


@pytest.mark.parametrize(("state", "keeps_locks"),
                         [(P, True), (AG, True), (S, False), (R, False), (AR, False)])
def test_delete_all_asynq_keeps_locks_for_pending_and_aggregating(
        world: Callable[..., World], state: TaskState, keeps_locks: bool) -> None:
    w = world(ASYNQ)
    source = _bulk_world(w, state)
    before = w.snap()
    assert before.get(lock_of("t1")) is not None and before.get(lock_of("t2")) is not None
    # Asynq counts the dangling id too (bulk_delete_counts_every_id)
    assert w.broker.delete_all_tasks(Q, state, "g" if state is AG else None) == 3
    locks = [] if keeps_locks else [lock_of("t1"), lock_of("t2")]
    w.check(edit(before, drop=[*_index_drop(state, source), t("t1"), t("t2"), *locks]))


def test_delete_all_keeps_every_lock_with_bz3(world: Callable[..., World]) -> None:
    w = world("reference+BZ-3")
    source = _bulk_world(w, S)
    before = w.snap()
    assert w.broker.delete_all_tasks(Q, S) == 2
    w.check(edit(before, drop=[source, t("t1"), t("t2")]))


def test_delete_all_of_one_group_keeps_the_other_groups(world: Callable[..., World]) -> None:
    w = world()
    w.task("t1", AG, group="g1")
    w.task("t2", AG, group="g2")
    before = w.snap()
    assert w.broker.delete_all_tasks(Q, AG, "g1") == 1
    w.check(edit(before, drop=[t("t1"), keys.group(Q, "g1")],
                 put=[less(before, keys.groups(Q), "g1")]))


def test_delete_all_of_an_empty_index_is_zero(world: Callable[..., World]) -> None:
    w = world()
    w.task("x", S)
    before = w.snap()
    assert w.broker.delete_all_tasks(Q, R) == 0
    w.check(before)


# --- archive_all (T33–T35) -----------------------------------------------------------------------------
@pytest.mark.parametrize("state", [P, S, R, AG])
def test_archive_all_reference(world: Callable[..., World], state: TaskState) -> None:
    w = world()
    source = _bulk_world(w, state)
    before = w.snap()
    assert w.broker.archive_all_tasks(Q, state, "g" if state is AG else None) == 2
    w.check(edit(before, drop=_index_drop(state, source),
                 put=[zset(keys.archived(Q), ("other", NOW), ("t1", NOW), ("t2", NOW)),
                      rehash(before, t("t1"), state="archived"),
                      rehash(before, t("t2"), state="archived")]))


@pytest.mark.parametrize("state", [P, S, R, AG])
def test_archive_all_asynq_makes_stubs_of_dangling_ids(world: Callable[..., World],
                                                       state: TaskState) -> None:
    w = world(ASYNQ)
    source = _bulk_world(w, state)
    before = w.snap()
    assert w.broker.archive_all_tasks(Q, state, "g" if state is AG else None) == 3
    w.check(edit(before, drop=_index_drop(state, source),
                 put=[zset(keys.archived(Q), ("gone", NOW), ("other", NOW), ("t1", NOW),
                           ("t2", NOW)),
                      rehash(before, t("t1"), state="archived"),
                      rehash(before, t("t2"), state="archived"), stub(t("gone"), "archived")]))


def test_archive_all_reference_trims_old_entries_first_then_new_ones(
        world: Callable[..., World]) -> None:
    w = world("reference", Policy(max_archive_size=2))
    w.raw("a0", AR, score=NOW - 10, lock=True)
    for i in (1, 2, 3):
        w.task(f"p{i}", P)
    before = w.snap()
    assert w.broker.archive_all_tasks(Q, P) == 3
    # a0 goes first (not new); then the lowest-ranked new id (p1) to get down to 2.
    w.check(edit(before, drop=[t("a0"), lock_of("a0"), t("p1"), keys.pending(Q)],
                 put=[zset(keys.archived(Q), ("p2", NOW), ("p3", NOW)),
                      rehash(before, t("p2"), state="archived"),
                      rehash(before, t("p3"), state="archived")]))


def test_archive_all_asynq_trim_leaves_zombies(world: Callable[..., World]) -> None:
    w = world(ASYNQ, replace(ASYNQ_POLICY, max_archive_size=3))  # keeps 2
    w.raw("a0", AR, score=NOW - 10, lock=True)
    for i in (1, 2, 3):
        w.task(f"p{i}", P)
    before = w.snap()
    assert w.broker.archive_all_tasks(Q, P) == 3
    w.check(edit(before, drop=[keys.pending(Q)],
                 put=[zset(keys.archived(Q), ("p2", NOW), ("p3", NOW)),
                      *(rehash(before, t(f"p{i}"), state="archived") for i in (1, 2, 3))]))


# --- run_all (T31–T32) -----------------------------------------------------------------------------------
@pytest.mark.parametrize("state", [S, R, AR, AG])
@pytest.mark.parametrize("variant", ["reference", ASYNQ])
def test_run_all(world: Callable[..., World], state: TaskState, variant: str) -> None:
    w = world(variant)
    source = _bulk_world(w, state)
    w.task("p0", P)
    before = w.snap()
    # BZ-17: the dangling id becomes a stub {state: pending}
    stubs = expectation(variant, {None: False, Quirk.HSET_ON_MISSING_HASH: True})
    count = w.broker.run_all_tasks(Q, state, "g" if state is AG else None)
    assert count == (3 if stubs else 2)
    # Taken in (score, id) order — gone, t1, t2 — and each LPUSHed: p0 stays next in line.
    order = ("t2", "t1", "gone") if stubs else ("t2", "t1")
    put = [lst(keys.pending(Q), *order, "p0"), rehash(before, t("t1"), state="pending"),
           rehash(before, t("t2"), state="pending")]
    if stubs:
        put.append(stub(t("gone"), "pending"))
    w.check(edit(before, drop=_index_drop(state, source), put=put))


# --- remove_queue (T40–T41) -------------------------------------------------------------------------------
GLOBBY = "q*[x]?"  # SCAN MATCH must treat these literally
NEIGHBOUR = "qax!"  # matched by the unescaped pattern asynq:{q*[x]?}:*


def _full_queue(w: World) -> None:
    """A paused queue with every kind of key but active tasks: tasks in every state, a group,
    an aggregation set, a zombie, counters and a lock without a live owner."""
    w.extras()
    w.task("r1", R)
    w.task("a1", AR)
    w.task("c1", C)
    w.zombie("zombie")
    w.task("p1", P, lock=True)
    w.task("s1", S)
    w.task("g1", AG, group="g", lock=True)
    w.raw("g2", AG, group="g", set_id="set1")
    w.broker.pause(w.q)


@pytest.mark.parametrize("force", [True, False])
def test_remove_queue_reference_deletes_every_key(world: Callable[..., World], force: bool) -> None:
    w = world(queue=GLOBBY)
    neighbour = world(queue=NEIGHBOUR)
    _full_queue(neighbour)
    neighbour_before = neighbour.snap()
    if force:
        _full_queue(w)
    else:
        w.extras()  # no tasks: paused, counters and a stale lock only
        w.broker.pause(GLOBBY)
    assert len(w.snap().entries) > 3
    w.broker.remove_queue(GLOBBY, force=force)
    w.check(KeyspaceSnapshot(GLOBBY, w.now_ms, {}, registered=False))
    neighbour.check(neighbour_before)
    assert w.broker.queues() == {NEIGHBOUR}


def test_remove_queue_deletes_thousands_of_keys(world: Callable[..., World]) -> None:
    # More keys than one DEL of the script takes (it deletes them 1000 at a time).
    w = world()
    w.task("x", P)
    pipe = w.r.pipeline(transaction=False)
    for i in range(2500):
        pipe.hset(keys.task(Q, f"s{i}"), mapping={"msg": w.broker.encode(w.msg(f"s{i}")),
                                                  "state": S.value})
        pipe.zadd(keys.scheduled(Q), {f"s{i}": NOW})
    pipe.execute()
    assert len(w.snap().entries) > 2500
    w.broker.remove_queue(Q, force=True)
    w.check(KeyspaceSnapshot(Q, w.now_ms, {}, registered=False))


@pytest.mark.parametrize("content", ["pending", "active", "completed", "group", "set", "zombie"])
def test_remove_queue_reference_refuses_any_task(world: Callable[..., World], content: str) -> None:
    w = world()
    w.extras()
    if content == "set":
        w.raw("x", AG, group="g", set_id="s")
    elif content == "zombie":
        w.zombie("x")
    else:
        w.task("x", {"pending": P, "active": A, "completed": C, "group": AG}[content], group="g")
    w.broker.pause(Q)
    before = w.snap()
    with pytest.raises(QueueNotEmptyError):
        w.broker.remove_queue(Q)
    w.check(before)


@pytest.mark.parametrize("variant", ["reference", ASYNQ])
def test_remove_queue_force_refuses_active_tasks(world: Callable[..., World], variant: str) -> None:
    w = world(variant)
    w.task("x", A)
    w.task("y", P)
    before = w.snap()
    with pytest.raises(TaskActiveError):
        w.broker.remove_queue(Q, force=True)
    w.check(before)


def test_remove_queue_asynq_force_leaves_the_rest(world: Callable[..., World]) -> None:
    w = world(ASYNQ)
    _full_queue(w)
    before = w.snap()
    w.broker.remove_queue(Q, force=True)
    # BZ-12: only the five task indexes (and lease) and their ids' hashes go.
    indexes = [keys.pending(Q), keys.scheduled(Q), keys.retry(Q), keys.archived(Q)]
    w.check(edit(before, drop=[*indexes, t("p1"), t("s1"), t("r1"), t("a1")], registered=False))


def test_remove_queue_asynq_non_force_ignores_completed_and_groups(
        world: Callable[..., World]) -> None:
    w = world(ASYNQ)
    w.task("c1", C)
    w.extras()
    w.task("g1", AG, group="g")
    w.raw("g2", AG, group="g", set_id="s")
    w.broker.pause(Q)
    before = w.snap()
    w.broker.remove_queue(Q)
    w.check(edit(before, registered=False))
    w.task("p1", P)
    with pytest.raises(QueueNotEmptyError):
        w.broker.remove_queue(Q)


def test_remove_queue_bad_input(world: Callable[..., World]) -> None:
    w = world()
    w.task("x", P)
    before = w.snap()
    with pytest.raises(ValueError, match=r"^queue "):
        w.broker.remove_queue(" ")
    with pytest.raises(TypeError, match=r"^force "):
        w.broker.remove_queue(Q, force="yes")  # type: ignore[arg-type]
    w.check(before)


def test_remove_queue_deletes_keys_written_after_the_scan(world: Callable[..., World],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks enqueued between the SCAN and the script are still deleted (found via indexes)."""
    w = world()
    w.task("s1", S)
    scan = w.broker._scan_queue

    def scan_then_enqueue(queue: str) -> list[str]:
        found = scan(queue)
        w.task("late", P, lock=True)
        w.task("late_g", AG, group="lg")
        return found

    monkeypatch.setattr(w.broker, "_scan_queue", scan_then_enqueue)
    w.broker.remove_queue(Q, force=True)
    w.check(KeyspaceSnapshot(Q, w.now_ms, {}, registered=False))


def test_fixture_locks_match_the_client_lock_and_deadline(world: Callable[..., World]) -> None:
    """The raw writer's lock is the one enqueue_unique takes: same name, same virtual deadline."""
    w, raw = world(), world(queue="other")
    w.task("o", P, lock=True)
    raw.lock("o")
    mine, theirs = w.snap().get(lock_of("o")), raw.snap().get(keys.unique("other", "email", b"o"))
    assert mine is not None and theirs is not None
    assert mine.expire_at_ms == theirs.expire_at_ms == NOW * 1000 + LOCK_TTL_MS
