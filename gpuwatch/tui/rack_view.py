"""`gpuwatch --prometheus URL`: the whole rack on one screen, read from Prometheus alone.

One line per GPU across hosts; firing alerts beside the GPU they concern; a host whose exporter is down
is shown as DOWN (its GPUs by identity, with no readings). Sort keys: hottest, throttled, $/1M tokens,
lowest headroom. Enter on a line opens that host's cards, from the same remote series (gpuwatch never
connects to a host in this mode).

Every figure is the host exporter's, as of Prometheus' last scrape; the title says when the rack was
read and each host's card says how old its last NVML poll was. $/1M tokens and tokens/s carry the
exporter's provenance (``meas``/``mod``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Label, Static
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist
from textual.worker import get_current_worker

from gpuwatch.telemetry.prometheus_rack import SORTS, RackAlert, RackGpu, RackHost, RackSnapshot, sort_gpus
from gpuwatch.tui.formatting import MISSING, gib, percent, rate, usd
from gpuwatch.tui.gpu_names import short_name
from gpuwatch.tui.key_bar import KeyBar

SORT_ORDER = tuple(SORTS)
_PROVENANCE = {"measured": "meas", "modelled": "mod", "configured": "cfg", "estimated": "est"}
_SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}

COLUMNS = (
    ("host", "host", 22),
    ("gpu", "GPU", 4),
    ("name", "name", 16),
    ("temp", "temp", 6),
    ("power", "power", 11),
    ("sm", "SM", 5),
    ("memory", "memory GiB", 11),
    ("throttle", "throttle", 16),
    ("tokens", "tok/s", 12),
    ("cost", "$/1M tok", 12),
    ("headroom", "headroom", 8),
    ("age", "polled", 7),
    ("alerts", "alerts", 40),
)


def short(name: str | None) -> str:
    return short_name(name) if name else MISSING


def provenance(figure: str, prov: str | None) -> str:
    return f"{figure} {_PROVENANCE.get(prov or '', prov or '')}".rstrip() if figure != MISSING else figure


def alert_text(alerts: tuple[RackAlert, ...]) -> Text:
    out = Text()
    for i, alert in enumerate(alerts):
        if i:
            out.append(" ")
        out.append(f"▲{alert.name}", style=_SEVERITY_STYLE.get(alert.severity, ""))
    return out


def gpu_row(host: RackHost, g: RackGpu) -> tuple[str | Text, ...]:
    blank = ("",) * 8
    if not host.up:
        down = Text("DOWN", style="bold red")
        return (host.instance, g.gpu, short(g.name), down, *blank, alert_text(host.alerts))
    if host.stale:  # readings that stopped are not shown as if current
        stale = Text("STALE", style="bold yellow")
        return (host.instance, g.gpu, short(g.name), stale, *blank, alert_text((*g.alerts, *host.alerts)))
    if g.up == 0.0:
        lost = Text("LOST", style="bold red")
        return (host.instance, g.gpu, short(g.name), lost, *blank, alert_text(g.alerts))
    temp = f"{g.temperature_c:.0f}°C" if g.temperature_c is not None else MISSING
    if g.power_w is not None:
        power = f"{g.power_w:.0f}/{g.power_limit_w:.0f} W" if g.power_limit_w else f"{g.power_w:.0f} W"
    else:
        power = MISSING
    memory = (
        f"{gib(g.memory_used_bytes)}/{gib(g.memory_total_bytes)}"
        if g.memory_used_bytes is not None
        else MISSING
    )
    if g.throttled is None:
        throttle: str | Text = MISSING
    elif g.throttled:
        throttle = Text(",".join(g.throttle_reasons) or "yes", style="bold yellow")
    else:
        throttle = "—"
    return (
        host.instance,
        g.gpu,
        short(g.name),
        temp,
        power,
        percent(g.sm_busy_ratio),
        memory,
        throttle,
        provenance(rate(g.tokens_per_s, "").strip(), g.tokens_per_s_provenance),
        provenance(usd(g.usd_per_mtok), g.usd_per_mtok_provenance),
        percent(g.headroom_ratio),
        f"{host.poll_age_s:.0f} s ago" if host.poll_age_s is not None else MISSING,
        alert_text((*g.alerts, *host.alerts)),
    )


def rack_rows(snap: RackSnapshot, by: str) -> list[tuple[str, tuple[str | Text, ...]]]:
    """(row key, cells) for every GPU of every host, sorted; a down host without known GPUs gets one
    line of its own so that it is never missing from the screen."""
    hosts = {(h.instance, h.job): h for h in snap.hosts}
    rows = []
    for g in sort_gpus(snap.gpus, by):
        host = hosts[(g.instance, g.job)]
        rows.append((f"{g.instance}|{g.job}|{g.gpu}", gpu_row(host, g)))
    for h in snap.hosts:
        if not h.gpus:
            state = Text("DOWN", style="bold red") if not h.up else Text("no GPUs", style="dim")
            rows.append(
                (f"{h.instance}|{h.job}|", (h.instance, "", "", state, *[""] * 8, alert_text(h.alerts)))
            )
    return rows


def host_card(host: RackHost, g: RackGpu) -> Text:
    """One GPU of a host, every figure the rack reads, as text (names are never parsed as markup)."""
    t = Text()
    t.append(f"GPU {g.gpu}  {g.name or MISSING}\n", style="bold")
    t.append(f"{g.uuid}\n", style="dim")
    if not host.up:
        t.append("exporter DOWN: no readings (Prometheus' last scrape failed)", style="bold red")
        return t
    if g.up == 0.0:
        t.append("GPU LOST: the exporter reports it fell off the bus\n", style="bold red")

    def line(label: str, value: str, reading: str = "") -> None:
        t.append(f"{label:<14}", style="dim")
        if value.startswith(MISSING) and reading in g.unsupported:
            value = "not supported by this card"
        t.append(value + "\n")

    line(
        "temperature",
        f"{g.temperature_c:.0f} °C" if g.temperature_c is not None else MISSING,
        "temperature_c",
    )
    line(
        "to slowdown",
        f"{g.slowdown_margin_c:.0f} °C" if g.slowdown_margin_c is not None else MISSING,
        "slowdown_margin_c",
    )
    line("power", f"{g.power_w:.0f} W" if g.power_w is not None else MISSING, "power_w")
    line(
        "power limit", f"{g.power_limit_w:.0f} W" if g.power_limit_w is not None else MISSING, "power_limit_w"
    )
    line("SM busy", percent(g.sm_busy_ratio), "sm_busy_ratio")
    line("mem busy", percent(g.memory_controller_busy_ratio), "memory_controller_busy_ratio")
    line("SM clock", f"{g.sm_clock_hz / 1e6:.0f} MHz" if g.sm_clock_hz is not None else MISSING)
    memory = (
        f"{gib(g.memory_used_bytes)} / {gib(g.memory_total_bytes)} GiB" if g.memory_used_bytes else MISSING
    )
    line("memory", memory, "memory_used_bytes")
    line("fan", percent(g.fan_speed_ratio), "fan_speed_ratio")
    line(
        "P-state",
        f"P{g.performance_state:.0f}" if g.performance_state is not None else MISSING,
        "performance_state",
    )
    line("throttle", ", ".join(g.throttle_reasons) or ("none" if g.throttled == 0 else MISSING))
    line("bound", g.bound or MISSING)
    line("headroom", percent(g.headroom_ratio))
    line("tokens/s", provenance(rate(g.tokens_per_s), g.tokens_per_s_provenance))
    line("$/1M tokens", provenance(usd(g.usd_per_mtok), g.usd_per_mtok_provenance))
    line("XIDs", f"{g.xid_errors_total:.0f}" if g.xid_errors_total is not None else MISSING)
    for alert in g.alerts:
        t.append(f"▲ {alert.name} ({alert.severity})", style=_SEVERITY_STYLE.get(alert.severity, ""))
        if alert.detail:
            t.append("  " + " ".join(f"{k}={v}" for k, v in alert.detail), style="dim")
        t.append("\n")
    t.rstrip()
    return t


def host_title(host: RackHost) -> str:
    state = "exporter up" if host.up else "exporter DOWN"
    age = f", polled {host.poll_age_s:.0f} s before the query" if host.poll_age_s is not None else ""
    return f"{host.instance} ({host.job}): {state}{age}, {len(host.gpus)} GPU(s), from Prometheus"


class HostScreen(Screen[None]):
    """One host's cards, from the rack's remote series; follows each refresh."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "app.pop_screen", "back to the rack")
    ]

    def __init__(self, instance: str, job: str) -> None:
        super().__init__()
        self.instance = instance
        self.job = job

    def compose(self) -> ComposeResult:
        yield Label("", id="host-title")
        yield VerticalScroll(id="host-cards")
        yield KeyBar()

    def on_mount(self) -> None:
        app = self.app
        if isinstance(app, RackApp) and app.snapshot is not None:
            self.show(app.snapshot)

    def show(self, snap: RackSnapshot) -> None:
        host = next((h for h in snap.hosts if (h.instance, h.job) == (self.instance, self.job)), None)
        title = self.query_one("#host-title", Label)
        cards = self.query_one("#host-cards", VerticalScroll)
        if host is None:
            title.update(f"{self.instance}: no longer among Prometheus' targets")
            cards.remove_children()
            return
        title.update(host_title(host))
        texts = [host_card(host, g) for g in host.gpus]
        if host.alerts:
            texts.append(alert_text(host.alerts))
        existing = list(cards.query(Static))
        if len(existing) != len(texts):
            cards.remove_children()
            cards.mount_all(Static(t, classes="host-card") for t in texts)
        else:
            for widget, text in zip(existing, texts, strict=True):
                widget.update(text)


