"""``keysim soak``: Asynq's own server, as K OS processes on one real Redis, SIGKILLed and
restarted at random while a client enqueues; then a drain, conservation and an audit.

The processes are ``conformance/load`` (Asynq v0.26.0's public API only, built by
``conformance/build.sh v0.26.0 load``) in its roles: K ``server`` processes (each an
``asynq.Server``, handlers that work :data:`WORK_MS` and log every run), one ``client`` that
enqueues the load's mix of tasks (plain, retried, unique, scheduled, retained, archived,
grouped, deleted through the Inspector) at ``rate`` per second for ``duration``, and at the end
one ``inspect`` that asks Asynq's Inspector what became of each task.

Phases:

1. **Chaos.** The kill schedule (:func:`kill_schedule`, from the seed alone, printed, so a run
   can be replayed: the same kills at the same times; what they hit depends on timing) SIGKILLs
   a live server at each of its times and restarts it 0.5–3 s later. Kills stop
   :func:`quiet_seconds` before the client does: Asynq recovers a killed server's tasks no sooner
   than 60 s after the kill (the lease, 30 s, is hard-coded in ``internal/rdb``, the recoverer's
   30 s cutoff and 1-min interval in ``recoverer.go``; ``asynq.Config`` sets none of them), so
   with 60 s of quiet load those recoveries happen under load.
2. **Drain.** Every server is restarted gracefully (SIGTERM: ``Server.Shutdown``; a new process):
   Asynq's recoverer runs at each server's start, which is the only way the public API offers
   to run it sooner than its minute. Then, until the queue is empty, whenever the earliest lease
   is 30 s past its deadline or an aggregation set is past its deadline (read from Redis) one
   server is restarted again. It stops when the queue is empty, when nothing can move any more
   (what is left sits in groups no aggregator lists), or after :data:`DRAIN_LIMIT_S`.
3. **Books.** Every server stops gracefully, the Inspector reports every task, and
   :func:`soak.ledger.account` balances the logs against it.
4. **Audit.** ``keysim audit``'s engine reads the keyspace (registry grace 0: every Asynq process
   of the soak has stopped, none can still heartbeat); each finding is attributed
   (:func:`soak.ledger.attribute_finding`) to a known defect or reported as NEW.

The verdict (:func:`soak.ledger.judge`): exit 0 when nothing was lost, the books
balance and every finding is attributed; else 1. Setup errors (no Go, a non-empty database)
exit 2.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import redis

from audit import AuditOptions, audit, connect
from broker.asynq_go import BUILD_SCRIPT, HOW_TO_ENABLE, DriverUnavailable
from broker.servers import (
    RedisServer,
    ServerUnavailable,
    connect_url,
    die_with_parent,
    mask_url,
    start_server,
)
from model import keys
from soak.ledger import Attribution, Ledger, Verdict, account, attribute_finding, judge

ASYNQ_VERSION = "v0.26.0"
QUEUE = "soak"
#: How long each handler call works: long enough that a kill finds tasks in hand (at 50 tasks/s
#: over 3 servers, about 3 each).
WORK_MS = 200
#: Asynq's Config.Concurrency of each server process.
CONCURRENCY = 8
#: The earliest Asynq recovers a killed server's task: its lease (≤ 30 s left, extended every
#: 5 s) plus the recoverer's 30 s cutoff.
RECOVERY_S = 60.0
#: Mean time between kills, and the range of a killed server's downtime.
KILL_EVERY_S = 5.0
DOWNTIME_S = (0.5, 3.0)
#: No kill before this (the servers' first start).
FIRST_KILL_S = 2.0
#: How long the drain may take before the queue is called undrained.
DRAIN_LIMIT_S = 240.0
#: A graceful stop that takes longer than this is an error (ShutdownTimeout is 5 s).
STOP_TIMEOUT_S = 20.0


class SoakError(Exception):
    """The soak could not run (exit 2): no Go, a failed build, no usable or an unusable Redis."""


@dataclass(frozen=True)
class SoakConfig:
    """What to run. ``redis_url`` None: a private server (broker.servers)."""

    duration_s: float = 120.0
    processes: int = 3
    rate: float = 50.0
    seed: int = 0
    redis_url: str | None = None

    def __post_init__(self) -> None:
        if not self.duration_s > 0:
            raise ValueError(f"duration must be positive, got {self.duration_s}")
        if self.processes < 1:
            raise ValueError(f"processes must be >= 1, got {self.processes}")
        if not self.rate > 0:
            raise ValueError(f"rate must be positive, got {self.rate}")


@dataclass(frozen=True)
class Kill:
    """SIGKILL server ``proc`` at ``at_s`` (seconds from the start), restart it at ``restart_s``."""

    at_s: float
    proc: int
    restart_s: float

    def __str__(self) -> str:
        return f"kill p{self.proc} at {self.at_s:.1f} s, restart at {self.restart_s:.1f} s"


def quiet_seconds(duration_s: float) -> float:
    """The load's last seconds without kills: :data:`RECOVERY_S`, or half a shorter load.

    >>> quiet_seconds(120), quiet_seconds(20)
    (60.0, 10.0)
    """
    return min(RECOVERY_S, duration_s / 2)


def kill_schedule(seed: int, duration_s: float, processes: int) -> list[Kill]:
    """The kills, from the seed alone: one per :data:`KILL_EVERY_S` of the kill window (at least
    one), at uniform times, each of a server the schedule has up at that time (a time when all
    are down is dropped).

    >>> kill_schedule(0, 120, 3) == kill_schedule(0, 120, 3) != kill_schedule(1, 120, 3)
    True
    >>> all(FIRST_KILL_S <= k.at_s <= 60 for k in kill_schedule(0, 120, 3))
    True
    """
    rng = random.Random(seed)
    end = max(FIRST_KILL_S, duration_s - quiet_seconds(duration_s))
    count = max(1, round((end - FIRST_KILL_S) / KILL_EVERY_S))
    down_until = [0.0] * processes
    kills = []
    for at in sorted(rng.uniform(FIRST_KILL_S, end) for _ in range(count)):
        up = [p for p in range(processes) if down_until[p] <= at]
        if not up:
            continue
        proc = rng.choice(up)
        down_until[proc] = at + rng.uniform(*DOWNTIME_S)
        kills.append(Kill(round(at, 1), proc, round(down_until[proc], 1)))
    return kills


def build_load(version: str = ASYNQ_VERSION) -> Path:
    """``conformance/build.sh VERSION load`` (cached by the script); :class:`DriverUnavailable`
    with the reason when Go is missing or the build fails."""
    if shutil.which("go") is None:
        raise DriverUnavailable(f"Go not found: {HOW_TO_ENABLE}")
    done = subprocess.run(["bash", str(BUILD_SCRIPT), version, "load"], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise DriverUnavailable(f"conformance/build.sh {version} load failed "
                                f"(exit {done.returncode}):\n{done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


# --- the processes --------------------------------------------------------------------------
class Process:
    """One run of the load program; its stdout (JSON lines) and stderr go to files."""

    def __init__(self, argv: Sequence[str], log: Path, stdin: int | IO[Any] | None = None) -> None:
        self.log, self.errlog = log, log.with_suffix(".stderr")
        with log.open("w") as out, self.errlog.open("w") as err:
            self.popen = subprocess.Popen(list(argv), stdout=out, stderr=err,
                                          stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                          preexec_fn=die_with_parent)

    def running(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()

    def end(self) -> None:
        """SIGKILL it unless it has exited."""
        if self.running():
            self.kill()

    def stop(self) -> int:
        """SIGTERM (the server shuts down gracefully); its exit code."""
        if self.running():
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def tail(self) -> str:
        return self.errlog.read_text(errors="replace")[-1500:].strip()

    def events(self) -> list[dict[str, Any]]:
        """Its JSON lines; a last line a SIGKILL cut off is dropped."""
        lines = self.log.read_text().splitlines()
        events = []
        for n, line in enumerate(lines):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                if n != len(lines) - 1:
                    raise
        return events


@dataclass
class Fleet:
    """The K server slots: every process each slot ran, the latest last."""

    binary: Path
    url: str
    logs: Path
    slots: list[list[Process]] = field(default_factory=list)
    kills: int = 0
    restarts: int = 0
    recovery_restarts: int = 0
    errors: list[str] = field(default_factory=list)

    def start(self, slot: int) -> None:
        while len(self.slots) <= slot:
            self.slots.append([])
        name = f"p{slot}.{len(self.slots[slot])}"
        argv = [str(self.binary), "-role", "server", "-redis", self.url, "-queue", QUEUE,
                "-proc", name, "-concurrency", str(CONCURRENCY), "-work", f"{WORK_MS}ms"]
        self.slots[slot].append(Process(argv, self.logs / f"{name}.jsonl"))

    def current(self, slot: int) -> Process:
        return self.slots[slot][-1]

    def kill(self, slot: int) -> None:
        self.check(slot)
        self.current(slot).kill()
        self.kills += 1

    def restart(self, slot: int, graceful: bool) -> None:
        if graceful:
            self._stop(slot)
        self.start(slot)
        self.restarts += 1

    def stop_all(self) -> None:
        for slot in range(len(self.slots)):
            self._stop(slot)

    def _stop(self, slot: int) -> None:
        process = self.current(slot)
        if not process.running() and process.popen.returncode == -signal.SIGKILL:
            return  # killed by the schedule
        self.check(slot)
        code = process.stop()
        if code != 0:
            self.errors.append(f"server {process.log.stem} exited {code} on SIGTERM: {process.tail()}")

    def check(self, slot: int) -> None:
        """Record a server that died on its own."""
        process = self.current(slot)
        if not process.running() and process.popen.returncode not in (0, -signal.SIGKILL):
            self.errors.append(f"server {process.log.stem} exited {process.popen.returncode}: "
                               f"{process.tail()}")

    def events(self) -> Iterator[dict[str, Any]]:
        for slot in self.slots:
            for process in slot:
                yield from process.events()


# --- the drain ------------------------------------------------------------------------------
@dataclass(frozen=True)
class QueueState:
    """What is left in the queue, and when Asynq's recoverer could act on it (Unix seconds)."""

    waiting: int
    leases: int
    sets: int
    registered_groups: int
    unregistered_groups: int
    recoverable_at: float | None

    @property
    def drained(self) -> bool:
        return not (self.waiting or self.leases or self.sets or self.registered_groups
                    or self.unregistered_groups)

    @property
    def stranded(self) -> bool:
        """Only tasks in groups no aggregator lists: nothing will move them."""
        return not (self.waiting or self.leases or self.sets or self.registered_groups)


