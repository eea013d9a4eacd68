"""The Cost, Plan and Compare panes never show a silent wrong figure (issue 13): a missing price says which
and how to give it, a workload that cannot load has no speed or $/1M, a bad character is refused visibly,
and Compare sorts with `s` as soon as it is on screen."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from textual.widgets import DataTable, Input, Static
from tui_rack import ManualRack, show_pane, started

from gpuwatch.cli import main
from gpuwatch.tui.app import create_app


def text_of(widget: Static) -> str:
    return str(widget.render())


@pytest.fixture
def racks() -> Iterator[list[ManualRack]]:
    made: list[ManualRack] = []
    yield made
    for rack in made:
        rack.close()


async def test_the_cost_pane_names_the_missing_price(racks: list[ManualRack]) -> None:
    rack = ManualRack("h100-sxm")
    racks.append(rack)
    app = create_app(rack.session)
    async with started(app, size=(120, 40)) as pilot:
        rack.tick(1.0, polls=2)
        await pilot.press("3")
        await pilot.pause()
        summary = text_of(app.query_one("#cost-summary", Static))
        assert "No price for H100 80GB HBM3: give [gpu_prices] in the config or --gpu-price." in summary
        assert "workload" not in summary.split("No price")[1]  # not blamed on a missing workload


async def test_a_workload_that_does_not_fit_has_no_speed_or_price_per_token(racks: list[ManualRack]) -> None:
    rack = ManualRack("rtx4090", workload="llama-3-70b:fp16:batch=1:context=4096")  # 140 GB on 24 GB
    racks.append(rack)
    app = create_app(rack.session)
    async with started(app, size=(120, 40)) as pilot:
        rack.tick(1.0, polls=2)
        await pilot.press("3")
        await pilot.pause()
        summary = text_of(app.query_one("#cost-summary", Static))
        assert "DOES NOT FIT" in summary
        assert "model ceiling" not in summary and "projected $" not in summary
        table = app.query_one("#alternatives", DataTable)
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert rows and all(row[1:] == ["—", "—", "does not fit"] for row in rows)


async def test_plan_and_compare_flag_a_workload_that_does_not_fit(racks: list[ManualRack]) -> None:
    rack = ManualRack("rtx4090")
    racks.append(rack)
    app = create_app(rack.session)
    async with started(app, size=(120, 40)) as pilot:
        await pilot.press("4")
        await pilot.pause()
        app.query_one("#plan-model").value = "llama-3-70b"  # type: ignore[attr-defined]
        await pilot.pause()
        await app.workers.wait_for_complete()  # the planner answers in a worker thread
        await pilot.pause()
        shown = text_of(app.query_one("#plan-result", Static))
        assert "DOES NOT FIT" in shown and "no tok/s and no $/1M tokens" in shown
        assert "decode " not in shown and "$/1M tokens  own" not in shown
        await pilot.press("escape", "5")
        await pilot.pause()
        await app.workers.wait_for_complete()  # the comparison runs in a worker thread
        await pilot.pause()
        row = [str(c) for c in app.query_one("#compare-table", DataTable).get_row("rtx4090")]
        assert row[1] == "no (needs 7)" and row[2] == row[3] == "n/a"  # fits: no; no tok/s, no $/1M


def test_plan_gpus_flags_a_workload_that_does_not_fit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "gpus", "--model", "llama-3-70b", "--quant", "fp16"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if " rtx4090 " in f" {x} ")
    assert [c.strip() for c in line.split("│")[2:7]] == ["no", "7", "—", "—", "—"]
    assert "—: does not fit, so no tok/s and no $/1M tokens" in out


async def test_a_bad_character_in_a_number_field_is_refused_visibly(racks: list[ManualRack]) -> None:
    rack = ManualRack("rtx4090")
    racks.append(rack)
    app = create_app(rack.session)
    async with started(app, size=(120, 40)) as pilot:
        await pilot.press("4")
        await pilot.pause()
        batch = app.query_one("#plan-batch", Input)
        batch.focus()
        batch.value = ""
        await pilot.press("2", ".", "5")
        await pilot.pause()
        assert batch.value == "2.5"  # not silently "25"
        assert batch.has_class("-invalid")
        shown = text_of(app.query_one("#plan-result", Static))
        assert "cannot answer: batch = '2.5' is not allowed: expected a whole number" in shown
        await pilot.press("backspace", "backspace")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not batch.has_class("-invalid") and "cannot answer" not in text_of(
            app.query_one("#plan-result", Static)
        )


async def test_compare_sorts_with_s_right_after_switching_to_it(racks: list[ManualRack]) -> None:
    rack = ManualRack("rtx4090")
    racks.append(rack)
    app = create_app(rack.session)
    async with started(app, size=(120, 40)) as pilot:
        await show_pane(pilot, "5")  # the comparison runs in a worker thread
        title = app.query_one("#compare-title", Static)
        assert "sorted by decode tok/s" in text_of(title)
        await pilot.press("s")
        await pilot.pause()
        assert "sorted by own $/1M tok" in text_of(title)
