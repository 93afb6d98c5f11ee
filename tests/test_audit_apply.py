"""``keysim audit --fix-plan`` and ``--apply`` on real Redis: the plan deletes exactly its leaks,
each guard skips a key that stopped being its leak between the audit and the apply, a dry run
and a refused plan change nothing, and the redis-cli form runs under ``redis-cli`` as is.

Leaks are planted with raw writes (each is one of the shapes Asynq leaves, see test_audit.py
for the sequences that make them); "nothing changed" compares every key's DUMP and deadline, the
test servers having DEBUG (and so DEBUG DIGEST) disabled.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from audit import AuditOptions, audit, connect
from audit.apply import ApplyReport, PlanRefused, apply_plan, run_apply
from audit.apply import connect as connect_writable
from audit.plan import GUARD_OF_KIND, Plan, PlanError, build_plan, load_plan, server_identity, to_json
from broker.codec import encode_message
from broker.servers import RedisServer
from keysim.cli import main
from model import keys
from model.message import TaskMessage

Q, DEAD = "default", "old"
Fingerprint = dict[bytes, tuple[Any, int]]


def fingerprint(r: redis.Redis) -> Fingerprint:
    """Every key's DUMP and PEXPIRETIME (Redis 6.2 has none: whether it has a TTL): equal
    fingerprints, equal keyspaces."""
    try:
        return {k: (r.dump(k), r.pexpiretime(k)) for k in r.scan_iter()}
    except redis.ResponseError:
        return {k: (r.dump(k), r.pttl(k) >= 0) for k in r.scan_iter()}


def task_hash(r: redis.Redis, task_id: str, state: str = "archived", queue: str = Q,
              **fields: str) -> str:
    key = keys.task(queue, task_id)
    message = TaskMessage(type="email", payload=task_id.encode(), id=task_id, queue=queue)
    values: dict[str, str | bytes] = {"msg": encode_message(message), "state": state, **fields}
    r.hset(key, mapping=values)  # type: ignore[arg-type]  # redis-py's mapping type is invariant
    return key


def healthy(r: redis.Redis) -> None:
    """Registered queue with a pending, an archived and a unique scheduled task: no finding."""
    r.sadd(keys.ALL_QUEUES, Q)
    r.lpush(keys.pending(Q), "ok1")
    task_hash(r, "ok1", "pending", pending_since="1")
    r.zadd(keys.archived(Q), {"ok2": 1})
    task_hash(r, "ok2", "archived")
    lock = keys.unique(Q, "email", b"ok3")
    r.set(lock, "ok3", ex=3600)
    r.zadd(keys.scheduled(Q), {"ok3": 2_000_000_000})
    task_hash(r, "ok3", "scheduled", unique_key=lock)


# Each leak: plant it (returns the key the plan acts on) and its finding kind.
def zombie(r: redis.Redis) -> str:
    return task_hash(r, "z1")


def grouped_zombie(r: redis.Redis) -> str:
    return task_hash(r, "z2", "aggregating", group="grp")


def stub(r: redis.Redis) -> str:
    r.hset(keys.task(Q, "ghost"), "result", "42")
    return keys.task(Q, "ghost")


def stale_lock(r: redis.Redis) -> str:
    lock = keys.unique(Q, "email", b"gone")
    r.set(lock, "gone", ex=3600)
    return lock


def lock_without_ttl(r: redis.Redis) -> str:
    lock = keys.unique(Q, "email", b"forever")
    r.set(lock, "forever")
    return lock


def counter_without_ttl(r: redis.Redis) -> str:
    r.set(keys.processed_daily(Q, "2020-01-01"), 7)
    return keys.processed_daily(Q, "2020-01-01")


def leftover(r: redis.Redis) -> str:
    r.set(keys.processed_total(DEAD), 3)
    return keys.processed_total(DEAD)


def dangling(r: redis.Redis) -> str:
    r.zadd(keys.archived(Q), {"lost": 1})
    return keys.archived(Q)


LEAKS: dict[str, tuple[Callable[[redis.Redis], str], str]] = {
    "zombie": (zombie, "zombie"), "grouped zombie": (grouped_zombie, "zombie"),
    "stub": (stub, "result-only hash"), "stale lock": (stale_lock, "orphan lock"),
    "lock without ttl": (lock_without_ttl, "lock without ttl"),
    "counter without ttl": (counter_without_ttl, "counter without ttl"),
    "leftover": (leftover, "unregistered leftover"), "dangling": (dangling, "dangling id"),
}


def make_plan(url: str) -> Plan:
    client = connect(url)
    try:
        result = audit(client, AuditOptions(chunk=3, scan_count=5))
        return build_plan(result, server_identity(client, url), url)
    finally:
        client.close()


def apply(url: str, plan: Plan, execute: bool) -> ApplyReport:
    client = connect_writable(url)
    try:
        return apply_plan(client, plan, execute=execute)
    finally:
        client.close()


def with_db(url: str, db: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


@pytest.fixture
def raw(real_client: redis.Redis) -> redis.Redis:
    return real_client


@pytest.fixture
def url(real_server: RedisServer, raw: redis.Redis) -> str:
    return with_db(real_server.url, int(raw.connection_pool.connection_kwargs.get("db") or 0))


def plant_all(r: redis.Redis) -> dict[str, str]:
    """Healthy tasks plus one leak of every kind; key -> kind of each leak."""
    healthy(r)
    return {plant(r): kind for plant, kind in LEAKS.values()}


# --- the plan as a whole ---------------------------------------------------------------------------
def test_plan_names_the_server_and_every_leak_with_its_guard(url: str, raw: redis.Redis) -> None:
    planted = plant_all(raw)
    plan = make_plan(url)
    assert {a.key: a.kind for a in plan.actions} == planted
    assert plan.server.run_id == raw.info("server")["run_id"] and plan.server.db == 0
    doc = json.loads(to_json(plan))
    assert doc["server"]["address"] == urlsplit(url).netloc
    for action in doc["actions"]:
        assert action["requires"] == GUARD_OF_KIND[action["kind"]].requires
    assert load_plan(to_json(plan)).actions == plan.actions
    assert [(o["kind"], o["key"]) for o in doc["not_planned"]] == [
        ("unregistered queue", keys.ALL_QUEUES)]  # the dead queue: reported, not acted on


def test_dry_run_changes_nothing_and_apply_deletes_exactly_the_plan(url: str, raw: redis.Redis) -> None:
    planted = plant_all(raw)
    plan = make_plan(url)
    before = fingerprint(raw)
    dry = apply(url, plan, execute=False)
    assert fingerprint(raw) == before
    assert dry.counts() == {"would delete": len(planted)}
    done = apply(url, plan, execute=True)
    assert done.counts() == {"deleted": len(planted)}
    after = fingerprint(raw)
    removed = set(planted) - {keys.archived(Q)}  # the dangling id leaves archived, the key stays
    assert set(before) - set(after) == {k.encode() for k in removed}
    changed = {k for k in after if after[k] != before[k]}
    assert changed == {keys.archived(Q).encode()}
    assert raw.zrange(keys.archived(Q), 0, -1) == [b"ok2"]
    assert make_plan(url).actions == ()
    assert apply(url, plan, execute=True).counts() == {"gone": len(planted)}


# --- each guard skips a key that is no longer its leak ----------------------------------------------
def _in_pending(r: redis.Redis) -> str:
    r.lpush(keys.pending(Q), "z1")
    return f"its id is in {keys.pending(Q)} now"


def _in_group(r: redis.Redis) -> str:
    r.zadd(keys.group(Q, "grp"), {"z2": 1})
    return f"its id is in {keys.group(Q, 'grp')} now"


def _in_aggregation_set(r: redis.Redis) -> str:
    staged = keys.group_set(Q, "grp", "set1")
    r.zadd(staged, {"z2": 1})
    r.zadd(keys.aggregation_sets(Q), {staged: 2_000_000_000})
    return f"its id is in {staged} now"


HEALS: dict[str, tuple[str, Callable[[redis.Redis], str]]] = {
    "zombie back in archived": ("zombie", lambda r: (r.zadd(keys.archived(Q), {"z1": 1}),
                                                     f"its id is in {keys.archived(Q)} now")[1]),
    "zombie now pending": ("zombie", _in_pending),
    "zombie got a TTL": ("zombie", lambda r: (r.expire(keys.task(Q, "z1"), 600), "it has a TTL now")[1]),
    "zombie in its group": ("grouped zombie", _in_group),
    "zombie in an aggregation set": ("grouped zombie", _in_aggregation_set),
    "stub now complete": ("stub", lambda r: (task_hash(r, "ghost"), "it has msg and state now")[1]),
    "lock owner now exists": ("stale lock", lambda r: (
        task_hash(r, "gone", "pending", unique_key=keys.unique(Q, "email", b"gone")),
        "its owner exists and holds it now")[1]),
    "lock taken by another task": ("stale lock", lambda r: (
        r.set(keys.unique(Q, "email", b"gone"), "other", ex=60), "another task holds it now")[1]),
    "lock got a TTL": ("lock without ttl", lambda r: (
        r.expire(keys.unique(Q, "email", b"forever"), 60), "it has a TTL now")[1]),
    "lock value changed": ("lock without ttl", lambda r: (
        r.set(keys.unique(Q, "email", b"forever"), "x"), "its value changed")[1]),
    "counter got a TTL": ("counter without ttl", lambda r: (
        r.expire(keys.processed_daily(Q, "2020-01-01"), 60), "it has a TTL now")[1]),
    "dead queue registered again": ("leftover", lambda r: (
        r.sadd(keys.ALL_QUEUES, DEAD), "its queue is registered now")[1]),
    "dead queue has work again": ("leftover", lambda r: (
        r.lpush(keys.pending(DEAD), "n1"), f"its queue has {keys.pending(DEAD)} now")[1]),
    "dangling id has its hash again": ("dangling", lambda r: (
        task_hash(r, "lost"), "its task hash exists now")[1]),
}


@pytest.mark.parametrize("case", sorted(HEALS))
def test_guard_skips_a_key_that_stopped_being_a_leak(case: str, url: str, raw: redis.Redis) -> None:
    leak, heal = HEALS[case]
    plant, kind = LEAKS[leak]
    healthy(raw)
    key = plant(raw)
    plan = make_plan(url)
    assert [(a.key, a.kind) for a in plan.actions] == [(key, kind)]
    reason = heal(raw)
    before = fingerprint(raw)
    (outcome,) = apply(url, plan, execute=True).outcomes
    assert (outcome.status, outcome.reason) == ("skipped", reason)
    assert fingerprint(raw) == before


@pytest.mark.parametrize("leak", sorted(LEAKS))
def test_a_key_deleted_meanwhile_is_gone(leak: str, url: str, raw: redis.Redis) -> None:
    healthy(raw)
    key = LEAKS[leak][0](raw)
    plan = make_plan(url)
    if leak == "dangling":
        raw.zrem(key, "lost")
    else:
        raw.delete(key)
    before = fingerprint(raw)
    assert [o.status for o in apply(url, plan, execute=True).outcomes] == ["gone"]
    assert fingerprint(raw) == before


# --- refusals -------------------------------------------------------------------------------------
def test_a_plan_of_another_server_or_db_is_refused(url: str, raw: redis.Redis, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    plant_all(raw)
    plan = make_plan(url)
    before = fingerprint(raw)
    foreign = replace(plan, server=replace(plan.server, run_id="0" * 40))
    with pytest.raises(PlanRefused, match="made on another server"):
        apply(url, foreign, execute=True)
    path = tmp_path / "plan.json"
    path.write_text(to_json(foreign))
    assert main(["audit", url, "--apply", str(path), "--yes"]) == 2
    assert "run_id 0000" in capsys.readouterr().err
    path.write_text(to_json(plan))
    assert main(["audit", with_db(url, 1), "--apply", str(path), "--yes"]) == 2
    assert "the plan was made on db 0, the URL selects db 1" in capsys.readouterr().err
    assert fingerprint(raw) == before


def _doc(url: str, raw: redis.Redis) -> dict[str, Any]:
    plant_all(raw)
    doc: dict[str, Any] = json.loads(to_json(make_plan(url)))
    return doc


def _action(doc: dict[str, Any], of_kind: str, **change: Any) -> dict[str, Any]:
    action = next(a for a in doc["actions"] if a["kind"] == of_kind)
    action.update(change)
    return doc


MALFORMED: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "not json": (lambda d: "UNLINK x", "not JSON"),
    "a list": (lambda d: [d], "'format' is not"),
    "wrong format": (lambda d: {**d, "format": "other"}, "'format' is not"),
    "newer version": (lambda d: {**d, "version": 2}, "version 2"),
    "no server": (lambda d: {k: v for k, v in d.items() if k != "server"}, "'server' is missing"),
    "db not an int": (lambda d: {**d, "server": {**d["server"], "db": "0"}},
                      "'server.db' must be an integer"),
    "empty run_id": (lambda d: {**d, "server": {**d["server"], "run_id": ""}}, "run_id must be non-empty"),
    "actions not a list": (lambda d: {**d, "actions": {}}, "'actions' must be a list"),
    "unknown kind": (lambda d: _action(d, "zombie", kind="misplaced"), "kind 'misplaced' has no guard"),
    "key of another queue": (lambda d: _action(d, "zombie", queue="other"), "is not a key the 'zombie'"),
    "zombie of another id": (lambda d: _action(d, "zombie", task_id="z9"), "with task_id 'z9'"),
    "registry as leftover": (lambda d: _action(d, "unregistered leftover", key=keys.ALL_QUEUES),
                             "'asynq:queues' is not a key"),
    "task as a lock": (lambda d: _action(d, "orphan lock", key=keys.task(Q, "ok1")), "is not a key"),
    "pending as a counter": (lambda d: _action(d, "counter without ttl", key=keys.pending(Q)),
                             "is not a key"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_plan_is_a_clear_error(case: str, url: str, raw: redis.Redis, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    change, message = MALFORMED[case]
    bad = change(_doc(url, raw))
    path = tmp_path / "plan.json"
    path.write_text(bad if isinstance(bad, str) else json.dumps(bad))
    before = fingerprint(raw)
    assert main(["audit", url, "--apply", str(path), "--yes"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keysim audit --apply: not a valid plan") and message in err
    assert len(err.splitlines()) == 1
    assert fingerprint(raw) == before
    with pytest.raises(PlanError, match="not a valid plan"):
        load_plan(path.read_text())


def test_cli_apply_usage_errors(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", url, "--yes"]) == 2
    assert main(["audit", url, "--apply", "p.json", "--fix-plan", str(tmp_path / "x")]) == 2
    assert "--yes goes with --apply" in capsys.readouterr().err
    assert main(["audit", url, "--apply", str(tmp_path / "missing.json")]) == 2
    assert "cannot read plan" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"the db in redis://127\.0\.0\.1:1/abc must be an integer"):
        connect_writable("redis://127.0.0.1:1/abc")


def test_a_user_without_info_gets_no_plan_and_one_clear_line(url: str, raw: redis.Redis, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    plant_all(raw)
    raw.acl_setuser("noinfo", reset=True, enabled=True, passwords=["+pw"], keys=["*"],
                    reset_channels=True, categories=["+@read", "-@write", "-@dangerous"],
                    commands=["+multi", "+exec", "+select", "+ping"])
    try:
        reader = url.replace("redis://", "redis://noinfo:pw@", 1)
        path = tmp_path / "plan.json"
        assert main(["audit", reader, "--fix-plan", str(path)]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert "cannot write a fix plan: INFO is refused" in line and "+info" in line
        assert not path.exists()
    finally:
        raw.acl_deluser("noinfo")


def test_apply_runs_with_exactly_the_acl_the_help_names(url: str, raw: redis.Redis,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    planted = plant_all(raw)
    plan = make_plan(url)
    with pytest.raises(SystemExit):
        main(["audit", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    acl = help_text.split("its ACL: ")[1].rstrip(".").split()
    raw.acl_setuser("fixer", reset=True, enabled=True, passwords=["+pw"], keys=["*"],
                    reset_channels=True, categories=[a for a in acl if a.startswith("+@")],
                    commands=[a for a in acl if not a.startswith("+@")])
    try:
        fixer = url.replace("redis://", "redis://fixer:pw@", 1)
        assert apply(fixer, plan, execute=True).counts() == {"deleted": len(planted)}
    finally:
        raw.acl_deluser("fixer")


def test_help_lists_every_kind_a_plan_acts_on(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["audit", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--apply PLAN" in out and "--yes" in out
    listed = out.split("Kinds with a guard: ")[1].split(" (only")[0]
    assert sorted(listed.split(", ")) == sorted(GUARD_OF_KIND)


# --- the command line end to end, JSON and redis-cli forms ------------------------------------------
def test_cli_fix_plan_then_dry_run_then_apply(url: str, raw: redis.Redis, tmp_path: Path) -> None:
    planted = plant_all(raw)
    path = tmp_path / "plan.json"
    err = io.StringIO()
    assert main(["audit", url, "--fix-plan", str(path), "--json"]) == 1
    before = fingerprint(raw)
    out = io.StringIO()
    assert run_apply(url, path, out=out, err=err) == 0
    assert out.getvalue().splitlines()[-1].endswith(
        f"would delete {len(planted)}, skipped 0, gone 0; nothing was changed (add --yes to apply)")
    assert fingerprint(raw) == before
    out = io.StringIO()
    assert run_apply(url, path, execute=True, as_json=True, out=out, err=err) == 0
    doc = json.loads(out.getvalue())
    assert doc["counts"] == {"deleted": len(planted)} and not doc["dry_run"]
    assert {o["key"] for o in doc["outcomes"]} == set(planted)
    assert main(["audit", url]) == 0


def test_redis_cli_runs_the_plan_as_is(url: str, raw: redis.Redis, tmp_path: Path) -> None:
    cli = shutil.which("redis-cli") or shutil.which("valkey-cli")
    if cli is None:
        pytest.skip("no redis-cli on PATH")
    planted = plant_all(raw)
    path = tmp_path / "plan.redis"
    assert main(["audit", url, "--fix-plan", str(path)]) == 1
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", str(parts.port)
    foreign = path.read_text().replace(raw.info("server")["run_id"], "f" * 40)
    before = fingerprint(raw)
    refused = subprocess.run([cli, "-h", host, "-p", port, "-n", "0"], input=foreign, text=True,
                             capture_output=True, check=False)
    assert refused.stdout.count("keysim plan refused") == len(planted)
    assert fingerprint(raw) == before
    with path.open() as plan:
        done = subprocess.run([cli, "-h", host, "-p", port, "-n", "0"], stdin=plan, text=True,
                              capture_output=True, check=False)
    assert done.returncode == 0 and done.stderr == ""
    assert "ERR" not in done.stdout
    assert done.stdout.split().count("deleted") == len(planted)
    assert main(["audit", url]) == 0
