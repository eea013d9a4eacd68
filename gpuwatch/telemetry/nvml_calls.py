"""One NVML call at a time, with the per-device cache that makes unsupported calls cost nothing.

Why: NVML calls cost ~0.4 ms on real cards (shared/domain/nvml-notes.md), so the answer "this device
does not support this call" is cached per device and never asked again; an error on one reading costs
that reading; GPU_IS_LOST costs that GPU (raised as :class:`GpuLostError`); a broken session is
reported to the reader, which decides when to re-initialise.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pynvml as N

from gpuwatch.model.catalog import GpuSpec
from gpuwatch.telemetry.sample import Unavailable

if TYPE_CHECKING:  # the resolver is imported only where processes are looked up (real NVML)
    from gpuwatch.telemetry.containers import Container

log = logging.getLogger(__name__)

#: Reasons that do not change while the driver stays loaded: cache them, never call again.
PERMANENT = frozenset({Unavailable.NOT_SUPPORTED, Unavailable.NO_PERMISSION, Unavailable.FUNCTION_NOT_FOUND})

#: Errors that mean the NVML session itself is broken (not one reading): re-initialise.
SESSION_ERRORS = frozenset(
    {
        N.NVML_ERROR_UNINITIALIZED,
        N.NVML_ERROR_DRIVER_NOT_LOADED,
        N.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
        N.NVML_ERROR_LIBRARY_NOT_FOUND,
    }
)


def classify(code: int) -> Unavailable:
    """NVML return code -> why a reading is absent."""
    if code == N.NVML_ERROR_NOT_SUPPORTED:
        return Unavailable.NOT_SUPPORTED
    if code == N.NVML_ERROR_NO_PERMISSION:
        return Unavailable.NO_PERMISSION
    if code == N.NVML_ERROR_FUNCTION_NOT_FOUND:
        return Unavailable.FUNCTION_NOT_FOUND
    if code == N.NVML_ERROR_GPU_IS_LOST:
        return Unavailable.GPU_LOST
    return Unavailable.ERROR


class GpuLostError(Exception):
    """Raised inside one device's read when NVML answers GPU_IS_LOST."""


def text(value: Any) -> str:
    """NVML strings arrive as bytes from older pynvml, str from newer."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass
class DeviceState:
    """Everything cached for one GPU: handle, static (slow-tier) data, what it does not support."""

    index: int
    handle: Any = None
    uuid: str = ""
    name: str = "unknown"
    pci_bus_id: str = ""
    pci_device_id: int | None = None
    lost: bool = False
    #: call or field key ("nvmlDeviceGetFanSpeed_v2", "field:82") -> permanent reason
    unsupported: dict[str, Unavailable] = field(default_factory=dict)
    #: static readings (max clocks, limits, bus width, peak bandwidth, link maxima) and their reasons
    static: dict[str, Any] = field(default_factory=dict)
    static_unavailable: dict[str, Unavailable] = field(default_factory=dict)
    #: static thresholds: ("tlimit", {name: offset}) on Ada+, ("absolute", {name: temp_c}) before
    thresholds: tuple[str, dict[str, float]] | None = None
    num_fans: int | None = None
    nvlink_links: int = 0
    gpm_supported: bool = False
    gpm_samples: list[Any] = field(default_factory=list)  # two-sample ring
    gpm_last: tuple[int, float] | None = None  # (ring slot holding the previous sample, its time)
    process_names: dict[int, str | None] = field(default_factory=dict)
    #: pid -> its container (gpuwatch.telemetry.containers), looked up once per process like its name
    process_containers: dict[int, Container | None] = field(default_factory=dict)
    #: reading -> the call that delivered it when it was a fallback (for doctor)
    fallbacks: dict[str, str] = field(default_factory=dict)
    catalog: GpuSpec | None = None
    bandwidth_note: str | None = None
    #: NVML calls made for this device, by key
    calls: Counter[str] = field(default_factory=Counter)
    #: calls that raised something other than NVMLError (logged once each)
    odd_errors: set[str] = field(default_factory=set)
    #: polls since the handle was (re)attached; the slow tier is read when it is a multiple of N
    polls: int = 0
    #: the slow tier's last readings and reasons, reused between its reads
    slow: dict[str, Any] = field(default_factory=dict)
    slow_unavailable: dict[str, Unavailable] = field(default_factory=dict)
    #: when this device's readings were last read successfully (reader clock, Unix seconds; 0 = never)
    read_timestamp_s: float = 0.0


class DeviceRead:
    """Collects one device's readings for one poll, through :meth:`call` and its helpers."""

    def __init__(self, dev: DeviceState, errors: Counter[str], on_session_error: Callable[[], None]) -> None:
        self.dev = dev
        self.values: dict[str, Any] = {}
        self.unavailable: dict[str, Unavailable] = {}
        self.errors = errors
        self.last_reason = Unavailable.ERROR
        self._on_session_error = on_session_error

    def mark(self, readings: Iterable[str], reason: Unavailable) -> None:
        for r in readings:
            self.unavailable.setdefault(r, reason)

    def call(self, key: str, fn: Callable[..., Any], *args: Any, readings: Iterable[str] = ()) -> Any:
        """Call NVML once unless ``key`` is known unsupported; None (and the reason noted) on error."""
        reason = self.dev.unsupported.get(key)
        if reason is None:
            self.dev.calls[key] += 1
            try:
                return fn(*args)
            except N.NVMLError as exc:
                reason = classify(exc.value)
                self.errors[reason.value] += 1
                if reason is Unavailable.GPU_LOST:
                    raise GpuLostError(str(exc)) from exc
                if reason in PERMANENT:
                    self.dev.unsupported[key] = reason
                if exc.value in SESSION_ERRORS:
                    self._on_session_error()
            except Exception as exc:  # e.g. pynvml's NVMLLibraryMismatchError: costs this reading only
                if key not in self.dev.odd_errors:
                    self.dev.odd_errors.add(key)
                    log.warning("GPU %d: %s failed: %s", self.dev.index, key, exc)
                reason = Unavailable.ERROR
                self.errors[reason.value] += 1
        self.last_reason = reason
        self.mark(readings, reason)
        return None

    def read_into(
        self,
        target: dict[str, Any],
        reading: str,
        convert: Callable[[Any], Any],
        key: str,
        fn: Any,
        *args: Any,
    ) -> None:
        """One call for one reading: ``target[reading] = convert(answer)`` when NVML answers."""
        value = self.call(key, fn, *args, readings=[reading])
        if value is not None:
            target[reading] = convert(value)

    def first(
        self, chain: Iterable[tuple[str, Callable[..., Any], tuple[Any, ...]]], readings: tuple[str, ...]
    ) -> Any:
        """Try calls in order, moving on only when the driver lacks the symbol (older drivers)."""
        for i, (key, fn, args) in enumerate(chain):
            value = self.call(key, fn, *args)
            if value is not None:
                if i:
                    for r in readings:
                        self.dev.fallbacks[r] = key
                return value
            if self.last_reason is not Unavailable.FUNCTION_NOT_FOUND:
                break
        self.mark(readings, self.last_reason)
        return None
