"""``keysim audit`` of a Redis Cluster: every master scanned, findings merged, none invented.

Queues are placed one per master (their ``{q}`` hash tag decides where), ``asynq:queues`` and
the registries live in slots of their own; every test runs on the run's private 3-master
cluster (``real_cluster``).
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from audit import AuditOptions
from audit.acl import rules
from audit.apply import run_apply
from audit.command import run_audit
from broker import Broker
from broker.cluster import LocalCluster
from model import keys
from model.clock import VirtualClock
from model.message import TaskMessage
from model.policy import ASYNQ_POLICY, Policy
from model.states import TaskState

Finding = tuple[str, str, str, bool]



def node_of(client: RedisCluster, key: str) -> str:
    return str(client.nodes_manager.get_node_from_slot(key_slot(key.encode())).name)


def one_queue_per_master(client: RedisCluster) -> list[str]:
    found: dict[str, str] = {}
    for i in range(1000):
        found.setdefault(node_of(client, keys.pending(f"q{i}")), f"q{i}")
        if len(found) == 3:
            return sorted(found.values())
    raise AssertionError("no 3 queues on distinct masters")


def msg(task_id: str, queue: str, **kw: Any) -> TaskMessage:
    return TaskMessage(type="email", payload=task_id.encode(), id=task_id, queue=queue, **kw)


def audit_json(url: str, clock: VirtualClock, **kw: Any) -> tuple[int, dict[str, Any], str]:
    out, err = io.StringIO(), io.StringIO()
    options = AuditOptions(now_ms=clock.now_ns // 10**6, chunk=3, scan_count=7, **kw)
    code = run_audit(url, options, as_json=True, out=out, err=err)
    return code, (json.loads(out.getvalue()) if out.getvalue() else {}), err.getvalue()


def findings(doc: dict[str, Any]) -> set[Finding]:
    every = [f for q in doc["queues"] for f in q["findings"]] + doc["global"]["findings"]
    return {(f["invariant"], f["kind"], f["key"], f["leaked"]) for f in every}


def seed_healthy(client: RedisCluster, queue: str, clock: VirtualClock) -> None:
    """Every state at once, mid-flight, written by the reference broker on the cluster."""
    b = Broker(client, "reference", Policy(), clock)
    got = {}
    for task_id in ("r1", "c1", "x1", "a1"):
        b.enqueue(msg(task_id, queue, retention=3600))
        m = b.dequeue(queue)
        assert m is not None and m.id == task_id
        got[task_id] = m
    b.retry(got["r1"], clock.seconds + 30, "flaky")
    b.mark_as_complete(got["c1"])
    b.archive(got["x1"], "dead")
    b.enqueue_unique(msg("p2", queue), ttl=3600)
    b.schedule_unique(msg("s1", queue), clock.seconds + 60, ttl=3600)
    b.add_to_group(msg("g1", queue), "grp")
    b.add_to_group(msg("g2", queue), "grp")
    clock.advance(b.policy.aggregation_grace)
    b.aggregation_check(queue, "grp", "set1")
    b.pause(queue)
    b.release_connection()


def seed_leaks(client: RedisCluster, queue: str, clock: VirtualClock) -> set[Finding]:
    """A zombie hash (BZ-2), a stale unique lock (BZ-4) and a dangling pending id, written by
    Asynq v0.26.0's scripts on the cluster; returns the findings they must produce."""
    b = Broker(client, "asynq-v0.26.0", replace(ASYNQ_POLICY, max_archive_size=2), clock)
    b.enqueue_unique(msg("u1", queue), ttl=3600)
    b.delete_all_tasks(queue, TaskState.PENDING)  # u1's lock outlives it
    b.schedule(msg("s1", queue), clock.seconds + 600)
    b.schedule(msg("s2", queue), clock.seconds + 600)
    b.archive_task(queue, "s1")
    b.archive_task(queue, "s2")  # capacity 1 trims s1 from the index, its hash stays
    b.enqueue(msg("p1", queue))
    b.enqueue(msg("p2", queue))
    client.delete(keys.task(queue, "p2"))  # eviction: a dangling pending id
    b.release_connection()
    return {("I1", "zombie", keys.task(queue, "s1"), True),
            ("I6", "orphan lock", keys.unique(queue, "email", b"u1"), True),
            ("I2", "dangling id", keys.pending(queue), False)}


def register_server(client: RedisCluster, member_id: str, deadline_s: float, ttl: bool) -> str:
    """A server's registry entry in ``asynq:servers`` and its info key (another slot)."""
    key = keys.REGISTRY_MEMBERS[keys.SERVERS](member_id)
    client.zadd(keys.SERVERS, {key: deadline_s})
    client.set(key, b"info", ex=10 if ttl else None)
    return key


