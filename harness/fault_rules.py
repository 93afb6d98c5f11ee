"""Faults as actions of the stateful machine: failover, lost connections, clock skew, a stale
published-queues cache and scripts aborted part-way (``MachineConfig.fault_rules``).

Each fault is one mixin of :class:`~harness.machine.KeyMachine` that adds its rules and keeps
its own local state, so another machine built on ``KeyMachine`` reuses it by listing it among
its bases (:func:`fault_mixins`). Every fault records the outcomes it produced in
:data:`harness.machine.COVERAGE` as ``("fault:<name>", outcome)`` pairs; a check that asks for
a fault also requires its outcomes (:func:`fault_pairs`), so a fault that never bit is
INCOMPLETE, never a silent pass. What each fault does and which outcomes it accepts:
docs/faults.md.

>>> sorted(FAULTS)
['abort', 'cache', 'connloss', 'failover', 'skew']
>>> ("fault:failover", "lost_dequeue") in fault_pairs(frozenset({"failover"}))
True
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from broker.scripting import encode_deadline, read_deadlines
from harness.leaks import Disagreement
from harness.machine import COVERAGE, ENDINGS, QUEUES, KeyMachine, _attempt, picks, queues
from model import keys
from model.clock import NS, VirtualClock
from model.endings import LEASE_EXPIRED, Ending, Finish
from model.invariants import Family, classify
from model.message import TaskMessage
from model.reference import ReferenceModel
from model.transitions import Outcome


def record(fault: str, outcome: str) -> None:
    """Count one outcome of ``fault`` in the machine's coverage."""
    COVERAGE[(f"fault:{fault}", outcome)] += 1


#: Endings a live worker reports (a crash reports nothing).
REPORTS = tuple(ENDINGS)


# --- keyspace checkpoints (failover, abort) ---------------------------------------------------
#: A keyspace at one instant: key -> (DUMP payload, virtual deadline in ms or None).
Dump = dict[bytes, tuple[bytes, int | None]]


def capture(client: Any, pattern: str = "asynq:*") -> Dump:
    """Every key matching ``pattern`` as DUMP payloads with their virtual deadlines (one
    pipeline after a SCAN, then one script: exact on Redis 6.2 too, which has no PEXPIRETIME;
    the machine's database holds nothing else)."""
    names = sorted(client.scan_iter(match=pattern, count=1000))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.dump(name)
    payloads = pipe.execute()
    deadlines = read_deadlines(client, names)
    return {name: (payload, deadline)
            for name, payload, deadline in zip(names, payloads, deadlines, strict=True)
            if payload is not None}


def restore(client: Any, saved: Dump, pattern: str = "asynq:*") -> None:
    """Make the keys matching ``pattern`` exactly ``saved``: every other one deleted, each
    saved one RESTOREd, then given its deadline in the virtual time base (PEXPIREAT)."""
    pipe = client.pipeline(transaction=True)
    gone = [k for k in client.scan_iter(match=pattern, count=1000) if k not in saved]
    if gone:
        pipe.delete(*gone)
    for name, (payload, deadline) in saved.items():
        pipe.restore(name, 0, payload, replace=True)
        if deadline is not None:
            pipe.pexpireat(name, encode_deadline(deadline))
    pipe.execute()


@dataclass(frozen=True)
class Checkpoint:
    """The keyspace and the model just before one operation (a consistent point: between two
    scripts, never inside one)."""

    operation: str
    dump: Dump
    model: ReferenceModel | None


# --- failover -------------------------------------------------------------------------------
#: Operations a failover may lose, grouped as its outcomes name them.
_FAILOVER_KINDS = {
    "client": {"enqueue", "enqueue_unique", "schedule", "schedule_unique", "add_to_group",
               "add_to_group_unique"},
    "dequeue": {"dequeue"},
    "finish": {"done", "mark_as_complete", "retry", "archive", "requeue"},
}
#: Failover outcomes a check with ``--faults failover`` must reach.
FAILOVER_OUTCOMES = ("lost_client", "lost_dequeue", "lost_finish", "lost_other",
                     "hand_not_active", "orphan_active")
#: Operations a failover may lose at most (the replica's lag, in scripts).
MAX_LOST = 3


