"""NvmlPoller: the in-process poll loop that keeps the latest snapshot and a bounded history.

Each GPU is read on its own worker thread, so a slow or hung card costs the others nothing: its read
stays in flight, its previous sample is reused (counted as ``errors["stale"]``) until it is older than
the freshness bound (:mod:`~gpuwatch.telemetry.freshness`), after which it is published as stale with
no readings. ``poll_duration_s`` is the longest real read time this tick (a read still in flight
counts its time so far), never capped at the interval. A lost GPU or a broken NVML session is
re-initialised on an exponential back-off measured on the poller's clock.

Crash isolation (NVML in a child process) is :mod:`~gpuwatch.telemetry.nvml_supervisor`'s job; this
loop is what runs inside that child, and in-process where a crash cannot hurt (tests, doctor).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

import pynvml as N

from gpuwatch.errors import UserError
from gpuwatch.telemetry.freshness import is_stale, stale_after_s, stale_sample
from gpuwatch.telemetry.nvml_reader import NvmlReader, identity
from gpuwatch.telemetry.nvml_unavailable import NvmlUnavailable, unavailable_message
from gpuwatch.telemetry.sample import READING_NAMES, GpuSample, Snapshot, Unavailable
from gpuwatch.telemetry.simspec import SimSpec
from gpuwatch.telemetry.source import SnapshotFeed

__all__ = ["NvmlPoller", "NvmlUnavailable", "SimSpec"]

log = logging.getLogger(__name__)

_Read = tuple[GpuSample, float]  # (sample, seconds the read took)


class NvmlPoller(SnapshotFeed):
    """A SnapshotSource over NVML (real or simulated), read in this process; see the module docstring.

    ``history_capacity`` None: History's default; 0 keeps no history (the NVML child).
    ``stale_after`` is in the poller's clock's seconds (simulated seconds on a simulated clock); by
    default 3 intervals, at least 5 s, times the simulation's time scale.
    """

    def __init__(
        self,
        *,
        interval_s: float = 1.0,
        clock: Callable[[], float] | None = None,
        sim: SimSpec | None = None,
        description: str | None = None,
        history_capacity: int | None = None,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        on_stop: Callable[[], None] | None = None,
        xid_events: bool = True,
        stale_after: float | None = None,
    ) -> None:
        if interval_s <= 0:
            raise UserError(f"poll interval must be positive, got {interval_s} s")
        self.interval_s = interval_s
        self.sim = sim
        self.simulated = sim is not None
        self.description = description or ("simulated NVML" if sim else "NVML")
        scale = sim.time_scale if sim is not None and clock is not None else 1.0
        self.stale_after_s = stale_after if stale_after is not None else stale_after_s(interval_s) * scale
        self._clock = clock or time.time
        history = None
        if history_capacity:
            from gpuwatch.telemetry.history import History  # the light NVML child keeps none

            history = History(history_capacity)
        super().__init__(history, keep_history=history_capacity != 0)
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._backoff_s = backoff_initial_s
        self._on_stop = on_stop
        self._xid_events = xid_events
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poll_lock = threading.Lock()
        self.reader: NvmlReader | None = None
        self._executors: list[ThreadPoolExecutor] = []
        #: GPU index -> (read in flight, its error counter, monotonic time it started)
        self._inflight: dict[int, tuple[Future[_Read], Counter[str], float]] = {}
        self._last_sample: dict[int, GpuSample] = {}
        self._next_reinit_at: float | None = None

    # -- SnapshotSource (latest, history, add_listener: SnapshotFeed) ---------------------------------
    def start(self, *, background: bool = True) -> None:
        """Open NVML and start polling; NvmlUnavailable if there is no NVML.

        ``background=False`` opens NVML without the thread: the caller drives :meth:`poll_once`, e.g.
        tests on a manual simulated clock.
        """
        if self._thread is not None or self.reader is not None:
            return
        self._stop.clear()
        self._open_reader()
        if not background:
            return
        self._thread = threading.Thread(target=self._run, name="gpuwatch-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self.interval_s))
            self._thread = None
        self._close_reader()
        if self._on_stop is not None:
            on_stop, self._on_stop = self._on_stop, None
            on_stop()

    # -- the loop ----------------------------------------------------------------------------------
    def _open_reader(self) -> None:
        reader = NvmlReader(
            source_label="sim" if self.simulated else "nvml", clock=self._clock, xid_events=self._xid_events
        )
        try:
            reader.open()
        except N.NVMLError as exc:
            reader.close()
            raise NvmlUnavailable(unavailable_message(exc)) from None
        self.reader = reader
        self._executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"gpuwatch-gpu{i}")
            for i in range(len(reader.devices))
        ]
        if not self.simulated and self.description == "NVML":
            self.description = f"NVML: {len(reader.devices)} GPU(s), driver {reader.driver_version or '?'}"

    def _close_reader(self) -> None:
        running = [f for f, _, _ in self._inflight.values() if not f.done()]
        if running:
            wait(running, timeout=2.0)
        for ex in self._executors:
            ex.shutdown(wait=False, cancel_futures=True)
        self._executors = []
        self._inflight.clear()
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.poll_once()
            except Exception:  # a bug must not kill the loop silently
                log.exception("poll failed")
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    @staticmethod
    def _timed(reader: NvmlReader, index: int, counter: Counter[str]) -> _Read:
        started = time.monotonic()
        sample = reader.read_device(index, counter)
        return sample, time.monotonic() - started

    def poll_once(self) -> Snapshot:
        """One tick: read every GPU (each on its own worker), wait at most one interval, publish."""
        reader = self.reader
        if reader is None:
            raise RuntimeError("poller not started")
        with self._poll_lock:
            self._maybe_reinit(reader)
            ts = self._clock()
            for i in range(len(reader.devices)):
                if i in self._inflight:
                    continue  # still busy with an earlier tick: do not queue behind a slow card
                counter: Counter[str] = Counter()
                future = self._executors[i].submit(self._timed, reader, i, counter)
                self._inflight[i] = (future, counter, time.monotonic())
            wait([f for f, _, _ in self._inflight.values()], timeout=self.interval_s)
            errors: Counter[str] = Counter()
            gpus = []
            longest_read_s = 0.0
            for i, dev in enumerate(reader.devices):
                fut, counter, started = self._inflight[i]
                if fut.done():
                    del self._inflight[i]
                    errors.update(counter)
                    try:
                        self._last_sample[i], took_s = fut.result()
                        longest_read_s = max(longest_read_s, took_s)
                    except Exception:
                        log.exception("reading GPU %d failed", i)
                        errors["exception"] += 1
                else:
                    errors["stale"] += 1
                    longest_read_s = max(longest_read_s, time.monotonic() - started)
                sample = self._last_sample.get(i)
                if sample is None:  # never read yet (slow from the start): identity only, stale
                    sample = GpuSample(
                        **identity(dev),
                        stale=True,
                        unavailable=dict.fromkeys(READING_NAMES, Unavailable.STALE),
                    )
                elif is_stale(sample, ts, self.stale_after_s):
                    sample = stale_sample(sample)
                gpus.append(sample)
            snap = reader.snapshot(ts, tuple(gpus), errors, longest_read_s)
        self._publish(snap)
        return snap

    def _maybe_reinit(self, reader: NvmlReader) -> None:
        if not reader.needs_reinit:
            self._next_reinit_at = None
            self._backoff_s = self._backoff_initial_s
            return
        now = self._clock()
        if self._next_reinit_at is None:
            self._next_reinit_at = now + self._backoff_s
            return
        if now < self._next_reinit_at:
            return
        busy = {i for i, (f, _, _) in self._inflight.items() if not f.done()}
        if not reader.session_broken:
            # first re-find each lost card on its own: a card whose read is still in flight (hung or
            # slow) must not hold back the recovery of the others
            for dev in reader.devices:
                if dev.lost and dev.index not in busy:
                    try:
                        if reader.reattach(dev.index):
                            log.info("GPU %d (%s) is back", dev.index, dev.uuid)
                    except N.NVMLError as exc:
                        log.warning("re-attaching GPU %d failed: %s", dev.index, exc)
                        reader.session_broken = True
        if reader.needs_reinit and not busy:
            # a broken session (or a card only a fresh session finds again): shut NVML down and open it
            log.info("re-initialising NVML (lost GPU or broken session)")
            self._inflight.clear()
            try:
                reader.reinit()
            except N.NVMLError as exc:
                log.warning("NVML re-init failed: %s", exc)
                reader.session_broken = True
        if reader.needs_reinit:
            self._backoff_s = min(self._backoff_s * 2, self._backoff_max_s)
            self._next_reinit_at = self._clock() + self._backoff_s
        else:
            self._next_reinit_at = None
            self._backoff_s = self._backoff_initial_s
