"""Proof under load: ``keysim audit --fix-plan`` and ``--apply --yes`` run in a loop on the db
where Asynq's own Client and Server (conformance/load, built by ``conformance/build.sh v0.26.0
load``) process a steady mix of tasks, while leaks are planted every round: zombie hashes (one
of them aggregating), dangling ids, stale locks, locks and daily counters without TTL in the busy
queue, in a registered queue no server serves, and the leftovers of a dead queue.

Afterwards: every key the apply deleted was a planted leak, every planted leak is gone, and every
task the load enqueued is accounted for by Asynq (its handler ran as the task's options say; the
Inspector reports the completed and archived ones, which still sit in their indexes). The counts
are printed (``pytest -s``) and stated in the README. ≈ 30 s; needs Go, else it skips, unless
``KEYSIM_REQUIRE_ASYNQ=1`` (CI), which makes that a failure.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from support import private_server

from audit import AuditOptions
from audit.apply import run_apply
from audit.command import run_audit
from broker.asynq_go import DriverUnavailable, require_asynq
from broker.codec import encode_message
from broker.servers import RedisServer
from model import keys
from model.message import TaskMessage
from soak.run import build_load

BUSY, SIDE, DEAD = "busy", "side", "gone"
SECONDS, RATE = 20, 100
DB = 2


def load_binary() -> Path:
    """conformance/build.sh v0.26.0 load; skip without Go (fail under KEYSIM_REQUIRE_ASYNQ=1)."""
    try:
        return build_load()
    except DriverUnavailable as why:
        if require_asynq():
            pytest.fail(f"KEYSIM_REQUIRE_ASYNQ=1 but the Asynq load program is unavailable: {why}")
        pytest.skip(str(why))


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with private_server() as s:
        yield s


class Planter:
    """Plants one leak of every kind per queue and round, and remembers what it planted."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self.keys: set[str] = set()  # keys that are leaks as a whole
        self.entries: set[tuple[str, str]] = set()  # (index, id) dangling entries
        self.kinds: Counter[str] = Counter()
        r.sadd(keys.ALL_QUEUES, SIDE)

    def round(self, n: int) -> None:
        for queue in (BUSY, SIDE):
            self._zombie(queue, f"zombie-{n}", "archived")
            self._zombie(queue, f"zombie-agg-{n}", "aggregating", group="g1")
            far = 4_000_000_000  # a score no forwarder or janitor reaches
            # Not the busy queue's scheduled or retry: the load waits for those to empty.
            second = keys.completed(queue) if queue == BUSY else keys.scheduled(queue)
            for index in (keys.archived(queue), second):
                self.r.zadd(index, {f"dangling-{n}": far})
                self.entries.add((index, f"dangling-{n}"))
                self.kinds["dangling id"] += 1
            stale = keys.unique(queue, "planted", f"stale-{n}".encode())
            self.r.set(stale, f"nobody-{n}", ex=3600)
            forever = keys.unique(queue, "planted", f"forever-{n}".encode())
            self.r.set(forever, f"nobody-{n}")
            day = (dt.date(2020, 1, 1) + dt.timedelta(days=n)).isoformat()
            counter = keys.processed_daily(queue, day)
            self.r.set(counter, n)
            self.keys.update((stale, forever, counter))
            self.kinds.update(("orphan lock", "lock without ttl", "counter without ttl"))
        leftover = [keys.processed_total(DEAD), keys.failed_daily(DEAD, f"2021-01-{1 + n % 28:02d}")]
        for key in leftover:
            self.r.set(key, n)
        self.keys.update(leftover)
        self.kinds["unregistered leftover"] += len(leftover)

    def _zombie(self, queue: str, task_id: str, state: str, **fields: str) -> None:
        msg = TaskMessage(type="planted", payload=b"x", id=task_id, queue=queue)
        values: dict[str, str | bytes] = {"msg": encode_message(msg), "state": state, **fields}
        key = keys.task(queue, task_id)
        self.r.hset(key, mapping=values)  # type: ignore[arg-type]  # redis-py's mapping type is invariant
        self.keys.add(key)
        self.kinds["zombie"] += 1

    def remaining(self) -> list[str]:
        """Planted leaks still there."""
        left = [k for k in sorted(self.keys) if self.r.exists(k)]
        return left + [f"{index} {member}" for index, member in sorted(self.entries)
                       if self.r.zscore(index, member) is not None]


class AuditLoop:
    """keysim audit --fix-plan, then --apply PLAN --yes, round after round (and planting)."""

    def __init__(self, url: str, planter: Planter, plan: Path) -> None:
        self.url, self.planter, self.plan = url, planter, plan
        self.outcomes: Counter[str] = Counter()
        self.deleted_keys: set[str] = set()
        self.deleted_entries: set[tuple[str, str]] = set()
        self.skipped: list[str] = []
        self.rounds = 0
        self.errors: list[str] = []

    def round(self, plant: bool) -> int:
        if plant:
            self.planter.round(self.rounds)
        self.rounds += 1
        out, err = io.StringIO(), io.StringIO()
        code = run_audit(self.url, AuditOptions(), fix_plan_path=self.plan, out=out, err=err)
        if code not in (0, 1):
            self.errors.append(f"audit exit {code}: {err.getvalue()}")
            return 0
        out = io.StringIO()
        if run_apply(self.url, self.plan, execute=True, as_json=True, out=out, err=err) != 0:
            self.errors.append(f"apply: {err.getvalue()}")
            return 0
        outcomes = json.loads(out.getvalue())["outcomes"]
        for o in outcomes:
            self.outcomes[o["status"]] += 1
            if o["status"] == "deleted":
                if o["kind"] == "dangling id":
                    self.deleted_entries.add((o["key"], o["task_id"]))
                else:
                    self.deleted_keys.add(o["key"])
            elif o["status"] == "skipped":
                self.skipped.append(f"{o['key']}: {o['reason']}")
        return len(outcomes)


