"""``keysim audit`` on real Redis: seeded Asynq leaks are found exactly, reference keyspaces
(mid-flight tasks included) are clean, the audit never writes, and it runs under a read-only
ACL user. Keyspaces are seeded through the broker's leaking sequences (v0.26.0 / v0.24.0
quirks); the only raw write simulates an eviction (BZ-7) to make a dangling id.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis

from audit import AuditOptions, AuditResult, WriteRefused, audit, connect, readonly
from audit.command import run_audit
from audit.plan import ServerIdentity, build_plan
from broker import Broker
from broker.servers import RedisServer, parse_version
from keysim.cli import main
from model import keys
from model.clock import VirtualClock
from model.message import TaskMessage
from model.policy import ASYNQ_POLICY, Policy
from model.states import TaskState

Q = "default"
DEAD = "old"


def msg(task_id: str, queue: str = Q, **kw: Any) -> TaskMessage:
    return TaskMessage(type="email", payload=task_id.encode(), id=task_id, queue=queue, **kw)


@pytest.fixture
def raw(real_client: redis.Redis) -> redis.Redis:
    return real_client


def run(url: str, clock: VirtualClock, **kw: Any) -> AuditResult:
    client = connect(url)
    try:
        return audit(client, AuditOptions(now_ms=clock.now_ns // 10**6, chunk=3, scan_count=7, **kw))
    finally:
        client.close()


def found(result: AuditResult) -> set[tuple[str, str, str, bool]]:
    return {(f.invariant, f.kind, f.key, f.leaked) for f in result.findings}


def t(task_id: str, queue: str = Q) -> str:
    return keys.task(queue, task_id)


# --- seeding ---------------------------------------------------------------------------------------
def seed_v026(r: redis.Redis, clock: VirtualClock) -> set[tuple[str, str, str, bool]]:
    """Known v0.26.0 leaking sequences; returns the findings they must produce."""
    b = Broker(r, "asynq-v0.26.0", replace(ASYNQ_POLICY, max_archive_size=2), clock)
    b.enqueue(msg("live"))  # a healthy pending task next to the leaks
    b.write_result(Q, "ghost", b"42")  # BZ-18: result-only hash
    b.enqueue_unique(msg("u1"), ttl=3600)
    b.delete_all_tasks(Q, TaskState.PENDING)  # BZ-4: u1's lock outlives it (live went too)
    b.schedule(msg("s1"), clock.seconds + 600)
    b.schedule(msg("s2"), clock.seconds + 600)
    b.archive_task(Q, "s1")
    b.archive_task(Q, "s2")  # BZ-2: capacity 1 trims s1 from the index, its hash stays
    b.add_to_group(msg("g1"), "grp")
    clock.advance(b.policy.aggregation_grace)
    b.aggregation_check(Q, "grp", "set1")
    clock.advance(b.policy.aggregation_timeout + 1)
    b.reclaim_stale_aggregation_sets(Q)  # BZ-10: g:grp is back, 'grp' not in groups
    b.enqueue(msg("p1"))
    b.enqueue(msg("p2"))
    r.delete(t("p2"))  # BZ-7 (eviction): a dangling pending id
    b.enqueue(msg("c1", DEAD, retention=3600))
    b.dequeue(DEAD)
    b.mark_as_complete(msg("c1", DEAD, retention=3600))
    b.remove_queue(DEAD, force=True)  # BZ-12: completed index and hash outlive the queue
    leftover = [t("c1", DEAD), keys.completed(DEAD), keys.processed_total(DEAD),
                keys.processed_daily(DEAD, clock.utc_date())]
    return {
        ("I1", "result-only hash", t("ghost"), True),
        ("I6", "orphan lock", keys.unique(Q, "email", b"u1"), True),
        ("I1", "zombie", t("s1"), True),
        ("I7", "orphan group", keys.group(Q, "grp"), False),
        ("I2", "dangling id", keys.pending(Q), False),
        ("I12", "unregistered queue", keys.ALL_QUEUES, False),
        *(("I12", "unregistered leftover", k, True) for k in leftover),
    }


def seed_v024(r: redis.Redis, clock: VirtualClock) -> set[tuple[str, str, str, bool]]:
    """BZ-1: the server archive trim drops ids from the index but keeps their hashes."""
    b = Broker(r, "asynq-v0.24.0", replace(ASYNQ_POLICY, max_archive_size=2), clock)
    for task_id in ("a1", "a2", "a3"):
        b.enqueue(msg(task_id))
        got = b.dequeue(Q)
        assert got is not None
        b.archive(got, "boom")
        clock.advance(1)
    return {("I1", "zombie", t("a1"), True), ("I1", "zombie", t("a2"), True)}


def seed_reference(r: redis.Redis, clock: VirtualClock) -> None:
    """Every state at once, mid-flight: active with lease, staged set, locks, pause, counters."""
    b = Broker(r, "reference", Policy(), clock)
    got = {}
    for task_id in ("r1", "c1", "x1", "a1", "a2"):
        b.enqueue(msg(task_id, retention=3600))
        m = b.dequeue(Q)
        assert m is not None and m.id == task_id
        got[task_id] = m
    b.retry(got["r1"], clock.seconds + 30, "flaky")
    b.mark_as_complete(got["c1"])
    b.archive(got["x1"], "dead")
    b.enqueue(msg("p1"))
    b.enqueue_unique(msg("p2"), ttl=3600)
    b.schedule_unique(msg("s1"), clock.seconds + 60, ttl=3600)
    b.add_to_group_unique(msg("g1"), "grp", ttl=3600)
    b.add_to_group(msg("g2"), "grp")
    clock.advance(b.policy.aggregation_grace)
    b.aggregation_check(Q, "grp", "set1")
    b.add_to_group(msg("g3"), "grp")
    b.pause(Q)


# --- findings ----------------------------------------------------------------------------------------
def test_v026_leaks_are_reported_exactly(real_server: RedisServer, raw: redis.Redis) -> None:
    clock = VirtualClock()
    expected = seed_v026(raw, clock)
    result = run(real_server.url, clock)
    assert found(result) == expected
    assert result.exit_code == 1
    default = next(q for q in result.queues if q.queue == Q)
    assert default.asynq is not None and default.asynq.crash is not None  # BZ-21 on the dangling p2
    leaked = {f.key: f.bytes for f in result.findings if f.leaked}
    assert all(n > 0 for n in leaked.values())
    assert sum(q.leaked_bytes for q in result.queues) == sum(leaked.values())


def test_v024_trim_zombies_and_asynq_figure_blind_to_them(real_server: RedisServer,
                                                         raw: redis.Redis) -> None:
    clock = VirtualClock()
    assert found(run(real_server.url, clock)) == set()
    expected = seed_v024(raw, clock)
    result = run(real_server.url, clock)
    assert found(result) == expected
    (report,) = result.queues
    assert report.tasks_by_state == {"archived": 3}
    assert report.oldest["archived"][0] == "a1"
    assert report.asynq is not None and report.asynq.bytes is not None
    # Asynq samples the one indexed hash; the two zombies (and lease, counters) are invisible.
    assert report.asynq.bytes < report.bytes - report.leaked_bytes + 1
    zombies = [f.key for f in result.findings if f.leaked]
    assert len(zombies) == 2
    assert report.leaked_bytes == sum(raw.memory_usage(k, samples=0) or 0 for k in zombies)
    assert 0 < report.leaked_bytes < report.bytes_by_state["archived"]


def test_reference_mid_flight_is_clean(real_server: RedisServer, raw: redis.Redis) -> None:
    clock = VirtualClock()
    seed_reference(raw, clock)
    result = run(real_server.url, clock, policy=Policy())
    assert [f.message for f in result.findings] == []
    (report,) = result.queues
    assert report.tasks_by_state == {"pending": 2, "active": 2, "scheduled": 1, "retry": 1,
                                     "completed": 1, "archived": 1, "aggregating": 3}
    assert result.exit_code == 0


def test_fix_plan_deletes_exactly_the_leaked_keys(real_server: RedisServer, raw: redis.Redis,
                                                  tmp_path: Path) -> None:
    clock = VirtualClock()
    findings = seed_v026(raw, clock)
    before = {k: raw.dump(k) for k in raw.scan_iter()}
    plan = build_plan(run(real_server.url, clock), ServerIdentity("x", 0))
    deletions = {k for _, _, k, leaked in findings if leaked}
    assert sorted(a.key for a in plan.actions if a.kind != "dangling id") == sorted(deletions)
    assert [(a.key, a.task_id) for a in plan.actions if a.kind == "dangling id"] == [
        (keys.pending(Q), "p2")]
    assert {o[2] for o in plan.not_planned} == {"orphan group", "unregistered queue"}
    assert {k: raw.dump(k) for k in raw.scan_iter()} == before  # making a plan writes nothing


# --- read-only -------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [("DEL", "k"), ("SET", "k", "v"), ("EVAL", "return 1", "0"),
                                     ("FLUSHDB",), ("MEMORY", "PURGE"), ("CLIENT", "KILL", "x"),
                                     ("KEYS", "*"), ("EXPIRE", "k", "1"), ("OBJECT", "FREQ", "k")])
def test_guard_refuses_every_non_read_command(command: tuple[str, ...]) -> None:
    with pytest.raises(WriteRefused, match=f"refused {command[0]}"):
        readonly.check_command(command)


def test_guarded_client_sends_no_write(real_server: RedisServer, raw: redis.Redis) -> None:
    client = connect(real_server.url)
    with pytest.raises(WriteRefused):
        client.set("k", "v")
    with pytest.raises(WriteRefused):
        pipe = client.pipeline()
        pipe.get("k")
        pipe.delete("k")
        pipe.execute()
    client.close()
    assert raw.dbsize() == 0


def test_audit_issues_only_read_commands(real_server: RedisServer, raw: redis.Redis,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Spy on every packed command and ask Redis itself (COMMAND INFO) whether it writes."""
    clock = VirtualClock()
    seed_v026(raw, clock)
    dump_before = {k: raw.dump(k) for k in raw.scan_iter()}
    sent: set[str] = set()
    original = readonly._GuardedPacker.pack

    def spy(self: Any, *args: Any) -> Any:
        parts = [a.decode() if isinstance(a, bytes) else str(a) for a in args[:2]]
        words = " ".join(parts).split()
        sent.add(words[0].upper() + (f"|{words[1].lower()}" if words[0].upper() in
                                     ("MEMORY", "CLIENT") else ""))
        return original(self, *args)

    monkeypatch.setattr(readonly._GuardedPacker, "pack", spy)
    run(real_server.url, clock)
    assert {"SCAN", "HMGET", "MEMORY|usage", "MULTI", "EXEC"} <= sent
    conn = raw.connection_pool.get_connection()
    redis62 = parse_version(real_server.version) < (7, 0)
    for name in sorted(sent - {"MULTI", "EXEC"}):
        conn.send_command("COMMAND", "INFO", name.lower())  # type: ignore[no-untyped-call]  # raw reply: redis-py's parser drops flags
        (info,) = conn.read_response()
        if info is None and redis62 and "|" in name:  # 6.2 lists no subcommands: the container's flags
            conn.send_command("COMMAND", "INFO", name.split("|")[0].lower())  # type: ignore[no-untyped-call]
            (info,) = conn.read_response()
        if info is None:  # redis-py's handshake probes, unknown to Redis 7.0; on 6.2 the audit's probe
            assert name in ("CLIENT|maint_notifications", "CLIENT|setinfo", *(["PEXPIRETIME"] * redis62))
            continue
        assert b"write" not in info[2], name
    raw.connection_pool.release(conn)
    assert "KEYS" not in sent and "EVAL" not in sent and "EVALSHA" not in sent
    assert {k: raw.dump(k) for k in raw.scan_iter()} == dump_before


