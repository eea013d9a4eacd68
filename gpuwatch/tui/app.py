"""The gpuwatch TUI: live GPUs, the roofline, cost, and what-if planning, all from one session.

Data flow: the session's listener (poll thread) posts a PollArrived message (a newer one replaces one
still queued) and, when the poll raised alerts, an AlertsRaised message; the handlers run on the UI thread
and only read what the messages carry plus the in-memory History. Nothing here calls NVML, and nothing
here decides what is an alert: ``gpuwatch.live.alerts`` does, once, for every face.

The planning panes and the model code they import load when each is first shown (the wide layout's
Plan pane right after the first frame), so that the GPUs show first and a session that only watches
them never holds the planner.
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypeVar

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container, Vertical
from textual.widget import Widget
from textual.widgets import Header, Input, Label, Select, Static

from gpuwatch.live.alerts import summarise
from gpuwatch.live.assessment import BoxAssessment, GpuAssessment
from gpuwatch.telemetry.sample import GpuSample, Snapshot
from gpuwatch.tui.card_grid import CardGrid
from gpuwatch.tui.feed import AlertsRaised, Feed, PollArrived
from gpuwatch.tui.first_frame import WAITING, attached_devices
from gpuwatch.tui.gpu_card import CardReading
from gpuwatch.tui.history_span import SPARK_POINTS, TRAIL_POINTS
from gpuwatch.tui.key_bar import KeyBar
from gpuwatch.tui.live_view import LiveView
from gpuwatch.tui.palette import PanesAndGpus
from gpuwatch.tui.pane_tabs import PaneTabs
from gpuwatch.tui.status_bar import StatusBar, engine_states, source_line, source_state

if TYPE_CHECKING:
    from gpuwatch.model.catalog import GpuSpec
    from gpuwatch.model.plan_inputs import PlanInputs
    from gpuwatch.tui.plan_pane import PlanPane

#: pane id -> tab title; the number keys (and F1-F6, alt+1-6 from anywhere) follow this order
PANES: dict[str, str] = {
    "live": "Live",
    "roofline": "Roofline",
    "cost": "Cost",
    "plan": "Plan",
    "compare": "Compare",
    "power": "Power",
}
#: sparkline -> History reading (bandwidth is kept here, from the assessments)
_HISTORY_READINGS = {"temperature": "temperature_c", "power": "power_w", "clock": "sm_clock_hz"}
#: at this many columns the live view and the planning panes sit side by side
WIDE_COLUMNS = 200
#: seconds a first Ctrl+C waits for the second
CTRL_C_WINDOW_S = 3.0
_TOAST_SEVERITY = {"critical": "error", "warning": "warning"}
_W = TypeVar("_W", bound=Widget)


def _pane_bindings() -> list[Binding]:
    bindings = []
    for n, (pane, title) in enumerate(PANES.items(), start=1):
        # digits type into number fields, so they are not priority; F-keys and alt+digit work from anywhere
        bindings.append(Binding(str(n), f"show_pane('{pane}')", title, show=False))
        keys = f"alt+{n}" if n == 1 else f"f{n},alt+{n}"
        bindings.append(Binding(keys, f"show_pane('{pane}')", title, show=False, priority=True))
    return bindings


class GpuwatchApp(App[None]):
    CSS_PATH = "gpuwatch.tcss"
    TITLE = "gpuwatch"
    COMMANDS = App.COMMANDS | {PanesAndGpus}
    # Textual declares these as lists on App; the screen gets the class for the current size
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]  # noqa: RUF012
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]  # noqa: RUF012
    BINDINGS: ClassVar[list[BindingType]] = [
        # help and quit first: a narrow key bar cuts from the right
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "ctrl_c", "Quit", show=False, priority=True),
        Binding("escape", "leave_field", "Leave field", key_display="esc"),
        # a form field types q and ?: these reach help and quit from inside one (shown only there)
        Binding("f12", "help_from_field", "Help", key_display="F12", priority=True),
        Binding("f10", "quit_from_field", "Quit", key_display="F10", priority=True),
        # one key bar entry for the pane keys; F1 itself is bound here
        Binding("f1", "show_pane('live')", "Panes", key_display=f"F1-F{len(PANES)}", priority=True),
        Binding("[", "cycle_gpu(-1)", "Prev GPU"),
        Binding("]", "cycle_gpu(1)", "Next GPU"),
        Binding("y", "copy_plan", "Copy plan cmd"),
        *_pane_bindings(),
    ]

    def __init__(
        self,
        feed: Feed,
        *,
        fallback_reason: str | None = None,
        plan_inputs: PlanInputs | None = None,
    ) -> None:
        super().__init__()
        self.feed = feed
        self.fallback_reason = fallback_reason
        self._plan_inputs = plan_inputs
        self.snapshot: Snapshot | None = None
        self.assessment: BoxAssessment | None = None
        self.selected_gpu: int | None = None
        #: the alert notices shown so far (newest last): what the toasts said, for the user and the tests
        self.notices: list[str] = []
        self._bandwidth: dict[int, deque[float]] = {}
        self._trail: dict[int, deque[tuple[float, float]]] = {}
        self._specs: dict[int, GpuSpec | None] = {}
        self._panes_mounted = False  # the first frame is drawn: the planning panes may mount
        self._mounted: set[str] = set()  # the planning panes mounted so far (each on first sight)
        self._mounting: set[str] = set()
        self._active_pane = "live"
        #: set once the first frame is drawn and the pane on screen is in (tests wait on it before quitting)
        self.panes_ready = asyncio.Event()
        self._ctrl_c_at: float | None = None
        self._found: dict[str, Widget] = {}
        self._release_polls: Callable[[], None] | None = None
        #: set by compose, which Textual runs once its driver holds the terminal (and will leave it at the
        #: end): until then the CLI's first frame (see first_frame) is the CLI's to take down
        self.took_terminal = False
        self.sub_title = feed.source.description

    @property
    def plan_inputs(self) -> PlanInputs:
        if self._plan_inputs is None:
            from gpuwatch.model.plan_inputs import PlanInputs

            self._plan_inputs = PlanInputs()
        return self._plan_inputs

    @plan_inputs.setter
    def plan_inputs(self, inputs: PlanInputs) -> None:
        self._plan_inputs = inputs

    # --- layout ---------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        self.took_terminal = True
        yield Header()
        if self.fallback_reason is not None:
            yield Static(self.fallback_reason, id="banner")
        # what the source says about itself: a replay that stopped on a bad record, or reached its end
        yield Static(id="source-status")
        # the NVML child's trouble (failed, restarting) and each engine's scrape state, when there is any
        yield StatusBar(id="status-bar")
        with Container(id="main", classes="-live"):
            # the live view sits beside the panes (so that a wide terminal shows it next to a planning
            # pane); the planning panes mount in #pane-body when first shown (see _ensure_pane)
            with Vertical(id="panes"):
                yield PaneTabs(PANES, id="pane-tabs")
                yield Container(id="pane-body")
            # the source starts here, so that the cards are composed named (see LiveView); an NVML poller
            # holds its first poll until the first frame is drawn (on_mount)
            self.feed.add_listener(self._from_poll_thread)
            hold = getattr(self.feed.source, "hold_first_poll", None)
            self._release_polls = hold() if callable(hold) else None
            self.feed.start()
            yield LiveView(id="live-view", devices=attached_devices(self.feed), size_hint=self._live_size())
        yield KeyBar(id="key-bar")

    def _live_size(self) -> tuple[int, int]:
        """The live view's size in this terminal: all of it less the header, the pane row and the key bar
        (a line each), or the left half beside a planning pane (a wrong guess costs one restyle, not a
        wrong layout)."""
        width, height = self.size
        return (width // 2 - 1, height - 2) if width >= WIDE_COLUMNS else (width, height - 3)

    def _find(self, selector: str, expect: type[_W]) -> _W | None:
        """A widget by selector, looked up once (None while it is not there, as when the app shuts down):
        an app-wide query walks every widget, the hidden panes' too, and a few per poll and per second
        were a third of the TUI's CPU."""
        widget = self._found.get(selector)
        if widget is None or not widget.is_attached:
            hits = self.query(selector)
            if not hits:
                return None
            widget = self._found[selector] = hits.first(expect)
        return widget if isinstance(widget, expect) else None

    @property
    def active_pane(self) -> str:
        return self._active_pane

    @property
    def wide(self) -> bool:
        return self.size.width >= WIDE_COLUMNS

    async def _mount_panes(self) -> None:
        """After the first frame: the pane on screen (Plan, in the wide layout), then ``panes_ready``."""
        if self._panes_mounted or not self.is_running:
            return
        self._panes_mounted = True
        self._apply_layout()
        await self._ensure_pane(self.active_pane)
        # the program started with the cyclic collector off (gpuwatch.__main__): what start-up left in
        # cycles is collected now, after the first frame; what exists now (widgets, styles, catalogs) lives
        # as long as the app: frozen, the collector's full passes stop walking those objects (refcounting
        # still frees what dies among them)
        if not gc.isenabled():
            gc.collect()
        gc.freeze()
        gc.enable()
        self.panes_ready.set()
        await self._refresh_panes()

    async def _ensure_pane(self, pane_id: str) -> None:
        """Mount a planning pane, with the model code it imports, the first time it is shown: a pane never
        looked at costs neither start-up time nor memory (the five are ~600 widgets and ~4 MiB)."""
        if pane_id in ("live", "") or pane_id in self._mounting or not self._panes_mounted:
            return
        self._mounting.add(pane_id)
        pane: Widget
        if pane_id == "roofline":
            from gpuwatch.tui.roofline_pane import RooflinePane

            pane = RooflinePane(id="roofline-pane")
        elif pane_id == "cost":
            from gpuwatch.tui.cost_pane import CostPane

            pane = CostPane(id="cost-pane")
        elif pane_id == "plan":
            from gpuwatch.tui.plan_pane import PlanPane

            pane = PlanPane(self.plan_inputs, id="plan-pane")
        elif pane_id == "compare":
            from gpuwatch.tui.compare_pane import ComparePane

            pane = ComparePane(gpu_prices=self.feed.config.gpu_prices, id="compare-pane")
        else:
            from gpuwatch.tui.power_pane import PowerPane

            pane = PowerPane(id="power-pane")
        panes = self._find("#pane-body", Container)
        if panes is None or not self.is_running:
            return  # quitting: a pane mounting now would fail inside its own widgets
        pane.display = pane_id == self.active_pane
        await panes.mount(pane)
        self._mounted.add(pane_id)

    async def on_mount(self) -> None:
        if self._release_polls is not None:
            self.call_after_refresh(self._release_polls)
        latest = self.feed.latest()
        if latest is not None:  # polled before the listener was there
            self.post_message(PollArrived(*latest))
        # the other panes mount after the first frame (a quit waits for them: the mount holds the loop)
        self.call_after_refresh(self._mount_panes)
        if self.fallback_reason is not None:
            self.notify(
                self.fallback_reason, title="No GPU driver: simulated data", severity="error", timeout=15
            )
        self._apply_layout()
        if hasattr(self.feed.source, "finished"):  # a replay: say when it stops
            self.set_interval(1.0, self._check_source)
        self._check_status()
        self.set_interval(1.0, self._check_status)

    def _check_status(self) -> None:
        """The source's phase and the engines' states, once a second (both only read what their threads
        left). Until the first poll the live view says why none came, when the source knows."""
        bar = self._find("#status-bar", StatusBar)
        if bar is None:
            return  # shutting down
        state = source_state(self.feed)
        bar.show(state, engine_states(self.feed))
        if state is None:
            return
        waiting = self._find("#cards-waiting", Label)
        if waiting is not None and waiting.display:
            line = source_line(state, time.time()) or WAITING
            if str(waiting.content) != line:
                waiting.update(line)

    def _check_source(self) -> None:
        """A replay that stops (a torn or corrupt record, or the end of the file) says so on screen, with
        the message the recording code gives (file and byte position), instead of freezing silently."""
        source = self.feed.source
        error = getattr(source, "error", None)
        played = getattr(source, "played", None)
        damaged = [s for s in getattr(source, "statuses", ()) if s.kind == "damaged"]
        skipped = ""
        if damaged:  # a damaged stretch is skipped and playback goes on: say where, and keep saying it
            more = f" (+{len(damaged) - 1} more)" if len(damaged) > 1 else ""
            skipped = f"; skipped a damaged stretch{more}: {damaged[0].message}"
        if error:
            text, kind = f"REPLAY STOPPED: {error}", "-error"
        elif getattr(source, "finished", False):
            text = f"REPLAY ENDED: the recording's last snapshot is shown ({played} played){skipped}"
            kind = "-error" if damaged else "-ended"
        elif damaged:
            text, kind = f"REPLAY DAMAGED{skipped}", "-error"
        else:
            return
        status = self._find("#source-status", Static)
        if status is None:
            return  # shutting down
        if str(status.content) != text:
            status.update(text)
            status.set_classes(kind)
            self.toast(text, title="replay", severity="error" if error else "information")

    def on_unmount(self) -> None:
        self.feed.stop()

    def on_resize(self) -> None:
        self._apply_layout()

    def _apply_layout(self) -> None:
        """Narrow: the live view or one pane. Wide: the live view beside a planning pane (Plan while
        Live is chosen)."""
        main = self._find("#main", Container)
        if main is None:
            return  # shutting down
        wide = self.wide
        main.set_class(wide, "-side-by-side")
        if wide and self.active_pane == "live" and self._panes_mounted:
            self._choose("plan")
        main.set_class(not wide and self.active_pane == "live", "-live")

    def _from_poll_thread(self, snapshot: Snapshot, assessment: BoxAssessment) -> None:
        """Runs on the session's thread: hand over and return at once."""
        self.post_message(PollArrived(snapshot, assessment))
        if assessment.alerts:
            self.post_message(AlertsRaised(assessment.alerts))

    # --- data -------------------------------------------------------------------------------------

    async def on_poll_arrived(self, message: PollArrived) -> None:
        snapshot, box = message.snapshot, message.assessment
        self.snapshot, self.assessment = snapshot, box
        by_index = {g.index: g for g in box.gpus}
        for sample in snapshot.gpus:
            self._remember(sample, by_index.get(sample.index))
        if self.selected_gpu is None or all(s.index != self.selected_gpu for s in snapshot.gpus):
            self.selected_gpu = snapshot.gpus[0].index if snapshot.gpus else None
        await self._refresh_panes()

    def on_alerts_raised(self, message: AlertsRaised) -> None:
        """One toast per kind of alert a poll raised: eight GPUs starting to throttle are one notice."""
        for summary in summarise(message.alerts):
            self.toast(
                summary.message,
                title=summary.kind.replace("_", " "),
                severity=_TOAST_SEVERITY.get(summary.severity, "information"),
            )

    def _remember(self, sample: GpuSample, assessment: GpuAssessment | None) -> None:
        index = sample.index
        if index not in self._specs:
            self._specs[index] = self._spec_for(sample, assessment)
        roof = assessment.roofline if assessment is not None else None
        bandwidth = self._bandwidth.setdefault(index, deque(maxlen=SPARK_POINTS))
        trail = self._trail.setdefault(index, deque(maxlen=TRAIL_POINTS))
        if roof is not None and roof.attained_bandwidth_bytes_s is not None:
            bandwidth.append(roof.attained_bandwidth_bytes_s)
        if roof is not None and roof.arithmetic_intensity_flop_per_byte and roof.attained_flops:
            trail.append((roof.arithmetic_intensity_flop_per_byte, roof.attained_flops))

    @staticmethod
    def _spec_for(sample: GpuSample, assessment: GpuAssessment | None) -> GpuSpec | None:
        """The card's catalog entry, as telemetry identified it once (``GpuSample.catalog_id``)."""
        from gpuwatch.model.catalog import get_gpu
        from gpuwatch.model.errors import UnknownIdError

        for key in (assessment.gpu_id if assessment else None, sample.catalog_id):
            if key:
                try:
                    return get_gpu(key)
                except UnknownIdError:
                    continue
        return None

    def _series(self, index: int) -> dict[str, tuple[float, ...]]:
        history = self.feed.source.history
        out: dict[str, tuple[float, ...]] = {}
        for name, reading in _HISTORY_READINGS.items():
            try:
                out[name] = tuple(history.recent(index, reading, SPARK_POINTS))
            except (KeyError, IndexError):
                out[name] = ()
        out["bandwidth"] = tuple(self._bandwidth.get(index, ()))
        return out

    async def _refresh_panes(self) -> None:
        """Redraw what is on screen; the others catch up when they are shown (see ``_pane_changed``), so a
        poll costs the visible panes' repaint, not five."""
        main = self._find("#main", Container)
        if self.snapshot is None or not self.is_running or main is None:
            return
        box = self.assessment
        by_index = {g.index: g for g in box.gpus} if box is not None else {}
        gpus = self.snapshot.gpus
        active = self.active_pane
        live = self._find("#live-view", LiveView)
        if live is not None and (main.has_class("-live") or main.has_class("-side-by-side")):
            readings = {s.index: CardReading(s, by_index.get(s.index), self._series(s.index)) for s in gpus}
            live.show(readings, self.selected_gpu)
        if active not in self._mounted:
            return
        sample = next((s for s in gpus if s.index == self.selected_gpu), None)
        gpu = by_index.get(self.selected_gpu) if self.selected_gpu is not None else None
        if active == "roofline":
            from gpuwatch.tui.roofline_pane import RooflinePane

            spec = self._specs.get(self.selected_gpu) if self.selected_gpu is not None else None
            trail = list(self._trail.get(self.selected_gpu, ())) if self.selected_gpu is not None else []
            self.query_one(RooflinePane).show(sample, gpu, spec, trail)
        elif active == "cost":
            from gpuwatch.tui.cost_pane import CostPane

            if box is not None:  # the power-cap advice, solved for this poll now that it is on screen
                with_advice = getattr(getattr(self.feed, "assessor", None), "with_advice", None)
                if with_advice is not None:
                    box = with_advice(box)
                    gpu = next((g for g in box.gpus if g.index == self.selected_gpu), None)
            self.query_one(CostPane).show(sample, gpu, box)
        elif active == "power" and box is not None:
            from gpuwatch.tui.power_pane import PowerPane

            self.query_one(PowerPane).request(
                self.snapshot,
                box,
                self.feed.config,
                self._specs,
                {s.index: self._mean_power_w(s.index) for s in gpus},
            )

    def _mean_power_w(self, index: int) -> float | None:
        """The board power over the last polls (what the advice starts from, as the command's mean)."""
        from gpuwatch.tui.power_pane import POWER_MEAN_POLLS

        try:
            values = self.feed.source.history.recent(index, "power_w", POWER_MEAN_POLLS)
        except (KeyError, IndexError):
            return None
        return math.fsum(values) / len(values) if values else None

    # --- selection and panes ------------------------------------------------------------------------

    def select_gpu(self, index: int) -> None:
        self.selected_gpu = index
        self.call_later(self._refresh_panes)

    @on(CardGrid.Selected)
    def _card_selected(self, event: CardGrid.Selected) -> None:
        self.select_gpu(event.index)

    def action_cycle_gpu(self, step: int) -> None:
        if self.snapshot is None or not self.snapshot.gpus:
            return
        indices = [s.index for s in self.snapshot.gpus]
        at = indices.index(self.selected_gpu) if self.selected_gpu in indices else 0
        self.select_gpu(indices[(at + step) % len(indices)])

    def show_pane(self, pane_id: str) -> None:
        # focus left inside the old pane (a form field most of all) would keep typing into a hidden field
        self.set_focus(None)
        if pane_id == "live" and self.wide:
            grids = self.query(CardGrid)
            if grids:
                grids.first().focus()  # the live view is on screen already: go to it
            return
        self._choose(pane_id)

    def _choose(self, pane_id: str) -> None:
        """Make ``pane_id`` the chosen pane: its title marked now, the pane itself shown (and mounted, the
        first time) by ``_pane_changed`` right after."""
        if pane_id not in PANES or pane_id == self._active_pane:
            return
        self._active_pane = pane_id
        tabs = self._find("#pane-tabs", PaneTabs)
        if tabs is not None:
            tabs.active = pane_id
        self.call_later(self._pane_changed)

    def on_pane_tabs_chosen(self, message: PaneTabs.Chosen) -> None:
        self.show_pane(message.pane_id)

    def _in_field(self) -> bool:
        return isinstance(self.focused, Input | Select)

    def action_leave_field(self) -> None:
        """Escape from a form field, so that the number keys switch panes again (F1-F6 always do)."""
        self.set_focus(None)

    def action_help_from_field(self) -> None:
        self.action_help()

    def action_quit_from_field(self) -> None:
        self.exit()

    def action_show_pane(self, pane_id: str) -> None:
        self.show_pane(pane_id)

    def action_ctrl_c(self) -> None:
        """Ctrl+C asks once (a reflex press must not lose the session), and quits on the second press."""
        now = time.monotonic()
        if self._ctrl_c_at is not None and now - self._ctrl_c_at <= CTRL_C_WINDOW_S:
            self.exit()
            return
        self._ctrl_c_at = now
        self.toast(f"Press Ctrl+C again within {CTRL_C_WINDOW_S:.0f} s to quit (or q).", title="Quit?")

    def palette_panes(self) -> list[tuple[str, str]]:
        return list(PANES.items())

    def palette_gpus(self) -> list[tuple[int, str]]:
        return [(s.index, s.name) for s in self.snapshot.gpus] if self.snapshot is not None else []

    def action_help(self) -> None:
        # imported here: it pulls in Markdown, which the first frame should not wait for
        from gpuwatch.tui.help_screen import HelpScreen

        self.push_screen(HelpScreen())

    def deliver_screenshot(
        self, filename: str | None = None, path: str | None = None, time_format: str | None = None
    ) -> str | None:
        """The palette's Screenshot: into the download directory when there is one, else the current
        directory, and say where (Textual's own writes into a download directory that may not exist)."""
        from platformdirs import user_downloads_path

        if path is None:
            downloads = user_downloads_path()
            path = str(downloads if downloads.is_dir() else Path.cwd())
        try:
            saved = self.save_screenshot(filename, path, time_format)
        except OSError as exc:
            self.toast(f"could not save the screenshot in {path}: {exc.strerror or exc}", severity="error")
            return None
        self.toast(f"Screenshot saved to {saved}", title="Screenshot")
        return saved

    def toast(self, message: str, *, title: str = "", severity: str = "information") -> None:
        """A notification, kept in ``notices`` as well: what the toasts said, for the user and the tests."""
        self.notices.append(message)
        self.notify(message, title=title, severity=severity)  # type: ignore[arg-type]

    # --- planning ----------------------------------------------------------------------------------

    def on_plan_pane_inputs_changed(self, event: PlanPane.InputsChanged) -> None:
        self.plan_inputs = event.inputs
        self._refresh_compare()

    def _refresh_compare(self) -> None:
        """The comparison models every catalog GPU (~0.3 s): only for the pane on screen, so neither start-up
        nor a keystroke in the plan form waits on it; it catches up when shown."""
        if self.active_pane != "compare" or "compare" not in self._mounted:
            return
        from gpuwatch.tui.compare_pane import ComparePane

        pane = self.query_one(ComparePane)
        if pane.inputs != self.plan_inputs:
            pane.show(self.plan_inputs)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "copy_plan":
            return self.active_pane in ("plan", "compare")
        if action in ("leave_field", "help_from_field", "quit_from_field"):
            # in the key bar only while a field holds the keys
            return self._in_field()
        return True

    async def _pane_changed(self) -> None:
        active = self.active_pane
        panes = self._find("#pane-body", Container)
        for pane in panes.children if panes is not None else ():
            pane.display = pane.id == f"{active}-pane"
        await self._ensure_pane(active)
        self._apply_layout()
        self.refresh_bindings()
        self._refresh_compare()
        await self._refresh_panes()

    def action_copy_plan(self) -> None:
        from gpuwatch.options.plan_command import plan_command

        # the user catalog the session loaded, so that the pasted command knows the cards it adds
        command = plan_command(self.plan_inputs, gpus_file=self.feed.config.gpus_file)
        self.copy_to_clipboard(command)
        self.toast(command, title="Copied to the clipboard")


def create_app(feed: Feed, *, fallback_reason: str | None = None) -> GpuwatchApp:
    """The app the CLI runs and the tests drive, built one way: the Plan pane starts from the session's
    declared workload at its prices, so that it and the Cost pane price the same what-if alike."""
    from gpuwatch.live.config import plan_inputs

    assessor = getattr(feed, "assessor", None)
    if assessor is not None:
        # the power-cap advice (the assessment's costliest figure: ~30 caps solved per GPU) only shows on
        # the Cost pane: it is solved while that pane is on screen (see _refresh_panes), not every poll
        assessor.advise_every_poll = False
    return GpuwatchApp(feed, fallback_reason=fallback_reason, plan_inputs=plan_inputs(feed.config))
