"""The rooms depend on each other one way: model → broker → simulations/harness/audit → soak
→ cli.

An oracle that imports what it checks cannot see that code's bugs, and a broker that imports the
harness carries the harness's bookkeeping: each package may import only the rooms below it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Package -> the project packages it may import (itself always allowed).
ALLOWED: dict[str, frozenset[str]] = {
    "model": frozenset(),
    "broker": frozenset({"model"}),
    "simulations": frozenset({"model", "broker"}),
    "harness": frozenset({"model", "broker"}),
    "audit": frozenset({"model", "broker"}),
    "soak": frozenset({"model", "broker", "harness", "audit"}),
    "benchmarks": frozenset({"model", "broker", "simulations", "harness", "audit", "soak"}),
    "keysim": frozenset({"model", "broker", "simulations", "harness", "audit", "soak"}),
}


def project_imports(path: Path) -> set[str]:
    """The project packages a module imports, at any depth (function-level imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found |= {name.split(".")[0] for name in names} & ALLOWED.keys()
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_room_imports_only_the_rooms_below_it(package: str) -> None:
    wrong = {}
    for module in sorted((ROOT / package).rglob("*.py")):
        if "proto" in module.parts:  # generated protobuf code imports only google.protobuf
            continue
        bad = project_imports(module) - ALLOWED[package] - {package}
        if bad:
            wrong[str(module.relative_to(ROOT))] = sorted(bad)
    assert not wrong, f"imports against the layout's direction: {wrong}"


def test_the_check_sees_a_wrong_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from harness.machine import make_machine\n")
    assert project_imports(module) == {"harness"}
