"""The power-cap advisor pane: the live advice per GPU (modelled), reachable by key and palette, and
kept within an 80x24 terminal."""

from __future__ import annotations

import asyncio
import re
import time

from tui_rack import ManualRack, started

from gpuwatch.tui.app import GpuwatchApp, create_app
from gpuwatch.tui.pane_tabs import PaneTabs
from gpuwatch.tui.power_pane import PowerPane


async def advice_for(app: GpuwatchApp, rack: ManualRack, timeout_s: float = 20.0) -> PowerPane:
    """Tick until the pane's worker has shown advice for every GPU."""
    pane = app.query_one(PowerPane)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rack.tick(1.0)
        await asyncio.sleep(0.2)
        if pane.rows and len(pane.rows) == len(rack.sim.devices):
            return pane
    raise AssertionError(f"no advice shown: {pane.text!r}")


def watts(text: str, label: str) -> float:
    found = re.search(rf"{label} ([\d,]+) W", text)
    assert found, (label, text)
    return float(found.group(1).replace(",", ""))


async def test_decode_on_a_4090_is_advised_a_cap_below_the_default_with_its_loss() -> None:
    rack = ManualRack("rtx4090", scenario="decode")
    try:
        rack.tick(2.0, polls=30)  # past the ramp: the card draws its decode power
        app = create_app(rack.session)
        async with started(app, size=(120, 40)) as pilot:
            await pilot.press("f6")
            assert app.active_pane == "power"
            pane = await advice_for(app, rack)
            text = pane.text
            assert "modelled" in text
            advised, default = watts(text, "advised"), watts(text, "default")
            assert default == 450 and advised < default
            loss = float(re.search(r"tokens/s -([\d.]+)%", text).group(1))  # type: ignore[union-attr]
            assert 0 < loss < 20
            saving = re.search(r"power -([\d,]+) W", text)
            assert saving and float(saving.group(1).replace(",", "")) > 0
            assert "bound memory" in text and "why:" in text
            # the figures are the advice the worker computed, not reformatted guesses
            a = pane.rows[0].live.advice
            assert a is not None and round(a.advised_limit_w) == advised
            # at most every few seconds: polls right after it do not recompute (the poll time stays)
            for _ in range(3):
                rack.tick(1.0)
                await pilot.pause(0.05)
            assert pane.text == text
    finally:
        rack.close()


async def test_training_keeps_the_default_limit_and_an_idle_card_says_why_there_is_none() -> None:
    rack = ManualRack("2xrtx4090", scenario=["training", "idle"], workload=None)
    try:
        rack.tick(2.0, polls=30)
        app = create_app(rack.session)
        async with started(app, size=(120, 40)) as pilot:
            await pilot.press("f6")
            pane = await advice_for(app, rack)
            first, second = pane.text.split("\nGPU 1")
            assert watts(first, "advised") == watts(first, "default") == 450
            assert "tokens/s -0.0%" in first
            assert "no advice:" in second and "idle" in second
    finally:
        rack.close()


async def test_the_power_pane_is_in_the_palette_and_fits_80x24_with_help_and_quit() -> None:
    rack = ManualRack("rtx4090", scenario="decode")
    try:
        rack.tick(2.0, polls=10)
        app = create_app(rack.session)
        async with started(app, size=(80, 24)) as pilot:
            await pilot.press("ctrl+p")
            await pilot.press(*"Show Power")
            await pilot.pause(0.3)
            await pilot.press("enter")
            await pilot.pause()
            assert app.active_pane == "power"
            pane = await advice_for(app, rack)
            assert pane.region.height > 0 and pane.region.width == 80
            # the tab row holds all six panes within 80 columns
            tabs = app.query_one(PaneTabs)
            assert list(tabs.labels.values())[-1] == "6 Power"
            last_column = tabs.content_region.x + tabs.spans()["power"][1]
            assert last_column <= 80 and tabs.region.height == 1
            screen = app.export_screenshot()
            assert "Help" in screen and "Quit" in screen and "F1-F6" in screen  # the footer still says how
            assert "advised" in screen  # the advice itself is on screen, not scrolled away
            await pilot.press("alt+1")
            assert app.active_pane == "live"
    finally:
        rack.close()
