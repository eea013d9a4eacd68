"""GPU catalog: sourced spec-sheet figures, looked up by NVML name, PCI id or short id.

CONTRACT (shared by every module): the GpuSpec field names below are fixed; add, do not rename.
Peak FLOP/s are DENSE (no sparsity). Dtype keys for ``peak_flops``:
  "fp16"     fp16/bf16 tensor, fp32 accumulate (what training and most engines use; GeForce is half rate)
  "fp16acc"  fp16 tensor with fp16 accumulate (GeForce full rate; equals "fp16" on datacenter parts)
  "bf16"     bf16 tensor, fp32 accumulate
  "fp8"      fp8 tensor (fp32 accumulate), absent where the chip has none
  "int8"     int8 tensor ops/s
  "fp4"      fp4 tensor (Blackwell: NVFP4/MXFP4), absent elsewhere
  "fp32"     non-tensor fp32 (CUDA cores)
  "tf32"     tf32 tensor where known

The figures live in ``data/gpus.toml`` (one table per GPU, each with its citations); users add or override
GPUs with the same schema through :func:`load_user_gpus`, so built-ins and user entries share one parser.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from gpuwatch.model.errors import ModelInputError, UnknownIdError
from gpuwatch.model.package_data import read_package_text

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True)
class GpuSpec:
    id: str  # short id, e.g. "rtx4090", "h100-sxm"
    name: str  # display name, e.g. "NVIDIA GeForce RTX 4090"
    vendor: str  # "nvidia" | "amd"
    architecture: str  # "ampere", "ada", "hopper", "blackwell", "cdna3"
    segment: str  # "geforce" | "datacenter" | "workstation"
    memory_bytes: int
    memory_type: str  # "GDDR6X", "HBM3", ...
    memory_bandwidth_bytes_s: float
    memory_bus_width_bits: int
    peak_flops: Mapping[str, float]  # dtype key -> dense FLOP/s (see module docstring)
    tdp_w: float
    boost_clock_hz: float  # spec boost clock the peak_flops assume
    pcie_gen: int
    pcie_lanes: int
    nvlink_bytes_s: float | None  # total (both directions) per GPU; None where no NVLink
    list_price_usd: float | None
    nvml_names: tuple[str, ...] = ()  # exact strings nvmlDeviceGetName returns
    pci_device_ids: tuple[int, ...] = ()  # e.g. 0x268410DE
    planning_only: bool = False  # True for non-NVIDIA parts (no NVML)
    #: field name (or dtype key for peak_flops) -> citation
    sources: Mapping[str, str] = field(default_factory=dict)
    #: human-readable scale-up link, e.g. "NVLink 4 (900 GB/s)", "PCIe 4.0 x16 (no NVLink)"
    interconnect_name: str = ""
    #: OPTIONAL 2-way NVLink bridge (RTX 3090, A100/H100 PCIe), total both directions. Kept apart from
    #: nvlink_bytes_s because a box may not have the bridge fitted.
    nvlink_bridge_bytes_s: float | None = None
    #: other ids for the card ("h100" for h100-sxm): what ``--sim``, ``plan --gpu`` and ``[gpu_prices]``
    #: all accept, so one id scheme serves every face
    aliases: tuple[str, ...] = ()

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / 2**30

    @property
    def pcie_bytes_s(self) -> float:
        """One direction, after 128b/130b encoding (gen3+)."""
        per_lane_gt_s = {3: 8.0, 4: 16.0, 5: 32.0, 6: 64.0}.get(self.pcie_gen, 16.0)
        return per_lane_gt_s * 1e9 * self.pcie_lanes / 8 * (128 / 130)

    def peak(self, dtype: str) -> float:
        """Dense peak FLOP/s for a dtype key; KeyError names the dtypes this GPU has."""
        try:
            return self.peak_flops[dtype]
        except KeyError:
            raise KeyError(f"{self.id} has no {dtype!r} peak; known: {', '.join(self.peak_flops)}") from None


#: dtype keys a peak_tflops table may carry
DTYPE_KEYS = ("fp16", "fp16acc", "bf16", "fp8", "int8", "fp4", "fp32", "tf32")
#: keys every NEW gpu table must have (an override of a known id may give any subset)
_REQUIRED = (
    "name", "vendor", "architecture", "segment", "memory_gib", "memory_type", "memory_bandwidth_gb_s",
    "memory_bus_width_bits", "tdp_w", "boost_clock_mhz", "pcie_gen", "pcie_lanes", "peak_tflops",
)  # fmt: skip
_OPTIONAL = (
    "nvlink_gb_s", "nvlink_bridge_gb_s", "interconnect_name", "list_price_usd", "nvml_names",
    "pci_device_ids", "planning_only", "sources", "aliases",
)  # fmt: skip
_TEXT_KEYS = ("name", "vendor", "architecture", "segment", "memory_type", "interconnect_name")
_POSITIVE_KEYS = ("memory_gib", "memory_bandwidth_gb_s", "tdp_w", "boost_clock_mhz")
_INT_KEYS = ("memory_bus_width_bits", "pcie_gen", "pcie_lanes")
#: the built-in catalog of 30 cards is 60 KiB; a user file far larger is not a GPU list
_MAX_GPU_FILE_BYTES = 1 << 20
_NO_LIST_PRICE = "no vendor list price published (NVIDIA/AMD sell datacenter parts through OEMs)"


def _fail(origin: str, key: str, problem: str) -> ModelInputError:
    return ModelInputError(f"{origin}: {key}: {problem}")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _positive(origin: str, key: str, value: object) -> float:
    if not _is_number(value) or not float(value) > 0:  # type: ignore[arg-type]
        raise _fail(origin, key, f"expected a positive number, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _build(gpu_id: str, raw: Mapping[str, Any], origin: str) -> GpuSpec:
    """Validate one raw ``[gpu.<id>]`` table and convert its units (GiB, GB/s, TFLOPS, MHz) to SI
    bytes/FLOP/Hz."""
    where = f"gpu.{gpu_id}"
    unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise _fail(
            origin, f"{where}.{unknown[0]}", f"unknown key; allowed: {', '.join(_REQUIRED + _OPTIONAL)}"
        )
    for key in _REQUIRED:
        if key not in raw:
            raise _fail(
                origin,
                f"{where}.{key}",
                "missing (a new GPU needs every one of: " + ", ".join(_REQUIRED) + ")",
            )
    for key in _TEXT_KEYS:
        if key in raw and not (isinstance(raw[key], str) and raw[key]):
            raise _fail(origin, f"{where}.{key}", f"expected a non-empty string, got {raw[key]!r}")
    for key in _INT_KEYS:
        if not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] <= 0:
            raise _fail(origin, f"{where}.{key}", f"expected a positive integer, got {raw[key]!r}")
    numbers = {key: _positive(origin, f"{where}.{key}", raw[key]) for key in _POSITIVE_KEYS}
    peaks_raw = raw["peak_tflops"]
    if not isinstance(peaks_raw, Mapping) or not peaks_raw:
        raise _fail(origin, f"{where}.peak_tflops", "expected a table such as {fp16 = 165.2, fp32 = 82.6}")
    peaks: dict[str, float] = {}
    for dtype, tflops in peaks_raw.items():
        if dtype not in DTYPE_KEYS:
            raise _fail(
                origin, f"{where}.peak_tflops.{dtype}", f"unknown dtype; allowed: {', '.join(DTYPE_KEYS)}"
            )
        peaks[dtype] = _positive(origin, f"{where}.peak_tflops.{dtype}", tflops) * 1e12
    if "fp16" not in peaks:
        raise _fail(origin, f"{where}.peak_tflops.fp16", "missing (every GPU needs its fp16 tensor peak)")

    def optional_rate(key: str) -> float | None:
        return _positive(origin, f"{where}.{key}", raw[key]) * 1e9 if key in raw else None

    price = raw.get("list_price_usd")
    if price is not None:
        price = _positive(origin, f"{where}.list_price_usd", price)
    names = raw.get("nvml_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise _fail(origin, f"{where}.nvml_names", f"expected a list of strings, got {names!r}")
    pci_ids = raw.get("pci_device_ids", [])
    if not isinstance(pci_ids, list) or not all(isinstance(i, int) and 0 < i < 2**32 for i in pci_ids):
        raise _fail(
            origin, f"{where}.pci_device_ids", f"expected a list of integers like 0x268410DE, got {pci_ids!r}"
        )
    aliases = raw.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a and a == a.lower() for a in aliases):
        raise _fail(origin, f"{where}.aliases", f"expected a list of lower-case ids, got {aliases!r}")
    planning_only = raw.get("planning_only", False)
    if not isinstance(planning_only, bool):
        raise _fail(origin, f"{where}.planning_only", f"expected true or false, got {planning_only!r}")
    sources = dict(raw.get("sources", {}))
    if not all(isinstance(v, str) for v in sources.values()):
        raise _fail(origin, f"{where}.sources", "expected a table of strings (field name -> citation)")
    if price is None:
        sources.setdefault("list_price_usd", _NO_LIST_PRICE)
    return GpuSpec(
        id=gpu_id,
        name=raw["name"],
        vendor=raw["vendor"],
        architecture=raw["architecture"],
        segment=raw["segment"],
        memory_bytes=round(numbers["memory_gib"] * 2**30),
        memory_type=raw["memory_type"],
        memory_bandwidth_bytes_s=numbers["memory_bandwidth_gb_s"] * 1e9,
        memory_bus_width_bits=raw["memory_bus_width_bits"],
        peak_flops=MappingProxyType(peaks),
        tdp_w=numbers["tdp_w"],
        boost_clock_hz=numbers["boost_clock_mhz"] * 1e6,
        pcie_gen=raw["pcie_gen"],
        pcie_lanes=raw["pcie_lanes"],
        nvlink_bytes_s=optional_rate("nvlink_gb_s"),
        list_price_usd=price,
        nvml_names=tuple(names),
        pci_device_ids=tuple(pci_ids),
        planning_only=planning_only,
        sources=MappingProxyType(sources),
        interconnect_name=raw.get("interconnect_name", ""),
        nvlink_bridge_bytes_s=optional_rate("nvlink_bridge_gb_s"),
        aliases=tuple(aliases),
    )


def _gpu_tables(document: Mapping[str, Any], origin: str) -> dict[str, Mapping[str, Any]]:
    gpus = document.get("gpu")
    extra = sorted(set(document) - {"gpu"})
    if extra:
        raise _fail(origin, extra[0], "unknown top-level key; GPUs go in [gpu.<id>] tables")
    if not isinstance(gpus, Mapping) or not gpus:
        raise _fail(origin, "gpu", "no [gpu.<id>] tables found")
    for gpu_id, table in gpus.items():
        if not isinstance(table, Mapping):
            raise _fail(origin, f"gpu.{gpu_id}", "expected a table")
    return {gpu_id.lower(): table for gpu_id, table in gpus.items()}


def _merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Partial override: scalar keys replace, the peak_tflops and sources tables merge key by key."""
    merged = dict(base)
    for key, value in update.items():
        if (
            key in ("peak_tflops", "sources")
            and isinstance(value, Mapping)
            and isinstance(base.get(key), Mapping)
        ):
            merged[key] = {**base[key], **value}
        else:
            merged[key] = value
    return merged


