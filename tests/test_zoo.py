"""The bug zoo: the stateful machine finds every mutant within its budget, shrinks the failure to
at most 10 rule calls, and names the check that caught it (harness/zoo.py).

Each mutant ``reference+BZ-n`` is the reference with exactly one Asynq defect switched on. One
fixed seed per mutant keeps CI reproducible; ``keysim zoo --seeds N`` reports medians over
seeds. The Asynq variants are hunted without the oracle (invariants and drain only); every
minimal counterexample found for them is also kept as an explicit test in tests/regressions/.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.servers import RedisServer
from harness.check import run_check
from harness.machine import LeakFound, MachineConfig
from harness.zoo import (
    ASYNQ_VARIANTS,
    CASES,
    Hunt,
    asynq_defects,
    asynq_expected,
    format_table,
    hunt,
    load_counterexamples,
    run_zoo,
)

SAVED = Path(__file__).parent / "regressions" / "asynq_counterexamples.json"

#: The seed each mutant is hunted with in CI: one of 0-4 with a short run on fakeredis (chosen
#: with `keysim zoo --seeds 5`, which reports the medians over all five).
CI_SEED: dict[str, int] = {
    "BZ-1": 0, "BZ-2": 0, "BZ-3": 2, "BZ-4": 3, "BZ-5": 2, "BZ-7": 2, "BZ-8": 2, "BZ-9": 2,
    "BZ-10": 3, "BZ-11": 3, "BZ-12": 2, "BZ-15": 0, "BZ-16": 3, "BZ-17": 4, "BZ-18": 2,
    "BZ-20": 0,
}


#: Mutants the machine does not yet catch within the CI budget with a <= 10-step program
#: (strict: the mark fails as soon as they are caught, so it cannot go stale).
NOT_YET: dict[str, str] = {}


def _param(bug: str) -> object:
    if bug in NOT_YET:
        return pytest.param(bug, marks=pytest.mark.xfail(strict=True, reason=NOT_YET[bug]))
    return bug


@pytest.fixture(scope="module",
                params=[_param(b) for b in sorted(CASES, key=lambda b: int(b[3:]))])
def hunted(request: pytest.FixtureRequest) -> Hunt:
    """One mutant hunted with its CI seed."""
    bug: str = request.param
    return hunt(CASES[bug], seed=CI_SEED.get(bug, 0))


def test_mutant_is_found_shrunk_and_named(hunted: Hunt) -> None:
    case, result = hunted.case, hunted.result
    assert hunted.found, f"{case.variant} survived {result.examples} examples"
    assert hunted.caught_by in case.also | {case.invariant}, result.summary()
    assert case.bug in hunted.bug.split("/"), (hunted.bug, result.summary())
    assert 1 <= result.shrunk_steps <= 10, result.program
    assert result.examples_to_failure <= case.max_examples


def test_printed_program_replays_the_failure(hunted: Hunt) -> None:
    # The minimal program is runnable Python: run as is, it fails with the same check.
    with pytest.raises(LeakFound) as failure:
        exec(hunted.result.program, {})  # our own printed program
    assert failure.value.invariant == hunted.caught_by
    assert failure.value.bug == hunted.result.failure.bug  # type: ignore[union-attr]


def test_every_mutant_has_a_case_and_the_reference_passes_each_case_config() -> None:
    # The faults and the flood are part of the environment, not defects: the reference design
    # heals what they break, so the same configurations pass on it.
    configs = {(MachineConfig(faults=c.faults, rules=c.rules, policy=c.policy), c.steps)
               for c in CASES.values()
               if not c.flood}  # seconds per example; the reference's flood path: test_flood_...
    for config, steps in configs:
        result = run_check(config, max_examples=40, steps=steps, seed=1, targeting=False)
        assert result.passed, result.summary()
    assert len(configs) < len(CASES)  # mutants sharing a configuration run it once


def test_flood_on_the_reference_is_trimmed_cleanly() -> None:
    flood = CASES["BZ-15"]
    config = MachineConfig(flood=flood.flood, policy=flood.policy, rules=flood.rules)
    result = run_check(config, max_examples=2, steps=2, seed=0, targeting=False, shrink=False)
    assert result.passed, result.summary()


def test_zoo_table_reports_each_row() -> None:
    rows = run_zoo(["BZ-18"], seeds=1)
    table = format_table(rows).splitlines()
    assert table[0].split()[:3] == ["mutant", "caught", "by"]
    assert table[1].split()[:4] == ["reference+BZ-18", "I1", "BZ-18", "1/1"]
    assert table[1].split()[-1] == "ok"


def test_zoo_refuses_unknown_bugs_and_seeds() -> None:
    with pytest.raises(ValueError, match="BZ-99"):
        run_zoo(["BZ-99"])
    with pytest.raises(ValueError, match="seeds"):
        run_zoo(["BZ-18"], seeds=0)


@pytest.mark.parametrize("backend", ["fakeredis", "real-redis"])
@pytest.mark.parametrize("variant", ASYNQ_VARIANTS)
def test_asynq_variant_fails_with_known_defects(variant: str, backend: str,
                                                request: pytest.FixtureRequest) -> None:
    # A live hunt (two rounds, all rules: the first two defects, each shrunk); the full list
    # each version shows is pinned by the saved counterexamples in tests/regressions/.
    if backend == "real-redis":
        backend = request.getfixturevalue("real_server").url
    found = asynq_defects(variant, seed=0, rounds=2, focused=False, backend=backend)
    assert len(found) == 2
    for defect in found:
        assert defect.bug in asynq_expected(variant), defect.result.summary()
        assert 1 <= defect.result.shrunk_steps <= 10, defect.result.program


@pytest.mark.parametrize("bug", [_param(b) for b in sorted(CASES, key=lambda b: int(b[3:]))])
def test_mutant_is_found_on_real_redis(bug: str, real_server: RedisServer) -> None:
    # Every mutant on a real Redis too: the same machine, scripts run by Redis' own Lua.
    found = hunt(CASES[bug], seed=CI_SEED.get(bug, 0), backend=real_server.url)
    assert found.as_expected, found.result.summary()


@pytest.mark.parametrize("variant", ASYNQ_VARIANTS)
def test_regressions_pin_every_defect_of_the_variant_but_bz11(variant: str) -> None:
    pinned = {c["bug"] for c in load_counterexamples(SAVED) if c["variant"] == variant}
    assert pinned == asynq_expected(variant) - {"BZ-11"}


def test_cli_save_without_asynq_is_refused(capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    from keysim import cli

    out = tmp_path / "saved.json"
    assert cli.main(["zoo", "--save", str(out)]) == 2
    assert "--save needs --asynq" in capsys.readouterr().err
    assert not out.exists()


def test_cli_zoo_prints_the_table_row_for_one_mutant(capsys: pytest.CaptureFixture[str]) -> None:
    from keysim import cli

    assert cli.main(["zoo", "--bug", "BZ-18", "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    assert "BZ-18" in out and "I1" in out