class FailoverRule(KeyMachine):
    """Failover or restart: the keyspace (and the model with it) reverts to the point just
    before one of the last :data:`MAX_LOST` operations; the workers keep what they hold."""

    _checkpoints: list[Checkpoint]

    def both(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        self._keep_checkpoint(operation)
        return super().both(operation, *args, **kwargs)

    def _keep_checkpoint(self, operation: str) -> None:
        ring = self.__dict__.setdefault("_checkpoints", [])
        model = self.model.clone() if self.config.oracle else None
        ring.append(Checkpoint(operation, capture(self.sut.client), model))
        del ring[:-MAX_LOST]

    @precondition(lambda self: bool(self.__dict__.get("_checkpoints")))
    @rule(lost=st.integers(1, MAX_LOST))
    def failover(self, lost: int) -> None:
        """A replica promoted (or Redis restarted from its last snapshot) lacks the last
        ``lost`` operations, whole: never half a script."""
        ring: list[Checkpoint] = self._checkpoints
        lost = min(lost, len(ring))
        point, gone = ring[-lost], ring[-lost:]
        del ring[-lost:]
        self.steps.append(f"failover(lost={[c.operation for c in gone]})")
        restore(self._behind_the_broker(), point.dump)
        if point.model is not None:
            twin = point.model.clone()
            twin.clock, twin.policy = self.clock, self.policy
            self.model = twin
        self._last_checked = None
        # An evicted id healed since may dangle again: judged as evicted until healed anew.
        self.evicted |= self.ever_evicted
        for checkpoint in gone:
            record("failover", f"lost_{_kind(checkpoint.operation)}")
        self._record_worker_view()

    def _record_worker_view(self) -> None:
        """What the workers now hold against what the keyspace says."""
        for queue in QUEUES:
            truth = self.truth(queue)
            active = set(truth.members(keys.active(queue)))
            held = {i for i, m in self.in_hand.items() if m.queue == queue}
            if held - active:  # their reports will be refused; the task runs again
                record("failover", "hand_not_active")
            if active - held - set(self.stale):  # finished, now active again: recovered later
                record("failover", "orphan_active")


def _kind(operation: str) -> str:
    return next((kind for kind, names in _FAILOVER_KINDS.items() if operation in names), "other")


# --- connection loss and the syncer ---------------------------------------------------------
@dataclass(frozen=True)
class SyncRequest:
    """A report the worker could not deliver, as Asynq's syncer keeps it: the same call,
    re-sent until the worker's lease deadline, then dropped."""

    msg: TaskMessage
    call: Finish
    deadline: int


#: Asynq's syncer re-sends its requests every 5 s.
SYNC_INTERVAL = 5
CONNLOSS_OUTCOMES = ("lost_request", "lost_reply", "resent_ok", "resent_refused",
                     "dropped_at_deadline", "recoverer_cut")


class ConnLossRule(KeyMachine):
    """The connection drops between two scripts of a composite: a worker's report (before
    Redis ran it, or after, its reply lost) goes to the syncer, which re-sends it later; the
    recoverer loses its connection after listing the expired leases."""

    _sync_queue: list[SyncRequest]

    @property
    def sync_queue(self) -> list[SyncRequest]:
        """The syncer's requests, oldest first."""
        queue: list[SyncRequest] = self.__dict__.setdefault("_sync_queue", [])
        return queue

    @precondition(lambda self: bool(self.in_hand))
    @rule(pick=picks, how=st.sampled_from(REPORTS), applied=st.booleans(),
          back=st.booleans())
    def lose_report(self, pick: int, how: str, applied: bool, back: bool = False) -> None:
        """A worker ends its task and the connection drops: before Redis ran the report, or
        after (``applied``: only the reply is lost). Either way the syncer keeps it; with
        ``back`` the connection is back at the syncer's next tick (5 s later)."""
        task_id = sorted(self.in_hand)[pick % len(self.in_hand)]
        msg = self.in_hand.pop(task_id)
        call = self.decided(msg, ENDINGS[how], "boom")
        lease = self.truth(msg.queue).get(keys.lease(msg.queue))
        deadline = int(dict(lease.zset()).get(task_id, self.clock.seconds)) \
            if lease is not None else self.clock.seconds
        self.steps.append(f"connection lost {'after' if applied else 'before'} "
                          f"{call.operation}({task_id})")
        if applied:
            self.both(call.operation, *call.args, **call.kwargs)
        self.sync_queue.append(SyncRequest(msg, call, deadline))
        record("connloss", "lost_reply" if applied else "lost_request")
        if back:
            self._advance(SYNC_INTERVAL)
            self.syncer()

    @precondition(lambda self: bool(self.__dict__.get("_sync_queue")))
    @rule(outage=st.booleans())
    def syncer(self, outage: bool = False) -> None:
        """Asynq's syncer: re-send every request whose deadline has not passed, drop the rest
        (their tasks stay active until the recoverer takes them). With ``outage`` the
        connection stayed down until just past the oldest request's deadline."""
        queue, self._sync_queue = self.sync_queue, []
        if outage:
            self._advance(max(0, queue[0].deadline + 1 - self.clock.seconds))
        for request in queue:
            if self.clock.seconds > request.deadline:
                self.steps.append(f"syncer drops {request.call.operation}({request.msg.id})")
                record("connloss", "dropped_at_deadline")
                continue
            with self._not_last():
                self.both(request.call.operation, *request.call.args, **request.call.kwargs)
            ok = self.step_ops[-1].outcome == Outcome.OK.value
            record("connloss", "resent_ok" if ok else "resent_refused")

    @rule(queue=queues, sent=st.integers(0, 2))
    def recoverer_cut(self, queue: str, sent: int) -> None:
        """The recoverer (at the next lease's cutoff, when one is ahead) lists the expired
        leases, ends the first ``sent`` of them, and loses its connection; the rest wait for
        its next pass."""
        self._land_on(queue, "lease", 0)  # at the first lease's cutoff, if any is due later
        cutoff = self.clock.seconds - self.policy.recover_skew
        with self._not_last():
            expired = self.both("list_lease_expired", queue, cutoff) or []
        for msg in expired[:sent]:
            call = self.decided(msg, Ending.FAILURE, LEASE_EXPIRED)
            self.both(call.operation, *call.args, **call.kwargs)
        if len(expired) > sent:
            self.steps.append(f"recoverer connection lost after {sent} of {len(expired)}")
            record("connloss", "recoverer_cut")


# --- clock skew -----------------------------------------------------------------------------
#: How far a process's clock may be off, in seconds (behind < 0 < ahead).
SKEWS = (-60, -15, 15, 60)
SKEW_OUTCOMES = ("finish_ahead", "finish_behind", "lease_short", "lease_long",
                 "report_on_redelivery", "report_refused")


@contextmanager
def skewed(clock: VirtualClock, seconds: int) -> Iterator[None]:
    """Within the block, ``clock`` reads ``seconds`` off (a process whose clock is behind or
    ahead); afterwards it reads exactly what it read before. The one place time goes back."""
    saved = clock.now_ns
    clock.now_ns = saved + seconds * NS
    try:
        yield
    finally:
        clock.now_ns = saved


class SkewRule(KeyMachine):
    """Processes whose clocks are off: a worker ends or takes a task by its own clock, and a
    worker whose clock is behind still believes in a lease the recoverer already took
    (spec §5.3) and reports after the task was delivered again."""

    def _violations(self, snap: Any) -> Any:
        """The invariants, with I13's bound on a daily counter's TTL widened by the largest
        skew ahead: a process ahead by s sets TTLs s seconds past the true now + stats_ttl."""
        policy = self.policy
        self.policy = replace(policy, stats_ttl=policy.stats_ttl + max(SKEWS))
        try:
            return super()._violations(snap)
        finally:
            self.policy = policy

    def _clamped(self, skew: int) -> int:
        """``skew``, or less ahead: Redis expires keys by its own clock, while the virtual-time
        emulation expires them by the caller's; a clock ahead past a TTL key's deadline would
        expire it early (which Redis never does), so it stops one second short of it."""
        if skew <= 0:
            return skew
        now_ms = self.clock.milliseconds
        deadlines = [e.expire_at_ms for q in QUEUES for e in self.truth(q)
                     if e.expire_at_ms is not None and e.expire_at_ms > now_ms]
        room = (min(deadlines) - now_ms - 1) // 1000 if deadlines else skew
        return max(0, min(skew, room))

    @precondition(lambda self: bool(self.in_hand))
    @rule(pick=picks, how=st.sampled_from(REPORTS), skew=st.sampled_from(SKEWS))
    def skewed_finish(self, pick: int, how: str, skew: int) -> None:
        """A worker whose clock is ``skew`` seconds off ends a task: retry times, retention
        ends and archive scores are its clock's (archived behind: BZ-16's self-trim)."""
        task_id = sorted(self.in_hand)[pick % len(self.in_hand)]
        msg = self.in_hand.pop(task_id)
        skew = self._clamped(skew)
        self.steps.append(f"skew({skew})")
        with skewed(self.clock, skew):
            self._process(msg, how)
        if skew:
            record("skew", "finish_ahead" if skew > 0 else "finish_behind")

    @rule(queue=queues, skew=st.sampled_from(SKEWS))
    def skewed_dequeue(self, queue: str, skew: int) -> None:
        """A worker whose clock is off takes a task: its lease ends ``skew`` seconds off."""
        skew = self._clamped(skew)
        self.steps.append(f"skew({skew})")
        with skewed(self.clock, skew):
            self.dequeue(queue)
        if skew and self.step_ops and self.step_ops[-1].outcome == Outcome.OK.value:
            record("skew", "lease_long" if skew > 0 else "lease_short")

    @precondition(lambda self: bool(self.in_hand))
    @rule(pick=picks, how=st.sampled_from(REPORTS))
    def redelivered_while_behind(self, pick: int, how: str) -> None:
        """The worker of a task in hand falls behind: its lease ends, the recoverer retries
        the task, the forwarder and another worker take it again; then the slow worker
        reports, believing its lease still valid (spec §5.3)."""
        task_id = sorted(self.in_hand)[pick % len(self.in_hand)]
        msg = self.in_hand.pop(task_id)
        queue = msg.queue
        self.steps.append(f"worker of {task_id} falls behind")
        with self._not_last():
            if self._land_on(queue, "lease", 1):
                self.both("recover", queue)
            if self._land_on(queue, "due", 0):
                self.both("forward_if_ready", queue)
            for _ in self.truth(queue).members(keys.pending(queue)):
                if task_id in self.in_hand:
                    break
                self.dequeue(queue)  # other workers take the tasks queued before it
        redelivered = task_id in self.in_hand
        self._process(msg, how)
        if not redelivered:
            record("skew", "report_refused")
        elif self.step_ops[-1].outcome == Outcome.OK.value:
            record("skew", "report_on_redelivery")  # it ended the other worker's run
        else:
            record("skew", "report_refused")


# --- the published-queues cache -------------------------------------------------------------
CACHE_OUTCOMES = ("remote_remove", "remote_remove_refused", "enqueued_after_remote_remove")


class CacheRule(KeyMachine):
    """Another process removes the queue: this client's cache of published queues (Asynq
    v0.25+, ``queuesPublished``) is not told, and the client enqueues again (spec BZ-13)."""

    @rule(queue=queues, force=st.booleans())
    def remove_queue_elsewhere(self, queue: str, force: bool) -> None:
        """RemoveQueue by another process (this client's cache unchanged), then this client
        enqueues a fresh task into the queue."""
        self.steps.append("(remove_queue by another process)")
        with self._other_process():
            self.both("remove_queue", queue, force)
        if self.step_ops[-1].outcome != Outcome.OK.value:
            record("cache", "remote_remove_refused")
            return
        record("cache", "remote_remove")
        self.keyspace_is_sound()  # what the removal left, judged on its own
        self.counter += 1
        self.both("enqueue", self.message(f"c{self.counter}", queue, b"c", 1, 0))
        record("cache", "enqueued_after_remote_remove")


    @contextmanager
    def _other_process(self) -> Iterator[None]:
        """Within the block the broker acts as another process: on a Python broker, its
        published-queues cache is left as it was; on Asynq's own code (whose cache lives in
        the driver's ``RDB``), a Python broker of the same variant on the same database acts
        instead."""
        from broker import Broker

        sut = self.sut
        if isinstance(sut, Broker):
            kept = set(sut.published_queues)
            try:
                yield
            finally:
                sut.published_queues.clear()
                sut.published_queues.update(kept)
            return
        self.sut = Broker(sut.client, sut.variant, sut.policy, self.clock)
        try:
            yield
        finally:
            self.sut.release_connection()
            self.sut = sut


# --- mid-script abort ----------------------------------------------------------------------
#: Redis commands that write (those the scripts use, and their kin).
WRITE_COMMANDS = frozenset({
    "DEL", "UNLINK", "SET", "SETNX", "SETEX", "PSETEX", "GETDEL", "INCR", "INCRBY", "DECR",
    "DECRBY", "HSET", "HSETNX", "HMSET", "HDEL", "HINCRBY", "LPUSH", "RPUSH", "LPOP", "RPOP",
    "RPOPLPUSH", "LMOVE", "LREM", "LTRIM", "LSET", "SADD", "SREM", "SMOVE", "ZADD", "ZREM",
    "ZINCRBY", "ZPOPMIN", "ZPOPMAX", "ZREMRANGEBYSCORE", "ZREMRANGEBYRANK", "EXPIRE",
    "PEXPIRE", "EXPIREAT", "PEXPIREAT", "PERSIST", "RENAME"})


def cut_source(source: str, writes: int) -> str:
    """``source`` with ``redis.call``/``redis.pcall`` shadowed by a local table that raises a
    Lua error at the write command after the first ``writes`` ones: the script as Redis runs
    it when a command fails part-way (no rollback; docs/faults.md).

    >>> "keysim: script cut after 2 writes" in cut_source("return 1", 2)
    True
    """
    names = ", ".join(f"{c} = true" for c in sorted(WRITE_COMMANDS))
    return "\n".join([
        "local keysim_redis = redis",
        f"local keysim_writes_left = {writes}",
        f"local KEYSIM_WRITES = {{{names}}}",
        "local function keysim_cut(f)",
        "  return function(cmd, ...)",
        "    if KEYSIM_WRITES[string.upper(cmd)] then",
        "      if keysim_writes_left <= 0 then",
        f"        error('keysim: script cut after {writes} writes, at ' .. string.upper(cmd))",
        "      end",
        "      keysim_writes_left = keysim_writes_left - 1",
        "    end",
        "    return f(cmd, ...)",
        "  end",
        "end",
        "local redis = setmetatable({call = keysim_cut(keysim_redis.call),",
        "  pcall = keysim_cut(keysim_redis.pcall)}, {__index = keysim_redis})",
        source])


class _CuttingRunner:
    """A broker's script runner whose scripts stop at their ``writes``+1-th write command
    (sent by EVAL: each cut is a script text of its own)."""

    def __init__(self, runner: Any, variant: Any, writes: int) -> None:
        self._runner, self._variant, self._writes = runner, variant, writes
        self.cut: list[str] = []  # the scripts run with the cut

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)

    def queue_on(self, pipe: Any, name: str, keys_: Any, args: Any = ()) -> None:
        from broker.scripting import full_source

        self.cut.append(name)
        source = cut_source(full_source(name, self._variant), self._writes)
        pipe.queue_command(("EVAL", source, len(keys_), *keys_, *args))


