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
from functools import cache

from gpuwatch.model.catalog import GpuSpec, all_gpus, get_gpu
from gpuwatch.model.errors import UnknownIdError
from gpuwatch.model.package_data import read_package_text

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
    #: FB total and reserved as NVML reports them (MiB); None -> derived from the catalog's memory size
    memory_total_mib: int | None = None
    memory_reserved_mib: int | None = None
    memory_used_idle_mib: int = 4  # what the driver (and a desktop, on GeForce) holds with no process
    memory_clock_load_mhz: int | None = None  # GeForce P2 runs memory below max; None -> max
    video_clock_idle_mhz: int | None = None  # None -> 0.9 x the SM clock
    #: PCIe generation at idle: GeForce drops to gen 1, the H100 SXM stays at its max; None -> max
    pcie_idle_gen: int | None = 1
    pcie_lanes: int = 16
    target_temperature_c: float | None = None  # GeForce "GPU Target Temperature" (acoustic); None -> N/A
    ecc_reported: bool = True  # False -> nvmlDeviceGetEccMode answers NOT_SUPPORTED ("N/A")
    power_average_field: bool = True  # field 185 (1 s average); Turing reads N/A and answers instant only
    fan_min_ratio: float = 0.30  # lowest speed while the fan spins
    zero_rpm: bool = True  # fan stops below 45 C (Ada/Blackwell GeForce); False -> always spinning
    inlet_c: float = 25.0  # air the card's heatsink sees (a datacenter chassis or desktop runs warmer)
    #: NVENC throughput relative to Ada's: the same two streams read 60-70 % on the captured Ada cards and
    #: 100 % (saturated) on the Turing 2080 SUPER
    nvenc_speed_ratio: float = 1.0
    #: driver profile of the capture this card is calibrated on (default --driver for it); None -> r580
    driver: str | None = None
    #: the capture file (tests/data/captures/) the NVML-facing facts were read from; None -> spec sheets
    capture: str | None = None
    #: (C symbol, nvmlReturn) pairs a `gpuwatch capture` recorded as errors: replayed as they were
    forced_errors: tuple[tuple[str, int], ...] = ()
    #: (field id, scope, nvmlReturn) a capture recorded as errors
    forced_field_errors: tuple[tuple[int, int, int], ...] = ()

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
        target_temperature_c=83.0,  # 4090 dump "GPU Target Temperature"
        heat_capacity_j_per_k=400.0,
        conductance_passive_w_per_k=2.2,
        conductance_fan_w_per_k=11.0,
    )
    base.update(kw)
    return base


def _profile(id: str, **kw: object) -> DeviceProfile:
    """A profile whose catalog-known facts (PCI id, default power limit = TDP, PCIe generation and
    width) come from the catalog entry ``id``; a keyword given here overrides (a capture disagreeing)."""
    chip = get_gpu(id)
    kw.setdefault("pci_device_id", chip.pci_device_ids[0] if chip.pci_device_ids else 0x000010DE)
    kw.setdefault("power_default_w", chip.tdp_w)
    kw.setdefault("pcie_gen_max", chip.pcie_gen)
    kw.setdefault("pcie_lanes", chip.pcie_lanes)
    if kw.get("capture") is None:
        kw["source"] = f"no real-card capture: spec sheets and dumps; {kw['source']}"
    return DeviceProfile(id=id, **kw)  # type: ignore[arg-type]


_CAPTURED = "nvidia-smi capture tests/data/captures/"

