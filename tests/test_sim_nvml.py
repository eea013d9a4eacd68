"""The simulated NVML through the real pynvml: what GeForce and Hopper cards answer, and how."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pynvml as N
import pytest

from gpuwatch.errors import UserError
from gpuwatch.telemetry.simulated import (
    SCENARIOS,
    SimulatedNvml,
    install,
    installed,
    parse_devices,
    uninstall,
)

RTX4090, H100 = 0, 1


@pytest.fixture
def sim() -> Iterator[SimulatedNvml]:
    s = install("rtx4090,h100-sxm", scenario="decode", manual_clock=True, seed=3)
    N.nvmlInit()
    yield s
    N.nvmlShutdown()
    uninstall()


def handle(i: int) -> object:
    return N.nvmlDeviceGetHandleByIndex(i)


def test_parse_devices_expands_counts_and_normalises_ids() -> None:
    assert parse_devices("h100-sxm,2xrtx4090") == ["h100-sxm", "rtx4090", "rtx4090"]
    assert parse_devices("NVIDIA GeForce RTX 4090") == ["rtx4090"]
    assert len(parse_devices("8xrtx4090")) == 8


@pytest.mark.parametrize("spec", ["rtx9999", "2x", "", "mi300x"])
def test_parse_devices_rejects_bad_specs_with_one_line(spec: str) -> None:
    with pytest.raises(UserError) as e:
        parse_devices(spec)
    assert "\n" not in str(e.value)


def test_scenarios_cover_the_contract() -> None:
    assert {"idle", "decode", "decode-batched", "prefill", "training", "failing-fan", "power-capped"} <= set(
        SCENARIOS
    )


def test_identity_as_nvml_reports_it(sim: SimulatedNvml) -> None:
    assert N.nvmlDeviceGetCount() == 2
    h = handle(RTX4090)
    assert N.nvmlDeviceGetName(h) == "NVIDIA GeForce RTX 4090"
    assert N.nvmlDeviceGetName(handle(H100)) == "NVIDIA H100 80GB HBM3"
    pci = N.nvmlDeviceGetPciInfo(h)
    assert pci.pciDeviceId == 0x268410DE
    assert N.nvmlDeviceGetPciInfo(handle(H100)).pciDeviceId == 0x233010DE
    uuid = N.nvmlDeviceGetUUID(h)
    assert uuid.startswith("GPU-")
    assert N.nvmlDeviceGetIndex(N.nvmlDeviceGetHandleByUUID(uuid)) == RTX4090
    assert N.nvmlDeviceGetIndex(N.nvmlDeviceGetHandleByPciBusId(pci.busId)) == RTX4090
    assert N.nvmlDeviceGetBrand(h) == N.NVML_BRAND_GEFORCE
    assert N.nvmlDeviceGetArchitecture(h) == N.NVML_DEVICE_ARCH_ADA
    assert N.nvmlDeviceGetArchitecture(handle(H100)) == N.NVML_DEVICE_ARCH_HOPPER
    assert N.nvmlDeviceGetCudaComputeCapability(h) == (8, 9)
    assert N.nvmlDeviceGetNumGpuCores(h) == 16384
    assert N.nvmlSystemGetDriverVersion() == "590.48.01"  # the H100 profile was captured on 590.48.01


def test_peak_bandwidth_from_nvml_answers(sim: SimulatedNvml) -> None:
    def peak_gb_s(i: int) -> float:
        h = handle(i)
        mem_mhz = N.nvmlDeviceGetMaxClockInfo(h, N.NVML_CLOCK_MEM)
        return 2 * mem_mhz * 1e6 * N.nvmlDeviceGetMemoryBusWidth(h) / 8 / 1e9

    assert peak_gb_s(RTX4090) == pytest.approx(1008, abs=1)
    assert peak_gb_s(H100) == pytest.approx(3352, abs=1)
    assert N.nvmlDeviceGetMaxClockInfo(handle(RTX4090), N.NVML_CLOCK_SM) == 3105


def test_power_limits_in_milliwatts(sim: SimulatedNvml) -> None:
    h = handle(RTX4090)
    assert N.nvmlDeviceGetPowerManagementLimitConstraints(h) == [150_000, 600_000]
    assert N.nvmlDeviceGetPowerManagementDefaultLimit(h) == 450_000
    assert N.nvmlDeviceGetEnforcedPowerLimit(handle(H100)) == 700_000


@pytest.mark.parametrize(
    ("call", "answers_on"),
    [
        (lambda h: N.nvmlDeviceGetFanSpeed(h), RTX4090),
        (lambda h: N.nvmlDeviceGetNumFans(h), RTX4090),
        (
            lambda h: N.nvmlDeviceGetTotalEccErrors(
                h, N.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, N.NVML_VOLATILE_ECC
            ),
            H100,
        ),
        (lambda h: N.nvmlDeviceGetMigMode(h), H100),
        (lambda h: N.nvmlDeviceGetMaxCustomerBoostClock(h, N.NVML_CLOCK_SM), H100),
    ],
    ids=["fan", "num_fans", "ecc_errors", "mig", "customer_boost"],
)
def test_geforce_and_hopper_differ_like_the_real_cards(
    sim: SimulatedNvml, call: Callable[[object], object], answers_on: int
) -> None:
    assert call(handle(answers_on)) is not None
    with pytest.raises(N.NVMLError_NotSupported):
        call(handle(H100 if answers_on == RTX4090 else RTX4090))


def test_fan_is_geforce_only_and_customer_boost_hopper_only(sim: SimulatedNvml) -> None:
    assert N.nvmlDeviceGetNumFans(handle(RTX4090)) == 2
    with pytest.raises(N.NVMLError_NotSupported):
        N.nvmlDeviceGetFanSpeed(handle(H100))
    assert N.nvmlDeviceGetMaxCustomerBoostClock(handle(H100), N.NVML_CLOCK_SM) == 1980
    with pytest.raises(N.NVMLError_NotSupported):
        N.nvmlDeviceGetMaxCustomerBoostClock(handle(RTX4090), N.NVML_CLOCK_SM)
    assert N.nvmlDeviceGetMigMode(handle(H100)) == [0, 0]
    assert N.nvmlDeviceGetEccMode(handle(H100)) == [1, 1]
    assert N.nvmlDeviceGetEccMode(handle(RTX4090)) == [0, 0]  # the 4090 dump: ECC mode "Disabled"


def test_field_values_memory_temperature_and_unknown_fields(sim: SimulatedNvml) -> None:
    fields = [N.NVML_FI_DEV_MEMORY_TEMP, N.NVML_FI_DEV_POWER_INSTANT, 9999]
    g, h = (N.nvmlDeviceGetFieldValues(handle(i), fields) for i in (RTX4090, H100))
    assert g[0].nvmlReturn == N.NVML_ERROR_NOT_SUPPORTED
    assert h[0].nvmlReturn == N.NVML_SUCCESS
    assert 20 < h[0].value.uiVal < 100
    assert g[1].nvmlReturn == N.NVML_SUCCESS and g[1].value.uiVal > 10_000  # mW
    assert g[2].nvmlReturn == h[2].nvmlReturn == N.NVML_ERROR_NOT_SUPPORTED


def test_tlimit_fields_are_margins_not_temperatures(sim: SimulatedNvml) -> None:
    ids = [
        N.NVML_FI_DEV_TEMPERATURE_SHUTDOWN_TLIMIT,
        N.NVML_FI_DEV_TEMPERATURE_SLOWDOWN_TLIMIT,
        N.NVML_FI_DEV_TEMPERATURE_GPU_MAX_TLIMIT,
    ]
    values = [f.value.siVal for f in N.nvmlDeviceGetFieldValues(handle(RTX4090), ids)]
    assert values == [-7, -2, 0]  # the 4090 dump's T.Limit lines
    h = handle(RTX4090)
    slowdown = N.nvmlDeviceGetTemperatureThreshold(h, N.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN)
    max_op = N.nvmlDeviceGetTemperatureThreshold(h, N.NVML_TEMPERATURE_THRESHOLD_GPU_MAX)
    assert slowdown - max_op == 2  # legacy call: absolute temperatures consistent with the margins
    margin = N.nvmlDeviceGetMarginTemperature(h)
    assert margin == max_op - N.nvmlDeviceGetTemperatureV(h, N.NVML_TEMPERATURE_GPU)


def test_memory_info_v1_and_v2(sim: SimulatedNvml) -> None:
    h = handle(RTX4090)
    v2 = N.nvmlDeviceGetMemoryInfo(h, version=N.nvmlMemory_v2)
    v1 = N.nvmlDeviceGetMemoryInfo(h)
    assert v2.total == v1.total == 24 * 2**30
    assert v2.total == v2.reserved + v2.used + v2.free
    assert v1.used == v2.used + v2.reserved
    assert v2.used > 0.8 * v2.total  # the serving process holds its KV cache


def test_running_processes_sizing_protocol_and_name(sim: SimulatedNvml) -> None:
    procs = N.nvmlDeviceGetComputeRunningProcesses(handle(RTX4090))
    assert len(procs) == 1
    assert procs[0].usedGpuMemory > 2**30
    assert "vllm" in N.nvmlSystemGetProcessName(procs[0].pid)
    assert N.nvmlDeviceGetGraphicsRunningProcesses(handle(RTX4090)) == []
    sim.set_scenario(RTX4090, "idle")
    assert N.nvmlDeviceGetComputeRunningProcesses(handle(RTX4090)) == []


def test_gpm_only_on_hopper(sim: SimulatedNvml) -> None:
    assert N.nvmlGpmQueryDeviceSupport(handle(RTX4090)).isSupportedDevice == 0
    h = handle(H100)
    assert N.nvmlGpmQueryDeviceSupport(h).isSupportedDevice == 1
    ids = [N.NVML_GPM_METRIC_DRAM_BW_UTIL, N.NVML_GPM_METRIC_SM_UTIL, N.NVML_GPM_METRIC_ANY_TENSOR_UTIL, 400]
    s1, s2 = N.nvmlGpmSampleAlloc(), N.nvmlGpmSampleAlloc()
    try:
        N.nvmlGpmSampleGet(h, s1)
        sim.advance(2.0)
        N.nvmlGpmSampleGet(h, s2)
        mg = N.c_nvmlGpmMetricsGet_t()
        mg.version = N.NVML_GPM_METRICS_GET_VERSION
        mg.sample1, mg.sample2, mg.numMetrics = s1, s2, len(ids)
        for k, mid in enumerate(ids):
            mg.metrics[k].metricId = mid
        N.nvmlGpmMetricsGet(mg)
        dram, sm, tensor, unknown = (mg.metrics[k] for k in range(len(ids)))
        assert dram.nvmlReturn == sm.nvmlReturn == tensor.nvmlReturn == N.NVML_SUCCESS
        assert 60 < dram.value <= 100  # batch-1 decode is bandwidth-bound
        assert tensor.value < 20
        assert unknown.nvmlReturn == N.NVML_ERROR_NOT_SUPPORTED
        with pytest.raises(N.NVMLError_NotSupported):
            N.nvmlGpmSampleGet(handle(RTX4090), s1)
    finally:
        N.nvmlGpmSampleFree(s1)
        N.nvmlGpmSampleFree(s2)


def test_xid_event_delivered_and_timeout_otherwise(sim: SimulatedNvml) -> None:
    es = N.nvmlEventSetCreate()
    try:
        N.nvmlDeviceRegisterEvents(handle(H100), N.nvmlEventTypeXidCriticalError, es)
        with pytest.raises(N.NVMLError_Timeout):
            N.nvmlEventSetWait(es, 10)
        threading.Timer(0.05, sim.emit_xid, args=(H100, 48)).start()
        data = N.nvmlEventSetWait(es, 2000)
        assert data.eventType == N.nvmlEventTypeXidCriticalError
        assert data.eventData == 48
        assert N.nvmlDeviceGetIndex(data.device) == H100
        sim.emit_xid(RTX4090, 79)  # not registered for this set
        with pytest.raises(N.NVMLError_Timeout):
            N.nvmlEventSetWait(es, 10)
    finally:
        N.nvmlEventSetFree(es)


def test_r470_driver_lacks_newer_symbols() -> None:
    install("rtx4090", manual_clock=True, driver="r470")
    try:
        N.nvmlInit()
        h = handle(0)
        sim_r470 = installed()
        assert sim_r470 is not None
        sim_r470.advance(2.0)
        with pytest.raises(N.NVMLError_FunctionNotFound):
            N.nvmlDeviceGetTemperatureV(h, N.NVML_TEMPERATURE_GPU)
        with pytest.raises(N.NVMLError_FunctionNotFound):
            N.nvmlDeviceGetCurrentClocksEventReasons(h)
        with pytest.raises(N.NVMLError_FunctionNotFound):
            N.nvmlDeviceGetMemoryBusWidth(h)
        # the older calls a poller falls back to still answer
        assert N.nvmlDeviceGetTemperature(h, N.NVML_TEMPERATURE_GPU) > 20
        assert N.nvmlDeviceGetCurrentClocksThrottleReasons(h) & N.nvmlClocksThrottleReasonGpuIdle == 0
        assert N.nvmlDeviceGetComputeRunningProcesses_v2(h)[0].usedGpuMemory > 0
        N.nvmlShutdown()
    finally:
        uninstall()


def test_calls_before_init_raise_uninitialized() -> None:
    install("rtx4090", manual_clock=True)
    try:
        N.nvmlInit()
        h = handle(0)
        N.nvmlShutdown()
        with pytest.raises(N.NVMLError_Uninitialized):
            N.nvmlDeviceGetPowerUsage(h)
    finally:
        uninstall()
