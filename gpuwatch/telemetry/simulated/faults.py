"""Fault injection: the schedule string and the live fault state the fake library consults.

Schedule grammar (comma-separated; ``@T`` = from simulated second T, default 0; ``I`` = device index
or ``*`` for every device)::

    lost:I[@T]             GPU_IS_LOST on every call for device I (others answer); Xid 79 is emitted
    notsup:I:CALL          NOT_SUPPORTED for one C symbol (or alias, see CALL_ALIASES) on device I
    noperm:I:CALL          NO_PERMISSION likewise
    slow:S  | slow:I:S     every call (or every call on device I) takes S more seconds
    crash[:I][@T]          the process dies with SIGSEGV on the next call (after T, for device I)
    init:KIND              nvmlInit fails: driver_not_loaded | lib_rm_version_mismatch | no_permission |
                           library_not_found | unknown
    xid:I:CODE[@T]         deliver Xid CODE on device I to registered event sets

Example: ``"lost:1@30,notsup:0:fan,slow:0.002"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pynvml

from gpuwatch.errors import UserError

#: Short names accepted for ``notsup``/``noperm``: each stands for every C symbol reading that quantity.
CALL_ALIASES: dict[str, tuple[str, ...]] = {
    "fan": (
        "nvmlDeviceGetFanSpeed",
        "nvmlDeviceGetFanSpeed_v2",
        "nvmlDeviceGetNumFans",
        "nvmlDeviceGetFanSpeedRPM",
        "nvmlDeviceGetTargetFanSpeed",
    ),
    "temperature": ("nvmlDeviceGetTemperature", "nvmlDeviceGetTemperatureV"),
    "power": ("nvmlDeviceGetPowerUsage",),
    "energy": ("nvmlDeviceGetTotalEnergyConsumption",),
    "clocks": ("nvmlDeviceGetClockInfo", "nvmlDeviceGetClock"),
    "memory": ("nvmlDeviceGetMemoryInfo", "nvmlDeviceGetMemoryInfo_v2"),
    "utilization": ("nvmlDeviceGetUtilizationRates",),
    "processes": (
        "nvmlDeviceGetComputeRunningProcesses",
        "nvmlDeviceGetComputeRunningProcesses_v2",
        "nvmlDeviceGetComputeRunningProcesses_v3",
        "nvmlDeviceGetGraphicsRunningProcesses",
        "nvmlDeviceGetGraphicsRunningProcesses_v2",
        "nvmlDeviceGetGraphicsRunningProcesses_v3",
    ),
    "fields": ("nvmlDeviceGetFieldValues",),
    "reasons": ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"),
    "pcie": ("nvmlDeviceGetPcieThroughput",),
    "gpm": ("nvmlGpmQueryDeviceSupport", "nvmlGpmSampleGet"),
}

INIT_ERRORS: dict[str, int] = {
    "driver_not_loaded": pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
    "lib_rm_version_mismatch": pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
    "no_permission": pynvml.NVML_ERROR_NO_PERMISSION,
    "library_not_found": pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
    "unknown": pynvml.NVML_ERROR_UNKNOWN,
}

ALL_DEVICES = -1


@dataclass(frozen=True)
class Fault:
    kind: str  # lost | notsup | noperm | slow | crash | init | xid
    device: int | None = None  # None = not device-bound; ALL_DEVICES = every device
    at_s: float = 0.0
    calls: tuple[str, ...] = ()
    latency_s: float = 0.0
    code: int = 0


@dataclass
class FaultState:
    """Active faults. Scheduled ones switch on when the simulated clock passes their time."""

    faults: list[Fault] = field(default_factory=list)
    fired_xids: set[int] = field(default_factory=set)  # id() of xid/lost faults already delivered

    def add(self, fault: Fault) -> None:
        self.faults.append(fault)

    def clear(self, device: int | None = None) -> None:
        if device is None:
            self.faults.clear()
        else:
            self.faults = [f for f in self.faults if f.device not in (device, ALL_DEVICES)]

    def _active(self, now_s: float) -> list[Fault]:
        return [f for f in self.faults if f.at_s <= now_s]

    def init_error(self, now_s: float) -> int:
        for f in self._active(now_s):
            if f.kind == "init":
                return f.code
        return 0

    def device_error(self, device: int, symbol: str, now_s: float) -> int:
        """The NVML return code a fault forces on this call, or 0."""
        for f in self._active(now_s):
            if f.device not in (device, ALL_DEVICES):
                continue
            if f.kind == "lost":
                return pynvml.NVML_ERROR_GPU_IS_LOST
            if f.kind == "notsup" and symbol in f.calls:
                return pynvml.NVML_ERROR_NOT_SUPPORTED
            if f.kind == "noperm" and symbol in f.calls:
                return pynvml.NVML_ERROR_NO_PERMISSION
        return 0

    def is_lost(self, device: int, now_s: float) -> bool:
        return any(f.kind == "lost" and f.device in (device, ALL_DEVICES) for f in self._active(now_s))

    def latency_s(self, device: int | None, now_s: float) -> float:
        return sum(
            f.latency_s
            for f in self._active(now_s)
            if f.kind == "slow" and (f.device in (None, ALL_DEVICES) or f.device == device)
        )

    def should_crash(self, device: int | None, now_s: float) -> bool:
        return any(
            f.kind == "crash" and (f.device in (None, ALL_DEVICES) or f.device == device)
            for f in self._active(now_s)
        )

    def next_xid_at_s(self) -> float | None:
        """Simulated time the earliest undelivered Xid (or lost card's Xid 79) falls due; None if none."""
        pending = [
            f.at_s
            for f in self.faults
            if f.kind in ("xid", "lost") and f.device is not None and id(f) not in self.fired_xids
        ]
        return min(pending, default=None)

    def due_xids(self, now_s: float) -> list[tuple[int, int]]:
        """(device, xid) events whose time has come and that were not delivered yet."""
        out = []
        for f in self._active(now_s):
            if f.kind in ("xid", "lost") and id(f) not in self.fired_xids and f.device is not None:
                self.fired_xids.add(id(f))
                out.append((f.device, f.code if f.kind == "xid" else 79))
        return out


def expand_call(call: str, entry: str | None = None) -> tuple[str, ...]:
    """An alias or one C symbol name -> the C symbols it stands for."""
    if call in CALL_ALIASES:
        return CALL_ALIASES[call]
    if not call.startswith("nvml"):
        raise UserError(
            f"fault {entry or call!r}: call {call!r} unknown; give a pynvml C symbol (nvmlDevice...) "
            f"or one of "
            f"{', '.join(sorted(CALL_ALIASES))}"
        )
    return (call,)


_AT_RE = re.compile(r"^(.*?)(?:@(\d+(?:\.\d*)?))?$")


def _device(text: str, entry: str) -> int:
    if text == "*":
        return ALL_DEVICES
    if not text.isdigit():
        raise UserError(f"fault {entry!r}: device must be an index or '*', got {text!r}")
    return int(text)


def _seconds(text: str, entry: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"fault {entry!r}: {text!r} is not a number of seconds") from None
    if value < 0:
        raise UserError(f"fault {entry!r}: seconds must be >= 0")
    return value


def parse_faults(spec: str | None) -> list[Fault]:
    """Parse a schedule string; UserError names the bad entry and the accepted forms."""
    if not spec:
        return []
    out: list[Fault] = []
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        m = _AT_RE.match(entry)
        assert m is not None  # the pattern matches any string
        body, at_text = m.group(1), m.group(2)
        at_s = float(at_text) if at_text else 0.0
        parts = body.split(":")
        kind = parts[0]
        args = parts[1:]
        if kind == "lost" and len(args) == 1:
            out.append(Fault("lost", _device(args[0], entry), at_s))
        elif kind in ("notsup", "noperm") and len(args) == 2:
            out.append(Fault(kind, _device(args[0], entry), at_s, calls=expand_call(args[1], entry)))
        elif kind == "slow" and len(args) == 1:
            out.append(Fault("slow", None, at_s, latency_s=_seconds(args[0], entry)))
        elif kind == "slow" and len(args) == 2:
            out.append(Fault("slow", _device(args[0], entry), at_s, latency_s=_seconds(args[1], entry)))
        elif kind == "crash" and len(args) <= 1:
            out.append(Fault("crash", _device(args[0], entry) if args else None, at_s))
        elif kind == "init" and len(args) == 1 and args[0] in INIT_ERRORS:
            out.append(Fault("init", None, at_s, code=INIT_ERRORS[args[0]]))
        elif kind == "xid" and len(args) == 2 and args[1].isdigit():
            out.append(Fault("xid", _device(args[0], entry), at_s, code=int(args[1])))
        else:
            raise UserError(
                f"bad fault {entry!r}; use lost:I[@T], notsup:I:CALL, noperm:I:CALL, slow:[I:]S, "
                f"crash[:I][@T], "
                f"init:{'|'.join(INIT_ERRORS)}, xid:I:CODE[@T]"
            )
    return out
