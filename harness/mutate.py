"""Mutation testing of the checker: ``keysim mutate``.

A checker that no mutant can fool is the goal. This module writes small, realistic bugs into the
``reference`` Lua scripts — the kind a developer really writes — runs the default ``keysim check``
on each, and reports the **mutation score**: the share of mutants the check kills.

Mutation operators (:class:`Operator`), applied one at a time to the code of a script (never to
its comments or string contents, except the range-bound and TTL-option operators, which edit the
Redis arguments themselves):

* ``delete_write`` — a write command (``redis.call("DEL"|"ZREM"|"HSET"|…)``) is removed: a
  statement is commented out, a call inside an expression becomes ``0`` (or ``false`` for the
  commands that return a value);
* ``flip_comparison`` — ``<`` ↔ ``<=``, ``>`` ↔ ``>=``, ``==`` ↔ ``~=``;
* ``shift_literal`` — an integer literal ±1 (``KEYS[n]``/``ARGV[n]`` indexes excepted);
* ``range_bound`` — a score bound of a by-score range turns inclusive ↔ exclusive (``"(" ..``);
* ``shift_score`` — a ``ZADD`` score is moved by one;
* ``drop_ttl`` — an ``EX``/``PX``/``EXAT``/``PXAT`` option of a write is removed;
* ``drop_guard`` — an early-return guard's condition becomes ``false``.

Lines that only an Asynq variant runs (the block under ``if Q.<quirk> then``, the ``else`` of
``if not Q.<quirk> then``) are skipped: the ``reference`` variant never executes them.

>>> mutants = generate(["done"])
>>> sorted({m.operator.value for m in mutants})[:3]
['delete_write', 'drop_guard', 'flip_comparison']
>>> m = next(m for m in mutants if m.operator is Operator.DELETE_WRITE)
>>> m.script, m.before.strip() != m.after.strip()
('done', True)
"""

from __future__ import annotations

import json
import math
import random
import re
import statistics
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import broker.scripting
from broker.scripting import PRELUDE, SCAN_SCRIPTS, script_names, script_text
from harness.mutate_python import COMPOSITES, install_python, line_edits, module_text


class Operator(StrEnum):
    """A kind of small bug written into a script (see the module docstring)."""

    DELETE_WRITE = "delete_write"
    FLIP_COMPARISON = "flip_comparison"
    SHIFT_LITERAL = "shift_literal"
    RANGE_BOUND = "range_bound"
    SHIFT_SCORE = "shift_score"
    DROP_TTL = "drop_ttl"
    DROP_GUARD = "drop_guard"
    # Python composites only (harness.mutate_python):
    SLICE_BATCH = "slice_batch"
    SWAP_ARGUMENTS = "swap_arguments"


#: Redis commands that write, and what a call of each returns when it is removed from an
#: expression (the neutral reply: nothing was changed).
WRITE_COMMANDS: dict[str, str] = {
    **dict.fromkeys(("DEL", "UNLINK", "ZREM", "LREM", "SREM", "HDEL", "HSET", "HSETNX", "ZADD",
                     "SADD", "LPUSH", "RPUSH", "INCR", "INCRBY", "DECR", "HINCRBY", "ZINCRBY",
                     "EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT", "PERSIST",
                     "ZREMRANGEBYSCORE", "ZREMRANGEBYRANK", "LTRIM"), "0"),
    **dict.fromkeys(("SET", "SETEX", "PSETEX", "LPOP", "RPOP", "RPOPLPUSH", "LMOVE", "GETDEL",
                     "RENAME"), "false"),
}

_CALL = re.compile(r'redis\.call\(\s*"([A-Z]+)"')
_COMPARISON = re.compile(r"<=|>=|==|~=|<|>")
_FLIPPED = {"<=": "<", "<": "<=", ">=": ">", ">": ">=", "==": "~=", "~=": "=="}
_INTEGER = re.compile(r"(?<![\w.\[])(\d+)(?![\w.])")
_INDEX = re.compile(r"(KEYS|ARGV)\[\d+\]$")
_BY_SCORE = ("ZRANGEBYSCORE", "ZREVRANGEBYSCORE", "ZREMRANGEBYSCORE", "ZCOUNT")
_TTL_OPTION = re.compile(r',\s*"(?:EX|PX|EXAT|PXAT)"\s*,\s*[^,)]+')


