"""The TUI driven by Pilot over a real simulated rack on a manual clock."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import pynvml
import pytest
from textual.widgets import DataTable, Input, Markdown, Select, Static
from tui_rack import ManualRack, show_pane, started

from gpuwatch.model.catalog import get_gpu
from gpuwatch.model.llm import get_model
from gpuwatch.model.memory import lora_memory, qlora_memory
from gpuwatch.model.throughput import estimate_throughput
from gpuwatch.model.whatif import PlanInputs
from gpuwatch.options.plan_command import plan_command
from gpuwatch.tui.app import GpuwatchApp, create_app
from gpuwatch.tui.card_grid import Card, CardGrid
from gpuwatch.tui.formatting import duration, rate, si, usd
from gpuwatch.tui.gpu_card import card_lines, line_segments
from gpuwatch.tui.key_bar import KeyBar
from gpuwatch.tui.live_view import LiveView
from gpuwatch.tui.pane_tabs import PaneTabs
from gpuwatch.tui.roofline_plot import RooflinePlot


@pytest.fixture
def rack() -> Iterator[ManualRack]:
    r = ManualRack()
    yield r
    r.close()


@pytest.fixture
def eight() -> Iterator[ManualRack]:
    """Eight RTX 4090s, as the benchmark runs them."""
    r = ManualRack("8xrtx4090")
    yield r
    r.close()


def text_of(widget: Static) -> str:
    return str(widget.render())


def cards(app: GpuwatchApp) -> dict[int, Card]:
    return {c.index: c for c in app.query_one(LiveView).cards}


async def test_live_view_has_a_card_per_gpu_with_the_polled_readings(rack: ManualRack) -> None:
    app = create_app(rack.session)
    async with started(app, size=(120, 40)) as pilot:
        rack.tick(1.0, polls=3)
        await pilot.pause()
        snap, box = rack.session.latest()  # type: ignore[misc]
        shown = cards(app)
        assert sorted(shown) == [0, 1, 2]
        for sample in snap.gpus:
            body = shown[sample.index].text
            assert f"{sample.temperature_c:.0f}°C" in body
            assert f"{sample.power_w:.0f}/{sample.power_limit_w:.0f} W" in body
            assert f"SM busy {sample.sm_busy_ratio * 100:.0f}%" in body
            assert f"MC busy {sample.memory_controller_busy_ratio * 100:.0f}%" in body
            roof = box.gpus[sample.index].roofline
            assert roof is not None and roof.attained_bandwidth_bytes_s is not None
            # attained bandwidth says how it was obtained; never presented as measured when it is not
            assert f"{si(roof.attained_bandwidth_bytes_s, 'B/s')} {roof.bandwidth_provenance.value}" in body
        # the H100 has GPM: its bandwidth is measured; the 4090s' is modelled from the declared workload
        assert "measured" in shown[2].text
        assert "measured" not in shown[0].text
        # every GPU's processes, the selected GPU's first
        table = app.query_one("#process-table", DataTable)
        gpus = [str(table.get_row_at(r)[0]) for r in range(table.row_count)]
        assert sorted(gpus) == ["0", "1", "2"] and gpus[0] == "0"
        assert "GPU 0" in str(app.query_one("#process-title").render())


async def test_a_card_line_is_drawn_as_rich_draws_it(rack: ManualRack) -> None:
    """The cards' own renderer gives the segments (text and colours) rich's Text.render gives, in every
    layout and width; a line with overlapping spans is left to rich."""
    from rich.style import Style
    from rich.text import Text

    app = create_app(rack.session)
    async with started(app, size=(120, 40)) as pilot:
        rack.tick(1.0, polls=3)
        await pilot.pause()
        grid = app.query_one(CardGrid)
        base = grid.rich_style
        for card in cards(app).values():
            assert card.reading is not None
            for layout in ("full", "two", "one"):
                for width in (20, 28, 60, 117):
                    for line in card_lines(card.reading, layout, width):
                        reference = line.copy()
                        reference.stylize_before(base)
                        assert line_segments(line, base, grid._text_console) == list(
                            reference.render(grid._text_console)
                        ), line.plain
        overlapping = Text("abcdef")
        overlapping.stylize("red", 0, 4)
        overlapping.stylize("bold", 2, 6)
        assert line_segments(overlapping, Style(color="white"), grid._text_console) is None


async def test_after_a_resize_every_card_shows_its_lines_drawn_afresh_for_the_new_width(
    rack: ManualRack,
) -> None:
    """A poll draws only the lines whose shown values moved; a narrower (or wider) card must still redraw
    the lines whose values did not, cut to the width it now has."""
    app = create_app(rack.session)
    async with started(app, size=(160, 40)) as pilot:
        rack.tick(1.0, polls=3)
        await pilot.pause()
        wide = {i: c.content_width for i, c in cards(app).items()}
        for size in ((100, 40), (160, 40)):
            await pilot.resize_terminal(*size)
            await pilot.pause()
            rack.tick(1.0, polls=1)  # a poll after the resize: lines whose values stayed are not redrawn
            await pilot.pause()
            for index, card in cards(app).items():
                width = card.content_width
                if size == (100, 40):
                    assert width < wide[index]
                assert card.reading is not None
                fresh = [line.plain for line in card_lines(card.reading, card.layout_mode, width)]
                assert card.lines == fresh, index
                assert all(len(line) <= width for line in card.lines)


async def test_throttle_badge_appears_and_notifications_say_when_it_starts_and_ends(rack: ManualRack) -> None:
    app = create_app(rack.session)
    async with started(app, size=(120, 40)) as pilot:
        rack.tick(1.0, polls=2)
        await pilot.pause()
        assert cards(app)[1].badge_labels == []
        rack.sim.set_scenario(1, "power-capped")
        rack.tick(1.0, polls=5)
        await pilot.pause()
        assert "POWER CAP" in cards(app)[1].badge_labels
        assert "POWER CAP" in cards(app)[1].text
        assert cards(app)[1].has_class("-throttle-warning")
        assert cards(app)[0].badge_labels == []
        assert any("GPU 1 throttling: sw_power_cap" in m for m in app.notices)
        rack.sim.set_scenario(1, "idle")
        rack.tick(1.0, polls=30)
        await pilot.pause()
        assert cards(app)[1].badge_labels == []
        assert any("GPU 1 no longer throttled" in m for m in app.notices)


async def test_eight_gpus_starting_to_throttle_are_one_toast() -> None:
    rack = ManualRack("8xrtx4090")
    try:
        app = create_app(rack.session)
        async with started(app, size=(120, 40), notifications=True) as pilot:
            rack.tick(1.0, polls=2)
            await pilot.pause()
            for i in range(8):
                rack.sim.set_scenario(i, "power-capped")
            rack.tick(1.0, polls=5)
            await pilot.pause()
            throttling = [m for m in app.notices if "throttl" in m]
            assert len(throttling) == 1
            assert throttling[0].startswith("8 GPUs throttling (GPU 0, 1, 2, 3, 4, 5, 6, 7)")
            await pilot.pause()
            assert len(app.screen.query("Toast")) == 1  # on screen: one toast, not eight
    finally:
        rack.close()


async def test_selecting_a_gpu_moves_processes_roofline_and_cost(rack: ManualRack) -> None:
    app = create_app(rack.session)
    async with started(app, size=(120, 40)) as pilot:
        rack.tick(1.0, polls=2)
        await pilot.pause()
        assert app.selected_gpu == 0
        await pilot.press("]")
        await pilot.pause()
        assert app.selected_gpu == 1
        assert "GPU 1" in str(app.query_one("#process-title").render())
        table = app.query_one("#process-table", DataTable)
        assert str(table.get_row_at(0)[0]) == "1"  # the selected GPU's processes first
        assert cards(app)[1].has_class("-selected") and not cards(app)[0].has_class("-selected")
        grid = app.query_one(CardGrid)
        card = cards(app)[2].region  # a click inside its card selects a GPU
        await pilot.click(CardGrid, offset=(card.x - grid.region.x + 5, card.y - grid.region.y + 3))
        await pilot.pause()
        assert app.selected_gpu == 2
        await pilot.press("2")
        await pilot.pause()
        assert app.active_pane == "roofline"
        assert "H100" in text_of(app.query_one("#roofline-title", Static))
        plot = app.query_one(RooflinePlot)
        assert plot.picture is not None
        h100 = get_gpu("h100-sxm")
        assert plot.picture.bandwidth_bytes_s == h100.memory_bandwidth_bytes_s
        assert max(r.peak_flops for r in plot.picture.roofs) == max(h100.peak_flops.values())
        assert plot.picture.trail  # the live point
        words = text_of(app.query_one("#roofline-words", Static))
        assert "BOUND" in words and "headroom" in words
        await pilot.press("3")
        await pilot.pause()
        assert "GPU 2" in text_of(app.query_one("#cost-summary", Static))


async def test_the_arrow_keys_on_the_cards_select_the_next_gpu_across_and_down(eight: ManualRack) -> None:
    app = create_app(eight.session)
    async with started(app, size=(120, 40)) as pilot:
        eight.tick(1.0, polls=2)
        await pilot.pause()
        app.query_one(CardGrid).focus()
        await pilot.press("right")
        await pilot.pause()
        assert app.selected_gpu == 1 and cards(app)[1].has_class("-selected")
        await pilot.press("down")  # four cards a row at 120 columns: GPU 5 is below GPU 1
        await pilot.pause()
        assert app.selected_gpu == 5
        await pilot.press("left", "up", "up")  # nothing above the first row: the selection stays
        await pilot.pause()
        assert app.selected_gpu == 0
        assert "GPU 0" in str(app.query_one("#process-title").render())


async def test_with_more_gpus_than_fit_the_cards_scroll_to_the_gpu_the_keys_select() -> None:
    rack = ManualRack("16xrtx4090")
    try:
        app = create_app(rack.session)
        async with started(app, size=(80, 16)) as pilot:
            rack.tick(1.0, polls=2)
            await pilot.pause()
            assert app.query_one(LiveView).layout_mode == "one"
            # the cards have the keys from the start (their scroll box takes none)
            assert isinstance(app.focused, CardGrid)
            view = app.query_one("#cards-scroll").region
            assert not view.contains_region(cards(app)[15].region)  # 16 one-line cards do not fit
            for _ in range(15):
                await pilot.press("down")
            await pilot.pause()
            assert app.selected_gpu == 15
            assert view.contains_region(cards(app)[15].region)
            await pilot.press("[")  # the app's own key: the cards follow it too
            await pilot.pause()
            assert app.selected_gpu == 14 and view.contains_region(cards(app)[14].region)
    finally:
        rack.close()


async def test_panes_switch_by_number_and_the_palette_selects_gpus(rack: ManualRack) -> None:
    app = create_app(rack.session)
    async with started(app, size=(120, 40)) as pilot:
        rack.tick(1.0)
        await pilot.pause()
        for key, pane in zip("54321", ("compare", "plan", "cost", "roofline", "live"), strict=True):
            await pilot.press(key)
            assert app.active_pane == pane
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Select GPU 2")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert app.selected_gpu == 2
        await pilot.press("ctrl+p")
        await pilot.press(*"Show Plan")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert app.active_pane == "plan"
        await pilot.press("question_mark")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "HelpScreen"
        await pilot.press("escape")
        assert app.screen.__class__.__name__ != "HelpScreen"


async def _settle(pilot: object, app: GpuwatchApp) -> None:
    """Let the planner's worker threads answer, and their answers reach the screen."""
    await pilot.pause()  # type: ignore[attr-defined]
    await app.workers.wait_for_complete()
    await pilot.pause()  # type: ignore[attr-defined]


