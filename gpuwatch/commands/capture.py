"""`gpuwatch capture FILE`: one JSON file holding what this box's NVML answers, for a bug report.

Every NVML call gpuwatch relies on (what ``shared/tools/nvml_probe.py`` probes), each with its answer or
error and its median latency; the support matrix ``gpuwatch doctor`` prints; a few seconds of samples;
and the ``nvml*`` symbols the driver exports (read from libnvidia-ml.so's ELF dynamic symbol table on a
real box, the driver profile's set on the simulator). Serials and UUIDs are masked unless --no-mask.
``gpuwatch --sim capture:FILE`` runs a simulated card from such a file, so a user's bug replays here.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pynvml as N

from gpuwatch import __version__
from gpuwatch.commands import SUMMARIES
from gpuwatch.commands.doctor import GPM_WAIT_S
from gpuwatch.errors import UserError
from gpuwatch.telemetry.nvml_reader import NvmlReader
from gpuwatch.telemetry.nvml_unavailable import unavailable_message
from gpuwatch.telemetry.simspec import SimSpec
from gpuwatch.telemetry.simulated.from_capture import CAPTURE_FIELDS, FORMAT

FORMAT_VERSION = 1
#: calls are timed as the median of this many repeats (as nvml_probe.py does)
REPEAT = 20
MASKED_UUID = "GPU-00000000-0000-0000-0000-000000000000"
#: what a capture's serial reads once masked (the nvidia_gpu_exporter captures use the same)
MASKED_SERIAL = "0000000000000"
_MAX_SAMPLE_S = 60.0


@dataclass(frozen=True)
class Probe:
    """One NVML question: a key in the capture, the C symbol behind it, and how to ask it."""

    key: str
    symbol: str
    call: Callable[[Any], Any]
    #: False for readings that move (power, clocks, temperatures): a round trip compares them loosely
    static: bool = True


def _with(fn: Callable[..., Any], *args: Any) -> Callable[[Any], Any]:
    """``fn(handle, *args)`` as a one-argument probe."""
    return lambda h: fn(h, *args)


C, T = N.NVML_CLOCK_SM, N.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN
PROBES: tuple[Probe, ...] = (
    Probe("Name", "nvmlDeviceGetName", N.nvmlDeviceGetName),
    Probe("UUID", "nvmlDeviceGetUUID", N.nvmlDeviceGetUUID),
    Probe("Serial", "nvmlDeviceGetSerial", N.nvmlDeviceGetSerial),
    Probe("PciInfo", "nvmlDeviceGetPciInfo_v3", N.nvmlDeviceGetPciInfo),
    Probe("Brand", "nvmlDeviceGetBrand", N.nvmlDeviceGetBrand),
    Probe("Architecture", "nvmlDeviceGetArchitecture", N.nvmlDeviceGetArchitecture),
    Probe(
        "CudaComputeCapability", "nvmlDeviceGetCudaComputeCapability", N.nvmlDeviceGetCudaComputeCapability
    ),
    Probe("NumGpuCores", "nvmlDeviceGetNumGpuCores", N.nvmlDeviceGetNumGpuCores),
    Probe("MemoryBusWidth", "nvmlDeviceGetMemoryBusWidth", N.nvmlDeviceGetMemoryBusWidth),
    *(
        Probe(f"MaxClock.{n}", "nvmlDeviceGetMaxClockInfo", _with(N.nvmlDeviceGetMaxClockInfo, k))
        for n, k in (("SM", C), ("MEM", N.NVML_CLOCK_MEM), ("VIDEO", N.NVML_CLOCK_VIDEO))
    ),
    Probe(
        "MaxCustomerBoostClock.SM",
        "nvmlDeviceGetMaxCustomerBoostClock",
        lambda h: N.nvmlDeviceGetMaxCustomerBoostClock(h, C),
    ),
    Probe(
        "ApplicationsClock.SM",
        "nvmlDeviceGetApplicationsClock",
        lambda h: N.nvmlDeviceGetApplicationsClock(h, C),
    ),
    *(
        Probe(f"Clock.{n}", "nvmlDeviceGetClockInfo", _with(N.nvmlDeviceGetClockInfo, k), False)
        for n, k in (("SM", C), ("MEM", N.NVML_CLOCK_MEM), ("VIDEO", N.NVML_CLOCK_VIDEO))
    ),
    Probe(
        "Temperature", "nvmlDeviceGetTemperature", lambda h: N.nvmlDeviceGetTemperature(h, 0), static=False
    ),
    *(
        Probe(
            f"Threshold.{n}",
            "nvmlDeviceGetTemperatureThreshold",
            _with(N.nvmlDeviceGetTemperatureThreshold, k),
        )
        for n, k in (
            ("SHUTDOWN", T),
            ("SLOWDOWN", N.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN),
            ("GPU_MAX", N.NVML_TEMPERATURE_THRESHOLD_GPU_MAX),
            ("MEM_MAX", N.NVML_TEMPERATURE_THRESHOLD_MEM_MAX),
            ("ACOUSTIC_CURR", N.NVML_TEMPERATURE_THRESHOLD_ACOUSTIC_CURR),
        )
    ),
    Probe("MarginTemperature", "nvmlDeviceGetMarginTemperature", N.nvmlDeviceGetMarginTemperature, False),
    Probe("PowerUsage", "nvmlDeviceGetPowerUsage", N.nvmlDeviceGetPowerUsage, static=False),
    Probe("PowerLimit", "nvmlDeviceGetPowerManagementLimit", N.nvmlDeviceGetPowerManagementLimit),
    Probe(
        "PowerDefaultLimit",
        "nvmlDeviceGetPowerManagementDefaultLimit",
        N.nvmlDeviceGetPowerManagementDefaultLimit,
    ),
    Probe(
        "PowerLimitConstraints",
        "nvmlDeviceGetPowerManagementLimitConstraints",
        N.nvmlDeviceGetPowerManagementLimitConstraints,
    ),
    Probe("PowerManagementMode", "nvmlDeviceGetPowerManagementMode", N.nvmlDeviceGetPowerManagementMode),
    Probe("TotalEnergy", "nvmlDeviceGetTotalEnergyConsumption", N.nvmlDeviceGetTotalEnergyConsumption, False),
    Probe(
        "MemoryInfo_v2",
        "nvmlDeviceGetMemoryInfo_v2",
        lambda h: N.nvmlDeviceGetMemoryInfo(h, version=N.nvmlMemory_v2),
        static=False,
    ),
    Probe("UtilizationRates", "nvmlDeviceGetUtilizationRates", N.nvmlDeviceGetUtilizationRates, False),
    Probe("EncoderUtilization", "nvmlDeviceGetEncoderUtilization", N.nvmlDeviceGetEncoderUtilization, False),
    Probe("EncoderStats", "nvmlDeviceGetEncoderStats", N.nvmlDeviceGetEncoderStats, static=False),
    Probe(
        "PcieThroughput.TX",
        "nvmlDeviceGetPcieThroughput",
        lambda h: N.nvmlDeviceGetPcieThroughput(h, N.NVML_PCIE_UTIL_TX_BYTES),
        static=False,
    ),
    Probe("PcieLinkGen", "nvmlDeviceGetCurrPcieLinkGeneration", N.nvmlDeviceGetCurrPcieLinkGeneration, False),
    Probe("MaxPcieLinkGen", "nvmlDeviceGetMaxPcieLinkGeneration", N.nvmlDeviceGetMaxPcieLinkGeneration),
    Probe(
        "GpuMaxPcieLinkGen", "nvmlDeviceGetGpuMaxPcieLinkGeneration", N.nvmlDeviceGetGpuMaxPcieLinkGeneration
    ),
    Probe("PcieLinkWidth", "nvmlDeviceGetCurrPcieLinkWidth", N.nvmlDeviceGetCurrPcieLinkWidth),
    Probe("MaxPcieLinkWidth", "nvmlDeviceGetMaxPcieLinkWidth", N.nvmlDeviceGetMaxPcieLinkWidth),
    Probe("PcieReplayCounter", "nvmlDeviceGetPcieReplayCounter", N.nvmlDeviceGetPcieReplayCounter),
    Probe("NumFans", "nvmlDeviceGetNumFans", N.nvmlDeviceGetNumFans),
    Probe("FanSpeed", "nvmlDeviceGetFanSpeed", N.nvmlDeviceGetFanSpeed, static=False),
    Probe("PerformanceState", "nvmlDeviceGetPerformanceState", N.nvmlDeviceGetPerformanceState, False),
    Probe(
        "ClocksEventReasons",
        "nvmlDeviceGetCurrentClocksEventReasons",
        N.nvmlDeviceGetCurrentClocksEventReasons,
        static=False,
    ),
    Probe(
        "SupportedClocksEventReasons",
        "nvmlDeviceGetSupportedClocksEventReasons",
        N.nvmlDeviceGetSupportedClocksEventReasons,
    ),
    Probe(
        "Violation.POWER",
        "nvmlDeviceGetViolationStatus",
        lambda h: N.nvmlDeviceGetViolationStatus(h, N.NVML_PERF_POLICY_POWER),
        static=False,
    ),
    Probe("EccMode", "nvmlDeviceGetEccMode", N.nvmlDeviceGetEccMode),
    Probe(
        "TotalEccErrors.UNCORR.VOLATILE",
        "nvmlDeviceGetTotalEccErrors",
        lambda h: N.nvmlDeviceGetTotalEccErrors(h, N.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, N.NVML_VOLATILE_ECC),
    ),
    Probe("RemappedRows", "nvmlDeviceGetRemappedRows", N.nvmlDeviceGetRemappedRows),
    Probe(
        "RetiredPages.SBE",
        "nvmlDeviceGetRetiredPages",
        lambda h: N.nvmlDeviceGetRetiredPages(h, N.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS),
    ),
    Probe("SupportedEventTypes", "nvmlDeviceGetSupportedEventTypes", N.nvmlDeviceGetSupportedEventTypes),
    Probe(
        "ComputeProcesses",
        "nvmlDeviceGetComputeRunningProcesses_v3",
        N.nvmlDeviceGetComputeRunningProcesses,
        static=False,
    ),
    Probe("MigMode", "nvmlDeviceGetMigMode", N.nvmlDeviceGetMigMode),
    Probe(
        "GpmSupport", "nvmlGpmQueryDeviceSupport", lambda h: N.nvmlGpmQueryDeviceSupport(h).isSupportedDevice
    ),
    Probe("PersistenceMode", "nvmlDeviceGetPersistenceMode", N.nvmlDeviceGetPersistenceMode),
    Probe("DisplayMode", "nvmlDeviceGetDisplayMode", N.nvmlDeviceGetDisplayMode),
)

#: field values probed one by one (a field can fail alone): capture key -> (field id, scope)
FIELDS = CAPTURE_FIELDS
#: field values that move (compared loosely on a round trip)
DYNAMIC_FIELDS = frozenset(
    {
        "FI.MEMORY_TEMP",
        "FI.POWER_AVERAGE",
        "FI.POWER_INSTANT",
        "FI.POWER_AVERAGE.MEMORY",
        "FI.TOTAL_ENERGY_CONSUMPTION",
        "FI.PCIE_COUNT_TX_BYTES",
        "FI.CLOCKS_EVENT_REASON_SW_POWER_CAP",
        "FI.CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN",
    }
)
_VALUE_MEMBER = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


def plain(v: Any) -> Any:
    """A pynvml answer as JSON: structs to dicts, arrays to lists, bytes to text."""
    if isinstance(v, bool | int | float | str) or v is None:
        return v
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    if isinstance(v, list | tuple):
        return [plain(x) for x in v]
    if isinstance(v, ctypes.Array):
        return [plain(x) for x in v]
    members = getattr(v, "_fields_", None)
    if members:
        return {m[0]: plain(getattr(v, m[0])) for m in members}
    if hasattr(v, "__dict__"):
        return {k: plain(x) for k, x in vars(v).items() if not k.startswith("_")}
    return repr(v)


def _error(exc: N.NVMLError) -> dict[str, Any]:
    code = int(getattr(exc, "value", -1))
    return {"error": type(exc).__name__, "code": code}


def _bind(fn: Callable[[Any], Any], handle: Any) -> Callable[[], Any]:
    return lambda: fn(handle)


def timed(fn: Callable[[], Any], repeat: int = REPEAT) -> dict[str, Any]:
    """The answer (or error) and the median latency of ``repeat`` calls, in microseconds."""
    samples: list[float] = []
    out: dict[str, Any] = {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        try:
            value = fn()
        except N.NVMLError as exc:
            samples.append(time.perf_counter() - t0)
            out = _error(exc)
            break
        samples.append(time.perf_counter() - t0)
        out = {"value": plain(value)}
    out["us"] = round(statistics.median(samples) * 1e6, 1)
    return out


def probe_device(handle: Any, repeat: int = REPEAT) -> dict[str, dict[str, Any]]:
    """Every probe and field of one device: key -> {"value": ..} or {"error", "code"}, with "us"."""
    out = {p.key: {"symbol": p.symbol, **timed(_bind(p.call, handle), repeat)} for p in PROBES}
    for key, (fid, scope) in FIELDS.items():
        t0 = time.perf_counter()
        try:
            (v,) = N.nvmlDeviceGetFieldValues(handle, [(fid, scope)])
        except N.NVMLError as exc:
            out[key] = {**_error(exc), "us": round((time.perf_counter() - t0) * 1e6, 1)}
            continue
        us = round((time.perf_counter() - t0) * 1e6, 1)
        if v.nvmlReturn != N.NVML_SUCCESS:
            err = N.NVMLError(v.nvmlReturn)
            out[key] = {"error": type(err).__name__, "code": int(v.nvmlReturn), "us": us}
        else:
            member = _VALUE_MEMBER.get(int(v.valueType), "ullVal")
            out[key] = {"value": plain(getattr(v.value, member)), "us": us}
    return out


def library_symbols(path: str | None = None) -> tuple[list[str], str]:
    """The ``nvml*`` functions libnvidia-ml.so exports (its ELF .dynsym), and where they were read.

    ``path`` None: the library the dynamic loader resolves for ``libnvidia-ml.so.1``.
    """
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    lib = path or _loaded_library_path()
    if lib is None:
        raise UserError("libnvidia-ml.so.1 not found; is the NVIDIA driver installed?")
    try:
        with open(lib, "rb") as f:
            elf = ELFFile(f)
            dynsym = elf.get_section_by_name(".dynsym")
            if not isinstance(dynsym, SymbolTableSection):
                raise UserError(f"{lib}: no dynamic symbol table")
            names = {
                sym.name.split("@", 1)[0]
                for sym in dynsym.iter_symbols()
                if sym.name.startswith("nvml")
                and sym["st_info"]["type"] == "STT_FUNC"
                and sym["st_shndx"] != "SHN_UNDEF"
            }
    except (OSError, ELFError) as exc:
        raise UserError(f"cannot read the symbols of {lib}: {exc}") from None
    return sorted(names), f"exported nvml* functions of {lib} (ELF .dynsym)"


def _loaded_library_path() -> str | None:
    """The path of the libnvidia-ml.so.1 this process has mapped (pynvml loaded it), else a search."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            for line in maps:
                if "libnvidia-ml.so" in line:
                    return line.split(None, 5)[-1].strip()
    except OSError:
        pass
    import ctypes.util

    found = ctypes.util.find_library("nvidia-ml")
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/lib/aarch64-linux-gnu"):
        candidate = os.path.join(d, found or "libnvidia-ml.so.1")
        if os.path.exists(candidate):
            return candidate
    return None


