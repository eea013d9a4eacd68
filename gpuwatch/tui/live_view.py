"""The live view: a grid of GPU cards that reflows with the terminal, and the selected GPU's processes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from textual.app import ComposeResult
from textual.containers import Grid, Vertical, VerticalScroll
from textual.widgets import DataTable, Label

from gpuwatch.live.assessment import GpuAssessment
from gpuwatch.telemetry.sample import GpuSample
from gpuwatch.tui.formatting import MISSING, gib
from gpuwatch.tui.gpu_card import GpuCard, short_name

#: a card narrower than this cannot show a value and its gauge on one line
CARD_MIN_WIDTH = 30


def grid_columns(width: int, gpu_count: int) -> int:
    """As many columns as fit, but never more than there are GPUs (one card should not be 120 wide alone)."""
    return max(1, min(gpu_count, width // CARD_MIN_WIDTH, 4))


PROCESS_NAME_WIDTH = 48


class ProcessTable(Vertical):
    """Processes on the selected GPU, largest memory first."""

    def compose(self) -> ComposeResult:
        yield Label("processes", id="process-title", classes="pane-title")
        table: DataTable[str] = DataTable(id="process-table", cursor_type="row", zebra_stripes=True)
        table.add_column("PID", key="pid", width=8)
        # a fixed width: DataTable's auto width raced with the first rows (a flaky snapshot showed
        # the column at its header's width); longer command lines are cut by the table
        table.add_column("process", key="name", width=PROCESS_NAME_WIDTH)
        table.add_column("GPU memory", key="memory", width=12)
        yield table

    def on_mount(self) -> None:
        self._rows: tuple[tuple[str, str, str], ...] | None = None
        self._title: str | None = None

    def show(self, sample: GpuSample | None) -> None:
        if sample is None:
            self._show("processes", None)
            return
        processes = sample.processes
        why = sample.unavailable.get("processes")
        if processes is None:
            reason = f" ({why.value.replace('_', ' ')})" if why is not None else ""
            name = f"GPU {sample.index} {short_name(sample.name)}"
            self._show(f"processes on {name}: unavailable{reason}", None)
            return
        ordered = sorted(processes, key=lambda p: -(p.used_memory_bytes or 0))
        rows = tuple(
            (
                str(p.pid),
                f"({p.container}) {p.name or '?'}" if p.container else p.name or "?",  # rack: container
                f"{gib(p.used_memory_bytes)} GiB" if p.used_memory_bytes is not None else MISSING,
            )
            for p in ordered
        )
        self._show(f"processes on GPU {sample.index} {short_name(sample.name)}: {len(processes)}", rows)

    def _show(self, title: str, rows: tuple[tuple[str, str, str], ...] | None) -> None:
        """Touch only what changed: an update, even to the same text, re-lays the whole screen, and
        refilling the table would lose the cursor the user put there."""
        if title != self._title:
            self._title = title
            self.query_one("#process-title", Label).update(title)
        if rows == self._rows:
            return
        self._rows = rows
        table = self.query_one("#process-table", DataTable)
        table.clear()
        for row in rows or ():
            table.add_row(*row, key=row[0])


class LiveView(Vertical):
    """Cards are built on the first poll, when the number of GPUs is known."""

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="cards-scroll"):
            yield Label("waiting for the first poll…", id="cards-waiting")
            yield Grid(id="cards")
        yield ProcessTable(id="processes")

    @property
    def cards(self) -> list[GpuCard]:
        return list(self.query(GpuCard))

    async def show(
        self,
        gpus: Sequence[GpuSample],
        assessments: Mapping[int, GpuAssessment],
        series: Mapping[int, Mapping[str, Sequence[float]]],
        selected: int | None,
    ) -> None:
        grid = self.query_one("#cards", Grid)
        known = {card.index: card for card in self.cards}
        new = [GpuCard(s.index, s.name) for s in gpus if s.index not in known]
        if new:
            self.query_one("#cards-waiting").display = False
            await grid.mount_all(new)
            known.update({card.index: card for card in new})
            self._reflow()
        for sample in gpus:
            card = known[sample.index]
            card.show(sample, assessments.get(sample.index), series.get(sample.index, {}))
            card.set_class(sample.index == selected, "-selected")
        chosen = next((s for s in gpus if s.index == selected), None)
        self.query_one(ProcessTable).show(chosen)

    def on_resize(self) -> None:
        self._reflow()

    def _reflow(self) -> None:
        grid = self.query_one("#cards", Grid)
        grid.styles.grid_size_columns = grid_columns(self.size.width, len(self.cards))
