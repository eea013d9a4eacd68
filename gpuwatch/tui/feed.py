"""How data reaches the TUI: the session it reads, and the message that carries each poll to the UI thread.

The session's listener runs on the poll thread; it only posts a message (thread-safe in Textual), so a
redraw never waits on NVML and a slow or hung driver call never freezes the screen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from textual.message import Message

from gpuwatch.live.assessment import Alert, BoxAssessment
from gpuwatch.live.config import LiveConfig
from gpuwatch.telemetry.sample import Snapshot


class HistoryView(Protocol):
    """The part of ``gpuwatch.telemetry.history.History`` the sparklines read (plain floats: no numpy)."""

    def recent(self, gpu_index: int, reading: str, points: int) -> list[float]: ...


class SourceView(Protocol):
    """The part of ``gpuwatch.telemetry.source.SnapshotSource`` the TUI reads."""

    @property
    def description(self) -> str: ...

    @property
    def simulated(self) -> bool: ...

    @property
    def history(self) -> HistoryView: ...


class Feed(Protocol):
    """What the TUI needs of ``gpuwatch.live.session.LiveSession`` (tests pass a small fake)."""

    @property
    def source(self) -> SourceView: ...

    @property
    def config(self) -> LiveConfig: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def latest(self) -> tuple[Snapshot, BoxAssessment] | None: ...

    def add_listener(self, fn: Callable[[Snapshot, BoxAssessment], None]) -> None: ...


class PollArrived(Message):
    """One poll and its assessment, posted from the session's thread.

    A newer poll replaces one still queued (``can_replace``): after a slow frame the screen jumps to the
    latest readings instead of replaying stale ones. The alerts a poll raised travel separately
    (``AlertsRaised``), so that dropping a poll never drops an alert.
    """

    def __init__(self, snapshot: Snapshot, assessment: BoxAssessment) -> None:
        super().__init__()
        self.snapshot = snapshot
        self.assessment = assessment

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, PollArrived)


class AlertsRaised(Message):
    """The alerts one poll raised (computed once, in ``gpuwatch.live.alerts``); never coalesced."""

    def __init__(self, alerts: tuple[Alert, ...]) -> None:
        super().__init__()
        self.alerts = alerts