def _secrets(devices: list[dict[str, Any]]) -> dict[str, str]:
    """Real serials and UUIDs -> their masked stand-ins."""
    out: dict[str, str] = {}
    for dev in devices:
        for key, mask in (("UUID", MASKED_UUID), ("Serial", MASKED_SERIAL)):
            value = dev["calls"].get(key, {}).get("value")
            if isinstance(value, str) and value:
                out[value] = mask
    return out


def _mask(obj: Any, secrets: Mapping[str, str]) -> Any:
    if isinstance(obj, str):
        for real, masked in secrets.items():
            obj = obj.replace(real, masked)
        return obj
    if isinstance(obj, list):
        return [_mask(x, secrets) for x in obj]
    if isinstance(obj, dict):
        return {k: _mask(v, secrets) for k, v in obj.items()}
    return obj


def _matrix(reader: NvmlReader, gpu: Any) -> dict[str, str]:
    from gpuwatch.commands.doctor import MATRIX_ROWS, REASON_TEXT, _value

    out: dict[str, str] = {}
    for row in MATRIX_ROWS:
        reason = gpu.unavailable.get(row)
        if reason is not None:
            out[row] = REASON_TEXT[reason]
        elif _value(gpu, row) is None:
            out[row] = "no value"
        else:
            via = reader.devices[gpu.index].fallbacks.get(row)
            out[row] = f"ok via {via}" if via else "ok"
    return out


