"""The ``gpuwatch`` console script and ``python -m gpuwatch``: signals before the CLI has loaded.

This module imports nothing heavy before it has set up signal handling, so that Ctrl-C while the
CLI, Textual or numpy are still importing ends with exit status 130 and no KeyboardInterrupt
traceback, and SIGTERM with 143. (An interrupt that lands inside the import machinery's own
callbacks is swallowed by Python as "Exception ignored"; it is noticed here and still ends the
run.) The interpreter's own start-up, before this module runs, is out of reach. Commands that must
finish a write first (``record``, ``exporter``) install their own handlers.

It also starts the program with the cyclic garbage collector off: importing Textual, the CLI and the
simulator allocates a few hundred thousand objects that live as long as the process, and the
collector's passes over them were ~0.1 s of the TUI's start-up to its first frame. The CLI switches it
back on once the arguments are parsed; the TUI after its first frame (see ``GpuwatchApp``).
"""

from __future__ import annotations

import gc
import signal
import sys
from types import FrameType
from typing import Any

_interrupted = False


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _quiet_unraisable(unraisable: Any) -> None:
    """Python reports an exception it cannot raise (one in a weakref callback during an import)
    as "Exception ignored … KeyboardInterrupt"; that interrupt is ours, and already noted."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt | SystemExit):
        return
    sys.__unraisablehook__(unraisable)


def entry() -> int:
    """Run the CLI; 130 for Ctrl-C and 143 for SIGTERM at any moment, without a traceback."""
    gc.disable()
    try:
        signal.signal(signal.SIGINT, _on_sigint)
        signal.signal(signal.SIGTERM, _terminated)
        sys.unraisablehook = _quiet_unraisable
        from gpuwatch.cli import main

        if _interrupted:
            return 130
        return main()
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(entry())
