"""NvmlPoller: the in-process poll loop that keeps the latest snapshot and a bounded history.

Every GPU is read on one shared worker thread (a *lane*), in order, each read timed: one thread woken a
tick, not one per card. When the last tick's reads took together more than a tenth of the interval (a
driver whose calls block, e.g. the PCIe throughput query samples for 20 ms), they are shared out over as
many lanes as keep each lane under that, up to one per card, so every card is still read every tick
and close to the tick's time. A read still running after a quarter of the interval is taken for hung: the
cards queued behind it move to a fresh lane at once (so they are still read this tick), and the hung
read keeps the thread it is stuck on as its own lane until it returns; threads grow only with hung
cards. A card whose read is still in flight when the tick's wait ends is not read again until that read
returns: its previous sample is reused (counted as ``errors["stale"]``) until it is older than the
freshness bound (:mod:`~gpuwatch.telemetry.freshness`), after which it is published as stale with no
readings; a card queued behind a hung read that no lane reached in time counts as stale for that tick
only, and the next tick starts with it (round robin: reads too slow for one interval still reach
every card in turn). A card that hung is read last once back: a card that keeps hanging costs the others
nothing.
``poll_duration_s`` is the longest real read time this tick (a read still in flight counts its time so
far), never capped at the interval. A lost GPU or a broken NVML session is re-initialised on an
exponential back-off measured on the poller's clock; re-attaching skips cards whose read is in flight.

Crash isolation (NVML in a child process) is :mod:`~gpuwatch.telemetry.nvml_supervisor`'s job; this
loop is what runs inside that child, and in-process where a crash cannot hurt (tests, doctor).
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, wait
from queue import SimpleQueue

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

#: a read running longer than this share of the interval is taken for hung (module docstring)
HANG_AFTER_SHARE = 0.25
#: the reads of a tick share out over more lanes when they took longer than this share of the interval
LANE_BUSY_SHARE = 0.1
#: the longest a held first poll waits (see NvmlPoller.hold_first_poll)
FIRST_POLL_HOLD_MAX_S = 2.0
_lane_numbers = itertools.count()


class _Read:
    """One GPU's read handed to a lane: its outcome, its error counter, when it began, how long it took."""

    __slots__ = ("counter", "future", "index", "lane", "started_s", "tick", "took_s")

    def __init__(self, index: int, tick: int, lane: _Lane) -> None:
        self.index = index
        self.tick = tick  # the poll that asked for it
        self.lane = lane
        self.counter: Counter[str] = Counter()
        self.future: Future[GpuSample] = Future()
        self.started_s: float | None = None  # monotonic; set by the lane as it reaches this read
        self.took_s = 0.0

    def running(self) -> bool:
        return self.started_s is not None and not self.future.done()


