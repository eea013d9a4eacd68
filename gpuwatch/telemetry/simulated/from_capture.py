"""``--sim capture:FILE``: a simulated card built from a `gpuwatch capture` file.

Static facts (name, PCI id, memory, limits, max clocks, thresholds, fans, PCIe), which calls and fields
answer and with which error, and the driver's versions and exported symbols come from the capture;
what moves (power, heat, clocks under load) comes from the physics, seeded with the capture's idle
readings. Chip facts the capture cannot hold (peak FLOP/s, list price) come from the catalog entry the
capture's PCI id or name identifies; a card the catalog lacks gets a catalog entry made from the
capture alone (its peak is the CUDA-core FP32 rate: modelled, not sourced).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pynvml as N

from gpuwatch.errors import UserError
from gpuwatch.model.catalog import GpuSpec, get_gpu
from gpuwatch.model.errors import UnknownIdError
from gpuwatch.telemetry.simulated.profiles import (
    ARCH_CODES,
    DRIVER_PROFILES,
    DeviceProfile,
    DriverProfile,
    device_profile,
)

FORMAT = "gpuwatch-capture"
#: the largest capture file read (a real one is ~40 KB per GPU plus the symbol list)
MAX_BYTES = 16 << 20
_ARCH_NAMES = {code: name for name, code in ARCH_CODES.items()}
_MIB = 1 << 20
#: the field values a capture probes one by one (a field can fail alone): key -> (field id, scope)
CAPTURE_FIELDS: Mapping[str, tuple[int, int]] = {
    "FI.MEMORY_TEMP": (N.NVML_FI_DEV_MEMORY_TEMP, 0),
    "FI.POWER_AVERAGE": (N.NVML_FI_DEV_POWER_AVERAGE, N.NVML_POWER_SCOPE_GPU),
    "FI.POWER_INSTANT": (N.NVML_FI_DEV_POWER_INSTANT, N.NVML_POWER_SCOPE_GPU),
    "FI.POWER_AVERAGE.MODULE": (N.NVML_FI_DEV_POWER_AVERAGE, N.NVML_POWER_SCOPE_MODULE),
    "FI.POWER_AVERAGE.MEMORY": (N.NVML_FI_DEV_POWER_AVERAGE, N.NVML_POWER_SCOPE_MEMORY),
    "FI.TOTAL_ENERGY_CONSUMPTION": (N.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION, 0),
    "FI.TEMPERATURE_SHUTDOWN_TLIMIT": (N.NVML_FI_DEV_TEMPERATURE_SHUTDOWN_TLIMIT, 0),
    "FI.TEMPERATURE_SLOWDOWN_TLIMIT": (N.NVML_FI_DEV_TEMPERATURE_SLOWDOWN_TLIMIT, 0),
    "FI.TEMPERATURE_MEM_MAX_TLIMIT": (N.NVML_FI_DEV_TEMPERATURE_MEM_MAX_TLIMIT, 0),
    "FI.TEMPERATURE_GPU_MAX_TLIMIT": (N.NVML_FI_DEV_TEMPERATURE_GPU_MAX_TLIMIT, 0),
    "FI.PCIE_COUNT_TX_BYTES": (N.NVML_FI_DEV_PCIE_COUNT_TX_BYTES, 0),
    "FI.CLOCKS_EVENT_REASON_SW_POWER_CAP": (N.NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP, 0),
    "FI.CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN": (N.NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN, 0),
    "FI.NVLINK_LINK_COUNT": (N.NVML_FI_DEV_NVLINK_LINK_COUNT, 0),
    "FI.REMAPPED_COR": (N.NVML_FI_DEV_REMAPPED_COR, 0),
    "FI.ECC_DBE_VOL_TOTAL": (N.NVML_FI_DEV_ECC_DBE_VOL_TOTAL, 0),
    "FI.GET_GPU_RECOVERY_ACTION": (N.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION, 0),
}


def _load(path: str) -> dict[str, Any]:
    p = Path(path)
    try:
        if p.stat().st_size > MAX_BYTES:
            raise UserError(
                f"--sim capture:{path}: larger than {MAX_BYTES >> 20} MiB; not a gpuwatch capture"
            )
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(
            f"--sim capture:{path}: no such file; write one with `gpuwatch capture FILE`"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise UserError(f"--sim capture:{path}: not a gpuwatch capture ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not doc.get("devices"):
        raise UserError(f"--sim capture:{path}: not a gpuwatch capture (no 'format: {FORMAT}' with devices)")
    return doc


class _Calls:
    """The capture's answers of one device, read defensively (a hand-edited file must not traceback)."""

    def __init__(self, calls: Mapping[str, Any]) -> None:
        self.calls = calls

    def ok(self, key: str) -> bool:
        entry = self.calls.get(key)
        return isinstance(entry, dict) and "value" in entry

    def value(self, key: str, default: Any = None) -> Any:
        entry = self.calls.get(key)
        return entry["value"] if isinstance(entry, dict) and "value" in entry else default

    def number(self, key: str, default: float | None = None) -> float | None:
        v = self.value(key)
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else default

    def member(self, key: str, name: str) -> float | None:
        v = self.value(key)
        x = v.get(name) if isinstance(v, dict) else None
        return float(x) if isinstance(x, int | float) else None

    def pair(self, key: str) -> tuple[float, float] | None:
        v = self.value(key)
        if isinstance(v, list) and len(v) >= 2 and all(isinstance(x, int | float) for x in v[:2]):
            return float(v[0]), float(v[1])
        return None


