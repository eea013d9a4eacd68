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
from gpuwatch.live.engine_ceiling import ceiling_tokens_per_s
from gpuwatch.options import get
from gpuwatch.telemetry.engines import EngineReading, EngineWatcher
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
        self._failure: str | None = None
        source.add_listener(self.on_snapshot)

    @property
    def description(self) -> str:
        return self.source.description

    def attach(self) -> None:
        """Let the source list its GPUs now, where it can do that before it polls (an in-process NVML
        poller: see ``NvmlPoller.attach``); the others list them with their first poll."""
        attach = getattr(self.source, "attach", None)
        if callable(attach):
            attach()

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
            assessment = self._assess(snap, readings)
            self._latest = (snap, assessment)
        for fn in list(self._listeners):
            try:
                fn(snap, assessment)
            except Exception:  # a face's bug must not stop the assessment of the next snapshot
                log.exception("live session listener failed")

    def _assess(self, snap: Snapshot, readings: tuple[EngineReading, ...]) -> BoxAssessment:
        """The assessment; a failure with the engines' figures retries without them, and a failure
        even then gives an assessment with every figure unknown, so telemetry never stops."""
        if self.engines is not None:
            w = self.assessor.workload
            params = w.model.active_params if w else None
            self.engines.ceiling_tokens_per_s = ceiling_tokens_per_s(snap, params)
        for attempt in (readings, ()) if readings else ((),):
            try:
                return self.assessor.assess(snap, self.source.history, attempt)
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"
                if why != self._failure:  # once per distinct failure, not a traceback per poll
                    log.exception("assessment failed%s", " with the engines' readings" if attempt else "")
                self._failure = why
        return BoxAssessment(snap.timestamp_s, (), None, None, None)


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
    #: points of History kept per GPU (None: History's default); the TUI keeps what its sparklines show
    history_capacity: int | None = None

    def open(self, interval_s: float, *, isolate: bool = False) -> SnapshotSource:
        """The snapshot source this describes (not started)."""
        from gpuwatch.telemetry.sources import open_source

        return open_source(
            sim=self.sim,
            scenario=self.scenario,
            time_scale=self.time_scale,
            seed=self.seed,
            replay=self.replay,
            replay_speed=self.replay_speed,
            interval_s=interval_s,
            isolate=isolate,
            faults=self.faults,
            history_capacity=self.history_capacity,
        )


def open_session(config: LiveConfig, source: SourceSpec, *, isolate: bool = False) -> LiveSession:
    """The session over ``source`` priced and assessed by ``config`` (not started)."""
    snapshots = source.open(config.interval_s, isolate=isolate)
    engines = EngineWatcher(config.engine_urls, interval_s=config.interval_s) if config.engine_urls else None
    if engines is None and source.replay:  # a recording made with --engine replays its engines' readings
        from gpuwatch.telemetry.recording import RecordedEngines, ReplaySource

        if isinstance(snapshots, ReplaySource):
            engines = RecordedEngines(snapshots)
    return LiveSession(snapshots, config, engines)
