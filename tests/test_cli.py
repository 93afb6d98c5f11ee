"""The ``keysim`` command line (diagram part)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from keysim import cli
from model.diagram import dot, mermaid


def test_console_script_points_at_main() -> None:
    (script,) = entry_points(group="console_scripts", name="keysim")
    assert script.load() is cli.main


@pytest.mark.parametrize("fmt, text", [("mermaid", mermaid), ("dot", dot)])
def test_text_formats_print_to_stdout(fmt: str, text: object, capsys: pytest.CaptureFixture[str],
                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert callable(text)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["diagram", "--format", fmt]) == 0
    assert capsys.readouterr().out == text()
    assert list(tmp_path.iterdir()) == []


def test_text_format_with_out_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "states.dot"
    assert cli.main(["diagram", "--format", "dot", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == dot()
    assert capsys.readouterr().out == f"wrote {out}\n"


def test_png_is_the_default_and_goes_to_diagram_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["diagram"]) == 0
    assert (tmp_path / "diagram.png").read_bytes().startswith(b"\x89PNG")
    assert capsys.readouterr().out == "wrote diagram.png\n"


def test_svg_to_a_chosen_path(tmp_path: Path) -> None:
    out = tmp_path / "sub.svg"
    assert cli.main(["diagram", "--format", "svg", "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"<?xml")


@pytest.mark.parametrize("argv, message", [
    (["diagram", "--format", "jpg"], "argument --format: invalid choice: 'jpg'"),
    ([], "the following arguments are required: COMMAND"),
    (["diagram", "--out", "/nonexistent-dir/d.png"],
     "argument --out: directory '/nonexistent-dir' does not exist"),
    (["diagram", "--out", "/"], "argument --out: '/' is a directory, expected a file path"),
    (["nonsense"], "argument COMMAND: invalid choice: 'nonsense'"),
])
def test_usage_errors_exit_2_with_a_message(argv: list[str], message: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_python_dash_m_keysim_runs_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "keysim", "diagram", "--format", "mermaid"],
                          capture_output=True, text=True, check=False, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == mermaid()
