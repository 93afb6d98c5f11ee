"""The process machine (``keysim check --processes N``): composites step by step, races found."""

from __future__ import annotations

import re
from typing import Any

import pytest

from harness.check import program_length, replay_program
from harness.config import MachineConfig
from harness.leaks import LeakFound
from harness.processes import Ledger, make_process_machine, process_check
from model.composites import INTERLEAVINGS


def test_reference_passes_with_every_interleaving_outcome() -> None:
    # Rounds of fresh seeds (as keysim check runs them); 13-31 s here, the budget leaves
    # room for a loaded machine.
    result = process_check("reference", seed=0, budget=300, min_hits=1, min_examples=20)
    assert result.verdict == "PASS", result.summary()
    assert all(result.coverage[pair] >= 1 for pair in INTERLEAVINGS)


@pytest.mark.parametrize("race", ["RACE-1", "RACE-2"])
def test_race_mutant_fails_with_a_short_schedule(race: str) -> None:
    result = process_check(f"reference+{race}", seed=0, budget=180)
    assert result.verdict == "FAIL", result.summary()
    assert 0 < result.shrunk_steps <= 12, result.program
    # The printed schedule reproduces the failure, and passes once the race is taken out.
    assert isinstance(replay_program(result.program), LeakFound)
    plain = re.sub(r", race='RACE-\d'", "", result.program)
    assert replay_program(plain) is None, plain


def test_stale_recover_schedule_by_hand() -> None:
    """RACE-1 by hand: the recoverer lists an expired lease, the worker then completes the
    task, and the recoverer acts on its stale list anyway (the reference refuses)."""
    for race, fails in ((None, False), ("RACE-1", True)):
        state = make_process_machine(MachineConfig(), processes=2, race=race)()
        state.start("expiring")
        for _ in range(3):  # reclaim, drop dangling leases, list the expired ones
            state.recover_step(0)
            state.keyspace_is_sound()
        state.worker(0, "succeed")
        state.keyspace_is_sound()
        try:
            state.recover_step(0)
            state.keyspace_is_sound()
        except LeakFound:
            assert fails
        else:
            assert not fails
            state.teardown()


def test_program_length_counts_the_schedule() -> None:
    program = "\n".join(["state = M()", "state.start(scenario='expiring')",
                         "state.recover_step(process=0)", "state.keyspace_is_sound()",
                         "state.teardown()"])
    assert program_length(program) == 2


def test_ledger_names_a_lost_task() -> None:
    from harness.attribution import Op

    ledger = Ledger()
    assert ledger.observe({"t0": "pending"}, [Op("enqueue", (), "ok")]) == []
    lost = ledger.observe({}, [Op("forward_batch", ("default",), "ok")])
    assert lost == ["task 't0' was lost in forward_batch (state pending)"]


def test_ledger_accepts_named_endings() -> None:
    from harness.attribution import Op

    ledger = Ledger()
    ledger.observe({"t0": "pending", "t1": "scheduled"}, [Op("enqueue", (), "ok")])
    assert ledger.observe({}, [Op("delete_all_tasks", ("default",), "ok")]) == []
    assert [life.ended for life in ledger.ended] == ["deleted by delete_all_tasks"] * 2
    assert ledger.unended() == []


def test_cli_processes_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from keysim.cli import main

    code = main(["check", "--processes", "--variant", "reference+RACE-2", "--seed", "0",
                 "--budget", "180"])
    out = capsys.readouterr().out
    assert code == 1 and out.startswith("FAIL  reference+RACE-2 on fakeredis"), out
    assert "make_process_machine(" in out and "race='RACE-2'" in out


@pytest.mark.parametrize("variant,verdict", [("reference", "INCOMPLETE"),
                                             ("reference+RACE-1", "FAIL")])
def test_on_real_redis(real_server: Any, variant: str, verdict: str) -> None:
    """The same machine on a real server: the reference agrees step by step, RACE-1 fails."""
    if verdict == "FAIL":
        result = process_check(variant, real_server.url, seed=0, budget=180)
    else:
        result = process_check(variant, real_server.url, seed=0, max_examples=10, steps=30)
    assert result.verdict == verdict, result.summary()