def queue_state(r: redis.Redis, groups: Sequence[str]) -> QueueState:
    """Read the queue's indexes (``groups``: the group names the client used)."""
    pipe = r.pipeline(transaction=False)
    pipe.llen(keys.pending(QUEUE))
    pipe.llen(keys.active(QUEUE))
    pipe.zcard(keys.scheduled(QUEUE))
    pipe.zcard(keys.retry(QUEUE))
    pipe.zrange(keys.lease(QUEUE), 0, 0, withscores=True)
    pipe.zcard(keys.lease(QUEUE))
    pipe.zrange(keys.aggregation_sets(QUEUE), 0, 0, withscores=True)
    pipe.zcard(keys.aggregation_sets(QUEUE))
    pipe.smembers(keys.groups(QUEUE))
    for group in groups:
        pipe.zcard(keys.group(QUEUE, group))
    pending, active, scheduled, retry, first_lease, leases, first_set, sets, listed, *sizes = \
        pipe.execute()
    registered = {g.decode() if isinstance(g, bytes) else g for g in listed}
    due = [score + 30 + 1 for _, score in first_lease] + [score + 1 for _, score in first_set]
    return QueueState(pending + active + scheduled + retry, leases, sets,
                      sum(1 for g, n in zip(groups, sizes, strict=True) if n and g in registered),
                      sum(1 for g, n in zip(groups, sizes, strict=True) if n and g not in registered),
                      min(due) if due else None)