@dataclass(frozen=True)
class Mutant:
    """One bug: ``before`` (line ``line`` of ``script``) becomes ``after``."""

    script: str
    line: int
    operator: Operator
    before: str
    after: str
    #: Tells apart two mutants of one operator on one line.
    nth: int = 0

    @property
    def id(self) -> str:
        """A stable name: ``script:line:operator[:n]``."""
        return f"{self.script}:{self.line}:{self.operator.value}" + (f":{self.nth}" if self.nth else "")

    @property
    def is_python(self) -> bool:
        """True for a mutant of a Python composite (``script`` is then a module name)."""
        return self.script in COMPOSITES

    def source(self) -> str:
        """The mutated script (or module) text."""
        lines = target_text(self.script).splitlines()
        if lines[self.line - 1] != self.before:
            raise ValueError(f"mutant {self.id} no longer matches its script")
        lines[self.line - 1] = self.after
        return "\n".join(lines) + "\n"


def mutated_scripts() -> list[str]:
    """The scripts mutated: every Asynq operation and the shared prelude; not the harness's
    SCAN scripts (the keyspace read and the expiry sweep), which judge rather than act."""
    return [PRELUDE, *(name for name in script_names() if name not in SCAN_SCRIPTS)]


def mutated_targets() -> list[str]:
    """Every target mutated: the Lua scripts (:func:`mutated_scripts`), then the modules of the
    Python composites (:data:`harness.mutate_python.COMPOSITES`)."""
    return [*mutated_scripts(), *COMPOSITES]


def target_text(target: str) -> str:
    """The source text of a Lua script or of a composite's Python module."""
    return module_text(target) if target in COMPOSITES else script_text(target)


def generate(scripts: Iterable[str] | None = None,
             operators: Iterable[Operator] | None = None) -> list[Mutant]:
    """Every mutant of ``scripts`` (Lua script names or composite module names; default:
    :func:`mutated_targets`) by ``operators`` (default: all), in target, line and operator
    order."""
    wanted = set(operators) if operators is not None else set(Operator)
    found: list[Mutant] = []
    for script in scripts if scripts is not None else mutated_targets():
        if script in COMPOSITES:
            found.extend(_python_mutants(script, wanted))
            continue
        lines = script_text(script).splitlines()
        dead = quirk_only_lines(lines, exported=script == PRELUDE)
        flags = _flag_locals(lines)
        for number, text in enumerate(lines, start=1):
            if number in dead or _is_comment(text):
                continue
            for operator, after, nth in _line_mutants(text):
                if operator is Operator.DROP_GUARD and _never_taken(text, flags):
                    continue  # the reference already skips it: "if false" is the same code
                if operator in wanted:
                    found.append(Mutant(script, number, operator, text, after, nth))
    return found


def _never_taken(text: str, flags: frozenset[str]) -> bool:
    """Whether ``text`` is an ``if`` whose condition the flags make false in the reference
    (``if keep_locks then``, ``keep_locks`` a local of flags alone).

    >>> _never_taken("    if keep_locks then", frozenset({"keep_locks"}))
    True
    >>> _never_taken("    if n == 0 then", frozenset({"keep_locks"}))
    False
    """
    head = _IF_HEAD.match(_code(text))
    return head is not None and _condition(head.group(2), flags) == "skipped"


def _python_mutants(module: str, wanted: set[Operator]) -> Iterator[Mutant]:
    seen: dict[tuple[int, str], int] = {}
    for line, name, before, after in line_edits(module):
        operator = Operator(name)
        nth = seen.get((line, name), 0)
        seen[(line, name)] = nth + 1
        if operator in wanted:
            yield Mutant(module, line, operator, before, after, nth)


