"""`gpuwatch` entry point: parses arguments, dispatches to gpuwatch.commands.*, prints errors as one line.

The TUI (no sub-command) is what most runs are, and its first frame waits on everything imported before
it: so a command line that names no sub-command (nor --help) is parsed by the top-level options alone,
and the sub-command modules (the planner's renderers, the exporter's server, numpy) are imported only
when one is named. Anything the short parser refuses is parsed again by the full one, so every error
message is the full parser's.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
from collections.abc import Sequence

from gpuwatch import __version__
from gpuwatch.commands import SUMMARIES
from gpuwatch.commands.common import add_source_options
from gpuwatch.commands.rack import add_rack_options
from gpuwatch.errors import UserError
from gpuwatch.model.errors import ModelInputError, UnknownIdError
from gpuwatch.options import OneLineParser, UsageError, add_options

#: sub-command name -> module under gpuwatch.commands (each has register(subparsers) and run(args))
SUBCOMMANDS = tuple(SUMMARIES)
#: the options only the TUI has
TUI_OPTIONS = ("isolate_nvml",)
#: words that need the full parser: a sub-command, or the help that lists them
_FULL_PARSER_WORDS = frozenset((*SUBCOMMANDS, "-h", "--help"))


def _top_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="gpuwatch",
        description="What your NVIDIA GPUs are doing, and what it costs. With no sub-command, opens the TUI.",
    )
    parser.add_argument("--version", action="version", version=f"gpuwatch {__version__}")
    add_source_options(parser, with_prices=True)
    add_options(parser, TUI_OPTIONS, group="TUI")
    add_rack_options(parser)
    return parser


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line: the top-level options and every sub-command; with ``only``, that
    sub-command's options alone (the others are listed by name and help, without loading them)."""
    parser = _top_parser()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        if only is None or name == only:
            importlib.import_module(f"gpuwatch.commands.{name}").register(sub)
        else:
            sub.add_parser(name, help=SUMMARIES[name])
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed command line; the sub-commands load only when ``argv`` may name one."""
    words = list(sys.argv[1:] if argv is None else argv)
    named = next((w for w in words if w in SUBCOMMANDS), None)
    if named is not None:  # load that sub-command alone, unless the word was an option's value
        try:
            args = build_parser(only=named).parse_args(words)
        except UsageError:
            return build_parser().parse_args(words)
        return args if args.command == named else build_parser().parse_args(words)
    if _FULL_PARSER_WORDS.intersection(words):
        return build_parser().parse_args(words)
    parser = _top_parser()
    parser.set_defaults(command=None)
    try:
        return parser.parse_args(words)
    except UsageError:
        return build_parser().parse_args(words)  # its message (e.g. "invalid choice" for a typo'd command)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        if args.command is None:
            from gpuwatch.commands import tui

            run = tui.run
        else:
            run = args.run
        if args.command is not None or getattr(args, "prometheus", None):
            # off while the program started (gpuwatch.__main__); the live TUI's first frame turns it on
            gc.enable()
        return int(run(args) or 0)
    except (UserError, ModelInputError, UnknownIdError) as exc:
        print(f"gpuwatch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
