"""Each real card's nvidia-smi capture (tests/data/captures/) holds its simulated profile to the facts.

Every ``*.txt`` in the directory is one parametrised case, so a capture dropped in is tested the same way;
its simulated profile is the catalog GPU its PCI device id names (it fails, saying so, until one exists).
The simulated card runs idle for ten simulated minutes, then the load the capture's header names for
20 s (the captures' load sections were read ~15 s after their idle sections).

Tolerances (the issue's, and where it names none, ours):
- exact: name, PCI id, power limits, max clocks, customer boost, PCIe generations and widths, T.Limit
  offsets or threshold temperatures, target temperature, ECC mode, P-states, supported clock-event
  reasons, the set of readings that answer (vs N/A) and, where captured, the driver's symbol list;
- memory total within 1 %, reserved within 5 %, used within 64 MiB idle and 1 GiB under load;
- power within 35 %; idle SM/memory clocks within 5 %, load SM clock within 5 %, load memory clock 2 %;
- temperature within 6 C idle, 10 C under load (a settled capture only, see ``settled``); max-operating
  temperature (reading + T.Limit margin) within 2 C; fan within 5 points; utilization within 15 points.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pynvml as N
import pytest
from nvsmi_capture import NvsmiCapture, number, parse_capture

from gpuwatch.commands.capture import _pynvml_symbols
from gpuwatch.model.catalog import get_gpu
from gpuwatch.model.errors import UnknownIdError
from gpuwatch.telemetry.simulated import install, uninstall
from gpuwatch.telemetry.simulated.profiles import DEVICE_PROFILES
from gpuwatch.telemetry.simulated.simulator import SimulatedNvml

CAPTURE_DIR = Path(__file__).parent / "data" / "captures"
CAPTURES = sorted(CAPTURE_DIR.glob("*.txt"))
#: a capture header's ``load:`` text -> the scenario that reproduces it
LOAD_SCENARIOS = {"gpu-burn": "burn", "NVENC": "nvenc"}
IDLE_S = 600.0
LOAD_S = 20.0
_NA = ("N/A", "Requested functionality has been deprecated", "")


def _absent(text: str | None) -> bool:
    return text is None or text.strip("[]") in _NA


@pytest.fixture(params=CAPTURES, ids=[p.name.split("__")[1] for p in CAPTURES], scope="module")
def capture(request: pytest.FixtureRequest) -> NvsmiCapture:
    return parse_capture(request.param)


def profile_id(cap: NvsmiCapture) -> str:
    """The catalog id of the captured card (by PCI device id, then name), with a profile for it."""
    q = cap.query("idle")
    try:
        gpu = get_gpu(int(q["PCI/Device Id"], 16))
    except (UnknownIdError, KeyError):
        pytest.fail(f"{cap.path.name}: {q.get('Product Name')} is not in the catalog: add it and a profile")
    assert gpu.id in DEVICE_PROFILES, f"{cap.path.name}: no simulated profile for {gpu.id}"
    return gpu.id


def load_scenario(cap: NvsmiCapture) -> str:
    for needle, scenario in LOAD_SCENARIOS.items():
        if needle in cap.header.get("load", ""):
            return scenario
    pytest.fail(f"{cap.path.name}: no scenario for the load {cap.header.get('load')!r}; add one")


def settled(cap: NvsmiCapture) -> bool:
    """False where the idle section was read while the card still cooled down (its dmon power moves by
    more than 15 %: the L40S capture falls from 66 to 37 W over five rows)."""
    watts = [row["pwr"] for row in cap.dmon("idle")]
    return (max(watts) - min(watts)) <= 0.15 * max(watts)


@dataclass
class SimCard:
    sim: SimulatedNvml
    handle: Any


@pytest.fixture(scope="module")
def card(capture: NvsmiCapture) -> Iterator[SimCard]:
    sim = install(profile_id(capture), scenario="idle", manual_clock=True)
    N.nvmlInit()
    try:
        yield SimCard(sim, N.nvmlDeviceGetHandleByIndex(0))
    finally:
        N.nvmlShutdown()
        uninstall()


def _answer(fn: Callable[[], Any]) -> Any:
    """The call's value, or None when NVML answers with an error (what nvidia-smi prints as N/A)."""
    try:
        return fn()
    except N.NVMLError:
        return None