def quirk_only_lines(lines: list[str], *, exported: bool = False) -> set[int]:
    """1-based numbers of the lines only a quirk runs (the ``reference`` variant sets every
    ``Q.<quirk>`` flag false), found by indentation, which every script keeps:

    * the body of ``if Q.x then`` (also ``if Q.x or Q.y``, ``if a and Q.x and b``) up to its
      ``else``/``elseif``/``end``, and the ``else`` part of ``if not Q.x [and not Q.y] then``;
    * when such an always-taken ``if not Q.x`` body ends in ``return``, the rest of the block
      that holds it;
    * a ``local function`` whose every use is on quirk-only lines (its whole body), and a
      ``local NAME =`` whose every use is (its definition), repeated until nothing changes —
      not when the locals are ``exported`` (the prelude's, which other scripts use);
    * a continuation line that is one group ``or (Q.x and …)``: false before the rest is read;
    * in all of the above, a local assigned once from flags alone (``local k = Q.x``, continued
      by ``or Q.y`` or ``or (Q.z and …)`` lines) counts as a flag: it is false too.
    """
    dead: set[int] = set()
    flags = _flag_locals(lines)
    for index, text in enumerate(lines):
        head = _IF_HEAD.match(_code(text))
        if head:
            verdict = _condition(head.group(2), flags)
            dead |= _quirk_branches(lines, index, head.group(1), verdict)
        elif _false_group(_code(text)):
            dead.add(index + 1)
    while not exported:
        more = _unused_locals(lines, dead)
        if more <= dead:
            break
        dead |= more
    return dead


_IF_HEAD = re.compile(r"^(\s*)(?:else)?if\s+(.+?)\s+then\s*$")
_QUIRK_TERM = re.compile(r"^Q\.\w+$")
_NOT_QUIRK_TERM = re.compile(r"^not\s+Q\.\w+$")
_LOCAL_FUNCTION = re.compile(r"^(\s*)local\s+function\s+(\w+)\s*\(")
_LOCAL_VALUE = re.compile(r"^\s*local\s+(\w+)\s*=")


def _code(text: str) -> str:
    return text[:_code_end(text)].rstrip()


def _false_group(code: str) -> bool:
    """True for a line that is one parenthesised ``(Q.x and …)`` (after ``or``/``and``): the
    reference evaluates it to false without evaluating anything after ``Q.x``."""
    group = re.sub(r"^\s*(?:or|and)\s+", "", code).strip()
    if not re.match(r"^\(\s*Q\.\w+\s+and\s", group) or not group.endswith(")"):
        return False
    return _call_span(group, 0) == len(group)  # the first "(" closes at the very end


def _flag_locals(lines: list[str]) -> frozenset[str]:
    """Locals assigned once, from flags alone (see :func:`quirk_only_lines`)."""
    found = set()
    for index, text in enumerate(lines):
        head = re.match(r"^\s*local\s+(\w+)\s*=\s*Q\.\w+$", _code(text))
        if head is None or not _flags_only_continuation(lines[index + 1:]):
            continue
        name = head.group(1)
        assigned = [n for n, line in enumerate(lines)
                    if n != index and re.search(rf"\b{name}\s*=(?!=)", _code(line))]
        if not assigned:
            found.add(name)
    return frozenset(found)


def _flags_only_continuation(rest: list[str]) -> bool:
    for line in rest:
        code = _code(line).strip()
        if not code.startswith(("or ", "and ")):
            return True
        flag_term = re.fullmatch(r"or\s+Q\.\w+", code)
        if not flag_term and not (code.startswith("or ") and _false_group(code)):
            return False
    return True


