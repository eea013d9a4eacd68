"""Re-export the README screenshots: `python docs/screenshots/make_screenshots.py` from the repository root.

Runs the TUI headless over the seeded, manual-clock simulated rack the snapshot tests use, so the
pictures match a reviewed state of the screens.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))

from tui_rack import ManualRack  # noqa: E402

from gpuwatch.tui.app import GpuwatchApp  # noqa: E402


async def export() -> None:
    rack = ManualRack(scenario=["decode", "power-capped", "prefill"])
    app = GpuwatchApp(rack.session)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            rack.tick(1.0, polls=30)
            await pilot.pause()
            app.clear_notifications()
            await pilot.pause()
            app.save_screenshot("live.svg", str(HERE))
            for key, name in (("2", "roofline.svg"), ("4", "plan.svg")):
                await pilot.press(key)
                await pilot.pause()
                app.clear_notifications()
                await pilot.pause()
                app.save_screenshot(name, str(HERE))
    finally:
        rack.close()


if __name__ == "__main__":
    asyncio.run(export())