async def _set_input(pilot: object, app: GpuwatchApp, selector: str, value: str) -> None:
    widget = app.query_one(selector, Input)
    widget.focus()
    widget.value = ""
    await pilot.press(*value)  # type: ignore[attr-defined]
    await _settle(pilot, app)


async def test_planner_answers_every_change_at_once(rack: ManualRack) -> None:
    app = create_app(rack.session)
    async with started(app, size=(120, 40)) as pilot:
        await pilot.press("4")
        await _settle(pilot, app)
        await _set_input(pilot, app, "#plan-batch", "16")
        app.query_one("#plan-gpu", Select).value = "h100-sxm"
        await _settle(pilot, app)
        shown = text_of(app.query_one("#plan-result", Static))
        expected = estimate_throughput(get_model("llama-3-8b"), "fp16", get_gpu("h100-sxm"), 16, 4096)
        assert rate(float(expected.decode_tokens_per_s)) in shown
        assert rate(float(expected.prefill_tokens_per_s)) in shown
        assert duration(float(expected.time_per_output_token_s)) in shown
        assert duration(float(expected.time_to_first_token_s)) in shown
        assert f"decode is {expected.bound}-bound" in shown
        assert "FITS" in shown
        # the comparison pane follows the form (escape leaves the batch field, so 5 switches panes)
        await pilot.press("escape", "5")
        await _settle(pilot, app)
        await app.workers.wait_for_complete()  # the comparison runs in a worker thread
        await _settle(pilot, app)
        assert "batch 16" in text_of(app.query_one("#compare-title", Static))
        table = app.query_one("#compare-table")
        assert table.row_count > 10  # type: ignore[attr-defined]
        await pilot.press("4")
        await _settle(pilot, app)

        app.query_one("#plan-mode", Select).value = "qlora"
        app.query_one("#plan-model", Select).value = "llama-2-70b"
        app.query_one("#plan-gpu", Select).value = "rtx4090"
        await _set_input(pilot, app, "#plan-batch", "1")
        await _set_input(pilot, app, "#plan-context", "2048")
        shown = text_of(app.query_one("#plan-result", Static))
        need = qlora_memory(get_model("llama-2-70b"), 1, 2048)
        assert f"{float(need.bytes_per_gpu(1)) / 2**30:.1f} GiB" in shown
        assert ("DOES NOT FIT" in shown) == (not need.fits(get_gpu("rtx4090"), 1))
        assert "training (6·N·D)" in shown

        await _set_input(pilot, app, "#plan-context", "0")
        assert "cannot answer" in text_of(app.query_one("#plan-result", Static))