def _condition(text: str, flags: frozenset[str] = frozenset()) -> str | None:
    """``"taken"`` when the reference always enters the branch (every term ``not Q.x``, joined
    by ``and``), ``"skipped"`` when it never does (a positive ``Q.x`` term of an ``and``, or
    only ``Q.x`` terms joined by ``or``), None when the flags do not decide. A name in
    ``flags`` is a flag (false in the reference)."""
    if "(" in text:  # terms inside parentheses are not split soundly by the words below
        return None
    ands = [t.strip() for t in re.split(r"\band\b", text)]
    ors = [t.strip() for t in re.split(r"\bor\b", text)]

    def flag(term: str) -> bool:
        return bool(_QUIRK_TERM.match(term)) or term in flags

    def not_flag(term: str) -> bool:
        negated = term.startswith("not ") and term.removeprefix("not ").strip() in flags
        return bool(_NOT_QUIRK_TERM.match(term)) or negated

    if len(ors) == 1 and any(flag(t) for t in ands):
        return "skipped"
    if len(ands) == 1 and all(flag(t) for t in ors):
        return "skipped"
    if len(ors) == 1 and all(not_flag(t) for t in ands):
        return "taken"
    return None


def _quirk_branches(lines: list[str], index: int, indent: str, verdict: str | None) -> set[int]:
    """The dead lines of the ``if`` at ``index`` whose condition the flags decide."""
    dead: set[int] = set()
    if verdict is None:
        return dead
    in_dead = verdict == "skipped"
    last_live = ""
    for offset in range(index + 1, len(lines)):
        line = lines[offset]
        stripped = line.strip()
        if line.startswith(indent) and not line.startswith(indent + " ") and stripped:
            if stripped == "end" or stripped.startswith("elseif"):
                if verdict == "taken" and stripped == "end" and last_live.startswith("return"):
                    dead |= _rest_of_block(lines, offset + 1, indent)
                break
            if stripped == "else":
                in_dead = not in_dead
                continue
        if in_dead:
            dead.add(offset + 1)
        elif stripped and not _is_comment(line):
            last_live = stripped
    return dead


def _rest_of_block(lines: list[str], start: int, indent: str) -> set[int]:
    """Lines from ``start`` to the end of the block indented at ``indent`` (1-based)."""
    rest: set[int] = set()
    for offset in range(start, len(lines)):
        line = lines[offset]
        if line.strip() and len(line) - len(line.lstrip()) < len(indent):
            break  # dedented: the enclosing block ended
        rest.add(offset + 1)
    return rest


def _unused_locals(lines: list[str], dead: set[int]) -> set[int]:
    """Locals (functions: their body too) whose every use is on a ``dead`` line."""
    found: set[int] = set()
    for index, text in enumerate(lines):
        if index + 1 in dead:
            continue
        function = _LOCAL_FUNCTION.match(text)
        value = None if function else _LOCAL_VALUE.match(text)
        if function is None and value is None:
            continue
        name = function.group(2) if function else value.group(1)  # type: ignore[union-attr]
        own = _function_body(lines, index, function.group(1)) if function else {index + 1}
        uses = {n for n, line in enumerate(lines, start=1)
                if n not in own and re.search(rf"\b{name}\b", _code(line))}
        if uses <= dead:
            found |= own
    return found


def _function_body(lines: list[str], index: int, indent: str) -> set[int]:
    """1-based lines of the function defined at ``index``, its ``end`` included."""
    for offset in range(index + 1, len(lines)):
        if lines[offset].rstrip() == f"{indent}end":
            return set(range(index + 1, offset + 2))
    return {index + 1}


def _is_comment(text: str) -> bool:
    return text.lstrip().startswith("--") or not text.strip()


def _line_mutants(text: str) -> Iterator[tuple[Operator, str, int]]:
    code_end = _code_end(text)
    code, rest = text[:code_end], text[code_end:]
    for op, after in _all(code):
        yield op[0], after + rest, op[1]


def _all(code: str) -> Iterator[tuple[tuple[Operator, int], str]]:
    for maker in (_delete_writes, _flips, _literals, _range_bounds, _scores, _ttl_options, _guards):
        for n, (operator, after) in enumerate(maker(code)):
            yield (operator, n), after


def _code_end(text: str) -> int:
    """Where a trailing ``--`` comment starts (outside strings), else the line's length."""
    quote: str | None = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote and text[i - 1] != "\\":
                quote = None
        elif ch in "\"'":
            quote = ch
        elif text.startswith("--", i):
            return i
    return len(text)


