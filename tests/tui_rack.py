"""A simulated rack on a MANUAL clock for the TUI tests: nothing moves until the test advances it.

The real simulator, poller, history, assessor and session run; only the poll loop is driven by the
test (``tick``), so screens are the same on every run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from textual.pilot import Pilot

from gpuwatch.live.config import LiveConfig, parse_workload
from gpuwatch.live.session import LiveSession
from gpuwatch.telemetry.poller import NvmlPoller, SimSpec
from gpuwatch.telemetry.simulated import SimulatedNvml, install, uninstall
from gpuwatch.telemetry.sources import describe_sim
from gpuwatch.tui.app import GpuwatchApp

RACK = "2xrtx4090,h100-sxm"
WORKLOAD = "llama-3-8b:fp16:batch=8:context=4096"


class ManualRack:
    def __init__(
        self,
        devices: str = RACK,
        *,
        scenario: str | list[str] = "decode",
        workload: str | None = WORKLOAD,
        seed: int = 7,
        gpu_prices: dict[str, float] | None = None,
        faults: str | None = None,
        xid_events: bool = False,
    ) -> None:
        self.sim: SimulatedNvml = install(
            devices, scenario=scenario, seed=seed, manual_clock=True, faults=faults
        )
        self.sim.process_pid = 4242  # the simulator reports its own pid; a fixed one keeps screenshots equal
        first = scenario if isinstance(scenario, str) else scenario[0]
        self.poller = NvmlPoller(
            interval_s=1.0,
            clock=self.sim.now_s,
            sim=SimSpec(devices=devices, scenario=first, seed=seed),
            description=describe_sim(devices, scenario if isinstance(scenario, str) else ",".join(scenario)),
            on_stop=uninstall,
            xid_events=xid_events,
        )
        config = LiveConfig(
            workload=parse_workload(workload) if workload else None, gpu_prices=dict(gpu_prices or {})
        )
        self.session = LiveSession(self.poller, config)
        # open NVML without the poll thread; session.start() then only attaches its listener
        self.poller.start(background=False)

    def tick(self, seconds: float = 1.0, polls: int = 1) -> None:
        """Advance simulated time and poll, ``polls`` times."""
        for _ in range(polls):
            self.sim.advance(seconds)
            self.poller.poll_once()

    def close(self) -> None:
        self.session.stop()


@asynccontextmanager
async def started(app: GpuwatchApp, *, size: tuple[int, int], **kw: Any) -> AsyncIterator[Pilot[None]]:
    """``app.run_test`` once the panes that mount after the first frame are in: a test that ended while
    they mounted would tear the app down under a half-mounted form."""
    async with app.run_test(size=size, **kw) as pilot:
        await app.panes_ready.wait()
        yield pilot


async def show_pane(pilot: Pilot[None], *keys: str) -> None:
    """Press ``keys`` and wait until the pane on screen is mounted (a planning pane mounts when first
    shown, and starts its worker then) and its workers are done."""
    if keys:
        await pilot.press(*keys)
    app = pilot.app
    pane = app.active_pane  # type: ignore[attr-defined]
    for _ in range(200):
        if pane == "live" or app.query(f"#{pane}-pane"):
            break
        await pilot.pause(0.05)
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()
