"""harness.mutate: the mutants are real edits of real code, and the check's verdicts are earned."""

from __future__ import annotations

import subprocess
import sys

import pytest
from lupa.lua51 import LuaRuntime

from broker.scripting import script_text
from harness.mutate import (
    EQUIVALENTS_FILE,
    MutantResult,
    Operator,
    Verdict,
    by_id,
    equivalents,
    generate,
    mutated_scripts,
    quirk_only_lines,
    report,
    sample,
    score,
    select,
    target_text,
)
from harness.mutate_python import COMPOSITES


def test_every_operation_script_is_mutated_and_the_scan_scripts_are_not() -> None:
    scripts = mutated_scripts()
    assert "_prelude" in scripts and "done" in scripts
    assert "snapshot" not in scripts and "sweep_expired" not in scripts


@pytest.mark.parametrize("operator", [op for op in Operator if op is not Operator.DROP_TTL])
def test_each_operator_finds_mutants_in_the_reference_scripts(operator: Operator) -> None:
    # (the scripts write TTLs with PEXPIREAT, never with an EX/PX option: drop_ttl finds none)
    assert generate(operators=[operator])


def test_python_operators_touch_only_the_composites() -> None:
    python = generate(operators=[Operator.SLICE_BATCH, Operator.SWAP_ARGUMENTS])
    assert python and all(m.is_python and m.script in COMPOSITES for m in python)
    assert all(not m.is_python for m in generate(mutated_scripts()))


def test_mutants_change_one_line_of_code_and_never_a_comment() -> None:
    for mutant in generate():
        assert mutant.before != mutant.after, mutant.id
        assert not mutant.before.lstrip().startswith("--"), mutant.id
        original = target_text(mutant.script).splitlines()
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


def test_quirk_only_follows_conditions_returns_and_locals() -> None:
    lines = ["local LIMIT = 8",                       # 1: only used by quirk_only()
             "local function quirk_only()",           # 2
             "    return LIMIT",                      # 3
             "end",                                   # 4
             "local function f()",                    # 5
             "    if not Q.a and not Q.b then",       # 6: the reference always enters
             "        g()",                           # 7
             "        return",                        # 8
             "    end",                               # 9
             "    quirk_only()",                      # 10: so this is never reached
             "end",                                   # 11
             "if ready and Q.c then",                 # 12: never entered
             "    h()",                               # 13
             "end",                                   # 14
             "f()"]                                   # 15
    assert quirk_only_lines(lines) == {1, 2, 3, 4, 10, 13}
    # The prelude's locals are used by other scripts: never dead for want of a local use.
    assert quirk_only_lines(lines[:4], exported=True) == set()


def test_a_continuation_guarded_by_a_quirk_flag_is_quirk_only() -> None:
    lines = ["local keep = Q.k", "    or (Q.x and (s == 1 or s == 2))",
             "    or (Q.y and s == 1) or t == 2",  # (not one group: t == 2 runs)
             "f(keep)"]
    assert quirk_only_lines(lines) == {2}
    assert not any(m.line == 16 for m in generate(["delete_all"]))


def test_a_branch_on_a_local_made_of_flags_alone_is_quirk_only() -> None:
    lines = ["local keep = Q.k",                      # 1: false in the reference
             "    or (Q.x and s == 1)",               # 2
             "if keep then",                          # 3
             "    a()",                               # 4: never runs
             "else",                                  # 5
             "    b()",                               # 6
             "end",                                   # 7
             "local mixed = Q.k",                     # 8
             "    or s == 1",                         # 9: not flags alone
             "if mixed then",                         # 10
             "    c()",                               # 11: may run
             "end"]
    assert quirk_only_lines(lines) == {2, 4}
    reassigned = [*lines[:7], "keep = true"]          # assigned again: no longer known false
    assert quirk_only_lines(reassigned) == {2}
    delete_all = script_text("delete_all").splitlines()
    keep_branch = next(n for n, line in enumerate(delete_all, 1) if "if keep_locks then" in line)
    assert keep_branch + 1 in quirk_only_lines(delete_all)


def test_archive_helpers_only_asynq_runs_are_not_mutated() -> None:
    archive = script_text("archive").splitlines()
    limit = next(n for n, line in enumerate(archive, 1) if "local UNPACK_LIMIT" in line)
    assert limit in quirk_only_lines(archive)
    assert not any(m.line == limit for m in generate(["archive"]))
    done = script_text("done").splitlines()
    dead = quirk_only_lines(done)
    assert all(m.line not in dead for m in generate(["done"]))


def test_every_mutated_script_still_compiles() -> None:
    """A mutant that does not parse would be 'killed' by a syntax error: a free kill."""
    lua = LuaRuntime()  # Lua 5.1, as Redis and fakeredis run
    for mutant in generate(mutated_scripts()):
        # Wrapped in a function, the text is compiled but not run; a syntax error raises.
        lua.execute(f"return function() {mutant.source()} end")
    for mutant in generate(list(COMPOSITES)):
        compile(mutant.source(), mutant.script, "exec")


def python_mutant_id(script: str, operator: Operator, after: str) -> str:
    """The id of the one mutant of ``script`` by ``operator`` whose edited line reads ``after``
    (ids carry line numbers, which move whenever the module above them changes)."""
    found = [m.id for m in generate([script], [operator]) if m.after.strip() == after]
    assert len(found) == 1, (script, operator, after, found)
    return found[0]


