"""`gpuwatch` with no sub-command: the Textual TUI.

With no NVIDIA driver or GPU it still starts, on the simulator, because the planning panes and a tour
of the live view are useful anywhere; a banner that cannot be missed says the numbers are simulated
and why.

The session is opened, and NVML lists the GPUs, before Textual is imported (a third of a second): the
CLI draws their names at once (``tui.first_frame``), and the live view draws over them when it is up.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from gpuwatch.options import get

if TYPE_CHECKING:
    from gpuwatch.live.config import LiveConfig
    from gpuwatch.live.session import LiveSession
    from gpuwatch.tui.app import GpuwatchApp

#: what a machine without a GPU is shown
FALLBACK_SIM = "rtx4090"


def fallback_banner(reason: str, devices: str = FALLBACK_SIM) -> str:
    return (
        f"NO GPU: {reason.rstrip('.')}. Showing a SIMULATED {devices}: these are not your hardware's "
        f"numbers. Run with --sim DEVICES to choose the simulated cards."
    )


class _NoTls:
    """A meta-path finder that refuses ``ssl``: the TUI's session fetches no https URL, and asyncio (under
    Textual) imports ssl only in case, which maps OpenSSL's libcrypto and libssl: ~4 MiB resident, a tenth
    of the TUI's memory, for nothing. asyncio and http.client take a missing ssl as no TLS."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        if name in ("ssl", "_ssl"):
            raise ModuleNotFoundError(
                "gpuwatch: TLS was left unloaded because no URL this TUI fetches is https", name=name
            )


def leave_tls_unloaded(config: LiveConfig) -> None:
    """Keep ssl out of this process when the config's engines are all plain http. Only for a process that
    runs nothing else (the TUI's): anything that wants TLS later is refused."""
    from gpuwatch.telemetry.engines import fetched_over_tls

    if "ssl" not in sys.modules and not any(fetched_over_tls(url) for url in config.engine_urls):
        sys.meta_path.insert(0, _NoTls())


def open_tui_session(args: argparse.Namespace, config: LiveConfig) -> tuple[LiveSession, str | None]:
    """The session the options describe, or the simulator's when there is no driver, with the banner
    that says so (None when the data is what was asked for)."""
    from gpuwatch.commands.common import open_live_session
    from gpuwatch.telemetry.sources import NvmlUnavailable
    from gpuwatch.tui.history_span import HISTORY_POINTS

    # in-process by default, as nvitop: a second Python process for NVML would double the TUI's memory;
    # a hung read only marks its GPU stale (it keeps a read thread of its own while the others share one,
    # and the ctypes call releases the GIL), but a driver segfault ends the TUI: --isolate-nvml makes it
    # a status line
    given_isolate = getattr(args, "isolate_nvml", None)
    isolate = bool(get("isolate_nvml").default if given_isolate is None else given_isolate)
    try:
        session = open_live_session(args, config=config, isolate=isolate, history_capacity=HISTORY_POINTS)
    except NvmlUnavailable as exc:
        session = open_live_session(args, config=config, sim=FALLBACK_SIM, history_capacity=HISTORY_POINTS)
        return session, fallback_banner(str(exc))
    return session, None


def build_app(args: argparse.Namespace, config: LiveConfig | None = None) -> GpuwatchApp:
    """The app over the session the options describe, or over the simulator when there is no driver.

    The Plan pane starts from the declared workload at the live prices, so that it and the Cost pane
    price the same what-if the same way.
    """
    from gpuwatch.commands.common import live_config
    from gpuwatch.tui.app import create_app

    session, banner = open_tui_session(args, config or live_config(args))
    return create_app(session, fallback_reason=banner)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "prometheus", None):  # the rack view: Prometheus, no local GPUs
        from gpuwatch.commands import rack

        return rack.run(args)
    from gpuwatch.commands.common import live_config
    from gpuwatch.telemetry.heap import share_one_malloc_arena

    share_one_malloc_arena()  # before the poller's and Textual's threads start
    from gpuwatch.tui import first_frame

    config = live_config(args)
    leave_tls_unloaded(config)  # before Textual imports asyncio
    session, banner = open_tui_session(args, config)
    session.attach()
    # the GPUs' names on screen before Textual (a third of a second to import) is loaded
    devices = first_frame.attached_devices(session)
    frame = first_frame.draw(f"gpuwatch — {session.description}", devices, banner)
    app = None
    try:
        from gpuwatch.tui.app import create_app

        app = create_app(session, fallback_reason=banner)
        app.run()
    finally:
        if frame is not None and not (app is not None and app.took_terminal):
            frame.leave()  # the TUI ends before Textual took the terminal: an import failed, a Ctrl+C
    return 0
