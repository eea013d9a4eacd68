"""Re-export the README screenshots: `python docs/screenshots/make_screenshots.py` from the repository root.

Runs the TUI headless over the seeded, manual-clock simulated rack the snapshot tests use, so the
pictures match a reviewed state of the screens. The rack is what README's caption runs:
``gpuwatch --sim 2xrtx4090,h100-sxm --scenario decode,power-capped,prefill --seed 7
--workload llama-3-8b:fp16:batch=8:context=4096``, 30 s after start. ``--all DIR`` also writes every
other screen (cost, compare, help, eight GPUs at 80x24) to DIR, for looking over before a release.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))

from tui_rack import ManualRack  # noqa: E402

from gpuwatch.tui.app import GpuwatchApp, create_app  # noqa: E402

#: the screens the README shows: key pressed from the live view -> file name
README_SCREENS = {"": "live.svg", "2": "roofline.svg", "4": "plan.svg"}
OTHER_SCREENS = {"3": "cost.svg", "5": "compare.svg", "question_mark": "help.svg"}


def _preserve_spaces(path: Path) -> None:
    """Textual writes each run of text as its own <text> with non-breaking spaces; librsvg (and so
    rsvg-convert and many image viewers) drops a run's leading ones unless told to preserve them."""
    svg = path.read_text(encoding="utf-8")
    if 'xml:space="preserve"' not in svg:
        svg = svg.replace("<svg ", '<svg xml:space="preserve" ', 1)
    path.write_text(svg, encoding="utf-8")


async def _export(
    app: GpuwatchApp, rack: ManualRack, screens: dict[str, str], size: tuple[int, int], out: Path
) -> None:
    try:
        async with app.run_test(size=size) as pilot:
            await app.panes_ready.wait()
            rack.tick(1.0, polls=30)
            await pilot.pause()
            for key, name in screens.items():
                if key:
                    if app.screen is not app.screen_stack[0]:
                        app.pop_screen()
                    await pilot.press(key)
                await pilot.pause()
                app.clear_notifications()
                await pilot.pause()
                app.save_screenshot(name, str(out))
                _preserve_spaces(out / name)
    finally:
        rack.close()


async def export(everything: Path | None) -> None:
    rack = ManualRack(scenario=["decode", "power-capped", "prefill"])
    await _export(create_app(rack.session), rack, README_SCREENS, (120, 40), HERE)
    if everything is None:
        return
    everything.mkdir(parents=True, exist_ok=True)
    rack = ManualRack(scenario=["decode", "power-capped", "prefill"])
    await _export(create_app(rack.session), rack, OTHER_SCREENS, (120, 40), everything)
    rack = ManualRack("8xrtx4090")
    await _export(create_app(rack.session), rack, {"": "live-8gpu-80x24.svg"}, (80, 24), everything)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", type=Path, metavar="DIR", help="also write the other screens to DIR")
    asyncio.run(export(parser.parse_args().all))
