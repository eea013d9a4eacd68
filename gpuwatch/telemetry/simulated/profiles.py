"""What a simulated card and driver look like from NVML's side.

Two layers, kept apart on purpose:

* **Chip facts** (memory size, bus width, TDP, architecture, PCIe, NVML name) belong to the catalog
  (``gpuwatch.model.catalog.get_gpu``); the simulator reads them there and never repeats them.
* **NVML-facing facts** (PCI device id, the max clocks *as NVML reports them*, power-limit range,
  T.Limit offsets, fans, which calls answer NOT_SUPPORTED) live in :data:`DEVICE_PROFILES`, each with
  its source. "(inferred)" marks a value reasoned from neighbours rather than read off a real dump.

Dumps cited (see ``shared/domain/nvml-notes.md``): RTX 4090 ``nvidia-smi -q`` (id 18112607671), H100 SXM
``nvidia-smi -q`` (ids 23243314046, 23161972012: 33 C, T.Limit 54 C, shutdown -8, slowdown -2, memory 41 C,
700/200/700 W, 72 W idle), RTX 5090 ``nvidia-smi -q`` (id 9311610776: 25 C, T.Limit 65 C, shutdown -5,
slowdown -2, 575/400/575 W).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from gpuwatch.model.catalog import GpuSpec, all_gpus, get_gpu
from gpuwatch.model.errors import UnknownIdError

#: NVML architecture codes (nvml.h ``NVML_DEVICE_ARCH_*``).
ARCH_CODES = {"volta": 5, "turing": 6, "ampere": 7, "ada": 8, "hopper": 9, "blackwell": 10}


@dataclass(frozen=True)
class DeviceProfile:
    """NVML-facing facts of one product, plus the parameters of its thermal/power model."""

    id: str
    pci_device_id: int
    sm_clock_max_mhz: int  # nvmlDeviceGetMaxClockInfo(SM): NOT the spec boost clock
    memory_clock_max_mhz: int  # nvmlDeviceGetMaxClockInfo(MEM): half the per-pin data rate
    video_clock_max_mhz: int
    sm_clock_load_mhz: int  # what the card sustains under load with no limiter engaged
    sm_clock_idle_mhz: int
    memory_clock_idle_mhz: int
    power_default_w: float
    power_min_w: float
    power_max_w: float
    power_idle_w: float
    #: power at full activity and ``sm_clock_load_mhz`` with no limit: above the default limit for cards
    #: that power-cap under training (all modern ones do).
    power_full_load_w: float
    max_operating_c: float  # T.Limit 0: SW thermal slowdown holds the GPU here
    shutdown_tlimit_c: float  # offset of the shutdown threshold past T.Limit (negative)
    slowdown_tlimit_c: float  # offset of HW slowdown past T.Limit (negative)
    memory_max_operating_c: float | None  # None where there is no memory sensor (GDDR)
    num_fans: int  # 0 = passive card (fan calls NOT_SUPPORTED)
    cuda_cores: int
    compute_capability: tuple[int, int]
    max_customer_boost_mhz: int | None  # None -> NOT_SUPPORTED (GeForce)
    applications_clocks_mhz: tuple[int, int] | None  # (sm, mem); None -> NOT_SUPPORTED
    ecc: bool
    mig: bool
    gpm: bool
    nvlink_links: int
    pcie_gen_max: int
    #: first-order thermal model: heat capacity and conductance to ambient (passive + per unit fan speed)
    heat_capacity_j_per_k: float
    conductance_passive_w_per_k: float
    conductance_fan_w_per_k: float
    source: str
    #: True where fields 193-196 are margins to T.Limit (Ada, Hopper and newer); earlier parts answer
    #: NOT_SUPPORTED per field and give thresholds through the legacy call only.
    tlimit_fields: bool = True
    brand: str = "nvidia"  # "geforce" | "nvidia"
    generic: bool = False

    @property
    def slowdown_c(self) -> float:
        return self.max_operating_c - self.slowdown_tlimit_c

    @property
    def shutdown_c(self) -> float:
        return self.max_operating_c - self.shutdown_tlimit_c


def _geforce(**kw: object) -> dict[str, object]:
    base: dict[str, object] = dict(
        ecc=False,
        mig=False,
        gpm=False,
        nvlink_links=0,
        max_customer_boost_mhz=None,
        applications_clocks_mhz=None,
        memory_max_operating_c=None,
        brand="geforce",
        heat_capacity_j_per_k=400.0,
        conductance_passive_w_per_k=2.2,
        conductance_fan_w_per_k=11.0,
    )
    base.update(kw)
    return base


DEVICE_PROFILES: dict[str, DeviceProfile] = {
    p.id: p
    for p in (
        DeviceProfile(
            id="rtx4090",
            pci_device_id=0x268410DE,
            sm_clock_max_mhz=3105,
            memory_clock_max_mhz=10501,
            video_clock_max_mhz=2415,
            sm_clock_load_mhz=2730,
            sm_clock_idle_mhz=210,
            memory_clock_idle_mhz=405,
            power_default_w=450,
            power_min_w=150,
            power_max_w=600,
            power_idle_w=22,
            power_full_load_w=560,
            max_operating_c=90,
            shutdown_tlimit_c=-7,
            slowdown_tlimit_c=-2,
            num_fans=2,
            cuda_cores=16384,
            compute_capability=(8, 9),
            pcie_gen_max=4,
            source="4090 nvidia-smi -q (id 18112607671): max clocks 3105/10501 MHz, 450 W (150-600), T.Limit "
            "offsets -7/-2/0, fan 0 %; deviceQuery 128 SMs x 128 cores; max-operating 90 C (inferred from "
            "the RTX 5090 dump); load clock 2730 MHz and thermal constants (inferred)",
            **_geforce(),  # type: ignore[arg-type]
        ),
        DeviceProfile(
            id="rtx3090",
            pci_device_id=0x220410DE,
            sm_clock_max_mhz=2100,
            memory_clock_max_mhz=9751,
            video_clock_max_mhz=1950,
            sm_clock_load_mhz=1905,
            sm_clock_idle_mhz=210,
            memory_clock_idle_mhz=405,
            power_default_w=350,
            power_min_w=100,
            power_max_w=400,
            power_idle_w=25,
            power_full_load_w=430,
            max_operating_c=93,
            shutdown_tlimit_c=-5,
            slowdown_tlimit_c=-2,
            num_fans=2,
            cuda_cores=10496,
            compute_capability=(8, 6),
            pcie_gen_max=4,
            tlimit_fields=False,
            source="GA102 whitepaper (10496 cores, 19.5 Gbps -> 9751 MHz); thresholds 98/95/93 C and power "
            "range (inferred from 3090 FE dumps); thermal constants (inferred)",
            **_geforce(),  # type: ignore[arg-type]
        ),
        DeviceProfile(
            id="rtx5090",
            pci_device_id=0x2B8510DE,
            sm_clock_max_mhz=3090,
            memory_clock_max_mhz=14001,
            video_clock_max_mhz=2775,
            sm_clock_load_mhz=2800,
            sm_clock_idle_mhz=210,
            memory_clock_idle_mhz=405,
            power_default_w=575,
            power_min_w=400,
            power_max_w=575,
            power_idle_w=24,
            power_full_load_w=700,
            max_operating_c=90,
            shutdown_tlimit_c=-5,
            slowdown_tlimit_c=-2,
            num_fans=2,
            cuda_cores=21760,
            compute_capability=(12, 0),
            pcie_gen_max=5,
            source="5090 nvidia-smi -q (id 9311610776): 575/400/575 W, 25 C + T.Limit 65 C, offsets -5/-2/0; "
            "28 Gbps GDDR7 -> 14001 MHz; GPM on GeForce Blackwell per NVIDIA/DCGM#234 (unverified)",
            **_geforce(gpm=True, heat_capacity_j_per_k=480.0, conductance_fan_w_per_k=13.0),  # type: ignore[arg-type]
        ),
        DeviceProfile(
            id="l4",
            pci_device_id=0x27B810DE,
            sm_clock_max_mhz=2040,
            memory_clock_max_mhz=6251,
            video_clock_max_mhz=1770,
            sm_clock_load_mhz=2040,
            sm_clock_idle_mhz=210,
            memory_clock_idle_mhz=405,
            power_default_w=72,
            power_min_w=40,
            power_max_w=72,
            power_idle_w=16,
            power_full_load_w=95,
            max_operating_c=87,
            shutdown_tlimit_c=-5,
            slowdown_tlimit_c=-2,
            memory_max_operating_c=None,
            num_fans=0,
            cuda_cores=7424,
            compute_capability=(8, 9),
            max_customer_boost_mhz=2040,
            applications_clocks_mhz=(2040, 6251),
            ecc=True,
            mig=False,
            gpm=False,
            nvlink_links=0,
            pcie_gen_max=4,
            heat_capacity_j_per_k=120.0,
            conductance_passive_w_per_k=1.6,
            conductance_fan_w_per_k=0.0,
            source="L4 datasheet (72 W, 300 GB/s); clocks and thresholds (inferred)",
        ),
        DeviceProfile(
            id="l40s",
            pci_device_id=0x26B910DE,
            sm_clock_max_mhz=2520,
            memory_clock_max_mhz=9001,
            video_clock_max_mhz=1965,
            sm_clock_load_mhz=2520,
            sm_clock_idle_mhz=210,
            memory_clock_idle_mhz=405,
            power_default_w=350,
            power_min_w=100,
            power_max_w=350,
            power_idle_w=35,
            power_full_load_w=430,
            max_operating_c=87,
            shutdown_tlimit_c=-5,
            slowdown_tlimit_c=-2,
            memory_max_operating_c=None,
            num_fans=0,
            cuda_cores=18176,
            compute_capability=(8, 9),
            max_customer_boost_mhz=2520,
            applications_clocks_mhz=(2520, 9001),
            ecc=True,
            mig=False,
            gpm=False,
            nvlink_links=0,
            pcie_gen_max=4,
            heat_capacity_j_per_k=420.0,
            conductance_passive_w_per_k=6.5,
            conductance_fan_w_per_k=0.0,
            source="L40S datasheet (350 W, 864 GB/s, 18176 cores); clocks and thresholds (inferred)",
        ),
        DeviceProfile(
            id="a100-80gb-sxm",
            pci_device_id=0x20B210DE,
            sm_clock_max_mhz=1410,
            memory_clock_max_mhz=1593,
            video_clock_max_mhz=1290,
            sm_clock_load_mhz=1410,
            sm_clock_idle_mhz=210,
            memory_clock_idle_mhz=1593,
            power_default_w=400,
            power_min_w=100,
            power_max_w=400,
            power_idle_w=55,
            power_full_load_w=470,
            max_operating_c=87,
            shutdown_tlimit_c=-5,
            slowdown_tlimit_c=-2,
            memory_max_operating_c=95,
            num_fans=0,
            cuda_cores=6912,
            compute_capability=(8, 0),
            max_customer_boost_mhz=1410,
            applications_clocks_mhz=(1410, 1593),
            ecc=True,
            mig=True,
            gpm=False,
            nvlink_links=12,
            pcie_gen_max=4,
            heat_capacity_j_per_k=600.0,
            conductance_passive_w_per_k=8.5,
            conductance_fan_w_per_k=0.0,
            tlimit_fields=False,
            source="A100 datasheet (400 W, 2039 GB/s -> 1593 MHz x 5120 bit, 6912 cores, 12 NVLink3); "
            "thresholds 92/89/87 C (inferred)",
        ),
        DeviceProfile(
            id="a100-80gb-pcie",
            pci_device_id=0x20B510DE,
            sm_clock_max_mhz=1410,
            memory_clock_max_mhz=1512,
            video_clock_max_mhz=1290,
            sm_clock_load_mhz=1410,
            sm_clock_idle_mhz=210,
            memory_clock_idle_mhz=1512,
            power_default_w=300,
            power_min_w=150,
            power_max_w=300,
            power_idle_w=45,
            power_full_load_w=360,
            max_operating_c=85,
            shutdown_tlimit_c=-5,
            slowdown_tlimit_c=-2,
            memory_max_operating_c=95,
            num_fans=0,
            cuda_cores=6912,
            compute_capability=(8, 0),
            max_customer_boost_mhz=1410,
            applications_clocks_mhz=(1410, 1512),
            ecc=True,
            mig=True,
            gpm=False,
            nvlink_links=0,
            pcie_gen_max=4,
            heat_capacity_j_per_k=480.0,
            conductance_passive_w_per_k=6.0,
            conductance_fan_w_per_k=0.0,
            tlimit_fields=False,
            source="A100 80GB PCIe datasheet (300 W, 1935 GB/s -> 1512 MHz); thresholds (inferred)",
        ),
        DeviceProfile(
            id="h100-sxm",
            pci_device_id=0x233010DE,
            sm_clock_max_mhz=1980,
            memory_clock_max_mhz=2619,
            video_clock_max_mhz=1545,
            sm_clock_load_mhz=1980,
            sm_clock_idle_mhz=345,
            memory_clock_idle_mhz=2619,
            power_default_w=700,
            power_min_w=200,
            power_max_w=700,
            power_idle_w=72,
            power_full_load_w=830,
            max_operating_c=87,
            shutdown_tlimit_c=-8,
            slowdown_tlimit_c=-2,
            memory_max_operating_c=95,
            num_fans=0,
            cuda_cores=16896,
            compute_capability=(9, 0),
            max_customer_boost_mhz=1980,
            applications_clocks_mhz=(1980, 2619),
            ecc=True,
            mig=True,
            gpm=True,
            nvlink_links=18,
            pcie_gen_max=5,
            heat_capacity_j_per_k=900.0,
            conductance_passive_w_per_k=15.5,
            conductance_fan_w_per_k=0.0,
            source="H100 SXM nvidia-smi -q (ids 23243314046, 23161972012): max 1980/2619 MHz, customer boost "
            "1980, 700/200/700 W, 72 W idle, 33 C + T.Limit 54 C -> 87 C, offsets -8/-2/0, memory 41 C, "
            "fan N/A; go-nvml mock PCI id 0x233010DE; 132 SMs x 128 cores",
        ),
        DeviceProfile(
            id="h100-pcie",
            pci_device_id=0x233110DE,
            sm_clock_max_mhz=1755,
            memory_clock_max_mhz=1593,
            video_clock_max_mhz=1545,
            sm_clock_load_mhz=1755,
            sm_clock_idle_mhz=345,
            memory_clock_idle_mhz=1593,
            power_default_w=350,
            power_min_w=200,
            power_max_w=350,
            power_idle_w=48,
            power_full_load_w=420,
            max_operating_c=87,
            shutdown_tlimit_c=-8,
            slowdown_tlimit_c=-2,
            memory_max_operating_c=95,
            num_fans=0,
            cuda_cores=14592,
            compute_capability=(9, 0),
            max_customer_boost_mhz=1755,
            applications_clocks_mhz=(1755, 1593),
            ecc=True,
            mig=True,
            gpm=True,
            nvlink_links=0,
            pcie_gen_max=5,
            heat_capacity_j_per_k=520.0,
            conductance_passive_w_per_k=7.0,
            conductance_fan_w_per_k=0.0,
            source="H100 PCIe datasheet (350 W, 2.0 TB/s -> 1593 MHz x 5120 bit, 114 SMs); thresholds as the "
            "H100 SXM dump (inferred)",
        ),
        DeviceProfile(
            id="h200",
            pci_device_id=0x233510DE,
            sm_clock_max_mhz=1980,
            memory_clock_max_mhz=3201,
            video_clock_max_mhz=1545,
            sm_clock_load_mhz=1980,
            sm_clock_idle_mhz=345,
            memory_clock_idle_mhz=3201,
            power_default_w=700,
            power_min_w=200,
            power_max_w=700,
            power_idle_w=76,
            power_full_load_w=850,
            max_operating_c=87,
            shutdown_tlimit_c=-8,
            slowdown_tlimit_c=-2,
            memory_max_operating_c=95,
            num_fans=0,
            cuda_cores=16896,
            compute_capability=(9, 0),
            max_customer_boost_mhz=1980,
            applications_clocks_mhz=(1980, 3201),
            ecc=True,
            mig=True,
            gpm=True,
            nvlink_links=18,
            pcie_gen_max=5,
            heat_capacity_j_per_k=950.0,
            conductance_passive_w_per_k=15.5,
            conductance_fan_w_per_k=0.0,
            source="H200 datasheet (4.8 TB/s over 6144 bit -> 3201 MHz (inferred)); else the H100 SXM dump",
        ),
        DeviceProfile(
            id="b200",
            pci_device_id=0x290110DE,
            sm_clock_max_mhz=1965,
            memory_clock_max_mhz=3906,
            video_clock_max_mhz=1650,
            sm_clock_load_mhz=1965,
            sm_clock_idle_mhz=345,
            memory_clock_idle_mhz=3906,
            power_default_w=1000,
            power_min_w=200,
            power_max_w=1000,
            power_idle_w=120,
            power_full_load_w=1180,
            max_operating_c=87,
            shutdown_tlimit_c=-8,
            slowdown_tlimit_c=-2,
            memory_max_operating_c=95,
            num_fans=0,
            cuda_cores=18944,
            compute_capability=(10, 0),
            max_customer_boost_mhz=1965,
            applications_clocks_mhz=(1965, 3906),
            ecc=True,
            mig=True,
            gpm=True,
            nvlink_links=18,
            pcie_gen_max=6,
            heat_capacity_j_per_k=1200.0,
            conductance_passive_w_per_k=21.0,
            conductance_fan_w_per_k=0.0,
            source="DGX B200 datasheet (1000 W, 8 TB/s over 8192 bit -> 3906 MHz (inferred)); 148 SMs x 128",
        ),
    )
}

_ALIASES = {
    "4090": "rtx4090",
    "3090": "rtx3090",
    "5090": "rtx5090",
    "h100": "h100-sxm",
    "a100": "a100-80gb-sxm",
    "a100-sxm": "a100-80gb-sxm",
    "a100-pcie": "a100-80gb-pcie",
}


def nvml_name(spec: GpuSpec) -> str:
    """What nvmlDeviceGetName returns for this GPU."""
    return spec.nvml_names[0] if spec.nvml_names else spec.name


def simulatable_ids() -> list[str]:
    """Ids that can be simulated: the catalog's NVIDIA GPUs (profiles exist for a subset)."""
    return [g.id for g in all_gpus() if g.vendor == "nvidia" and not g.planning_only]


