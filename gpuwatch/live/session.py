"""LiveSession: what both faces hold — a snapshot source, the engines' readings and the assessment.

The assessment is computed once per snapshot, on the source's poll thread, so that a TUI redraw or
a Prometheus scrape only ever reads a finished (snapshot, assessment) pair and never waits on NVML,
an engine's HTTP endpoint or the model.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from gpuwatch.live.assessment import BoxAssessment
from gpuwatch.live.assessor import Assessor
from gpuwatch.live.config import LiveConfig
from gpuwatch.options import get
from gpuwatch.telemetry.engines import EngineWatcher
from gpuwatch.telemetry.sample import Snapshot
from gpuwatch.telemetry.source import SnapshotSource

log = logging.getLogger(__name__)


class LiveSession:
    def __init__(
        self, source: SnapshotSource, config: LiveConfig, engines: EngineWatcher | None = None
    ) -> None:
        self.source = source
        self.config = config
        self.engines = engines
        self.assessor = Assessor(config)
        self._lock = threading.Lock()  # serialises assess(): the assessor's alert state is ordered
        self._latest: tuple[Snapshot, BoxAssessment] | None = None
        self._listeners: list[Callable[[Snapshot, BoxAssessment], None]] = []
        source.add_listener(self.on_snapshot)

    @property
    def description(self) -> str:
        return self.source.description

    def start(self) -> None:
        if self.engines is not None:
            self.engines.start()
        self.source.start()

    def stop(self) -> None:
        self.source.stop()
        if self.engines is not None:
            self.engines.stop()

    def latest(self) -> tuple[Snapshot, BoxAssessment] | None:
        return self._latest

    def add_listener(self, fn: Callable[[Snapshot, BoxAssessment], None]) -> None:
        self._listeners.append(fn)

    def on_snapshot(self, snap: Snapshot) -> None:
        """Assess one snapshot and tell the listeners (the source calls this; tests may too)."""
        readings = self.engines.latest() if self.engines is not None else ()
        with self._lock:
            assessment = self.assessor.assess(snap, self.source.history, readings)
            self._latest = (snap, assessment)
        for fn in list(self._listeners):
            try:
                fn(snap, assessment)
            except Exception:  # a face's bug must not stop the assessment of the next snapshot
                log.exception("live session listener failed")


@dataclass(frozen=True)
class SourceSpec:
    """Where snapshots come from: the simulator, a recording or (neither) the real driver."""

    sim: str | None = None
    scenario: str | None = None
    time_scale: float = get("time_scale").default
    seed: int = get("seed").default
    faults: str | None = None
    replay: str | None = None
    replay_speed: float = get("replay_speed").default


def open_session(config: LiveConfig, source: SourceSpec, *, isolate: bool = False) -> LiveSession:
    """The session over ``source`` priced and assessed by ``config`` (not started)."""
    from gpuwatch.telemetry.sources import open_source

    snapshots = open_source(
        sim=source.sim,
        scenario=source.scenario,
        time_scale=source.time_scale,
        seed=source.seed,
        replay=source.replay,
        replay_speed=source.replay_speed,
        interval_s=config.interval_s,
        isolate=isolate,
        faults=source.faults,
    )
    engines = EngineWatcher(config.engine_urls, interval_s=config.interval_s) if config.engine_urls else None
    return LiveSession(snapshots, config, engines)
