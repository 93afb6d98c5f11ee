"""harness.mutate: the mutants are real edits of real code, and the check's verdicts are earned."""

from __future__ import annotations

import subprocess
import sys

import pytest
from lupa.lua51 import LuaRuntime

from broker.scripting import script_text
from harness.mutate import (
    MutantResult,
    Operator,
    Verdict,
    by_id,
    generate,
    mutated_scripts,
    quirk_only_lines,
    sample,
    score,
)


def test_every_operation_script_is_mutated_and_the_scan_scripts_are_not() -> None:
    scripts = mutated_scripts()
    assert "_prelude" in scripts and "done" in scripts
    assert "snapshot" not in scripts and "sweep_expired" not in scripts


@pytest.mark.parametrize("operator", [op for op in Operator if op is not Operator.DROP_TTL])
def test_each_operator_finds_mutants_in_the_reference_scripts(operator: Operator) -> None:
    # (the scripts write TTLs with PEXPIREAT, never with an EX/PX option: drop_ttl finds none)
    assert generate(operators=[operator])


def test_mutants_change_one_line_of_code_and_never_a_comment() -> None:
    for mutant in generate():
        assert mutant.before != mutant.after, mutant.id
        assert not mutant.before.lstrip().startswith("--"), mutant.id
        original = script_text(mutant.script).splitlines()
        changed = mutant.source().splitlines()
        assert len(original) == len(changed)
        assert [i for i, (a, b) in enumerate(zip(original, changed, strict=True)) if a != b] == \
            [mutant.line - 1]


def test_delete_write_comments_out_a_statement_and_neutralises_an_expression() -> None:
    statement = by_id("enqueue:34:delete_write")
    assert statement.after.strip() == '-- redis.call("LPUSH", KEYS[2], ARGV[2])'
    expression = by_id("done:22:delete_write")
    assert expression.after.strip() == "if 0 == 0 then"


def test_quirk_only_blocks_are_skipped() -> None:
    lines = ["if Q.x then", "    a()", "else", "    b()", "end",
             "if not Q.y then", "    c()", "else", "    d()", "end", "e()"]
    assert quirk_only_lines(lines) == {2, 9}
    done = script_text("done").splitlines()
    dead = quirk_only_lines(done)
    assert all(m.line not in dead for m in generate(["done"]))


def test_every_mutated_script_still_compiles() -> None:
    """A mutant that does not parse would be 'killed' by a syntax error: a free kill."""
    lua = LuaRuntime()  # Lua 5.1, as Redis and fakeredis run
    for mutant in generate():
        # Wrapped in a function, the text is compiled but not run; a syntax error raises.
        lua.execute(f"return function() {mutant.source()} end")


def test_by_id_round_trips_and_rejects_unknown_ids() -> None:
    for mutant in sample(generate(), 25, seed=3):
        assert by_id(mutant.id) == mutant
    with pytest.raises(ValueError, match="no mutated script named 'snapshot'"):
        by_id("snapshot:1:delete_write")
    with pytest.raises(ValueError, match="no mutant 'done:1:delete_write'"):
        by_id("done:1:delete_write")


def test_sample_is_reproducible_and_a_subset() -> None:
    mutants = generate()
    first, again = sample(mutants, 10, seed=7), sample(mutants, 10, seed=7)
    assert first == again and len(first) == 10 and set(first) <= set(mutants)
    assert sample(mutants, None, seed=7) == mutants


def test_the_command_runs_one_mutant_in_a_fresh_process() -> None:
    """enqueue.lua without its LPUSH loses the task from pending: the check must see it."""
    done = subprocess.run([sys.executable, "-m", "harness.mutate", "enqueue:34:delete_write",
                           "--seed", "0"], capture_output=True, text=True, check=True, timeout=300)
    assert '"verdict": "killed"' in done.stdout


def test_score_counts_detections() -> None:
    results = [MutantResult("a", Verdict.KILLED, 1.0), MutantResult("b", Verdict.SURVIVED, 1.0),
               MutantResult("c", Verdict.TIMEOUT, 9.0), MutantResult("d", Verdict.CRASHED, 0.1)]
    assert score(results) == 0.75
    assert score([]) == 1.0