#: Abort outcomes a check with ``--faults abort`` must reach (the acceptable set).
ABORT_OUTCOMES = ("torn_detected", "whole", "torn_counters_only")


class AbortRule(KeyMachine):
    """A script that fails part-way (a command erroring after earlier writes: Redis keeps
    them). The model cannot predict a torn keyspace: it is judged against the acceptable set
    (docs/faults.md), then the keyspace goes back to the point before the script (as after a
    failover), the worker still holding its task, so the lockstep goes on."""

    @precondition(lambda self: bool(self.in_hand) and self.config.oracle)
    @rule(pick=picks, how=st.sampled_from(REPORTS), writes=st.integers(1, 4))
    def aborted_report(self, pick: int, how: str, writes: int) -> None:
        """A worker's report whose script stops after its first ``writes`` write commands."""
        task_id = sorted(self.in_hand)[pick % len(self.in_hand)]
        msg = self.in_hand[task_id]
        call = self.decided(msg, ENDINGS[how], "boom")
        self._cut(call.operation, call.args, call.kwargs, writes, msg.queue)

    @precondition(lambda self: self.config.oracle)
    @rule(queue=queues, writes=st.integers(1, 3))
    def aborted_dequeue(self, queue: str, writes: int) -> None:
        """A dequeue whose script stops after its first ``writes`` write commands."""
        self._cut("dequeue", (queue,), {}, writes, queue)

    def _cut(self, operation: str, args: tuple[Any, ...], kwargs: Mapping[str, Any],
             writes: int, queue: str) -> None:
        twin = self.model.clone()
        twin.clock, twin.policy = self.clock, self.policy
        if _attempt(getattr(twin, operation), args, dict(kwargs))[0] != "ok":
            return  # refused: the guards come before any write, nothing to cut
        self.steps.append(f"abort {operation}{args!r} after {writes} writes")
        client = self._behind_the_broker()
        before, whole = capture(client), twin.snapshot(queue)
        runner = self.sut._run
        self.sut._run = _CuttingRunner(runner, self.sut.variant, writes)
        try:
            answer = _attempt(getattr(self.sut, operation), args, dict(kwargs))
        finally:
            self.sut._run = runner
        torn = self.read(queue)
        record("abort", self._judged(operation, answer, torn, whole))
        restore(self._behind_the_broker(), before)
        self._last_checked = None

    def _judged(self, operation: str, answer: tuple[str, Any], torn: Any, whole: Any) -> str:
        """The torn keyspace's class in the acceptable set, or a failure outside it."""
        if answer[0] == "ok" or torn == whole:
            return "whole"  # the cut came after the script's last effective write
        if self._violations(torn):
            return "torn_detected"
        counters = {Family.PROCESSED_TOTAL, Family.FAILED_TOTAL, Family.PROCESSED_DAILY,
                    Family.FAILED_DAILY}
        differing = {k for k in torn.entries.keys() | whole.entries.keys()
                     if torn.entries.get(k) != whole.entries.get(k)}
        if all((info := classify(torn.queue, k)) is not None and info.family in counters
               for k in differing):
            return "torn_counters_only"
        raise self._leak(Disagreement.KEYSPACE_DIFFERS,
                         f"{operation} cut part-way left a keyspace no invariant flags",
                         whole.diff(torn, "whole", "torn"), keys=differing)


