"""One NVML session: reads every GPU through the real ``pynvml`` into a :class:`Snapshot`.

Why it looks the way it does (see shared/domain/nvml-notes.md):
- NVML calls cost ~0.4 ms on real cards, so handles, static data and the answer "does this device
  support this call" are cached per device; an unsupported call is never retried.
- Newer, non-deprecated symbols first (``TemperatureV``, ``ClocksEventReasons``, field values),
  falling back to the older symbol only when the driver lacks the new one (FunctionNotFound).
- An error on one reading costs that reading; GPU_IS_LOST costs that GPU; the caller (the poller)
  decides when to re-initialise.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pynvml as N

from gpuwatch.model.catalog import GpuSpec
from gpuwatch.telemetry.containers import Container, ContainerResolver
from gpuwatch.telemetry.sample import GpmSample, GpuSample, ProcessSample, Snapshot, Unavailable

#: nvmlDeviceGetPcieThroughput answers "KB/s" without saying which KB; 1024 as nvitop reads it. The
#: simulated NVML encodes with the same constant so that the two cannot drift apart.
PCIE_THROUGHPUT_KB_BYTES = 1024

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

_IDENTITY = ("index", "uuid", "name", "pci_bus_id")
#: every reading name of GpuSample ("processes" and "gpm" included), for "lost" and the doctor matrix
READING_NAMES: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(GpuSample) if f.name not in (*_IDENTITY, "lost", "unavailable")
)

#: violation-time fields (ns counters) -> key in GpuSample.clock_event_seconds_total
VIOLATION_FIELDS: Mapping[int, str] = {
    N.NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP: "sw_power_cap",  # 74
    N.NVML_FI_DEV_CLOCKS_EVENT_REASON_SYNC_BOOST: "sync_boost",  # 76
    N.NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN: "sw_thermal",  # 269
    N.NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN: "hw_thermal",  # 270
    N.NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN: "hw_power_brake",  # 271
}

#: fast-tier field values (read every poll) -> (reading name, scale to the reading's unit)
FAST_FIELDS: Mapping[int, tuple[str, float]] = {
    N.NVML_FI_DEV_MEMORY_TEMP: ("memory_temperature_c", 1.0),
    N.NVML_FI_DEV_POWER_AVERAGE: ("power_w", 1e-3),  # mW
    N.NVML_FI_DEV_POWER_INSTANT: ("power_instant_w", 1e-3),  # mW
    N.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION: ("energy_j", 1e-3),  # mJ
    **{fid: (f"clock_event_seconds_total.{key}", 1e-9) for fid, key in VIOLATION_FIELDS.items()},  # ns
}

#: slow-tier field values (reliability counters change rarely): read every SLOW_TIER_EVERY polls
SLOW_FIELDS: Mapping[int, tuple[str, float]] = {
    N.NVML_FI_DEV_REMAPPED_COR: ("remapped_rows_correctable", 1.0),
    N.NVML_FI_DEV_REMAPPED_UNC: ("remapped_rows_uncorrectable", 1.0),
    N.NVML_FI_DEV_REMAPPED_PENDING: ("remap_pending", 1.0),
    N.NVML_FI_DEV_REMAPPED_FAILURE: ("remap_failure", 1.0),
    N.NVML_FI_DEV_ECC_SBE_VOL_TOTAL: ("ecc_errors_corrected_total", 1.0),  # 3
    N.NVML_FI_DEV_ECC_DBE_VOL_TOTAL: ("ecc_errors_uncorrected_total", 1.0),  # 4
    N.NVML_FI_DEV_RETIRED_PENDING: ("retired_pages_pending", 1.0),  # 31
    N.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION: ("recovery_action", 1.0),  # 230, r570+
}

#: Readings that change slowly, re-read every SLOW_TIER_EVERY polls and reused in between
#: (nvml-notes §4: slow tiers for processes and static data; the process list costs one call per
#: process for its name, and reliability counters change on a scale of hours).
SLOW_READINGS: tuple[str, ...] = (
    *(reading for reading, _ in SLOW_FIELDS.values()),
    "processes",
)
SLOW_TIER_EVERY = 5

_BOOL_READINGS = frozenset({"remap_pending", "remap_failure", "retired_pages_pending"})
_INT_READINGS = frozenset(
    {
        "remapped_rows_correctable",
        "remapped_rows_uncorrectable",
        "ecc_errors_corrected_total",
        "ecc_errors_uncorrected_total",
        "recovery_action",
    }
)

#: static T.Limit fields (offsets relative to the max-operating T.Limit, not temperatures)
TLIMIT_FIELDS: Mapping[int, str] = {
    N.NVML_FI_DEV_TEMPERATURE_SHUTDOWN_TLIMIT: "shutdown",  # 193
    N.NVML_FI_DEV_TEMPERATURE_SLOWDOWN_TLIMIT: "slowdown",  # 194
    N.NVML_FI_DEV_TEMPERATURE_GPU_MAX_TLIMIT: "max_operating",  # 196
}

_MIB = 1024 * 1024
#: GPM metric id -> (GpmSample field, scale: percent -> ratio, MiB/s -> bytes/s)
GPM_METRICS: Mapping[int, tuple[str, float]] = {
    N.NVML_GPM_METRIC_DRAM_BW_UTIL: ("dram_bandwidth_util_ratio", 0.01),
    N.NVML_GPM_METRIC_SM_UTIL: ("sm_util_ratio", 0.01),
    N.NVML_GPM_METRIC_SM_OCCUPANCY: ("sm_occupancy_ratio", 0.01),
    N.NVML_GPM_METRIC_ANY_TENSOR_UTIL: ("tensor_util_ratio", 0.01),
    N.NVML_GPM_METRIC_HMMA_TENSOR_UTIL: ("hmma_tensor_util_ratio", 0.01),
    N.NVML_GPM_METRIC_FP16_UTIL: ("fp16_util_ratio", 0.01),
    N.NVML_GPM_METRIC_FP32_UTIL: ("fp32_util_ratio", 0.01),
    N.NVML_GPM_METRIC_PCIE_TX_PER_SEC: ("pcie_tx_bytes_s", _MIB),
    N.NVML_GPM_METRIC_PCIE_RX_PER_SEC: ("pcie_rx_bytes_s", _MIB),
    N.NVML_GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC: ("nvlink_tx_bytes_s", _MIB),
    N.NVML_GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC: ("nvlink_rx_bytes_s", _MIB),
}

#: |NVML peak - catalog peak| / catalog above which the mismatch is logged (and shown by doctor)
BANDWIDTH_MISMATCH_RATIO = 0.10


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


def _handle_key(handle: Any) -> int:
    return ctypes.cast(handle, ctypes.c_void_p).value or 0


def _field_value(fv: Any) -> float:
    vt = fv.valueType
    v = fv.value
    if vt == N.NVML_VALUE_TYPE_DOUBLE:
        return float(v.dVal)
    if vt == N.NVML_VALUE_TYPE_UNSIGNED_INT:
        return float(v.uiVal)
    if vt == N.NVML_VALUE_TYPE_UNSIGNED_LONG:
        return float(v.ulVal)
    if vt == N.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG:
        return float(v.ullVal)
    if vt == N.NVML_VALUE_TYPE_SIGNED_LONG_LONG:
        return float(v.sllVal)
    if vt == N.NVML_VALUE_TYPE_SIGNED_INT:
        return float(v.siVal)
    if vt == N.NVML_VALUE_TYPE_UNSIGNED_SHORT:
        return float(v.usVal)
    return float(v.ullVal)


def _from_milli(value: Any) -> float:
    """NVML's mW / mJ -> W / J."""
    return float(value) / 1000.0


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def lookup_catalog(name: str, pci_device_id: int | None) -> GpuSpec | None:
    """The catalog entry for a card, by PCI device id then NVML name; None for an unknown card."""
    from gpuwatch.model import catalog
    from gpuwatch.model.errors import UnknownIdError

    keys: list[str | int] = [k for k in (pci_device_id, name) if k]
    for key in keys:
        try:
            return catalog.get_gpu(key)
        except (UnknownIdError, KeyError, ValueError):
            continue
    return None


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
    gpm_supported: bool = False
    gpm_samples: list[Any] = field(default_factory=list)  # two-sample ring
    gpm_last: tuple[int, float] | None = None  # (ring slot holding the previous sample, its time)
    process_names: dict[int, str | None] = field(default_factory=dict)
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