async def test_copy_key_puts_the_equivalent_plan_command_on_the_clipboard(rack: ManualRack) -> None:
    app = create_app(rack.session)
    async with started(app, size=(120, 40)) as pilot:
        await pilot.press("4")
        await _set_input(pilot, app, "#plan-batch", "8")
        await pilot.press("escape")  # leave the input so the key reaches the app
        app.set_focus(None)
        await pilot.press("y")
        await _settle(pilot, app)
        expected = plan_command(PlanInputs(batch=8))
        assert app.clipboard == expected
        assert "--batch 8" in expected
        await _settle(pilot, app)
        assert expected in app.notices


async def _copied_command_output(pilot: object, app: GpuwatchApp) -> dict:
    """Press the copy key and run what it copied through the real CLI, as a user pasting it would."""
    from gpuwatch.cli import main

    await pilot.press("escape")  # type: ignore[attr-defined]
    app.set_focus(None)
    await pilot.press("y")  # type: ignore[attr-defined]
    await _settle(pilot, app)
    argv = shlex.split(app.clipboard)
    assert argv[:2] == ["gpuwatch", "plan"]
    out = io.StringIO()  # the running app captures sys.stdout, so capsys would not see the print
    with contextlib.redirect_stdout(out):
        assert main([*argv[1:], "--json"]) == 0
    return json.loads(out.getvalue())  # type: ignore[no-any-return]


