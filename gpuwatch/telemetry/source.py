"""The one interface every consumer (live session, TUI, exporter, recorder) reads snapshots through."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from gpuwatch.telemetry.sample import Snapshot

if TYPE_CHECKING:  # the light NVML child keeps no history: it never imports the module
    from gpuwatch.telemetry.history import History

log = logging.getLogger(__name__)


Phase = Literal["starting", "running", "restarting", "failed"]


@dataclass(frozen=True)
class SourceState:
    """Where a source stands, for faces to show from the first second (one line, never a traceback).

    ``starting``: no snapshot yet (a slow driver keeps it here longer); ``running``: snapshots flow;
    ``restarting``: the NVML child died (``message`` names how, e.g. "killed by SIGSEGV");
    ``failed``: NVML cannot start (``message`` is the one-line reason; retried on a back-off).
    """

    phase: Phase
    message: str | None = None
    since_s: float = 0.0  # Unix seconds the phase began


@runtime_checkable
class SnapshotSource(Protocol):
    """Where snapshots come from: real NVML, the simulated NVML, or a replayed recording.

    ``latest`` never blocks (faces call it from their UI/scrape threads); listeners run on the
    source's own thread, so they must be quick and must not call back into the source's stop().
    """

    description: str  # e.g. "simulated NVML: 2x rtx4090 (scenario decode)"
    simulated: bool

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def latest(self) -> Snapshot | None: ...

    @property
    def history(self) -> History: ...

    def add_listener(self, fn: Callable[[Snapshot], None]) -> None: ...

    def state(self) -> SourceState: ...


class SnapshotFeed:
    """The half of a SnapshotSource every implementation shares: latest, history and listeners.

    Subclasses produce snapshots on their own thread and hand each to :meth:`_publish`.
    """

    def __init__(self, history: History | None = None, *, keep_history: bool = True) -> None:
        """``keep_history=False``: no History at all (the NVML child forwards, its parent keeps it)."""
        if history is None and keep_history:
            from gpuwatch.telemetry.history import History

            history = History()
        self._history: History | None = history
        self._latest: Snapshot | None = None
        self._listeners: list[Callable[[Snapshot], None]] = []

    @property
    def history(self) -> History:
        if self._history is None:
            raise RuntimeError("this source keeps no history")
        return self._history

    def _mark_gap(self, timestamp_s: float) -> None:
        if self._history is not None:
            self._history.mark_gap(timestamp_s)

    def state(self) -> SourceState:
        """In-process sources either have a snapshot or are still starting; the supervisor says more."""
        return SourceState("running" if self._latest is not None else "starting")

    def latest(self) -> Snapshot | None:
        return self._latest

    def add_listener(self, fn: Callable[[Snapshot], None]) -> None:
        self._listeners.append(fn)

    def _publish(self, snap: Snapshot) -> None:
        """Make ``snap`` the latest, add it to the history, tell the listeners (a failing one is logged)."""
        self._latest = snap
        if self._history is not None:
            self._history.append(snap)
        for fn in list(self._listeners):
            try:
                fn(snap)
            except Exception:
                log.exception("snapshot listener %r failed", fn)