def drain(fleet: Fleet, r: redis.Redis, groups: Sequence[str], say: Any) -> tuple[QueueState, float]:
    """Restart every server, then restart one whenever the recoverer has something to do, until
    the queue is empty, stranded or :data:`DRAIN_LIMIT_S` passed; the last state and the time."""
    started = time.monotonic()
    for slot in range(len(fleet.slots)):
        fleet.restart(slot, graceful=True)
    say(f"drain: restarted all {len(fleet.slots)} servers (the recoverer runs at each start)")
    last_restart, turn = time.time(), 0
    while True:
        state = queue_state(r, groups)
        if state.drained or state.stranded or time.monotonic() - started > DRAIN_LIMIT_S:
            return state, time.monotonic() - started
        due = state.recoverable_at
        if due is not None and time.time() >= due and time.time() - last_restart > 5:
            slot, turn = turn % len(fleet.slots), turn + 1
            fleet.restart(slot, graceful=True)
            fleet.recovery_restarts += 1
            last_restart = time.time()
            say(f"drain: restarted p{slot} for its recoverer ({state.leases} lease(s), "
                f"{state.sets} aggregation set(s) left)")
        time.sleep(0.5)


# --- the run ----------------------------------------------------------------------------------
@dataclass
class SoakResult:
    config: SoakConfig
    schedule: list[Kill]
    ledger: Ledger
    attributions: list[Attribution]
    verdict: Verdict
    kills: int
    restarts: int
    recovery_restarts: int
    drain_s: float
    seconds: float
    server: str
    unverified: list[str]
    logs: Path | None

    def summary(self) -> dict[str, Any]:
        """The figures, as the JSON report and the last lines print them."""
        findings = Counter(a.label for a in self.attributions)
        return {
            "verdict": "PASS" if self.verdict.passed else "FAIL",
            "server": self.server, "seed": self.config.seed, "processes": self.config.processes,
            "duration_s": self.config.duration_s, "rate": self.config.rate,
            "tasks": self.ledger.tasks, "outcomes": dict(self.ledger.outcomes),
            "kills": self.kills, "restarts": self.restarts,
            "recovery_restarts": self.recovery_restarts,
            "handler_runs": self.ledger.handler_runs,
            "interrupted_runs": self.ledger.interrupted_runs, "reruns": self.ledger.reruns,
            "duplicates": self.ledger.duplicates, "duplicated_tasks": self.ledger.duplicated_tasks,
            "lost": [str(p) for p in self.ledger.lost],
            "stuck": [f"{p} [{d}]" for p, d in self.verdict.explained_stuck],
            "findings": dict(findings),
            "attributions": [{"defect": a.label, "kind": a.finding.kind, "key": a.finding.key,
                              "reason": a.reason} for a in self.attributions],
            "unverified": self.unverified, "failures": self.verdict.failures,
            "schedule": [asdict(k) for k in self.schedule],
            "drain_s": round(self.drain_s, 1), "seconds": round(self.seconds, 1),
        }