def _field(h: Any, fid: int, scope: int = 0) -> Any:
    (v,) = N.nvmlDeviceGetFieldValues(h, [(fid, scope)])
    if v.nvmlReturn != N.NVML_SUCCESS:
        return None
    return {0: v.value.dVal, 1: v.value.uiVal, 3: v.value.ullVal, 5: v.value.siVal}.get(v.valueType)


def _first(q: dict[str, str], *keys: str) -> str | None:
    for k in keys:
        if k in q:
            return q[k]
    return None


#: nvidia-smi -q keys (alternatives: the wording moved between drivers) -> the NVML call behind them
SUPPORT_PROBES: dict[str, tuple[tuple[str, ...], Callable[[Any], Any]]] = {
    "serial": (("Serial Number",), N.nvmlDeviceGetSerial),
    "fan": (("Fan Speed",), N.nvmlDeviceGetFanSpeed),
    "mig mode": (("MIG Mode/Current",), N.nvmlDeviceGetMigMode),
    "ecc mode": (("ECC Mode/Current",), N.nvmlDeviceGetEccMode),
    "T.Limit margin": (
        ("Temperature/GPU T.Limit Temp", "Temperature/GPU Current T.Limit Temp"),
        N.nvmlDeviceGetMarginTemperature,
    ),
    "memory temperature": (
        ("Temperature/Memory Current Temp",),
        lambda h: _field(h, N.NVML_FI_DEV_MEMORY_TEMP),
    ),
    "target temperature": (
        ("Temperature/GPU Target Temperature", "Temperature/GPU Target Temperature Specification"),
        lambda h: N.nvmlDeviceGetTemperatureThreshold(h, N.NVML_TEMPERATURE_THRESHOLD_ACOUSTIC_CURR),
    ),
    "shutdown T.Limit": (
        ("Temperature/GPU Shutdown T.Limit Temp",),
        lambda h: _field(h, N.NVML_FI_DEV_TEMPERATURE_SHUTDOWN_TLIMIT),
    ),
    "memory max-operating T.Limit": (
        ("Temperature/Memory Max Operating T.Limit Temp",),
        lambda h: _field(h, N.NVML_FI_DEV_TEMPERATURE_MEM_MAX_TLIMIT),
    ),
    "shutdown temperature": (
        ("Temperature/GPU Shutdown Temp",),
        lambda h: N.nvmlDeviceGetTemperatureThreshold(h, N.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN),
    ),
    "average power": (
        ("GPU Power Readings/Average Power Draw",),
        lambda h: _field(h, N.NVML_FI_DEV_POWER_AVERAGE, N.NVML_POWER_SCOPE_GPU),
    ),
    "instantaneous power": (
        ("GPU Power Readings/Instantaneous Power Draw",),
        lambda h: _field(h, N.NVML_FI_DEV_POWER_INSTANT, N.NVML_POWER_SCOPE_GPU),
    ),
    "memory average power": (
        ("GPU Memory Power Readings/Average Power Draw",),
        lambda h: _field(h, N.NVML_FI_DEV_POWER_AVERAGE, N.NVML_POWER_SCOPE_MEMORY),
    ),
    "module average power": (
        ("Module Power Readings/Average Power Draw",),
        lambda h: _field(h, N.NVML_FI_DEV_POWER_AVERAGE, N.NVML_POWER_SCOPE_MODULE),
    ),
    "customer boost clock": (
        ("Max Customer Boost Clocks/Graphics",),
        lambda h: N.nvmlDeviceGetMaxCustomerBoostClock(h, N.NVML_CLOCK_GRAPHICS),
    ),
    "applications clock": (
        ("Applications Clocks/Graphics",),
        lambda h: N.nvmlDeviceGetApplicationsClock(h, N.NVML_CLOCK_GRAPHICS),
    ),
    "display mode": (("Display Mode",), N.nvmlDeviceGetDisplayMode),
    "GPU recovery action": (
        ("GPU Recovery Action",),
        lambda h: _field(h, N.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION),
    ),
    "remapped rows": (("Remapped Rows", "Remapped Rows/Correctable Error"), N.nvmlDeviceGetRemappedRows),
    "retired pages": (
        ("Retired Pages/Single Bit ECC",),
        lambda h: N.nvmlDeviceGetRetiredPages(h, N.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS),
    ),
    "encoder stats": (("Encoder Stats/Active Sessions",), N.nvmlDeviceGetEncoderStats),
    "encoder utilization": (("Utilization/Encoder",), N.nvmlDeviceGetEncoderUtilization),
    "persistence mode": (("Persistence Mode",), N.nvmlDeviceGetPersistenceMode),
    "SW power cap counter": (
        ("Clocks Event Reasons Counters/SW Power Capping",),
        lambda h: N.nvmlDeviceGetViolationStatus(h, N.NVML_PERF_POLICY_POWER),
    ),
    "PCIe replays": (("PCI/Replays Since Reset",), N.nvmlDeviceGetPcieReplayCounter),
}