DEVICE_PROFILES: dict[str, DeviceProfile] = {
    p.id: p
    for p in (
        _profile(
            "rtx4090",
            sm_clock_max_mhz=3105,
            memory_clock_max_mhz=10501,
            video_clock_max_mhz=2415,
            sm_clock_load_mhz=2730,
            sm_clock_idle_mhz=210,
            memory_clock_idle_mhz=405,
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
            source="4090 nvidia-smi -q (id 18112607671): max clocks 3105/10501 MHz, 450 W (150-600), T.Limit "
            "offsets -7/-2/0, fan 0 %; deviceQuery 128 SMs x 128 cores; max-operating 90 C (inferred from "
            "the RTX 5090 dump); load clock 2730 MHz and thermal constants (inferred)",
            **_geforce(),
        ),
        _profile(
            "rtx3090",
            sm_clock_max_mhz=2100,
            memory_clock_max_mhz=9751,
            video_clock_max_mhz=1950,
            sm_clock_load_mhz=1905,
            sm_clock_idle_mhz=210,
            memory_clock_idle_mhz=405,
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
            tlimit_fields=False,
            source="GA102 whitepaper (10496 cores, 19.5 Gbps -> 9751 MHz); thresholds 98/95/93 C and power "
            "range (inferred from 3090 FE dumps); thermal constants (inferred)",
            **_geforce(),
        ),
        _profile(
            "rtx5090",
            sm_clock_max_mhz=3090,
            memory_clock_max_mhz=14001,
            video_clock_max_mhz=2775,
            sm_clock_load_mhz=2800,
            sm_clock_idle_mhz=210,
            memory_clock_idle_mhz=405,
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
            source="5090 nvidia-smi -q (id 9311610776): 575/400/575 W, 25 C + T.Limit 65 C, offsets -5/-2/0; "
            "28 Gbps GDDR7 -> 14001 MHz; GPM on GeForce Blackwell per NVIDIA/DCGM#234 (unverified)",
            **_geforce(gpm=True, heat_capacity_j_per_k=480.0, conductance_fan_w_per_k=13.0),
        ),
        _profile(
            "rtx4080super",
            sm_clock_max_mhz=3165,
            memory_clock_max_mhz=11501,
            video_clock_max_mhz=2415,
            sm_clock_load_mhz=2805,
            sm_clock_idle_mhz=210,
            memory_clock_idle_mhz=405,
            power_min_w=150,
            power_max_w=400,
            power_idle_w=26,
            power_full_load_w=380,
            max_operating_c=90,
            shutdown_tlimit_c=-11,
            slowdown_tlimit_c=-6,
            num_fans=2,
            cuda_cores=10240,
            compute_capability=(8, 9),
            tlimit_fields=False,
            memory_total_mib=16376,
            memory_reserved_mib=434,
            memory_used_idle_mib=596,
            memory_clock_load_mhz=11251,
            video_clock_idle_mhz=1185,
            ecc_reported=False,
            inlet_c=31.0,
            driver="r595",
            capture="linux-x86_64__nvidia-geforce-rtx-4080-super__595.71.05.txt",
            source=_CAPTURED + "linux-x86_64__nvidia-geforce-rtx-4080-super__595.71.05.txt (driver "
            "595.71.05, desktop with a display attached): max 3165/11501/2415 MHz, 320 W (150-400), idle "
            "26 W at 210/405 MHz, 43 C, P8, fan 0 % (zero RPM), PCIe gen 1 idle / 4 load x16, FB 16376 MiB / "
            "434 reserved / 596 used by the desktop, thresholds as temperatures (T.Limit N/A): shutdown 101, "
            "slowdown 96, max operating 90, target 84 C, ECC and memory temperature N/A; under NVENC load "
            "P2 at 2805 MHz with memory at 11251 MHz; 10240 cores (NVIDIA product page); power at full load "
            "and thermal constants (inferred)",
            **_geforce(target_temperature_c=84.0),
        ),
        _profile(
            "rtx2080super",
            sm_clock_max_mhz=2145,
            memory_clock_max_mhz=7751,
            video_clock_max_mhz=1995,
            sm_clock_load_mhz=2070,
            sm_clock_idle_mhz=300,
            memory_clock_idle_mhz=405,
            power_min_w=105,
            power_max_w=350,
            power_idle_w=38,
            power_full_load_w=290,
            max_operating_c=89,
            shutdown_tlimit_c=-11,
            slowdown_tlimit_c=-8,
            num_fans=2,
            cuda_cores=3072,
            compute_capability=(7, 5),
            tlimit_fields=False,
            memory_total_mib=8192,
            memory_reserved_mib=400,
            memory_used_idle_mib=211,
            memory_clock_load_mhz=7500,
            video_clock_idle_mhz=540,
            ecc_reported=False,
            power_average_field=False,
            fan_min_ratio=0.38,
            zero_rpm=False,
            nvenc_speed_ratio=0.6,
            inlet_c=27.0,
            driver="r610",
            capture="linux-x86_64__nvidia-geforce-rtx-2080-super__610.57.04.txt",
            source=_CAPTURED + "linux-x86_64__nvidia-geforce-rtx-2080-super__610.57.04.txt (driver "
            "610.57.04): max 2145/7751/1995 MHz, 250 W (105-350), idle 38 W at 300/405 MHz, 33 C, P8, fan "
            "38 % (no zero-RPM mode), PCIe gen 1 idle / 3 load x16, FB 8192 MiB / 400 reserved / 211 used "
            "by the desktop, thresholds as temperatures: shutdown 100, slowdown 97, max operating 89, "
            "target 84 C; average power, ECC, memory temperature, remapped rows N/A; NVENC load P2 at "
            "2070 MHz, memory 7500 MHz; 3072 cores (NVIDIA product page); power at full load and thermal "
            "constants (inferred)",
            **_geforce(target_temperature_c=84.0),
        ),
        _profile(
            "l4",
            sm_clock_max_mhz=2040,
            memory_clock_max_mhz=6251,
            video_clock_max_mhz=1770,
            sm_clock_load_mhz=2040,
            sm_clock_idle_mhz=210,
            memory_clock_idle_mhz=405,
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
            heat_capacity_j_per_k=120.0,
            conductance_passive_w_per_k=1.6,
            conductance_fan_w_per_k=0.0,
            source="L4 datasheet (72 W, 300 GB/s); clocks and thresholds (inferred)",
        ),
        _profile(
            "l40s",
            sm_clock_max_mhz=2520,
            memory_clock_max_mhz=9001,
            video_clock_max_mhz=1965,
            sm_clock_load_mhz=2520,
            sm_clock_idle_mhz=210,
            memory_clock_idle_mhz=405,
            power_min_w=100,
            power_max_w=350,
            power_idle_w=35,
            power_full_load_w=430,
            max_operating_c=88,
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
            memory_total_mib=46068,
            memory_reserved_mib=609,
            memory_used_idle_mib=0,
            video_clock_idle_mhz=1185,
            pcie_idle_gen=None,
            inlet_c=30.0,
            heat_capacity_j_per_k=420.0,
            conductance_passive_w_per_k=6.5,
            conductance_fan_w_per_k=0.0,
            driver="r595",
            capture="linux-x86_64__nvidia-l40s__595.80.txt",
            source=_CAPTURED + "linux-x86_64__nvidia-l40s__595.80.txt (driver 595.80, ECC on): max clocks "
            "2520/9001/1965 MHz, customer boost 2520, 350 W (100-350), FB 46068 MiB total / 609 reserved, "
            "T.Limit margin + temperature = 88 C, offsets -5/-2/0, memory temperature and fan N/A, PCIe "
            "gen 4 x16 in both sections, idle settling to 37 W at 210/405 MHz (the idle section was taken "
            "while the card still cooled from an earlier run, so its idle PCIe behaviour is unknown: held at "
            "gen 4 as read); 18176 cores from the L40S datasheet; thermal constants (inferred)",
        ),
        _profile(
            "a100-80gb-sxm",
            sm_clock_max_mhz=1410,
            memory_clock_max_mhz=1593,
            video_clock_max_mhz=1290,
            sm_clock_load_mhz=1410,
            sm_clock_idle_mhz=210,
            memory_clock_idle_mhz=1593,
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
            heat_capacity_j_per_k=600.0,
            conductance_passive_w_per_k=8.5,
            conductance_fan_w_per_k=0.0,
            tlimit_fields=False,
            source="A100 datasheet (400 W, 2039 GB/s -> 1593 MHz x 5120 bit, 6912 cores, 12 NVLink3); "
            "thresholds 92/89/87 C (inferred)",
        ),
        _profile(
            "a100-80gb-pcie",
            sm_clock_max_mhz=1410,
            memory_clock_max_mhz=1512,
            video_clock_max_mhz=1290,
            sm_clock_load_mhz=1410,
            sm_clock_idle_mhz=210,
            memory_clock_idle_mhz=1512,
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
            heat_capacity_j_per_k=480.0,
            conductance_passive_w_per_k=6.0,
            conductance_fan_w_per_k=0.0,
            tlimit_fields=False,
            source="A100 80GB PCIe datasheet (300 W, 1935 GB/s -> 1512 MHz); thresholds (inferred)",
        ),
        _profile(
            "h100-sxm",
            sm_clock_max_mhz=1980,
            memory_clock_max_mhz=2619,
            video_clock_max_mhz=1545,
            sm_clock_load_mhz=1980,
            sm_clock_idle_mhz=345,
            memory_clock_idle_mhz=2619,
            power_min_w=200,
            power_max_w=700,
            power_idle_w=69,
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
            memory_total_mib=81559,
            memory_reserved_mib=479,
            memory_used_idle_mib=0,
            video_clock_idle_mhz=765,
            pcie_idle_gen=None,
            inlet_c=36.0,
            heat_capacity_j_per_k=600.0,
            conductance_passive_w_per_k=15.5,
            conductance_fan_w_per_k=0.0,
            driver="r590",
            capture="linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt",
            source=_CAPTURED + "linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt (driver 590.48.01): "
            "max 1980/2619/1545 MHz, customer boost 1980, 700 W (200-700), idle 69 W at 345/2619 MHz, 41 C, "
            "P0, PCIe gen 5 x16 at idle and load, FB 81559 MiB / 479 reserved, T.Limit margin 46 C at 41 C "
            "-> 87 C, offsets -8/-2/0, memory 48 C, fan N/A, 18 NVLinks; gpu-burn load 630 W at 1980 MHz; "
            "earlier nvidia-smi -q dumps (ids 23243314046, 23161972012) agree; 132 SMs x 128 cores "
            "(whitepaper); memory max-operating 95 C and thermal constants (inferred)",
        ),
        _profile(
            "h100-pcie",
            sm_clock_max_mhz=1755,
            memory_clock_max_mhz=1593,
            video_clock_max_mhz=1545,
            sm_clock_load_mhz=1755,
            sm_clock_idle_mhz=345,
            memory_clock_idle_mhz=1593,
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
            heat_capacity_j_per_k=520.0,
            conductance_passive_w_per_k=7.0,
            conductance_fan_w_per_k=0.0,
            source="H100 PCIe datasheet (350 W, 2.0 TB/s -> 1593 MHz x 5120 bit, 114 SMs); thresholds as the "
            "H100 SXM dump (inferred)",
        ),
        _profile(
            "h200",
            sm_clock_max_mhz=1980,
            memory_clock_max_mhz=3201,
            video_clock_max_mhz=1545,
            sm_clock_load_mhz=1980,
            sm_clock_idle_mhz=345,
            memory_clock_idle_mhz=3201,
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
            heat_capacity_j_per_k=950.0,
            conductance_passive_w_per_k=15.5,
            conductance_fan_w_per_k=0.0,
            source="H200 datasheet (4.8 TB/s over 6144 bit -> 3201 MHz (inferred)); else the H100 SXM dump",
        ),
        _profile(
            "b200",
            sm_clock_max_mhz=1965,
            memory_clock_max_mhz=3906,
            video_clock_max_mhz=1650,
            sm_clock_load_mhz=1965,
            sm_clock_idle_mhz=345,
            memory_clock_idle_mhz=3906,
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
            heat_capacity_j_per_k=1200.0,
            conductance_passive_w_per_k=21.0,
            conductance_fan_w_per_k=0.0,
            source="DGX B200 datasheet (1000 W, 8 TB/s over 8192 bit -> 3906 MHz (inferred)); 148 SMs x 128",
        ),
    )
}


