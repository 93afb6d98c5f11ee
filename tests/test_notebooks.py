"""Every notebook in notebooks/ runs top to bottom on fakeredis and draws at least one PNG
(``pytest --nbmake notebooks/`` runs them the same way). How long they take is a figure, not a
test: ``pytest --durations=0 tests/test_notebooks.py`` prints it (README, "Notebooks")."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
#: nbformat's functions are unannotated; called through a typed name.
read_notebook: Callable[..., Any] = nbformat.read
#: nbclient's limit per cell: only a guard against a hung kernel, far above any cell's time on a
#: loaded machine (a wall-clock bound in a test would fail with the host's load, not the code).
CELL_TIMEOUT_S = 600


def png_outputs(nb: Any) -> int:
    """How many outputs of the executed notebook carry an image/png."""
    return sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
               for out in cell.get("outputs", []))


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_runs_and_draws(path: Path) -> None:
    nb = read_notebook(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=nb.metadata.kernelspec.name,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError naming the cell when one raises
    errors = [out for cell in nb.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.output_type == "error"]
    assert errors == []
    assert png_outputs(nb) >= 1, f"{path.name} drew no PNG"
