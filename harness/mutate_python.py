"""Mutants of the Python composites: the loops and decisions above the Lua scripts.

The ``reference`` broker is Lua scripts plus a little Python that strings calls together: the
forwarder's and the janitor's batching loops, the recoverer, and the choice of the operation
that ends a task (:mod:`broker.processor`). Those functions (:data:`COMPOSITES`) are mutated
here from their source, one edit of one line each, found with :mod:`ast`:

* ``flip_comparison`` — ``<`` ↔ ``<=``, ``>`` ↔ ``>=``, ``==`` ↔ ``!=``, ``is`` ↔ ``is not``;
* ``slice_batch`` — a ``for`` loop's iterable loses its last item (``list(xs)[:-1]``);
* ``swap_arguments`` — two neighbouring positional arguments of a call (or items of a tuple or
  list passed to a call) change places (not a literal with a value of another kind: that
  swap could only be a type error).

A mutant is installed in a running process by compiling the mutated module text and giving
the mutated function's code to the function already loaded (``__code__``), so every holder of
that function — a class, an ``import from`` — runs the mutant.

>>> edits = list(line_edits("broker.processor"))
>>> sorted({operator for _, operator, _, _ in edits})
['flip_comparison', 'slice_batch', 'swap_arguments']
>>> next(after.strip() for _, operator, _, after in edits if operator == "slice_batch")
'for msg in list(expired)[:-1]:'
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import itertools
from collections.abc import Iterator
from functools import cache
from types import FunctionType
from typing import Any

#: The functions mutated, by module: the composites the issue names (recover, forward and
#: janitor batching, finish-processing).
COMPOSITES: dict[str, tuple[str, ...]] = {
    "broker.processor": ("retries_exhausted", "success_operation", "finishing", "finish",
                         "recover_expired"),
    "broker.server_ops": ("ServerOps.forward_if_ready", "ServerOps._forward_all",
                          "ServerOps.delete_expired_completed_tasks",
                          "ServerOps.delete_expired_archived_tasks", "ServerOps._batches",
                          "ServerOps.recover"),
}

_FLIPPED: dict[type[ast.cmpop], str] = {
    ast.Lt: "<=", ast.LtE: "<", ast.Gt: ">=", ast.GtE: ">", ast.Eq: "!=", ast.NotEq: "==",
    ast.Is: "is not", ast.IsNot: "is",
}
_SYMBOL: dict[type[ast.cmpop], str] = {
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
    ast.Is: "is", ast.IsNot: "is not",
}


@cache
def module_text(module: str) -> str:
    """The source text of ``module`` (one of :data:`COMPOSITES`)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"no Python module named {module!r}")
    with open(spec.origin, encoding="utf-8") as source:
        return source.read()


def functions(module: str) -> dict[str, ast.FunctionDef]:
    """The mutated functions of ``module``, by qualified name."""
    tree = ast.parse(module_text(module))
    found: dict[str, ast.FunctionDef] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            found[node.name] = node
        elif isinstance(node, ast.ClassDef):
            found.update({f"{node.name}.{f.name}": f for f in node.body
                          if isinstance(f, ast.FunctionDef)})
    return {name: found[name] for name in COMPOSITES[module]}


def function_at(module: str, line: int) -> str:
    """The qualified name of the mutated function of ``module`` that holds ``line``."""
    for name, node in functions(module).items():
        if node.lineno <= line <= (node.end_lineno or node.lineno):
            return name
    raise ValueError(f"line {line} of {module} is in no mutated function")


def line_edits(module: str) -> Iterator[tuple[int, str, str, str]]:
    """Every ``(line, operator, before, after)`` edit of the mutated functions of ``module``,
    in line order (several edits of one operator on one line come in source order)."""
    lines = module_text(module).splitlines()
    edits: list[tuple[int, int, str, str]] = []
    for node in functions(module).values():
        for sub in ast.walk(node):
            for operator, line, start, end, text in _edits_of(sub, lines):
                row = lines[line - 1].encode()
                after = (row[:start] + text.encode() + row[end:]).decode()
                edits.append((line, start, operator, after))
    for line, _, operator, after in sorted(edits):
        yield line, operator, lines[line - 1], after