def _builtin_tables() -> dict[str, Mapping[str, Any]]:
    """The built-in TOML tables, parsed afresh: only a user override needs them after start-up, so they
    are not kept (~80 KiB in every process, the NVML child's included)."""
    import tomllib  # here, not at the top: the NVML child adopts its parent's catalog and never parses

    text = read_package_text("gpuwatch.model", "data/gpus.toml")
    return _gpu_tables(tomllib.loads(text), "gpuwatch/model/data/gpus.toml")


def _load_builtin() -> dict[str, GpuSpec]:
    raw = _builtin_tables()
    return {gpu_id: _build(gpu_id, table, "gpuwatch/model/data/gpus.toml") for gpu_id, table in raw.items()}


def _check_ids(gpus: Mapping[str, GpuSpec], origin: str) -> None:
    """Every id and alias names one card."""
    owner: dict[str, str] = {}
    for gpu in gpus.values():
        for key in (gpu.id, *gpu.aliases):
            if owner.setdefault(key, gpu.id) != gpu.id:
                raise _fail(origin, f"gpu.{gpu.id}.aliases", f"{key!r} already names {owner[key]}")


#: built-ins, read from gpus.toml on first use (or adopted from a parent process's :class:`CatalogState`)
_BUILTIN: dict[str, GpuSpec] = {}
_USER: dict[str, GpuSpec] = {}
_LOADING = threading.Lock()