def nvml_name(spec: GpuSpec) -> str:
    """What nvmlDeviceGetName returns for this GPU."""
    return spec.nvml_names[0] if spec.nvml_names else spec.name


def simulatable_ids() -> list[str]:
    """Ids that can be simulated: the catalog's NVIDIA GPUs (profiles exist for a subset)."""
    return [g.id for g in all_gpus() if g.vendor == "nvidia" and not g.planning_only]


def canonical_id(key: str) -> str | None:
    """The catalog id for a user-given key (short id, alias, NVML name, PCI id); None if unknown."""
    try:  # one id scheme: the catalog's ids and aliases (also what `plan --gpu` and [gpu_prices] take)
        spec = get_gpu(key.strip())
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
        source=f"no real-card capture: generic {c.segment}/{arch} profile derived from the catalog entry "
        "(inferred)",
        generic=True,
        # what the template's capture measured is not this card's: back to the catalog-derived defaults
        memory_total_mib=None,
        memory_reserved_mib=None,
        memory_used_idle_mib=4,
        memory_clock_load_mhz=None,
        video_clock_idle_mhz=None,
        pcie_idle_gen=1 if geforce else None,  # as the captured GeForce cards / the captured H100
        pcie_lanes=c.pcie_lanes,
        inlet_c=25.0,
        driver=None,
        capture=None,
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
    #: the exact exported set, given directly (a gpuwatch capture's own list); overrides symbol_list
    symbols: frozenset[str] | None = None
    #: the key in data/nvml_symbols.json of the list captured from a real driver of this branch, read
    #: when first asked (a default r580 box never reads it); neither this nor symbols -> SYMBOL_SINCE
    symbol_list: str | None = None
    #: exported symbols that answer NVML_ERROR_DEPRECATED ("Requested functionality has been deprecated")
    deprecated: frozenset[str] = field(default_factory=frozenset)
    source: str = "NVML API reference 'Added in' notes and nvml.h history (SYMBOL_SINCE)"

    def captured_symbols(self) -> frozenset[str] | None:
        """The exact exported set where one was captured; None where SYMBOL_SINCE decides."""
        if self.symbols is not None:
            return self.symbols
        return None if self.symbol_list is None else _captured_symbol_lists()[self.symbol_list]

    def has_symbol(self, symbol: str) -> bool:
        if symbol in self.extra_missing:
            return False
        captured = self.captured_symbols()
        if captured is not None:
            return symbol in captured
        return SYMBOL_SINCE.get(symbol, 0) <= self.branch

    def exported_symbols(self, known: frozenset[str] = frozenset()) -> frozenset[str]:
        """The ``nvml*`` symbols this driver exports: the captured list, or ``known`` filtered by branch."""
        captured = self.captured_symbols()
        if captured is not None:
            return captured - self.extra_missing
        return frozenset(s for s in known | frozenset(SYMBOL_SINCE) if self.has_symbol(s))

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
    230: 570,  # GPU recovery action (nvml_reader: r570+)
}


