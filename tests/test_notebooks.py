"""Every notebook in notebooks/ runs top to bottom on fakeredis, draws at least one PNG, and
stays within the 2-minute budget (``pytest --nbmake notebooks/`` runs them the same way)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
#: nbformat's functions are unannotated; called through a typed name.
read_notebook: Callable[..., Any] = nbformat.read
#: The README promises each notebook runs in under a minute; this bound leaves room for a loaded
#: machine. nbclient's own limit is per cell.
BUDGET_S = 120


def png_outputs(nb: Any) -> int:
    """How many outputs of the executed notebook carry an image/png."""
    return sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
               for out in cell.get("outputs", []))


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_runs_and_draws(path: Path) -> None:
    nb = read_notebook(path, as_version=4)
    client = NotebookClient(nb, timeout=BUDGET_S, kernel_name=nb.metadata.kernelspec.name,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the cell when one raises
    elapsed = time.perf_counter() - start
    errors = [out for cell in nb.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.output_type == "error"]
    assert errors == []
    assert png_outputs(nb) >= 1, f"{path.name} drew no PNG"
    assert elapsed < BUDGET_S, f"{path.name} took {elapsed:.0f} s (budget {BUDGET_S} s)"
