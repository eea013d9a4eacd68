"""The snapshot: one typed, immutable record per poll.

A reading the card cannot give is ``None`` and ``GpuSample.unavailable`` says why; never zero.
Every field carries its unit in its name. This module is the contract between telemetry and
everything that reads it (live, tui, exporter, record/replay): add fields, do not rename them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import IntFlag, StrEnum
from functools import lru_cache


class Unavailable(StrEnum):
    """Why a reading is absent."""

    NOT_SUPPORTED = "not_supported"
    NO_PERMISSION = "no_permission"
    GPU_LOST = "gpu_lost"
    FUNCTION_NOT_FOUND = "function_not_found"  # the driver lacks the symbol
    ERROR = "error"  # any other NVML error on this reading this poll
    #: the GPU's last successful read is older than the freshness bound (a hung or slow card)
    STALE = "stale"


class ClockEventReason(IntFlag):
    """NVML clock-event (throttle) reason bits, as in nvml.h."""

    GPU_IDLE = 0x001
    APPLICATIONS_CLOCKS = 0x002
    SW_POWER_CAP = 0x004
    HW_SLOWDOWN = 0x008
    SYNC_BOOST = 0x010
    SW_THERMAL = 0x020
    HW_THERMAL = 0x040
    HW_POWER_BRAKE = 0x080
    DISPLAY_CLOCKS = 0x100


#: Reasons that mean the card is held back (idle, app clocks and display are not throttling).
THROTTLING_REASONS = (
    ClockEventReason.SW_POWER_CAP
    | ClockEventReason.HW_SLOWDOWN
    | ClockEventReason.SYNC_BOOST
    | ClockEventReason.SW_THERMAL
    | ClockEventReason.HW_THERMAL
    | ClockEventReason.HW_POWER_BRAKE
)


def reason_names(mask: int) -> list[str]:
    """Snake-case names of the set bits; unknown bits are kept as hex, never dropped."""
    return list(_reason_names(mask))


@lru_cache(maxsize=1024)
def _reason_names(mask: int) -> tuple[str, ...]:
    """Cached: every face asks for every GPU every poll, and a card shows few distinct masks."""
    names = [r.name.lower() for r in ClockEventReason if r.name and mask & r.value]
    unknown = mask & ~sum(r.value for r in ClockEventReason)
    if unknown:
        names.append(f"0x{unknown:x}")
    return tuple(names)


@dataclass(frozen=True, slots=True)
class ProcessSample:
    pid: int
    name: str | None
    used_memory_bytes: int | None  # None under WDDM or when the driver hides it
    #: the container the process runs in (its name, or a 12-digit id where the runtime's state is not
    #: readable) and the runtime that made it; None for a host process (gpuwatch.telemetry.containers)
    container: str | None = None
    container_runtime: str | None = None


@dataclass(frozen=True, slots=True)
class GpmSample:
    """GPM metrics over the last poll interval (Hopper and newer). Ratios are 0..1."""

    interval_s: float
    dram_bandwidth_util_ratio: float | None = None
    sm_util_ratio: float | None = None
    sm_occupancy_ratio: float | None = None
    tensor_util_ratio: float | None = None  # any tensor pipe
    hmma_tensor_util_ratio: float | None = None
    fp16_util_ratio: float | None = None
    fp32_util_ratio: float | None = None
    pcie_tx_bytes_s: float | None = None
    pcie_rx_bytes_s: float | None = None
    nvlink_tx_bytes_s: float | None = None
    nvlink_rx_bytes_s: float | None = None


@dataclass(frozen=True, slots=True)
class GpuSample:
    index: int
    uuid: str
    name: str
    pci_bus_id: str
    lost: bool = False
    #: NVML's pciDeviceId (e.g. 0x268410DE); None where NVML gave none (or in older recordings)
    pci_device_id: int | None = None
    #: the card's catalog id, matched once by telemetry (model.catalog.identify_gpu); None: not in the catalog
    catalog_id: str | None = None
    #: when these readings were actually read (Unix seconds, the source's clock); 0.0 = never read
    read_timestamp_s: float = 0.0
    #: True when the last successful read is older than the freshness bound (see telemetry.freshness):
    #: the readings are then absent (Unavailable.STALE), never the old values passed off as current
    stale: bool = False
    # temperatures
    temperature_c: float | None = None
    memory_temperature_c: float | None = None
    slowdown_temperature_c: float | None = None
    shutdown_temperature_c: float | None = None
    max_operating_temperature_c: float | None = None
    #: distance to the nearest slowdown threshold (on Ada+ NVML reports margins, not temperatures)
    slowdown_margin_c: float | None = None
    # power and energy
    power_w: float | None = None  # nvmlDeviceGetPowerUsage (1 s average on Ampere+ except GA100)
    power_instant_w: float | None = None
    power_limit_w: float | None = None  # enforced, after all limiters
    power_limit_min_w: float | None = None
    power_limit_max_w: float | None = None
    power_limit_default_w: float | None = None
    energy_j: float | None = None  # total since driver reload (exact integral)
    # clocks
    sm_clock_hz: float | None = None
    memory_clock_hz: float | None = None
    graphics_clock_hz: float | None = None
    video_clock_hz: float | None = None
    sm_clock_max_hz: float | None = None
    memory_clock_max_hz: float | None = None
    graphics_clock_max_hz: float | None = None
    # memory
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    #: total - reserved - used (nvmlMemory_v2); reserved is what the driver and firmware keep back
    memory_free_bytes: int | None = None
    memory_reserved_bytes: int | None = None
    memory_bus_width_bits: int | None = None
    #: 2 x max memory clock x bus width / 8, or the catalog's figure where the card reports nothing usable
    peak_memory_bandwidth_bytes_s: float | None = None
    # utilisation (0..1). memory_controller_busy is a duty cycle, NOT a share of bandwidth.
    sm_busy_ratio: float | None = None
    memory_controller_busy_ratio: float | None = None
    # PCIe
    pcie_tx_bytes_s: float | None = None
    pcie_rx_bytes_s: float | None = None
    pcie_link_gen: int | None = None
    pcie_link_width: int | None = None
    pcie_link_gen_max: int | None = None
    pcie_link_width_max: int | None = None
    #: PCIe replays since reset (nvmlDeviceGetPcieReplayCounter): a rising count means a bad link or riser
    pcie_replay_errors_total: int | None = None
    # video engines (0..1 over NVML's sampling period)
    encoder_util_ratio: float | None = None
    decoder_util_ratio: float | None = None
    # NVLink: byte counters summed over links (NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX/RX, read as KiB;
    # GPM gives rates on Hopper+), and error counters summed over lanes
    nvlink_tx_bytes_total: int | None = None
    nvlink_rx_bytes_total: int | None = None
    nvlink_crc_flit_errors_total: int | None = None
    nvlink_crc_data_errors_total: int | None = None
    nvlink_replay_errors_total: int | None = None
    nvlink_recovery_errors_total: int | None = None
    # cooling, state
    fan_speed_ratio: float | None = None  # may exceed 1.0 ("intended" speed)
    performance_state: int | None = None  # P0..P15
    clock_event_reasons: int | None = None  # raw ClockEventReason bitmask
    #: violation (throttle-time) counters in seconds, keyed by reason name:
    #: sw_power_cap, sync_boost, sw_thermal, hw_thermal, hw_power_brake
    clock_event_seconds_total: Mapping[str, float] = field(default_factory=dict)
    # reliability
    remapped_rows_correctable: int | None = None
    remapped_rows_uncorrectable: int | None = None
    remap_pending: bool | None = None
    remap_failure: bool | None = None
    xid_errors_total: int = 0
    last_xid: int | None = None
    #: Xid events by code ("79": 1, ...): which errors, not only how many (a lost card keeps its Xid 79)
    xid_errors_by_code: Mapping[str, int] = field(default_factory=dict)
    #: ECC error counts since the last driver reload (volatile); None on cards without ECC (GeForce)
    ecc_errors_corrected_total: int | None = None
    ecc_errors_uncorrected_total: int | None = None
    #: a page retirement waits for a reboot (pre-Ampere; N/A on Ampere+, which remap rows instead)
    retired_pages_pending: bool | None = None
    #: driver-requested recovery action (NVML_FI_DEV_GET_GPU_RECOVERY_ACTION, r570+):
    #: a NVML_GPU_RECOVERY_ACTION_* value: 0 none, 1 GPU reset, 2 node reboot, 3 drain P2P, 4 drain and reset
    recovery_action: int | None = None
    #: ECC error counts over the card's life (aggregate, survive driver reloads); None without ECC
    ecc_errors_corrected_aggregate_total: int | None = None
    ecc_errors_uncorrected_aggregate_total: int | None = None
    #: pages retired for single-/double-bit ECC errors (pre-Ampere; Ampere+ remap rows instead)
    retired_pages_single_bit_total: int | None = None
    retired_pages_double_bit_total: int | None = None
    # static identity readings
    vbios_version: str | None = None
    compute_capability: str | None = None  # "major.minor", e.g. "9.0"
    # processes and GPM
    processes: tuple[ProcessSample, ...] | None = None
    gpm: GpmSample | None = None
    #: reading name (a field name above, or "gpm"/"processes") -> why it is absent
    unavailable: Mapping[str, Unavailable] = field(default_factory=dict)

    @property
    def current(self) -> bool:
        """Read, fresh and not lost: what a face publishes as up (gpu_up 1) and shows as live."""
        return not self.lost and not self.stale

    @property
    def throttle_reason_names(self) -> list[str]:
        return reason_names(self.clock_event_reasons or 0)

    @property
    def throttling(self) -> bool:
        return bool((self.clock_event_reasons or 0) & THROTTLING_REASONS)


#: identity and bookkeeping fields of GpuSample: everything else is a reading
IDENTITY_FIELDS = frozenset(
    {"index", "uuid", "name", "pci_bus_id", "pci_device_id", "catalog_id", "lost", "unavailable"}
    | {"read_timestamp_s", "stale"}
)
#: every reading name of GpuSample ("processes" and "gpm" included), for "lost", "stale" and doctor
READING_NAMES: tuple[str, ...] = tuple(f.name for f in fields(GpuSample) if f.name not in IDENTITY_FIELDS)


@dataclass(frozen=True, slots=True)
class Snapshot:
    timestamp_s: float  # wall clock (time.time()) of the poll
    source: str  # "nvml", "sim", "replay"
    gpus: tuple[GpuSample, ...]
    driver_version: str | None = None
    nvml_version: str | None = None
    cuda_driver_version: int | None = None
    poll_duration_s: float | None = None
    #: error kind -> count in this poll (for the exporter's health metrics)
    errors: Mapping[str, int] = field(default_factory=dict)

    @property
    def last_read_timestamp_s(self) -> float | None:
        """The newest fresh GPU read in this snapshot: advances only when a poll really read a GPU."""
        times = [g.read_timestamp_s for g in self.gpus if not g.stale and g.read_timestamp_s > 0]
        return max(times) if times else None
