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
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from enum import StrEnum

import broker.scripting
from broker.scripting import PRELUDE, SCAN_SCRIPTS, script_names, script_text


class Operator(StrEnum):
    """A kind of small bug written into a script (see the module docstring)."""

    DELETE_WRITE = "delete_write"
    FLIP_COMPARISON = "flip_comparison"
    SHIFT_LITERAL = "shift_literal"
    RANGE_BOUND = "range_bound"
    SHIFT_SCORE = "shift_score"
    DROP_TTL = "drop_ttl"
    DROP_GUARD = "drop_guard"


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
_QUIRK_IF = re.compile(r"^(\s*)(?:else)?if\s+(not\s+)?Q\.\w+\s+then\s*$")


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

    def source(self) -> str:
        """The mutated script text."""
        lines = script_text(self.script).splitlines()
        if lines[self.line - 1] != self.before:
            raise ValueError(f"mutant {self.id} no longer matches its script")
        lines[self.line - 1] = self.after
        return "\n".join(lines) + "\n"


def mutated_scripts() -> list[str]:
    """The scripts mutated: every Asynq operation and the shared prelude; not the harness's
    SCAN scripts (the keyspace read and the expiry sweep), which judge rather than act."""
    return [PRELUDE, *(name for name in script_names() if name not in SCAN_SCRIPTS)]


def generate(scripts: Iterable[str] | None = None,
             operators: Iterable[Operator] | None = None) -> list[Mutant]:
    """Every mutant of ``scripts`` (default: :func:`mutated_scripts`) by ``operators``
    (default: all), in script, line and operator order."""
    wanted = set(operators) if operators is not None else set(Operator)
    found: list[Mutant] = []
    for script in scripts if scripts is not None else mutated_scripts():
        lines = script_text(script).splitlines()
        dead = quirk_only_lines(lines)
        for number, text in enumerate(lines, start=1):
            if number in dead or _is_comment(text):
                continue
            for operator, after, nth in _line_mutants(text):
                if operator in wanted:
                    found.append(Mutant(script, number, operator, text, after, nth))
    return found


def quirk_only_lines(lines: list[str]) -> set[int]:
    """1-based numbers of the lines only a quirk runs: the body of ``if Q.x then`` up to its
    ``else``/``end``, and the ``else`` part of ``if not Q.x then`` (found by indentation, which
    every script keeps)."""
    dead: set[int] = set()
    for index, text in enumerate(lines):
        head = _QUIRK_IF.match(text)
        if not head:
            continue
        indent, negated = head.group(1), bool(head.group(2))
        in_quirk = not negated
        for offset in range(index + 1, len(lines)):
            line = lines[offset]
            stripped = line.strip()
            if line.startswith(indent) and not line.startswith(indent + " ") and stripped:
                if stripped == "end" or stripped.startswith("elseif"):
                    break
                if stripped == "else":
                    in_quirk = not in_quirk
                    continue
            if in_quirk:
                dead.add(offset + 1)
    return dead


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
    SURVIVED = "survived"  # the check passed: this bug would ship


@dataclass(frozen=True)
class MutantResult:
    """One mutant's verdict, the check that caught it and the time it took."""

    mutant: str
    verdict: Verdict
    seconds: float
    check: str = ""
    detail: str = ""

    @property
    def detected(self) -> bool:
        """Killed, crashed or timed out: the bug did not pass unseen."""
        return self.verdict is not Verdict.SURVIVED


def install(mutant: Mutant) -> None:
    """Make this process's broker load ``mutant``'s script text instead of the shipped one.

    Run it before any broker sends a script: scripts are sent once per client and cached by
    SHA1 (a fresh process per mutant, as :func:`run_all` uses, keeps that true)."""
    shipped: Callable[[str], str] = broker.scripting.script_text
    mutated = mutant.source()

    def patched(name: str) -> str:
        return mutated if name == mutant.script else shipped(name)

    broker.scripting.script_text = patched  # type: ignore[assignment]
    broker.scripting.prelude_definitions.cache_clear()
    broker.scripting._source.cache_clear()


def run_one(mutant: Mutant, seed: int) -> MutantResult:
    """Run the default ``keysim check`` (reference variant, fakeredis) with ``mutant`` installed."""
    from harness.check import run_check
    from harness.machine import MachineConfig

    install(mutant)
    start = time.perf_counter()
    try:
        result = run_check(MachineConfig(variant="reference"), seed=seed)
    except Exception as err:  # any harness failure is a detection, listed apart
        return MutantResult(mutant.id, Verdict.CRASHED, time.perf_counter() - start,
                            detail=f"{type(err).__name__}: {err}"[:300])
    seconds = time.perf_counter() - start
    if result.passed:
        return MutantResult(mutant.id, Verdict.SURVIVED, seconds)
    assert result.failure is not None
    return MutantResult(mutant.id, Verdict.KILLED, seconds, check=result.failure.invariant,
                        detail=result.failure.message[:300])


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
    if script not in mutated_scripts():
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


def score(results: list[MutantResult]) -> float:
    """Detected mutants ÷ all mutants run (1.0 when none ran)."""
    return sum(r.detected for r in results) / len(results) if results else 1.0


def report(results: list[MutantResult], mutants: dict[str, Mutant]) -> str:
    """The score, the time-to-detect distribution, and every survivor with its edit."""
    detected = [r for r in results if r.detected]
    times = sorted(r.seconds for r in detected if r.verdict is Verdict.KILLED)
    counts = {v: sum(r.verdict is v for r in results) for v in Verdict}
    lines = [f"mutation score {score(results):.1%}: {len(detected)} of {len(results)} mutants "
             f"detected ({counts[Verdict.KILLED]} killed by a check, {counts[Verdict.CRASHED]} "
             f"crashed the harness, {counts[Verdict.TIMEOUT]} timed out), "
             f"{counts[Verdict.SURVIVED]} survived"]
    if times:
        lines.append(f"time to kill: median {statistics.median(times):.1f} s, "
                     f"p90 {times[int(0.9 * (len(times) - 1))]:.1f} s, max {times[-1]:.1f} s")
    for result in results:
        if not result.detected:
            m = mutants[result.mutant]
            lines.append(f"SURVIVED {m.id}\n    - {m.before.strip()}\n    + {m.after.strip()}")
    return "\n".join(lines)


def _main_one(argv: list[str]) -> int:
    """``python -m harness.mutate MUTANT_ID [--seed S]``: one mutant, one JSON line."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.mutate")
    parser.add_argument("mutant")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run_one(by_id(args.mutant), args.seed)
    print(json.dumps({**asdict(result), "verdict": result.verdict.value}))
    return 0


__all__ = ["WRITE_COMMANDS", "Mutant", "MutantResult", "Operator", "Verdict", "by_id", "generate",
           "install", "mutated_scripts", "quirk_only_lines", "report", "run_all", "run_one",
           "sample", "score"]

if __name__ == "__main__":
    raise SystemExit(_main_one(sys.argv[1:]))