_SAMPLE_KEYS = (
    "power_w",
    "temperature_c",
    "sm_clock_hz",
    "memory_clock_hz",
    "sm_busy_ratio",
    "memory_used_bytes",
    "fan_speed_ratio",
    "performance_state",
    "clock_event_reasons",
    "pcie_link_gen",
)


def _samples(
    reader: NvmlReader, seconds: float, interval_s: float, sleep: Callable[[float], None]
) -> Iterator[Any]:
    t_end = time.monotonic() + seconds
    while True:
        snap = reader.read_all()
        yield snap
        if time.monotonic() + interval_s > t_end:
            return
        sleep(interval_s)


def build_capture(
    *,
    seconds: float = 3.0,
    interval_s: float = 0.5,
    mask: bool = True,
    repeat: int = REPEAT,
    simulated: Any = None,
    source: str = "NVML (real driver)",
) -> dict[str, Any]:
    """Probe every device, read the support matrix and samples; NVML must be usable (UserError if not)."""
    t0 = time.perf_counter()
    try:
        N.nvmlInit()
    except N.NVMLError as exc:
        raise UserError(unavailable_message(exc)) from None
    init_us = round((time.perf_counter() - t0) * 1e6, 1)
    try:
        system = {
            "init_us": init_us,
            "DriverVersion": timed(N.nvmlSystemGetDriverVersion, repeat),
            "NVMLVersion": timed(N.nvmlSystemGetNVMLVersion, repeat),
            "CudaDriverVersion": timed(N.nvmlSystemGetCudaDriverVersion, repeat),
            "Count": timed(N.nvmlDeviceGetCount, repeat),
        }
        devices: list[dict[str, Any]] = []
        for i in range(N.nvmlDeviceGetCount()):
            try:
                handle = N.nvmlDeviceGetHandleByIndex(i)
            except N.NVMLError as exc:
                devices.append({"index": i, "handle": _error(exc), "calls": {}})
                continue
            devices.append({"index": i, "calls": probe_device(handle, repeat)})
    finally:
        N.nvmlShutdown()
    if simulated is not None:
        names = sorted(simulated.driver.exported_symbols(_pynvml_symbols()))
        symbols: dict[str, Any] = {
            "source": f"simulated driver profile {simulated.driver.name}",
            "names": names,
        }
    else:
        try:
            names, where = library_symbols()
            symbols = {"source": where, "names": names}
        except UserError as exc:
            symbols = {"source": f"not read: {exc}", "names": None}
    reader = NvmlReader(
        source_label="sim" if simulated else "nvml", clock=simulated.now_s if simulated else None
    )
    reader.open()
    try:
        # GPM differences two reads >= 0.1 s apart: never sample faster than doctor waits between them
        step_s = min(interval_s, max(GPM_WAIT_S, seconds / 4))
        snaps = list(_samples(reader, seconds, step_s, time.sleep))
        last = snaps[-1]
        for gpu in last.gpus:
            if gpu.index < len(devices):
                devices[gpu.index]["support"] = _matrix(reader, gpu)
                devices[gpu.index]["samples"] = [
                    {"t_s": round(s.timestamp_s - snaps[0].timestamp_s, 3)}
                    | {k: getattr(g, k, None) for k in _SAMPLE_KEYS}
                    for s in snaps
                    for g in s.gpus
                    if g.index == gpu.index
                ]
    finally:
        reader.close()
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "gpuwatch": __version__,
        "nvidia_ml_py": _pynvml_version(),
        "source": source,
        "created_unix_s": round(time.time(), 3),
        "masked": mask,
        "system": system,
        "symbols": symbols,
        "devices": devices,
    }
    return _mask(doc, _secrets(devices)) if mask else doc


