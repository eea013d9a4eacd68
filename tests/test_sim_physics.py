"""The simulated cards' physics, observed through pynvml: power cap, thermal slowdown, energy, clocks."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pynvml as N
import pytest

from gpuwatch.telemetry.simulated import SimulatedNvml, install, uninstall
from gpuwatch.telemetry.simulated.physics import FAST_FORWARD_AFTER_S

SW_POWER_CAP = N.nvmlClocksEventReasonSwPowerCap
SW_THERMAL = N.nvmlClocksEventReasonSwThermalSlowdown
HW_THERMAL = N.nvmlClocksEventReasonHwThermalSlowdown
HW_SLOWDOWN = N.nvmlClocksEventReasonHwSlowdown


@pytest.fixture
def box(request: pytest.FixtureRequest) -> Iterator[SimulatedNvml]:
    devices, scenario = request.param
    s = install(devices, scenario=scenario, manual_clock=True, seed=1)
    N.nvmlInit()
    yield s
    N.nvmlShutdown()
    uninstall()


def reading(i: int) -> dict[str, int]:
    h = N.nvmlDeviceGetHandleByIndex(i)
    instant = N.nvmlDeviceGetFieldValues(h, [N.NVML_FI_DEV_POWER_INSTANT])[0].value.uiVal
    return {
        "power_w": N.nvmlDeviceGetPowerUsage(h) // 1000,
        "power_instant_mw": instant,
        "limit_w": N.nvmlDeviceGetEnforcedPowerLimit(h) // 1000,
        "sm_mhz": N.nvmlDeviceGetClockInfo(h, N.NVML_CLOCK_SM),
        "temp_c": N.nvmlDeviceGetTemperatureV(h, N.NVML_TEMPERATURE_GPU),
        "reasons": N.nvmlDeviceGetCurrentClocksEventReasons(h),
        "energy_mj": N.nvmlDeviceGetTotalEnergyConsumption(h),
        "util_gpu": N.nvmlDeviceGetUtilizationRates(h).gpu,
    }


@pytest.mark.parametrize("box", [("rtx4090,rtx4090", ["decode", "training"])], indirect=True)
def test_training_power_caps_and_clocks_fall(box: SimulatedNvml) -> None:
    box.advance(55.0)  # mid-step, not in the data-loading dip at the end of each 10 s step
    decode, training = reading(0), reading(1)
    assert training["power_instant_mw"] / 1000 == pytest.approx(training["limit_w"], rel=0.01)
    assert training["reasons"] & SW_POWER_CAP
    assert not decode["reasons"] & SW_POWER_CAP
    assert decode["power_w"] < 0.85 * decode["limit_w"]
    assert training["sm_mhz"] < decode["sm_mhz"] - 100  # the cap costs clock
    violation = N.nvmlDeviceGetViolationStatus(N.nvmlDeviceGetHandleByIndex(1), N.NVML_PERF_POLICY_POWER)
    assert violation.violationTime > 30e9  # ns spent capped, most of the minute


@pytest.mark.parametrize("box", [("rtx4090", "power-capped")], indirect=True)
def test_power_capped_scenario_lowers_the_limit(box: SimulatedNvml) -> None:
    box.advance(30.0)
    r = reading(0)
    assert r["limit_w"] == pytest.approx(0.6 * 450)
    assert r["power_instant_mw"] / 1000 <= r["limit_w"] + 1
    assert r["reasons"] & SW_POWER_CAP


@pytest.mark.parametrize("box", [("rtx4090,h100-sxm", "failing-fan")], indirect=True)
def test_failing_fan_reaches_thermal_slowdown_then_recovers_at_idle(box: SimulatedNvml) -> None:
    start = [reading(i) for i in (0, 1)]
    seen = [0, 0]
    lowest_clock = [10**9, 10**9]
    hot_by_s: list[int | None] = [None, None]
    for step in range(60):  # ten simulated minutes
        box.advance(10.0)
        for i in (0, 1):
            r = reading(i)
            seen[i] |= r["reasons"]
            lowest_clock[i] = min(lowest_clock[i], r["sm_mhz"])
            if hot_by_s[i] is None and r["reasons"] & HW_THERMAL:
                hot_by_s[i] = (step + 1) * 10
    for i in (0, 1):
        h = N.nvmlDeviceGetHandleByIndex(i)
        slowdown = N.nvmlDeviceGetTemperatureThreshold(h, N.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN)
        assert seen[i] & HW_THERMAL and seen[i] & HW_SLOWDOWN and seen[i] & SW_THERMAL
        hot_s = hot_by_s[i]
        assert hot_s is not None and hot_s <= 300  # within a few simulated minutes
        assert lowest_clock[i] < 0.75 * start[i]["sm_mhz"] or lowest_clock[i] < 1500
        assert reading(i)["temp_c"] >= slowdown - 8
    assert N.nvmlDeviceGetFanSpeed(N.nvmlDeviceGetHandleByIndex(0)) == 20  # stuck
    hw_ns = N.nvmlDeviceGetFieldValues(N.nvmlDeviceGetHandleByIndex(0), [270])[0].value.ullVal
    assert hw_ns > 0
    for i in (0, 1):
        box.set_scenario(i, "idle")
    box.advance(300.0)
    for i in (0, 1):
        r = reading(i)
        assert not r["reasons"] & (HW_THERMAL | SW_THERMAL | HW_SLOWDOWN)
        assert r["reasons"] & N.nvmlClocksEventReasonGpuIdle
        assert r["temp_c"] < 50
    box.set_scenario(0, "decode")  # a healthy fan again: full clock back
    box.advance(20.0)
    assert reading(0)["sm_mhz"] == 2730 and not reading(0)["reasons"] & (HW_THERMAL | SW_THERMAL)


@pytest.mark.parametrize("box", [("rtx4090", "prefill")], indirect=True)
def test_energy_counter_is_the_integral_of_power(box: SimulatedNvml) -> None:
    before = reading(0)["energy_mj"]
    summed_j = 0.0
    dt = 0.25  # the simulator's grid: power is constant within a step
    for _ in range(400):
        box.advance(dt)
        summed_j += reading(0)["power_instant_mw"] / 1000 * dt
    delta_j = (reading(0)["energy_mj"] - before) / 1000
    assert delta_j == pytest.approx(summed_j, rel=0.002)
    assert 100 * 30 < delta_j < 450 * 100  # prefill bursts between idle and the cap for 100 s


@pytest.mark.parametrize("box", [("rtx4090", "idle")], indirect=True)
def test_idle_card_reads_idle(box: SimulatedNvml) -> None:
    box.advance(60.0)
    h = N.nvmlDeviceGetHandleByIndex(0)
    r = reading(0)
    assert r["util_gpu"] == 0 and r["power_w"] < 40
    assert r["reasons"] == N.nvmlClocksEventReasonGpuIdle
    assert N.nvmlDeviceGetPerformanceState(h) == 8
    assert N.nvmlDeviceGetCurrPcieLinkGeneration(h) == 1  # the link down-trains at idle
    assert N.nvmlDeviceGetMaxPcieLinkGeneration(h) == 4


def _trace(seed: int) -> list[tuple[int, ...]]:
    sim = install("rtx4090,h100-sxm", scenario="prefill", manual_clock=True, seed=seed)
    try:
        N.nvmlInit()
        out: list[tuple[int, ...]] = []
        for _ in range(20):
            sim.advance(3.0)
            out.extend(tuple(reading(i).values()) for i in (0, 1))
        N.nvmlShutdown()
        return out
    finally:
        uninstall()


def test_same_seed_same_readings_other_seed_differs() -> None:
    assert _trace(7) == _trace(7)
    assert _trace(7) != _trace(8)


def test_chunking_of_advance_does_not_change_the_run() -> None:
    sims = []
    for chunks in ([60.0], [0.5] * 120):
        sim = install("rtx4090", scenario="training", manual_clock=True, seed=2)
        for c in chunks:
            sim.advance(c)
        sims.append((sim.devices[0].temperature_c, sim.devices[0].counters.energy_mj))
        uninstall()
    assert sims[0] == sims[1]


def test_time_scale_runs_simulated_minutes_in_real_moments() -> None:
    sim = install("rtx4090", scenario="training", time_scale=600.0)
    try:
        N.nvmlInit()
        t0 = sim.now_s()
        time.sleep(0.2)
        elapsed = sim.now_s() - t0
        assert elapsed >= 0.2 * 600 * 0.9  # at least ~2 simulated minutes went by
        assert reading(0)["temp_c"] > 55  # and the card heated accordingly
        N.nvmlShutdown()
    finally:
        uninstall()


def test_manual_clock_starts_at_a_fixed_epoch_and_only_moves_on_advance() -> None:
    sim = install("rtx4090", manual_clock=True)
    try:
        t0 = sim.now_s()
        time.sleep(0.01)
        assert sim.now_s() == t0 == 1_767_225_600.0
        sim.advance(12.5)
        assert sim.now_s() == t0 + 12.5
    finally:
        uninstall()


def test_a_very_fast_clock_costs_bounded_steps_and_still_heats_the_card() -> None:
    # --time-scale 1e6 used to integrate every 0.25 s step of the backlog: 4 million per real second
    sim = install("rtx4090", scenario="training", time_scale=1e6)
    energy0_mj = sim.devices[0].counters.energy_mj
    try:
        N.nvmlInit()
        time.sleep(0.2)  # ~2e5 simulated seconds
        hot = reading(0)["temp_c"]
        dev = sim.devices[0]
        assert dev.elapsed_s > 1e5
        # a read integrates at most the fast-forward horizon on a coarse grid; the backlog beyond is skipped
        calls = sum(sim.calls.values())
        assert dev.steps <= calls * (FAST_FORWARD_AFTER_S / dev.step_s + 1)
        assert dev.steps < dev.elapsed_s / 0.25 / 100  # vs one 0.25 s step per simulated quarter second
        assert hot > 55  # the held state is the loaded one: the card reads hot, as after hours of training
        # energy kept counting over the skipped span (>= 100 W for 1e5 s)
        assert dev.counters.energy_mj - energy0_mj > 1e5 * 100 * 1e3
        N.nvmlShutdown()
    finally:
        uninstall()
