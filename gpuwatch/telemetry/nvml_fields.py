"""NVML field values: which field ids gpuwatch reads, in which tier, and how each becomes a reading.

Why fields: one ``nvmlDeviceGetFieldValues`` batch replaces a dozen calls (nvml-notes §4), and some
readings exist only as fields (memory temperature, violation counters, T.Limit offsets). A per-field
error costs that field; a permanent one is cached so the field is never asked for again. Drivers
without a field fall back to the older call (:func:`field_fallbacks`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pynvml as N

from gpuwatch.telemetry.nvml_calls import PERMANENT, DeviceRead, DeviceState, GpuLostError, classify
from gpuwatch.telemetry.sample import Unavailable

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
    N.NVML_FI_DEV_ECC_SBE_AGG_TOTAL: ("ecc_errors_corrected_aggregate_total", 1.0),  # 5
    N.NVML_FI_DEV_ECC_DBE_AGG_TOTAL: ("ecc_errors_uncorrected_aggregate_total", 1.0),  # 6
    N.NVML_FI_DEV_RETIRED_SBE: ("retired_pages_single_bit_total", 1.0),  # 29
    N.NVML_FI_DEV_RETIRED_DBE: ("retired_pages_double_bit_total", 1.0),  # 30
    N.NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL: ("nvlink_crc_flit_errors_total", 1.0),  # 38
    N.NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL: ("nvlink_crc_data_errors_total", 1.0),  # 45
    N.NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL: ("nvlink_replay_errors_total", 1.0),  # 52
    N.NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL: ("nvlink_recovery_errors_total", 1.0),  # 59
}

#: Readings that change slowly, re-read every SLOW_TIER_EVERY polls and reused in between
#: (nvml-notes §4: slow tiers for processes and static data; the process list costs one call per
#: process for its name, and reliability counters change on a scale of hours).
SLOW_READINGS: tuple[str, ...] = (
    *(reading for reading, _ in SLOW_FIELDS.values()),
    "processes",
    "pcie_replay_errors_total",
)

_BOOL_READINGS = frozenset({"remap_pending", "remap_failure", "retired_pages_pending"})
_INT_READINGS = frozenset(
    {
        "remapped_rows_correctable",
        "remapped_rows_uncorrectable",
        "ecc_errors_corrected_total",
        "ecc_errors_uncorrected_total",
        "recovery_action",
        "ecc_errors_corrected_aggregate_total",
        "ecc_errors_uncorrected_aggregate_total",
        "retired_pages_single_bit_total",
        "retired_pages_double_bit_total",
        "nvlink_crc_flit_errors_total",
        "nvlink_crc_data_errors_total",
        "nvlink_replay_errors_total",
        "nvlink_recovery_errors_total",
    }
)

#: per-link NVLink data counters (KiB, scope = link index), summed into one byte counter each
NVLINK_THROUGHPUT_FIELDS: Mapping[int, str] = {
    N.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX: "nvlink_tx_bytes_total",  # 138
    N.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX: "nvlink_rx_bytes_total",  # 139
}
_KIB = 1024

#: static T.Limit fields (offsets relative to the max-operating T.Limit, not temperatures)
TLIMIT_FIELDS: Mapping[int, str] = {
    N.NVML_FI_DEV_TEMPERATURE_SHUTDOWN_TLIMIT: "shutdown",  # 193
    N.NVML_FI_DEV_TEMPERATURE_SLOWDOWN_TLIMIT: "slowdown",  # 194
    N.NVML_FI_DEV_TEMPERATURE_GPU_MAX_TLIMIT: "max_operating",  # 196
}


def field_value(fv: Any) -> float:
    """The number in an ``nvmlFieldValue_t``, whatever its value type."""
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


def read_nvlink_link_count(dev: DeviceState, r: DeviceRead) -> int:
    """Static: how many NVLinks the card has (0 where NVML says none or cannot say)."""
    return int(read_fields(dev, r, [N.NVML_FI_DEV_NVLINK_LINK_COUNT]).get(N.NVML_FI_DEV_NVLINK_LINK_COUNT, 0))


def read_nvlink_throughput(dev: DeviceState, r: DeviceRead) -> None:
    """The per-link data counters in one batch, summed over links, KiB -> bytes (cards with NVLink)."""
    names = tuple(NVLINK_THROUGHPUT_FIELDS.values())
    if (
        not dev.nvlink_links
        or "field:nvlink" in dev.unsupported
        or "nvmlDeviceGetFieldValues" in dev.unsupported
    ):
        r.mark(names, dev.unsupported.get("field:nvlink", Unavailable.NOT_SUPPORTED))
        return
    wanted = [(fid, link) for fid in NVLINK_THROUGHPUT_FIELDS for link in range(dev.nvlink_links)]
    batch = r.call("nvmlDeviceGetFieldValues", N.nvmlDeviceGetFieldValues, dev.handle, wanted, readings=names)
    if batch is None:
        return
    totals: dict[int, float] = {}
    for fv in batch:
        fid = int(fv.fieldId)
        if fv.nvmlReturn == N.NVML_SUCCESS:
            totals[fid] = totals.get(fid, 0.0) + field_value(fv)
            continue
        reason = classify(int(fv.nvmlReturn))
        if reason is Unavailable.GPU_LOST:
            raise GpuLostError(f"field {fid}")
        if reason in PERMANENT:
            dev.unsupported["field:nvlink"] = reason
    for fid, reading in NVLINK_THROUGHPUT_FIELDS.items():
        if fid in totals and "field:nvlink" not in dev.unsupported:
            r.values[reading] = int(totals[fid] * _KIB)
        else:
            r.mark([reading], dev.unsupported.get("field:nvlink", Unavailable.ERROR))


def read_fields(dev: DeviceState, r: DeviceRead, ids: list[int]) -> dict[int, float]:
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
            out[fid] = field_value(fv)
            continue
        reason = classify(int(fv.nvmlReturn))
        r.errors[reason.value] += 1
        if reason is Unavailable.GPU_LOST:
            raise GpuLostError(f"field {fid}")
        if reason in PERMANENT:
            dev.unsupported[f"field:{fid}"] = reason
    return out


def read_tier_fields(dev: DeviceState, r: DeviceRead, slow_due: bool) -> None:
    """The fast tier (and the slow one when due) into ``r.values``, then the older-call fallbacks."""
    v = r.values
    tiers = {**FAST_FIELDS, **SLOW_FIELDS} if slow_due else FAST_FIELDS
    fields = read_fields(dev, r, list(tiers))
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
    read_nvlink_throughput(dev, r)
    field_fallbacks(dev, r, slow_due)


def field_fallbacks(dev: DeviceState, r: DeviceRead, slow_due: bool) -> None:
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