def _pynvml_version() -> str:
    try:
        return metadata.version("nvidia-ml-py")
    except metadata.PackageNotFoundError:
        return "not installed"


def _pynvml_symbols() -> frozenset[str]:
    """Every C symbol the installed pynvml may look up (for a simulated driver's exported set)."""
    import inspect

    text = inspect.getsource(N)
    return frozenset(re.findall(r'_nvmlGetFunctionPointer\("(nvml\w+)"\)', text))


def write_capture(path: Path, doc: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "capture",
        help=SUMMARIES["capture"],
        description="Probe every NVML call gpuwatch uses (answer or error, and latency), the support "
        "matrix, a few seconds of samples and the driver's nvml* symbols into FILE. Serials and UUIDs "
        "are masked unless --no-mask. `gpuwatch --sim capture:FILE` replays the card.",
    )
    p.add_argument("file", metavar="FILE", help="capture to write (JSON)")
    p.add_argument("--seconds", type=float, default=3.0, metavar="S", help="seconds of samples (default 3)")
    p.add_argument("--no-mask", dest="mask", action="store_false", help="keep serials and UUIDs")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not (0 < args.seconds <= _MAX_SAMPLE_S):
        raise UserError(f"--seconds must be > 0 and at most {_MAX_SAMPLE_S:.0f}, got {args.seconds}")
    if path.is_dir():
        raise UserError(f"{path} is a directory; give a file name such as capture.json")
    if not path.parent.exists():
        raise UserError(f"{path.parent} does not exist; create it or pick another path")
    sim = getattr(args, "sim", None)
    simulated: Any = None
    source = "NVML (real driver)"
    if sim is not None:
        spec = SimSpec(
            devices=sim,
            scenario=getattr(args, "scenario", None),
            seed=getattr(args, "seed", 0) or 0,
            time_scale=getattr(args, "time_scale", 1.0) or 1.0,
            faults=getattr(args, "faults", None),
        )
        simulated = spec.install()
        source = f"simulated NVML ({sim}, driver profile {simulated.driver.name})"
    try:
        doc = build_capture(seconds=args.seconds, mask=args.mask, simulated=simulated, source=source)
    finally:
        if simulated is not None:
            from gpuwatch.telemetry.simulated import uninstall

            uninstall()
    write_capture(path, doc)
    n = len(doc["devices"])
    masked = "serials and UUIDs masked" if args.mask else "NOT masked (--no-mask)"
    print(f"captured {n} GPU{'s' if n != 1 else ''} from {source} to {path} ({masked})", file=sys.stderr)
    return 0