def test_supported_set_equals_the_real_cards(capture: NvsmiCapture, card: SimCard) -> None:
    q = capture.query("idle")
    real, simulated = set(), set()
    for name, (keys, call) in SUPPORT_PROBES.items():
        text = _first(q, *keys)
        if text is None:
            continue  # this driver's nvidia-smi does not print the reading at all
        if not _absent(text):
            real.add(name)
        if _answer(lambda call=call: call(card.handle)) is not None:  # type: ignore[misc]
            simulated.add(name)
    assert simulated == real, (
        f"answer on the simulator only: {simulated - real}; real only: {real - simulated}"
    )


def test_driver_symbols_match_the_captured_list(capture: NvsmiCapture, card: SimCard) -> None:
    symbols = capture.symbols()
    branch = capture.driver_version.split(".")[0]
    assert N.nvmlSystemGetDriverVersion().split(".")[0] == branch
    if symbols is None:
        pytest.skip(f"{capture.path.name} holds no nvml-symbols section (driver profile inferred)")
    lib = N.nvmlLib
    candidates = symbols | _pynvml_symbols()
    exported = {s for s in candidates if hasattr(lib, s)}
    assert exported == set(symbols)


def test_static_facts(capture: NvsmiCapture, card: SimCard) -> None:
    q, csv, h = capture.query("idle"), capture.query_gpu("idle"), card.handle
    assert N.nvmlDeviceGetName(h) == q["Product Name"]
    assert N.nvmlDeviceGetPciInfo(h).pciDeviceId == int(q["PCI/Device Id"], 16)
    mem = N.nvmlDeviceGetMemoryInfo(h, version=N.nvmlMemory_v2)
    mib = 1 << 20
    assert mem.total / mib == pytest.approx(number(q["FB Memory Usage/Total"]), rel=0.01)
    assert mem.reserved / mib == pytest.approx(number(q["FB Memory Usage/Reserved"]), rel=0.05)
    lo, hi = N.nvmlDeviceGetPowerManagementLimitConstraints(h)
    assert (lo / 1000, hi / 1000) == (number(csv["power.min_limit"]), number(csv["power.max_limit"]))
    assert N.nvmlDeviceGetPowerManagementDefaultLimit(h) / 1000 == number(csv["power.default_limit"])
    assert N.nvmlDeviceGetEnforcedPowerLimit(h) / 1000 == number(csv["enforced.power.limit"])
    for kind, key in ((N.NVML_CLOCK_SM, "SM"), (N.NVML_CLOCK_MEM, "Memory"), (N.NVML_CLOCK_VIDEO, "Video")):
        assert N.nvmlDeviceGetMaxClockInfo(h, kind) == number(q[f"Max Clocks/{key}"]), key
    boost = _answer(lambda: N.nvmlDeviceGetMaxCustomerBoostClock(h, N.NVML_CLOCK_GRAPHICS))
    assert boost == number(q["Max Customer Boost Clocks/Graphics"])
    link = "PCI/GPU Link Info/"
    assert N.nvmlDeviceGetGpuMaxPcieLinkGeneration(h) == number(q[link + "PCIe Generation/Device Max"])
    assert N.nvmlDeviceGetMaxPcieLinkGeneration(h) == number(q[link + "PCIe Generation/Max"])
    assert N.nvmlDeviceGetMaxPcieLinkWidth(h) == number(q[link + "Link Width/Max"])
    assert N.nvmlDeviceGetCudaComputeCapability(h) == tuple(int(x) for x in csv["compute_cap"].split("."))
    assert N.nvmlDeviceGetSupportedClocksEventReasons(h) == int(csv["clocks_event_reasons.supported"], 16)
    ecc = _answer(lambda: N.nvmlDeviceGetEccMode(h))
    want = {"Enabled": N.NVML_FEATURE_ENABLED, "Disabled": N.NVML_FEATURE_DISABLED}.get(q["ECC Mode/Current"])
    assert (ecc[0] if ecc else None) == want
    recovery = _field(h, N.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION)
    assert (recovery == N.NVML_GPU_RECOVERY_ACTION_NONE) == (q["GPU Recovery Action"] == "None")


