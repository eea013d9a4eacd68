"""The GPU comparison pane: the plan's inference workload on every catalog GPU, sortable by any column."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import DataTable, Label, Static
from textual.worker import get_current_worker

from gpuwatch.model.errors import ModelInputError, UnknownIdError
from gpuwatch.model.whatif import ComparisonRow, PlanInputs, compare
from gpuwatch.tui.formatting import MISSING, percent, rate, usd

#: column key -> (title, sort key, best first?) ; missing values always sort last
COLUMNS: dict[str, tuple[str, Callable[[ComparisonRow], float | str | None], bool]] = {
    "gpu": ("GPU", lambda r: r.gpu_name, False),
    "fits": ("fits", lambda r: (0 if r.fits else 1) * 10_000 + (r.gpus_needed or 9_999), False),
    "tps": ("decode tok/s", lambda r: r.decode_tokens_per_s, True),
    "usd": ("own $/1M tok", lambda r: r.usd_per_mtok, False),
    "price": ("GPU price", lambda r: r.price_usd, False),
    "per_kusd": ("tok/s per $1k", lambda r: r.tokens_per_s_per_kusd, True),
    "cloud": ("rent $/1M tok", lambda r: r.cloud_usd_per_mtok, False),
}


def sort_rows(rows: list[ComparisonRow], column: str) -> list[ComparisonRow]:
    """Best first for the column (fastest, cheapest); rows without a value (no price) go last."""
    _, key, descending = COLUMNS[column]
    known = [r for r in rows if key(r) is not None]
    unknown = [r for r in rows if key(r) is None]
    return sorted(known, key=lambda r: key(r), reverse=descending) + unknown  # type: ignore[arg-type,return-value]


def _fits(row: ComparisonRow) -> str:
    if row.fits:
        return "yes"
    return f"no (needs {row.gpus_needed})" if row.gpus_needed else "no"


def _cells(row: ComparisonRow) -> tuple[str | Text, ...]:
    per_kusd = row.tokens_per_s_per_kusd
    price = f"{usd(row.price_usd, digits=0)} {row.price_source}" if row.price_usd is not None else "none"
    numbers = (
        rate(row.decode_tokens_per_s, "").strip(),
        usd(row.usd_per_mtok, digits=3),
        price,
        f"{per_kusd:.1f}" if per_kusd is not None and math.isfinite(per_kusd) else MISSING,
        usd(row.cloud_usd_per_mtok, digits=3),
    )
    return (row.gpu_name, _fits(row), *(Text(n, justify="right") for n in numbers))


def price_note(inputs: PlanInputs) -> Text:
    """What the two $/1M columns assume, on screen: a reader choosing hardware must not mistake a flat
    rental rate or a missing price for a real quote."""
    text = Text(style="dim")
    text.append("own $/1M", style="bold")
    text.append(
        ": each GPU bought at the price shown (list = catalog list price, config = your [gpu_prices], "
        f"entered = the Plan pane's GPU price for {inputs.gpu}), at TDP, "
        f"{percent(inputs.prices.utilisation_ratio)} busy. Datacenter GPUs have no list price: add them "
        "under [gpu_prices] in the config, or enter one in the Plan pane.\n"
    )
    text.append("rent $/1M", style="bold")
    cloud = inputs.prices.cloud_usd_per_gpu_h
    text.append(
        ": no cloud price entered in the Plan pane."
        if cloud is None
        else f": every GPU at the Plan pane's one cloud price, {usd(cloud)}/GPU-h; "
        "real rental rates differ by GPU."
    )
    return text


class ComparePane(Vertical):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("s", "next_sort", "Sort by next column", show=False)]

    def __init__(self, *, gpu_prices: Mapping[str, float] | None = None, id: str | None = None) -> None:
        super().__init__(id=id)
        self.gpu_prices = dict(gpu_prices or {})
        self.sort_column = "tps"
        self.rows: list[ComparisonRow] = []
        self.inputs: PlanInputs | None = None

    def compose(self) -> ComposeResult:
        yield Label("", id="compare-title", classes="pane-title")
        table: DataTable[str | Text] = DataTable(id="compare-table", cursor_type="row", zebra_stripes=True)
        for key, (title, _, _) in COLUMNS.items():
            table.add_column(title if key in ("gpu", "fits") else Text(title, justify="right"), key=key)
        yield table
        yield Static(id="compare-note", classes="pane-note")

    def on_show(self) -> None:
        """Focus the table when the pane comes on screen, so that `s` sorts at once (the binding is the
        pane's: with the focus left on the tab bar it would not be reached)."""
        self.query_one("#compare-table", DataTable).focus()

    def show(self, inputs: PlanInputs) -> None:
        """Compare ``inputs`` on every catalog GPU, in a worker thread (~50 ms of model per keystroke
        would otherwise stall the screen); a newer request makes an older answer moot."""
        self.inputs = inputs
        self.query_one("#compare-note", Static).update(price_note(inputs))
        self._compare(inputs)

    @work(thread=True, exclusive=True, group="compare")
    def _compare(self, inputs: PlanInputs) -> None:
        try:
            rows, error = compare(inputs, self.gpu_prices), None
        except (ModelInputError, UnknownIdError) as exc:
            rows, error = [], str(exc)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._compared, inputs, rows, error)

    def _compared(self, inputs: PlanInputs, rows: list[ComparisonRow], error: str | None) -> None:
        if inputs != self.inputs:  # the form moved on while this ran
            return
        self.rows = rows
        self._title(error)
        self._fill()

    def _title(self, error: str | None = None) -> None:
        title = self.query_one("#compare-title", Label)
        if error is not None or self.inputs is None:
            title.update(f"cannot compare: {error}")
            return
        i = self.inputs
        title.update(
            f"{i.model} · {i.quant} · batch {i.batch} · context {i.context_tokens} · "
            f"{i.count} GPU(s) each · sorted by {COLUMNS[self.sort_column][0]} (s: next column)"
        )

    def _fill(self) -> None:
        table = self.query_one("#compare-table", DataTable)
        table.clear()
        for row in sort_rows(self.rows, self.sort_column):
            table.add_row(*_cells(row), key=row.gpu_id)

    def action_next_sort(self) -> None:
        keys = list(COLUMNS)
        self._sort_by(keys[(keys.index(self.sort_column) + 1) % len(keys)])

    @on(DataTable.HeaderSelected)
    def _header(self, event: DataTable.HeaderSelected) -> None:
        self._sort_by(str(event.column_key.value))

    def _sort_by(self, column: str) -> None:
        """Re-sorting the rows already computed needs no model: at once, on the UI thread."""
        self.sort_column = column
        if self.inputs is not None and self.rows:
            self._title()
        self._fill()