async def test_copied_command_prints_the_numbers_the_plan_pane_shows(
    rack: ManualRack,
) -> None:
    app = create_app(rack.session)
    async with started(app, size=(120, 40)) as pilot:
        await pilot.press("4")
        await _set_input(pilot, app, "#plan-batch", "8")
        await _set_input(pilot, app, "#plan-electricity", "0.32")
        await _set_input(pilot, app, "#plan-utilisation", "0.5")
        shown = text_of(app.query_one("#plan-result", Static))
        out = await _copied_command_output(pilot, app)
        assert out["command"] == "cost"
        assert out["electricity_usd_per_kwh"] == 0.32 and out["utilisation_ratio"] == 0.5
        assert f"decode   {rate(out['decode_tokens_per_s'])}" in shown
        assert f"own {usd(out['usd_per_mtok'], digits=3)} at 50% utilisation" in shown
        assert f"cloud {usd(out['cloud_usd_per_mtok'], digits=3)}" in shown

        # a training mode copies `plan train` with its tokens, MFU and rank
        app.query_one("#plan-mode", Select).value = "lora"
        await _settle(pilot, app)
        await _set_input(pilot, app, "#plan-lora-rank", "64")
        await _set_input(pilot, app, "#plan-train-tokens", "2e9")
        shown = text_of(app.query_one("#plan-result", Static))
        out = await _copied_command_output(pilot, app)
        assert out["command"] == "train" and out["tokens"] == 2e9
        assert f"{out['gpu_hours']:,.1f} GPU-hours" in shown
        assert f"{out['memory']['per_gpu_gib']:.1f} GiB" in shown
        assert f"{usd(out['usd'])} rented" in shown


