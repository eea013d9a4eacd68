"""The frame a user sees while Textual loads: the title, the banner and every GPU's name, drawn with a few
ANSI sequences on the terminal Textual is about to take over.

Importing Textual takes ~0.35 s, most of a start; the GPU names are known as soon as the session is
open (~0.3 s in). So the TUI draws them first, in the alternate screen Textual then enters (entering it
again is a no-op, and Textual clears nothing before it paints every cell), and the live view replaces
this frame when it draws. Nothing here imports Textual or rich: that is the point of this module.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from collections.abc import Sequence
from typing import TextIO

from gpuwatch.tui.gpu_names import short_name

#: what a card named from the device list says until its first reading (the frame here says it too)
WAITING = "waiting for the first poll…"
#: the last row of this frame, where the live view's key bar will be
STARTING = "starting the live view…"

_ENTER = "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J"  # alternate screen, cursor hidden, cleared
_LEAVE = "\x1b[?25h\x1b[?1049l"
_BOLD, _DIM, _BANNER, _RESET = "\x1b[1m", "\x1b[2m", "\x1b[1;97;41m", "\x1b[0m"


def attached_devices(feed: object) -> list[tuple[int, str]]:
    """(index, name) of the GPUs the source found when it attached, before its first poll; empty for a
    source that does not list them (a replay, the NVML child), whose cards come with the first poll."""
    reader = getattr(getattr(feed, "source", None), "reader", None)
    devices = getattr(reader, "devices", None) or ()
    out = []
    for device in devices:
        index, name = getattr(device, "index", None), getattr(device, "name", None)
        if isinstance(index, int) and isinstance(name, str):
            out.append((index, name))
    return out


def frame_lines(
    title: str, devices: Sequence[tuple[int, str]], banner: str | None, width: int, height: int
) -> list[str]:
    """The frame's rows, each at most ``width`` characters: the header, the banner, a row per GPU (as
    many as fit) and the starting line at the bottom. Control characters show as "?": a GPU name or a
    replayed file's path must not reach the terminal as a control sequence."""
    return [text for _style, text in _styled_rows(title, devices, banner, width, height)]


def _styled_rows(
    title: str, devices: Sequence[tuple[int, str]], banner: str | None, width: int, height: int
) -> list[tuple[str, str]]:
    """(ANSI style, text) of each row of :func:`frame_lines`."""
    devices = [(index, _printable(name)) for index, name in devices]
    rows = [(_BOLD, _printable(title).center(width)[:width])]
    if banner:
        rows += [(_BANNER, line[:width]) for line in _wrap(_printable(banner), width)]
    room = max(0, height - len(rows) - 2)
    shown = devices[:room] if len(devices) <= room else devices[: max(0, room - 1)]
    rows += [("", f" {index} {short_name(name)}  {WAITING}"[:width]) for index, name in shown]
    if len(shown) < len(devices):
        rows.append(("", f" … and {len(devices) - len(shown)} more GPUs"[:width]))
    rows += [("", "")] * max(0, height - len(rows) - 1)
    rows.append((_DIM, f" {STARTING}"[:width]))
    return rows[:height]


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, max(1, width))


def _printable(text: str) -> str:
    return text if text.isprintable() else "".join(c if c.isprintable() else "?" for c in text)


class FirstFrame:
    """The drawn frame; :meth:`leave` puts the terminal back when the TUI ends before Textual took it
    (an import failed, Ctrl+C while loading). Textual leaves the alternate screen itself when it ran."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def leave(self) -> None:
        self._out.write(_LEAVE)
        self._out.flush()


def draw(title: str, devices: Sequence[tuple[int, str]], banner: str | None) -> FirstFrame | None:
    """Draw the frame on the terminal Textual will use (its stderr); None where Textual will not take a
    terminal this way (not a tty, another driver chosen, Windows), and nothing is drawn."""
    out = sys.__stderr__
    if out is None or os.name == "nt" or os.environ.get("TEXTUAL_DRIVER") or not out.isatty():
        return None
    try:
        width, height = os.get_terminal_size(out.fileno())
    except OSError:
        width, height = shutil.get_terminal_size()
    rows = _styled_rows(title, devices, banner, width, height)
    drawn = (f"\x1b[{n};1H{style}{text}{_RESET if style else ''}" for n, (style, text) in enumerate(rows, 1))
    out.write(_ENTER + "".join(drawn))
    out.flush()
    return FirstFrame(out)