def _builtin() -> dict[str, GpuSpec]:
    if not _BUILTIN:
        with _LOADING:
            if not _BUILTIN:
                loaded = _load_builtin()
                _check_ids(loaded, "gpuwatch/model/data/gpus.toml")
                _BUILTIN.update(loaded)
    return _BUILTIN


@dataclass(frozen=True)
class CatalogState:
    """The catalog one process holds (built-ins, then user entries) as plain picklable data.

    The NVML child adopts its parent's instead of parsing gpus.toml (tomllib and the parse: ~0.3 MiB
    resident there), and so also knows the GPUs a user file added or overrode in the parent.
    """

    builtin: tuple[dict[str, Any], ...]
    user: tuple[dict[str, Any], ...]


def _plain(spec: GpuSpec) -> dict[str, Any]:
    values = {f.name: getattr(spec, f.name) for f in fields(spec)}
    return {k: dict(v) if isinstance(v, MappingProxyType) else v for k, v in values.items()}


def _spec(plain: Mapping[str, Any]) -> GpuSpec:
    values: dict[str, Any] = {k: MappingProxyType(v) if isinstance(v, dict) else v for k, v in plain.items()}
    return GpuSpec(**values)


def catalog_state() -> CatalogState:
    """This process's catalog, for :func:`adopt_catalog_state` in another."""
    return CatalogState(
        builtin=tuple(_plain(g) for g in _builtin().values()), user=tuple(_plain(g) for g in _USER.values())
    )


