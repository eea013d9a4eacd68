"""The one interface every consumer (live session, TUI, exporter, recorder) reads snapshots through."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from gpuwatch.telemetry.history import History
from gpuwatch.telemetry.sample import Snapshot

log = logging.getLogger(__name__)


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


class SnapshotFeed:
    """The half of a SnapshotSource every implementation shares: latest, history and listeners.

    Subclasses produce snapshots on their own thread and hand each to :meth:`_publish`.
    """

    def __init__(self, history: History | None = None) -> None:
        self._history = history if history is not None else History()
        self._latest: Snapshot | None = None
        self._listeners: list[Callable[[Snapshot], None]] = []

    @property
    def history(self) -> History:
        return self._history

    def latest(self) -> Snapshot | None:
        return self._latest

    def add_listener(self, fn: Callable[[Snapshot], None]) -> None:
        self._listeners.append(fn)

    def _publish(self, snap: Snapshot) -> None:
        """Make ``snap`` the latest, add it to the history, tell the listeners (a failing one is logged)."""
        self._latest = snap
        self._history.append(snap)
        for fn in list(self._listeners):
            try:
                fn(snap)
            except Exception:
                log.exception("snapshot listener %r failed", fn)
