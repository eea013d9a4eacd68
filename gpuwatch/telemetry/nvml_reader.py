"""The device reader: one NVML session, reading every GPU through the real ``pynvml`` into samples.

Why it looks the way it does (see shared/domain/nvml-notes.md):
- Handles, static data and "does this device support this call" are cached per device
  (:mod:`~gpuwatch.telemetry.nvml_calls`); an unsupported call is never retried.
- Newer, non-deprecated symbols first (``TemperatureV``, ``ClocksEventReasons``, field values),
  falling back to the older symbol only when the driver lacks the new one (FunctionNotFound).
- Field values (:mod:`~gpuwatch.telemetry.nvml_fields`), GPM (:mod:`~gpuwatch.telemetry.nvml_gpm`) and
  Xid events (:mod:`~gpuwatch.telemetry.nvml_xid`) live in their own modules.
- The card is matched to the catalog once, at attach, by ``model.catalog.identify_gpu``; the result
  travels on every sample as ``GpuSample.catalog_id``.
- An error on one reading costs that reading; GPU_IS_LOST costs that GPU; the poller decides when to
  re-initialise.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pynvml as N

from gpuwatch.model.catalog import identify_gpu
from gpuwatch.telemetry.nvml_calls import (
    PERMANENT,
    SESSION_ERRORS,
    DeviceRead,
    DeviceState,
    GpuLostError,
    classify,
    text,
)
from gpuwatch.telemetry.nvml_fields import (
    SLOW_READINGS,
    TLIMIT_FIELDS,
    read_fields,
    read_nvlink_link_count,
    read_tier_fields,
)
from gpuwatch.telemetry.nvml_gpm import free_gpm, probe_gpm, read_gpm
from gpuwatch.telemetry.nvml_xid import XidWatcher
from gpuwatch.telemetry.sample import READING_NAMES, GpuSample, ProcessSample, Snapshot, Unavailable

if TYPE_CHECKING:
    from gpuwatch.telemetry.containers import ContainerResolver

__all__ = ["PCIE_THROUGHPUT_KB_BYTES", "READING_NAMES", "DeviceState", "NvmlReader"]

#: nvmlDeviceGetPcieThroughput answers "KB/s"; 1024 bytes per KB, as nvitop reads it (api/device.py
#: ``pcie_throughput``: "in KiB/s"). tests/test_poller.py holds this against nvidia-smi's own readings.
PCIE_THROUGHPUT_KB_BYTES = 1024

#: Slow-tier period in polls (processes, reliability counters)
SLOW_TIER_EVERY = 5

log = logging.getLogger(__name__)

#: |NVML peak - catalog peak| / catalog above which the mismatch is logged (and shown by doctor)
BANDWIDTH_MISMATCH_RATIO = 0.10


def identity(dev: DeviceState) -> dict[str, Any]:
    """The identity fields every sample of this device carries (also when lost or not read)."""
    return {
        "index": dev.index,
        "uuid": dev.uuid,
        "name": dev.name,
        "pci_bus_id": dev.pci_bus_id,
        "pci_device_id": dev.pci_device_id,
        "catalog_id": dev.catalog.id if dev.catalog is not None else None,
        "read_timestamp_s": dev.read_timestamp_s,
    }


def _from_milli(value: Any) -> float:
    """NVML's mW / mJ -> W / J."""
    return float(value) / 1000.0


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
        self.containers = containers
        if containers is None and source_label == "nvml":
            from gpuwatch.telemetry.containers import ContainerResolver  # not in a simulated child

            self.containers = ContainerResolver()
        self.source_label = source_label
        self.clock = clock or time.time
        self.devices: list[DeviceState] = []
        self.driver_version: str | None = None
        self.nvml_version: str | None = None
        self.cuda_driver_version: int | None = None
        self.session_broken = False
        self._open = False
        self.xid = XidWatcher(enabled=xid_events)

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
        self.xid.start(self.devices)

    def close(self) -> None:
        self.xid.stop()
        for dev in self.devices:
            free_gpm(dev)
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
        free_gpm(dev)
        self._attach(dev)
        if not dev.lost:
            self.xid.register(dev)
        return not dev.lost

    @property
    def needs_reinit(self) -> bool:
        return self.session_broken or any(d.lost for d in self.devices)

    def _system(self, fn: Callable[[], Any]) -> Any:
        try:
            value = fn()
        except N.NVMLError:
            return None
        return text(value) if isinstance(value, bytes | str) else value

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
        r = DeviceRead(dev, errors, self._mark_session_broken)
        h = dev.handle
        dev.polls = 0  # a (re)attached card reads its slow tier on the next poll
        dev.uuid = text(N.nvmlDeviceGetUUID(h))
        dev.name = text(N.nvmlDeviceGetName(h))
        pci = r.call("nvmlDeviceGetPciInfo_v3", N.nvmlDeviceGetPciInfo_v3, h)
        if pci is not None:
            dev.pci_bus_id = text(pci.busId)
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
        dev.catalog = identify_gpu(dev.pci_device_id, dev.name)
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
        r.read_into(
            static, "vbios_version", text, "nvmlDeviceGetVbiosVersion", N.nvmlDeviceGetVbiosVersion, h
        )
        r.read_into(
            static,
            "compute_capability",
            lambda cc: f"{cc[0]}.{cc[1]}",
            "nvmlDeviceGetCudaComputeCapability",
            N.nvmlDeviceGetCudaComputeCapability,
            h,
        )
        dev.nvlink_links = read_nvlink_link_count(dev, r)
        fans = r.call("nvmlDeviceGetNumFans", N.nvmlDeviceGetNumFans, h)
        dev.num_fans = int(fans) if fans is not None else None
        dev.thresholds = self._read_thresholds(dev, r)
        probe_gpm(dev, r)
        dev.static = static
        dev.static_unavailable = dict(r.unavailable)

    def _peak_bandwidth(self, dev: DeviceState, static: dict[str, Any], r: DeviceRead) -> None:
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

    def _read_thresholds(self, dev: DeviceState, r: DeviceRead) -> tuple[str, dict[str, float]] | None:
        """Ada+: T.Limit offsets (fields 193-196, read with the live margin); older: absolute thresholds."""
        if "nvmlDeviceGetFieldValues" not in dev.unsupported:
            values = read_fields(dev, r, list(TLIMIT_FIELDS))
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
        xids, last_xid, _ = self.xid.counts(dev.index)
        return GpuSample(
            **identity(dev),
            lost=True,
            xid_errors_total=xids,
            last_xid=last_xid,
            xid_errors_by_code=self.xid.by_code(dev.index),
            unavailable=dict.fromkeys(READING_NAMES, Unavailable.GPU_LOST),
        )

    def read_device(self, index: int, errors: Counter[str] | None = None) -> GpuSample:
        """One device's fast-tier readings; GPU_IS_LOST marks it lost and returns a lost sample."""
        dev = self.devices[index]
        errors = errors if errors is not None else Counter()
        if not self._open:
            # a re-init failed: nothing was read, so nothing is current (not "up" with empty readings)
            return GpuSample(
                **identity(dev),
                lost=dev.lost,
                stale=True,
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
        r = DeviceRead(dev, errors, self._mark_session_broken)
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
        read_tier_fields(dev, r, slow_due)

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
            ("video_clock_hz", N.NVML_CLOCK_VIDEO),
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
            v["memory_free_bytes"] = int(mem.free)
            if hasattr(mem, "reserved"):  # nvmlMemory_v2; v1's "used" includes what is reserved
                v["memory_reserved_bytes"] = int(mem.reserved)
            else:
                r.mark(["memory_reserved_bytes"], Unavailable.FUNCTION_NOT_FOUND)
        else:
            r.mark(["memory_free_bytes", "memory_reserved_bytes"], r.last_reason)
        for reading, key in (
            ("encoder_util_ratio", "nvmlDeviceGetEncoderUtilization"),
            ("decoder_util_ratio", "nvmlDeviceGetDecoderUtilization"),
        ):
            r.read_into(v, reading, lambda answer: answer[0] / 100.0, key, getattr(N, key), h)
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
            r.read_into(
                v,
                "pcie_replay_errors_total",
                int,
                "nvmlDeviceGetPcieReplayCounter",
                N.nvmlDeviceGetPcieReplayCounter,
                h,
            )
            v["processes"] = self._processes(dev, r)
            dev.slow = {k: v[k] for k in SLOW_READINGS if k in v}
            dev.slow_unavailable = {k: r.unavailable[k] for k in SLOW_READINGS if k in r.unavailable}
        else:
            v.update(dev.slow)
            r.unavailable.update(dev.slow_unavailable)
        v["gpm"] = read_gpm(dev, r, self.clock())
        for key, value in list(v.items()):
            if value is not None:
                r.unavailable.pop(key, None)
        v["xid_errors_total"], v["last_xid"], xid_reason = self.xid.counts(dev.index)
        v["xid_errors_by_code"] = self.xid.by_code(dev.index)
        if xid_reason is not None:
            r.unavailable["xid_errors_total"] = xid_reason
        dev.read_timestamp_s = self.clock()
        return GpuSample(**identity(dev), unavailable=r.unavailable, **v)

    def _thresholds(self, dev: DeviceState, r: DeviceRead, temp_c: float | None) -> None:
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

    def _fan(self, dev: DeviceState, r: DeviceRead) -> None:
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

    def _processes(self, dev: DeviceState, r: DeviceRead) -> tuple[ProcessSample, ...] | None:
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
            return text(N.nvmlSystemGetProcessName(pid)) or None
        except N.NVMLError as exc:
            reason = classify(exc.value)
            if reason in PERMANENT and reason is not Unavailable.NO_PERMISSION:
                dev.unsupported["nvmlSystemGetProcessName"] = reason
            return None