def run_soak(config: SoakConfig, out: IO[str] | None = None) -> SoakResult:
    """Run the soak (see the module docstring); progress lines go to ``out``."""
    stream = out or sys.stdout

    def say(line: str) -> None:
        print(line, file=stream, flush=True)

    try:
        binary = build_load()
    except DriverUnavailable as err:
        raise SoakError(str(err)) from err
    schedule = kill_schedule(config.seed, config.duration_s, config.processes)
    started = time.monotonic()
    with ExitStack() as stack:
        server = stack.enter_context(_redis(config.redis_url))
        say(f"keysim soak: {config.processes} Asynq {ASYNQ_VERSION} servers on {server.version}, "
            f"{config.rate:g} tasks/s for {config.duration_s:g} s, seed {config.seed}; kill "
            f"schedule ({len(schedule)}, none in the last {quiet_seconds(config.duration_s):g} s):")
        for kill in schedule:
            say(f"  {kill}")
        logs = Path(tempfile.mkdtemp(prefix="keysim-soak-"))
        result = _run(config, binary, server, schedule, logs, say, stack)
    result.seconds = time.monotonic() - started
    if result.verdict.passed:
        shutil.rmtree(logs, ignore_errors=True)
        result.logs = None
    return result


@contextmanager
def _redis(url: str | None) -> Iterator[RedisServer]:
    """The given server (its database must be empty: the soak writes there) or a private one."""
    try:
        server = connect_url(url) if url else start_server(
            {k: v for k, v in os.environ.items() if k != "REDIS_URL"})
    except ServerUnavailable as err:
        raise SoakError(str(err)) from err
    with server:
        r = redis.Redis.from_url(server.url)
        try:
            size = r.dbsize()
        finally:
            r.close()
        if size:
            raise SoakError(f"{mask_url(server.url)} holds {size} keys: the soak needs an empty "
                            f"database (it enqueues there and audits all of it)")
        yield server


