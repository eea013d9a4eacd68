"""The gpuwatch TUI: live GPUs, the roofline, cost, and what-if planning, all from one session.

Data flow: the session's listener (poll thread) posts a PollArrived message; the handler runs on the UI
thread and only reads what the message carries plus the in-memory History. Nothing here calls NVML.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.lazy import Lazy
from textual.widgets import Footer, Header, Static, TabbedContent, TabPane

from gpuwatch.live.assessment import BoxAssessment, GpuAssessment
from gpuwatch.model.catalog import GpuSpec, get_gpu
from gpuwatch.model.errors import UnknownIdError
from gpuwatch.model.whatif import PlanInputs
from gpuwatch.options.plan_command import plan_command
from gpuwatch.telemetry.sample import GpuSample, Snapshot
from gpuwatch.tui.compare_pane import ComparePane
from gpuwatch.tui.cost_pane import CostPane
from gpuwatch.tui.feed import Feed, PollArrived
from gpuwatch.tui.gpu_card import GpuCard, short_name
from gpuwatch.tui.live_view import LiveView
from gpuwatch.tui.palette import PanesAndGpus
from gpuwatch.tui.plan_pane import PlanPane
from gpuwatch.tui.roofline_pane import RooflinePane
from gpuwatch.tui.throttle import badges_for

#: pane id -> tab title; the number keys follow this order
PANES: dict[str, str] = {
    "live": "Live",
    "roofline": "Roofline",
    "cost": "Cost",
    "plan": "Plan",
    "compare": "Compare",
}

#: panes mounted after the first frame
_LAZY_PANES = ("roofline", "cost", "plan")
#: sparkline -> History reading (bandwidth is kept here, from the assessments)
_HISTORY_READINGS = {"temperature": "temperature_c", "power": "power_w", "clock": "sm_clock_hz"}
#: points kept for sparklines and the roofline trail
SPARK_POINTS = 120
TRAIL_POINTS = 60


class GpuwatchApp(App[None]):
    CSS_PATH = "gpuwatch.tcss"
    TITLE = "gpuwatch"
    COMMANDS = App.COMMANDS | {PanesAndGpus}
    # Textual declares these as lists on App; the screen gets the class for the current size
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]  # noqa: RUF012
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]  # noqa: RUF012
    BINDINGS: ClassVar[list[BindingType]] = [
        *(
            Binding(str(n), f"show_pane('{pane}')", title, key_display=str(n))
            for n, (pane, title) in enumerate(PANES.items(), start=1)
        ),
        Binding("[", "cycle_gpu(-1)", "Prev GPU"),
        Binding("]", "cycle_gpu(1)", "Next GPU"),
        Binding("y", "copy_plan", "Copy plan cmd"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
        Binding("escape", "leave_field", "Leave field", show=False),
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
        self.plan_inputs = plan_inputs or PlanInputs()
        self.snapshot: Snapshot | None = None
        self.assessment: BoxAssessment | None = None
        self.selected_gpu: int | None = None
        self._throttled: dict[int, tuple[str, ...]] = {}
        self._bandwidth: dict[int, deque[float]] = {}
        self._trail: dict[int, deque[tuple[float, float]]] = {}
        self._specs: dict[int, GpuSpec | None] = {}
        self.sub_title = feed.source.description

    # --- layout ---------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        if self.fallback_reason is not None:
            yield Static(self.fallback_reason, id="banner")
        with TabbedContent(id="panes", initial="live"):
            for n, (pane_id, title) in enumerate(PANES.items(), start=1):
                with TabPane(f"{n} {title}", id=pane_id):
                    # hidden panes that are costly to build (the planner's form most of all) mount after the
                    # first frame; until then a poll leaves them be (see _refresh_panes)
                    pane = self._pane(pane_id)
                    yield Lazy(pane) if pane_id in _LAZY_PANES else pane
        yield Footer()

    def _pane(self, pane_id: str) -> LiveView | RooflinePane | CostPane | PlanPane | ComparePane:
        if pane_id == "live":
            return LiveView(id="live-view")
        if pane_id == "roofline":
            return RooflinePane(id="roofline-pane")
        if pane_id == "cost":
            return CostPane(id="cost-pane")
        if pane_id == "plan":
            return PlanPane(self.plan_inputs, id="plan-pane")
        return ComparePane(gpu_prices=self.feed.config.gpu_prices, id="compare-pane")

    def on_mount(self) -> None:
        self.feed.add_listener(self._from_poll_thread)
        self.feed.start()
        latest = self.feed.latest()
        if latest is not None:
            self.post_message(PollArrived(*latest))
        if self.fallback_reason is not None:
            self.notify(
                self.fallback_reason, title="No GPU driver: simulated data", severity="error", timeout=15
            )

    def on_unmount(self) -> None:
        self.feed.stop()

    def _from_poll_thread(self, snapshot: Snapshot, assessment: BoxAssessment) -> None:
        """Runs on the session's thread: hand over and return at once."""
        self.post_message(PollArrived(snapshot, assessment))

    # --- data -------------------------------------------------------------------------------------

    async def on_poll_arrived(self, message: PollArrived) -> None:
        snapshot, box = message.snapshot, message.assessment
        self.snapshot, self.assessment = snapshot, box
        by_index = {g.index: g for g in box.gpus}
        for sample in snapshot.gpus:
            self._remember(sample, by_index.get(sample.index))
        if self.selected_gpu is None or all(s.index != self.selected_gpu for s in snapshot.gpus):
            self.selected_gpu = snapshot.gpus[0].index if snapshot.gpus else None
        self._notify_throttling(snapshot.gpus)
        self._notify_alerts(box)
        await self._refresh_panes()

    def _remember(self, sample: GpuSample, assessment: GpuAssessment | None) -> None:
        i = sample.index
        if i not in self._specs:
            self._specs[i] = self._spec_for(sample, assessment)
        roof = assessment.roofline if assessment is not None else None
        bandwidth = self._bandwidth.setdefault(i, deque(maxlen=SPARK_POINTS))
        trail = self._trail.setdefault(i, deque(maxlen=TRAIL_POINTS))
        if roof is not None and roof.attained_bandwidth_bytes_s is not None:
            bandwidth.append(roof.attained_bandwidth_bytes_s)
        if roof is not None and roof.arithmetic_intensity_flop_per_byte and roof.attained_flops:
            trail.append((roof.arithmetic_intensity_flop_per_byte, roof.attained_flops))

    @staticmethod
    def _spec_for(sample: GpuSample, assessment: GpuAssessment | None) -> GpuSpec | None:
        for key in (assessment.gpu_id if assessment else None, sample.catalog_id):
            if key:
                try:
                    return get_gpu(key)
                except UnknownIdError:
                    continue
        return None

    def _series(self, index: int) -> dict[str, list[float]]:
        history = self.feed.source.history
        out: dict[str, list[float]] = {}
        for name, reading in _HISTORY_READINGS.items():
            try:
                _, values = history.series(index, reading)
            except (KeyError, IndexError):
                values = np.array([])
            values = values[-SPARK_POINTS:]
            out[name] = [float(v) for v in values[np.isfinite(values)]]
        out["bandwidth"] = list(self._bandwidth.get(index, ()))
        return out

    def _notify_throttling(self, gpus: Sequence[GpuSample]) -> None:
        """A toast when a card starts or stops being held back (badges show it while it lasts)."""
        for sample in gpus:
            badges = badges_for(sample.clock_event_reasons) if not sample.lost else []
            now = tuple(b.label for b in badges)
            before = self._throttled.get(sample.index, ())
            self._throttled[sample.index] = now
            name = f"GPU {sample.index} {short_name(sample.name)}"
            if now and not before:
                self.notify(
                    f"{name} is throttling: {', '.join(now)}",
                    title="Throttling started",
                    severity="error" if badges[0].severity == "critical" else "warning",
                )
            elif before and not now:
                self.notify(
                    f"{name} is no longer throttled (was {', '.join(before)})", title="Throttling ended"
                )

    def _notify_alerts(self, box: BoxAssessment) -> None:
        for alert in box.alerts:
            if alert.kind in ("throttle_started", "throttle_ended"):
                continue  # the badges' own transitions above say this
            severity = {"critical": "error", "warning": "warning"}.get(alert.severity, "information")
            self.notify(alert.message, title=alert.kind.replace("_", " "), severity=severity)  # type: ignore[arg-type]

    async def _refresh_panes(self) -> None:
        """Redraw the pane on screen; the others catch up when they are shown (see ``_pane_changed``), so a
        poll costs one pane's repaint, not five."""
        if self.snapshot is None:
            return
        box = self.assessment
        by_index = {g.index: g for g in box.gpus} if box is not None else {}
        gpus = self.snapshot.gpus
        active = self.query_one(TabbedContent).active
        if active == "live":
            await self.query_one(LiveView).show(
                gpus, by_index, {s.index: self._series(s.index) for s in gpus}, self.selected_gpu
            )
            return
        sample = next((s for s in gpus if s.index == self.selected_gpu), None)
        gpu = by_index.get(self.selected_gpu) if self.selected_gpu is not None else None
        if active in _LAZY_PANES and not self.query(f"#{active}-pane"):
            return  # not mounted yet: the next poll fills it
        if active == "roofline":
            spec = self._specs.get(self.selected_gpu) if self.selected_gpu is not None else None
            trail = list(self._trail.get(self.selected_gpu, ())) if self.selected_gpu is not None else []
            self.query_one(RooflinePane).show(sample, gpu, spec, trail)
        elif active == "cost":
            self.query_one(CostPane).show(sample, gpu, box)

    # --- selection and panes ------------------------------------------------------------------------

    def select_gpu(self, index: int) -> None:
        self.selected_gpu = index
        self.call_later(self._refresh_panes)

    @on(GpuCard.Selected)
    def _card_selected(self, event: GpuCard.Selected) -> None:
        self.select_gpu(event.index)

    def action_cycle_gpu(self, step: int) -> None:
        if self.snapshot is None or not self.snapshot.gpus:
            return
        indices = [s.index for s in self.snapshot.gpus]
        at = indices.index(self.selected_gpu) if self.selected_gpu in indices else 0
        self.select_gpu(indices[(at + step) % len(indices)])

    def show_pane(self, pane_id: str) -> None:
        # focus left inside the old pane would pull TabbedContent straight back to it
        self.set_focus(None)
        self.query_one(TabbedContent).active = pane_id

    def action_leave_field(self) -> None:
        """Escape from a form field, so that the number keys switch panes again."""
        self.set_focus(None)

    def action_show_pane(self, pane_id: str) -> None:
        self.show_pane(pane_id)

    def palette_panes(self) -> list[tuple[str, str]]:
        return list(PANES.items())

    def palette_gpus(self) -> list[tuple[int, str]]:
        return [(s.index, s.name) for s in self.snapshot.gpus] if self.snapshot is not None else []

    def action_help(self) -> None:
        # imported here: it pulls in Markdown, which the first frame should not wait for
        from gpuwatch.tui.help_screen import HelpScreen

        self.push_screen(HelpScreen())

    # --- planning ----------------------------------------------------------------------------------

    @on(PlanPane.InputsChanged)
    def _plan_changed(self, event: PlanPane.InputsChanged) -> None:
        self.plan_inputs = event.inputs
        self._refresh_compare()

    def _refresh_compare(self) -> None:
        """The comparison models every catalog GPU (~0.3 s): only for the pane on screen, so neither start-up
        nor a keystroke in the plan form waits on it; it catches up when shown."""
        if self.query_one(TabbedContent).active != "compare":
            return
        pane = self.query_one(ComparePane)
        if pane.inputs != self.plan_inputs:
            pane.show(self.plan_inputs)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "copy_plan":
            panes = self.query(TabbedContent)
            return bool(panes) and panes.first().active in ("plan", "compare")
        return True

    @on(TabbedContent.TabActivated)
    async def _pane_changed(self) -> None:
        self.refresh_bindings()
        self._refresh_compare()
        await self._refresh_panes()

    def action_copy_plan(self) -> None:
        command = plan_command(self.plan_inputs)
        self.copy_to_clipboard(command)
        self.notify(command, title="Copied to the clipboard")
