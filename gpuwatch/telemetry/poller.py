"""NvmlPoller: the background loop that keeps the latest snapshot and a bounded history.

Each GPU is read on its own worker thread, so a slow or hung card costs the others at most one
interval (its previous sample is reused and counted as ``errors["stale"]``). A lost GPU or a broken
NVML session is re-initialised on an exponential back-off measured on the poller's clock.

``isolate=True`` runs all of NVML in a child process (the exporter's mode): a segfault or abort
inside libnvidia-ml (seen when a card falls off the bus, nvitop#139) kills only the child; the
parent restarts it, marks a gap in the history and counts ``errors["nvml_child_restart"]``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_ready
from typing import Any

import pynvml as N

from gpuwatch.errors import UserError
from gpuwatch.telemetry.history import DEFAULT_CAPACITY, History
from gpuwatch.telemetry.nvml_reader import READING_NAMES, NvmlReader
from gpuwatch.telemetry.sample import GpuSample, Snapshot, Unavailable
from gpuwatch.telemetry.source import SnapshotFeed

log = logging.getLogger(__name__)

#: seconds the parent waits for the first snapshot from a freshly spawned child (imports included)
CHILD_START_TIMEOUT_S = 60.0
#: longest the supervisor sleeps without a wake-up: snapshots, the child's exit and stop() wake it sooner
SUPERVISE_WAIT_S = 5.0
#: how often the child checks that its parent is still there (a dead parent's pipe also wakes it at once)
CHILD_PARENT_CHECK_S = 5.0


class NvmlUnavailable(UserError):
    """No usable NVML (no driver, no library, driver/library mismatch): one line saying what to do."""


def unavailable_message(exc: N.NVMLError) -> str:
    """One line for a failed nvmlInit, with the fix a user can apply."""
    code = exc.value
    if code == N.NVML_ERROR_LIBRARY_NOT_FOUND:
        hint = "no NVIDIA driver on this machine (libnvidia-ml.so.1 not found); try --sim rtx4090"
    elif code == N.NVML_ERROR_DRIVER_NOT_LOADED:
        hint = "the NVIDIA kernel driver is not loaded; load it (modprobe nvidia) or try --sim rtx4090"
    elif code == N.NVML_ERROR_LIB_RM_VERSION_MISMATCH:
        hint = "driver/library version mismatch after a driver upgrade; reboot or reload the nvidia module"
    elif code == N.NVML_ERROR_NO_PERMISSION:
        hint = "no permission to open the NVIDIA devices; check /dev/nvidia* permissions"
    else:
        hint = "try --sim rtx4090 to use the simulator"
    return f"NVML unavailable: {exc} ({hint})"


@dataclass(frozen=True)
class SimSpec:
    """A simulated box, as plain data so a child process can install the same one."""

    devices: str
    scenario: str | None = None
    seed: int = 0
    time_scale: float = 1.0
    faults: str | None = None
    driver: str | None = None  # None: the card's captured driver, else r580 (simulated/profiles.py)

    def install(self) -> Any:
        from gpuwatch.telemetry.simulated import install

        return install(
            self.devices,
            scenario=self.scenario or "decode",
            seed=self.seed,
            time_scale=self.time_scale,
            faults=self.faults,
            driver=self.driver,
        )


class NvmlPoller(SnapshotFeed):
    """A SnapshotSource over NVML (real or simulated); see the module docstring."""

    def __init__(
        self,
        *,
        interval_s: float = 1.0,
        clock: Callable[[], float] | None = None,
        isolate: bool = False,
        sim: SimSpec | None = None,
        description: str | None = None,
        history_capacity: int = DEFAULT_CAPACITY,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        on_stop: Callable[[], None] | None = None,
        xid_events: bool = True,
    ) -> None:
        if interval_s <= 0:
            raise UserError(f"poll interval must be positive, got {interval_s} s")
        self.interval_s = interval_s
        self.isolate = isolate
        self.sim = sim
        self.simulated = sim is not None
        self.description = description or ("simulated NVML" if sim else "NVML")
        self.restarts = 0
        self._clock = clock or time.time
        super().__init__(History(history_capacity))
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._backoff_s = backoff_initial_s
        self._on_stop = on_stop
        self._xid_events = xid_events
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poll_lock = threading.Lock()
        # in-process state
        self.reader: NvmlReader | None = None
        self._executors: list[ThreadPoolExecutor] = []
        self._inflight: dict[int, tuple[Future[GpuSample], Counter[str]]] = {}
        self._last_sample: dict[int, GpuSample] = {}
        self._next_reinit_at: float | None = None
        # isolated state
        self._proc: Any = None
        self._conn: Connection | None = None
        self._wake: tuple[Connection, Connection] | None = None  # stop() wakes the supervisor with it
        self._pending_errors: Counter[str] = Counter()
        self._last_ts: float | None = None
        self._ts_offset = 0.0

    # -- SnapshotSource (latest, history, add_listener: SnapshotFeed) ---------------------------------
    def start(self, *, background: bool = True) -> None:
        """Open NVML (or spawn the child) and start polling; NvmlUnavailable if there is no NVML.

        ``background=False`` (in-process only) opens NVML without the thread: the caller drives
        :meth:`poll_once`, e.g. tests on a manual simulated clock.
        """
        if self._thread is not None or self.reader is not None:
            return
        self._stop.clear()
        if self.isolate:
            self._spawn_child()
            self._await_first_child_message()
            self._wake = multiprocessing.Pipe(duplex=False)
            target = self._supervise
        else:
            self._open_reader()
            if not background:
                return
            target = self._run
        self._thread = threading.Thread(target=target, name="gpuwatch-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._wake is not None:
            with contextlib.suppress(OSError):
                self._wake[1].send_bytes(b"stop")
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self.interval_s))
            self._thread = None
        if self._wake is not None:
            for end in self._wake:
                end.close()
            self._wake = None
        if self.isolate:
            self._stop_child()
        else:
            self._close_reader()
        if self._on_stop is not None:
            on_stop, self._on_stop = self._on_stop, None
            on_stop()

    # -- in-process polling ------------------------------------------------------------------------
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
        running = [f for f, _ in self._inflight.values() if not f.done()]
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

    def poll_once(self) -> Snapshot:
        """One tick: read every GPU (each on its own worker), wait at most one interval, publish."""
        reader = self.reader
        if reader is None:
            raise RuntimeError("poller not started")
        with self._poll_lock:
            self._maybe_reinit(reader)
            ts = self._clock()
            started = time.monotonic()
            for i in range(len(reader.devices)):
                if i in self._inflight:
                    continue  # still busy with an earlier tick: do not queue behind a slow card
                counter: Counter[str] = Counter()
                self._inflight[i] = (self._executors[i].submit(reader.read_device, i, counter), counter)
            wait([f for f, _ in self._inflight.values()], timeout=self.interval_s)
            errors: Counter[str] = Counter()
            gpus = []
            for i, dev in enumerate(reader.devices):
                fut, counter = self._inflight[i]
                if fut.done():
                    del self._inflight[i]
                    errors.update(counter)
                    try:
                        self._last_sample[i] = fut.result()
                    except Exception:
                        log.exception("reading GPU %d failed", i)
                        errors["exception"] += 1
                else:
                    errors["stale"] += 1
                sample = self._last_sample.get(i)
                if sample is None:  # never read yet (slow from the start): identity only
                    sample = GpuSample(
                        index=i,
                        uuid=dev.uuid,
                        name=dev.name,
                        pci_bus_id=dev.pci_bus_id,
                        unavailable=dict.fromkeys(READING_NAMES, Unavailable.ERROR),
                    )
                gpus.append(sample)
            snap = reader.snapshot(ts, tuple(gpus), errors, time.monotonic() - started)
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
        busy = {i for i, (f, _) in self._inflight.items() if not f.done()}
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

    # -- isolated (child-process) polling ----------------------------------------------------------
    def _spawn_child(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        config = _ChildConfig(
            interval_s=self.interval_s,
            sim=self.sim,
            description=self.description,
            xid_events=self._xid_events,
            parent_pid=os.getpid(),
        )
        proc = ctx.Process(target=_child_main, args=(child_conn, config), name="gpuwatch-nvml", daemon=True)
        proc.start()
        child_conn.close()
        self._proc, self._conn = proc, parent_conn

    @property
    def child_pid(self) -> int | None:
        """The NVML child's pid in isolate mode (None otherwise or while restarting)."""
        return self._proc.pid if self._proc is not None and self._proc.is_alive() else None

    def _await_first_child_message(self) -> None:
        assert self._conn is not None
        deadline = time.monotonic() + CHILD_START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if self._conn.poll(0.1):
                    kind, payload = self._conn.recv()
                    if kind == "error":
                        self._stop_child()
                        raise NvmlUnavailable(payload)
                    self._handle_child_message(kind, payload)
                    return
            except (EOFError, OSError):
                break
            if not self._proc.is_alive() and not self._conn.poll(0):
                break
        code = self._proc.exitcode if self._proc is not None else None
        self._stop_child()
        raise NvmlUnavailable(f"NVML unavailable: the NVML child process did not start (exit code {code})")

    def _handle_child_message(self, kind: str, payload: Any) -> None:
        if kind != "snapshot":
            return
        snap: Snapshot = payload
        if self._pending_errors:
            snap = replace(snap, errors={**snap.errors, **self._pending_errors})
            self._pending_errors.clear()
        if self._last_ts is not None and snap.timestamp_s + self._ts_offset <= self._last_ts:
            # a restarted simulated child starts its clock again: keep parent time monotonic
            self._ts_offset = self._last_ts + self.interval_s - snap.timestamp_s
        if self._ts_offset:
            snap = replace(snap, timestamp_s=snap.timestamp_s + self._ts_offset)
        self._last_ts = snap.timestamp_s
        self._backoff_s = self._backoff_initial_s
        self._publish(snap)

    def _supervise(self) -> None:
        """Sleep until a snapshot arrives, the child exits or stop() is called; nothing wakes it else."""
        assert self._wake is not None
        stop_signal = self._wake[0]
        while not self._stop.is_set():
            conn, proc = self._conn, self._proc
            try:
                if conn is None:
                    raise EOFError
                waitables: list[Any] = [conn, stop_signal]
                if proc is not None:
                    waitables.append(proc.sentinel)
                if conn.poll(0) or conn in wait_ready(waitables, timeout=SUPERVISE_WAIT_S):
                    kind, payload = conn.recv()
                    self._handle_child_message(kind, payload)
                    continue
                if self._stop.is_set() or (proc is not None and proc.is_alive()):
                    continue
                raise EOFError
            except (EOFError, OSError):
                if self._stop.is_set():
                    return
            code = proc.exitcode if proc is not None else None
            log.warning("NVML child process died (exit code %s); restarting in %.1f s", code, self._backoff_s)
            self.restarts += 1
            self._pending_errors["nvml_child_restart"] += 1
            if self._last_ts is not None:
                self._history.mark_gap(self._last_ts)
            self._stop_child()
            if self._stop.wait(self._backoff_s):
                return
            self._backoff_s = min(self._backoff_s * 2, self._backoff_max_s)
            try:
                self._spawn_child()
            except OSError:
                log.exception("could not restart the NVML child")

    def _stop_child(self) -> None:
        conn, proc = self._conn, self._proc
        self._conn = self._proc = None
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("stop", None))
        if proc is not None:
            proc.join(timeout=5.0)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=2.0)
        if conn is not None:
            conn.close()


