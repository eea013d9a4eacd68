"""NvmlSupervisor: NVML in a child process, restarted when it dies, with a state faces can show.

Why a child: a segfault or abort inside libnvidia-ml (seen when a card falls off the bus, nvitop#139)
or a driver that hangs every call must cost a message, not the exporter, the TUI or a recording. The
child (:mod:`~gpuwatch.telemetry.nvml_child`) runs the in-process poller and forwards its snapshots.

What the supervisor guarantees:
- ``start()`` returns at once; :meth:`state` says "starting" until the first snapshot (a slow driver
  only keeps it there longer, it never fails start-up by timeout), "failed" with NVML's one-line
  reason when NVML cannot start (retried on a back-off), "restarting" after a crash, with the signal
  that killed the child ("killed by SIGSEGV").
- A child that stops answering (wedged inside NVML) makes every GPU stale after the freshness bound:
  the last readings are never republished as current.
- A restarted child re-probes what the card does not support; those start-up ``not_supported`` /
  ``no_permission`` / ``function_not_found`` errors are counted once per supervisor, not per child.
- The parent's timeline stays monotonic across restarts, and each restart marks a gap in the history.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import gpuwatch
from gpuwatch.errors import UserError
from gpuwatch.model.catalog import catalog_state
from gpuwatch.telemetry.child_wire import Channel
from gpuwatch.telemetry.freshness import stale_after_s, stale_sample
from gpuwatch.telemetry.history import History
from gpuwatch.telemetry.nvml_child import ChildConfig
from gpuwatch.telemetry.sample import Snapshot, Unavailable
from gpuwatch.telemetry.simspec import SimSpec
from gpuwatch.telemetry.source import Phase, SnapshotFeed, SourceState

log = logging.getLogger(__name__)

#: longest the supervisor sleeps without a wake-up (snapshots, the child's exit and stop() wake it sooner)
SUPERVISE_WAIT_S = 1.0
#: error kinds a fresh child reports again while it re-probes the cards (counted once per supervisor)
_PROBE_ERRORS = frozenset(
    {Unavailable.NOT_SUPPORTED.value, Unavailable.NO_PERMISSION.value, Unavailable.FUNCTION_NOT_FOUND.value}
)
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(gpuwatch.__file__)))
#: run as ``python -S -c _CHILD_CODE fd parent_pid path...``: the child imports from this gpuwatch and the
#: parent's own import path, so it needs no ``site``, whose .pth files (an editable install's finder, the
#: distutils hack) import pathlib, ipaddress and urllib.parse the child would otherwise not load
_CHILD_CODE = (
    "import sys; sys.path[:0] = sys.argv[3:]; "
    "from gpuwatch.telemetry.nvml_child import main; main(int(sys.argv[1]), int(sys.argv[2]))"
)


def _child_argv(fd: int) -> list[str]:
    """The NVML child's command line: this interpreter without ``site``, on the parent's import path."""
    paths = [_PACKAGE_ROOT, *(p for p in sys.path if p and p != _PACKAGE_ROOT)]
    return [sys.executable, "-S", "-c", _CHILD_CODE, str(fd), str(os.getpid()), *paths]


def describe_exit(returncode: int | None) -> str:
    """ "killed by SIGSEGV" for a signal, "exit code 1" otherwise."""
    if returncode is None:
        return "no exit status"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class NvmlSupervisor(SnapshotFeed):
    """A SnapshotSource whose NVML runs in a child process; see the module docstring."""

    def __init__(
        self,
        *,
        interval_s: float = 1.0,
        sim: SimSpec | None = None,
        description: str | None = None,
        history_capacity: int | None = None,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        xid_events: bool = True,
        stale_after: float | None = None,
    ) -> None:
        if interval_s <= 0:
            raise UserError(f"poll interval must be positive, got {interval_s} s")
        super().__init__(History(history_capacity) if history_capacity else None)
        self.interval_s = interval_s
        self.sim = sim
        self.simulated = sim is not None
        self.description = description or ("simulated NVML" if sim else "NVML")
        self.restarts = 0
        #: why each child ended ("killed by SIGSEGV": 2, ...)
        self.exits: Counter[str] = Counter()
        self._time_scale = sim.time_scale if sim is not None else 1.0
        #: freshness bound in wall seconds (the child applies the same bound on its own clock)
        self._stale_after_wall_s = stale_after_s(interval_s) if stale_after is None else stale_after
        self._config = ChildConfig(
            interval_s=interval_s,
            sim=sim,
            description=self.description,
            xid_events=xid_events,
            stale_after=None if stale_after is None else stale_after * self._time_scale,
        )
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._backoff_s = backoff_initial_s
        self._stop = threading.Event()
        self._ready = threading.Event()  # set when the state first leaves "starting"
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Channel | None = None
        self._state = SourceState("starting", "starting the NVML child process", time.time())
        self._pending_errors: Counter[str] = Counter()
        self._probe_high: Counter[str] = Counter()  # most probe errors any child reported in all
        self._probe_child: Counter[str] = Counter()  # probe errors the current child reported
        self._last_snap: Snapshot | None = None
        self._last_snap_mono = 0.0
        self._last_stale_mono = 0.0
        self._last_ts: float | None = None
        self._ts_offset = 0.0
        self._child_error: str | None = None
        self._first_of_child = True

    # -- SnapshotSource ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the supervisor thread (which spawns the child) and return at once."""
        if self._thread is not None:
            return
        self._stop.clear()
        for end in (self._wake_r, self._wake_w):
            end.close()
        self._wake_r, self._wake_w = socket.socketpair()  # fresh: a byte left by an earlier stop would spin
        # the child is spawned by this long-lived thread: PR_SET_PDEATHSIG fires when the *thread*
        # that forked the child ends, so a short-lived caller thread must not be the one
        self._thread = threading.Thread(target=self._supervise, name="gpuwatch-nvml-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None
        self._stop_child()
        for end in (self._wake_r, self._wake_w):
            end.close()

    def state(self) -> SourceState:
        return self._state

    def wait_ready(self, timeout_s: float) -> SourceState:
        """Block until the state leaves "starting" (first snapshot, or failure) or ``timeout_s`` passes."""
        self._ready.wait(timeout_s)
        return self._state

    @property
    def child_pid(self) -> int | None:
        """The NVML child's pid (None while restarting or stopped)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    # -- the child ------------------------------------------------------------------------------------
    def _spawn_child(self) -> None:
        parent_end, child_end = socket.socketpair()
        try:
            proc = subprocess.Popen(
                _child_argv(child_end.fileno()),
                pass_fds=(child_end.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        finally:
            child_end.close()
        conn = Channel(parent_end)
        # the catalog as of this start: user GPU files loaded since the last child apply to this one
        conn.send(("config", replace(self._config, catalog=catalog_state())))
        self._proc, self._conn = proc, conn
        self._probe_child.clear()
        self._child_error = None
        self._first_of_child = True

    def _stop_child(self) -> None:
        conn, proc = self._conn, self._proc
        self._conn = self._proc = None
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("stop", None))
        if proc is not None:
            try:
                proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=2.0)
        if conn is not None:
            conn.close()

    def _set_state(self, phase: Phase, message: str | None) -> None:
        if (phase, message) != (self._state.phase, self._state.message):
            self._state = SourceState(phase, message, time.time())
        if phase != "starting":
            self._ready.set()

    # -- the loop --------------------------------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._stop.is_set():
            try:
                self._spawn_child()
            except OSError as exc:
                log.error("could not start the NVML child: %s", exc)
                self._set_state("failed", f"could not start the NVML child process: {exc}")
                if self._pause(self._backoff_s):
                    return
                continue
            self._watch_child()
            if self._stop.is_set():
                return
            self._child_ended()
            if self._pause(self._backoff_s):
                return
            self._backoff_s = min(self._backoff_s * 2, self._backoff_max_s)

    def _watch_child(self) -> None:
        """Handle the child's messages until it exits (EOF) or stop() is called."""
        conn = self._conn
        assert conn is not None
        poller = select.poll()  # poll, not select: a busy server's descriptors may pass FD_SETSIZE
        conn_fd = conn.fileno()
        poller.register(conn_fd, select.POLLIN)
        poller.register(self._wake_r.fileno(), select.POLLIN)
        while not self._stop.is_set():
            try:
                ready = [fd for fd, _ in poller.poll(min(SUPERVISE_WAIT_S, self.interval_s) * 1e3)]
            except (OSError, ValueError):  # the channel was closed under us
                return
            if self._stop.is_set():
                return
            if conn_fd not in ready:
                self._publish_stale_if_due()
                continue
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError):
                return
            self._handle(kind, payload)

    def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` (publishing staleness meanwhile); True if stop() was called."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._stop.wait(min(left, self.interval_s)):
                return True
            self._publish_stale_if_due()
        return self._stop.is_set()

    def _child_ended(self) -> None:
        proc = self._proc
        code = None
        if proc is not None:
            try:
                code = proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:  # EOF but alive: it closed the socket, end it
                proc.kill()
                code = proc.wait(timeout=2.0)
        self._stop_child()
        how = describe_exit(code)
        if self._child_error is not None:  # NVML could not start: a state, retried on the back-off
            if self._state.phase == "failed":  # the first time the state says it; the log tells retries
                log.warning("%s (retrying in %.0f s)", self._child_error, self._backoff_s)
            self._set_state("failed", self._child_error)
            return
        self.exits[how] += 1
        self.restarts += 1
        self._pending_errors["nvml_child_restart"] += 1
        if self._last_ts is not None:
            self._mark_gap(self._last_ts)
        message = f"NVML child process {how}; restarting in {self._backoff_s:.0f} s"
        log.warning("%s", message)
        self._set_state("restarting", message)

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "error":
            self._child_error = str(payload)
            return
        if kind == "log":  # the child's log record, under its own logger name, through our logging
            level, name, message = payload
            logging.getLogger(name).log(level, "%s", message)
            return
        if kind == "starting":
            if self._state.phase == "starting":
                self._set_state("starting", "waiting for NVML to answer")
            return
        if kind != "snapshot":
            return
        snap: Snapshot = payload
        errors = Counter(snap.errors)
        for key in _PROBE_ERRORS & set(errors):
            self._probe_child[key] += errors[key]
            excess = self._probe_child[key] - self._probe_high[key]
            self._probe_high[key] = max(self._probe_high[key], self._probe_child[key])
            errors[key] = max(0, excess)
            if not errors[key]:
                del errors[key]
        errors.update(self._pending_errors)
        self._pending_errors.clear()
        snap = replace(snap, errors=dict(errors))
        first_of_child, self._first_of_child = self._first_of_child, False
        ts = snap.timestamp_s + self._ts_offset
        if self._last_ts is not None and ts <= self._last_ts:
            if first_of_child and self.simulated:
                # a restarted simulated child starts its clock again: shift it past the parent's timeline
                self._ts_offset = self._last_ts + self.interval_s * self._time_scale - snap.timestamp_s
                ts = snap.timestamp_s + self._ts_offset
            else:  # a late snapshot after published staleness: keep the timeline strictly increasing
                ts = self._last_ts + 1e-3
        if self._ts_offset:
            offset = self._ts_offset
            snap = replace(
                snap,
                gpus=tuple(
                    replace(g, read_timestamp_s=g.read_timestamp_s + offset) if g.read_timestamp_s else g
                    for g in snap.gpus
                ),
            )
        if ts != snap.timestamp_s:
            snap = replace(snap, timestamp_s=ts)
        self._last_ts = snap.timestamp_s
        self._last_snap, self._last_snap_mono = snap, time.monotonic()
        self._backoff_s = self._backoff_initial_s
        self._set_state("running", None)
        self._publish(snap)

    def _publish_stale_if_due(self) -> None:
        """No snapshot for longer than the bound: publish the GPUs as stale (once per interval)."""
        last = self._last_snap
        now = time.monotonic()
        if last is None or now - self._last_snap_mono <= self._stale_after_wall_s:
            return
        if now - self._last_stale_mono < self.interval_s:
            return
        self._last_stale_mono = now
        waited_s = now - self._last_snap_mono
        ts = last.timestamp_s + waited_s * self._time_scale
        if self._last_ts is not None and ts <= self._last_ts:
            return
        errors = Counter({"stale": len(last.gpus)})
        errors.update(self._pending_errors)
        self._pending_errors.clear()
        snap = replace(
            last,
            timestamp_s=ts,
            gpus=tuple(stale_sample(g) for g in last.gpus),
            poll_duration_s=waited_s,
            errors=dict(errors),
        )
        self._last_ts = ts
        self._publish(snap)