def _chip(c: _Calls, path: str) -> GpuSpec:
    name = c.value("Name")
    if not isinstance(name, str) or not name:
        raise UserError(f"--sim capture:{path}: the capture has no device name (nvmlDeviceGetName failed)")
    pci = c.member("PciInfo", "pciDeviceId")
    for key in (int(pci) if pci else None, name):
        if key is None:
            continue
        try:
            spec = get_gpu(key)
        except UnknownIdError:
            continue
        return replace(spec, nvml_names=(name, *spec.nvml_names))
    # not in the catalog: an entry from the capture alone
    mem = c.member("MemoryInfo_v2", "total") or 0.0
    bus = c.number("MemoryBusWidth", 256.0) or 256.0
    mem_mhz = c.number("MaxClock.MEM", 1000.0) or 1000.0
    sm_mhz = c.number("MaxClock.SM", 1500.0) or 1500.0
    cores = c.number("NumGpuCores", 1024.0) or 1024.0
    arch = _ARCH_NAMES.get(int(c.number("Architecture", 0) or 0), "unknown")
    default_w = (c.number("PowerDefaultLimit", 250_000.0) or 250_000.0) / 1000
    fp32 = cores * 2 * sm_mhz * 1e6
    return GpuSpec(
        id="capture",
        name=name,
        vendor="nvidia",
        architecture=arch,
        segment="geforce" if c.value("Brand") == N.NVML_BRAND_GEFORCE else "datacenter",
        memory_bytes=int(mem),
        memory_type="HBM" if c.ok("FI.POWER_AVERAGE.MEMORY") else "GDDR",
        memory_bandwidth_bytes_s=2 * mem_mhz * 1e6 * bus / 8,
        memory_bus_width_bits=int(bus),
        peak_flops={"fp16": fp32, "fp32": fp32},
        tdp_w=default_w,
        boost_clock_hz=sm_mhz * 1e6,
        pcie_gen=int(c.number("GpuMaxPcieLinkGen", 4) or 4),
        pcie_lanes=int(c.number("MaxPcieLinkWidth", 16) or 16),
        nvlink_bytes_s=None,
        list_price_usd=None,
        nvml_names=(name,),
        pci_device_ids=(int(pci),) if pci else (),
        sources={"*": f"capture {path}; peak_flops modelled as CUDA cores x 2 x max SM clock (not sourced)"},
    )