async def test_training_fields_show_for_their_mode_and_change_the_answer(rack: ManualRack) -> None:
    app = create_app(rack.session)
    async with started(app, size=(120, 40)) as pilot:
        await pilot.press("4")
        await _settle(pilot, app)
        shown = {row: app.query_one(f"#{row}").display for row in ("row-lora-rank", "row-zero", "row-link")}
        assert shown == {"row-lora-rank": False, "row-zero": False, "row-link": False}  # inference, 1 GPU

        app.query_one("#plan-mode", Select).value = "lora"
        await _settle(pilot, app)
        assert app.query_one("#row-lora-rank").display and not app.query_one("#row-zero").display
        await _set_input(pilot, app, "#plan-lora-rank", "256")
        shown_text = text_of(app.query_one("#plan-result", Static))
        # the form starts from the session's workload (batch 8, context 4096)
        need = lora_memory(get_model("llama-3-8b"), app.plan_inputs.batch, 4096, rank=256)
        assert f"{float(need.bytes_per_gpu(1)) / 2**30:.1f} GiB" in shown_text
        assert "LoRA rank 256" in shown_text
        assert app.plan_inputs.lora_rank == 256

        app.query_one("#plan-mode", Select).value = "train"
        await _set_input(pilot, app, "#plan-count", "8")
        assert app.query_one("#row-zero").display and not app.query_one("#row-lora-rank").display
        app.query_one("#plan-zero", Select).value = 3
        await _settle(pilot, app)
        assert app.plan_inputs.zero_stage == 3
        assert "ZeRO-3" in text_of(app.query_one("#plan-result", Static))

        app.query_one("#plan-mode", Select).value = "inference"
        await _settle(pilot, app)
        assert app.query_one("#row-link").display  # 8 GPUs: the link between them matters
        app.query_one("#plan-link", Select).value = "ethernet:25"
        await _settle(pilot, app)
        assert app.plan_inputs.link == "ethernet:25"
        assert "--link ethernet:25" in plan_command(app.plan_inputs)


async def test_compare_prices_datacenter_gpus_from_the_config_and_says_how() -> None:
    rack = ManualRack(gpu_prices={"h100-sxm": 25_000.0})
    app = create_app(rack.session)
    async with started(app, size=(120, 40)) as pilot:
        await show_pane(pilot, "5")  # the comparison runs in a worker thread
        table = app.query_one("#compare-table", DataTable)
        h100 = [str(c) for c in table.get_row("h100-sxm")]
        assert "$25,000 config" in h100
        assert "n/a" not in h100[3]  # owned $/1M now has a price to work from
        a100 = [str(c) for c in table.get_row("a100-80gb-sxm")]
        assert a100[4] == "none" and a100[3] == "n/a"
        note = text_of(app.query_one("#compare-note", Static))
        assert "[gpu_prices]" in note and "$2.00/GPU-h" in note
    rack.close()


async def test_eight_gpus_fit_120x40_and_every_gpu_is_on_screen_at_80x24(eight: ManualRack) -> None:
    app = create_app(eight.session)
    async with started(app, size=(120, 40)) as pilot:
        eight.tick(1.0, polls=2)
        await pilot.pause()
        view = app.query_one(LiveView)
        assert len(cards(app)) == 8 and view.layout_mode == "full"
        processes = app.query_one("#processes")
        for card in cards(app).values():
            assert card.region.bottom <= processes.region.y  # nothing hidden behind the table
            assert not any(line.endswith("…") for line in card.lines), card.lines  # nothing cut off
        # no blank band: the process table starts right under the last row of cards
        assert processes.region.y == max(c.region.bottom for c in cards(app).values())
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert view.layout_mode == "two"
        screen = app.screen.region
        for index, card in cards(app).items():
            assert screen.contains_region(card.region) and card.region.height == 2
            assert card.lines[0].startswith(f"{index} RTX 4090")
            assert "°C" in card.lines[0] and " W " in card.lines[0]
        svg = app.export_screenshot()
        assert "Help" in svg and "Quit" in svg  # the footer still says how to get help and quit


