"""Minimal counterexamples the stateful machine found in asynq-v0.24.0, kept as explicit tests.

Each program was printed by ``keysim.zoo.asynq_defects("asynq-v0.24.0", seed=0, flood=True)``
(one defect per round, each round ignoring the defects already found, some rounds with a zoo
case's focus or faults) and is replayed as is: it must still fail with the same check, and the
same defect must be recognised in the failure. BZ-11 is not here: no hunt reached Asynq's only
path to it (a grouped task run, failed, retried and forwarded) within its budget.
"""

# The programs are kept exactly as the machine printed them: long lines included.
# ruff: noqa: E501

from __future__ import annotations

from keysim.check import replay_program


def test_v0_24_0_bz18() -> None:
    """asynq-v0.24.0, BZ-18: stub: t:t0 has no msg or state field (fields: result)"""
    failure = replay_program(
        """\
from keysim.machine import MachineConfig, make_machine
KeyMachine_asynq_v0_24_0 = make_machine(MachineConfig(variant='asynq-v0.24.0', oracle=False, strict_locks=True))
state = KeyMachine_asynq_v0_24_0()
state.keyspace_is_sound()
state.write_result(data=b'r1', queue='default', task_id='t0')
state.keyspace_is_sound()
state.teardown()
""")
    assert failure is not None, "the defect no longer shows"
    assert (failure.invariant, failure.bug) == ('I1', 'BZ-18')


def test_v0_24_0_bz12() -> None:
    """asynq-v0.24.0, BZ-12: queue 'default' has 1 key(s) but is not in asynq:queues"""
    failure = replay_program(
        """\
from keysim.machine import MachineConfig, make_machine
KeyMachine_asynq_v0_24_0 = make_machine(MachineConfig(variant='asynq-v0.24.0', oracle=False, strict_locks=True, ignore=frozenset(['BZ-18'])))
state = KeyMachine_asynq_v0_24_0()
state.keyspace_is_sound()
state.write_result(data=b'r1', queue='default', task_id='t0')
state.keyspace_is_sound()
state.teardown()
""")
    assert failure is not None, "the defect no longer shows"
    assert (failure.invariant, failure.bug) == ('I12', 'BZ-12')


def test_v0_24_0_pause_unregistered() -> None:
    """asynq-v0.24.0, pause_unregistered: queue 'default' has 1 key(s) but is not in asynq:queues"""
    failure = replay_program(
        """\
from keysim.machine import MachineConfig, make_machine
KeyMachine_asynq_v0_24_0 = make_machine(MachineConfig(variant='asynq-v0.24.0', oracle=False, strict_locks=True, ignore=frozenset(['BZ-12', 'BZ-18'])))
state = KeyMachine_asynq_v0_24_0()
state.keyspace_is_sound()
state.queue_admin(action='pause', queue='default')
state.keyspace_is_sound()
state.teardown()
""")
    assert failure is not None, "the defect no longer shows"
    assert (failure.invariant, failure.bug) == ('I12', 'pause_unregistered')


def test_v0_24_0_bz2() -> None:
    """asynq-v0.24.0, BZ-2: zombie: t:p1 is archived but in no index (expected archived)"""
    failure = replay_program(
        """\
from keysim.machine import MachineConfig, make_machine
KeyMachine_asynq_v0_24_0 = make_machine(MachineConfig(variant='asynq-v0.24.0', oracle=False, strict_locks=True, ignore=frozenset(['BZ-12', 'BZ-18', 'pause_unregistered'])))
state = KeyMachine_asynq_v0_24_0()
state.keyspace_is_sound()
state.archive_pressure(queue='default', server=False, size=4)
state.keyspace_is_sound()
state.teardown()
""")
    assert failure is not None, "the defect no longer shows"
    assert (failure.invariant, failure.bug) == ('I1', 'BZ-2')


def test_v0_24_0_bz1() -> None:
    """asynq-v0.24.0, BZ-1: zombie: t:p1 is archived but in no index (expected archived)"""
    failure = replay_program(
        """\
from keysim.machine import MachineConfig, make_machine
KeyMachine_asynq_v0_24_0 = make_machine(MachineConfig(variant='asynq-v0.24.0', oracle=False, strict_locks=True, ignore=frozenset(['BZ-12', 'BZ-18', 'BZ-2', 'pause_unregistered'])))
state = KeyMachine_asynq_v0_24_0()
state.keyspace_is_sound()
state.archive_pressure(queue='default', server=True, size=4)
state.keyspace_is_sound()
state.teardown()
""")
    assert failure is not None, "the defect no longer shows"
    assert (failure.invariant, failure.bug) == ('I1', 'BZ-1')