# --- registry --------------------------------------------------------------------------------
FAULTS: dict[str, type[KeyMachine]] = {
    "failover": FailoverRule,
    "connloss": ConnLossRule,
    "skew": SkewRule,
    "cache": CacheRule,
    "abort": AbortRule,
}
#: Outcomes each fault's check must reach.
OUTCOMES: dict[str, tuple[str, ...]] = {
    "failover": FAILOVER_OUTCOMES,
    "connloss": CONNLOSS_OUTCOMES,
    "skew": SKEW_OUTCOMES,
    "cache": CACHE_OUTCOMES,
    "abort": ABORT_OUTCOMES,
}


def parse_faults(text: str) -> frozenset[str]:
    """``--faults``: a comma-separated list of :data:`FAULTS` names, or ``all``.

    >>> sorted(parse_faults("skew,failover"))
    ['failover', 'skew']
    """
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return frozenset(FAULTS)
    unknown = sorted(set(names) - set(FAULTS))
    if unknown or not names:
        raise ValueError(f"unknown fault(s) {', '.join(unknown) or repr(text)}; expected a "
                         f"comma-separated list of {', '.join(sorted(FAULTS))}, or all")
    return frozenset(names)


#: Faults that checkpoint the keyspace (SCAN, DUMP, one script over every key): one server's.
ONE_SERVER = frozenset({"failover", "abort"})


