"""The frame the CLI draws while Textual loads: what it says at a size, and where it cuts."""

from __future__ import annotations

from gpuwatch.commands.tui import fallback_banner
from gpuwatch.tui.first_frame import frame_lines

EIGHT = [(i, "NVIDIA GeForce RTX 4090") for i in range(8)]
TITLE = "gpuwatch — simulated NVML: 8x rtx4090 (scenario decode)"


def test_every_gpu_is_named_under_the_title_and_the_last_row_says_the_view_is_coming() -> None:
    rows = frame_lines(TITLE, EIGHT, None, 120, 40)
    assert len(rows) == 40 and all(len(row) <= 120 for row in rows)
    assert rows[0].strip() == TITLE
    assert rows[1:9] == [f" {i} RTX 4090  waiting for the first poll…" for i in range(8)]
    assert rows[-1] == " starting the live view…"
    assert not any(row.strip() for row in rows[9:-1])


def test_a_terminal_too_short_for_every_gpu_says_how_many_more_there_are() -> None:
    rows = frame_lines(TITLE, EIGHT, None, 80, 7)
    assert len(rows) == 7
    assert [row.split()[0] for row in rows[1:4]] == ["0", "1", "2"]
    assert rows[4] == " … and 5 more GPUs"
    assert rows[-1] == " starting the live view…"


def test_the_no_gpu_banner_is_in_the_first_frame_wrapped_to_the_width() -> None:
    banner = fallback_banner("NVML unavailable: NVML Shared Library Not Found (install the NVIDIA driver)")
    rows = frame_lines(
        "gpuwatch — simulated NVML: 1x rtx4090", [(0, "NVIDIA GeForce RTX 4090")], banner, 60, 12
    )
    banner_rows = rows[1 : rows.index(" 0 RTX 4090  waiting for the first poll…")]
    assert len(banner_rows) > 1 and all(len(row) <= 60 for row in banner_rows)
    assert " ".join(banner_rows) == banner


def test_a_source_that_lists_no_gpus_before_its_first_poll_shows_the_title_and_the_wait() -> None:
    rows = frame_lines("gpuwatch — replay of box.jsonl", [], None, 80, 24)
    assert rows[0].strip() == "gpuwatch — replay of box.jsonl"
    assert not any(row.strip() for row in rows[1:-1])
    assert rows[-1] == " starting the live view…"


def test_control_characters_in_a_name_or_a_path_are_not_sent_to_the_terminal() -> None:
    rows = frame_lines("gpuwatch — replay of \x1b[2Jbox.jsonl", [(0, "RTX\x07 4090\x1b]0;x")], None, 80, 5)
    assert rows[0].strip() == "gpuwatch — replay of ?[2Jbox.jsonl"
    assert rows[1] == " 0 RTX? 4090?]0;x  waiting for the first poll…"
    assert all(row.isprintable() for row in rows)
