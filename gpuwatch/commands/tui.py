"""`gpuwatch` with no sub-command: the Textual TUI.

With no NVIDIA driver or GPU it still starts, on the simulator, because the planning panes and a tour
of the live view are useful anywhere; a banner that cannot be missed says the numbers are simulated
and why.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from gpuwatch.options import get

if TYPE_CHECKING:
    from gpuwatch.tui.app import GpuwatchApp

#: what a machine without a GPU is shown
FALLBACK_SIM = "rtx4090"


def fallback_banner(reason: str, devices: str = FALLBACK_SIM) -> str:
    return (
        f"NO GPU: {reason.rstrip('.')}. Showing a SIMULATED {devices}: these are not your hardware's "
        f"numbers. Run with --sim DEVICES to choose the simulated cards."
    )


def build_app(args: argparse.Namespace) -> GpuwatchApp:
    """The app over the session the options describe, or over the simulator when there is no driver.

    The Plan pane starts from the declared workload at the live prices, so that it and the Cost pane
    price the same what-if the same way.
    """
    from gpuwatch.commands.common import live_config, open_live_session
    from gpuwatch.telemetry.sources import NvmlUnavailable
    from gpuwatch.tui.app import HISTORY_POINTS, create_app

    banner = None
    config = live_config(args)
    # in-process by default, as nvitop: a second Python process for NVML would double the TUI's memory;
    # a hung read only marks its GPU stale (it keeps a read thread of its own while the others share one,
    # and the ctypes call releases the GIL), but a driver segfault ends the TUI: --isolate-nvml makes it
    # a status line
    given_isolate = getattr(args, "isolate_nvml", None)
    isolate = bool(get("isolate_nvml").default if given_isolate is None else given_isolate)
    try:
        session = open_live_session(args, config=config, isolate=isolate, history_capacity=HISTORY_POINTS)
    except NvmlUnavailable as exc:
        banner = fallback_banner(str(exc))
        session = open_live_session(args, config=config, sim=FALLBACK_SIM, history_capacity=HISTORY_POINTS)
    return create_app(session, fallback_reason=banner)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "prometheus", None):  # the rack view: Prometheus, no local GPUs
        from gpuwatch.commands import rack

        return rack.run(args)
    from gpuwatch.telemetry.heap import share_one_malloc_arena

    share_one_malloc_arena()  # before the poller's and Textual's threads start
    build_app(args).run()
    return 0