def unsupported(names: frozenset[str], backend: str) -> str | None:
    """Why the faults ``names`` cannot run on ``backend``, or None when they can.

    >>> unsupported(frozenset({"failover"}), "cluster")
    "fault 'failover' needs one server: its checkpoints read every key at once"
    """
    from harness.backends import CLUSTER_BACKEND

    if backend == CLUSTER_BACKEND:
        for name in sorted(names & ONE_SERVER):
            return f"fault {name!r} needs one server: its checkpoints read every key at once"
    return None


def fault_mixins(names: frozenset[str]) -> tuple[type[KeyMachine], ...]:
    """The mixins of the faults ``names``, in a fixed order."""
    unknown = sorted(set(names) - set(FAULTS))
    if unknown:
        raise ValueError(f"unknown fault(s): {', '.join(unknown)}")
    return tuple(FAULTS[n] for n in sorted(names))


def fault_pairs(names: frozenset[str]) -> tuple[tuple[str, str], ...]:
    """The coverage pairs a check with the faults ``names`` must reach."""
    return tuple((f"fault:{n}", o) for n in sorted(names) for o in OUTCOMES[n])


__all__ = ["FAULTS", "OUTCOMES", "CacheRule", "Checkpoint", "ConnLossRule", "FailoverRule",
           "SkewRule", "SyncRequest", "capture", "fault_mixins", "fault_pairs", "parse_faults",
           "record", "restore", "skewed", "unsupported"]