def test_thermal_limits_are_reported_the_way_the_card_reports_them(
    capture: NvsmiCapture, card: SimCard
) -> None:
    t, h = capture.query("idle"), card.handle
    margin_text = _first(t, "Temperature/GPU T.Limit Temp", "Temperature/GPU Current T.Limit Temp")
    margin = _answer(lambda: N.nvmlDeviceGetMarginTemperature(h))
    if margin_text is not None and not _absent(margin_text):
        # T.Limit parts: the margin to T.Limit and offsets relative to it
        real_limit = number(t["Temperature/GPU Current Temp"]) + number(margin_text)  # type: ignore[operator]
        assert margin is not None
        assert N.nvmlDeviceGetTemperature(h, 0) + margin == pytest.approx(real_limit, abs=2)
        for key, fid in (
            ("GPU Shutdown T.Limit Temp", N.NVML_FI_DEV_TEMPERATURE_SHUTDOWN_TLIMIT),
            ("GPU Slowdown T.Limit Temp", N.NVML_FI_DEV_TEMPERATURE_SLOWDOWN_TLIMIT),
            ("GPU Max Operating T.Limit Temp", N.NVML_FI_DEV_TEMPERATURE_GPU_MAX_TLIMIT),
        ):
            assert _field(h, fid) == number(t[f"Temperature/{key}"]), key
    else:
        # legacy: thresholds as temperatures, no margin
        assert margin is None
        for key, kind in (
            ("GPU Shutdown Temp", N.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN),
            ("GPU Slowdown Temp", N.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN),
            ("GPU Max Operating Temp", N.NVML_TEMPERATURE_THRESHOLD_GPU_MAX),
        ):
            assert N.nvmlDeviceGetTemperatureThreshold(h, kind) == number(t[f"Temperature/{key}"]), key
    target_text = _first(
        t, "Temperature/GPU Target Temperature", "Temperature/GPU Target Temperature Specification"
    )
    target = _answer(
        lambda: N.nvmlDeviceGetTemperatureThreshold(h, N.NVML_TEMPERATURE_THRESHOLD_ACOUSTIC_CURR)
    )
    assert target == (None if _absent(target_text) else number(target_text))  # type: ignore[arg-type]


def _state(h: Any) -> dict[str, Any]:
    fan = _answer(lambda: N.nvmlDeviceGetFanSpeed(h))
    return {
        "power_w": N.nvmlDeviceGetPowerUsage(h) / 1000,
        "sm_mhz": N.nvmlDeviceGetClockInfo(h, N.NVML_CLOCK_SM),
        "mem_mhz": N.nvmlDeviceGetClockInfo(h, N.NVML_CLOCK_MEM),
        "pstate": N.nvmlDeviceGetPerformanceState(h),
        "temp_c": N.nvmlDeviceGetTemperature(h, 0),
        "fan": fan,
        "pcie_gen": N.nvmlDeviceGetCurrPcieLinkGeneration(h),
        "used_mib": N.nvmlDeviceGetMemoryInfo(h, version=N.nvmlMemory_v2).used / (1 << 20),
        "util": N.nvmlDeviceGetUtilizationRates(h).gpu,
        "enc": N.nvmlDeviceGetEncoderUtilization(h)[0],
        "reasons": N.nvmlDeviceGetCurrentClocksEventReasons(h),
    }


def _pstate(text: str) -> int:
    m = re.match(r"P(\d+)", text)
    assert m, text
    return int(m.group(1))


