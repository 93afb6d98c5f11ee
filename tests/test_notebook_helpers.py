"""keysim.notebook: tables, keyspace rendering, program replay and the zoo table; and
KeyspaceSnapshot.to_rows, which the tables are built from."""

from __future__ import annotations

import fakeredis
import pytest

from broker import Broker
from harness.machine import MachineConfig
from harness.zoo import CASES
from keysim.notebook import (
    Table,
    bytes_label,
    diff_table,
    keyspace_table,
    parse_program,
    replay_program,
    transitions_table,
    zoo_table,
)
from model.clock import VirtualClock
from model.message import TaskMessage
from model.states import TaskState

PROGRAM = """from harness.machine import MachineConfig, make_machine
M = make_machine(MachineConfig(variant='asynq-v0.26.0', oracle=False))
state = M()
state.keyspace_is_sound()
state.write_result(data=b'r1', queue='default', task_id='t0')
state.keyspace_is_sound()
state.teardown()"""


def test_table_text_and_html() -> None:
    table = Table(("key", "n"), [("a<b", 1.25), ("c", 2)], "caption & more")
    assert str(table) == "caption & more\nkey | n\n----+----\na<b | 1.2\nc   | 2"
    assert table._repr_html_().startswith(
        "<table><caption style='text-align:left'>caption &amp; more</caption>")
    assert "<code>a&lt;b</code>" in table._repr_html_()
    with pytest.raises(ValueError, match=r"^rows\[0\] has 1 cells, expected 2 \(columns: key, n\)$"):
        Table(("key", "n"), [("x",)])


def test_keyspace_table_after_dequeue() -> None:
    clock = VirtualClock()
    broker = Broker(fakeredis.FakeRedis(), "reference", clock=clock)
    broker.enqueue(TaskMessage(type="t", payload=b"p", id="t1", queue="q"))
    broker.dequeue("q")
    table = keyspace_table(broker.snapshot("q"))
    assert table.caption == "queue 'q': 3 keys, registered in asynq:queues"
    assert table.rows == [
        ("asynq:{q}:active", "list", "[t1]", "none"),
        ("asynq:{q}:lease", "zset", f"{{t1: {clock.seconds + 30} (now+30s)}}", "none"),
        ("asynq:{q}:t:t1", "hash", "{msg: <msg id=t1 retried=0 err=''>, state: 'active'}", "none"),
    ]


def test_diff_table_lists_only_differences() -> None:
    left = Broker(fakeredis.FakeRedis(), "reference")
    right = Broker(fakeredis.FakeRedis(), "reference")
    for b in (left, right):
        b.enqueue(TaskMessage(type="t", payload=b"p", id="t1", queue="q"))
    right.enqueue(TaskMessage(type="t", payload=b"p", id="t2", queue="q"))
    table = diff_table(left.snapshot("q"), right.snapshot("q"), "one", "two")
    assert table.columns == ("key", "one", "two")
    assert [r[0] for r in table.rows] == ["asynq:{q}:pending", "asynq:{q}:t:t2"]
    assert table.rows[0][1:] == ("list [t1]", "list [t2, t1]")  # LPUSH: newest at the head
    assert table.rows[1][1] == "(absent)"


def test_parse_program() -> None:
    assert parse_program(PROGRAM) == [
        ("write_result", {"data": b"r1", "queue": "default", "task_id": "t0"})]
    assert parse_program("state.delete_all(state=TaskState.PENDING, group='g0')") == [
        ("delete_all", {"state": TaskState.PENDING, "group": "g0"})]
    with pytest.raises(ValueError, match=r"^program line 1: expected keyword arguments only$"):
        parse_program("state.tick(5)")
    with pytest.raises(ValueError, match=r"^program line 1: unsupported argument os\.sep$"):
        parse_program("state.tick(seconds=os.sep)")


def test_replay_program_shows_what_a_defect_leaves() -> None:
    leaky = replay_program(PROGRAM, MachineConfig(variant="asynq-v0.26.0", oracle=False))
    assert leaky.steps == ["write_result('default', 't0', b'r1')"]
    assert leaky.snapshot.to_rows() == [("asynq:{default}:t:t0", "hash", "{result: 'r1'}", "none")]
    assert [v.invariant for v in leaky.violations] == ["I1", "I12"]
    clean = replay_program(PROGRAM, MachineConfig(variant="reference"))
    assert (clean.snapshot.entries, clean.violations, clean.stopped) == ({}, [], None)


def test_transitions_and_zoo_tables() -> None:
    assert transitions_table(["dequeue"]).rows == [("dequeue", "T8", "server", "pending", "active")]
    with pytest.raises(ValueError, match=r"^names: unknown transition\(s\) nope$"):
        transitions_table(["nope"])
    zoo = zoo_table([])
    assert len(zoo) == len(CASES) and {r[7] for r in zoo.rows} == {"not run"}


def test_bytes_label() -> None:
    assert [bytes_label(n) for n in (12, 2048, 5 * 2**20)] == ["12 B", "2.00 KiB", "5.00 MiB"]
