"""The ``keysim`` command line.

Every subcommand is registered by one small ``_add_<name>(subparsers)`` function that creates
its parser and binds its handler with ``set_defaults(handler=...)``; a handler takes the parsed
namespace and returns the exit code. To add a subcommand, write ``_add_<name>`` plus its handler
and list it in :data:`_SUBCOMMANDS`.

>>> build_parser().parse_args(["diagram", "--format", "dot"]).format
'dot'
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

Handler = Callable[[argparse.Namespace], int]

#: Formats of ``keysim diagram``: text formats print to stdout, image formats write a file.
DIAGRAM_TEXT_FORMATS = ("mermaid", "dot")
DIAGRAM_IMAGE_FORMATS = ("png", "svg")


def _add_diagram(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``keysim diagram``: draw the state diagram from the transition table."""
    parser = subparsers.add_parser(
        "diagram",
        help="draw the task state diagram (from model.transitions.TRANSITIONS)",
        description="Draw the task state diagram. png/svg are written to --out "
                    "(default diagram.<format>); mermaid/dot print to stdout unless --out is given.",
    )
    parser.add_argument("--format", choices=DIAGRAM_IMAGE_FORMATS + DIAGRAM_TEXT_FORMATS,
                        default="png", help="output format (default: png)")
    parser.add_argument("--out", type=_output_path, default=None, metavar="PATH",
                        help="output file (default: stdout for text formats, diagram.<format> otherwise)")
    parser.set_defaults(handler=_run_diagram)