@dataclass(frozen=True)
class _ChildConfig:
    interval_s: float
    sim: SimSpec | None
    description: str
    xid_events: bool
    parent_pid: int


def _child_main(conn: Connection, config: _ChildConfig) -> None:
    """Entry point of the NVML child: poll in-process and send every snapshot up the pipe.

    The parent alone decides when the child ends ("stop" on the pipe, or the parent gone): Ctrl-C
    in a terminal or a service manager's SIGTERM reaches the whole process group, and a child dying
    of it first would read to the parent as a crash to restart while it shuts down.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    clock = None
    on_stop = None
    try:
        if config.sim is not None:
            from gpuwatch.telemetry.simulated import uninstall

            clock = config.sim.install().now_s
            on_stop = uninstall
        poller = NvmlPoller(
            interval_s=config.interval_s,
            clock=clock,
            sim=config.sim,
            description=config.description,
            xid_events=config.xid_events,
            on_stop=on_stop,
        )
        poller.add_listener(lambda snap: conn.send(("snapshot", snap)))
        poller.start()
    except (NvmlUnavailable, UserError) as exc:
        conn.send(("error", str(exc)))
        conn.close()
        return
    try:
        while os.getppid() == config.parent_pid:
            if conn.poll(CHILD_PARENT_CHECK_S) and conn.recv()[0] == "stop":
                break
    except (EOFError, OSError):
        pass
    finally:
        poller.stop()
        conn.close()
