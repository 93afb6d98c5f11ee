"""The notebooks in notebooks/ are committed without outputs (CI fails if outputs slip in)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
EXPECTED = ("01-task-lifecycle", "02-hunting-leaks", "03-memory-curves", "04-what-if")


def notebook_paths() -> list[Path]:
    """Every notebook under notebooks/, sorted."""
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def dirty_cells(nb: Mapping[str, Any]) -> list[str]:
    """Descriptions of the code cells that carry outputs or an execution count."""
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {i}: {len(cell['outputs'])} output(s)")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i}: execution_count {cell['execution_count']}")
    return problems


def test_the_four_notebooks_exist() -> None:
    assert [p.stem for p in notebook_paths()] == list(EXPECTED)


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    nb = json.loads(path.read_text(encoding="utf-8"))
    nbformat.validate(nb)
    assert dirty_cells(nb) == [], f"{path.name}: clear the outputs before committing"
    # nbmake and nbclient start the kernel the notebook names: the one ipykernel installs.
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


def test_dirty_cells_reports_outputs_and_counts() -> None:
    output = {"output_type": "execute_result", "data": {"text/plain": "2"}, "metadata": {},
              "execution_count": 3}
    nb = {"cells": [
        {"cell_type": "markdown", "source": "# t", "metadata": {}},
        {"cell_type": "code", "source": "1 + 1", "metadata": {}, "outputs": [output],
         "execution_count": 3},
        {"cell_type": "code", "source": "x = 1", "metadata": {}, "outputs": [],
         "execution_count": None},
    ]}
    assert dirty_cells(nb) == ["cell 1: 1 output(s)", "cell 1: execution_count 3"]