def _forced_errors(calls: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
    """C symbols every probe of which failed with one code (a symbol probed with several arguments
    that answered some of them is left to the profile's facts)."""
    by_symbol: dict[str, set[int | None]] = defaultdict(set)
    for entry in calls.values():
        if not isinstance(entry, dict) or not isinstance(entry.get("symbol"), str):
            continue
        code = entry.get("code") if "error" in entry else None
        by_symbol[entry["symbol"]].add(code if isinstance(code, int) else None)
    out: list[tuple[str, int]] = []
    for sym, codes in by_symbol.items():
        only = next(iter(codes)) if len(codes) == 1 else None
        if only is not None:
            out.append((sym, only))
    return tuple(sorted(out))


def _field_errors(calls: Mapping[str, Any]) -> tuple[tuple[int, int, int], ...]:
    out = []
    for key, (fid, scope) in CAPTURE_FIELDS.items():
        entry = calls.get(key)
        if isinstance(entry, dict) and isinstance(entry.get("code"), int) and "error" in entry:
            out.append((fid, scope, int(entry["code"])))
    return tuple(out)


def _idle_readings(dev: Mapping[str, Any]) -> dict[str, float]:
    """The quietest idle sample's power, clocks, temperature and link generation (the physics starts
    from these): only samples with the GPU-idle clock-event reason count, since a busy card's clocks and
    power say nothing about its idle state."""
    samples = [s for s in dev.get("samples") or [] if isinstance(s, dict)]
    idle = [
        s
        for s in samples
        if isinstance(s.get("power_w"), int | float)
        and isinstance(s.get("clock_event_reasons"), int)
        and s["clock_event_reasons"] & 0x1
    ]
    if not idle:
        return {}
    quiet = min(idle, key=lambda s: s["power_w"])
    return {k: float(v) for k, v in quiet.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _idle_used_mib(c: _Calls) -> int:
    """Memory used with the processes' share taken out: what the driver (and a desktop) holds."""
    used = c.member("MemoryInfo_v2", "used") or 0.0
    procs = c.value("ComputeProcesses", [])
    held = sum(
        p["usedGpuMemory"]
        for p in procs
        if isinstance(p, dict) and isinstance(p.get("usedGpuMemory"), int) and p["usedGpuMemory"] < 2**63
    )
    return max(0, int(used - held)) // _MIB


def _profile(chip: GpuSpec, c: _Calls, dev: Mapping[str, Any], path: str) -> DeviceProfile:
    try:
        base = device_profile(chip.id)
    except UnknownIdError:
        base = device_profile("rtx4090" if chip.segment == "geforce" else "h100-sxm")
    idle = _idle_readings(dev)
    lo_hi = c.pair("PowerLimitConstraints")
    shutdown = c.number("Threshold.SHUTDOWN")
    slowdown = c.number("Threshold.SLOWDOWN")
    gpu_max = c.number("Threshold.GPU_MAX")
    t_shutdown = c.number("FI.TEMPERATURE_SHUTDOWN_TLIMIT")
    t_slowdown = c.number("FI.TEMPERATURE_SLOWDOWN_TLIMIT")
    max_op = gpu_max if gpu_max is not None else base.max_operating_c
    margin = c.number("MarginTemperature")
    temp = c.number("Temperature")
    if gpu_max is None and margin is not None and temp is not None:
        max_op = temp + margin  # T.Limit parts report the margin, not the limit
    ecc = c.pair("EccMode")
    fans = int(c.number("NumFans", 0) or 0) if c.ok("NumFans") else 0
    mem = c.value("MemoryInfo_v2")
    default_w = (c.number("PowerDefaultLimit") or base.power_default_w * 1000) / 1000
    scale = default_w / base.power_default_w if base.power_default_w else 1.0
    # a card captured busy: its idle power is not known; the base profile's, scaled to its power limit
    power_idle = idle.get("power_w", base.power_idle_w * scale)
    sm_idle = idle.get("sm_clock_hz", base.sm_clock_idle_mhz * 1e6) / 1e6
    mem_idle = idle.get("memory_clock_hz", base.memory_clock_idle_mhz * 1e6) / 1e6
    return replace(
        base,
        id="capture",
        pci_device_id=int(c.member("PciInfo", "pciDeviceId") or base.pci_device_id),
        sm_clock_max_mhz=int(c.number("MaxClock.SM", base.sm_clock_max_mhz) or 0),
        memory_clock_max_mhz=int(c.number("MaxClock.MEM", base.memory_clock_max_mhz) or 0),
        video_clock_max_mhz=int(c.number("MaxClock.VIDEO", base.video_clock_max_mhz) or 0),
        sm_clock_idle_mhz=round(sm_idle),
        memory_clock_idle_mhz=round(mem_idle),
        sm_clock_load_mhz=min(base.sm_clock_load_mhz, int(c.number("MaxClock.SM", 1e9) or 1e9)),
        power_default_w=default_w,
        power_min_w=lo_hi[0] / 1000 if lo_hi else base.power_min_w,
        power_max_w=lo_hi[1] / 1000 if lo_hi else base.power_max_w,
        power_idle_w=power_idle,
        power_full_load_w=base.power_full_load_w * scale,
        max_operating_c=max_op,
        shutdown_tlimit_c=t_shutdown
        if t_shutdown is not None
        else (max_op - shutdown if shutdown is not None else base.shutdown_tlimit_c),
        slowdown_tlimit_c=t_slowdown
        if t_slowdown is not None
        else (max_op - slowdown if slowdown is not None else base.slowdown_tlimit_c),
        memory_max_operating_c=c.number("Threshold.MEM_MAX")
        if c.ok("Threshold.MEM_MAX")
        else (base.memory_max_operating_c if c.ok("FI.MEMORY_TEMP") else None),
        num_fans=fans,
        cuda_cores=int(c.number("NumGpuCores", base.cuda_cores) or 0),
        compute_capability=(lambda cc: (int(cc[0]), int(cc[1])) if cc else base.compute_capability)(
            c.pair("CudaComputeCapability")
        ),
        max_customer_boost_mhz=int(v) if (v := c.number("MaxCustomerBoostClock.SM")) is not None else None,
        applications_clocks_mhz=base.applications_clocks_mhz if c.ok("ApplicationsClock.SM") else None,
        ecc=bool(ecc and ecc[0]),
        ecc_reported=ecc is not None,
        mig=c.ok("MigMode"),
        gpm=bool(c.value("GpmSupport")),
        nvlink_links=int(c.number("FI.NVLINK_LINK_COUNT", 0) or 0),
        pcie_gen_max=int(c.number("GpuMaxPcieLinkGen", base.pcie_gen_max) or 0),
        pcie_lanes=int(c.number("MaxPcieLinkWidth", base.pcie_lanes) or 0),
        pcie_idle_gen=int(idle["pcie_link_gen"]) if "pcie_link_gen" in idle else base.pcie_idle_gen,
        tlimit_fields=c.ok("FI.TEMPERATURE_SHUTDOWN_TLIMIT"),
        target_temperature_c=c.number("Threshold.ACOUSTIC_CURR"),
        brand="geforce" if c.value("Brand") == N.NVML_BRAND_GEFORCE else "nvidia",
        memory_total_mib=int(mem["total"]) // _MIB if isinstance(mem, dict) and "total" in mem else None,
        memory_reserved_mib=int(mem["reserved"]) // _MIB
        if isinstance(mem, dict) and "reserved" in mem
        else None,
        memory_used_idle_mib=_idle_used_mib(c),
        power_average_field=c.ok("FI.POWER_AVERAGE"),
        fan_min_ratio=base.fan_min_ratio,
        inlet_c=base.inlet_c,
        heat_capacity_j_per_k=base.heat_capacity_j_per_k * scale,
        conductance_passive_w_per_k=base.conductance_passive_w_per_k * scale,
        conductance_fan_w_per_k=base.conductance_fan_w_per_k * scale,
        driver=None,
        capture=path,
        forced_errors=_forced_errors(c.calls),
        forced_field_errors=_field_errors(c.calls),
        source=f"gpuwatch capture {path}: static facts and supported set; dynamics from the physics of the "
        f"{base.id} profile scaled to the captured power limit",
        generic=False,
    )


def _driver(doc: Mapping[str, Any], path: str) -> DriverProfile:
    system = doc.get("system") if isinstance(doc.get("system"), dict) else {}
    sc = _Calls(system)  # type: ignore[arg-type]
    version = sc.value("DriverVersion")
    if not isinstance(version, str) or not version.split(".")[0].isdigit():
        raise UserError(f"--sim capture:{path}: the capture has no driver version")
    branch = int(version.split(".")[0])
    nearest = min(DRIVER_PROFILES.values(), key=lambda d: abs(d.branch - branch))
    symbols = doc.get("symbols") if isinstance(doc.get("symbols"), dict) else {}
    names = symbols.get("names") if isinstance(symbols, dict) else None
    exported = frozenset(n for n in names if isinstance(n, str)) if isinstance(names, list) else None
    deprecated = frozenset(
        e["symbol"]
        for dev in doc.get("devices", [])
        if isinstance(dev, dict)
        for e in (dev.get("calls") or {}).values()
        if isinstance(e, dict)
        and e.get("code") == N.NVML_ERROR_DEPRECATED
        and isinstance(e.get("symbol"), str)
    )
    return DriverProfile(
        name=f"capture ({version})",
        branch=branch,
        driver_version=version,
        nvml_version=str(sc.value("NVMLVersion", nearest.nvml_version)),
        cuda_driver_version=int(sc.number("CudaDriverVersion", nearest.cuda_driver_version) or 0),
        symbols=exported if exported else nearest.captured_symbols(),
        deprecated=deprecated,
        source=f"gpuwatch capture {path}",
    )


def capture_device_count(path: str) -> int:
    """How many GPUs a capture holds (each becomes one simulated device)."""
    return len(_load(path)["devices"])


def load_capture_device(path: str, index: int = 0) -> tuple[GpuSpec, DeviceProfile, DriverProfile]:
    """(chip, profile, driver) of GPU ``index`` in a `gpuwatch capture` file; UserError if unreadable."""
    doc = _load(path)
    devices = doc["devices"]
    dev = devices[index] if 0 <= index < len(devices) else None
    if not isinstance(dev, dict) or not isinstance(dev.get("calls"), dict) or not dev["calls"]:
        raise UserError(f"--sim capture:{path}: its GPU {index} has no calls (it was not readable)")
    c = _Calls(dev["calls"])
    try:
        chip = _chip(c, path)
        return chip, _profile(chip, c, dev, path), _driver(doc, path)
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
        # a hand-edited or truncated file: name it, never a traceback
        raise UserError(
            f"--sim capture:{path}: GPU {index}: malformed capture ({type(exc).__name__}: {exc})"
        ) from None