def test_v0_24_0_bz5() -> None:
    """asynq-v0.24.0, BZ-5: early-release failure: unique:job:0cc175b9c0f1b6a831c399e269772661 is held by 't0', whose unique_key is (unset)"""
    failure = replay_program(
        """\
from keysim.machine import MachineConfig, make_machine
KeyMachine_asynq_v0_24_0 = make_machine(MachineConfig(variant='asynq-v0.24.0', oracle=False, strict_locks=True, ignore=frozenset(['BZ-1', 'BZ-12', 'BZ-18', 'BZ-2', 'pause_unregistered'])))
state = KeyMachine_asynq_v0_24_0()
state.keyspace_is_sound()
state.write_result(data=b'r1', queue='default', task_id='t0')
state.keyspace_is_sound()
state.enqueue(payload=b'a', queue='default', retention=0, retry=0, task_id='t0', unique=1)
state.keyspace_is_sound()
state.teardown()
""")
    assert failure is not None, "the defect no longer shows"
    assert (failure.invariant, failure.bug) == ('I6', 'BZ-5')


def test_v0_24_0_bz4() -> None:
    """asynq-v0.24.0, BZ-4: early-release failure: unique:job:0cc175b9c0f1b6a831c399e269772661 is held by 't0', whose unique_key is (unset)"""
    failure = replay_program(
        """\
from keysim.machine import MachineConfig, make_machine
KeyMachine_asynq_v0_24_0 = make_machine(MachineConfig(variant='asynq-v0.24.0', oracle=False, strict_locks=True, ignore=frozenset(['BZ-1', 'BZ-12', 'BZ-18', 'BZ-2', 'BZ-5', 'pause_unregistered'])))
state = KeyMachine_asynq_v0_24_0()
state.keyspace_is_sound()
state.add_to_group(group='g0', payload=b'a', queue='default', task_id='t0', unique=1)
state.keyspace_is_sound()
state.teardown()
""")
    assert failure is not None, "the defect no longer shows"
    assert (failure.invariant, failure.bug) == ('I6', 'BZ-4')


def test_v0_24_0_bz16() -> None:
    """asynq-v0.24.0, BZ-16: zombie: t:p10 is archived but in no index (expected archived)"""
    failure = replay_program(
        """\
from keysim.machine import MachineConfig, make_machine
KeyMachine_asynq_v0_24_0 = make_machine(MachineConfig(variant='asynq-v0.24.0', oracle=False, strict_locks=True, ignore=frozenset(['BZ-1', 'BZ-12', 'BZ-18', 'BZ-2', 'BZ-4', 'BZ-5', 'pause_unregistered'])))
state = KeyMachine_asynq_v0_24_0()
state.keyspace_is_sound()
state.work(how='succeed', queue='default', retention=0)
state.keyspace_is_sound()
state.archive_pressure(queue='default', server=False, size=3)
state.keyspace_is_sound()
state.work(how='succeed', queue='default', retention=0)
state.keyspace_is_sound()
state.archive_pressure(queue='default', server=True, size=5)
state.keyspace_is_sound()
state.teardown()
""")
    assert failure is not None, "the defect no longer shows"
    assert (failure.invariant, failure.bug) == ('I1', 'BZ-16')


def test_v0_24_0_bz17() -> None:
    """asynq-v0.24.0, BZ-17: stub: t:t0 has no msg field (fields: state)"""
    failure = replay_program(
        """\
from keysim.machine import MachineConfig, make_machine
KeyMachine_asynq_v0_24_0 = make_machine(MachineConfig(variant='asynq-v0.24.0', oracle=False, strict_locks=True, faults=True, ignore=frozenset(['BZ-1', 'BZ-12', 'BZ-16', 'BZ-18', 'BZ-2', 'BZ-4', 'BZ-5', 'pause_unregistered']), rules=frozenset(['dequeue', 'enqueue', 'evict_rule', 'jump'])))
state = KeyMachine_asynq_v0_24_0()
state.keyspace_is_sound()
state.enqueue(payload=b'a', queue='default', retention=0, retry=0, task_id='t0', unique=None)
state.keyspace_is_sound()
state.evict_rule(pick=0, queue='default', resubmit=False)
state.keyspace_is_sound()
state.dequeue(queue='default')
state.keyspace_is_sound()
state.teardown()
""")
    assert failure is not None, "the defect no longer shows"
    assert (failure.invariant, failure.bug) == ('I1', 'BZ-17')


