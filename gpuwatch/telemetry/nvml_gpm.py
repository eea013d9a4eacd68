"""GPM (GPU Performance Monitoring, Hopper and newer): a two-sample ring per device, differenced per poll.

Why a ring: a GPM metric is a difference of two samples, so each poll takes one sample into the slot
the previous poll did not use and asks NVML for the metrics between the two; the first poll after
(re)attaching has nothing to difference and gives no GpmSample.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import pynvml as N

from gpuwatch.telemetry.nvml_calls import DeviceRead, DeviceState
from gpuwatch.telemetry.sample import GpmSample, Unavailable

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


def probe_gpm(dev: DeviceState, r: DeviceRead) -> None:
    """Ask once (static tier) whether the device supports GPM."""
    support = r.call("nvmlGpmQueryDeviceSupport", N.nvmlGpmQueryDeviceSupport, dev.handle, readings=["gpm"])
    dev.gpm_supported = bool(support is not None and support.isSupportedDevice)
    if support is not None and not support.isSupportedDevice:
        dev.unsupported["gpm"] = Unavailable.NOT_SUPPORTED


def read_gpm(dev: DeviceState, r: DeviceRead, now: float) -> GpmSample | None:
    """Take this poll's sample and difference it with the previous one; None on the first of a pair."""
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
    if (
        r.call("nvmlGpmSampleGet", N.nvmlGpmSampleGet, dev.handle, dev.gpm_samples[slot], readings=["gpm"])
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


def free_gpm(dev: DeviceState) -> None:
    """Release the ring (on close, re-attach or re-init)."""
    for s in dev.gpm_samples:
        with contextlib.suppress(N.NVMLError):
            N.nvmlGpmSampleFree(s)
    dev.gpm_samples = []
    dev.gpm_last = None
