"""The stand-in for ``libnvidia-ml.so.1`` at the ctypes symbol level.

pynvml calls ``getattr(nvmlLib, "nvmlDeviceGet...")`` and then the result with ctypes arguments
(``byref(struct)``, ``c_uint(...)``, string buffers, device handles that are opaque pointers). Each
symbol here receives exactly those arguments, writes into the caller's ctypes objects as the C library
would, and returns an ``nvmlReturn_t`` code; pynvml turns codes into its ``NVMLError_*`` subclasses.

* A symbol the driver profile does not export raises AttributeError (pynvml: FunctionNotFound).
* A symbol the driver exports but the simulator does not implement answers NOT_SUPPORTED.
* Calls on a device handle pass through the fault state first (GPU lost, per-call NOT_SUPPORTED...).
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pynvml as N

from gpuwatch.telemetry.nvml_reader import PCIE_THROUGHPUT_KB_BYTES
from gpuwatch.telemetry.simulated.physics import (
    REASON_GPU_IDLE,
    REASON_HW_SLOWDOWN,
    REASON_HW_THERMAL,
    REASON_SW_POWER_CAP,
    REASON_SW_THERMAL,
    Counters,
    SimDevice,
)
from gpuwatch.telemetry.simulated.profiles import ARCH_CODES, nvml_name
from gpuwatch.telemetry.simulated.simulator import EventSet, GpmSampleSlot, SimulatedNvml

OK = N.NVML_SUCCESS
NOT_SUPPORTED = N.NVML_ERROR_NOT_SUPPORTED
INVALID = N.NVML_ERROR_INVALID_ARGUMENT

_HANDLE_BASE = 0x5E100000
_HANDLE_STRIDE = 0x100
_NO_INSTANCE = 0xFFFFFFFF
_PCI_BUSES = (0x01, 0x25, 0x41, 0x61, 0x81, 0xA1, 0xC1, 0xE1)

#: nvmlErrorString texts (nvml.h / what nvidia-smi prints).
_ERROR_STRINGS = {
    0: "Success",
    1: "Uninitialized",
    2: "Invalid Argument",
    3: "Not Supported",
    4: "Insufficient Permissions",
    5: "Already Initialized",
    6: "Not Found",
    7: "Insufficient Size",
    8: "Insufficient External Power",
    9: "Driver Not Loaded",
    10: "Timeout",
    11: "Interrupt request issued",
    12: "NVML Shared Library Not Found",
    13: "Function Not Found",
    14: "Corrupted infoROM",
    15: "GPU is lost",
    16: "GPU requires restart",
    17: "Operating System not supported",
    18: "RM has detected an NVML/RM version mismatch.",
    19: "In use by another client",
    20: "Insufficient Memory",
    21: "No data",
    22: "The requested vgpu operation is not available on target device because ECC is enabled",
    23: "Ran out of critical resources, other than memory",
    25: "Argument version mismatch",
    26: "Requested functionality has been deprecated",
    999: "Unknown Error",
}

Impl = Callable[..., int]
_SYSTEM: dict[str, Impl] = {}  # symbol -> fn(lib, *args)
_DEVICE: dict[str, Impl] = {}  # symbol -> fn(lib, dev, *args) (first C argument is a device handle)


def system(*symbols: str) -> Callable[[Impl], Impl]:
    def deco(fn: Impl) -> Impl:
        for s in symbols:
            _SYSTEM[s] = fn
        return fn

    return deco


def device(*symbols: str) -> Callable[[Impl], Impl]:
    def deco(fn: Impl) -> Impl:
        for s in symbols:
            _DEVICE[s] = fn
        return fn

    return deco


# --- ctypes plumbing ---


def _obj(arg: Any) -> Any:
    """The ctypes object behind ``byref(x)`` (or ``x`` itself)."""
    return getattr(arg, "_obj", arg)


def _int(arg: Any) -> int:
    return int(arg.value) if hasattr(arg, "value") else int(arg)


def _set(out: Any, value: int | float) -> None:
    _obj(out).value = value


def _address(ptr: Any) -> int:
    """Numeric value of an opaque handle (a ctypes pointer instance, a c_void_p or an int)."""
    if ptr is None:
        return 0
    if isinstance(ptr, int):
        return ptr
    return ctypes.cast(ptr, ctypes.c_void_p).value or 0


def _write_pointer(out: Any, address: int) -> None:
    """Store an opaque handle into the caller's pointer variable passed by reference."""
    target = _obj(out)
    ctypes.cast(ctypes.pointer(target), ctypes.POINTER(ctypes.c_void_p))[0] = address


def _write_string(buf: Any, size: Any, text: str) -> int:
    data = text.encode()
    if len(data) + 1 > _int(size):
        return N.NVML_ERROR_INSUFFICIENT_SIZE
    buf.value = data
    return OK


def _mw(watts: float) -> int:
    return round(watts * 1000)


def handle_address(index: int) -> int:
    return _HANDLE_BASE + index * _HANDLE_STRIDE


def _sha256() -> Any:
    """SHA-256 without ``hashlib``, whose OpenSSL backend (libcrypto) costs the light NVML child ~3 MiB."""
    try:
        from _sha256 import sha256  # CPython 3.11

        return sha256
    except ImportError:
        try:
            from _sha2 import sha256  # type: ignore[import-not-found,unused-ignore]  # CPython 3.12+

            return sha256
        except ImportError:  # another interpreter: the same digest through hashlib
            import hashlib

            return hashlib.sha256


def uuid_of(sim: SimulatedNvml, index: int) -> str:
    h = _sha256()(f"gpuwatch-sim:{sim.seed}:{index}:{sim.devices[index].profile.id}".encode()).hexdigest()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def pci_bus_of(index: int) -> int:
    return _PCI_BUSES[index] if index < len(_PCI_BUSES) else (index & 0xFF)


def bus_id_of(index: int) -> str:
    return f"00000000:{pci_bus_of(index):02X}:00.0"