@pytest.fixture
def auditor(real_server: RedisServer, raw: redis.Redis) -> Iterator[str]:
    """A URL for an ACL user created with only read commands (plus MULTI/EXEC/SELECT/PING)."""
    raw.acl_setuser("auditor", reset=True, enabled=True, passwords=["+audit-pw"], keys=["*"],
                    reset_channels=True, categories=["+@read", "-@write", "-@dangerous"],
                    commands=["+multi", "+exec", "+select", "+ping"])
    base = real_server.url.replace("redis://", "redis://auditor:audit-pw@", 1)
    yield base
    raw.acl_deluser("auditor")


def test_audit_runs_under_a_read_only_acl_user(real_server: RedisServer, raw: redis.Redis,
                                               auditor: str) -> None:
    clock = VirtualClock()
    expected = seed_v026(raw, clock)
    assert found(run(auditor, clock)) == expected
    client = redis.Redis.from_url(auditor)
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.set("k", "v")  # the ACL itself refuses writes, not only our guard
    client.close()


def test_password_from_env_is_used_and_never_printed(real_server: RedisServer, raw: redis.Redis,
                                                     auditor: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    no_password = auditor.replace(":audit-pw@", "@")
    monkeypatch.setenv("REDISCLI_AUTH", "audit-pw")
    out, err = io.StringIO(), io.StringIO()
    assert run_audit(no_password, AuditOptions(), out=out, err=err) == 0
    monkeypatch.setenv("KEYSIM_REDIS_PASSWORD", "wrong-secret")
    out, err = io.StringIO(), io.StringIO()
    assert run_audit(no_password, AuditOptions(), out=out, err=err) == 2
    assert "wrong-secret" not in err.getvalue() + out.getvalue()
    assert "cannot use" in err.getvalue()


# --- CLI ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reads", ["auto", "script", "pipeline"])
def test_cli_json_fix_plan_and_exit_codes(real_server: RedisServer, raw: redis.Redis,
                                          tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          reads: str) -> None:
    clock = VirtualClock()
    expected = seed_v024(raw, clock)
    plan = tmp_path / "plan.redis"
    code = main(["audit", real_server.url, "--json", "--fix-plan", str(plan), "--queue", Q,
                 "--scan-count", "5", "--now-ms", str(clock.now_ns // 10**6), "--reads", reads])
    if reads == "script" and parse_version(real_server.version) < (7, 0):
        assert code == 2  # --reads script asks for EVAL_RO, which Redis 6.2 does not have
        assert "unknown command `EVAL_RO`" in capsys.readouterr().err
        return
    assert code == 1
    doc = json.loads(capsys.readouterr().out)
    (queue,) = doc["queues"]
    assert {(f["invariant"], f["kind"], f["key"], f["leaked"]) for f in queue["findings"]} == expected
    lines = plan.read_text().splitlines()
    assert lines[0] == f"SELECT {raw.connection_pool.connection_kwargs.get('db', 0)}"
    evals = [line for line in lines if line.startswith("EVALSHA ")]
    assert len(evals) == 2 and all(f'"{t(z)}"' in " ".join(evals) for z in ("a1", "a2"))


def test_cli_cannot_connect_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "redis://user:hunter2@127.0.0.1:1/0"]) == 2
    err = capsys.readouterr().err
    assert "cannot use redis://user:***@127.0.0.1:1/0" in err and "hunter2" not in err


def test_cli_bad_url_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "http://localhost"]) == 2
    assert "REDIS_URL must start with redis://" in capsys.readouterr().err


def test_options_name_the_bad_parameter() -> None:
    with pytest.raises(ValueError, match="pause_ms"):
        AuditOptions(pause_ms=-1)
    with pytest.raises(ValueError, match="queue"):
        AuditOptions(queues=(" ",))  # blank: Asynq refuses it too
    assert AuditOptions(queues=("a{b}:*",)).queues == ("a{b}:*",)  # any other name is Asynq's
    with pytest.raises(ValueError, match="clock"):
        AuditOptions(clock="virtual")
