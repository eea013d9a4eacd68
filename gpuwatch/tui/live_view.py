"""The live view: every GPU's card in a layout the terminal can hold, and every GPU's processes."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Label

from gpuwatch.telemetry.sample import GpuSample
from gpuwatch.tui.card_grid import Card, CardGrid
from gpuwatch.tui.first_frame import WAITING
from gpuwatch.tui.formatting import MISSING, gib, percent
from gpuwatch.tui.gpu_card import FULL_HEIGHT, CardReading, Layout
from gpuwatch.tui.gpu_names import short_name

#: a card narrower than this cannot show a value and its gauge on one line
CARD_MIN_WIDTH = 30
#: rows the process table keeps in any layout: its title, its header and two processes
PROCESS_MIN_ROWS = 4


def grid_columns(width: int, gpu_count: int) -> int:
    """As many columns as fit, but never more than there are GPUs (one card should not be 120 wide alone)."""
    return max(1, min(gpu_count, width // CARD_MIN_WIDTH, 4))


def card_grid(width: int, height: int, gpu_count: int) -> tuple[Layout, int]:
    """The cards' layout in a view of this size, and the grid's columns for it (one unless full)."""
    layout = choose_layout(width, height, gpu_count)
    return layout, grid_columns(width, gpu_count) if layout == "full" else 1


def choose_layout(width: int, height: int, gpu_count: int) -> Layout:
    """Full cards when every one fits with room for the processes, else two lines per GPU, else one:
    every GPU stays on screen (eight fit 80x24 at two lines each)."""
    rows = math.ceil(gpu_count / grid_columns(width, gpu_count))
    if rows * FULL_HEIGHT + PROCESS_MIN_ROWS <= height:
        return "full"
    if 2 * gpu_count + PROCESS_MIN_ROWS <= height:
        return "two"
    return "one"


@lru_cache(maxsize=4096)
def process_owner(pid: int) -> str:
    """The user that owns ``pid`` on this host ("n/a" when the process is gone or in another namespace)."""
    import os
    import pwd

    try:
        uid = os.stat(f"/proc/{pid}").st_uid
        return pwd.getpwuid(uid).pw_name
    except (OSError, KeyError):
        return MISSING


#: column key -> (header, width)
PROCESS_COLUMNS: dict[str, tuple[str, int]] = {
    "gpu": ("GPU", 4),
    "pid": ("PID", 8),
    "user": ("user", 10),
    "name": ("process", 28),
    "memory": ("GPU memory", 11),
    "sm": ("SM", 5),
}

ProcessRow = tuple[int, int, str, str, float, float | None]  # gpu, pid, user, name, memory bytes, sm ratio


class ProcessTable(Vertical):
    """Every GPU's processes; the selected GPU's first, then by the chosen column (click a header)."""

    def compose(self) -> ComposeResult:
        yield Label("processes", id="process-title", classes="pane-title")
        table: DataTable[Text] = DataTable(id="process-table", cursor_type="row", zebra_stripes=True)
        # fixed widths: DataTable's auto width raced with the first rows and made a snapshot flaky
        for key, (header, width) in PROCESS_COLUMNS.items():
            table.add_column(Text(header), key=key, width=width)
        yield table

    def on_mount(self) -> None:
        self._shown: tuple[tuple[str, ...], ...] | None = None
        self._title: str | None = None
        self.sort_key = "memory"
        self._last: tuple[Sequence[GpuSample], int | None] = ((), None)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        self.sort_key = str(event.column_key.value)
        self.show(*self._last)

    def show(self, gpus: Sequence[GpuSample], selected: int | None) -> None:
        self._last = (gpus, selected)
        rows: list[ProcessRow] = []
        unavailable: list[str] = []
        for sample in gpus:
            if sample.processes is None:
                if not sample.lost:
                    why = sample.unavailable.get("processes")
                    unavailable.append(
                        f"GPU {sample.index}" + (f" ({why.value.replace('_', ' ')})" if why else "")
                    )
                continue
            for p in sample.processes:
                sm = getattr(p, "sm_util_ratio", None)
                # rack: the container the process runs in, before its name
                name = f"({p.container}) {p.name or '?'}" if p.container else p.name or "?"
                rows.append((sample.index, p.pid, process_owner(p.pid), name, p.used_memory_bytes or 0, sm))
        column = list(PROCESS_COLUMNS).index(self.sort_key)
        numeric = self.sort_key in ("memory", "sm")

        def order(row: ProcessRow) -> tuple[bool, object]:
            value = row[column]
            # largest first for memory and SM, ascending for the rest; the selected GPU before the others
            key: object = -(value or 0) if numeric else value  # type: ignore[operator]
            return (row[0] != selected, key)

        rows.sort(key=order)
        shown = tuple(
            (
                str(gpu),
                str(pid),
                user,
                name,
                f"{gib(memory)} GiB" if memory else MISSING,
                percent(sm),
            )
            for gpu, pid, user, name, memory, sm in rows
        )
        title = f"processes: {len(rows)} on {len(gpus)} GPUs"
        if selected is not None:
            on_selected = sum(1 for r in rows if r[0] == selected)
            name = next((short_name(s.name) for s in gpus if s.index == selected), "")
            title += f" (GPU {selected} {name}: {on_selected}, listed first)"
        if unavailable:
            title += f"; unavailable on {', '.join(unavailable)}"
        self._show(title, shown)

    def _show(self, title: str, rows: tuple[tuple[str, ...], ...]) -> None:
        """Touch only what changed: refilling the table would lose the cursor the user put there."""
        if title != self._title:
            self._title = title
            self.query_one("#process-title", Label).update(title)
        if rows == self._shown:
            return
        self._shown = rows
        table = self.query_one("#process-table", DataTable)
        table.clear()
        for row in rows:
            # as Text: DataTable reads a str cell as markup, and a process named "[/]" would not draw
            table.add_row(*(Text(cell, no_wrap=True, end="") for cell in row), key=f"{row[0]}:{row[1]}")


class LiveView(Vertical):
    """Every GPU's card (one ``CardGrid``) and every GPU's processes. The cards are composed with the view
    when the source listed its GPUs as it attached (the first frame names them all), else made on the
    first poll, when the number of GPUs is known.

    ``size_hint`` is the (width, height) the view expects to get (the terminal's, less the app's
    chrome): the cards are composed in the layout that size chooses, so that the first frame is drawn in
    the layout it keeps.
    """

    def __init__(
        self,
        *,
        devices: Sequence[tuple[int, str]] = (),
        size_hint: tuple[int, int] = (0, 0),
        id: str | None = None,
    ) -> None:
        self._devices = tuple(devices)
        hint = card_grid(*size_hint, len(self._devices)) if self._devices else ("full", 1)
        super().__init__(id=id)
        self._grid = CardGrid(self._devices, *hint, id="cards")

    def compose(self) -> ComposeResult:
        scroll = VerticalScroll(id="cards-scroll")
        scroll.can_focus = False  # the keys go to the cards, which select a GPU and scroll to it
        with scroll:
            waiting = Label(WAITING, id="cards-waiting")
            waiting.display = not self._devices
            yield waiting
            yield self._grid
        yield ProcessTable(id="processes")

    @property
    def cards(self) -> list[Card]:
        return list(self._grid.cards.values())

    @property
    def layout_mode(self) -> Layout:
        return self._grid.layout_mode

    def show(self, readings: Mapping[int, CardReading], selected: int | None) -> None:
        grid = self._grid
        added = any(index not in grid.cards for index in readings)
        grid.show(readings, selected)
        if added:  # the first poll of a source that did not list its GPUs: now their number is known
            self.query_one("#cards-waiting").display = False
            self._reflow()
        self.query_one(ProcessTable).show([r.sample for r in readings.values()], selected)

    def on_resize(self) -> None:
        self._reflow()

    def _reflow(self) -> None:
        self._grid.set_layout(*card_grid(self.size.width, self.size.height, len(self.cards)))