def test_a_healthy_cluster_keyspace_has_no_finding(real_cluster: LocalCluster,
                                                   cluster_client: RedisCluster) -> None:
    clock = VirtualClock()
    queues = one_queue_per_master(cluster_client)
    for queue in queues:
        seed_healthy(cluster_client, queue, clock)
    # A live server whose info key has no TTL yet: registered now, so not a leak, although
    # the registry and the key live on different masters.
    member = register_server(cluster_client, "h:1:live", clock.seconds + 10, ttl=False)
    assert node_of(cluster_client, member) != node_of(cluster_client, keys.SERVERS)
    code, doc, err = audit_json(real_cluster.urls[1], clock)  # any node is a seed
    assert (code, findings(doc), doc["unverified"]) == (0, set(), 0), (doc, err)
    # Every master's deadlines read by PEXPIRETIME of its own keys, candidates by MULTI/EXEC.
    assert (doc["deadlines"], doc["deadlines_note"], doc["consistency"]) == \
        ("PEXPIRETIME", "", "MULTI/EXEC re-reads")
    assert [q["queue"] for q in doc["queues"]] == queues
    assert all(q["registered"] and q["tasks_by_state"] for q in doc["queues"])
    assert doc["global"]["members"] == {"asynq:servers live": 1}
    assert doc["global"]["bytes_by_family"].keys() == {"queues", "registry", "server info"}
    assert "Redis Cluster, 3 masters" in doc["target"]
    progress = [line for line in err.splitlines() if line.startswith("keysim audit: master ")]
    assert len(progress) == 6 and sum("1 queue(s), " in line for line in progress) == 3, err


def test_seeded_leaks_are_found_exactly_on_every_master(real_cluster: LocalCluster,
                                                         cluster_client: RedisCluster) -> None:
    clock = VirtualClock()
    queues = one_queue_per_master(cluster_client)
    expected: set[Finding] = set()
    for queue in queues:
        expected |= seed_leaks(cluster_client, queue, clock)
    stale = register_server(cluster_client, "h:2:gone", clock.seconds - 7200, ttl=False)
    cluster_client.zrem(keys.SERVERS, stale)  # no registration names it any more
    expected.add(("I14", "registry member without ttl", stale, True))
    code, doc, err = audit_json(real_cluster.url, clock)
    assert (code, findings(doc)) == (1, expected), err
    masters = {node_of(cluster_client, key) for _, _, key, _ in expected}
    assert len(masters) == 3  # the leaks were spread over every master, and found on each
    for report in doc["queues"]:
        assert {f["kind"] for f in report["findings"]} == {"zombie", "orphan lock", "dangling id"}


def test_one_queue_of_a_cluster(real_cluster: LocalCluster, cluster_client: RedisCluster) -> None:
    clock = VirtualClock()
    queues = one_queue_per_master(cluster_client)
    leaks = [seed_leaks(cluster_client, queue, clock) for queue in queues]
    code, doc, _ = audit_json(real_cluster.url, clock, queues=(queues[2],))
    assert (code, [q["queue"] for q in doc["queues"]], doc["global"]) == (1, [queues[2]], None)
    assert {(f["invariant"], f["kind"], f["key"], f["leaked"])
            for f in doc["queues"][0]["findings"]} == leaks[2]
    code, doc, err = audit_json(real_cluster.url, clock, queues=("nope",))
    assert code == 2 and "no queue 'nope'" in err and "on any master" in err


def test_fix_plans_are_refused_on_a_cluster(real_cluster: LocalCluster,
                                            cluster_client: RedisCluster, tmp_path: Path) -> None:
    clock = VirtualClock()
    queue = one_queue_per_master(cluster_client)[0]
    seed_leaks(cluster_client, queue, clock)
    before = sorted(cluster_client.scan_iter())
    out, err = io.StringIO(), io.StringIO()
    plan = tmp_path / "plan.json"
    assert run_audit(real_cluster.url, AuditOptions(), fix_plan_path=plan, out=out, err=err) == 2
    assert "Redis Cluster" in err.getvalue() and "each guard must run on the master" in err.getvalue()
    assert not plan.exists() and out.getvalue() == ""
    # A plan made on a single server is refused on a cluster node before any guard runs.
    plan.write_text(json.dumps({
        "format": "keysim-audit-plan", "version": 1,
        "server": {"run_id": "f" * 40, "db": 0}, "written_at": "",
        "actions": [{"queue": queue, "key": keys.task(queue, "s1"), "kind": "zombie",
                     "invariant": "I1", "task_id": "s1"}]}))
    assert run_apply(real_cluster.url, plan, execute=True, out=out, err=err) == 2
    assert "fix plans are not made or applied on a cluster" in err.getvalue()
    assert sorted(cluster_client.scan_iter()) == before


def test_a_read_only_acl_user_audits_a_cluster_with_cluster_slots(
        real_cluster: LocalCluster, cluster_client: RedisCluster) -> None:
    clock = VirtualClock()
    queue = one_queue_per_master(cluster_client)[1]
    expected = seed_leaks(cluster_client, queue, clock)
    nodes = [redis.Redis.from_url(url) for url in real_cluster.urls]
    try:
        for node in nodes:  # ACL users are per node
            cast(Any, node).execute_command("ACL", "SETUSER", "auditor", "reset", "on",
                                            ">audit-pw", *rules().split())
        url = real_cluster.url.replace("redis://", "redis://auditor:audit-pw@", 1)
        code, _, err = audit_json(url, clock)
        assert code == 2 and "a cluster's audit also needs +cluster|slots" in err, err
        assert "audit-pw" not in err
        for node in nodes:
            cast(Any, node).execute_command("ACL", "SETUSER", "auditor", "+cluster|slots")
        code, doc, err = audit_json(url, clock)
        assert (code, findings(doc)) == (1, expected), err
    finally:
        for node in nodes:
            node.acl_deluser("auditor")
            node.close()
