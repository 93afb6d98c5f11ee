"""The machine benchmark (benchmarks.machine) and the machine's fast fakeredis read it relies on."""

from __future__ import annotations

import pytest
from hypothesis.stateful import RULE_MARKER

from benchmarks.machine import BenchResult, Rate, bench, format_results, noop_machine
from harness.fakeserver import snapshot_from_memory
from harness.machine import KeyMachine, MachineConfig, make_machine
from harness.swarm import rule_names
from model.states import TaskState


def test_noop_machine_has_the_machines_rules_with_the_same_strategies() -> None:
    noop = noop_machine()
    assert noop.rules_named() == rule_names(KeyMachine)
    for name in rule_names(KeyMachine):
        ours = getattr(getattr(KeyMachine, name), RULE_MARKER).arguments
        theirs = getattr(getattr(noop, name), RULE_MARKER).arguments
        assert theirs == ours, name


def test_bench_measures_both_machines_and_the_ratio() -> None:
    result = bench("fakeredis", examples=2, steps=5, repeats=1)
    assert result.machine.steps == result.noop.steps == 2 * 5
    assert result.machine.seconds > 0 and result.noop.seconds > 0
    assert result.ratio == pytest.approx(result.machine.per_second / result.noop.per_second)
    assert len(result.per_seed) == 1  # one seed: its pair is the pool
    assert result.per_seed[0] == pytest.approx(result.ratio)
    assert format_results([result]).splitlines()[1].startswith("fakeredis")


def test_bench_refuses_zero_repeats() -> None:
    with pytest.raises(ValueError, match="repeats"):
        bench("fakeredis", repeats=0)


def test_ratio_and_table_line() -> None:
    result = BenchResult("server", Rate("machine", 100, 2.0), Rate("noop", 100, 0.5),
                         (0.2, 0.31, 0.25))
    assert result.ratio == 0.25
    assert result.line().split() == ["server", "100", "50", "200", "25.0%", "20%–31%"]
    assert BenchResult("x", Rate("m", 1, 1.0), Rate("n", 1, 1.0)).line().split()[-1] == "-"


def test_fast_fakeredis_read_equals_the_broker_snapshot() -> None:
    # The machine reads fakeredis' memory directly; it must see exactly what the snapshot script
    # returns: every key family, TTLs (locks, daily counters), protobuf messages, sets, zsets.
    machine = make_machine(MachineConfig(variant="asynq-v0.26.0", oracle=False))()
    machine.enqueue(task_id="t0", queue="default", payload=b"a", retry=1, retention=30, unique=30)
    machine.schedule(task_id="t1", queue="default", payload=None, delay=10, unique=None,
                     group="g1")
    machine.add_to_group(task_id="t2", queue="default", payload=b"b", group="g0", unique=1)
    machine.work(queue="default", how="succeed", retention=30)
    machine.archive_pressure(queue="default", size=4, server=True)
    machine.queue_admin(queue="default", action="pause")
    machine.write_result(queue="default", task_id="t0", data=b"r1")
    machine.enqueue(task_id="t9", queue="default", payload=b"c", retry=0, retention=0,
                    unique=None)  # stays pending: the queue is paused
    fast = snapshot_from_memory(machine.sut, "default")
    slow = machine.sut.snapshot("default")
    assert fast is not None
    assert fast == slow, slow.diff(fast)
    kinds = {e.type.value for e in fast}
    assert kinds == {"hash", "list", "zset", "set", "string"}
    assert any(e.has_ttl for e in fast)
    assert fast.task_hash("t2") is not None
    assert fast.task_hash("t2")["state"] == TaskState.AGGREGATING.value  # type: ignore[index]


def test_fast_read_declines_a_real_redis_client() -> None:
    class NotABroker:
        client = object()

    assert snapshot_from_memory(NotABroker(), "default") is None
