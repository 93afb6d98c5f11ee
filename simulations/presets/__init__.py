"""The shipped workload presets (``<name>.toml`` in this directory).

>>> "steady-default" in names()
True
"""

from __future__ import annotations

from pathlib import Path

DIR = Path(__file__).parent


def names() -> list[str]:
    """Every preset name, sorted."""
    return sorted(p.stem for p in DIR.glob("*.toml"))


def resolve(name_or_path: str) -> Path:
    """The TOML file of a preset name, or ``name_or_path`` itself when it is a file.

    Raises FileNotFoundError listing the presets when it is neither.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    candidate = DIR / f"{name_or_path}.toml"
    if candidate.is_file():
        return candidate
    raise FileNotFoundError(
        f"no preset or spec file {name_or_path!r}; presets: {', '.join(names())}")