def _outside_strings(code: str) -> list[bool]:
    """For each character of ``code``: True when it is not inside a string literal."""
    mask, quote = [], None
    for i, ch in enumerate(code):
        if quote:
            mask.append(False)
            if ch == quote and code[i - 1] != "\\":
                quote = None
        elif ch in "\"'":
            quote = ch
            mask.append(False)
        else:
            mask.append(True)
    return mask


def _call_span(code: str, start: int) -> int | None:
    """The index just past the ``)`` closing the call that opens at ``start``; None when the
    call does not close on this line."""
    depth, quote = 0, None
    for i in range(code.index("(", start), len(code)):
        ch = code[i]
        if quote:
            quote = None if ch == quote and code[i - 1] != "\\" else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _delete_writes(code: str) -> Iterator[tuple[Operator, str]]:
    for match in _CALL.finditer(code):
        neutral = WRITE_COMMANDS.get(match.group(1))
        end = _call_span(code, match.start())
        if neutral is None or end is None:
            continue
        before, after = code[:match.start()], code[end:]
        if not before.strip() and not after.strip():  # a statement: comment it out
            yield Operator.DELETE_WRITE, f"{before}-- {code[match.start():end]}"
        else:
            yield Operator.DELETE_WRITE, before + neutral + after


def _flips(code: str) -> Iterator[tuple[Operator, str]]:
    mask = _outside_strings(code)
    for match in _COMPARISON.finditer(code):
        if mask[match.start()]:
            yield Operator.FLIP_COMPARISON, (code[:match.start()] + _FLIPPED[match.group()]
                                             + code[match.end():])


def _literals(code: str) -> Iterator[tuple[Operator, str]]:
    mask = _outside_strings(code)
    for match in _INTEGER.finditer(code):
        if not mask[match.start()] or _INDEX.search(code[:match.end() + 1]):
            continue
        value = int(match.group(1))
        for shifted in (value + 1, value - 1):
            if shifted >= 0:
                yield Operator.SHIFT_LITERAL, code[:match.start()] + str(shifted) + code[match.end():]


def _range_bounds(code: str) -> Iterator[tuple[Operator, str]]:
    if not any(f'"{cmd}"' in code for cmd in _BY_SCORE) and '"BYSCORE"' not in code:
        return
    for match in re.finditer(r'"\("\s*\.\.\s*', code):  # exclusive -> inclusive
        yield Operator.RANGE_BOUND, code[:match.start()] + code[match.end():]
    call = _CALL.search(code)
    end = _call_span(code, call.start()) if call else None
    if call is None or end is None:
        return
    args = _split_args(code[code.index("(", call.start()) + 1:end - 1])
    bounds = (2, 3)  # after the command and the key: min and max (ZRANGE: start and stop)
    for position in bounds:
        if position >= len(args):
            continue
        arg = args[position].strip()
        if arg.startswith('"(') or arg in ('"-inf"', '"+inf"', '"inf"') or arg.startswith('"'):
            continue
        start = code.index(args[position], code.index("(", call.start()))
        yield Operator.RANGE_BOUND, f'{code[:start]} "(" .. {arg}{code[start + len(args[position]):]}'