class _Lane:
    """A thread that reads the GPUs handed to it one after another, in order, each read timed.

    A daemon: a read hung inside the driver must not keep the process from exiting.
    """

    def __init__(self) -> None:
        self._jobs: SimpleQueue[tuple[NvmlReader, list[_Read]] | None] = SimpleQueue()
        name = f"gpuwatch-nvml-{next(_lane_numbers)}"
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def submit(self, reader: NvmlReader, reads: list[_Read]) -> None:
        self._jobs.put((reader, reads))

    def retire(self) -> None:
        """End the thread once it is through with what it holds (reads given up on are skipped)."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            reader, reads = job
            for read in reads:
                read.started_s = time.monotonic()
                if not read.future.set_running_or_notify_cancel():
                    continue  # given up on: moved to another lane, or stale this tick
                try:
                    sample = reader.read_device(read.index, read.counter)
                except BaseException as exc:  # the poll thread logs it
                    read.future.set_exception(exc)
                else:
                    read.took_s = time.monotonic() - read.started_s
                    read.future.set_result(sample)


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
        self._go = threading.Event()  # cleared by hold_first_poll
        self._go.set()
        self._thread: threading.Thread | None = None
        self._driven = False  # started without the thread: the caller polls
        self._poll_lock = threading.Lock()
        self.reader: NvmlReader | None = None
        self._lanes: list[_Lane] = []  # the shared lanes (one, unless reads are slow); none after a hang
        self._read_s = 0.0  # what the last tick's reads took, together (sets how many lanes share them)
        #: GPU index -> its read not collected yet (after a tick: only reads still in flight)
        self._inflight: dict[int, _Read] = {}
        self._hung: set[int] = set()  # GPUs whose last read hung: read last, behind the others
        self._first = 0  # the GPU read first: the first one no lane reached last tick (round robin)
        self._tick = 0
        self._last_sample: dict[int, GpuSample] = {}
        self._next_reinit_at: float | None = None

    # -- SnapshotSource (latest, history, add_listener: SnapshotFeed) ---------------------------------
    def start(self, *, background: bool = True) -> None:
        """Open NVML and start polling; NvmlUnavailable if there is no NVML.

        ``background=False`` opens NVML without the thread: the caller drives :meth:`poll_once`, e.g.
        tests on a manual simulated clock.
        """
        if self._thread is not None or self._driven:
            return
        self.attach()
        if not background:
            self._driven = True  # a later start() (a face's) leaves the polling to the caller
            return
        self._thread = threading.Thread(target=self._run, name="gpuwatch-poller", daemon=True)
        self._thread.start()

    def attach(self) -> None:
        """Open NVML and list the GPUs, without polling yet (:meth:`start` polls): the TUI names them on
        screen before Textual is loaded. NvmlUnavailable if there is no NVML."""
        if self.reader is None:
            self._stop.clear()
            self._open_reader()

    def hold_first_poll(self) -> Callable[[], None]:
        """Let :meth:`start` poll only once the returned function is called (or after
        FIRST_POLL_HOLD_MAX_S): the TUI draws its first frame, the cards named from the device list,
        before the first poll's reading and assessment compete with it for the interpreter."""
        self._go.clear()
        return self._go.set

    def stop(self) -> None:
        self._stop.set()
        self._go.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self.interval_s))
            self._thread = None
        self._close_reader()
        self._driven = False
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
        if not self.simulated and self.description == "NVML":
            self.description = f"NVML: {len(reader.devices)} GPU(s), driver {reader.driver_version or '?'}"

    def _close_reader(self) -> None:
        running = [r.future for r in self._inflight.values() if not r.future.done()]
        if running:
            wait(running, timeout=2.0)
        for read in self._inflight.values():
            read.future.cancel()
        self._retire_lane()
        self._inflight.clear()
        self._hung.clear()
        self._first = 0
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    def _run(self) -> None:
        self._go.wait(FIRST_POLL_HOLD_MAX_S)
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.poll_once()
            except Exception:  # a bug must not kill the loop silently
                log.exception("poll failed")
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def poll_once(self) -> Snapshot:
        """One tick: read every GPU (on the shared lane), wait at most one interval, publish."""
        reader = self.reader
        if reader is None:
            raise RuntimeError("poller not started")
        with self._poll_lock:
            self._maybe_reinit(reader)
            ts = self._clock()
            self._tick += 1
            # a card still busy with an earlier tick is not queued again: nothing waits behind it
            count = len(reader.devices)
            due = [i for i in range(count) if i not in self._inflight]
            # in index order from the first card no lane reached last tick, cards that hung last
            due.sort(key=lambda i: (i in self._hung, (i - self._first) % count))
            self._wait(reader, self._dispatch(reader, due))
            read_s = 0.0
            missed = [i for i in due if i not in self._inflight]
            if missed:
                self._first = missed[0]
            errors: Counter[str] = Counter()
            gpus = []
            longest_read_s = 0.0
            now_s = time.monotonic()
            for i, dev in enumerate(reader.devices):
                read = self._inflight.get(i)
                if read is not None and read.future.done():
                    del self._inflight[i]
                    errors.update(read.counter)
                    try:
                        self._last_sample[i] = read.future.result()
                        longest_read_s = max(longest_read_s, read.took_s)
                        read_s += read.took_s
                    except Exception:
                        log.exception("reading GPU %d failed", i)
                        errors["exception"] += 1
                    if read.tick == self._tick:
                        self._hung.discard(i)
                else:  # in flight (hung or slow), or queued behind a hung read and not reached
                    errors["stale"] += 1
                    if read is not None and read.started_s is not None:
                        longest_read_s = max(longest_read_s, now_s - read.started_s)
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
            self._read_s = read_s
            snap = reader.snapshot(ts, tuple(gpus), errors, longest_read_s)
        self._publish(snap)
        return snap

    def _dispatch(self, reader: NvmlReader, indices: list[int]) -> list[list[_Read]]:
        """Queue these GPUs' reads on the shared lanes, in this order on each: one lane, or as many as
        keep each under LANE_BUSY_SHARE of the interval at the last tick's read time."""
        if not indices:
            return []
        wanted = max(1, math.ceil(self._read_s / (self.interval_s * LANE_BUSY_SHARE)))
        lanes = min(len(indices), wanted)
        while len(self._lanes) > lanes:
            self._lanes.pop().retire()
        while len(self._lanes) < lanes:
            self._lanes.append(_Lane())
        return [self._queue(reader, lane, indices[n::lanes]) for n, lane in enumerate(self._lanes)]

    def _queue(self, reader: NvmlReader, lane: _Lane, indices: list[int]) -> list[_Read]:
        reads = [_Read(i, self._tick, lane) for i in indices]
        for read in reads:
            self._inflight[read.index] = read
        lane.submit(reader, reads)
        return reads

    def _retire_lane(self, lane: _Lane | None = None) -> None:
        """A shared lane is stuck on a read (None: all of them, at close): that read keeps the thread,
        the next reads get a new one."""
        for shared in list(self._lanes):
            if lane is None or shared is lane:
                self._lanes.remove(shared)
                shared.retire()

    def _wait(self, reader: NvmlReader, batches: list[list[_Read]]) -> None:
        """Wait until every read in flight is done or one interval has passed.

        A read of one of ``batches`` (this tick's, one per shared lane) running past the hang bound hands
        the reads queued behind it to a fresh lane; at the end, reads no lane reached are given up on
        (stale this tick), and a read still running keeps its lane as its own.
        """
        deadline_s = time.monotonic() + self.interval_s
        hang_after_s = self.interval_s * HANG_AFTER_SHARE
        while True:
            now_s = time.monotonic()
            waiting = [r.future for r in self._inflight.values() if not r.future.done()]
            if not waiting or now_s >= deadline_s:
                break
            timeout_s = deadline_s - now_s
            moved = False
            for n, batch in enumerate(batches):
                left = [r for r in batch if not r.future.done()]
                current = left[0] if left else None  # the lane takes them in order
                if current is None or len(left) < 2:
                    continue
                if current.started_s is None:
                    timeout_s = min(timeout_s, hang_after_s)  # the lane has not reached it yet
                elif now_s - current.started_s < hang_after_s:
                    timeout_s = min(timeout_s, current.started_s + hang_after_s - now_s)
                else:  # hung: the ones behind it move to a fresh lane, to be read this tick
                    behind = [r.index for r in left[1:] if r.future.cancel()]
                    if current.running():
                        self._hung.add(current.index)
                        self._retire_lane(current.lane)
                    fresh = _Lane()
                    self._lanes.append(fresh)
                    batches[n] = self._queue(reader, fresh, behind)
                    moved = True
            if not moved:
                wait(waiting, timeout=timeout_s)
        for read in list(self._inflight.values()):
            if read.future.cancel():  # queued behind a hung read, never started: stale this tick
                del self._inflight[read.index]
            elif read.running():
                self._hung.add(read.index)
                self._retire_lane(read.lane)

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
        busy = {i for i, r in self._inflight.items() if not r.future.done()}
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
