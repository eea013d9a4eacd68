"""The TUI says how the NVML child and the serving engines stand: a failed or restarting NVML source
shows its one-line reason (not "waiting for the first poll…"), and an unreachable engine shows why."""

from __future__ import annotations

import asyncio
import socket
import time

from tui_rack import ManualRack, started

from gpuwatch.live.config import LiveConfig
from gpuwatch.live.session import LiveSession
from gpuwatch.telemetry.engines import EngineWatcher
from gpuwatch.telemetry.nvml_supervisor import NvmlSupervisor
from gpuwatch.telemetry.simspec import SimSpec
from gpuwatch.tui.app import GpuwatchApp, create_app
from gpuwatch.tui.status_bar import StatusBar


def supervised(faults: str) -> LiveSession:
    source = NvmlSupervisor(interval_s=0.2, sim=SimSpec("rtx4090", faults=faults), backoff_initial_s=0.5)
    return LiveSession(source, LiveConfig())


async def wait_until(app: GpuwatchApp, predicate, timeout_s: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.2)
    return False


def waiting_text(app: GpuwatchApp) -> str:
    return str(app.query_one("#cards-waiting").render())


async def test_an_nvml_init_failure_is_shown_with_its_reason_not_as_waiting() -> None:
    app = create_app(supervised("init:driver_not_loaded"))
    async with started(app, size=(120, 40)):
        bar = app.query_one(StatusBar)
        assert await wait_until(app, lambda: "NVML FAILED" in bar.nvml_text), bar.nvml_text
        assert "modprobe nvidia" in bar.nvml_text and "\n" not in bar.nvml_text
        # the live view says the same instead of waiting forever
        assert "NVML FAILED" in waiting_text(app) and "waiting for the first poll" not in waiting_text(app)


async def test_a_crashed_nvml_child_shows_restarting_then_clears_when_running_again() -> None:
    app = create_app(supervised("crash@1"))
    async with started(app, size=(120, 40)):
        bar = app.query_one(StatusBar)
        saw_restart = await wait_until(app, lambda: "NVML RESTARTING" in bar.nvml_text)
        assert saw_restart, bar.nvml_text
        assert "SIGSEGV" in bar.nvml_text
        # the respawned child runs (the crash fault is for the first child's clock only) or keeps
        # crashing; either way the line follows the source's phase, and clears the moment it runs
        state = app.feed.source.state()  # type: ignore[attr-defined]
        if await wait_until(app, lambda: app.feed.source.state().phase == "running", 30.0):  # type: ignore[attr-defined]
            assert await wait_until(app, lambda: bar.nvml_text == "", 5.0), bar.nvml_text
        else:
            assert state.phase in ("restarting", "failed")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_engine_is_shown_down_with_its_reason() -> None:
    rack = ManualRack("rtx4090")
    url = f"http://127.0.0.1:{closed_port()}/metrics"
    rack.session.engines = EngineWatcher([url], interval_s=0.2)
    try:
        app = create_app(rack.session)
        async with started(app, size=(80, 24)) as pilot:
            rack.tick()
            bar = app.query_one(StatusBar)
            refused = await wait_until(app, lambda: "connection refused" in bar.engine_line, 20.0)
            assert refused, bar.engine_line
            line = bar.engine_line
            assert url in line and "DOWN: connection refused" in line
            await pilot.pause()
            assert bar.region.height >= 1  # on screen at 80x24
            assert app.query_one("#status-bar").display
    finally:
        rack.close()


async def test_no_status_rows_while_nvml_runs_and_no_engine_is_watched() -> None:
    rack = ManualRack("rtx4090")
    try:
        app = create_app(rack.session)
        async with started(app, size=(80, 24)) as pilot:
            rack.tick()
            await pilot.pause(1.2)
            bar = app.query_one(StatusBar)
            assert not bar.display and bar.nvml_text == ""
    finally:
        rack.close()
