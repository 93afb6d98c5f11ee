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
import sys
from collections.abc import Callable
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
    parser.set_defaults(handler=_run_explore)


def _run_explore(args: argparse.Namespace) -> int:
    from model.explore import explore, explore_policy

    report = explore(args.tasks, args.depth, explore_policy(args.max_archive_size))
    print(report.format())
    return 0 if report.ok else 1


#: The subcommand registrars, in the order `keysim --help` lists them.
_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_diagram,
    _add_explore,
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
