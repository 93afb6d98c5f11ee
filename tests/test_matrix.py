"""The leak matrix's pure parts: which releases a --versions list names, the cells, the results
as data and the document generated from them (``harness.matrix``; the runs on Asynq's own code
are in tests/regressions_asynq/test_matrix_releases.py).

The committed docs/asynq-versions.md must be exactly what the generator writes from the
committed docs/asynq-versions.json: no cell is written by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import matrix
from harness.check import CheckResult
from harness.config import MachineConfig
from harness.leaks import LeakFound
from harness.matrix import Budget, Hit, ReleaseRun
from keysim.cli import main

DOCS = Path(__file__).resolve().parent.parent / "docs"
PROGRAM = ["from harness.machine import MachineConfig, make_machine", "state.teardown()"]


def _driven(name: str, groups: bool = True, hits: dict[str, Hit] | None = None) -> ReleaseRun:
    return ReleaseRun(name, name, driven=True, variant="asynq-v0.26.0",
                      features={"groups": groups}, build_seconds=1.5, hunt_seconds=80.25,
                      budget={"seeds": 2, "rounds": 12, "max_examples": 200, "steps": 15},
                      examples=1234, steps=5678, focus_examples={"BZ-7": 300},
                      pairs_reached=80, pairs_required=93, hits=dict(hits or {}))


def _hit(bug: str, steps: int = 2, seeds: tuple[int, ...] = (0, 1), as_: str = "") -> Hit:
    return Hit(bug, "I1", steps, list(PROGRAM), list(seeds), as_)


def test_ranges_expand_to_the_latest_patch_of_each_minor_release() -> None:
    assert matrix.expand_versions("v0.20.0..v0.26.0,master") == [
        "v0.20.0", "v0.21.0", "v0.22.1", "v0.23.0", "v0.24.1", "v0.25.1", "v0.26.0", "master"]
    assert matrix.expand_versions("v0.24.0, v0.24.0,v0.26.0") == ["v0.24.0", "v0.26.0"]
    for bad in ("", "0.26.0", "v0.26", "v0.26.0..latest", "main"):
        with pytest.raises(ValueError):
            matrix.expand_versions(bad)


def test_cells_say_found_not_present_not_applicable_or_not_run() -> None:
    old = _driven("v0.22.1", groups=False, hits={"BZ-12": _hit("BZ-12")})
    new = _driven("v0.26.0", hits={"BZ-3": _hit("BZ-3", as_="BZ-3/BZ-4"),
                                    "BZ-4": _hit("BZ-4", as_="BZ-3/BZ-4")})
    gone = ReleaseRun("master", reason="the proxy says 403")
    assert [old.cell(b) for b in ("BZ-12", "BZ-10", "BZ-2")] == ["found", "n/a", "not present"]
    assert [new.cell(b) for b in ("BZ-3", "BZ-10")] == ["found?", "not present"]
    assert {gone.cell(b) for b in matrix.DEFECTS} == {"not run"}


def test_a_program_of_one_defect_alone_settles_an_ambiguous_hit() -> None:
    run = _driven("v0.26.0")
    ambiguous = _result("BZ-3/BZ-4", ["a", "b", "c"])
    matrix._record(run, ambiguous, seed=0)
    assert run.cell("BZ-3") == run.cell("BZ-4") == "found?"
    matrix._record(run, _result("BZ-4", ["a", "b", "c", "d"]), seed=1)
    assert (run.cell("BZ-4"), run.hits["BZ-4"].seeds) == ("found", [0, 1])
    assert run.cell("BZ-3") == "found?"
    matrix._record(run, _result(None, ["x"]), seed=1)
    assert run.unattributed == [["x"]]


def _result(bug: str | None, program: list[str]) -> CheckResult:
    failure = LeakFound("I6", "a lock")
    failure.bug = bug
    return CheckResult(MachineConfig(), False, 1, 1, 0.1, failure=failure,
                       program="\n".join(program), shrunk_steps=len(program))


def test_the_document_is_generated_from_the_results_alone() -> None:
    runs = [_driven("v0.22.1", groups=False, hits={"BZ-12": _hit("BZ-12", steps=3)}),
            _driven("v0.26.0", hits={"BZ-2": _hit("BZ-2", seeds=(1,))}),
            ReleaseRun("master", reason="the Go module proxy does not serve it (403)")]
    meta = {"command": "keysim matrix --seeds 2", "date": "2026-12-06", "go": "go1.26",
            "server": "Redis 7.0.15", "seeds": 2}
    text = matrix.render(runs, meta)
    rows = {line.split(" | ")[0].removeprefix("| "): line.split(" | ")
            for line in text.splitlines() if line.startswith("| BZ-") or
            line.startswith("| pause")}
    assert set(rows) == set(matrix.DEFECTS)
    assert rows["BZ-12"][2:5] == ["**found** 2/2 (I1, 3 st.)", "not present †", "not run"]
    # the spec says both releases have BZ-2 and v0.26.0 has BZ-10: † where not found
    assert rows["BZ-2"][2:5] == ["not present †", "**found** 1/2 (I1, 2 st.)", "not run"]
    assert rows["BZ-10"][2:5] == ["n/a", "not present †", "not run"]
    assert rows["BZ-8"][2:5] == ["n/a", "not present", "not run"]  # never released
    assert "  - BZ-10 (v0.26.0): " in text and "  - BZ-8" not in text
    assert rows["BZ-1"][-1] == "v0.25.0 (0dc670d, PR #743) |"
    assert "not driven: the Go module proxy does not serve it (403)" in text
    assert "| v0.22.1 | v0.22.1 | asynq-v0.26.0 | no | 1.5 | 80.2 | 2 | 1,234 | 5,678 | 80/93" \
        in text
    assert "focus: BZ-7 300" in text
    assert text.count("```python") == 2 and "v0.26.0: I1, 2 steps" in text
    again, meta_again = matrix.from_data(matrix.to_data(runs, meta))
    assert matrix.render(again, meta_again) == text


def test_the_committed_matrix_is_what_the_generator_writes_from_its_data() -> None:
    runs, meta = matrix.load(DOCS / "asynq-versions.json")
    assert (DOCS / "asynq-versions.md").read_text() == matrix.render(runs, meta)
    names = [r.name for r in runs]
    assert names == matrix.expand_versions(matrix.DEFAULT_VERSIONS)
    for run in runs:  # "not present" is only ever claimed with a budget behind it
        assert run.driven == (run.examples > 0 and run.budget.get("seeds", 0) >= 1), run.name
        assert run.driven or run.reason


def test_the_spec_history_says_which_releases_have_a_defect() -> None:
    bz1, bz20 = matrix.SPEC["BZ-1"], matrix.SPEC["BZ-20"]
    assert [bz1.present_in(v) for v in ("v0.24.1", "v0.25.0", "master")] == [True, False, False]
    assert [matrix.SPEC["BZ-2"].present_in(v) for v in ("v0.17.9", "v0.26.0", "master")] == [
        False, True, True]
    found = _driven("v0.26.0", hits={"BZ-20": _hit("BZ-20"), "BZ-2": _hit("BZ-2")})
    assert matrix.disagrees(found, "BZ-20", bz20)  # the spec says fixed in v0.24.0
    assert not matrix.disagrees(found, "BZ-2", matrix.SPEC["BZ-2"])
    assert not matrix.disagrees(found, "pause_unregistered", None)  # not in the spec
    assert set(matrix.SPEC) == set(matrix.DEFECTS) - {"pause_unregistered"}


def test_budget_figures_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Budget(seeds=0)


def test_cli_refuses_a_bad_version_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["matrix", "--versions", "v0.26"]) == 2
    assert "a version looks like v0.26.0" in capsys.readouterr().err



def test_cli_refuses_an_unknown_release_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.md"
    assert main(["matrix", "--versions", "v9.9.9", "--out", str(out)]) == 2
    assert "v9.9.9 is not an Asynq release" in capsys.readouterr().err
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_cli_rewrites_the_document_from_saved_results(tmp_path: Path) -> None:
    out = tmp_path / "m.md"
    assert main(["matrix", "--from-results", "--out", str(out)]) == 2  # nothing saved yet
    runs = [_driven("v0.26.0", hits={"BZ-2": _hit("BZ-2")}), ReleaseRun("master", reason="403")]
    meta = {"command": "keysim matrix", "date": "2026-12-06"}
    matrix.save(out.with_suffix(".json"), runs, meta)
    assert main(["matrix", "--from-results", "--out", str(out)]) == 0
    assert out.read_text() == matrix.render(runs, meta)
