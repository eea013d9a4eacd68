"""The entry point: version, help, one-line errors."""

from __future__ import annotations

import subprocess
import sys

from gpuwatch import __version__
from gpuwatch.cli import main


def test_version_prints_package_version(capsys) -> None:
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"gpuwatch {__version__}"


def test_help_lists_subcommands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gpuwatch", "--help"], capture_output=True, text=True, check=True
    )
    for name in ("plan", "exporter", "record", "doctor"):
        assert name in out.stdout
