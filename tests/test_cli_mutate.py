"""``keysim mutate``: its options, its errors, its score floor and its JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import mutate
from harness.mutate import Mutant, MutantResult, Verdict
from keysim import cli


@pytest.mark.parametrize("argv, message", [
    (["--operator", "nope"], "unknown operator 'nope'"),
    (["--script", "snapshot"], "no mutated script named 'snapshot'"),
    (["--sample", "0"], "must be >= 1, got 0"),
    (["--sample", "-3"], "must be >= 1, got -3"),
    (["--jobs", "0"], "must be >= 1"),
    (["--min-score", "1.5"], "a score is between 0 and 1"),
    (["--min-score", "high"], "expected a number such as 0.95 or 95%"),
])
def test_bad_input_exits_2_with_a_clear_message(argv: list[str], message: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["mutate", *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_options_parse() -> None:
    args = cli.build_parser().parse_args(
        ["mutate", "--sample", "40", "--seed", "3", "--operator", "delete_write", "--operator",
         "flip_comparison", "--script", "done", "-j", "2", "--timeout", "90", "--min-score", "95%"])
    assert (args.sample, args.seed, args.jobs, args.timeout) == (40, 3, 2, 90)
    assert args.operator == ["delete_write", "flip_comparison"] and args.script == ["done"]
    assert args.min_score == pytest.approx(0.95)


def test_an_operator_without_mutants_in_the_selection_is_an_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["mutate", "--operator", "drop_ttl"]) == 2
    assert "no mutant matches" in capsys.readouterr().err


def test_list_prints_the_selection_without_running_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["mutate", "--script", "enqueue", "--operator", "delete_write", "--list"]) == 0
    out = capsys.readouterr().out
    assert "enqueue:34:delete_write" in out and '+ -- redis.call("LPUSH", KEYS[2], ARGV[2])' in out


def _verdicts(survivor: str) -> object:
    """A stand-in for run_all: every mutant killed in 2 s, except ``survivor``."""
    def run_all(mutants: list[Mutant], **_: object) -> list[MutantResult]:
        return [MutantResult(m.id, Verdict.SURVIVED if m.id == survivor else Verdict.KILLED,
                             2.0, check="I1", cpu_seconds=1.5) for m in mutants]
    return run_all


def test_the_score_floor_sets_the_exit_code_and_equivalents_are_not_scored(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    chosen = mutate.select(scripts=["done"], operators=[mutate.Operator.DELETE_WRITE])
    survivor = chosen[0].id
    monkeypatch.setattr(mutate, "run_all", _verdicts(survivor))
    argv = ["mutate", "--script", "done", "--operator", "delete_write", "--json",
            str(tmp_path / "out.json")]
    monkeypatch.setattr(mutate, "equivalents", lambda: {})
    assert cli.main([*argv, "--min-score", "1"]) == 1
    out = capsys.readouterr().out
    assert f"SURVIVED {survivor}" in out and "below the floor" in out
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["score"] == pytest.approx((len(chosen) - 1) / len(chosen))
    # The same survivor, argued equivalent: out of the denominator, the floor is met.
    monkeypatch.setattr(mutate, "equivalents", lambda: {survivor: "cannot differ"})
    assert cli.main([*argv, "--min-score", "1"]) == 0
    out = capsys.readouterr().out
    assert "mutation score 100.0%" in out and f"equivalent {survivor}: cannot differ" in out
