"""SVG snapshots of every screen on a seeded simulation with a manual clock, so a change to a screen is a
reviewed change. Regenerate with ``pytest tests/test_tui_snapshots.py --snapshot-update`` and look at the
SVGs in tests/__snapshots__/ before committing them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import pytest
from textual.pilot import Pilot
from tui_rack import ManualRack, show_pane

from gpuwatch.tui.app import create_app

SnapCompare = Callable[..., bool]


@pytest.fixture
def rack() -> Iterator[ManualRack]:
    r = ManualRack(scenario=["decode", "power-capped", "prefill"])
    yield r
    r.close()


def settle(rack: ManualRack, *keys: str, polls: int = 20) -> Callable[[Pilot[None]], Awaitable[None]]:
    """Poll the rack on its manual clock, press ``keys``, and drop the toasts (they expire on wall time)."""

    async def run_before(pilot: Pilot[None]) -> None:
        await pilot.app.panes_ready.wait()  # type: ignore[attr-defined]
        rack.tick(1.0, polls=polls)
        await pilot.pause()
        await show_pane(pilot, *keys)  # the comparison is computed in a worker thread
        pilot.app.clear_notifications()
        await pilot.pause()

    return run_before


@pytest.mark.parametrize(
    ("name", "keys"),
    [
        ("live", ()),
        ("roofline", ("2",)),
        ("cost", ("3",)),
        ("plan", ("4",)),
        ("compare", ("5",)),
        ("help", ("?",)),
    ],
)
def test_screen(snap_compare: SnapCompare, rack: ManualRack, name: str, keys: tuple[str, ...]) -> None:
    assert snap_compare(create_app(rack.session), terminal_size=(120, 40), run_before=settle(rack, *keys))


def test_live_on_eight_gpus_at_80x24(snap_compare: SnapCompare) -> None:
    rack = ManualRack("8xrtx4090")
    try:
        assert snap_compare(create_app(rack.session), terminal_size=(80, 24), run_before=settle(rack))
    finally:
        rack.close()


def test_no_gpu_banner(snap_compare: SnapCompare, rack: ManualRack) -> None:
    from gpuwatch.commands.tui import fallback_banner

    banner = fallback_banner("NVML unavailable: NVML Shared Library Not Found (install the NVIDIA driver)")
    app = create_app(rack.session, fallback_reason=banner)
    assert snap_compare(app, terminal_size=(120, 40), run_before=settle(rack))


def test_live_with_a_lost_gpu(snap_compare: SnapCompare) -> None:
    rack = ManualRack("2xrtx4090,h100-sxm", faults="lost:1@5")
    try:
        assert snap_compare(create_app(rack.session), terminal_size=(120, 40), run_before=settle(rack))
    finally:
        rack.close()


def test_live_at_200_columns_beside_the_planner(snap_compare: SnapCompare, rack: ManualRack) -> None:
    assert snap_compare(create_app(rack.session), terminal_size=(200, 50), run_before=settle(rack))


def test_in_a_form_field_the_footer_says_how_to_leave(snap_compare: SnapCompare, rack: ManualRack) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await settle(rack, "4")(pilot)
        pilot.app.query_one("#plan-batch").focus()
        await pilot.pause()

    assert snap_compare(create_app(rack.session), terminal_size=(120, 40), run_before=run_before)