def test_v0_24_0_bz10() -> None:
    """asynq-v0.24.0, BZ-10: orphan group: g:g0 holds 1 task(s) but 'g0' is not in groups"""
    failure = replay_program(
        """\
from keysim.machine import MachineConfig, make_machine
KeyMachine_asynq_v0_24_0 = make_machine(MachineConfig(variant='asynq-v0.24.0', oracle=False, strict_locks=True, ignore=frozenset(['BZ-1', 'BZ-12', 'BZ-16', 'BZ-17', 'BZ-18', 'BZ-2', 'BZ-4', 'BZ-5', 'pause_unregistered']), rules=frozenset(['add_to_group', 'aggregation_check'])))
state = KeyMachine_asynq_v0_24_0()
state.keyspace_is_sound()
state.add_to_group(group='g0', payload=b'a', queue='default', task_id='t0', unique=None)
state.keyspace_is_sound()
state.aggregation_check(early=False, group='g0', queue='default', then='crash')
state.keyspace_is_sound()
state.teardown()
""")
    assert failure is not None, "the defect no longer shows"
    assert (failure.invariant, failure.bug) == ('I7', 'BZ-10')


def test_v0_24_0_bz7() -> None:
    """asynq-v0.24.0, BZ-7: 2 key(s) of 'default' survived the drain"""
    failure = replay_program(
        """\
from keysim.machine import MachineConfig, make_machine
KeyMachine_asynq_v0_24_0 = make_machine(MachineConfig(variant='asynq-v0.24.0', oracle=False, strict_locks=True, faults=True, ignore=frozenset(['BZ-1', 'BZ-10', 'BZ-12', 'BZ-16', 'BZ-17', 'BZ-18', 'BZ-2', 'BZ-4', 'BZ-5', 'pause_unregistered']), rules=frozenset(['dequeue', 'enqueue', 'evict_rule'])))
state = KeyMachine_asynq_v0_24_0()
state.keyspace_is_sound()
state.enqueue(payload=b'a', queue='default', retention=0, retry=0, task_id='t0', unique=None)
state.keyspace_is_sound()
state.evict_rule(pick=0, queue='default', resubmit=False)
state.keyspace_is_sound()
state.dequeue(queue='default')
state.keyspace_is_sound()
state.dequeue(queue='default')
state.keyspace_is_sound()
state.dequeue(queue='default')
state.keyspace_is_sound()
state.dequeue(queue='default')
state.keyspace_is_sound()
state.dequeue(queue='default')
state.keyspace_is_sound()
state.dequeue(queue='default')
state.keyspace_is_sound()
state.teardown()
""")
    assert failure is not None, "the defect no longer shows"
    assert (failure.invariant, failure.bug) == ('drain', 'BZ-7')


def test_v0_24_0_bz20() -> None:
    """asynq-v0.24.0, BZ-20: zombie: t:w1 is active but in no index (expected active)"""
    failure = replay_program(
        """\
from keysim.machine import MachineConfig, make_machine
KeyMachine_asynq_v0_24_0 = make_machine(MachineConfig(variant='asynq-v0.24.0', oracle=False, strict_locks=True, faults=True, ignore=frozenset(['BZ-1', 'BZ-10', 'BZ-12', 'BZ-16', 'BZ-17', 'BZ-18', 'BZ-2', 'BZ-4', 'BZ-5', 'BZ-7', 'pause_unregistered']), rules=frozenset(['evict_rule', 'work'])))
state = KeyMachine_asynq_v0_24_0()
state.keyspace_is_sound()
state.evict_rule(pick=0, queue='default', resubmit=False)
state.keyspace_is_sound()
state.evict_rule(pick=0, queue='default', resubmit=False)
state.keyspace_is_sound()
state.work(how='succeed', queue='default', retention=30)
state.keyspace_is_sound()
state.evict_rule(pick=0, queue='default', resubmit=True)
state.keyspace_is_sound()
state.work(how='succeed', queue='default', retention=0)
state.keyspace_is_sound()
state.teardown()
""")
    assert failure is not None, "the defect no longer shows"
    assert (failure.invariant, failure.bug) == ('I1', 'BZ-20')