async def test_from_a_form_field_the_function_keys_switch_panes_and_digits_still_type(
    rack: ManualRack,
) -> None:
    app = create_app(rack.session)
    async with started(app, size=(120, 40)) as pilot:
        rack.tick(1.0)
        await pilot.press("4")
        await pilot.pause(0.2)
        batch = app.query_one("#plan-batch", Input)
        batch.focus()
        batch.value = ""
        await pilot.press("1", "2")
        assert batch.value == "12" and app.active_pane == "plan"  # digits type into the field
        await pilot.press("f2")
        await pilot.pause()
        assert app.active_pane == "roofline"
        await pilot.press("4")
        batch.focus()
        await pilot.pause()
        await pilot.press("alt+5")
        await pilot.pause()
        assert app.active_pane == "compare"
        await pilot.press("4")
        batch.focus()
        await pilot.pause()
        footer = app.export_screenshot()
        assert "esc" in footer and "F10" in footer and "F12" in footer  # leave, quit, help from the field
        await pilot.press("f12")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "HelpScreen"
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("4")
        batch.focus()
        await pilot.pause()
        await pilot.press("escape", "1")
        assert app.active_pane == "live"


async def test_a_click_on_a_pane_title_shows_that_pane_and_a_click_on_a_key_presses_it(
    rack: ManualRack,
) -> None:
    app = create_app(rack.session)
    async with started(app, size=(120, 40)) as pilot:
        rack.tick(1.0, polls=2)
        tabs = app.query_one(PaneTabs)
        start, end = tabs.spans()["cost"]
        await pilot.click(PaneTabs, offset=(tabs.styles.padding.left + (start + end) // 2, 0))
        await pilot.pause()
        assert app.active_pane == "cost"
        assert app.query_one("#cost-summary", Static).region.height > 0  # the pane itself, on screen
        bar = app.query_one(KeyBar)
        shown = [(item.display, item.description) for item in bar.items]
        assert shown[:2] == [("?", "Help"), ("q", "Quit")]  # help and quit first: a narrow bar cuts the right
        assert bar.palette is not None and bar.palette.display == "^p"
        x = next(i for i in range(bar.size.width) if (hit := bar.item_at(i)) and hit.description == "Help")
        await pilot.click(KeyBar, offset=(x, 0))
        await pilot.pause()
        assert app.screen.__class__.__name__ == "HelpScreen"


async def test_a_process_name_with_square_brackets_is_shown_as_it_is() -> None:
    """A process's name is text, not markup: "[/]" once ended the TUI with a MarkupError, and "[bold]"
    vanished from the name."""
    import dataclasses

    rack = ManualRack("rtx4090")
    name = "serve [bold]a [/] b"
    for device in rack.sim.devices:
        device.scenario = dataclasses.replace(device.scenario, process_name=name)
    try:
        app = create_app(rack.session)
        async with started(app, size=(120, 40)) as pilot:
            rack.tick(1.0, polls=2)
            await pilot.pause()
            table = app.query_one("#process-table", DataTable)
            assert table.row_count == 1
            drawn = "".join(segment.text for segment in table.render_line(1))  # under the header row
            assert name in drawn and app.is_running
    finally:
        rack.close()


async def test_ctrl_c_asks_once_and_quits_on_the_second_press(rack: ManualRack) -> None:
    app = create_app(rack.session)
    async with started(app, size=(120, 40)) as pilot:
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert app.is_running
        assert any("Ctrl+C again" in m for m in app.notices)
        await pilot.press("ctrl+c")
        await pilot.pause()
    assert app.return_code == 0


async def test_a_lost_gpu_shows_only_that_it_is_lost() -> None:
    rack = ManualRack("2xrtx4090", faults="lost:1@5")
    try:
        app = create_app(rack.session)
        async with started(app, size=(120, 40)) as pilot:
            rack.tick(1.0, polls=8)
            await pilot.pause()
            lost = cards(app)[1]
            assert lost.has_class("-lost")
            assert lost.text.startswith("GPU LOST")
            assert "clocks not held back" not in lost.text and "▁" not in lost.text
            assert "°C" not in lost.text  # no stale reading
            assert "clocks not held back" in cards(app)[0].text  # the other card is unaffected
    finally:
        rack.close()


async def test_an_xid_shows_on_its_card_and_the_help_says_what_it_means() -> None:
    rack = ManualRack("2xrtx4090", faults="xid:0:48@3", xid_events=True)
    try:
        app = create_app(rack.session)
        async with started(app, size=(120, 40)) as pilot:
            for _ in range(100):  # the Xid arrives on the reader's event thread, in real time
                rack.tick(1.0)
                await pilot.pause(0.05)
                if "XID 48" in cards(app)[0].badge_labels:
                    break
            assert "XID 48" in cards(app)[0].text
            assert cards(app)[0].has_class("-throttle-critical")
            assert "XID" not in cards(app)[1].text
            await pilot.press("question_mark")
            await pilot.pause()
            help_text = app.screen.query_one(Markdown).source
            assert "| 48 | double-bit ECC error" in help_text
    finally:
        rack.close()


async def test_the_palette_screenshot_saves_in_the_current_directory_and_says_where(
    rack: ManualRack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DOWNLOAD_DIR", str(tmp_path / "no-such-dir"))
    app = create_app(rack.session)
    async with started(app, size=(120, 40)) as pilot:
        await pilot.press("ctrl+p")
        await pilot.press(*"screenshot")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.3)
    saved = list(tmp_path.glob("*.svg"))
    assert len(saved) == 1
    assert any(str(saved[0]) in m for m in app.notices)


async def test_no_gpu_starts_on_the_simulator_with_a_banner(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpuwatch.cli import build_parser
    from gpuwatch.commands import tui

    def no_driver() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", no_driver)
    args: argparse.Namespace = build_parser().parse_args([])
    app = tui.build_app(args)
    monkeypatch.undo()  # the simulator installs beneath pynvml and must see the real nvmlInit
    async with started(app, size=(120, 40)) as pilot:
        await pilot.pause()
        banner = text_of(app.query_one("#banner", Static))
        assert "NO GPU" in banner and "SIMULATED" in banner
        assert "NVML" in banner  # the reason
        assert app.feed.source.simulated


def _recording(path: Path, polls: int) -> None:
    """A real recording of the simulated rack, written by the recorder's own writer."""
    from gpuwatch.telemetry.recording import RecordWriter

    rack = ManualRack("2xrtx4090")
    try:
        with RecordWriter(path) as writer:
            for _ in range(polls):
                rack.tick(1.0)
                latest = rack.session.latest()
                assert latest is not None
                writer.write(latest[0])
    finally:
        rack.close()


async def _replay_status(path: Path) -> str:
    from gpuwatch.live.config import LiveConfig
    from gpuwatch.live.session import LiveSession
    from gpuwatch.telemetry.recording import ReplaySource

    session = LiveSession(ReplaySource(path, speed=0), LiveConfig())
    app = create_app(session)
    async with started(app, size=(120, 40)) as pilot:
        for _ in range(50):
            await pilot.pause(0.1)
            status = str(app.query_one("#source-status", Static).render())
            if status:
                return status
    return ""


async def test_a_corrupt_recording_says_where_on_screen_and_one_that_ends_says_so(tmp_path: Path) -> None:
    good = tmp_path / "good.gwrec"
    _recording(good, polls=4)
    status = await _replay_status(good)
    assert status.startswith("REPLAY ENDED") and "4 played" in status

    bad = tmp_path / "bad.gwrec"
    _recording(bad, polls=6)
    data = bytearray(bad.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = b"\xff" * 16  # a record torn in the middle of the file
    bad.write_bytes(bytes(data))
    status = await _replay_status(bad)
    # the damaged stretch is skipped and playback goes on to the end; the screen says where it was
    assert status.startswith(("REPLAY STOPPED", "REPLAY DAMAGED", "REPLAY ENDED")) and str(bad) in status
    assert "byte" in status  # the position of the bad record, as the recording code reports it


async def test_the_copied_plan_command_carries_the_sessions_gpus_file(tmp_path: Path) -> None:
    """`y` after a session started with --gpus-file: the pasted command loads the same user catalog."""
    from gpuwatch.cli import parse_args
    from gpuwatch.commands import tui
    from gpuwatch.model.catalog import reset_user_gpus

    gpus = tmp_path / "gpus.toml"
    gpus.write_text("[gpu.rtx4090]\nlist_price_usd = 1999\n")  # one corrected figure of a known card
    try:
        app = tui.build_app(parse_args(["--sim", "rtx4090", "--gpus-file", str(gpus)]))
        async with started(app, size=(120, 40)) as pilot:
            await pilot.press("f4")
            app.set_focus(None)
            await pilot.press("y")
            await pilot.pause()
            assert shlex.split(app.clipboard)[:5] == ["gpuwatch", "plan", "cost", "--gpus-file", str(gpus)]
    finally:
        reset_user_gpus()


async def test_a_planning_pane_mounts_when_first_shown(rack: ManualRack) -> None:
    """Watching the GPUs holds none of the planner's ~600 widgets; each pane comes in when shown."""
    from gpuwatch.tui.compare_pane import ComparePane
    from gpuwatch.tui.plan_pane import PlanPane

    app = create_app(rack.session)
    async with started(app, size=(120, 40)) as pilot:
        rack.tick(1.0)
        await pilot.pause()
        assert not app.query(PlanPane) and not app.query(ComparePane)
        await pilot.press("4")
        await _settle(pilot, app)
        assert app.query_one("#plan-batch", Input).value == "8"  # the form, from the declared workload
        assert not app.query(ComparePane)


async def test_the_collector_the_program_started_without_is_on_after_the_first_frame(
    rack: ManualRack,
) -> None:
    import gc

    gc.disable()  # as gpuwatch.__main__ starts the program
    try:
        app = create_app(rack.session)
        async with started(app, size=(120, 40)):
            assert gc.isenabled()  # started() waits for the first frame's panes
    finally:
        gc.enable()


async def test_the_wide_layout_mounts_the_plan_pane_beside_the_live_view(rack: ManualRack) -> None:
    from gpuwatch.tui.plan_pane import PlanPane

    app = create_app(rack.session)
    async with started(app, size=(200, 50)) as pilot:
        await pilot.pause()
        assert app.active_pane == "plan" and app.query(PlanPane)


@pytest.mark.parametrize(("size", "layout"), [((120, 40), "full"), ((80, 24), "two")])
async def test_every_gpu_is_named_in_the_first_frame_before_its_first_poll(
    size: tuple[int, int], layout: str
) -> None:
    """The cards come from the device list NVML gave at attach: named at once, waiting for readings."""
    from gpuwatch.tui.gpu_card import WAITING

    rack = ManualRack("8xrtx4090")
    try:
        app = create_app(rack.session)
        async with started(app, size=size) as pilot:  # the rack's clock has not moved: no poll yet
            await pilot.pause()
            shown = cards(app)
            assert sorted(shown) == list(range(8)) and app.snapshot is None
            assert all(card.layout_mode == layout for card in shown.values())
            strips = app.screen._compositor.render_strips()
            screen = "\n".join("".join(segment.text for segment in strip) for strip in strips)
            assert screen.count("RTX 4090") == 8 and WAITING in screen
            rack.tick(1.0)
            await pilot.pause()
            assert WAITING not in "\n".join(card.text for card in shown.values())
    finally:
        rack.close()


async def test_the_cost_pane_shows_the_power_cap_advice_solved_only_while_it_is_on_screen() -> None:
    """The advice is the assessment's costliest figure: the live view's polls go without it, and the
    Cost pane, once shown, gets it for the poll it shows (and the polls after)."""
    import re

    rack = ManualRack("rtx4090", scenario="decode")
    try:
        rack.tick(2.0, polls=30)  # past the ramp: the card draws its decode power
        app = create_app(rack.session)
        async with started(app, size=(120, 40)) as pilot:
            rack.tick(1.0)
            await pilot.pause()
            assert app.assessment is not None and app.assessment.gpus[0].advised_power_limit_w is None
            await pilot.press("3")
            await pilot.pause()
            for _ in range(2):
                rack.tick(1.0)
                await pilot.pause()
                summary = text_of(app.query_one("#cost-summary", Static))
                found = re.search(r"advise (\d+) W", summary)
                assert found and 100 <= int(found.group(1)) <= 450, summary
            assert app.assessment is not None and app.assessment.gpus[0].advised_power_limit_w is not None
    finally:
        rack.close()