@cache
def _captured_symbol_lists() -> dict[str, frozenset[str]]:
    """data/nvml_symbols.json, read once when a driver with a captured list is first asked (json and
    the ~800 names stay out of a default box's NVML child)."""
    import json

    text = read_package_text("gpuwatch.telemetry.simulated", "data/nvml_symbols.json")
    raw = json.loads(text)
    return {k: frozenset(v) for k, v in raw.items() if not k.startswith("_")}


#: What nvidia-smi r590+ prints "Requested functionality has been deprecated" for on all four captured
#: cards (Applications Clocks, Default Applications Clocks, Display Mode, power.management).
_DEPRECATED_R590 = frozenset(
    {
        "nvmlDeviceGetApplicationsClock",
        "nvmlDeviceGetDefaultApplicationsClock",
        "nvmlDeviceGetDisplayMode",
        "nvmlDeviceGetPowerManagementMode",
    }
)

DRIVER_PROFILES: dict[str, DriverProfile] = {
    "r470": DriverProfile("r470", 470, "470.256.02", "11.470.256.02", 11040),
    "r535": DriverProfile("r535", 535, "535.216.03", "12.535.216.03", 12020),
    "r580": DriverProfile("r580", 580, "580.95.05", "13.580.95.05", 13000),
    "r590": DriverProfile(
        "r590",
        590,
        "590.48.01",
        "13.590.48",
        13010,
        symbol_list="r590",
        deprecated=_DEPRECATED_R590,
        source="captured: H100 box, driver 590.48.01, NVML 590.48, CUDA 13.1 (405 nvml* symbols)",
    ),
    "r595": DriverProfile(
        "r595",
        595,
        "595.80",
        "13.595.80",
        13020,
        # No r595 list was captured. r590's set is a subset of r610's; the 12 symbols r610 adds (vGPU
        # scheduler _v2, nvmlDeviceGetHandles, nvmlDeviceGetRemappedRows_v2, nvmlSystemGetCPER_v1, ...)
        # are left out because when they arrived between 590 and 610 is not known (inferred).
        symbol_list="r590",
        deprecated=_DEPRECATED_R590,
        source="captured versions: L40S box, driver 595.80 (and an RTX 4080 SUPER on 595.71.05), CUDA 13.2; "
        "symbol set = the captured r590 list (inferred: no r595 list was captured)",
    ),
    "r610": DriverProfile(
        "r610",
        610,
        "610.57.04",
        "13.610.57",
        13030,
        symbol_list="r610",
        deprecated=_DEPRECATED_R590,
        source="captured: RTX 2080 SUPER box, KMD 610.57.04, NVML 610.57, CUDA UMD 13.3 (417 nvml* symbols)",
    ),
}
#: the driver a simulated box gets when neither --driver nor a calibrated profile names one
DEFAULT_DRIVER = "r580"


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