def _run(config: SoakConfig, binary: Path, server: RedisServer, schedule: Sequence[Kill],
         logs: Path, say: Any, stack: ExitStack) -> SoakResult:
    fleet = Fleet(binary, server.url, logs)
    stack.callback(_kill_everything, fleet)
    for slot in range(config.processes):
        fleet.start(slot)
    t0 = time.monotonic()
    client = Process([str(binary), "-role", "client", "-redis", server.url, "-queue", QUEUE,
                      "-seconds", str(config.duration_s), "-rate", str(config.rate)],
                     logs / "client.jsonl")
    stack.callback(client.end)
    _chaos(fleet, schedule, t0)
    if client.popen.wait(config.duration_s + 60) != 0:
        fleet.errors.append(f"client exited {client.popen.returncode}: {client.tail()}")
    say(f"load done after {time.monotonic() - t0:.1f} s: {fleet.kills} kills, {fleet.restarts} restarts")
    client_events = client.events()
    groups = sorted({e["group"] for e in client_events if e.get("group")})
    r = redis.Redis.from_url(server.url)
    stack.callback(r.close)
    state, drain_s = drain(fleet, r, groups, say)
    if not state.drained and not state.stranded:
        fleet.errors.append(f"the queue did not drain in {DRAIN_LIMIT_S:g} s: {state}")
    fleet.stop_all()
    say(f"drained in {drain_s:.1f} s" if state.drained else f"drain ended after {drain_s:.1f} s: {state}")
    final = _inspect(binary, server.url, client_events, logs)
    ledger = account(client_events, fleet.events(), final)
    found = audit(stack.enter_context(_closing(connect(server.url))), AuditOptions(registry_grace_s=0))
    attributions = [attribute_finding(f, fleet.kills) for f in found.findings]
    unverified = [f"{u.count} {u.kind}: {u.reason}" for u in found.unverified]
    if found.registries is not None:
        unverified += [f"{key}: {why}" for key, why in found.registries.unverified]
    verdict = judge(ledger, attributions, QUEUE, fleet.errors)
    return SoakResult(config, list(schedule), ledger, attributions, verdict, fleet.kills,
                      fleet.restarts, fleet.recovery_restarts, drain_s, 0.0,
                      found.server or server.version, unverified, logs)