class _Read:
    """Collects one device's readings for one poll."""

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


class NvmlReader:
    """Opens NVML, caches per-device state, and reads one device or all of them on demand.

    Thread model: ``read_device`` for different indices may run concurrently (NVML is documented
    thread-safe), and ``reattach(i)`` may run beside reads of the other devices; ``open``/``reinit``/
    ``close`` must not overlap reads (the poller guarantees it).
    """

    def __init__(
        self,
        *,
        source_label: str = "nvml",
        clock: Callable[[], float] | None = None,
        xid_events: bool = True,
        slow_tier_every: int = SLOW_TIER_EVERY,
        containers: ContainerResolver | None = None,
    ) -> None:
        import time

        if slow_tier_every < 1:
            raise ValueError(f"slow_tier_every must be at least 1 poll, got {slow_tier_every}")
        self.slow_tier_every = slow_tier_every
        #: process -> container; simulated processes are not real ones, so only real NVML looks by default
        self.containers = containers or (ContainerResolver() if source_label == "nvml" else None)
        self.source_label = source_label
        self.clock = clock or time.time
        self.devices: list[DeviceState] = []
        self.driver_version: str | None = None
        self.nvml_version: str | None = None
        self.cuda_driver_version: int | None = None
        self.session_broken = False
        self._open = False
        self._xid_enabled = xid_events
        self._xid_lock = threading.Lock()
        self._xid_counts: dict[int, int] = {}
        self._xid_last: dict[int, int] = {}
        self._xid_unavailable: dict[int, Unavailable] = {}
        self._xid_thread: threading.Thread | None = None
        self._xid_stop = threading.Event()
        self._event_set: Any = None
        self._xid_by_handle: dict[int, int] = {}

    # -- session ---------------------------------------------------------------------------------
    def open(self) -> None:
        """nvmlInit, versions, handles and static data. Raises ``pynvml.NVMLError`` if NVML is unusable."""
        N.nvmlInit()
        self._open = True
        self.session_broken = False
        self.driver_version = self._system(N.nvmlSystemGetDriverVersion)
        self.nvml_version = self._system(N.nvmlSystemGetNVMLVersion)
        cuda = self._system(N.nvmlSystemGetCudaDriverVersion_v2) or self._system(
            N.nvmlSystemGetCudaDriverVersion
        )
        self.cuda_driver_version = int(cuda) if cuda is not None else None
        count = N.nvmlDeviceGetCount()
        if not self.devices:
            self.devices = [DeviceState(index=i) for i in range(count)]
        for dev in self.devices:
            self._attach(dev)
        self._start_xid()

    def close(self) -> None:
        self._stop_xid()
        for dev in self.devices:
            self._free_gpm(dev)
        if self._open:
            self._open = False
            try:
                N.nvmlShutdown()
            except N.NVMLError as exc:
                log.debug("nvmlShutdown: %s", exc)

    def reinit(self) -> None:
        """Shut NVML down and open it again, re-finding each GPU by UUID (indices may shift)."""
        self.close()
        self.open()

    def reattach(self, index: int) -> bool:
        """Re-find one lost GPU by UUID inside the open session; True if it answers again.

        Unlike :meth:`reinit` this touches only that device, so it can run while another card's
        read is still in flight (a hung card must not keep a recovered one marked lost).
        Raises ``pynvml.NVMLError`` when the session itself is broken.
        """
        dev = self.devices[index]
        if not self._open:
            return False
        self._free_gpm(dev)
        self._attach(dev)
        if not dev.lost:
            self._register_xid(dev)
        return not dev.lost

    @property
    def needs_reinit(self) -> bool:
        return self.session_broken or any(d.lost for d in self.devices)

    def _system(self, fn: Callable[[], Any]) -> Any:
        try:
            value = fn()
        except N.NVMLError:
            return None
        return _text(value) if isinstance(value, bytes | str) else value

    def _attach(self, dev: DeviceState) -> None:
        """Find the handle (by UUID once known) and read the static tier; a lost GPU stays marked lost."""
        try:
            if dev.uuid:
                dev.handle = N.nvmlDeviceGetHandleByUUID(dev.uuid)
            else:
                dev.handle = N.nvmlDeviceGetHandleByIndex(dev.index)
            self._read_static(dev)
            dev.lost = False
        except N.NVMLError as exc:
            if exc.value in SESSION_ERRORS:
                raise
            log.warning("GPU %d (%s) unavailable: %s", dev.index, dev.uuid or "?", exc)
            dev.lost = True
            dev.handle = None
        except GpuLostError:
            dev.lost = True

    def _read_static(self, dev: DeviceState) -> None:
        errors: Counter[str] = Counter()
        r = _Read(dev, errors, self._mark_session_broken)
        h = dev.handle
        dev.polls = 0  # a (re)attached card reads its slow tier on the next poll
        dev.uuid = _text(N.nvmlDeviceGetUUID(h))
        dev.name = _text(N.nvmlDeviceGetName(h))
        pci = r.call("nvmlDeviceGetPciInfo_v3", N.nvmlDeviceGetPciInfo_v3, h)
        if pci is not None:
            dev.pci_bus_id = _text(pci.busId)
            dev.pci_device_id = int(pci.pciDeviceId)
        static: dict[str, Any] = {}
        for reading, clock in (
            ("sm_clock_max_hz", N.NVML_CLOCK_SM),
            ("memory_clock_max_hz", N.NVML_CLOCK_MEM),
            ("graphics_clock_max_hz", N.NVML_CLOCK_GRAPHICS),
        ):
            mhz = r.call(
                f"nvmlDeviceGetMaxClockInfo:{clock}",
                N.nvmlDeviceGetMaxClockInfo,
                h,
                clock,
                readings=[reading],
            )
            if mhz:
                static[reading] = float(mhz) * 1e6
            elif mhz is not None:  # 0 MHz (e.g. GB10's memory clock) is no reading, not a zero one
                r.mark([reading], Unavailable.NOT_SUPPORTED)
        limits = r.call(
            "nvmlDeviceGetPowerManagementLimitConstraints",
            N.nvmlDeviceGetPowerManagementLimitConstraints,
            h,
            readings=["power_limit_min_w", "power_limit_max_w"],
        )
        if limits is not None:
            static["power_limit_min_w"] = limits[0] / 1000.0
            static["power_limit_max_w"] = limits[1] / 1000.0
        for reading, convert, key in (
            ("power_limit_default_w", _from_milli, "nvmlDeviceGetPowerManagementDefaultLimit"),
            ("pcie_link_gen_max", int, "nvmlDeviceGetMaxPcieLinkGeneration"),
            ("pcie_link_width_max", int, "nvmlDeviceGetMaxPcieLinkWidth"),
        ):
            r.read_into(static, reading, convert, key, getattr(N, key), h)
        dev.catalog = lookup_catalog(dev.name, dev.pci_device_id)
        bus = r.call(
            "nvmlDeviceGetMemoryBusWidth",
            N.nvmlDeviceGetMemoryBusWidth,
            h,
            readings=["memory_bus_width_bits"],
        )
        if bus:
            static["memory_bus_width_bits"] = int(bus)
        elif dev.catalog is not None:
            static["memory_bus_width_bits"] = dev.catalog.memory_bus_width_bits
            dev.fallbacks["memory_bus_width_bits"] = "catalog"
            r.unavailable.pop("memory_bus_width_bits", None)
        elif bus is not None:  # 0 bits and no catalog entry: absent, never published as 0
            r.mark(["memory_bus_width_bits"], Unavailable.NOT_SUPPORTED)
        self._peak_bandwidth(dev, static, r)
        fans = r.call("nvmlDeviceGetNumFans", N.nvmlDeviceGetNumFans, h)
        dev.num_fans = int(fans) if fans is not None else None
        dev.thresholds = self._read_thresholds(dev, r)
        support = r.call("nvmlGpmQueryDeviceSupport", N.nvmlGpmQueryDeviceSupport, h, readings=["gpm"])
        dev.gpm_supported = bool(support is not None and support.isSupportedDevice)
        if support is not None and not support.isSupportedDevice:
            dev.unsupported["gpm"] = Unavailable.NOT_SUPPORTED
        dev.static = static
        dev.static_unavailable = dict(r.unavailable)

    def _peak_bandwidth(self, dev: DeviceState, static: dict[str, Any], r: _Read) -> None:
        """2 x max memory clock x bus width / 8 (NVML's memory clock is already half the data rate)."""
        mem_hz = static.get("memory_clock_max_hz")
        bus_bits = (
            static.get("memory_bus_width_bits") if "memory_bus_width_bits" not in dev.fallbacks else None
        )
        catalog_bw = dev.catalog.memory_bandwidth_bytes_s if dev.catalog is not None else None
        if mem_hz and bus_bits:
            peak = 2.0 * mem_hz * bus_bits / 8.0
            static["peak_memory_bandwidth_bytes_s"] = peak
            if catalog_bw and abs(peak - catalog_bw) / catalog_bw > BANDWIDTH_MISMATCH_RATIO:
                dev.bandwidth_note = (
                    f"NVML gives {peak / 1e9:.0f} GB/s, catalog {dev.catalog.id if dev.catalog else '?'} "
                    f"{catalog_bw / 1e9:.0f} GB/s"
                )
                log.warning("GPU %d peak bandwidth mismatch: %s", dev.index, dev.bandwidth_note)
        elif catalog_bw:
            static["peak_memory_bandwidth_bytes_s"] = catalog_bw
            dev.fallbacks["peak_memory_bandwidth_bytes_s"] = "catalog"
        else:
            r.mark(["peak_memory_bandwidth_bytes_s"], Unavailable.NOT_SUPPORTED)

    def _read_thresholds(self, dev: DeviceState, r: _Read) -> tuple[str, dict[str, float]] | None:
        """Ada+: T.Limit offsets (fields 193-196, read with the live margin); older: absolute thresholds."""
        if "nvmlDeviceGetFieldValues" not in dev.unsupported:
            values = self._fields(dev, r, list(TLIMIT_FIELDS))
            offsets = {TLIMIT_FIELDS[fid]: v for fid, v in values.items()}
            if offsets:
                return ("tlimit", offsets)
        absolute: dict[str, float] = {}
        for name, which in (
            ("slowdown", N.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN),
            ("shutdown", N.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN),
            ("max_operating", N.NVML_TEMPERATURE_THRESHOLD_GPU_MAX),
        ):
            t = r.call(
                f"nvmlDeviceGetTemperatureThreshold:{which}",
                N.nvmlDeviceGetTemperatureThreshold,
                dev.handle,
                which,
            )
            if t is not None:
                absolute[name] = float(t)
        if absolute:
            for name in absolute:
                dev.fallbacks[f"{name}_temperature_c"] = "nvmlDeviceGetTemperatureThreshold"
            return ("absolute", absolute)
        return None

    def _fields(self, dev: DeviceState, r: _Read, ids: list[int]) -> dict[int, float]:
        """One FieldValues batch of the ids not known unsupported; per-field errors cost that field."""
        wanted = [fid for fid in ids if f"field:{fid}" not in dev.unsupported]
        if not wanted or "nvmlDeviceGetFieldValues" in dev.unsupported:
            return {}
        batch = r.call("nvmlDeviceGetFieldValues", N.nvmlDeviceGetFieldValues, dev.handle, wanted)
        if batch is None:
            return {}
        out: dict[int, float] = {}
        for fv in batch:
            fid = int(fv.fieldId)
            if fv.nvmlReturn == N.NVML_SUCCESS:
                out[fid] = _field_value(fv)
                continue
            reason = classify(int(fv.nvmlReturn))
            r.errors[reason.value] += 1
            if reason is Unavailable.GPU_LOST:
                raise GpuLostError(f"field {fid}")
            if reason in PERMANENT:
                dev.unsupported[f"field:{fid}"] = reason
        return out

    def _mark_session_broken(self) -> None:
        self.session_broken = True

    # -- polling ---------------------------------------------------------------------------------
    def read_all(self) -> Snapshot:
        """Every device, sequentially (the poller reads devices concurrently with ``read_device``)."""
        ts = self.clock()
        errors: Counter[str] = Counter()
        gpus = tuple(self.read_device(i, errors) for i in range(len(self.devices)))
        return self.snapshot(ts, gpus, errors, self.clock() - ts)

    def snapshot(
        self, ts: float, gpus: tuple[GpuSample, ...], errors: Mapping[str, int], duration_s: float | None
    ) -> Snapshot:
        return Snapshot(
            timestamp_s=ts,
            source=self.source_label,
            gpus=gpus,
            driver_version=self.driver_version,
            nvml_version=self.nvml_version,
            cuda_driver_version=self.cuda_driver_version,
            poll_duration_s=duration_s,
            errors=dict(errors),
        )

    def lost_sample(self, dev: DeviceState) -> GpuSample:
        return GpuSample(
            index=dev.index,
            uuid=dev.uuid,
            name=dev.name,
            pci_bus_id=dev.pci_bus_id,
            lost=True,
            xid_errors_total=self._xid_counts.get(dev.index, 0),
            last_xid=self._xid_last.get(dev.index),
            unavailable=dict.fromkeys(READING_NAMES, Unavailable.GPU_LOST),
        )

    def read_device(self, index: int, errors: Counter[str] | None = None) -> GpuSample:
        """One device's fast-tier readings; GPU_IS_LOST marks it lost and returns a lost sample."""
        dev = self.devices[index]
        errors = errors if errors is not None else Counter()
        if not self._open:  # a re-init failed: nothing can be read until the next one succeeds
            return GpuSample(
                index=dev.index,
                uuid=dev.uuid,
                name=dev.name,
                pci_bus_id=dev.pci_bus_id,
                lost=dev.lost,
                unavailable=dict.fromkeys(READING_NAMES, Unavailable.ERROR),
            )
        if dev.lost or dev.handle is None:
            return self.lost_sample(dev)
        try:
            return self._read(dev, errors)
        except GpuLostError as exc:
            log.warning("GPU %d (%s) lost: %s", dev.index, dev.uuid, exc)
            dev.lost = True
            return self.lost_sample(dev)

    def _read(self, dev: DeviceState, errors: Counter[str]) -> GpuSample:
        h = dev.handle
        r = _Read(dev, errors, self._mark_session_broken)
        v = r.values
        v.update(dev.static)
        r.unavailable.update(dev.static_unavailable)

        temp = r.first(
            [
                ("nvmlDeviceGetTemperatureV", N.nvmlDeviceGetTemperatureV, (h, N.NVML_TEMPERATURE_GPU)),
                ("nvmlDeviceGetTemperature", N.nvmlDeviceGetTemperature, (h, N.NVML_TEMPERATURE_GPU)),
            ],
            ("temperature_c",),
        )
        if temp is not None:
            v["temperature_c"] = float(temp)
        self._thresholds(dev, r, v.get("temperature_c"))

        slow_due = dev.polls % self.slow_tier_every == 0
        dev.polls += 1
        tiers = {**FAST_FIELDS, **SLOW_FIELDS} if slow_due else FAST_FIELDS
        fields = self._fields(dev, r, list(tiers))
        violations: dict[str, float] = {}
        for fid, (reading, scale) in tiers.items():
            if fid not in fields:
                r.mark(
                    [reading],
                    dev.unsupported.get(f"field:{fid}")
                    or dev.unsupported.get("nvmlDeviceGetFieldValues")
                    or Unavailable.ERROR,
                )
                continue
            value = fields[fid] * scale
            if reading.startswith("clock_event_seconds_total."):
                violations[reading.split(".", 1)[1]] = value
            elif reading in _BOOL_READINGS:
                v[reading] = bool(value)
            elif reading in _INT_READINGS:
                v[reading] = int(value)
            else:
                v[reading] = value
        v["clock_event_seconds_total"] = violations
        self._field_fallbacks(dev, r, slow_due)

        r.read_into(
            v,
            "power_limit_w",
            _from_milli,
            "nvmlDeviceGetEnforcedPowerLimit",
            N.nvmlDeviceGetEnforcedPowerLimit,
            h,
        )
        for reading, clock in (
            ("sm_clock_hz", N.NVML_CLOCK_SM),
            ("memory_clock_hz", N.NVML_CLOCK_MEM),
            ("graphics_clock_hz", N.NVML_CLOCK_GRAPHICS),
        ):
            mhz = r.call(
                f"nvmlDeviceGetClockInfo:{clock}", N.nvmlDeviceGetClockInfo, h, clock, readings=[reading]
            )
            if mhz is not None:
                v[reading] = float(mhz) * 1e6
        mem = r.first(
            [
                ("nvmlDeviceGetMemoryInfo_v2", N.nvmlDeviceGetMemoryInfo, (h, N.nvmlMemory_v2)),
                ("nvmlDeviceGetMemoryInfo", N.nvmlDeviceGetMemoryInfo, (h,)),
            ],
            ("memory_used_bytes", "memory_total_bytes"),
        )
        if mem is not None:
            v["memory_used_bytes"] = int(mem.used)
            v["memory_total_bytes"] = int(mem.total)
        util = r.call(
            "nvmlDeviceGetUtilizationRates",
            N.nvmlDeviceGetUtilizationRates,
            h,
            readings=["sm_busy_ratio", "memory_controller_busy_ratio"],
        )
        if util is not None:
            v["sm_busy_ratio"] = util.gpu / 100.0
            v["memory_controller_busy_ratio"] = util.memory / 100.0
        for reading, counter in (
            ("pcie_tx_bytes_s", N.NVML_PCIE_UTIL_TX_BYTES),
            ("pcie_rx_bytes_s", N.NVML_PCIE_UTIL_RX_BYTES),
        ):
            kb_s = r.call(
                f"nvmlDeviceGetPcieThroughput:{counter}",
                N.nvmlDeviceGetPcieThroughput,
                h,
                counter,
                readings=[reading],
            )
            if kb_s is not None:
                v[reading] = kb_s * PCIE_THROUGHPUT_KB_BYTES
        for reading, key in (
            ("pcie_link_gen", "nvmlDeviceGetCurrPcieLinkGeneration"),
            ("pcie_link_width", "nvmlDeviceGetCurrPcieLinkWidth"),
        ):
            r.read_into(v, reading, int, key, getattr(N, key), h)
        self._fan(dev, r)
        pstate = r.call(
            "nvmlDeviceGetPerformanceState",
            N.nvmlDeviceGetPerformanceState,
            h,
            readings=["performance_state"],
        )
        if pstate is not None and pstate != N.NVML_PSTATE_UNKNOWN:
            v["performance_state"] = int(pstate)
        reasons = r.first(
            [
                ("nvmlDeviceGetCurrentClocksEventReasons", N.nvmlDeviceGetCurrentClocksEventReasons, (h,)),
                (
                    "nvmlDeviceGetCurrentClocksThrottleReasons",
                    N.nvmlDeviceGetCurrentClocksThrottleReasons,
                    (h,),
                ),
            ],
            ("clock_event_reasons",),
        )
        if reasons is not None:
            v["clock_event_reasons"] = int(reasons)
        if slow_due:
            v["processes"] = self._processes(dev, r)
            dev.slow = {k: v[k] for k in SLOW_READINGS if k in v}
            dev.slow_unavailable = {k: r.unavailable[k] for k in SLOW_READINGS if k in r.unavailable}
        else:
            v.update(dev.slow)
            r.unavailable.update(dev.slow_unavailable)
        v["gpm"] = self._gpm(dev, r)
        for key, value in list(v.items()):
            if value is not None:
                r.unavailable.pop(key, None)
        with self._xid_lock:
            v["xid_errors_total"] = self._xid_counts.get(dev.index, 0)
            v["last_xid"] = self._xid_last.get(dev.index)
            if dev.index in self._xid_unavailable:
                r.unavailable["xid_errors_total"] = self._xid_unavailable[dev.index]
        return GpuSample(
            index=dev.index,
            uuid=dev.uuid,
            name=dev.name,
            pci_bus_id=dev.pci_bus_id,
            unavailable=r.unavailable,
            **v,
        )

    def _thresholds(self, dev: DeviceState, r: _Read, temp_c: float | None) -> None:
        names = (
            "slowdown_temperature_c",
            "shutdown_temperature_c",
            "max_operating_temperature_c",
            "slowdown_margin_c",
        )
        if dev.thresholds is None:
            r.mark(names, Unavailable.NOT_SUPPORTED)
            return
        kind, data = dev.thresholds
        v = r.values
        if kind == "absolute":
            for name, t in data.items():
                v[f"{name}_temperature_c"] = t
            if temp_c is not None and "slowdown" in data:
                v["slowdown_margin_c"] = data["slowdown"] - temp_c
            r.mark(names, Unavailable.NOT_SUPPORTED)
            return
        # T.Limit: the live margin is the distance to the max-operating limit; each field is the
        # margin at which that event happens (e.g. slowdown at -2 C), so event temp = temp + margin - offset.
        margin = r.call(
            "nvmlDeviceGetMarginTemperature", N.nvmlDeviceGetMarginTemperature, dev.handle, readings=names
        )
        if margin is None:
            return
        if "slowdown" in data:
            v["slowdown_margin_c"] = float(margin) - data["slowdown"]
        if temp_c is None:
            r.mark(names[:3], Unavailable.ERROR)
            return
        for name, offset in data.items():
            v[f"{name}_temperature_c"] = temp_c + float(margin) - offset
        r.mark(names, Unavailable.NOT_SUPPORTED)

    def _field_fallbacks(self, dev: DeviceState, r: _Read, slow_due: bool) -> None:
        """Older calls for what the field batch could not give (drivers without a field)."""
        v, h = r.values, dev.handle
        if "power_w" not in v:
            mw = r.call("nvmlDeviceGetPowerUsage", N.nvmlDeviceGetPowerUsage, h, readings=["power_w"])
            if mw is not None:
                v["power_w"] = mw / 1000.0
                r.unavailable.pop("power_w", None)
                dev.fallbacks["power_w"] = "nvmlDeviceGetPowerUsage"
        if "energy_j" not in v:
            mj = r.call(
                "nvmlDeviceGetTotalEnergyConsumption",
                N.nvmlDeviceGetTotalEnergyConsumption,
                h,
                readings=["energy_j"],
            )
            if mj is not None:
                v["energy_j"] = mj / 1000.0
                r.unavailable.pop("energy_j", None)
                dev.fallbacks["energy_j"] = "nvmlDeviceGetTotalEnergyConsumption"
        if slow_due and "remapped_rows_correctable" not in v:
            rows = r.call("nvmlDeviceGetRemappedRows", N.nvmlDeviceGetRemappedRows, h)
            if rows is not None:
                corr, unc, pending, failure = rows
                v.update(
                    remapped_rows_correctable=int(corr),
                    remapped_rows_uncorrectable=int(unc),
                    remap_pending=bool(pending),
                    remap_failure=bool(failure),
                )
                for k in (
                    "remapped_rows_correctable",
                    "remapped_rows_uncorrectable",
                    "remap_pending",
                    "remap_failure",
                ):
                    r.unavailable.pop(k, None)
                    dev.fallbacks[k] = "nvmlDeviceGetRemappedRows"

    def _fan(self, dev: DeviceState, r: _Read) -> None:
        if dev.num_fans == 0:
            r.mark(["fan_speed_ratio"], Unavailable.NOT_SUPPORTED)
            return
        if dev.num_fans:
            speeds = []
            for fan in range(dev.num_fans):
                pct = r.call(
                    "nvmlDeviceGetFanSpeed_v2",
                    N.nvmlDeviceGetFanSpeed_v2,
                    dev.handle,
                    fan,
                    readings=["fan_speed_ratio"],
                )
                if pct is not None:
                    speeds.append(pct)
            if speeds:
                r.values["fan_speed_ratio"] = sum(speeds) / len(speeds) / 100.0
            return
        if dev.unsupported.get("nvmlDeviceGetNumFans") is not Unavailable.FUNCTION_NOT_FOUND:
            # NumFans answered NOT_SUPPORTED / NO_PERMISSION: a passive card; do not probe further
            r.mark(["fan_speed_ratio"], dev.unsupported.get("nvmlDeviceGetNumFans", Unavailable.ERROR))
            return
        pct = r.call(
            "nvmlDeviceGetFanSpeed", N.nvmlDeviceGetFanSpeed, dev.handle, readings=["fan_speed_ratio"]
        )
        if pct is not None:
            r.values["fan_speed_ratio"] = pct / 100.0
            dev.fallbacks["fan_speed_ratio"] = "nvmlDeviceGetFanSpeed"

    def _processes(self, dev: DeviceState, r: _Read) -> tuple[ProcessSample, ...] | None:
        procs = r.first(
            [
                (
                    "nvmlDeviceGetComputeRunningProcesses_v3",
                    N.nvmlDeviceGetComputeRunningProcesses_v3,
                    (dev.handle,),
                ),
                (
                    "nvmlDeviceGetComputeRunningProcesses_v2",
                    N.nvmlDeviceGetComputeRunningProcesses_v2,
                    (dev.handle,),
                ),
            ],
            ("processes",),
        )
        if procs is None:
            return None
        out = []
        alive = set()
        for p in procs:
            pid = int(p.pid)
            alive.add(pid)
            if pid not in dev.process_names:
                dev.process_names[pid] = self._process_name(dev, pid)
                dev.process_containers[pid] = self.containers.lookup(pid) if self.containers else None
            box = dev.process_containers.get(pid)
            used = p.usedGpuMemory
            out.append(
                ProcessSample(
                    pid=pid,
                    name=dev.process_names[pid],
                    used_memory_bytes=int(used) if used is not None else None,
                    container=box.label if box else None,
                    container_runtime=box.runtime if box else None,
                )
            )
        for pid in set(dev.process_names) - alive:
            del dev.process_names[pid]
            dev.process_containers.pop(pid, None)
        return tuple(out)

    def _process_name(self, dev: DeviceState, pid: int) -> str | None:
        """The process may exit between listing and naming it (a race NVML reports as NOT_FOUND)."""
        if "nvmlSystemGetProcessName" in dev.unsupported:
            return None
        dev.calls["nvmlSystemGetProcessName"] += 1
        try:
            return _text(N.nvmlSystemGetProcessName(pid)) or None
        except N.NVMLError as exc:
            reason = classify(exc.value)
            if reason in PERMANENT and reason is not Unavailable.NO_PERMISSION:
                dev.unsupported["nvmlSystemGetProcessName"] = reason
            return None

    # -- GPM: two-sample ring per device --------------------------------------------------------
    def _gpm(self, dev: DeviceState, r: _Read) -> GpmSample | None:
        if not dev.gpm_supported:
            r.mark(
                ["gpm"],
                dev.unsupported.get(
                    "gpm", dev.unsupported.get("nvmlGpmQueryDeviceSupport", Unavailable.NOT_SUPPORTED)
                ),
            )
            return None
        if not dev.gpm_samples:
            a = r.call("nvmlGpmSampleAlloc", N.nvmlGpmSampleAlloc, readings=["gpm"])
            b = r.call("nvmlGpmSampleAlloc", N.nvmlGpmSampleAlloc, readings=["gpm"])
            if a is None or b is None:
                return None
            dev.gpm_samples = [a, b]
        slot = 0 if dev.gpm_last is None else 1 - dev.gpm_last[0]
        now = self.clock()
        if (
            r.call(
                "nvmlGpmSampleGet", N.nvmlGpmSampleGet, dev.handle, dev.gpm_samples[slot], readings=["gpm"]
            )
            is None
        ):
            dev.gpm_last = None
            return None
        previous, dev.gpm_last = dev.gpm_last, (slot, now)
        if previous is None or now <= previous[1]:
            return None  # first sample of a pair: nothing to difference yet
        mg = N.c_nvmlGpmMetricsGet_t()
        mg.version = N.NVML_GPM_METRICS_GET_VERSION
        mg.sample1 = dev.gpm_samples[previous[0]]
        mg.sample2 = dev.gpm_samples[slot]
        ids = list(GPM_METRICS)
        mg.numMetrics = len(ids)
        for k, mid in enumerate(ids):
            mg.metrics[k].metricId = mid
        if r.call("nvmlGpmMetricsGet", N.nvmlGpmMetricsGet, mg, readings=["gpm"]) is None:
            return None
        values: dict[str, float] = {}
        for k, mid in enumerate(ids):
            m = mg.metrics[k]
            if m.nvmlReturn == N.NVML_SUCCESS:
                name, scale = GPM_METRICS[mid]
                values[name] = float(m.value) * scale
        return GpmSample(interval_s=now - previous[1], **values)

    def _free_gpm(self, dev: DeviceState) -> None:
        for s in dev.gpm_samples:
            with contextlib.suppress(N.NVMLError):
                N.nvmlGpmSampleFree(s)
        dev.gpm_samples = []
        dev.gpm_last = None

    # -- XID critical errors: an event set on its own thread -----------------------------------
    def _start_xid(self) -> None:
        if not self._xid_enabled:
            return
        try:
            self._event_set = N.nvmlEventSetCreate()
        except N.NVMLError as exc:
            for dev in self.devices:
                self._xid_unavailable[dev.index] = classify(exc.value)
            return
        self._xid_by_handle = {}
        for dev in self.devices:
            self._register_xid(dev)

    def _register_xid(self, dev: DeviceState) -> None:
        """Add one device's handle to the event set; the event thread starts with the first one."""
        if self._event_set is None or dev.handle is None:
            return
        try:
            N.nvmlDeviceRegisterEvents(dev.handle, N.nvmlEventTypeXidCriticalError, self._event_set)
        except N.NVMLError as exc:  # "after NOT_SUPPORTED the event set can still be used"
            self._xid_unavailable[dev.index] = classify(exc.value)
            return
        self._xid_by_handle[_handle_key(dev.handle)] = dev.index
        self._xid_unavailable.pop(dev.index, None)
        if self._xid_thread is None:
            self._xid_stop.clear()
            self._xid_thread = threading.Thread(
                target=self._xid_loop,
                args=(self._event_set, self._xid_by_handle),
                name="gpuwatch-xid",
                daemon=True,
            )
            self._xid_thread.start()

    def _xid_loop(self, event_set: Any, by_handle: dict[int, int]) -> None:
        while not self._xid_stop.is_set():
            try:
                # 1 s: a blocked wait costs nothing on real NVML, and stop still joins within its 2 s
                data = N.nvmlEventSetWait(event_set, 1000)
            except N.NVMLError as exc:
                if exc.value == N.NVML_ERROR_TIMEOUT:
                    continue
                log.debug("XID event wait: %s", exc)
                if self._xid_stop.wait(1.0):
                    return
                continue
            if not data.eventType & N.nvmlEventTypeXidCriticalError:
                continue
            index = by_handle.get(_handle_key(data.device))
            if index is None:
                continue
            with self._xid_lock:
                self._xid_counts[index] = self._xid_counts.get(index, 0) + 1
                self._xid_last[index] = int(data.eventData)

    def _stop_xid(self) -> None:
        self._xid_stop.set()
        if self._xid_thread is not None:
            self._xid_thread.join(timeout=2.0)
            self._xid_thread = None
        if self._event_set is not None:
            with contextlib.suppress(N.NVMLError):
                N.nvmlEventSetFree(self._event_set)
            self._event_set = None