def canonical_id(key: str) -> str | None:
    """The catalog id for a user-given key (short id, alias, NVML name, PCI id); None if unknown."""
    k = key.strip()
    k = _ALIASES.get(k.lower(), k)
    try:
        spec = get_gpu(k)
    except UnknownIdError:
        return None
    if spec.vendor != "nvidia" or spec.planning_only:
        return None
    return spec.id


def device_profile(device_id: str) -> DeviceProfile:
    """The hand-written profile, or one derived from the catalog entry for other ids."""
    if device_id in DEVICE_PROFILES:
        return DEVICE_PROFILES[device_id]
    return _generic_profile(get_gpu(device_id))


def _generic_profile(c: GpuSpec) -> DeviceProfile:
    """A profile for a catalog GPU nobody has written one for, from its segment and architecture."""
    geforce = c.segment in ("geforce", "workstation")
    hbm = c.memory_type.upper().startswith("HBM")
    mem_mhz = round(c.memory_bandwidth_bytes_s / (2 * c.memory_bus_width_bits / 8) / 1e6)
    boost_mhz = round(c.boost_clock_hz / 1e6)
    arch = c.architecture
    newer = ARCH_CODES.get(arch, 0) >= ARCH_CODES["ada"]
    template = DEVICE_PROFILES["rtx4090" if geforce else "h100-sxm"]
    return replace(
        template,
        id=c.id,
        pci_device_id=c.pci_device_ids[0] if c.pci_device_ids else 0x000010DE,
        sm_clock_max_mhz=round(boost_mhz * (1.2 if geforce else 1.0)),
        memory_clock_max_mhz=mem_mhz,
        sm_clock_load_mhz=round(boost_mhz * (1.08 if geforce else 1.0)),
        memory_clock_idle_mhz=405 if not hbm else mem_mhz,
        power_default_w=c.tdp_w,
        power_min_w=round(c.tdp_w * 0.35),
        power_max_w=round(c.tdp_w * (1.2 if geforce else 1.0)),
        power_idle_w=round(max(10.0, c.tdp_w * (0.05 if geforce else 0.1))),
        power_full_load_w=round(c.tdp_w * 1.22),
        memory_max_operating_c=95 if hbm else None,
        num_fans=2 if geforce else 0,
        compute_capability={
            "ampere": (8, 6) if geforce else (8, 0),
            "ada": (8, 9),
            "hopper": (9, 0),
            "blackwell": (12, 0) if geforce else (10, 0),
        }.get(arch, (8, 0)),
        gpm=arch in ("hopper", "blackwell"),
        mig=not geforce and arch in ("ampere", "hopper", "blackwell"),
        ecc=not geforce,
        nvlink_links=18 if c.nvlink_bytes_s else 0,
        pcie_gen_max=c.pcie_gen,
        heat_capacity_j_per_k=template.heat_capacity_j_per_k * c.tdp_w / template.power_default_w,
        conductance_passive_w_per_k=template.conductance_passive_w_per_k * c.tdp_w / template.power_default_w,
        conductance_fan_w_per_k=template.conductance_fan_w_per_k * c.tdp_w / template.power_default_w,
        tlimit_fields=newer,
        source=f"generic {c.segment}/{arch} profile derived from the catalog entry (inferred)",
        generic=True,
        brand="geforce" if c.segment == "geforce" else "nvidia",
    )


