"""Exhaustive small-scope replay: every sequence :mod:`model.explore` enumerates, run on a broker.

:func:`model.explore.explore` searches every action sequence of up to ``depth`` steps over a
small alphabet (one queue, ``tasks`` task ids, fixed arguments) breadth first and merges states
that are abstractly equal. Its search tree — each abstract state with the (parent, action) of
its first discovery — together with the alphabet defines a finite set of **edges**: every
action tried from every state at depth < ``depth``, refusals included. :func:`replay` runs each
of those edges on the reference model *and* on a real ``broker.Broker`` in lockstep (the model's
call and the broker's call with identical arguments and the identical virtual time) and after
every step checks that

1. the broker's answer equals the model's (value, or the same refusal outcome);
2. the broker's :class:`~model.snapshot.KeyspaceSnapshot` equals the model's exactly;
3. the invariants I1–I14 (``model.invariants.check_all``, strict locks) hold on it.

So within the bound (``tasks`` ids, ``depth`` steps, the alphabet's arguments) this is a proof
that the broker agrees with the model on every sequence the exploration evaluates, not a sample.

**How it stays fast.** Replaying each edge from scratch would cost edges × depth calls. Instead
the tree is walked depth first with one broker: at each state its database is saved (DUMP of
every key, ``asynq:queues`` included) and restored before the next action whenever the previous
one wrote anything; the model side clones (:meth:`ReferenceModel.clone`, clock included) and the
broker's clock is set to the model's before every call. Whether a step wrote is known exactly:
on fakeredis from a canonical image of the whole database (read from ``FakeServer.dbs``), on a
real Redis from its write counter (``INFO persistence``: ``rdb_changes_since_last_save`` and
``rdb_saves``). A broker snapshot is a pure function of the database and the time, so on
fakeredis it is memoised by (image, now); on a real Redis a step that wrote nothing and moved
no time keeps its state's snapshot. ``shortcuts=False`` reads and checks a fresh snapshot after
every step instead (slower; the tests show both give the same verdict).

The walk goes level by level (every edge out of the states at depth d before any out of
depth d + 1), so the first mismatch has the shortest trace; it ends the replay.

Measured (2 tasks, depth 5: 87 066 edges, 3 634 states, every transition exercised OK):
fakeredis about 80 s of CPU in all, i.e. about 40 s of wall time with ``jobs=2`` on two idle
cores (most of it is fakeredis running Lua); a private real Redis 7.0 about 47 s of client CPU,
100 s of wall time on a busy machine. Depth 6 means 228 942 edges (3 634 states × 63 actions).

>>> report = replay(tasks=1, depth=1)  # the 45 actions of the 1-task alphabet, from empty
>>> report.edges, report.states, report.mismatch
(45, 7, None)
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from broker import Broker
from broker.scripting import encode_deadline, read_deadlines
from broker.variants import variant as lookup_variant
from harness.fakeserver import database, memory_image, new_client
from harness.machine import render_args
from model.api import KeyProtocol
from model.clock import VirtualClock
from model.errors import KeysimError, ScriptError
from model.explore import QUEUE, Action, abstract_state, alphabet, explore, explore_policy
from model.invariants import check_all
from model.policy import Policy
from model.reference import ReferenceModel
from model.snapshot import KeyspaceSnapshot
from model.transitions import TRANSITIONS, Outcome

#: The operations of ``model.api.KeyProtocol`` (observation excluded): an action's calls of
#: these run on the model and on the broker.
OPERATIONS = frozenset(name for name in vars(KeyProtocol)
                       if not name.startswith("_") and name not in ("snapshot", "queues"))


# --- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mismatch:
    """The broker disagreed with the model after the last step of ``trace``.

    ``kind`` is ``answer`` (different return value or refusal), ``keyspace`` (snapshots
    differ) or an invariant id (``I1``…``I14``); ``detail`` shows the answers, the keyspace
    diff (model vs broker) and/or the violations.
    """

    kind: str
    trace: tuple[str, ...]
    message: str
    detail: str

    def format(self) -> str:
        """Kind, message, the trace one step per line, then the detail."""
        steps = "\n".join(f"  {i}. {label}" for i, label in enumerate(self.trace, 1))
        return (f"MISMATCH [{self.kind}] {self.message}\n"
                f"shortest trace ({len(self.trace)} steps):\n{steps}\n{self.detail}")


@dataclass
class ReplayReport:
    """What :func:`replay` ran and found. ``ok``: no mismatch and every transition of the table
    was exercised with outcome OK on the broker."""

    tasks: int
    depth: int
    backend: str
    variant: str
    #: Abstract states of the exploration (its search tree has this many nodes).
    states_explored: int = 0
    #: Edges (state, action) replayed on the broker, and states they reached (tree nodes).
    edges: int = 0
    states: int = 0
    expanded: int = 0
    snapshots: int = 0
    restores: int = 0
    #: The first mismatch found; the walk is breadth first, so no shorter one exists.
    mismatch: Mismatch | None = None
    fired: dict[str, Counter[Outcome]] = field(default_factory=dict)
    steps: Counter[str] = field(default_factory=Counter)
    explore_seconds: float = 0.0
    seconds: float = 0.0
    #: CPU time of the replay, summed over processes (wall time suffers on a busy machine).
    cpu_seconds: float = 0.0
    jobs: int = 1

    @property
    def steps_per_s(self) -> float:
        """Edges replayed per second of replay (the exploration excluded)."""
        return self.edges / self.seconds if self.seconds > 0 else 0.0

    @property
    def never_exercised(self) -> list[str]:
        """Transitions never exercised with outcome OK, in table order."""
        return [n for n in TRANSITIONS if not self.fired.get(n, Counter())[Outcome.OK]]

    @property
    def pairs(self) -> int:
        """Distinct (transition, outcome) pairs exercised."""
        return sum(1 for c in self.fired.values() for n in c.values() if n)

    @property
    def ok(self) -> bool:
        return self.mismatch is None and not self.never_exercised

    def merge(self, other: ReplayReport) -> None:
        """Add the counts of a report of another part of the same tree."""
        for name in ("edges", "states", "expanded", "snapshots", "restores", "cpu_seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name, counts in other.fired.items():
            self.fired.setdefault(name, Counter()).update(counts)
        self.steps.update(other.steps)
        if other.mismatch is not None and (
                self.mismatch is None or len(other.mismatch.trace) < len(self.mismatch.trace)):
            self.mismatch = other.mismatch

    def format(self) -> str:
        """A human-readable report: totals, the transitions × outcomes table, the verdict."""
        per_step = 1000 * self.seconds / self.edges if self.edges else 0.0
        lines = [
            f"replay: variant {self.variant} on {self.backend}, {self.tasks} task(s), depth "
            f"{self.depth}, {self.jobs} job(s)",
            f"exploration: {self.states_explored} abstract states ({self.explore_seconds:.1f} s)",
            f"replayed: {self.edges} edges, {self.states} states covered, {self.expanded} "
            f"expanded; {self.snapshots} broker snapshots read, {self.restores} restores",
            f"time: {self.seconds:.1f} s ({self.cpu_seconds:.1f} s CPU), "
            f"{self.steps_per_s:.0f} steps/s ({per_step:.2f} ms/step)",
            "time steps taken: " + (", ".join(f"{k} x{v}" for k, v in self.steps.items())
                                    or "none"),
            f"transitions x outcomes exercised: {self.pairs}",
            "",
            *self._table(),
            "",
            "never exercised (OK): " + (", ".join(self.never_exercised) or "none"),
        ]
        if self.mismatch is None:
            lines.append("mismatches: none — broker and model agree on every replayed edge")
        else:
            lines.append("mismatch found; the replay stopped there (nothing shorter exists):")
            lines.append(self.mismatch.format())
        return "\n".join(lines)

    def _table(self) -> list[str]:
        outcomes = [o for o in Outcome if any(c[o] for c in self.fired.values())]
        width = max(len(n) for n in TRANSITIONS)
        rows = [f"{'transition':<{width}}  " + "  ".join(f"{o.value:>9}" for o in outcomes)]
        for name in TRANSITIONS:
            counts = self.fired.get(name, Counter())
            rows.append(f"{name:<{width}}  " + "  ".join(f"{counts[o]:>9}" for o in outcomes))
        return rows


class ReplayDesync(RuntimeError):
    """The replay did not reach the state the exploration recorded (a bug of the replay)."""


# --- lockstep --------------------------------------------------------------------------------------

Answer = tuple[str, Any]


def _attempt(method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
             ) -> tuple[Answer, KeysimError | None]:
    """(("ok", value), None) or ((outcome, None), the refusal); a script failure is its own kind."""
    try:
        return ("ok", method(*args, **kwargs)), None
    except ScriptError as err:
        return ("script_error", str(err).split(":")[0]), err
    except KeysimError as err:
        return (err.outcome.value, None), err


@dataclass(frozen=True)
class _Call:
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    model: Answer
    broker: Answer

    def render(self) -> str:
        return (f"  {self.name}{render_args(self.args, self.kwargs)}\n"
                f"    model : {self.model!r}\n"
                f"    broker: {self.broker!r}")


class _Lockstep:
    """Stands in for the model inside an :class:`~model.explore.Action`.

    Every protocol operation the action calls runs on the broker (at the model's virtual time)
    and on the model with the same arguments; both answers are recorded and the model's is
    returned (or its refusal raised). Anything else (``store``, ``now_s``, ``clock``) is the
    model's.
    """

    def __init__(self, model: ReferenceModel, broker: Broker, clock: VirtualClock) -> None:
        self._model = model
        self._broker = broker
        self._clock = clock
        self.calls: list[_Call] = []

    def __getattr__(self, name: str) -> Any:
        if name not in OPERATIONS:
            return getattr(self._model, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self._clock.now_ns = self._model.clock.now_ns
            actual, _ = _attempt(getattr(self._broker, name), args, kwargs)
            expected, refusal = _attempt(getattr(self._model, name), args, kwargs)
            self.calls.append(_Call(name, args, kwargs, expected, actual))
            if refusal is not None:
                raise refusal
            return expected[1]
        return call

    def disagreements(self) -> list[_Call]:
        return [c for c in self.calls if c.model != c.broker]


# --- the broker's database: save, restore, has it changed? ------------------------------------------

#: A saved database: every key's DUMP payload and its virtual deadline (None: no TTL).
Dump = dict[bytes, tuple[bytes, int | None]]


def _dump(client: redis.Redis) -> Dump:
    names = list(client.scan_iter(count=1000))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.dump(name)
    payloads = pipe.execute()
    deadlines = read_deadlines(client, names)
    return {name: (payloads[i], deadlines[i]) for i, name in enumerate(names)}


def _put_back(pipe: Any, name: bytes, saved: tuple[bytes, int | None]) -> None:
    """RESTORE one key with its exact expiry (fakeredis lacks RESTORE ... ABSTTL), encoded
    afresh from the virtual deadline, so that save and restore never drift on a server whose
    expiry reads are a millisecond off (Redis 6.2)."""
    payload, deadline = saved
    pipe.restore(name, 0, payload, replace=True)
    if deadline is not None:
        pipe.pexpireat(name, encode_deadline(deadline))


def _restore_all(client: redis.Redis, dump: Dump) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.flushdb()
    for name, saved in dump.items():
        _put_back(pipe, name, saved)
    pipe.execute()


class _Mark:
    """The saved state of the database at one node of the tree."""

    def __init__(self, dump: Dump, image: dict[bytes, Hashable] | None,
                 counter: tuple[int, int] | None) -> None:
        self.dump = dump
        self.image = image
        self.counter = counter


class _Store:
    """A Redis database the replay owns: save, detect writes, restore, memoise snapshots."""

    client: redis.Redis

    def mark(self) -> _Mark:
        raise NotImplementedError

    def probe(self, mark: _Mark | None) -> tuple[bool, dict[bytes, Hashable] | None]:
        """Whether the database differs from ``mark`` (True without one), and its image
        (every key's expiry and value as plain data) when the store can read one cheaply."""
        raise NotImplementedError

    def restore(self, mark: _Mark) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        self.client.flushdb()


class _FakeStore(_Store):
    """fakeredis: a private FakeServer whose database is read directly for the image.

    The database is read through :mod:`harness.fakeserver` (key → item); reading it costs
    microseconds where a DUMP of every key costs a round trip per key. Only the image is read
    this way — saving and restoring go through DUMP/RESTORE like on a real Redis.
    """

    def __init__(self) -> None:
        # tens of thousands of script calls: compiled once, commands handed over as words
        self.client = new_client()
        self._db = database(self.client)  # None: another fakeredis layout, no image

    def _items(self) -> dict[bytes, Hashable] | None:
        return None if self._db is None else memory_image(self._db)

    def mark(self) -> _Mark:
        return _Mark(_dump(self.client), self._items(), None)

    def probe(self, mark: _Mark | None) -> tuple[bool, dict[bytes, Hashable] | None]:
        items = self._items()
        return mark is None or items is None or items != mark.image, items

    def restore(self, mark: _Mark) -> None:
        """Put back only what differs (usually one or two keys)."""
        saved, now = mark.image, self._items()
        if saved is None or now is None:
            _restore_all(self.client, mark.dump)
            return
        pipe = self.client.pipeline(transaction=False)
        extra = [name for name in now if name not in saved]
        if extra:
            pipe.delete(*extra)
        for name, value in saved.items():
            if now.get(name) != value:
                _put_back(pipe, name, mark.dump[name])
        pipe.execute()
        if self._items() != saved:
            raise ReplayDesync("fakeredis restore did not reproduce the saved database")


class _RedisStore(_Store):
    """A real Redis database (flushed first): writes detected by the server's write counter."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.client.flushdb()

    def _counter(self) -> tuple[int, int]:
        info = self.client.info("persistence")
        # rdb_saves tells a counter reset by a save apart from "no write" (Redis >= 7.0).
        return int(info["rdb_changes_since_last_save"]), int(info.get("rdb_saves", -1))

    def mark(self) -> _Mark:
        return _Mark(_dump(self.client), None, self._counter())

    def probe(self, mark: _Mark | None) -> tuple[bool, dict[bytes, Hashable] | None]:
        return mark is None or self._counter() != mark.counter, None

    def restore(self, mark: _Mark) -> None:
        _restore_all(self.client, mark.dump)
        mark.counter = self._counter()


def check_backend(backend: str) -> str:
    """``backend`` if it names one (fakeredis, server, a redis://, rediss:// or unix:// URL)."""
    if backend in ("fakeredis", "server") or (
            isinstance(backend, str) and backend.startswith(("redis://", "rediss://", "unix://"))):
        return backend
    raise ValueError(f"backend must be fakeredis, server or a redis:// URL, got {backend!r}")


@contextlib.contextmanager
def open_store(backend: str) -> Iterator[_Store]:
    """A fresh database on ``backend``: ``fakeredis``, ``server`` (a private real Redis,
    stopped afterwards) or a ``redis://`` URL (that database is flushed)."""
    if backend == "fakeredis":
        yield _FakeStore()
        return
    if backend == "server":
        from broker.servers import start_server

        with start_server() as server:
            client = redis.Redis.from_url(server.url)
            try:
                yield _RedisStore(client)
            finally:
                client.close()
        return
    check_backend(backend)
    client = redis.Redis.from_url(backend)
    try:
        yield _RedisStore(client)
    finally:
        client.flushdb()
        client.close()


# --- the search tree -------------------------------------------------------------------------------


class _Node:
    """One abstract state of the exploration, with the children it was first discovered from."""

    __slots__ = ("children", "depth", "key", "label", "parent", "size")

    def __init__(self, key: Hashable, depth: int, parent: _Node | None, label: str) -> None:
        self.key = key
        self.depth = depth
        self.parent = parent
        self.label = label
        self.children: dict[str, _Node] = {}
        self.size = 0  # nodes of the subtree that get expanded

    def trace(self) -> tuple[str, ...]:
        labels: list[str] = []
        node: _Node | None = self
        while node is not None and node.parent is not None:
            labels.append(node.label)
            node = node.parent
        return tuple(reversed(labels))


def _tree(parents: dict[Hashable, tuple[Hashable, str] | None], depth: int) -> _Node:
    """The exploration's tree from its parent map (in discovery order, so parents come first)."""
    nodes: dict[Hashable, _Node] = {}
    root: _Node | None = None
    for key, link in parents.items():
        if link is None:
            root = nodes[key] = _Node(key, 0, None, "")
            continue
        parent = nodes[link[0]]
        child = nodes[key] = _Node(key, parent.depth + 1, parent, link[1])
        parent.children[link[1]] = child
    if root is None:
        raise ReplayDesync("the exploration recorded no initial state")
    for node in reversed(list(nodes.values())):
        node.size += node.depth < depth
        if node.parent is not None:
            node.parent.size += node.size
    return root


# --- the walk --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Setup:
    """Everything a walker needs; shared with worker processes by fork."""

    tasks: int
    depth: int
    variant: str
    backend: str
    policy: Policy
    shortcuts: bool
    root: _Node
    actions: tuple[Action, ...]


#: A state waiting for its edges: tree node, model, checked broker snapshot, saved database.
_Entry = tuple[_Node, ReferenceModel, KeyspaceSnapshot, _Mark]


class _Walker:
    """Walks (part of) the tree on one broker, level by level, checking every edge."""

    def __init__(self, setup: _Setup, store: _Store, report: ReplayReport) -> None:
        self.setup = setup
        self.store = store
        self.report = report
        self.clock = VirtualClock()
        self.broker = Broker(store.client, setup.variant, setup.policy, self.clock)
        self.at: _Mark | None = None  # the saved state the database holds right now, if any
        self.memo: dict[tuple[frozenset[tuple[bytes, Hashable]], int],
                        tuple[KeyspaceSnapshot, Mismatch | None]] = {}

    # one step ----------------------------------------------------------------------------------
    def step(self, action: Action, model: ReferenceModel, trace: tuple[str, ...],
             before: KeyspaceSnapshot, mark: _Mark | None
             ) -> tuple[KeyspaceSnapshot | Mismatch, Outcome, bool]:
        """Run ``action`` on ``model`` (changed in place) and on the broker, then check.

        Returns the broker's checked snapshot (or the :class:`Mismatch`), the outcome and
        whether the broker wrote (compared with ``mark``; True without one).
        """
        proxy = _Lockstep(model, self.broker, self.clock)
        try:
            outcome = action.run(cast(ReferenceModel, proxy))
        except KeysimError as refusal:
            outcome = refusal.outcome
        self.clock.now_ns = model.clock.now_ns
        wrote, items = self.store.probe(mark)
        here = (*trace, action.label)
        wrong = proxy.disagreements()
        if wrong:
            detail = "answers:\n" + "\n".join(c.render() for c in wrong)
            return Mismatch("answer", here, f"{wrong[0].name} answered differently", detail), \
                outcome, wrote
        actual, problem = self._observe(before, wrote, items)
        expected = model.snapshot(QUEUE)
        if expected != actual:
            return Mismatch("keyspace", here, "the broker's keyspace differs from the model's",
                            "keyspace diff (model vs broker):\n"
                            + expected.diff(actual, "model", "broker")), outcome, wrote
        if problem is not None:
            return Mismatch(problem.kind, here, problem.message, problem.detail), outcome, wrote
        return actual, outcome, wrote

    def _observe(self, before: KeyspaceSnapshot, wrote: bool,
                 items: dict[bytes, Hashable] | None) -> tuple[KeyspaceSnapshot, Mismatch | None]:
        """The broker's snapshot now and its invariant problem, if any (memoised when sound:
        a snapshot is a function of the database and the time)."""
        now_ms = self.clock.now_ns // 1_000_000
        shortcuts = self.setup.shortcuts
        if shortcuts and not wrote and now_ms == before.now_ms:
            return before, None  # nothing written, no time passed: the checked state stands
        key = (frozenset(items.items()), now_ms) if shortcuts and items is not None else None
        if key is not None:
            hit = self.memo.get(key)
            if hit is not None:
                return hit
        self.report.snapshots += 1
        snap = self.broker.snapshot(QUEUE)
        violations = check_all(snap, self.setup.policy, strict_locks=True)
        problem = None
        if violations:
            problem = Mismatch(violations[0].invariant, (), violations[0].message,
                               "violations:\n" + "\n".join(f"  {v}" for v in violations))
        if key is not None:
            self.memo[key] = (snap, problem)
        return snap, problem

    def _count(self, action: Action, outcome: Outcome) -> None:
        self.report.edges += 1
        if action.transition is None:
            self.report.steps[action.label.split(":")[0] + ")"] += 1
        else:
            self.report.fired[action.transition][outcome] += 1

    # the walk ----------------------------------------------------------------------------------
    def walk(self, level: list[_Entry], stop: int) -> list[_Node]:
        """Replay every edge out of the states of ``level``, then out of their children, ...

        Breadth first, so the first mismatch has the shortest trace and ends the walk.
        Children at depth ``stop`` that have edges of their own are not entered but returned
        (work for other processes).
        """
        left: list[_Node] = []
        level = [entry for entry in level if entry[0].depth < self.setup.depth]
        while level and self.report.mismatch is None:
            below: list[_Entry] = []
            for entry in level:
                below += self._expand(entry, stop, left)
                if self.report.mismatch is not None:
                    break
            level = below
        return left

    def _expand(self, entry: _Entry, stop: int, left: list[_Node]) -> list[_Entry]:
        """Every edge out of one state; returns the children to expand next."""
        node, model, snap, mark = entry
        if self.at is not mark:
            self.store.restore(mark)
            self.report.restores += 1
        self.report.expanded += 1
        trace = node.trace()
        below: list[_Entry] = []
        dirty = False
        for action in self.setup.actions:
            if dirty:
                self.store.restore(mark)
                self.report.restores += 1
            work = model.clone()
            after, outcome, dirty = self.step(action, work, trace, snap, mark)
            self._count(action, outcome)
            if isinstance(after, Mismatch):
                self.report.mismatch = after
                self.at = None
                return []
            child = node.children.get(action.label)
            if child is None:
                continue
            self.report.states += 1
            if abstract_state(work) != child.key:
                raise ReplayDesync(f"replaying {child.trace()} did not reach the explored state")
            if child.depth >= self.setup.depth:
                continue  # a leaf: reached and checked, no edges of its own
            if child.depth >= stop:
                left.append(child)
            else:
                below.append((child, work, after, self.store.mark()))
        self.at = None if dirty else mark
        return below

    def enter(self, node: _Node) -> _Entry:
        """Empty the database, then replay the path to ``node`` (checked, not counted)."""
        self.store.reset()
        model = ReferenceModel(self.setup.policy)
        self.clock.now_ns = model.clock.now_ns
        snap = self.broker.snapshot(QUEUE)
        if snap != model.snapshot(QUEUE):
            raise ReplayDesync("the broker's database is not empty at the start")
        by_label = {a.label: a for a in self.setup.actions}
        for label in node.trace():
            after, _, _ = self.step(by_label[label], model, (), snap, None)
            if isinstance(after, Mismatch):  # its owner walked this edge and passed it
                raise ReplayDesync(f"the path to {node.trace()} replays differently: "
                                   f"{after.message}")
            snap = after
        self.at = self.store.mark()
        return node, model, snap, self.at


# --- entry points ----------------------------------------------------------------------------------


def replay(tasks: int = 2, depth: int = 5, *, backend: str = "fakeredis",
           variant: str = "reference", max_archive_size: int = 1, shortcuts: bool = True,
           jobs: int = 1) -> ReplayReport:
    """Replay every edge :func:`model.explore.explore` evaluates on a broker; see the module
    docstring.

    ``tasks`` (>= 1) and ``depth`` (>= 0) bound the exploration as in ``keysim explore``;
    ``backend``: ``fakeredis``, ``server`` or a ``redis://`` URL (flushed); ``variant``: a broker
    variant name (``reference``, ``reference+BZ-9``, ...); ``max_archive_size``: the explore
    policy's cap; ``shortcuts=False`` reads a fresh snapshot after every step; ``jobs`` > 1
    splits the tree between forked worker processes (fakeredis only: each owns a FakeServer).
    """
    _check_int("tasks", tasks, 1)
    _check_int("depth", depth, 0)
    _check_int("max_archive_size", max_archive_size, 1)
    _check_int("jobs", jobs, 1)
    check_backend(backend)
    lookup_variant(variant)  # an unknown name fails here, before anything runs
    if jobs > 1 and backend != "fakeredis":
        raise ValueError(f"jobs > 1 needs backend 'fakeredis', got {backend!r}")
    policy = explore_policy(max_archive_size)
    started = time.perf_counter()
    explored = explore(tasks, depth, policy, check=lambda snapshot, policy: [])
    report = ReplayReport(tasks, depth, backend, variant, states_explored=explored.states,
                          explore_seconds=time.perf_counter() - started, jobs=jobs)
    report.fired = {name: Counter() for name in TRANSITIONS}
    setup = _Setup(tasks, depth, variant, backend, policy, shortcuts,
                   _tree(explored.parents, depth), tuple(alphabet(tasks, policy)))
    started = time.perf_counter()
    if jobs == 1:
        _run_all(setup, report)
    else:
        _run_parallel(setup, report, jobs)
    report.seconds = time.perf_counter() - started
    return report


def _check_int(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _run_all(setup: _Setup, report: ReplayReport) -> None:
    started = time.process_time()
    with open_store(setup.backend) as store:
        walker = _Walker(setup, store, report)
        report.states += 1  # the initial state
        walker.walk([walker.enter(setup.root)], stop=setup.depth)
    report.cpu_seconds += time.process_time() - started


#: Workers of a parallel run read this (inherited by fork, never pickled).
_SHARED: list[tuple[_Setup, list[list[_Node]]]] = []


def _run_parallel(setup: _Setup, report: ReplayReport, jobs: int) -> None:
    """The top of the tree here, the subtrees below ``split`` in ``jobs`` forked workers."""
    split = _split_depth(setup.root, jobs)
    started = time.process_time()
    with open_store(setup.backend) as store:
        walker = _Walker(setup, store, report)
        report.states += 1  # the initial state
        items = walker.walk([walker.enter(setup.root)], stop=split)
    report.cpu_seconds += time.process_time() - started
    if report.mismatch is not None:
        return  # found above the split: nothing below can be shorter
    shares: list[list[_Node]] = [[] for _ in range(jobs)]
    loads = [0] * jobs
    for node in sorted(items, key=lambda n: -n.size):  # largest first onto the lightest share
        i = loads.index(min(loads))
        shares[i].append(node)
        loads[i] += node.size
    ctx = multiprocessing.get_context("fork")
    _SHARED[:] = [(setup, shares)]
    try:
        with ctx.Pool(jobs) as pool:
            parts = pool.map(_work, range(jobs))
    finally:
        _SHARED.clear()
    for part in parts:
        report.merge(part)


def _split_depth(root: _Node, jobs: int) -> int:
    """The shallowest depth with enough subtrees to balance ``jobs`` workers (at most 3)."""
    level, depth = [root], 0
    while depth < 3 and len(level) < 8 * jobs:
        level = [c for n in level for c in n.children.values()]
        depth += 1
    return max(depth, 1)


def _work(index: int) -> ReplayReport:
    setup, shares = _SHARED[0]
    started = time.process_time()
    report = ReplayReport(setup.tasks, setup.depth, setup.backend, setup.variant)
    report.fired = {name: Counter() for name in TRANSITIONS}
    with open_store(setup.backend) as store:
        walker = _Walker(setup, store, report)
        walker.walk([walker.enter(node) for node in shares[index]], stop=setup.depth)
    report.cpu_seconds = time.process_time() - started
    return report


def default_jobs(backend: str) -> int:
    """Worker processes for ``backend``: the CPU count (at most 4) on fakeredis, else 1."""
    return max(1, min(4, os.cpu_count() or 1)) if backend == "fakeredis" else 1


__all__ = ["OPERATIONS", "Mismatch", "ReplayDesync", "ReplayReport", "check_backend",
           "default_jobs", "open_store", "replay"]
