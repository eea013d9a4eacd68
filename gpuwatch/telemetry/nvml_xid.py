"""Xid critical errors: one NVML event set, waited on by its own thread, counted per GPU.

Why a thread: ``nvmlEventSetWait`` blocks; polling it from the read path would cost every poll a
timeout. Counts survive a lost card (the Xid that took it down is still reported) and are read by the
device reader under a lock.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections.abc import Iterable
from typing import Any

import pynvml as N

from gpuwatch.telemetry.nvml_calls import DeviceState, classify
from gpuwatch.telemetry.sample import Unavailable

log = logging.getLogger(__name__)


def _handle_key(handle: Any) -> int:
    return ctypes.cast(handle, ctypes.c_void_p).value or 0


class XidWatcher:
    """Counts Xid events per GPU index; ``counts(i)`` is safe to call from any thread."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._lock = threading.Lock()
        self._counts: dict[int, int] = {}
        self._last: dict[int, int] = {}
        self._by_code: dict[int, dict[str, int]] = {}
        self._unavailable: dict[int, Unavailable] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._event_set: Any = None
        self._by_handle: dict[int, int] = {}

    def counts(self, index: int) -> tuple[int, int | None, Unavailable | None]:
        """(events so far, last Xid code, why events are not available) for one GPU."""
        with self._lock:
            return self._counts.get(index, 0), self._last.get(index), self._unavailable.get(index)

    def by_code(self, index: int) -> dict[str, int]:
        """Events so far by Xid code (a copy), e.g. {"79": 1}."""
        with self._lock:
            return dict(self._by_code.get(index, {}))

    def start(self, devices: Iterable[DeviceState]) -> None:
        if not self.enabled:
            return
        devices = list(devices)
        try:
            self._event_set = N.nvmlEventSetCreate()
        except N.NVMLError as exc:
            for dev in devices:
                self._unavailable[dev.index] = classify(exc.value)
            return
        self._by_handle = {}
        for dev in devices:
            self.register(dev)

    def register(self, dev: DeviceState) -> None:
        """Add one device's handle to the event set; the event thread starts with the first one."""
        if self._event_set is None or dev.handle is None:
            return
        try:
            N.nvmlDeviceRegisterEvents(dev.handle, N.nvmlEventTypeXidCriticalError, self._event_set)
        except N.NVMLError as exc:  # "after NOT_SUPPORTED the event set can still be used"
            self._unavailable[dev.index] = classify(exc.value)
            return
        self._by_handle[_handle_key(dev.handle)] = dev.index
        self._unavailable.pop(dev.index, None)
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._loop, args=(self._event_set, self._by_handle), name="gpuwatch-xid", daemon=True
            )
            self._thread.start()

    def _loop(self, event_set: Any, by_handle: dict[int, int]) -> None:
        while not self._stop.is_set():
            try:
                # 1 s: a blocked wait costs nothing on real NVML, and stop still joins within its 2 s
                data = N.nvmlEventSetWait(event_set, 1000)
            except N.NVMLError as exc:
                if exc.value == N.NVML_ERROR_TIMEOUT:
                    continue
                log.debug("XID event wait: %s", exc)
                if self._stop.wait(1.0):
                    return
                continue
            if not data.eventType & N.nvmlEventTypeXidCriticalError:
                continue
            index = by_handle.get(_handle_key(data.device))
            if index is None:
                continue
            with self._lock:
                self._counts[index] = self._counts.get(index, 0) + 1
                self._last[index] = code = int(data.eventData)
                per_code = self._by_code.setdefault(index, {})
                per_code[str(code)] = per_code.get(str(code), 0) + 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._event_set is not None:
            with contextlib.suppress(N.NVMLError):
                N.nvmlEventSetFree(self._event_set)
            self._event_set = None