# --- driver profiles ---


@dataclass(frozen=True)
class DriverProfile:
    """Which C symbols and field ids a driver branch exports, and the versions it reports.

    Tools pick struct layouts by probing symbols (nvitop: ``..RunningProcesses_v3`` plus
    ``nvmlDeviceGetConfComputeMemSizeInfo`` / ``nvmlDeviceGetRunningProcessDetailList``), so the set must
    be one a real driver shipped. Symbols carry the first branch that exported them (``SYMBOL_SINCE``);
    every symbol not listed there exists in every branch simulated here.
    """

    name: str
    branch: int
    driver_version: str
    nvml_version: str
    cuda_driver_version: int
    extra_missing: frozenset[str] = field(default_factory=frozenset)

    def has_symbol(self, symbol: str) -> bool:
        return SYMBOL_SINCE.get(symbol, 0) <= self.branch and symbol not in self.extra_missing

    def has_field(self, field_id: int) -> bool:
        return FIELD_SINCE.get(field_id, 0) <= self.branch


#: First driver branch exporting each versioned/newer symbol (NVML API reference "Added in" notes and
#: nvml.h history; branches are rounded to the ones simulated: 470, 535, 580).
SYMBOL_SINCE: dict[str, int] = {
    "nvmlDeviceGetComputeRunningProcesses_v3": 510,
    "nvmlDeviceGetGraphicsRunningProcesses_v3": 510,
    "nvmlDeviceGetMPSComputeRunningProcesses_v3": 510,
    "nvmlDeviceGetMemoryInfo_v2": 510,
    "nvmlDeviceGetMemoryBusWidth": 520,
    "nvmlDeviceGetNumGpuCores": 520,
    "nvmlDeviceGetPcieSpeed": 520,
    "nvmlDeviceGetGpuMaxPcieLinkGeneration": 520,
    "nvmlGpmQueryDeviceSupport": 520,
    "nvmlGpmSampleAlloc": 520,
    "nvmlGpmSampleFree": 520,
    "nvmlGpmSampleGet": 520,
    "nvmlGpmMigSampleGet": 520,
    "nvmlGpmMetricsGet": 520,
    "nvmlDeviceGetCurrentClocksEventReasons": 535,
    "nvmlDeviceGetSupportedClocksEventReasons": 535,
    "nvmlDeviceGetConfComputeMemSizeInfo": 535,
    "nvmlDeviceGetRunningProcessDetailList": 550,
    "nvmlDeviceGetTemperatureV": 555,
    "nvmlDeviceGetMarginTemperature": 555,
    "nvmlDeviceGetFanSpeedRPM": 555,
    "nvmlDeviceGetDriverModel_v2": 575,
}

