"""The one interface every consumer (live session, TUI, exporter, recorder) reads snapshots through."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from gpuwatch.telemetry.sample import Snapshot

if TYPE_CHECKING:
    from gpuwatch.telemetry.history import History


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
