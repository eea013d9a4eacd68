"""`gpuwatch` entry point: parses arguments, dispatches to gpuwatch.commands.*, prints errors as one line."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gpuwatch import __version__
from gpuwatch.commands.common import add_source_options
from gpuwatch.commands.rack import add_rack_options
from gpuwatch.errors import UserError
from gpuwatch.model.errors import ModelInputError, UnknownIdError
from gpuwatch.options import OneLineParser

#: sub-command name -> module under gpuwatch.commands (each has register(subparsers) and run(args))
SUBCOMMANDS = ("plan", "exporter", "record", "doctor", "advise", "capture")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="gpuwatch",
        description="What your NVIDIA GPUs are doing, and what it costs. With no sub-command, opens the TUI.",
    )
    parser.add_argument("--version", action="version", version=f"gpuwatch {__version__}")
    add_source_options(parser, with_prices=True)
    add_rack_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"gpuwatch.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            from gpuwatch.commands import tui

            run = tui.run
        else:
            run = args.run
        return int(run(args) or 0)
    except (UserError, ModelInputError, UnknownIdError) as exc:
        print(f"gpuwatch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