def run_load(binary: Path, url: str, loop: AuditLoop) -> list[dict[str, Any]]:
    """Start the load, run audit rounds until it exits; its events (JSON lines) in order."""
    events: list[dict[str, Any]] = []
    with open(Path(loop.plan).with_suffix(".stderr"), "w") as stderr:
        proc = subprocess.Popen([str(binary), "-redis", url, "-queue", BUSY, "-seconds", str(SECONDS),
                                 "-rate", str(RATE)], stdout=subprocess.PIPE, stderr=stderr, text=True)
        lines = proc.stdout
        assert lines is not None
        reader = threading.Thread(target=lambda: events.extend(json.loads(line) for line in lines
                                                               if line.strip()))
        reader.start()
        try:
            while proc.poll() is None:
                loop.round(plant=True)
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=60)
            reader.join(timeout=10)
    assert proc.returncode == 0, Path(loop.plan).with_suffix(".stderr").read_text()[-2000:]
    return events


def check_tasks(events: list[dict[str, Any]], r: redis.Redis) -> Counter[str]:
    """Every enqueued task went the way its options say, by the load's own log and Asynq's
    Inspector; the completed and archived ones are intact in their indexes. Returns the counts."""
    enqueued = {e["id"]: e for e in events if e["ev"] == "enqueued"}
    handled: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        if e["ev"] == "handled":
            for marker in e["markers"]:
                handled.setdefault(marker, []).append(e)
    assert [e["ev"] for e in events if e["ev"] in ("drained", "undrained")] == ["drained"]
    (final,) = (e for e in events if e["ev"] == "final")
    states = final["tasks"]
    assert set(states) == set(enqueued)
    counts: Counter[str] = Counter()
    for task_id, e in enqueued.items():
        mix, runs, state = e["mix"], handled.get(e["marker"], []), states[task_id]
        oks = [h for h in runs if h["ok"]]
        if mix == "archive":
            assert [h["ok"] for h in runs] == [False] and state["state"] == "archived", (e, runs, state)
            assert r.zscore(keys.archived(BUSY), task_id) is not None and r.exists(keys.task(BUSY, task_id))
        else:
            assert len(oks) == 1, (e, runs)
            if mix == "retry":
                assert [h["retried"] for h in runs] == [0, 1, 2], (e, runs)
            if mix == "retention":
                assert state == {"state": "completed", "result": f"ok:{e['marker']}"}, (e, state)
                assert r.zscore(keys.completed(BUSY), task_id) is not None
                assert r.hget(keys.task(BUSY, task_id), "result") == f"ok:{e['marker']}".encode()
            else:
                assert state["state"] == "missing", (e, state)  # done: Asynq deleted it
        counts[mix] += 1
    mix_of = {e["marker"]: e["mix"] for e in enqueued.values()}
    runs = [e for e in events if e["ev"] == "handled"]
    counts["handler runs"] = len(runs)
    counts["aggregated batches"] = sum(1 for e in runs if mix_of[e["markers"][0]] == "group")
    return counts


def test_audit_and_apply_in_a_loop_under_asynq_load(server: RedisServer, tmp_path: Path) -> None:
    binary = load_binary()
    url = server.url.rsplit("/", 1)[0] + f"/{DB}"
    r = redis.Redis.from_url(url)
    r.flushdb()
    planter = Planter(r)
    loop = AuditLoop(url, planter, tmp_path / "plan.json")
    started = time.monotonic()
    events = run_load(binary, url, loop)
    loaded = time.monotonic() - started
    while loop.round(plant=False):  # quiescent now: finish what the last rounds planted
        pass
    assert loop.errors == []
    assert planter.remaining() == []
    assert loop.deleted_keys == planter.keys  # nothing but planted leaks was deleted
    assert loop.deleted_entries == planter.entries
    counts = check_tasks(events, r)
    out = io.StringIO()
    assert run_audit(url, AuditOptions(), out=out, err=io.StringIO()) == 0, out.getvalue()
    mixes = {k: v for k, v in counts.items() if k not in ("handler runs", "aggregated batches")}
    print(f"\nproof under load: {sum(mixes.values())} tasks enqueued by Asynq's Client at {RATE}/s for "
          f"{SECONDS} s ({mixes}; {counts['aggregated batches']} aggregated batches), "
          f"{counts['handler runs']} handler runs, all accounted for; {loop.rounds} audit+apply rounds "
          f"in {loaded:.1f} s; planted {sum(planter.kinds.values())} leaks ({dict(planter.kinds)}), "
          f"all gone; apply outcomes {dict(loop.outcomes)}; deleted only planted leaks")
    if loop.skipped:
        print("skipped:", *loop.skipped[:20], sep="\n  ")
    r.close()
