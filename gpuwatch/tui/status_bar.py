"""Two one-line status rows under the header: how the NVML source stands (a child that failed to start
or is restarting says why, instead of an endless "waiting for the first poll"), and each serving
engine's scrape state (up, or down with the reason), which is where tokens/s come from.

Both are read from the session once a second on the UI thread: ``state()`` and ``states()`` only read
what the source's and the watcher's threads left, so neither waits on NVML or the network.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

if TYPE_CHECKING:  # types only: the engines module (http.client) must not delay the first frame
    from gpuwatch.telemetry.engines import EngineState
    from gpuwatch.telemetry.source import SourceState

#: phases that mean no fresh snapshot is coming: shown until the source runs again
TROUBLE_PHASES = ("failed", "restarting")


def source_state(feed: object) -> SourceState | None:
    """The feed's source state, or None for a source that does not report one (a test's fake)."""
    state = getattr(getattr(feed, "source", None), "state", None)
    return state() if callable(state) else None


def engine_states(feed: object) -> tuple[EngineState, ...]:
    """Each engine's scrape state; none without ``--engine``."""
    states = getattr(getattr(feed, "engines", None), "states", None)
    return tuple(states()) if callable(states) else ()


def source_line(state: SourceState | None, now_s: float) -> str | None:
    """The one-line NVML state while it is in trouble, else None (nothing to say while it runs)."""
    if state is None or state.phase not in TROUBLE_PHASES:
        return None
    what = "NVML FAILED" if state.phase == "failed" else "NVML RESTARTING"
    since = f" (for {max(0.0, now_s - state.since_s):.0f} s)" if state.since_s else ""
    retry = "; retrying" if state.phase == "failed" else "; the last readings are kept, marked stale"
    return f"{what}{since}: {state.message or 'no reason given'}{retry}"


def engine_text(states: Sequence[EngineState], now_s: float) -> Text | None:
    """``engine URL up (vllm, 0.02 s)`` or ``engine URL DOWN: reason``, one per engine."""
    if not states:
        return None
    text = Text("tokens/s from ")
    for n, s in enumerate(states):
        if n:
            text.append(" · ")
        text.append(s.url)
        if s.up:
            took = f", {s.scrape_duration_s:.2f} s scrape" if s.scrape_duration_s is not None else ""
            text.append(f" up ({s.engine or 'engine'}{took})", style="green")
        else:
            last = (
                f"; last answer {now_s - s.last_success_s:.0f} s ago" if s.last_success_s is not None else ""
            )
            text.append(f" DOWN: {s.last_error or 'no usable reading'}{last}", style="bold red")
    return text


class StatusBar(Vertical):
    """Hidden while there is nothing to say; each row shows only when its source has something."""

    def compose(self) -> ComposeResult:
        yield Static(id="nvml-status")
        yield Static(id="engine-status")

    def on_mount(self) -> None:
        self._shown: tuple[str | None, Text | None] | None = None

    def show(self, state: SourceState | None, engines: Sequence[EngineState]) -> None:
        now = time.time()
        line, text = source_line(state, now), engine_text(engines, now)
        if (line, text) == self._shown:
            return
        self._shown = (line, text)
        nvml = self.query_one("#nvml-status", Static)
        nvml.update(line or "")
        nvml.display = line is not None
        eng = self.query_one("#engine-status", Static)
        eng.update(text or "")
        eng.display = text is not None
        self.display = line is not None or text is not None

    @property
    def nvml_text(self) -> str:
        return str(self.query_one("#nvml-status", Static).content) if self.display else ""

    @property
    def engine_line(self) -> str:
        content = self.query_one("#engine-status", Static).content
        return content.plain if isinstance(content, Text) else str(content)