class FakeNvmlLib:
    """Looks like a CDLL to pynvml; see the module docstring."""

    def __init__(self, sim: SimulatedNvml) -> None:
        self.sim = sim

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or not name.startswith("nvml"):
            raise AttributeError(name)
        if not self.sim.driver.has_symbol(name):
            raise AttributeError(f"{self.sim.driver.driver_version} exports no {name}")
        sim = self.sim
        if name in _DEVICE:
            dev_impl = _DEVICE[name]

            def device_call(handle: Any, *args: Any) -> int:
                index = self._index_of(handle)
                self._before(name, index)
                with sim.lock:
                    sim.calls[name] = sim.calls.get(name, 0) + 1
                    if not sim.init_refcount:
                        return N.NVML_ERROR_UNINITIALIZED
                    if index is None:
                        return INVALID
                    now = sim.sync(index)
                    forced = sim.faults.device_error(index, name, now)
                    if forced:
                        return forced
                    if name in sim.driver.deprecated:
                        return N.NVML_ERROR_DEPRECATED
                    dev = sim.devices[index]
                    for symbol, code in dev.profile.forced_errors:  # a replayed capture's errors
                        if symbol == name:
                            return code
                    return dev_impl(self, sim.devices[index], *args)

            device_call.__name__ = name
            return device_call
        sys_impl = _SYSTEM.get(name)

        def system_call(*args: Any) -> Any:
            if name != "nvmlErrorString":
                self._before(name, None)
            with sim.lock:
                sim.calls[name] = sim.calls.get(name, 0) + 1
                if sys_impl is None:
                    return NOT_SUPPORTED
                if not sim.init_refcount and name not in _NO_INIT_NEEDED:
                    return N.NVML_ERROR_UNINITIALIZED
                return sys_impl(self, *args)

        system_call.__name__ = name
        return system_call

    def _before(self, name: str, index: int | None) -> None:
        """Injected latency (outside the lock, so other devices are not stalled) and crashes."""
        sim = self.sim
        now = sim.elapsed_s()
        sim.faults.hold(index, now, sim.elapsed_s)  # injected latency; ends early when its fault does
        if sim.faults.should_crash(index, now):
            # What a segfault inside libnvidia-ml looks like to the process (nvitop#139).
            # thread-directed, as a real fault is: os.kill would let this thread reach _exit first
            signal.pthread_kill(threading.get_ident(), signal.SIGSEGV)
            os._exit(139)  # pragma: no cover - not reached where SIGSEGV kills

    def _index_of(self, handle: Any) -> int | None:
        off = _address(handle) - _HANDLE_BASE
        if off < 0 or off % _HANDLE_STRIDE:
            return None
        index = off // _HANDLE_STRIDE
        return index if index < len(self.sim.devices) else None

    # convenience for implementations
    def elapsed(self) -> float:
        return self.sim.elapsed_s()


_NO_INIT_NEEDED = {"nvmlInit", "nvmlInit_v2", "nvmlInitWithFlags", "nvmlShutdown", "nvmlErrorString"}


# --- init, system ---


@system("nvmlInit", "nvmlInit_v2", "nvmlInitWithFlags")
def _init(lib: FakeNvmlLib, *flags: Any) -> int:
    code = lib.sim.faults.init_error(lib.sim.elapsed_s())
    if code:
        return code
    lib.sim.init_refcount += 1
    return OK


@system("nvmlShutdown")
def _shutdown(lib: FakeNvmlLib) -> int:
    if not lib.sim.init_refcount:
        return N.NVML_ERROR_UNINITIALIZED
    lib.sim.init_refcount -= 1
    return OK


@system("nvmlErrorString")
def _error_string(lib: FakeNvmlLib, code: Any) -> Any:
    return _ERROR_STRINGS.get(_int(code), "Unknown Error").encode()


@system("nvmlSystemGetDriverVersion")
def _driver_version(lib: FakeNvmlLib, buf: Any, size: Any) -> int:
    return _write_string(buf, size, lib.sim.driver.driver_version)


@system("nvmlSystemGetNVMLVersion")
def _nvml_version(lib: FakeNvmlLib, buf: Any, size: Any) -> int:
    return _write_string(buf, size, lib.sim.driver.nvml_version)


@system("nvmlSystemGetCudaDriverVersion", "nvmlSystemGetCudaDriverVersion_v2")
def _cuda_version(lib: FakeNvmlLib, out: Any) -> int:
    _set(out, lib.sim.driver.cuda_driver_version)
    return OK


@system("nvmlSystemGetProcessName")
def _process_name(lib: FakeNvmlLib, pid: Any, buf: Any, size: Any) -> int:
    sim = lib.sim
    if _int(pid) != sim.process_pid:
        return N.NVML_ERROR_NOT_FOUND
    names = [d.scenario.process_name for d in sim.devices if d.scenario.process_name]
    if not names:
        return N.NVML_ERROR_NOT_FOUND
    return _write_string(buf, size, names[0])


@system("nvmlDeviceGetCount", "nvmlDeviceGetCount_v2")
def _count(lib: FakeNvmlLib, out: Any) -> int:
    _set(out, len(lib.sim.devices))
    return OK


def _handle_result(lib: FakeNvmlLib, index: int, out: Any) -> int:
    if lib.sim.faults.is_lost(index, lib.sim.sync()):
        return N.NVML_ERROR_GPU_IS_LOST
    _write_pointer(out, handle_address(index))
    return OK


@system("nvmlDeviceGetHandleByIndex", "nvmlDeviceGetHandleByIndex_v2")
def _handle_by_index(lib: FakeNvmlLib, index: Any, out: Any) -> int:
    i = _int(index)
    if not 0 <= i < len(lib.sim.devices):
        return INVALID
    return _handle_result(lib, i, out)


@system("nvmlDeviceGetHandleByUUID")
def _handle_by_uuid(lib: FakeNvmlLib, uuid: Any, out: Any) -> int:
    text = (uuid.value if hasattr(uuid, "value") else uuid) or b""
    wanted = text.decode() if isinstance(text, bytes) else str(text)
    for i in range(len(lib.sim.devices)):
        if uuid_of(lib.sim, i) == wanted:
            return _handle_result(lib, i, out)
    return N.NVML_ERROR_NOT_FOUND


@system("nvmlDeviceGetHandleByPciBusId", "nvmlDeviceGetHandleByPciBusId_v2")
def _handle_by_bus(lib: FakeNvmlLib, bus_id: Any, out: Any) -> int:
    text = (bus_id.value if hasattr(bus_id, "value") else bus_id) or b""
    wanted = (text.decode() if isinstance(text, bytes) else str(text)).upper()
    for i in range(len(lib.sim.devices)):
        full = bus_id_of(i)
        if wanted in (full, full[4:]):
            return _handle_result(lib, i, out)
    return N.NVML_ERROR_NOT_FOUND


# --- events ---

_SUPPORTED_EVENTS = N.nvmlEventTypeXidCriticalError | N.nvmlEventTypePState | N.nvmlEventTypeClock
_ECC_EVENTS = N.nvmlEventTypeSingleBitEccError | N.nvmlEventTypeDoubleBitEccError