def _output_path(text: str) -> Path:
    """An argparse type: a file path whose directory exists (checked before anything is drawn)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory, expected a file path")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"directory {str(path.parent)!r} does not exist")
    return path


def _run_diagram(args: argparse.Namespace) -> int:
    # Imported lazily so that `keysim --help` does not pay for matplotlib.
    from model import diagram

    fmt: str = args.format
    out: Path | None = args.out
    if fmt in DIAGRAM_TEXT_FORMATS:
        text = diagram.mermaid() if fmt == "mermaid" else diagram.dot()
        if out is None:
            sys.stdout.write(text)
        else:
            out.write_text(text, encoding="utf-8")
            print(f"wrote {out}")
        return 0
    path = out if out is not None else Path(f"diagram.{fmt}")
    diagram.render(path, format=fmt)
    print(f"wrote {path}")
    return 0


def _positive(minimum: int) -> Callable[[str], int]:
    """An argparse type: an int >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def _add_explore(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``keysim explore``: exhaustive small-scope exploration of the reference model."""
    from broker.variants import all_names

    parser = subparsers.add_parser(
        "explore",
        help="explore every operation sequence of the reference model up to a depth",
        description="Breadth-first search over every sequence of up to --depth operations on "
                    "--tasks task ids (model.explore), checking the invariants on every "
                    "reachable state. Exit 1 on a violation or a transition never enabled.",
    )
    parser.add_argument("--tasks", type=_positive(1), default=2, help="task ids (default: 2)")
    parser.add_argument("--depth", type=_positive(0), default=6,
                        help="longest operation sequence (default: 6)")
    parser.add_argument("--max-archive-size", type=_positive(1), default=1, metavar="K",
                        help="the archive cap (default: 1, so trims happen)")
    parser.add_argument("--processes", type=_positive(1), default=None, metavar="N",
                        help="every interleaving of N server processes' atomic steps, with "
                             "partial-order reduction (model.explore_procs)")
    parser.add_argument("--variant", default="reference", choices=all_names(), metavar="V",
                        help="with --processes: also run every explored step on this broker "
                             "variant (harness.explore_replay; default: reference)")
    parser.add_argument("--budget", type=_duration, default=None, metavar="T",
                        help="with --processes: stop between two depths once T has passed")
    parser.set_defaults(handler=_run_explore)


def _run_explore(args: argparse.Namespace) -> int:
    from model.explore import explore, explore_policy

    if args.processes is not None:
        return _run_explore_processes(args)
    report = explore(args.tasks, args.depth, explore_policy(args.max_archive_size))
    print(report.format())
    return 0 if report.ok else 1


def _run_explore_processes(args: argparse.Namespace) -> int:
    from harness.explore_replay import replay_schedules
    from model.explore import explore_policy
    from model.explore_procs import explore_processes

    policy = explore_policy(args.max_archive_size)
    replay = args.variant != "reference"
    report = explore_processes(args.processes, args.tasks, args.depth, policy,
                               budget=args.budget, keep_edges=replay)
    print(report.format())
    if not replay:
        return 1 if report.violations else 0
    result = replay_schedules(report.edges, args.variant, processes=args.processes,
                              policy=policy)
    print(result.format())
    return 1 if report.violations or result.violation else 0


def _add_replay(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``keysim replay``: run every explored sequence on a broker (harness.replay)."""
    from broker.variants import all_names

    parser = subparsers.add_parser(
        "replay",
        help="replay every sequence of the exploration on a broker, comparing keyspaces",
        description="Exhaustive small-scope replay: every (state, action) edge that `keysim "
                    "explore` evaluates runs on the reference model and on the broker in "
                    "lockstep; after every step the answers, the exact keyspaces and the "
                    "invariants I1-I14 are compared. Exit 1 on a mismatch (shown with the "
                    "shortest trace and the keyspace diff) or a transition never exercised.",
    )
    parser.add_argument("--tasks", type=_positive(1), default=2, help="task ids (default: 2)")
    parser.add_argument("--depth", type=_positive(0), default=5,
                        help="longest operation sequence (default: 5)")
    parser.add_argument("--backend", default="fakeredis", type=_backend, metavar="B",
                        help="fakeredis (default), server (a private real Redis) or a redis:// "
                             "URL (its database is flushed)")
    parser.add_argument("--variant", default="reference", choices=all_names(), metavar="V",
                        help="broker variant (default: reference; e.g. reference+BZ-9)")
    parser.add_argument("--max-archive-size", type=_positive(1), default=1, metavar="K",
                        help="the archive cap (default: 1, so trims happen)")
    parser.add_argument("--jobs", type=_positive(1), default=None, metavar="N",
                        help="worker processes (fakeredis only; default: CPUs, at most 4)")
    parser.add_argument("--no-shortcuts", action="store_true",
                        help="read and check a fresh broker snapshot after every step")
    parser.set_defaults(handler=_run_replay)


def _run_replay(args: argparse.Namespace) -> int:
    from harness.replay import default_jobs, replay

    jobs: int = args.jobs if args.jobs is not None else default_jobs(args.backend)
    if jobs > 1 and args.backend != "fakeredis":
        print("keysim replay: --jobs > 1 needs --backend fakeredis", file=sys.stderr)
        return 2
    import redis

    from broker.servers import ServerUnavailable

    try:
        report = replay(args.tasks, args.depth, backend=args.backend, variant=args.variant,
                        max_archive_size=args.max_archive_size,
                        shortcuts=not args.no_shortcuts, jobs=jobs)
    except (ServerUnavailable, redis.ConnectionError) as err:
        print(f"keysim replay: {err}", file=sys.stderr)
        return 2
    print(report.format())
    return 0 if report.ok else 1


def _add_audit(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``keysim audit``: read-only audit of a live Redis for leaked Asynq keys (audit)."""
    from audit.acl import help_text

    parser = subparsers.add_parser(
        "audit",
        help="audit a live Redis for leaked Asynq keys (read-only)",
        description="Read-only audit of a live Redis (Redis >= 6.2, Valkey): task counts and exact "
                    "bytes per queue, every violation of I1-I14 (zombies, stubs, dangling ids, "
                    "orphan locks/groups, ...) and Asynq's own sampled memory figure. A key is a "
                    "LEAK only when every read that proves it succeeded; one whose proof needs a "
                    "refused read is UNVERIFIED (listed, never in the fix plan). Exit codes: 0 "
                    "clean, 1 findings, 2 usage or connection error (bad URL or --queue, refused "
                    "connection or credentials, a required read not permitted), 3 incomplete (no "
                    "finding, but some key could not be verified). A Redis Cluster node's URL audits "
                    "every master into one report (the user also needs +cluster|slots; no fix "
                    "plan on a cluster). " + help_text() + " Password: "
                    "URL, KEYSIM_REDIS_PASSWORD or REDISCLI_AUTH.",
        epilog="Fix plan (--fix-plan FILE, JSON): {format: keysim-audit-plan, version: 1, server: "
               "{run_id, db, address, server}, target, written_at, actions: [{queue, key, kind, "
               "invariant, task_id, bytes, message, guard, requires}], not_planned: [findings that "
               "need a repair, never acted on]}. Kinds with a guard: zombie, stub, result-only hash, "
               "orphan lock, lock without ttl, counter without ttl, unregistered leftover, dangling id "
               "(only the id leaves its index). 'requires' states what the guard re-checks at "
               "deletion time. --apply PLAN prints per action deleted / would delete / skipped "
               "(reason) / gone and exits 0, or 2 for a malformed plan, another server or db; its "
               "ACL: +@read +ping +select +info +evalsha +script|load +script|exists +unlink +zrem "
               "+lrem.",
    )
    parser.add_argument("url", metavar="REDIS_URL", help="redis://[user[:pass]@]host:port/db, rediss://, unix://")
    parser.add_argument("--queue", action="append", default=[], metavar="Q",
                        help="audit only this queue (repeatable; default: every queue found)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--scan-count", type=_positive(1), default=1000, metavar="N",
                        help="SCAN COUNT hint and page size (default: 1000)")
    parser.add_argument("--pause-ms", type=_positive(0), default=0, metavar="M",
                        help="sleep between SCAN round trips (default: 0)")
    parser.add_argument("--fix-plan", type=_output_path, default=None, metavar="FILE",
                        help="write (never run) the fix plan: JSON with the server's run_id and db "
                             "and, per leak, the key, its finding and what must still hold for the "
                             "deletion; FILE.redis: the same as guarded EVALSHAs redis-cli runs as is "
                             "(redis-cli -h H -p P < FILE.redis)")
    parser.add_argument("--apply", type=Path, default=None, metavar="PLAN",
                        help="instead of auditing, run a JSON fix plan: each key is deleted only if "
                             "an atomic guard finds it still the same leak (else skipped, with the "
                             "reason); refused (exit 2) on another server (run_id) or db. A dry run "
                             "that changes nothing unless --yes")
    parser.add_argument("--yes", action="store_true", help="with --apply: really delete")
    parser.add_argument("--clock", choices=("auto", "real"), default="auto",
                        help="auto: un-shift keysim-broker TTL deadlines (> TTL_SHIFT_MS); real: as is")
    parser.add_argument("--now-ms", type=_positive(0), default=None, metavar="MS",
                        help="judge TTLs at this time (virtual clock of a keysim broker) instead of now")
    parser.add_argument("--reads", choices=("auto", "script", "pipeline"), default="auto",
                        help="how task hashes are read: auto (EVAL_RO batches, a pipeline when "
                             "the server or ACL refuses it), script (needs +eval_ro, Redis >= 7.0) "
                             "or pipeline (+@read only)")
    parser.set_defaults(handler=_run_audit)


def _run_audit(args: argparse.Namespace) -> int:
    from audit import AuditOptions
    from audit.apply import run_apply
    from audit.command import run_audit

    if args.apply is not None or args.yes:
        if args.apply is None or args.fix_plan is not None:
            print("keysim audit: --yes goes with --apply PLAN, and --apply not with --fix-plan",
                  file=sys.stderr)
            return 2
        return run_apply(args.url, args.apply, execute=args.yes, as_json=args.json)
    try:
        options = AuditOptions(queues=tuple(args.queue), scan_count=args.scan_count,
                               pause_ms=args.pause_ms, chunk=min(args.scan_count, 1000),
                               clock=args.clock, now_ms=args.now_ms, reads=args.reads)
    except ValueError as err:
        print(f"keysim audit: {err}", file=sys.stderr)
        return 2
    return run_audit(args.url, options, as_json=args.json, fix_plan_path=args.fix_plan)


def _add_simulate(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``keysim simulate``: a workload in virtual time, with memory curves (simulations.cli)."""
    from simulations.cli import add_simulate

    add_simulate(subparsers)


def _add_plot(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``keysim plot RUN``: redraw a simulation run's PNGs (simulations.cli)."""
    from simulations.cli import add_plot

    add_plot(subparsers)


def _add_compare(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``keysim compare RUN…``: overlay simulation runs (simulations.cli)."""
    from simulations.cli import add_compare

    add_compare(subparsers)


def _add_check(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``keysim check``: run the stateful machine (model vs broker, invariants, drain)."""
    from broker.variants import all_names
    from harness.check import MIN_HITS
    from harness.processes import DEFAULT_PROCESSES, RACES

    parser = subparsers.add_parser(
        "check", help="hunt for key leaks: the model drives a broker variant step by step",
        description="Run the Hypothesis stateful machine: the reference model drives a broker "
                    "variant; after every step the invariants I1-I14 are checked on the real "
                    "keyspace and compared key by key with the model; every run ends with a drain "
                    "that must leave only the documented baseline. By default it runs until every "
                    "(transition, outcome) pair the table declares reachable has run --min-hits "
                    "times, or until --budget runs out; --profile or --max-examples runs a fixed "
                    "size instead. Exit 0 PASS (no leak, coverage complete), 1 FAIL (the minimal "
                    "failing program), 3 INCOMPLETE (no leak found, coverage short: not a pass).")
    parser.add_argument("--variant", default="reference", metavar="V",
                        choices=[*all_names(), *(f"reference+{r}" for r in RACES)],
                        help="broker variant (default: reference; e.g. asynq-v0.26.0, "
                             "reference+BZ-1; reference+RACE-1/2: race mutants, --processes)")
    parser.add_argument("--backend", default="fakeredis", type=_machine_backend, metavar="B",
                        help=_MACHINE_BACKEND_HELP)
    parser.add_argument("--processes", type=_positive(1), nargs="?", const=DEFAULT_PROCESSES,
                        default=None, metavar="N",
                        help=f"N server processes whose components interleave step by step "
                             f"(default {DEFAULT_PROCESSES}); PASS needs every "
                             f"interleaving-sensitive outcome K times (harness.processes)")
    parser.add_argument("--budget", type=_duration, default=None, metavar="T",
                        help="time for the coverage-driven run, e.g. 60s, 5m (default: 60s on "
                             "fakeredis, 3m on a real Redis or cluster, 10m on asynq)")
    parser.add_argument("--min-hits", type=_positive(1), default=MIN_HITS, metavar="K",
                        help=f"each reachable pair must run K times (default: {MIN_HITS})")
    parser.add_argument("--max-examples", type=_positive(1), default=None, metavar="N",
                        help="a fixed-size run of N examples (instead of the coverage rule)")
    parser.add_argument("--steps", type=_positive(1), default=None, metavar="N",
                        help="steps per example (stateful_step_count)")
    parser.add_argument("--seed", type=int, default=None, metavar="S")
    parser.add_argument("--profile", choices=("dev", "ci", "deep"), default=None,
                        help="a fixed-size run: dev, ci or deep (3000 examples x 80 steps)")
    parser.add_argument("--coverage", action="store_true",
                        help="also print every transition and outcome exercised")
    parser.add_argument("--faults", type=_faults, default=frozenset(), metavar="F,…",
                        help="faults as actions: failover, connloss, skew, cache, abort (comma-"
                             "separated) or all; their outcomes join the coverage goal "
                             "(docs/faults.md)")
    parser.set_defaults(handler=_run_check)


def _faults(text: str) -> frozenset[str]:
    """An argparse type: ``--faults`` names (harness.fault_rules.parse_faults)."""
    from harness.fault_rules import parse_faults

    try:
        return parse_faults(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _duration(text: str) -> float:
    """An argparse type: seconds as ``90``, ``90s``, ``5m`` or ``1h`` (more than 0)."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 60s, 5m or 1h, got {text!r}") from None
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite duration > 0, got {text!r}")
    return seconds


def _backend(text: str) -> str:
    if text in ("fakeredis", "server") or text.startswith(("redis://", "rediss://", "unix://")):
        return text
    raise argparse.ArgumentTypeError(
        f"backend must be fakeredis, server or a redis:// URL, got {text!r}")


def _machine_backend(text: str) -> str:
    """A backend of the stateful machine: those of :func:`_backend`, ``cluster`` or ``asynq``."""
    from harness.backends import CLUSTER_BACKEND
    from harness.machine import ASYNQ_BACKEND

    if text in (ASYNQ_BACKEND, CLUSTER_BACKEND):
        return text
    try:
        return _backend(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"backend must be fakeredis, server, cluster, asynq or a "
                                         f"redis:// URL, got {text!r}") from None


_MACHINE_BACKEND_HELP = ("fakeredis (default), server (a private real Redis), a redis:// URL, "
                         "cluster (a private local Redis Cluster of 3 masters), or asynq: Asynq's "
                         "own Go code (asynq-v* variants; needs Go)")


def _run_check(args: argparse.Namespace) -> int:
    from harness.check import (
        check_until_covered,
        coverage_table,
        default_check_config,
        goal_for,
        run_check,
    )
    from harness.machine import ASYNQ_BACKEND

    if args.backend == ASYNQ_BACKEND and not args.variant.startswith("asynq-"):
        print(f"keysim check: --backend asynq runs Asynq's own code: --variant must be an "
              f"asynq-vX.Y.Z variant, got {args.variant!r}", file=sys.stderr)
        return 2
    fixed = args.profile is not None or args.max_examples is not None
    if fixed and args.budget is not None:
        print("keysim check: --budget sizes the coverage-driven run; --profile and "
              "--max-examples size a fixed run: give one or the other", file=sys.stderr)
        return 2
    from harness.fault_rules import unsupported

    refused = unsupported(args.faults, args.backend)
    if refused:
        print(f"keysim check: {refused}", file=sys.stderr)
        return 2
    if args.processes is not None or "+RACE-" in args.variant:
        if args.faults:
            print("keysim check: --faults runs on the sequential machine, not with --processes",
                  file=sys.stderr)
            return 2
        return _run_process_check(args)
    config = default_check_config(args.variant, args.backend, args.faults)
    if fixed:
        result = run_check(config, max_examples=args.max_examples, steps=args.steps,
                           seed=args.seed, profile=args.profile or "dev", database=True,
                           goal=goal_for(config, args.min_hits))
    else:
        result = check_until_covered(config, seed=args.seed, budget=args.budget,
                                     min_hits=args.min_hits, steps=args.steps)
    print(result.summary())
    if args.coverage:
        print()
        print(coverage_table(result.coverage, result.goal))
    return result.exit_code


def _run_process_check(args: argparse.Namespace) -> int:
    """``keysim check --processes N``: the process machine (harness.processes)."""
    from harness.machine import ASYNQ_BACKEND
    from harness.processes import DEFAULT_PROCESSES, ProcessMachine, process_check

    if args.backend == ASYNQ_BACKEND:
        print("keysim check: --processes drives the scripts one atomic step at a time; "
              "--backend asynq runs Asynq's composites whole (not supported)", file=sys.stderr)
        return 2
    if args.profile is not None:
        print("keysim check: --processes sizes by --budget or --max-examples", file=sys.stderr)
        return 2
    before = ProcessMachine.DUPLICATES.copy()
    result = process_check(args.variant, args.backend,
                           processes=args.processes or DEFAULT_PROCESSES, seed=args.seed,
                           budget=args.budget, min_hits=args.min_hits,
                           max_examples=args.max_examples, steps=args.steps)
    print(result.summary())
    counted = ProcessMachine.DUPLICATES - before
    print(f"runs: {counted['runs']} started, {counted['duplicate']} duplicate (a task dequeued "
          f"while a live worker still held it: at-least-once, counted, not a failure)")
    if args.coverage:
        print()
        print(interleaving_table(result.coverage))
    return result.exit_code


def interleaving_table(coverage: Mapping[tuple[str, str], int]) -> str:
    """Every interleaving-sensitive outcome, how often it ran, and what it means."""
    from model.composites import INTERLEAVINGS

    return "\n".join(f"{f'{step} {outcome}':44} {coverage.get((step, outcome), 0):6}  {why}"
                     for (step, outcome), why in INTERLEAVINGS.items())


def _add_zoo(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``keysim zoo``: hunt every bug-zoo mutant with the stateful machine (harness.zoo)."""
    parser = subparsers.add_parser(
        "zoo", help="hunt every bug-zoo mutant and print how fast the machine finds each",
        description="Run the stateful machine on every mutant reference+BZ-n (the reference with "
                    "one Asynq defect switched on), with --seeds fixed seeds each, and print: the "
                    "check that caught it, the defect recognised, the examples before the first "
                    "failure, the shrunk program's length and the time (medians over the seeds). "
                    "Exit 1 when a mutant is missed, caught by an unexpected check or not shrunk "
                    "to <= 10 steps.")
    parser.add_argument("--backend", default="fakeredis", type=_machine_backend, metavar="B",
                        help=_MACHINE_BACKEND_HELP)
    parser.add_argument("--seeds", type=_positive(1), default=3, metavar="N",
                        help="seeds per mutant (default: 3)")
    parser.add_argument("--bug", action="append", default=None, metavar="BZ-n",
                        help="only this mutant (repeatable; default: all)")
    parser.add_argument("--asynq", action="store_true",
                        help="also hunt asynq-v0.24.0 and asynq-v0.26.0 (seed 0, one defect per "
                             "round, without the oracle) and list the defects found (minutes)")
    parser.add_argument("--save", type=Path, default=None, metavar="FILE.json",
                        help="with --asynq: write each defect's minimal program to FILE.json "
                             "(the format of tests/regressions/asynq_counterexamples.json)")
    parser.set_defaults(handler=_run_zoo)


def _hunt_asynq(backend: str, save: Path | None) -> None:
    from harness.zoo import ASYNQ_VARIANTS, asynq_defects, asynq_report, regression_entry

    entries: list[dict[str, object]] = []
    for name in ASYNQ_VARIANTS:
        found = asynq_defects(name, flood=True, backend=backend)
        print(asynq_report(name, found), flush=True)
        entries += [regression_entry(d) for d in found if d.bug != "?"]
    if save is not None:
        save.write_text(json.dumps(entries, indent=1) + "\n")
        print(f"wrote {len(entries)} counterexamples to {save}")


def _run_zoo(args: argparse.Namespace) -> int:
    from harness.machine import ASYNQ_BACKEND
    from harness.zoo import CASES, format_table, run_zoo

    unknown = [b for b in args.bug or () if b not in CASES]
    if unknown:
        print(f"keysim zoo: unknown --bug {', '.join(unknown)}; expected one of "
              f"{', '.join(CASES)}", file=sys.stderr)
        return 2
    if args.save is not None and not args.asynq:
        print("keysim zoo: --save needs --asynq (it saves the Asynq counterexamples)",
              file=sys.stderr)
        return 2
    on_asynq = args.backend == ASYNQ_BACKEND
    if on_asynq and not args.asynq:
        print("keysim zoo: --backend asynq runs Asynq's own code, which has no mutants: "
              "add --asynq to hunt the Asynq versions", file=sys.stderr)
        return 2
    rows = []
    for bug in [] if on_asynq else args.bug or list(CASES):  # a row at a time, as each is done
        rows.extend(run_zoo([bug], seeds=args.seeds, backend=args.backend))
        print(format_table(rows[-1:]).splitlines()[-1] if len(rows) > 1
              else format_table(rows), flush=True)
    missed = [r.case.bug for r in rows if not all(h.as_expected for h in r.hunts)]
    if missed:
        print(f"unexpected: {', '.join(missed)}")
    if args.asynq:
        _hunt_asynq(args.backend, args.save)
    return 1 if missed else 0


def _add_matrix(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``keysim matrix``: defect x Asynq release (harness.matrix)."""
    from harness.matrix import DEFAULT_VERSIONS

    parser = subparsers.add_parser(
        "matrix", help="which Asynq release has which defect: writes docs/asynq-versions.md",
        description="For every release (and Asynq's default branch, if the Go module proxy "
                    "serves it): build the conformance driver against it, hunt defects on its "
                    "own Go code with the stateful machine (as zoo --asynq) and write the "
                    "matrix defect x release, with each hit's minimal program, to --out and "
                    "its data to the same name with .json. Needs Go and Redis >= 7.0; the "
                    "full run takes minutes per release.")
    parser.add_argument("--versions", default=DEFAULT_VERSIONS, metavar="LIST",
                        help="comma-separated: vX.Y.Z, vA..vB (the latest patch of each minor "
                             f"release between), master (default: {DEFAULT_VERSIONS})")
    parser.add_argument("--seeds", type=_positive(1), default=2, metavar="N",
                        help="seeds hunted per release (default: 2)")
    parser.add_argument("--out", type=Path, default=Path("docs/asynq-versions.md"),
                        metavar="FILE.md", help="default: docs/asynq-versions.md")
    parser.add_argument("--from-results", action="store_true",
                        help="run nothing: write --out again from its saved .json")
    parser.set_defaults(handler=_run_matrix)


def _run_matrix(args: argparse.Namespace) -> int:
    from harness import matrix

    data = args.out.with_suffix(".json")
    if args.from_results:
        if not data.exists():
            print(f"keysim matrix: no saved results at {data}", file=sys.stderr)
            return 2
        args.out.write_text(matrix.render(*matrix.load(data)))
        print(f"wrote {args.out} from {data}")
        return 0
    try:
        names = matrix.expand_versions(args.versions)
    except ValueError as err:
        print(f"keysim matrix: {err}", file=sys.stderr)
        return 2
    runs = matrix.run_with_progress(names, matrix.Budget(seeds=args.seeds))
    meta = matrix.meta_now(f"keysim matrix --versions {args.versions} --seeds {args.seeds}",
                           args.seeds)
    matrix.save(data, runs, meta)
    args.out.write_text(matrix.render(runs, meta))
    print(f"wrote {args.out} and {data}")
    return 0


def _add_mutate(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``keysim mutate``: the check's mutation score (harness.mutate)."""
    parser = subparsers.add_parser(
        "mutate", help="write small bugs into the reference implementation and count how many "
                       "the default check catches (its mutation score)",
        description="Generate mutants of the reference Lua scripts and Python composites (one "
                    "small edit each), run the default `keysim check` on each in a fresh process "
                    "and print the mutation score of the non-equivalent mutants, the time to "
                    "detect (median, p90, max) and every survivor with its edit. Equivalent "
                    "mutants (harness/equivalent_mutants.toml, argued in docs/mutation.md) are "
                    "reported apart. Exit 1 below --min-score.")
    parser.add_argument("--sample", type=_positive(1), default=None, metavar="N",
                        help="run N mutants drawn with --seed (default: every selected mutant)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="seed of the sample and of each check (default: 0)")
    parser.add_argument("--operator", action="append", type=_mutation_operator, default=None,
                        metavar="OP", help="only this operator (repeatable; default: all)")
    parser.add_argument("--script", action="append", type=_mutation_target, default=None,
                        metavar="NAME", help="only this Lua script or composite module "
                                             "(repeatable; default: all)")
    parser.add_argument("-j", "--jobs", type=_positive(1), default=1, metavar="N",
                        help="mutants checked at once, each in its own process (default: 1)")
    parser.add_argument("--timeout", type=_positive(1), default=300, metavar="SECONDS",
                        help="a check still running after this long counts as a detection "
                             "(timeout; default: 300)")
    parser.add_argument("--json", type=_output_path, default=None, metavar="FILE",
                        help="also write every mutant's edit, verdict and timing to FILE")
    parser.add_argument("--min-score", type=_score_floor, default=None, metavar="X",
                        help="exit 1 when the score is below X (0-1, or a percentage: 95%%)")
    parser.add_argument("--list", action="store_true",
                        help="print the selected mutants and their edits; run nothing")
    parser.set_defaults(handler=_run_mutate)


def _mutation_operator(text: str) -> str:
    from harness.mutate import Operator

    if text not in {op.value for op in Operator}:
        raise argparse.ArgumentTypeError(
            f"unknown operator {text!r}; expected one of {', '.join(op.value for op in Operator)}")
    return text


def _mutation_target(text: str) -> str:
    from harness.mutate import mutated_targets

    known = mutated_targets()
    if text not in known:
        raise argparse.ArgumentTypeError(
            f"no mutated script named {text!r}; expected one of {', '.join(known)}")
    return text


def _score_floor(text: str) -> float:
    """An argparse type: a score floor, ``0.95`` or ``95%``."""
    try:
        value = float(text.removesuffix("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 0.95 or 95%, got {text!r}"
                                         ) from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a score is between 0 and 1 (0%-100%), got {text!r}")
    return value


def _run_mutate(args: argparse.Namespace) -> int:
    from harness.mutate import Operator, equivalents, report, run_all, score, select, to_json

    operators = [Operator(op) for op in args.operator] if args.operator else None
    mutants = select(scripts=args.script, operators=operators, size=args.sample, seed=args.seed)
    if not mutants:
        print("keysim mutate: no mutant matches --script/--operator", file=sys.stderr)
        return 2
    if args.list:
        for m in mutants:
            print(f"{m.id}\n    - {m.before.strip()}\n    + {m.after.strip()}")
        return 0
    known = equivalents()
    print(f"{len(mutants)} mutants, {args.jobs} at a time (seed {args.seed})", flush=True)
    results = run_all(mutants, seed=args.seed, jobs=args.jobs, timeout=args.timeout,
                      progress=lambda r: print(f"  {r.verdict.value:8} {r.seconds:6.1f} s  "
                                               f"{r.mutant}  {r.check}", flush=True))
    by_name = {m.id: m for m in mutants}
    print(report(results, by_name, known))
    if args.json is not None:
        args.json.write_text(json.dumps(to_json(results, by_name, known), indent=1) + "\n")
        print(f"wrote {args.json}")
    final = score(results, known)
    if args.min_score is not None and final < args.min_score:
        print(f"mutation score {final:.1%} is below the floor {args.min_score:.1%}")
        return 1
    return 0


def _add_conform(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``keysim conform``: differential test of our asynq variant against real Asynq (Go)."""
    parser = subparsers.add_parser(
        "conform",
        help="compare our asynq-<version> variant with real Asynq, step by step (needs Go)",
        description="Build the Go driver if needed (conformance/build.sh), start a private Redis, "
                    "run the hand-written scenarios and --max-examples generated sequences on "
                    "our variant and on Asynq's own rdb.RDB, and print the operation coverage. "
                    "Exit 1 on a divergence (shown with both keyspaces and the shrunk sequence).",
    )
    parser.add_argument("--asynq-version", default="v0.26.0", metavar="VERSION",
                        help="Asynq module version to build against (default: v0.26.0; "
                             "v0.24.0 compares with our asynq-v0.24.0 variant)")
    parser.add_argument("--max-examples", type=_positive(1), default=200, metavar="N",
                        help="generated sequences (default: 200)")
    parser.add_argument("--seed", type=int, default=None,
                        help="derandomise the generation (same sequences every run)")
    parser.set_defaults(handler=_run_conform)


def _run_conform(args: argparse.Namespace) -> int:
    import os
    from urllib.parse import urlsplit, urlunsplit

    from broker.asynq_go import DriverUnavailable, build_driver
    from broker.servers import ServerUnavailable, start_server
    from harness.conform import Divergence, conform

    try:
        print(f"driver: {build_driver(args.asynq_version)}")
        server = start_server({k: v for k, v in os.environ.items() if k != "REDIS_URL"})
    except (DriverUnavailable, ServerUnavailable, ValueError) as err:
        print(f"keysim conform: {err}", file=sys.stderr)
        return 2
    with server:
        parts = urlsplit(server.url)
        ours, theirs = (urlunsplit(parts._replace(path=f"/{db}")) for db in (1, 2))
        try:
            diff = conform(ours, theirs, args.asynq_version, args.max_examples, seed=args.seed)
        except (Divergence, ExceptionGroup) as err:  # Hypothesis groups distinct failures
            print(f"DIVERGENCE from Asynq {args.asynq_version}:\n{err}")
            return 1
    print(diff.report())
    missing = diff.missing()
    if missing:
        print(f"not covered: {', '.join(missing)}")
    return 1 if missing else 0


def _add_soak(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``keysim soak``: Asynq's own servers killed and restarted on one real Redis (soak.run)."""
    parser = subparsers.add_parser(
        "soak",
        help="run K Asynq server processes on real Redis, SIGKILL and restart them, drain, audit",
        description="Asynq v0.26.0's own server (conformance/load, public API; needs Go) as K OS "
                    "processes on one real Redis while a client enqueues; servers are SIGKILLed "
                    "and restarted on a seeded schedule (printed), then the queue drains, every "
                    "task is accounted for from the processes' logs and Asynq's Inspector, and "
                    "keysim audit reads the keyspace; every finding is attributed to a known "
                    "defect (BZ-n) or reported as NEW. Exit 0 pass, 1 fail (a lost task, "
                    "unbalanced books, a NEW finding), 2 cannot run.",
    )
    parser.add_argument("--duration", type=_duration, default=120.0, metavar="T",
                        help="how long the client enqueues, e.g. 2m (default); the drain follows")
    parser.add_argument("--processes", type=_positive(1), default=3, metavar="K",
                        help="Asynq server processes (default 3)")
    parser.add_argument("--rate", type=_positive_rate, default=50.0, metavar="R",
                        help="tasks enqueued per second (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule (default 0)")
    parser.add_argument("--redis", default=None, metavar="URL",
                        help="an existing server's empty database (default: a private server)")
    parser.add_argument("--json", type=_output_path, default=None, metavar="FILE",
                        help="also write the summary as JSON")
    parser.set_defaults(handler=_run_soak)


def _positive_rate(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _run_soak(args: argparse.Namespace) -> int:
    from soak.run import SoakConfig, main_soak

    config = SoakConfig(duration_s=args.duration, processes=args.processes, rate=args.rate,
                        seed=args.seed, redis_url=args.redis)
    return main_soak(config, args.json)


#: The subcommand registrars, in the order `keysim --help` lists them.
_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_check,
    _add_zoo,
    _add_matrix,
    _add_mutate,
    _add_diagram,
    _add_explore,
    _add_replay,
    _add_audit,
    _add_simulate,
    _add_plot,
    _add_compare,
    _add_conform,
    _add_soak,
]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="keysim",
        description="Model, implementation and property tests of Asynq's Redis key lifecycle.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _SUBCOMMANDS:
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the subcommand and return its exit code.

    Usage errors exit through argparse (``SystemExit(2)`` with a message on stderr).
    """
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


def run() -> None:
    """Console-script wrapper: ``raise SystemExit(main())``."""
    raise SystemExit(main())


if __name__ == "__main__":
    run()