#: First branch answering each field id (older drivers answer NOT_SUPPORTED per field).
FIELD_SINCE: dict[int, int] = {
    185: 530,
    186: 530,
    187: 530,
    188: 530,
    189: 530,
    190: 530,
    191: 530,
    192: 530,  # power fields
    193: 535,
    194: 535,
    195: 535,
    196: 535,  # T.Limit margins
    197: 550,
    198: 550,  # PCIe byte counters
    269: 550,
    270: 550,
    271: 550,  # thermal / power-brake violation time
}

DRIVER_PROFILES: dict[str, DriverProfile] = {
    "r470": DriverProfile("r470", 470, "470.256.02", "11.470.256.02", 11040),
    "r535": DriverProfile("r535", 535, "535.216.03", "12.535.216.03", 12020),
    "r580": DriverProfile("r580", 580, "580.95.05", "13.580.95.05", 13000),
}


_DEVICE_SPEC_RE = re.compile(r"^\s*(?:(\d+)\s*[x×*]\s*)?([A-Za-z0-9][A-Za-z0-9 ._-]*?)\s*$")


def split_device_spec(spec: str) -> list[tuple[int, str]]:
    """``"h100-sxm,2xrtx4090"`` -> [(1, "h100-sxm"), (2, "rtx4090")]; ValueError names the bad part."""
    out: list[tuple[int, str]] = []
    for part in spec.split(","):
        m = _DEVICE_SPEC_RE.match(part)
        if not m:
            raise ValueError(f"bad device entry {part.strip()!r}")
        count = int(m.group(1)) if m.group(1) else 1
        out.append((count, m.group(2)))
    return out
