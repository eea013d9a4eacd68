"""`gpuwatch` with no sub-command: the Textual TUI."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    print("gpuwatch: the TUI is not yet available in this build; try `gpuwatch plan --help`")
    return 0