class RackApp(App[None]):
    CSS = """
    #rack-title { height: 1; padding: 0 1; text-style: bold; }
    #rack-status { height: 1; padding: 0 1; color: $text-muted; }
    #rack-table { height: 1fr; }
    #host-title { height: 1; padding: 0 1; text-style: bold; }
    .host-card { border: round $primary; padding: 0 1; margin: 0 0 1 0; height: auto; }
    """
    TITLE = "gpuwatch rack"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "cycle_sort", "sort"),
        Binding("1", "sort('hottest')", "hottest", show=False),
        Binding("2", "sort('throttled')", "throttled", show=False),
        Binding("3", "sort('cost')", "$/1M tok", show=False),
        Binding("4", "sort('headroom')", "headroom", show=False),
        Binding("r", "refresh_now", "refresh"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(
        self,
        read: Callable[[], RackSnapshot],
        *,
        source: str,
        interval_s: float = 5.0,
        sort: str = "hottest",
    ) -> None:
        super().__init__()
        self._read = read
        self.source = source
        self.interval_s = interval_s
        self.sort = sort
        self.snapshot: RackSnapshot | None = None
        self.refreshes = 0

    def compose(self) -> ComposeResult:
        yield Label(f"rack from {self.source}: reading…", id="rack-title")
        table: DataTable[str | Text] = DataTable(id="rack-table", cursor_type="row", zebra_stripes=True)
        for key, label, width in COLUMNS:
            table.add_column(label, key=key, width=width)
        yield table
        yield Label("Enter: the host's cards · s: sort · r: refresh · q: quit", id="rack-status")
        yield KeyBar()

    def on_mount(self) -> None:
        self.action_refresh_now()
        self.set_interval(self.interval_s, self.action_refresh_now)

    def action_refresh_now(self) -> None:
        self._refresh_worker()

    @work(thread=True, exclusive=True, group="rack")
    def _refresh_worker(self) -> None:
        snap = self._read()
        if not get_current_worker().is_cancelled:  # a newer refresh replaced this one: drop its answer
            self.call_from_thread(self.show, snap)

    def action_cycle_sort(self) -> None:
        self.action_sort(SORT_ORDER[(SORT_ORDER.index(self.sort) + 1) % len(SORT_ORDER)])

    def action_sort(self, by: str) -> None:
        self.sort = by
        if self.snapshot is not None:
            self.show(self.snapshot)

    def show(self, snap: RackSnapshot) -> None:
        self.snapshot = snap
        self.refreshes += 1
        title = self.query_one("#rack-title", Label)
        stamp = time.strftime("%H:%M:%S", time.localtime(snap.timestamp_s))
        if snap.error is not None:
            # never the last answer as if it were current: the table empties and the error says why
            title.update(Text(f"rack from {self.source} at {stamp}: {snap.error}", style="bold red"))
            self.query_one("#rack-table", DataTable).clear()
            return
        down = sum(1 for h in snap.hosts if not h.up)
        firing = sum(len(g.alerts) for g in snap.gpus) + sum(len(h.alerts) for h in snap.hosts)
        title.update(
            f"rack from {self.source} at {stamp}: {len(snap.hosts)} host(s), {len(snap.gpus)} GPU(s), "
            f"{down} down, {firing} alert(s) firing · sorted {SORTS[self.sort]}"
        )
        table = self.query_one("#rack-table", DataTable)
        cursor_key = None
        if table.row_count:
            with contextlib.suppress(CellDoesNotExist):  # the cursor is on no row
                cursor_key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        table.clear()
        for key, cells in rack_rows(snap, self.sort):
            table.add_row(*cells, key=key)
        if cursor_key is not None:
            with contextlib.suppress(RowDoesNotExist):  # that GPU is gone
                table.move_cursor(row=table.get_row_index(cursor_key))
        if isinstance(self.screen, HostScreen):
            self.screen.show(snap)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        key = event.row_key.value or ""
        instance, job, _gpu = key.split("|", 2)
        self.push_screen(HostScreen(instance, job))
