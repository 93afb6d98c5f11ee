"""Loading the Lua scripts under ``broker/scripts``: prelude + quirk flags + script text.

Each script file starts with a header of ``--`` comment lines naming its KEYS and ARGV (a test
checks every KEYS[n] used is declared and that all of a call's keys share one Cluster slot).
The loader prepends ``local Q = {...}`` (the variant's quirk flags) and ``_prelude.lua``; the
resulting text is registered once per client and run by EVALSHA (re-sent on NOSCRIPT).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import redis

from broker.variants import Quirk, Variant

SCRIPTS_DIR = Path(__file__).parent / "scripts"
PRELUDE = "_prelude"
#: Virtual TTL deadlines are stored shifted by this many ms (see docs/reference-design.md).
TTL_SHIFT_MS = 2_000_000_000_000

Arg = str | bytes | int | float


@cache
def script_text(name: str) -> str:
    """The text of ``scripts/<name>.lua``; raises FileNotFoundError naming the script."""
    path = SCRIPTS_DIR / f"{name}.lua"
    if not path.is_file():
        raise FileNotFoundError(f"no Lua script named {name!r} in {SCRIPTS_DIR}")
    return path.read_text()


def script_names() -> list[str]:
    """Every script in ``broker/scripts`` (the prelude excluded)."""
    return sorted(p.stem for p in SCRIPTS_DIR.glob("*.lua") if p.stem != PRELUDE)


def header(name: str) -> dict[str, list[str]]:
    """The KEYS and ARGV declared in a script's header comment, in order.

    >>> header("enqueue")["KEYS"][0].startswith("KEYS[1]")
    True
    """
    declared: dict[str, list[str]] = {"KEYS": [], "ARGV": []}
    for line in script_text(name).splitlines():
        if not line.startswith("--"):
            break
        m = re.match(r"--\s*(KEYS|ARGV)\[(\d+)\]\s*(.*)", line)
        if m:
            declared[m.group(1)].append(f"{m.group(1)}[{m.group(2)}] {m.group(3)}".strip())
    return declared


def full_source(name: str, variant: Variant) -> str:
    """Script text as sent to Redis: quirk flags, prelude, then the script."""
    flags = ", ".join(f"{q.value} = {'true' if q in variant.quirks else 'false'}" for q in Quirk)
    return f"local Q = {{{flags}}}\n{script_text(PRELUDE)}\n{script_text(name)}"


class ScriptRunner:
    """Runs named scripts of one variant on one Redis client."""

    def __init__(self, client: redis.Redis, variant: Variant) -> None:
        self._client = client
        self._variant = variant
        self._scripts: dict[str, Any] = {}

    def _script(self, name: str) -> Any:
        if name not in self._scripts:
            self._scripts[name] = self._client.register_script(full_source(name, self._variant))
        return self._scripts[name]

    def __call__(self, name: str, keys: Sequence[str], args: Sequence[Arg] = ()) -> Any:
        """Run script ``name`` with ``keys`` and ``args`` and return its raw reply."""
        return self._script(name)(keys=list(keys), args=list(args))