def test_idle_state(capture: NvsmiCapture, card: SimCard) -> None:
    card.sim.set_scenario(0, "idle")
    card.sim.advance(IDLE_S)
    s = _state(card.handle)
    q, csv, last = capture.query("idle"), capture.query_gpu("idle"), capture.dmon("idle")[-1]
    # the last dmon row is the latest idle reading (the settled one where the card still cooled)
    assert s["power_w"] == pytest.approx(last["pwr"], rel=0.35)
    assert s["sm_mhz"] == pytest.approx(last["pclk"], rel=0.05)
    assert s["mem_mhz"] == pytest.approx(last["mclk"], rel=0.05)
    assert s["pcie_gen"] == number(q["PCI/GPU Link Info/PCIe Generation/Current"])
    assert s["used_mib"] == pytest.approx(number(q["FB Memory Usage/Used"]), abs=64)
    fan = number(q["Fan Speed"])
    assert (s["fan"] is None) == (fan is None)
    if fan is not None:
        assert s["fan"] == pytest.approx(fan, abs=5)
    if settled(capture):
        assert s["pstate"] == _pstate(q["Performance State"])
        assert s["temp_c"] == pytest.approx(last["gtemp"], abs=6)
        assert s["reasons"] == int(csv["clocks_event_reasons.active"], 16)
    else:  # still cooling: the real card can only get cooler than it read
        assert s["temp_c"] <= last["gtemp"]


def test_load_lands_near_the_load_section(capture: NvsmiCapture, card: SimCard) -> None:
    card.sim.set_scenario(0, "idle")
    card.sim.advance(IDLE_S)
    card.sim.set_scenario(0, load_scenario(capture))
    card.sim.advance(LOAD_S)
    s = _state(card.handle)
    q, csv, rows = capture.query("load"), capture.query_gpu("load"), capture.dmon("load")
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    assert s["power_w"] == pytest.approx(mean["pwr"], rel=0.35)
    assert s["sm_mhz"] == pytest.approx(mean["pclk"], rel=0.05)
    assert s["mem_mhz"] == pytest.approx(mean["mclk"], rel=0.02)
    assert s["util"] == pytest.approx(mean["sm"], abs=15)
    assert s["enc"] == pytest.approx(mean["enc"], abs=15)
    assert s["pstate"] == _pstate(q["Performance State"])
    assert s["pcie_gen"] == number(q["PCI/GPU Link Info/PCIe Generation/Current"])
    assert s["used_mib"] == pytest.approx(number(q["FB Memory Usage/Used"]), abs=1024)
    assert s["reasons"] == int(csv["clocks_event_reasons.active"], 16)
    fan = number(q["Fan Speed"])
    if fan is not None:
        assert s["fan"] == pytest.approx(fan, abs=5)
    if settled(capture):
        assert s["temp_c"] == pytest.approx(mean["gtemp"], abs=10)


def test_every_calibrated_profile_names_a_capture_that_names_it_back() -> None:
    by_file = {p.name: p for p in CAPTURES}
    calibrated = {pid: prof.capture for pid, prof in DEVICE_PROFILES.items() if prof.capture}
    assert calibrated, "no profile is calibrated on a capture"
    for pid, name in calibrated.items():
        assert name in by_file, f"{pid}: capture {name} is not in {CAPTURE_DIR}"
        assert profile_id(parse_capture(by_file[name])) == pid
        assert DEVICE_PROFILES[pid].driver is not None  # the driver it was captured on
    for pid, prof in DEVICE_PROFILES.items():
        if not prof.capture:
            assert prof.source.startswith("no real-card capture"), pid


def test_uncalibrated_cards_take_their_memory_from_the_catalog_not_a_template_capture() -> None:
    from gpuwatch.telemetry.simulated.profiles import device_profile, simulatable_ids

    for gpu_id in simulatable_ids():
        profile = device_profile(gpu_id)
        if profile.capture:
            continue
        # a box built, not installed (the module's card fixture holds pynvml)
        total = SimulatedNvml(gpu_id, scenario="idle", manual_clock=True).devices[0].memory_total_bytes
        # NVML hides 0.4 % (HBM) to 6.3 % (GDDR with ECC on) of the datasheet size
        assert 0.93 * get_gpu(gpu_id).memory_bytes <= total <= get_gpu(gpu_id).memory_bytes, gpu_id
        assert profile.driver is None and profile.source.startswith("no real-card capture"), gpu_id