def _edits_of(node: ast.AST, lines: list[str]) -> Iterator[tuple[str, int, int, int, str]]:
    """``(operator, line, start byte, end byte, replacement)`` for one AST node."""
    if isinstance(node, ast.Compare):
        yield from _flips(node, lines)
    elif isinstance(node, ast.For) and _one_line(node.iter):
        text = ast.get_source_segment("\n".join(lines), node.iter)
        yield ("slice_batch", node.iter.lineno, node.iter.col_offset,
               node.iter.end_col_offset or 0, f"list({text})[:-1]")
    elif isinstance(node, ast.Call):
        yield from _swaps([a for a in node.args if not isinstance(a, ast.Starred)], lines)
        for arg in node.args:
            if isinstance(arg, (ast.Tuple, ast.List)):
                yield from _swaps(arg.elts, lines)


def _one_line(node: ast.expr) -> bool:
    return node.lineno == node.end_lineno


def _flips(node: ast.Compare, lines: list[str]) -> Iterator[tuple[str, int, int, int, str]]:
    operands = [node.left, *node.comparators]
    for op, left, right in zip(node.ops, operands, operands[1:], strict=False):
        flipped = _FLIPPED.get(type(op))
        if flipped is None or left.end_lineno != right.lineno:
            continue
        row = lines[right.lineno - 1].encode()
        gap = row[left.end_col_offset:right.col_offset].decode()
        symbol = _SYMBOL[type(op)]
        at = gap.find(f" {symbol} ")
        if at < 0:
            continue
        start = (left.end_col_offset or 0) + len(gap[:at + 1].encode())
        yield "flip_comparison", right.lineno, start, start + len(symbol), flipped


def _swaps(items: list[ast.expr], lines: list[str]) -> Iterator[tuple[str, int, int, int, str]]:
    for a, b in itertools.pairwise(items):
        if not (_one_line(a) and _one_line(b) and a.lineno == b.lineno) or _kinds_differ(a, b):
            continue
        row = lines[a.lineno - 1].encode()
        first = row[a.col_offset:a.end_col_offset].decode()
        second = row[b.col_offset:b.end_col_offset].decode()
        if first == second:
            continue
        between = row[a.end_col_offset:b.col_offset].decode()
        yield ("swap_arguments", a.lineno, a.col_offset, b.end_col_offset or 0,
               second + between + first)


def _kinds_differ(a: ast.expr, b: ast.expr) -> bool:
    """True when a swap of ``a`` and ``b`` could only be a type error: one is a literal (a
    constant or a tuple, list or dict display) and the other is not one of its kind."""
    literals = (ast.Constant, ast.Tuple, ast.List, ast.Dict)
    if not isinstance(a, literals) and not isinstance(b, literals):
        return False
    if isinstance(a, ast.Constant) and isinstance(b, ast.Constant):
        return type(a.value) is not type(b.value)
    return type(a) is not type(b)


def install_python(module: str, line: int, source: str) -> None:
    """Run ``source`` (``module``'s mutated text) in place of the function holding ``line``:
    compile the text as the module, then give the mutated function's code to the loaded one."""
    name = function_at(module, line)
    loaded = importlib.import_module(module)
    namespace: dict[str, Any] = {"__name__": module, "__file__": loaded.__file__}
    exec(compile(source, loaded.__file__ or module, "exec"), namespace)  # our own source, edited
    original, mutated = _lookup(vars(loaded), name), _lookup(namespace, name)
    original.__code__ = mutated.__code__


def _lookup(namespace: dict[str, Any], qualified: str) -> FunctionType:
    head, *rest = qualified.split(".")
    value = namespace[head]
    for part in rest:
        value = vars(value)[part]
    assert isinstance(value, FunctionType), qualified
    return value


__all__ = ["COMPOSITES", "function_at", "functions", "install_python", "line_edits",
           "module_text"]