def adopt_catalog_state(state: CatalogState) -> None:
    """Hold exactly the catalog ``state`` describes (built-ins, user entries); gpus.toml is not read."""
    with _LOADING:
        _BUILTIN.clear()
        _BUILTIN.update((g.id, g) for g in map(_spec, state.builtin))
        _USER.clear()
        _USER.update((g.id, g) for g in map(_spec, state.user))


def all_gpus() -> tuple[GpuSpec, ...]:
    """Built-ins in catalog order (user overrides in place), then user-added GPUs."""
    merged = {**_builtin(), **_USER}
    return tuple(merged.values())


def gpu_ids() -> tuple[str, ...]:
    return tuple(gpu.id for gpu in all_gpus())


def get_gpu(key: str | int) -> GpuSpec:
    """Find a GPU by short id, exact NVML name, display name or PCI device id, case-insensitively.

    PCI ids match either the full NVML ``pciDeviceId`` (0x268410DE) or the 16-bit device id (0x2684), as an
    int
    or a hex string, so callers can pass whatever NVML or lspci gave them.
    """
    gpus = all_gpus()
    if isinstance(key, str):
        wanted = key.strip().lower()
        for gpu in gpus:
            if (
                wanted == gpu.id
                or wanted in gpu.aliases
                or wanted == gpu.name.lower()
                or wanted in (n.lower() for n in gpu.nvml_names)
            ):
                return gpu
        if wanted.startswith("0x"):
            try:
                return get_gpu(int(wanted, 16))
            except ValueError:
                pass
        known = [g.id for g in gpus] + [n for g in gpus for n in g.nvml_names]
        raise UnknownIdError("GPU", key, _close_first(wanted, known) or [g.id for g in gpus])
    if isinstance(key, int) and not isinstance(key, bool):
        for gpu in gpus:
            if key in gpu.pci_device_ids or (key < 0x10000 and key in (i >> 16 for i in gpu.pci_device_ids)):
                return gpu
        raise UnknownIdError(
            "GPU PCI device id", f"{key:#x}", [f"{i:#010x}" for g in gpus for i in g.pci_device_ids]
        )
    raise ModelInputError(f"GPU key must be a string or PCI device id, got {key!r}")


def identify_gpu(pci_device_id: int | None, name: str | None) -> GpuSpec | None:
    """The catalog entry for a card as NVML describes it; None when the catalog lacks it.

    The one matcher (telemetry calls it once per card; the id travels as ``GpuSample.catalog_id``).
    PCI device id first: it is exact where NVML names vary by board or driver; then the NVML name.
    """
    for key in (pci_device_id, name):
        if key:
            try:
                return get_gpu(key)
            except UnknownIdError:
                continue
    return None


def _close_first(wanted: str, known: list[str]) -> list[str]:
    """Close matches among ids and NVML names (compared lower-case, reported as spelled)."""
    import difflib  # only when a key is unknown

    lowered = {k.lower(): k for k in known}
    return [lowered[c] for c in difflib.get_close_matches(wanted, list(lowered), n=5, cutoff=0.4)]


def load_user_gpus(path: str | Path) -> tuple[GpuSpec, ...]:
    """Read a user TOML of ``[gpu.<id>]`` tables, register them, and return them.

    A known id is a partial override (only the keys given change, peak_tflops/sources merge per key), so a
    user
    can fix one figure, e.g. a card power-limited to 300 W, without restating the datasheet.
    """
    import tomllib

    origin = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_GPU_FILE_BYTES + 1)
        if len(data) > _MAX_GPU_FILE_BYTES:
            raise ModelInputError(f"{origin}: larger than {_MAX_GPU_FILE_BYTES // 1024} KiB; not a GPU file")
        document = tomllib.loads(data.decode("utf-8"))
    except OSError as exc:
        raise ModelInputError(f"{origin}: cannot read GPU file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ModelInputError(f"{origin}: not a UTF-8 text file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ModelInputError(f"{origin}: not valid TOML ({exc})") from None
    loaded: list[GpuSpec] = []
    tables = _gpu_tables(document, origin)
    builtin = _builtin_tables() if any(gpu_id in _builtin() for gpu_id in tables) else {}
    for gpu_id, table in tables.items():
        base = builtin.get(gpu_id)
        raw = _merge(base, table) if base is not None else table
        spec = _build(gpu_id, raw, origin)
        loaded.append(spec)
    _check_ids({**_builtin(), **_USER, **{spec.id: spec for spec in loaded}}, origin)
    for spec in loaded:  # register only when the whole file is valid
        _USER[spec.id] = spec
    return tuple(loaded)


def reset_user_gpus() -> None:
    """Forget user additions/overrides (tests, or reloading a changed file)."""
    _USER.clear()