def _supported_events(dev: SimDevice) -> int:
    return _SUPPORTED_EVENTS | (_ECC_EVENTS if dev.profile.ecc else 0)


@system("nvmlEventSetCreate")
def _event_set_create(lib: FakeNvmlLib, out: Any) -> int:
    addr = lib.sim.new_object_address()
    lib.sim.event_sets[addr] = EventSet()
    _write_pointer(out, addr)
    return OK


@system("nvmlEventSetFree")
def _event_set_free(lib: FakeNvmlLib, es: Any) -> int:
    if lib.sim.event_sets.pop(_address(es), None) is None:
        return INVALID
    return OK


@device("nvmlDeviceGetSupportedEventTypes")
def _supported_event_types(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    _set(out, _supported_events(dev))
    return OK


@device("nvmlDeviceRegisterEvents")
def _register_events(lib: FakeNvmlLib, dev: SimDevice, types: Any, es: Any) -> int:
    event_set = lib.sim.event_sets.get(_address(es))
    if event_set is None:
        return INVALID
    wanted = _int(types)
    supported = _supported_events(dev)
    event_set.registrations[dev.index] = event_set.registrations.get(dev.index, 0) | (wanted & supported)
    # nvml.h: unsupported types give NOT_SUPPORTED, yet "the event set can still be used" for the rest
    return NOT_SUPPORTED if wanted & ~supported else OK


#: real seconds past a scheduled Xid's due time the waiter wakes, so rounding cannot wake it just before
_XID_DUE_SLACK_S = 0.001


@system("nvmlEventSetWait", "nvmlEventSetWait_v2")
def _event_set_wait(lib: FakeNvmlLib, es: Any, data: Any, timeout_ms: Any) -> int:
    """Blocks (real time) releasing the simulator lock, so pollers keep running meanwhile.

    Like the real call it sleeps until an event or the timeout: emit_xid, inject and advance() notify
    the condition, and a scheduled Xid is waited for by its due time, so an idle wait costs no CPU
    (a waiter that woke to integrate the physics would charge gpuwatch for the simulator's work).
    """
    sim = lib.sim
    event_set = sim.event_sets.get(_address(es))
    if event_set is None:
        return INVALID
    deadline = time.monotonic() + _int(timeout_ms) / 1000.0
    while not event_set.queue:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return N.NVML_ERROR_TIMEOUT
        to_xid_s = sim.seconds_to_next_xid()
        if to_xid_s is not None:
            remaining = min(remaining, to_xid_s + _XID_DUE_SLACK_S)
        sim.events_cv.wait(remaining)
        if to_xid_s is not None:
            sim.sync()  # the scheduled Xid falls due as simulated time passes
    index, event_type, payload = event_set.queue.popleft()
    d = _obj(data)
    d.device = ctypes.cast(ctypes.c_void_p(handle_address(index)), type(d.device))
    d.eventType = event_type
    d.eventData = payload
    d.gpuInstanceId = _NO_INSTANCE
    d.computeInstanceId = _NO_INSTANCE
    return OK


# --- identity ---


@device("nvmlDeviceGetName")
def _name(lib: FakeNvmlLib, dev: SimDevice, buf: Any, size: Any) -> int:
    return _write_string(buf, size, nvml_name(dev.chip))


@device("nvmlDeviceGetUUID")
def _uuid(lib: FakeNvmlLib, dev: SimDevice, buf: Any, size: Any) -> int:
    return _write_string(buf, size, uuid_of(lib.sim, dev.index))


@device("nvmlDeviceGetSerial")
def _serial(lib: FakeNvmlLib, dev: SimDevice, buf: Any, size: Any) -> int:
    if dev.profile.brand == "geforce":
        return NOT_SUPPORTED
    return _write_string(buf, size, f"1654{(lib.sim.seed * 7919 + dev.index * 104729) % 10**9:09d}")


@device("nvmlDeviceGetVbiosVersion")
def _vbios(lib: FakeNvmlLib, dev: SimDevice, buf: Any, size: Any) -> int:
    return _write_string(buf, size, "96.00.99.00.01")


@device("nvmlDeviceGetIndex", "nvmlDeviceGetMinorNumber")
def _index(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    _set(out, dev.index)
    return OK


@device("nvmlDeviceGetPciInfo", "nvmlDeviceGetPciInfo_v2", "nvmlDeviceGetPciInfo_v3")
def _pci_info(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    p = _obj(out)
    bus = pci_bus_of(dev.index)
    p.busIdLegacy = f"0000:{bus:02X}:00.0".encode()
    p.busId = bus_id_of(dev.index).encode()
    p.domain = 0
    p.bus = bus
    p.device = 0
    p.pciDeviceId = dev.profile.pci_device_id
    p.pciSubSystemId = (dev.profile.pci_device_id & 0xFFFF0000) | 0x10DE
    return OK


@device("nvmlDeviceGetBrand")
def _brand(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    _set(out, N.NVML_BRAND_GEFORCE if dev.profile.brand == "geforce" else N.NVML_BRAND_NVIDIA)
    return OK


@device("nvmlDeviceGetArchitecture")
def _architecture(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    _set(out, ARCH_CODES.get(dev.chip.architecture, N.NVML_DEVICE_ARCH_UNKNOWN))
    return OK


@device("nvmlDeviceGetCudaComputeCapability")
def _compute_capability(lib: FakeNvmlLib, dev: SimDevice, major: Any, minor: Any) -> int:
    _set(major, dev.profile.compute_capability[0])
    _set(minor, dev.profile.compute_capability[1])
    return OK


@device("nvmlDeviceGetNumGpuCores")
def _cores(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    _set(out, dev.profile.cuda_cores)
    return OK


@device("nvmlDeviceGetMemoryBusWidth")
def _bus_width(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    _set(out, dev.chip.memory_bus_width_bits)
    return OK


@device("nvmlDeviceIsMigDeviceHandle")
def _is_mig_handle(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    _set(out, 0)
    return OK


@device("nvmlDeviceGetMigMode")
def _mig_mode(lib: FakeNvmlLib, dev: SimDevice, current: Any, pending: Any) -> int:
    if not dev.profile.mig:
        return NOT_SUPPORTED
    _set(current, 0)
    _set(pending, 0)
    return OK


@device("nvmlDeviceGetMaxMigDeviceCount")
def _max_mig(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    if not dev.profile.mig:
        return NOT_SUPPORTED
    _set(out, 7)
    return OK


@device("nvmlDeviceGetMigDeviceHandleByIndex")
def _mig_handle(lib: FakeNvmlLib, dev: SimDevice, index: Any, out: Any) -> int:
    return N.NVML_ERROR_NOT_FOUND if dev.profile.mig else NOT_SUPPORTED


@device("nvmlDeviceGetPersistenceMode")
def _persistence(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    _set(out, 0 if dev.profile.brand == "geforce" else 1)
    return OK


@device("nvmlDeviceGetDisplayActive", "nvmlDeviceGetDisplayMode")
def _display(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    _set(out, 0)
    return OK


@device("nvmlDeviceGetComputeMode")
def _compute_mode(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    _set(out, N.NVML_COMPUTEMODE_DEFAULT)
    return OK


# --- memory ---


@device("nvmlDeviceGetMemoryInfo")
def _memory_v1(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    m = _obj(out)
    used = dev.memory_used_bytes + dev.memory_reserved_bytes  # v1 "used" includes the reserved memory
    m.total = dev.memory_total_bytes
    m.used = used
    m.free = dev.memory_total_bytes - used
    return OK


@device("nvmlDeviceGetMemoryInfo_v2")
def _memory_v2(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    m = _obj(out)
    if m.version != N.nvmlMemory_v2:
        return N.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
    m.total = dev.memory_total_bytes
    m.reserved = dev.memory_reserved_bytes
    m.used = dev.memory_used_bytes
    m.free = dev.memory_total_bytes - dev.memory_reserved_bytes - dev.memory_used_bytes
    return OK


@device("nvmlDeviceGetUtilizationRates")
def _utilization(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    u = _obj(out)
    u.gpu = round(100 * dev.util_gpu_ratio)
    u.memory = round(100 * dev.util_memory_ratio)
    return OK


@device("nvmlDeviceGetEncoderUtilization")
def _encoder_util(lib: FakeNvmlLib, dev: SimDevice, util: Any, period_us: Any) -> int:
    _set(util, round(100 * dev.util_encoder_ratio))
    _set(period_us, 167000)
    return OK


@device("nvmlDeviceGetEncoderStats")
def _encoder_stats(lib: FakeNvmlLib, dev: SimDevice, count: Any, fps: Any, latency_us: Any) -> int:
    sessions = dev.scenario.encoder_sessions if dev.active else 0
    _set(count, sessions)
    _set(fps, 120 if sessions else 0)  # the captured loads encode 1080p120
    _set(latency_us, 900 if sessions else 0)
    return OK


@device(
    "nvmlDeviceGetDecoderUtilization",
    "nvmlDeviceGetJpgUtilization",
    "nvmlDeviceGetOfaUtilization",
)
def _codec_util(lib: FakeNvmlLib, dev: SimDevice, util: Any, period_us: Any) -> int:
    _set(util, 0)
    _set(period_us, 167000)
    return OK


# --- temperature ---


@device("nvmlDeviceGetTemperature")
def _temperature(lib: FakeNvmlLib, dev: SimDevice, sensor: Any, out: Any) -> int:
    if _int(sensor) != N.NVML_TEMPERATURE_GPU:
        return NOT_SUPPORTED
    _set(out, round(dev.temperature_c))
    return OK


@device("nvmlDeviceGetTemperatureV")
def _temperature_v(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    t = _obj(out)
    if t.version != N.nvmlTemperature_v1:
        return N.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
    if t.sensorType != N.NVML_TEMPERATURE_GPU:
        return NOT_SUPPORTED
    t.temperature = round(dev.temperature_c)
    return OK


@device("nvmlDeviceGetTemperatureThreshold")
def _threshold(lib: FakeNvmlLib, dev: SimDevice, kind: Any, out: Any) -> int:
    p = dev.profile
    k = _int(kind)
    values: dict[int, float | None] = {
        N.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN: p.shutdown_c,
        N.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN: p.slowdown_c,
        N.NVML_TEMPERATURE_THRESHOLD_GPU_MAX: p.max_operating_c,
        N.NVML_TEMPERATURE_THRESHOLD_MEM_MAX: p.memory_max_operating_c,
        # GeForce "GPU Target Temperature" (83 C on the 4090 dump, 84 C on the captured 4080/2080 SUPER);
        # datacenter parts read N/A
        N.NVML_TEMPERATURE_THRESHOLD_ACOUSTIC_CURR: p.target_temperature_c,
    }
    value = values.get(k)
    if value is None:
        return NOT_SUPPORTED
    _set(out, round(value))
    return OK


@device("nvmlDeviceGetMarginTemperature")
def _margin(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    m = _obj(out)
    if m.version != N.nvmlMarginTemperature_v1:
        return N.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
    if not dev.profile.tlimit_fields:
        return NOT_SUPPORTED
    m.marginTemperature = round(dev.profile.max_operating_c - dev.temperature_c)
    return OK


# --- power ---


@device("nvmlDeviceGetPowerUsage")
def _power_usage(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    # "On Ampere (except GA100) or newer GPUs, the API returns power averaged over 1 sec interval"
    # Turing has no averaged reading (the captured 2080 SUPER: "Average Power Draw: N/A")
    averaged = dev.profile.power_average_field and not (
        dev.chip.architecture == "ampere" and dev.profile.compute_capability == (8, 0)
    )
    _set(out, _mw(dev.power_avg_w if averaged else dev.power_w))
    return OK


@device("nvmlDeviceGetPowerManagementLimit", "nvmlDeviceGetEnforcedPowerLimit")
def _power_limit(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    _set(out, _mw(dev.power_limit_w))
    return OK


@device("nvmlDeviceGetPowerManagementDefaultLimit")
def _power_default(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    _set(out, _mw(dev.profile.power_default_w))
    return OK


@device("nvmlDeviceGetPowerManagementLimitConstraints")
def _power_constraints(lib: FakeNvmlLib, dev: SimDevice, lo: Any, hi: Any) -> int:
    _set(lo, _mw(dev.profile.power_min_w))
    _set(hi, _mw(dev.profile.power_max_w))
    return OK


@device("nvmlDeviceGetPowerManagementMode")
def _power_mode(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    _set(out, N.NVML_FEATURE_ENABLED)
    return OK


@device("nvmlDeviceSetPowerManagementLimit", "nvmlDeviceSetPowerManagementLimit_v2")
def _set_power_limit(lib: FakeNvmlLib, dev: SimDevice, *args: Any) -> int:
    """Root only, within the card's range, as the real driver; _v2 passes a struct with the limit."""
    if os.geteuid() != 0:
        return N.NVML_ERROR_NO_PERMISSION
    arg = args[0] if args else None
    value = getattr(getattr(arg, "_obj", arg), "powerValueMw", arg)
    try:
        milliwatts = int(getattr(value, "value", value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return N.NVML_ERROR_INVALID_ARGUMENT
    watts = milliwatts / 1000.0
    if not dev.profile.power_min_w <= watts <= dev.profile.power_max_w:
        return N.NVML_ERROR_INVALID_ARGUMENT
    lib.sim.set_power_limit(dev.index, watts)
    return OK


@device("nvmlDeviceGetTotalEnergyConsumption")
def _energy(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    _set(out, int(dev.energy_mj_at(lib.elapsed())))
    return OK


# --- clocks ---


def _current_clock(dev: SimDevice, kind: int) -> int | None:
    if kind in (N.NVML_CLOCK_GRAPHICS, N.NVML_CLOCK_SM):
        return round(dev.sm_clock_mhz)
    if kind == N.NVML_CLOCK_MEM:
        return round(dev.memory_clock_mhz)
    if kind == N.NVML_CLOCK_VIDEO:
        return round(dev.video_clock_mhz)
    return None


def _max_clock(dev: SimDevice, kind: int) -> int | None:
    p = dev.profile
    return {
        N.NVML_CLOCK_GRAPHICS: p.sm_clock_max_mhz,
        N.NVML_CLOCK_SM: p.sm_clock_max_mhz,
        N.NVML_CLOCK_MEM: p.memory_clock_max_mhz,
        N.NVML_CLOCK_VIDEO: p.video_clock_max_mhz,
    }.get(kind)


def _app_clock(dev: SimDevice, kind: int) -> int | None:
    app = dev.profile.applications_clocks_mhz
    if app is None:
        return None
    if kind in (N.NVML_CLOCK_GRAPHICS, N.NVML_CLOCK_SM):
        return app[0]
    if kind == N.NVML_CLOCK_MEM:
        return app[1]
    return None


def _boost_clock(dev: SimDevice, kind: int) -> int | None:
    if dev.profile.max_customer_boost_mhz is None:
        return None
    if kind in (N.NVML_CLOCK_GRAPHICS, N.NVML_CLOCK_SM):
        return dev.profile.max_customer_boost_mhz
    return _max_clock(dev, kind)


def _answer(out: Any, value: int | None) -> int:
    if value is None:
        return NOT_SUPPORTED
    _set(out, value)
    return OK


@device("nvmlDeviceGetClockInfo")
def _clock_info(lib: FakeNvmlLib, dev: SimDevice, kind: Any, out: Any) -> int:
    return _answer(out, _current_clock(dev, _int(kind)))


@device("nvmlDeviceGetMaxClockInfo")
def _max_clock_info(lib: FakeNvmlLib, dev: SimDevice, kind: Any, out: Any) -> int:
    return _answer(out, _max_clock(dev, _int(kind)))


@device("nvmlDeviceGetMaxCustomerBoostClock")
def _max_boost(lib: FakeNvmlLib, dev: SimDevice, kind: Any, out: Any) -> int:
    return _answer(out, _boost_clock(dev, _int(kind)))


@device("nvmlDeviceGetApplicationsClock", "nvmlDeviceGetDefaultApplicationsClock")
def _applications_clock(lib: FakeNvmlLib, dev: SimDevice, kind: Any, out: Any) -> int:
    return _answer(out, _app_clock(dev, _int(kind)))


@device("nvmlDeviceGetClock")
def _clock(lib: FakeNvmlLib, dev: SimDevice, kind: Any, clock_id: Any, out: Any) -> int:
    k, cid = _int(kind), _int(clock_id)
    if cid == N.NVML_CLOCK_ID_CURRENT:
        return _answer(out, _current_clock(dev, k))
    if cid in (N.NVML_CLOCK_ID_APP_CLOCK_TARGET, N.NVML_CLOCK_ID_APP_CLOCK_DEFAULT):
        return _answer(out, _app_clock(dev, k))
    if cid == N.NVML_CLOCK_ID_CUSTOMER_BOOST_MAX:
        return _answer(out, _boost_clock(dev, k))
    return INVALID


@device("nvmlDeviceGetPerformanceState", "nvmlDeviceGetPowerState")
def _pstate(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    _set(out, dev.performance_state)
    return OK


_SUPPORTED_REASONS_GEFORCE = (
    REASON_GPU_IDLE
    | N.nvmlClocksEventReasonApplicationsClocksSetting
    | REASON_SW_POWER_CAP
    | REASON_HW_SLOWDOWN
    | REASON_SW_THERMAL
    | REASON_HW_THERMAL
    | N.nvmlClocksEventReasonHwPowerBrakeSlowdown
    | N.nvmlClocksEventReasonDisplayClockSetting
)


@device("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons")
def _reasons(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    _set(out, dev.reasons)
    return OK


@device("nvmlDeviceGetSupportedClocksEventReasons", "nvmlDeviceGetSupportedClocksThrottleReasons")
def _supported_reasons(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    # 0x1FF on all four captured cards, GeForce included (sync boost is listed though never engaged)
    _set(out, _SUPPORTED_REASONS_GEFORCE | N.nvmlClocksEventReasonSyncBoost)
    return OK


_POLICY_COUNTER = {
    N.NVML_PERF_POLICY_POWER: "sw_power_cap",
    N.NVML_PERF_POLICY_THERMAL: "thermal",
    N.NVML_PERF_POLICY_SYNC_BOOST: "sync_boost",
}


@device("nvmlDeviceGetViolationStatus")
def _violation(lib: FakeNvmlLib, dev: SimDevice, policy: Any, out: Any) -> int:
    p = _int(policy)
    if p >= N.NVML_PERF_POLICY_COUNT:
        return INVALID
    v = _obj(out)
    v.referenceTime = round(lib.sim.now_s() * 1e6)  # "CPU timestamp in microseconds"
    counter = _POLICY_COUNTER.get(p)
    v.violationTime = round(dev.counters.violation_ns[counter]) if counter else 0  # nanoseconds
    return OK


# --- fans ---


@device("nvmlDeviceGetFanSpeed")
def _fan(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    if not dev.profile.num_fans:
        return NOT_SUPPORTED
    _set(out, round(100 * dev.fan_ratio))
    return OK


@device("nvmlDeviceGetFanSpeed_v2", "nvmlDeviceGetTargetFanSpeed")
def _fan_v2(lib: FakeNvmlLib, dev: SimDevice, fan: Any, out: Any) -> int:
    if not dev.profile.num_fans:
        return NOT_SUPPORTED
    if not 0 <= _int(fan) < dev.profile.num_fans:
        return INVALID
    _set(out, round(100 * dev.fan_ratio))
    return OK


@device("nvmlDeviceGetNumFans")
def _num_fans(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    if not dev.profile.num_fans:
        return NOT_SUPPORTED
    _set(out, dev.profile.num_fans)
    return OK


@device("nvmlDeviceGetFanSpeedRPM")
def _fan_rpm(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    f = _obj(out)
    if not dev.profile.num_fans:
        return NOT_SUPPORTED
    if not 0 <= f.fan < dev.profile.num_fans:
        return INVALID
    f.speed = round(3000 * dev.fan_ratio)
    return OK


@device("nvmlDeviceGetMinMaxFanSpeed")
def _fan_range(lib: FakeNvmlLib, dev: SimDevice, lo: Any, hi: Any) -> int:
    if not dev.profile.num_fans:
        return NOT_SUPPORTED
    _set(lo, 30)
    _set(hi, 100)
    return OK


# --- PCIe ---


@device("nvmlDeviceGetPcieThroughput")
def _pcie_throughput(lib: FakeNvmlLib, dev: SimDevice, counter: Any, out: Any) -> int:
    c = _int(counter)
    if c == N.NVML_PCIE_UTIL_TX_BYTES:
        rate = dev.demand.pcie_tx_bytes_s
    elif c == N.NVML_PCIE_UTIL_RX_BYTES:
        rate = dev.demand.pcie_rx_bytes_s
    else:
        return INVALID
    _set(out, round(rate / PCIE_THROUGHPUT_KB_BYTES))
    return OK


@device("nvmlDeviceGetCurrPcieLinkGeneration")
def _link_gen(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    _set(out, dev.pcie_link_gen)
    return OK


@device("nvmlDeviceGetMaxPcieLinkGeneration")
def _link_gen_max(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    _set(out, min(dev.chip.pcie_gen, dev.profile.pcie_gen_max))
    return OK


@device("nvmlDeviceGetGpuMaxPcieLinkGeneration")
def _gpu_link_gen_max(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    _set(out, dev.profile.pcie_gen_max)
    return OK


@device("nvmlDeviceGetCurrPcieLinkWidth", "nvmlDeviceGetMaxPcieLinkWidth")
def _link_width(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    _set(out, dev.profile.pcie_lanes)
    return OK


@device("nvmlDeviceGetPcieSpeed")
def _pcie_speed(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    _set(out, {1: 2500, 2: 5000, 3: 8000, 4: 16000, 5: 32000, 6: 64000}.get(dev.pcie_link_gen, 2500))
    return OK


@device("nvmlDeviceGetPcieReplayCounter")
def _replay(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    _set(out, 0)
    return OK


# --- reliability ---


@device("nvmlDeviceGetEccMode")
def _ecc_mode(lib: FakeNvmlLib, dev: SimDevice, current: Any, pending: Any) -> int:
    # The 4090 dump reads ECC mode "Disabled" (it can toggle it); Ampere GeForce and the captured
    # 4080 SUPER / 2080 SUPER read N/A.
    if not dev.profile.ecc and (dev.chip.architecture == "ampere" or not dev.profile.ecc_reported):
        return NOT_SUPPORTED
    on = N.NVML_FEATURE_ENABLED if dev.profile.ecc else N.NVML_FEATURE_DISABLED
    _set(current, on)
    _set(pending, on)
    return OK


@device("nvmlDeviceGetTotalEccErrors", "nvmlDeviceGetMemoryErrorCounter")
def _ecc_errors(lib: FakeNvmlLib, dev: SimDevice, *args: Any) -> int:
    if not dev.profile.ecc:  # "Requires ECC Mode to be enabled"
        return NOT_SUPPORTED
    _set(args[-1], 0)
    return OK


@device("nvmlDeviceGetRemappedRows")
def _remapped(lib: FakeNvmlLib, dev: SimDevice, corr: Any, unc: Any, pending: Any, failure: Any) -> int:
    if not _remaps_rows(dev):
        return NOT_SUPPORTED
    for out in (corr, unc, pending, failure):
        _set(out, 0)
    return OK


def _remaps_rows(dev: SimDevice) -> bool:
    """Ampere or newer with ECC-capable memory: answered on the captured H100 and L40S and on the 4090
    dump (ECC off but switchable), "N/A" on the captured 4080 SUPER and 2080 SUPER (no ECC mode)."""
    return dev.profile.ecc_reported and dev.chip.architecture in ("ampere", "ada", "hopper", "blackwell")


# --- processes ---


def _processes(lib: FakeNvmlLib, dev: SimDevice, count: Any, infos: Any, graphics: bool) -> int:
    rows = (
        []
        if graphics or dev.scenario.process_name is None
        else [(lib.sim.process_pid, dev.process_memory_bytes)]
    )
    c = _obj(count)
    if infos is None or c.value < len(rows):
        c.value = len(rows)
        return N.NVML_ERROR_INSUFFICIENT_SIZE if rows else OK
    for k, (pid, used) in enumerate(rows):
        infos[k].pid = pid
        infos[k].usedGpuMemory = used
        # the v1 struct has no instance ids; v2/v3 (and nvitop's v3 legacy layout) do
        if hasattr(infos[k], "gpuInstanceId"):
            infos[k].gpuInstanceId = _NO_INSTANCE
            infos[k].computeInstanceId = _NO_INSTANCE
    c.value = len(rows)
    return OK


@device(
    "nvmlDeviceGetComputeRunningProcesses",
    "nvmlDeviceGetComputeRunningProcesses_v2",
    "nvmlDeviceGetComputeRunningProcesses_v3",
)
def _compute_procs(lib: FakeNvmlLib, dev: SimDevice, count: Any, infos: Any) -> int:
    return _processes(lib, dev, count, infos, graphics=False)


@device(
    "nvmlDeviceGetGraphicsRunningProcesses",
    "nvmlDeviceGetGraphicsRunningProcesses_v2",
    "nvmlDeviceGetGraphicsRunningProcesses_v3",
    "nvmlDeviceGetMPSComputeRunningProcesses",
    "nvmlDeviceGetMPSComputeRunningProcesses_v2",
    "nvmlDeviceGetMPSComputeRunningProcesses_v3",
)
def _graphics_procs(lib: FakeNvmlLib, dev: SimDevice, count: Any, infos: Any) -> int:
    return _processes(lib, dev, count, infos, graphics=True)


@device("nvmlDeviceGetProcessUtilization")
def _process_util(lib: FakeNvmlLib, dev: SimDevice, samples: Any, count: Any, last_seen: Any) -> int:
    if dev.scenario.process_name is None:
        return N.NVML_ERROR_NOT_FOUND
    c = _obj(count)
    if samples is None or c.value < 1:
        c.value = 1
        return N.NVML_ERROR_INSUFFICIENT_SIZE
    s = samples[0]
    s.pid = lib.sim.process_pid
    s.timeStamp = round(lib.sim.now_s() * 1e6)
    s.smUtil = round(100 * dev.util_gpu_ratio)
    s.memUtil = round(100 * dev.util_memory_ratio)
    s.encUtil = 0
    s.decUtil = 0
    c.value = 1
    return OK


# --- field values ---

_U = N.NVML_VALUE_TYPE_UNSIGNED_INT
_ULL = N.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
_SI = N.NVML_VALUE_TYPE_SIGNED_INT
_THROTTLE_FIELDS = {
    N.NVML_FI_DEV_PERF_POLICY_POWER: "sw_power_cap",  # = NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP (74)
    N.NVML_FI_DEV_PERF_POLICY_THERMAL: "thermal",
    N.NVML_FI_DEV_PERF_POLICY_SYNC_BOOST: "sync_boost",  # = ..._CLOCKS_EVENT_REASON_SYNC_BOOST (76)
    269: "sw_thermal",
    270: "hw_thermal",
    271: "hw_power_brake",
}


def _field(lib: FakeNvmlLib, dev: SimDevice, fid: int, scope: int) -> tuple[int, int, float]:
    """(nvmlReturn, valueType, value) for one field id."""
    p = dev.profile
    if not lib.sim.driver.has_field(fid):
        return NOT_SUPPORTED, 0, 0
    for f, s, code in p.forced_field_errors:
        if f == fid and s == scope:
            return code, 0, 0
    if fid == N.NVML_FI_DEV_MEMORY_TEMP:
        if p.memory_max_operating_c is None:
            return NOT_SUPPORTED, 0, 0
        return OK, _U, round(dev.memory_temperature_c)
    if fid in (N.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION, N.NVML_FI_DEV_ENERGY):
        return OK, _ULL, int(dev.energy_mj_at(lib.elapsed()))
    if fid in (N.NVML_FI_DEV_POWER_INSTANT, N.NVML_FI_DEV_POWER_AVERAGE):
        return _power_field(dev, fid, scope)
    if fid == N.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION:  # "GPU Recovery Action: None" on all four captures
        return OK, _U, N.NVML_GPU_RECOVERY_ACTION_NONE
    limits = {
        N.NVML_FI_DEV_POWER_MIN_LIMIT: p.power_min_w,
        N.NVML_FI_DEV_POWER_MAX_LIMIT: p.power_max_w,
        N.NVML_FI_DEV_POWER_DEFAULT_LIMIT: p.power_default_w,
        N.NVML_FI_DEV_POWER_CURRENT_LIMIT: dev.power_limit_w,
        N.NVML_FI_DEV_POWER_REQUESTED_LIMIT: dev.power_limit_w,
    }
    if fid in limits:
        return OK, _U, _mw(limits[fid])
    if 193 <= fid <= 196:
        # Ada and newer: offsets relative to T.Limit (margins), not temperatures.
        if not p.tlimit_fields:
            return NOT_SUPPORTED, 0, 0
        margin = {
            193: p.shutdown_tlimit_c,
            194: p.slowdown_tlimit_c,
            195: 0.0 if p.memory_max_operating_c is not None else None,
            196: 0.0,
        }[fid]
        if margin is None:
            return NOT_SUPPORTED, 0, 0
        return OK, _SI, round(margin)
    if fid == N.NVML_FI_DEV_PCIE_COUNT_TX_BYTES:
        return OK, _ULL, int(dev.counters.pcie_tx_bytes)
    if fid == N.NVML_FI_DEV_PCIE_COUNT_RX_BYTES:
        return OK, _ULL, int(dev.counters.pcie_rx_bytes)
    if fid in _THROTTLE_FIELDS:  # nanoseconds (nvml.h)
        return OK, _ULL, int(dev.counters.violation_ns[_THROTTLE_FIELDS[fid]])
    if N.NVML_FI_DEV_REMAPPED_COR <= fid <= N.NVML_FI_DEV_REMAPPED_FAILURE:
        if not _remaps_rows(dev):
            return NOT_SUPPORTED, 0, 0
        return OK, _U, 0
    if 3 <= fid <= 6:  # ECC SBE/DBE volatile/aggregate totals
        return (OK, _ULL, 0) if p.ecc else (NOT_SUPPORTED, 0, 0)
    if fid == N.NVML_FI_DEV_NVLINK_LINK_COUNT:
        return (OK, _U, p.nvlink_links) if p.nvlink_links else (NOT_SUPPORTED, 0, 0)
    if fid in (N.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, N.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX):
        if not p.nvlink_links or scope >= p.nvlink_links:
            return NOT_SUPPORTED, 0, 0
        total = (
            dev.counters.nvlink_tx_bytes
            if fid == N.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX
            else dev.counters.nvlink_rx_bytes
        )
        return OK, _ULL, int(total / p.nvlink_links / 1024)  # KiB per link
    return _nvlink_error_field(dev, fid)


#: NVLink error totals over all lanes (nvml.h fields 38, 45, 52, 59); a healthy simulated link counts none
_NVLINK_ERROR_FIELDS = frozenset(
    {
        N.NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL,
        N.NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL,
        N.NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL,
        N.NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL,
    }
)


def _nvlink_error_field(dev: SimDevice, fid: int) -> tuple[int, int, float]:
    if fid in _NVLINK_ERROR_FIELDS and dev.profile.nvlink_links:
        return OK, _ULL, 0
    return NOT_SUPPORTED, 0, 0


def _power_field(dev: SimDevice, fid: int, scope: int) -> tuple[int, int, float]:
    """Fields 185/186 by power scope: the GPU; the memory on HBM parts (average only: the captured H100
    reads 43 W idle / 86 W under gpu-burn and "N/A" instantaneous); the module nowhere (all four N/A)."""
    p = dev.profile
    average = fid == N.NVML_FI_DEV_POWER_AVERAGE
    if scope == N.NVML_POWER_SCOPE_GPU:
        if average and not p.power_average_field:
            return NOT_SUPPORTED, 0, 0
        return OK, _U, _mw(dev.power_avg_w if average else dev.power_w)
    if scope == N.NVML_POWER_SCOPE_MEMORY and average and p.memory_max_operating_c is not None:
        return OK, _U, _mw(0.62 * p.power_idle_w + 0.07 * (dev.power_avg_w - p.power_idle_w))
    return NOT_SUPPORTED, 0, 0


@device("nvmlDeviceGetFieldValues")
def _field_values(lib: FakeNvmlLib, dev: SimDevice, count: Any, values: Any) -> int:
    arr = _obj(values)
    n = _int(count)
    if n < 0:
        return INVALID
    stamp = round(lib.sim.now_s() * 1e6)
    for k in range(n):
        v = arr[k]
        ret, vtype, value = _field(lib, dev, int(v.fieldId), int(v.scopeId))
        v.timestamp = stamp
        v.latencyUsec = 0
        v.nvmlReturn = ret
        if ret != OK:
            continue
        v.valueType = vtype
        if vtype == _U:
            v.value.uiVal = int(value)
        elif vtype == _SI:
            v.value.siVal = int(value)
        elif vtype == _ULL:
            v.value.ullVal = int(value)
        else:
            v.value.dVal = float(value)
    return OK


# --- GPM (Hopper and newer) ---


@device("nvmlGpmQueryDeviceSupport")
def _gpm_support(lib: FakeNvmlLib, dev: SimDevice, out: Any) -> int:
    s = _obj(out)
    if s.version != N.NVML_GPM_SUPPORT_VERSION:
        return N.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
    s.isSupportedDevice = 1 if dev.profile.gpm else 0
    return OK


@system("nvmlGpmSampleAlloc")
def _gpm_alloc(lib: FakeNvmlLib, out: Any) -> int:
    addr = lib.sim.new_object_address()
    lib.sim.gpm_samples[addr] = GpmSampleSlot()
    _write_pointer(out, addr)
    return OK


@system("nvmlGpmSampleFree")
def _gpm_free(lib: FakeNvmlLib, sample: Any) -> int:
    return OK if lib.sim.gpm_samples.pop(_address(sample), None) is not None else INVALID


@device("nvmlGpmSampleGet")
def _gpm_get(lib: FakeNvmlLib, dev: SimDevice, sample: Any) -> int:
    slot = lib.sim.gpm_samples.get(_address(sample))
    if slot is None:
        return INVALID
    if not dev.profile.gpm:
        return NOT_SUPPORTED
    slot.device = dev.index
    slot.elapsed_s = dev.elapsed_s
    slot.counters = dev.counters.copy()
    return OK


def _gpm_value(dev: SimDevice, a: Counters, b: Counters, dt: float, metric: int) -> float | None:
    def pct(name: str) -> float:
        return 100.0 * (getattr(b, name) - getattr(a, name)) / dt

    mib_s = 1.0 / (1 << 20) / dt
    table: dict[int, Callable[[], float]] = {
        N.NVML_GPM_METRIC_GRAPHICS_UTIL: lambda: pct("kernel_busy_s"),
        N.NVML_GPM_METRIC_SM_UTIL: lambda: pct("sm_activity_s"),
        N.NVML_GPM_METRIC_SM_OCCUPANCY: lambda: pct("sm_occupancy_s"),
        N.NVML_GPM_METRIC_INTEGER_UTIL: lambda: 0.3 * pct("fp32_s"),
        N.NVML_GPM_METRIC_ANY_TENSOR_UTIL: lambda: pct("tensor_s"),
        N.NVML_GPM_METRIC_DFMA_TENSOR_UTIL: lambda: 0.0,
        N.NVML_GPM_METRIC_HMMA_TENSOR_UTIL: lambda: 0.95 * pct("tensor_s"),
        N.NVML_GPM_METRIC_DMMA_TENSOR_UTIL: lambda: 0.0,
        N.NVML_GPM_METRIC_IMMA_TENSOR_UTIL: lambda: 0.05 * pct("tensor_s"),
        N.NVML_GPM_METRIC_DRAM_BW_UTIL: lambda: pct("dram_bandwidth_s"),
        N.NVML_GPM_METRIC_FP64_UTIL: lambda: 0.0,
        N.NVML_GPM_METRIC_FP32_UTIL: lambda: pct("fp32_s"),
        N.NVML_GPM_METRIC_FP16_UTIL: lambda: pct("fp16_s"),
        N.NVML_GPM_METRIC_PCIE_TX_PER_SEC: lambda: (b.pcie_tx_bytes - a.pcie_tx_bytes) * mib_s,
        N.NVML_GPM_METRIC_PCIE_RX_PER_SEC: lambda: (b.pcie_rx_bytes - a.pcie_rx_bytes) * mib_s,
        N.NVML_GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC: lambda: (b.nvlink_rx_bytes - a.nvlink_rx_bytes) * mib_s,
        N.NVML_GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC: lambda: (b.nvlink_tx_bytes - a.nvlink_tx_bytes) * mib_s,
    }
    fn = table.get(metric)
    return None if fn is None else min(100.0, fn()) if metric < 20 else fn()


@system("nvmlGpmMetricsGet")
def _gpm_metrics(lib: FakeNvmlLib, out: Any) -> int:
    m = _obj(out)
    if m.version != N.NVML_GPM_METRICS_GET_VERSION:
        return N.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
    s1 = lib.sim.gpm_samples.get(_address(m.sample1))
    s2 = lib.sim.gpm_samples.get(_address(m.sample2))
    if s1 is None or s2 is None or s1.counters is None or s2.counters is None:
        return INVALID
    if s1.device != s2.device or s1.device is None or s2.elapsed_s <= s1.elapsed_s:
        return INVALID
    if m.numMetrics > N.NVML_GPM_METRIC_MAX:
        return INVALID
    dev = lib.sim.devices[s1.device]
    dt = s2.elapsed_s - s1.elapsed_s
    for k in range(m.numMetrics):
        metric = m.metrics[k]
        value = _gpm_value(dev, s1.counters, s2.counters, dt, int(metric.metricId))
        if value is None:
            metric.nvmlReturn = NOT_SUPPORTED
        else:
            metric.nvmlReturn = OK
            metric.value = value
    return OK