RETRY_LIMIT_OFF_BY_ONE = ("broker.processor", Operator.FLIP_COMPARISON,
                          "return msg.retried > msg.retry")
JANITOR_STOPS_AT_FULL_BATCH = ("broker.server_ops", Operator.FLIP_COMPARISON, "if int(n) <= size:")


def test_python_mutants_are_the_edits_the_issue_names() -> None:
    """Flip a comparison, slice a batch, swap two arguments — in the recoverer, the forwarder
    and janitor loops and the choice of the finishing operation."""
    ids = {m.id: m.after.strip() for m in generate(list(COMPOSITES))}
    assert ids[python_mutant_id(*RETRY_LIMIT_OFF_BY_ONE)] == RETRY_LIMIT_OFF_BY_ONE[2]
    batching = [m for m in generate(["broker.server_ops"], [Operator.FLIP_COMPARISON])]
    assert {m.after.strip() for m in batching} >= {
        "if int(taken) <= self.policy.forward_batch:", "if int(n) <= size:"}
    assert python_mutant_id("broker.server_ops", Operator.SWAP_ARGUMENTS,
                            "return recover_expired(expired, self)") in ids
    # A literal is never swapped with a value of another kind (that could only be a TypeError).
    assert not any('Finish((msg,), "requeue")' in after for after in ids.values())


def test_installing_a_python_mutant_changes_the_loaded_function_everywhere() -> None:
    """In a fresh process: a module function (and its ``import from`` copies) and a method of
    the broker class both run the mutated code."""
    program = "\n".join([
        "from types import SimpleNamespace",
        "from harness.mutate import by_id, install",
        "from broker.processor import retries_exhausted",
        "from broker.core import Broker",
        "from model.message import TaskMessage",
        "msg = TaskMessage(type='t', payload=b'', id='a', queue='q', retry=1, retried=1)",
        "replies = lambda: iter([(2,), (1,)])",  # a full janitor batch of 2, then a short one
        "def janitor():",
        "    it = replies()",
        "    fake = SimpleNamespace(policy=SimpleNamespace(janitor_batch_size=2),",
        "                           call=lambda *a: next(it))",
        "    return Broker._batches(fake, ())",
        "before = (retries_exhausted(msg), janitor())",
        f"install(by_id({python_mutant_id(*RETRY_LIMIT_OFF_BY_ONE)!r}))",
        f"install(by_id({python_mutant_id(*JANITOR_STOPS_AT_FULL_BATCH)!r}))",
        "print(*before, retries_exhausted(msg), janitor())",
    ])
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          check=True, timeout=120)
    # retried >= retry → retried > retry; the loop stops after the full batch (<= size).
    assert done.stdout.split() == ["True", "3", "False", "2"]


def test_a_python_composite_mutant_is_installed_and_killed_in_a_fresh_process() -> None:
    """The recoverer's retry limit off by one: the model archives, the broker retries."""
    done = subprocess.run([sys.executable, "-m", "harness.mutate",
                           python_mutant_id(*RETRY_LIMIT_OFF_BY_ONE), "--seed", "0"],
                          capture_output=True, text=True, check=True, timeout=600)
    assert '"verdict": "killed"' in done.stdout and '"check": "agreement"' in done.stdout


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


def test_equivalent_mutants_leave_the_denominator_and_are_reported_apart() -> None:
    a, b, c = (m.id for m in generate(["done"])[:3])
    mutants = {m.id: m for m in generate(["done"])[:3]}
    results = [MutantResult(a, Verdict.KILLED, 2.0), MutantResult(b, Verdict.SURVIVED, 5.0),
               MutantResult(c, Verdict.SURVIVED, 5.0)]
    assert score(results) == pytest.approx(1 / 3)
    assert score(results, {c: "why"}) == 0.5
    text = report(results, mutants, {c: "no observable difference"})
    assert text.startswith("mutation score 50.0%: 1 of 2 non-equivalent mutants detected")
    assert f"SURVIVED {b}" in text and f"SURVIVED {c}" not in text
    assert f"equivalent {c}: no observable difference" in text
    # An 'equivalent' mutant that a check kills disproves its argument: the report says so.
    killed = report([MutantResult(c, Verdict.KILLED, 1.0)], mutants, {c: "why"})
    assert "KILLED: the equivalence argument is wrong" in killed


def test_every_listed_equivalent_names_a_real_mutant_with_a_reason() -> None:
    listed = equivalents()
    for mutant_id, reason in listed.items():
        assert by_id(mutant_id).id == mutant_id and reason.strip()
    assert EQUIVALENTS_FILE.is_file()


def test_select_filters_then_samples_and_rejects_bad_input() -> None:
    chosen = select(scripts=["done", "retry"], operators=[Operator.DELETE_WRITE], size=3, seed=1)
    assert len(chosen) == 3 and {m.script for m in chosen} <= {"done", "retry"}
    assert all(m.operator is Operator.DELETE_WRITE for m in chosen)
    assert chosen == select(scripts=["done", "retry"], operators=[Operator.DELETE_WRITE],
                            size=3, seed=1)
    with pytest.raises(ValueError, match="no mutated script named 'nope'"):
        select(scripts=["nope"])
    with pytest.raises(ValueError, match="at least 1"):
        select(size=0)