def _chaos(fleet: Fleet, schedule: Sequence[Kill], t0: float) -> None:
    """Carry out the kill schedule (times from ``t0``)."""
    actions = sorted([(k.at_s, 0, k.proc) for k in schedule]
                     + [(k.restart_s, 1, k.proc) for k in schedule])
    for at, restart, slot in actions:
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        if restart:
            fleet.restart(slot, graceful=False)
        else:
            fleet.kill(slot)


def _inspect(binary: Path, url: str, client_events: Sequence[dict[str, Any]],
             logs: Path) -> dict[str, Any]:
    """Asynq's Inspector on every task the client enqueued (the ``final`` event)."""
    ids = logs / "ids.txt"
    ids.write_text("".join(f"{e['id']}\n" for e in client_events if e["ev"] == "enqueued"))
    with ids.open() as stdin:
        process = Process([str(binary), "-role", "inspect", "-redis", url, "-queue", QUEUE],
                          logs / "inspect.jsonl", stdin=stdin)
        if process.popen.wait(120) != 0:
            raise SoakError(f"the Inspector failed: {process.tail()}")
    (final,) = (e for e in process.events() if e["ev"] == "final")
    return final


@contextmanager
def _closing(client: redis.Redis) -> Iterator[redis.Redis]:
    try:
        yield client
    finally:
        client.close()


def _kill_everything(fleet: Fleet) -> None:
    """On the way out (an error included): no server of ours outlives the soak."""
    for slot in fleet.slots:
        for process in slot:
            process.end()


# --- report -----------------------------------------------------------------------------------
def render(result: SoakResult) -> str:
    """The verdict and summary lines."""
    s = result.summary()
    findings = ", ".join(f"{n} {label}" for label, n in sorted(s["findings"].items())) or "none"
    outcomes = ", ".join(f"{n} {what}" for what, n in sorted(s["outcomes"].items()))
    lines = [
        f"{s['verdict']}: {s['tasks']} tasks ({outcomes}); {s['kills']} kills, {s['restarts']} "
        f"restarts ({s['recovery_restarts']} for the recoverer in the drain); {s['handler_runs']} "
        f"handler runs ({s['interrupted_runs']} cut short by a kill, {s['reruns']} re-runs after "
        f"one), {s['duplicates']} duplicate successes of {s['duplicated_tasks']} tasks; "
        f"{len(s['lost'])} lost; findings: {findings}; "
        f"{s['server']}, drain {s['drain_s']} s, {s['seconds']} s in all, seed {s['seed']}",
    ]
    for (label, kind), group in _grouped(result.attributions).items():
        lines.append(f"  {label}: {len(group)} {kind} ({', '.join(sorted({a.finding.key for a in group}))})"
                     f" — {group[0].reason}")
    lines += [f"  stuck, held by a known defect: {line}" for line in s["stuck"]]
    lines += [f"  unverified: {line}" for line in s["unverified"]]
    lines += [f"  FAIL: {line}" for line in s["failures"][:50]]
    if len(s["failures"]) > 50:
        lines.append(f"  … {len(s['failures']) - 50} more")
    if result.logs is not None:
        lines.append(f"  logs kept in {result.logs}")
    return "\n".join(lines)


def _grouped(attributions: Sequence[Attribution]) -> dict[tuple[str, str], list[Attribution]]:
    """Findings by (defect, kind), for one line each."""
    groups: dict[tuple[str, str], list[Attribution]] = {}
    for a in attributions:
        groups.setdefault((a.label, a.finding.kind), []).append(a)
    return groups


def main_soak(config: SoakConfig, json_path: Path | None = None) -> int:
    """The command: run, print, write ``json_path``; the exit code."""
    try:
        result = run_soak(config)
    except SoakError as err:
        print(f"keysim soak: {err}", file=sys.stderr)
        return 2
    print(render(result))
    if json_path is not None:
        json_path.write_text(json.dumps(result.summary(), indent=2) + "\n")
    return result.verdict.exit_code