def _split_args(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += ch in "([{"
        depth -= ch in ")]}"
        current += ch
    return [*parts, current]


def _scores(code: str) -> Iterator[tuple[Operator, str]]:
    for match in re.finditer(r'redis\.call\(\s*"ZADD"\s*,', code):
        end = _call_span(code, match.start())
        if end is None:
            continue
        open_at = code.index("(", match.start())
        args = _split_args(code[open_at + 1:end - 1])
        if len(args) < 4 or args[2].strip().startswith('"'):
            continue
        start = code.index(args[2], open_at)
        moved = f" tonumber({args[2].strip()}) + 1"
        yield Operator.SHIFT_SCORE, code[:start] + moved + code[start + len(args[2]):]


def _ttl_options(code: str) -> Iterator[tuple[Operator, str]]:
    for match in _TTL_OPTION.finditer(code):
        yield Operator.DROP_TTL, code[:match.start()] + code[match.end():]


def _guards(code: str) -> Iterator[tuple[Operator, str]]:
    match = re.match(r"^(\s*)if\s+(.+?)\s+then\s*$", code)
    if match and not re.search(r"\bQ\.\w+", match.group(2)):
        yield Operator.DROP_GUARD, f"{match.group(1)}if false then"


# --- running the check on a mutant --------------------------------------------------------------


class Verdict(StrEnum):
    """What the default check made of one mutant."""

    KILLED = "killed"  # the check failed: an invariant, the model's agreement or the drain
    CRASHED = "crashed"  # the harness itself raised (counted as killed, listed apart)
    TIMEOUT = "timeout"  # no answer within the time limit, e.g. a loop that no longer ends
    #: No leak seen, but coverage never completed within the budget (``keysim check`` exits 3,
    #: never PASS): the bug made some (transition, outcome) pair rare or unreachable. Counted
    #: as detected, listed apart — on an overloaded machine a budget can also just run out.
    INCOMPLETE = "incomplete"
    SURVIVED = "survived"  # the check passed: this bug would ship


@dataclass(frozen=True)
class MutantResult:
    """One mutant's verdict, the check that caught it and the time it took."""

    mutant: str
    verdict: Verdict
    seconds: float
    check: str = ""
    detail: str = ""
    #: CPU time of the check (the machine is shared: wall time also measures the neighbours).
    cpu_seconds: float = 0.0

    @property
    def detected(self) -> bool:
        """Killed, crashed, timed out or left coverage incomplete: the bug did not pass unseen."""
        return self.verdict is not Verdict.SURVIVED


def install(mutant: Mutant) -> None:
    """Make this process's broker load ``mutant``'s script text instead of the shipped one.

    Run it before any broker sends a script: scripts are sent once per client and cached by
    SHA1 (a fresh process per mutant, as :func:`run_all` uses, keeps that true). A Python
    composite's mutant replaces the code of the function it edits."""
    if mutant.is_python:
        install_python(mutant.script, mutant.line, mutant.source())
        return
    shipped: Callable[[str], str] = broker.scripting.script_text
    mutated = mutant.source()

    def patched(name: str) -> str:
        return mutated if name == mutant.script else shipped(name)

    broker.scripting.script_text = patched  # type: ignore[assignment]
    broker.scripting.prelude_definitions.cache_clear()
    broker.scripting._source.cache_clear()


def run_one(mutant: Mutant, seed: int, max_examples: int | None = None) -> MutantResult:
    """Run the default ``keysim check`` (:func:`harness.check.default_check`: reference variant,
    fakeredis, until complete coverage or the budget, without the example database, which would
    carry one mutant's failures to the next) with ``mutant`` installed; ``max_examples`` runs a
    fixed-size check of that many examples instead (to tell a survivor the default check does
    not reach from one it cannot see)."""
    from harness.check import default_check, default_check_config, run_check

    install(mutant)
    start, cpu = time.perf_counter(), time.process_time()
    try:
        result = default_check(seed=seed) if max_examples is None else \
            run_check(default_check_config(), seed=seed, max_examples=max_examples)
    except Exception as err:  # any harness failure is a detection, listed apart
        return MutantResult(mutant.id, Verdict.CRASHED, time.perf_counter() - start,
                            detail=f"{type(err).__name__}: {err}"[:300],
                            cpu_seconds=time.process_time() - cpu)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    if result.failure is not None:
        return MutantResult(mutant.id, Verdict.KILLED, seconds, check=result.failure.invariant,
                            detail=result.failure.message[:300], cpu_seconds=cpu)
    if result.verdict == "INCOMPLETE" and max_examples is None:
        return MutantResult(mutant.id, Verdict.INCOMPLETE, seconds, cpu_seconds=cpu,
                            detail=result.summary().splitlines()[0][:300])
    return MutantResult(mutant.id, Verdict.SURVIVED, seconds, cpu_seconds=cpu)


def run_all(mutants: list[Mutant], *, seed: int, jobs: int, timeout: float,
            progress: Callable[[MutantResult], None] | None = None) -> list[MutantResult]:
    """Each mutant in a fresh process (``python -m harness.mutate MUTANT_ID``), ``jobs`` at
    a time; a process still running after ``timeout`` seconds is killed (TIMEOUT)."""
    def one(mutant: Mutant) -> MutantResult:
        command = [sys.executable, "-m", "harness.mutate", mutant.id, "--seed", str(seed)]
        start = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired:
            return MutantResult(mutant.id, Verdict.TIMEOUT, time.perf_counter() - start)
        last = done.stdout.strip().splitlines()[-1:] if done.stdout.strip() else []
        if done.returncode != 0 or not last:
            return MutantResult(mutant.id, Verdict.CRASHED, time.perf_counter() - start,
                                detail=(done.stderr.strip().splitlines() or ["no output"])[-1])
        fields = json.loads(last[0])
        return MutantResult(**{**fields, "verdict": Verdict(fields["verdict"])})

    results: list[MutantResult] = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for result in pool.map(one, mutants):
            results.append(result)
            if progress:
                progress(result)
    return results


def by_id(mutant_id: str) -> Mutant:
    """The mutant named ``mutant_id`` (see :attr:`Mutant.id`); ValueError when there is none."""
    script = mutant_id.split(":", 1)[0]
    if script not in mutated_targets():
        raise ValueError(f"no mutated script named {script!r} (mutant id {mutant_id!r})")
    for mutant in generate([script]):
        if mutant.id == mutant_id:
            return mutant
    raise ValueError(f"no mutant {mutant_id!r}: script {script!r} has none with that id")


def sample(mutants: list[Mutant], size: int | None, seed: int) -> list[Mutant]:
    """``size`` mutants drawn with ``seed`` (all when ``size`` is None), in generation order."""
    if size is None or size >= len(mutants):
        return mutants
    chosen = set(random.Random(seed).sample(range(len(mutants)), size))
    return [m for i, m in enumerate(mutants) if i in chosen]


def select(*, scripts: Iterable[str] | None = None, operators: Iterable[Operator] | None = None,
           size: int | None = None, seed: int = 0) -> list[Mutant]:
    """The mutants a run covers: those of ``scripts`` by ``operators`` (default: all), then
    ``size`` of them drawn with ``seed`` (:func:`sample`). ValueError names an unknown script
    or a size below 1."""
    known = mutated_targets()
    unknown = [s for s in scripts or () if s not in known]
    if unknown:
        raise ValueError(f"no mutated script named {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(known)}")
    if size is not None and size < 1:
        raise ValueError(f"a sample holds at least 1 mutant, got {size}")
    return sample(generate(scripts, operators), size, seed)


#: Mutants that no check can kill, each with its one-line reason (the full arguments are in
#: docs/mutation.md): reported apart and left out of the score.
EQUIVALENTS_FILE = Path(__file__).with_name("equivalent_mutants.toml")


def equivalents(path: Path = EQUIVALENTS_FILE) -> dict[str, str]:
    """Mutant id → why it is equivalent, from ``path`` (a ``[equivalent]`` TOML table)."""
    with path.open("rb") as file:
        table = tomllib.load(file).get("equivalent", {})
    if not all(isinstance(v, str) and v.strip() for v in table.values()):
        raise ValueError(f"{path}: every equivalent mutant needs a one-line reason")
    return dict(table)


def score(results: list[MutantResult], equivalent: Iterable[str] = ()) -> float:
    """Detected mutants ÷ mutants run, equivalent mutants left out of both (1.0 when no
    non-equivalent mutant ran)."""
    skip = set(equivalent)
    scored = [r for r in results if r.mutant not in skip]
    return sum(r.detected for r in scored) / len(scored) if scored else 1.0


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank ``share`` percentile of ``values`` (not empty).

    >>> percentile([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 0.9)
    9.0
    """
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def report(results: list[MutantResult], mutants: dict[str, Mutant],
           equivalent: dict[str, str] | None = None) -> str:
    """The score over non-equivalent mutants, the time-to-detect distribution, the score of
    each operator, every survivor with its edit, and the equivalent mutants apart."""
    equivalent = equivalent or {}
    scored = [r for r in results if r.mutant not in equivalent]
    detected = [r for r in scored if r.detected]
    counts = {v: sum(r.verdict is v for r in scored) for v in Verdict}
    lines = [f"mutation score {score(results, equivalent):.1%}: {len(detected)} of {len(scored)} "
             f"non-equivalent mutants detected ({counts[Verdict.KILLED]} killed by a check, "
             f"{counts[Verdict.CRASHED]} crashed the harness, {counts[Verdict.TIMEOUT]} timed "
             f"out, {counts[Verdict.INCOMPLETE]} left coverage incomplete), "
             f"{counts[Verdict.SURVIVED]} survived; "
             f"{len(results) - len(scored)} equivalent mutants not scored"]
    lines += _times(detected)
    lines += _by_operator(scored, mutants)
    for result in scored:
        if not result.detected:
            m = mutants[result.mutant]
            lines.append(f"SURVIVED {m.id}\n    - {m.before.strip()}\n    + {m.after.strip()}")
    for result in results:
        if result.mutant in equivalent:
            wrong = " — KILLED: the equivalence argument is wrong" if result.detected else ""
            lines.append(f"equivalent {result.mutant}: {equivalent[result.mutant]}{wrong}")
    return "\n".join(lines)


def _times(detected: list[MutantResult]) -> list[str]:
    killed = [r for r in detected if r.verdict is Verdict.KILLED]
    if not killed:
        return []
    wall = [r.seconds for r in killed]
    cpu = [r.cpu_seconds for r in killed]
    return [f"time to kill ({len(killed)} killed by a check): median {statistics.median(wall):.1f} s, "
            f"p90 {percentile(wall, 0.9):.1f} s, max {max(wall):.1f} s wall; "
            f"median {statistics.median(cpu):.1f} s, p90 {percentile(cpu, 0.9):.1f} s CPU"]


def _by_operator(scored: list[MutantResult], mutants: dict[str, Mutant]) -> list[str]:
    cells = []
    for operator in Operator:
        mine = [r for r in scored if mutants[r.mutant].operator is operator]
        if mine:
            cells.append(f"{operator.value} {sum(r.detected for r in mine)}/{len(mine)}")
    return [f"by operator: {', '.join(cells)}"] if cells else []


def to_json(results: list[MutantResult], mutants: dict[str, Mutant],
            equivalent: dict[str, str]) -> dict[str, Any]:
    """The run as plain data: the score and, per mutant, its edit, verdict and timing."""
    return {
        "score": score(results, equivalent),
        "mutants": [{**asdict(r), "verdict": r.verdict.value, "before": mutants[r.mutant].before,
                     "after": mutants[r.mutant].after, "operator": mutants[r.mutant].operator.value,
                     "equivalent": equivalent.get(r.mutant)} for r in results],
    }


def _main_one(argv: list[str]) -> int:
    """``python -m harness.mutate MUTANT_ID [--seed S] [--max-examples N]``: one mutant, one
    JSON line."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.mutate")
    parser.add_argument("mutant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-examples", type=int, default=None)
    args = parser.parse_args(argv)
    result = run_one(by_id(args.mutant), args.seed, args.max_examples)
    print(json.dumps({**asdict(result), "verdict": result.verdict.value}))
    return 0


__all__ = ["EQUIVALENTS_FILE", "WRITE_COMMANDS", "Mutant", "MutantResult", "Operator", "Verdict",
           "by_id", "equivalents", "generate", "install", "mutated_scripts", "mutated_targets",
           "percentile", "quirk_only_lines", "report", "run_all", "run_one", "sample", "score",
           "select", "target_text", "to_json"]

if __name__ == "__main__":
    raise SystemExit(_main_one(sys.argv[1:]))
