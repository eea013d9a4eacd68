"""GPU catalog: sourced figures, lookups the live layer relies on, and user TOML overrides."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuwatch.model.catalog import (
    DTYPE_KEYS,
    all_gpus,
    get_gpu,
    gpu_ids,
    identify_gpu,
    load_user_gpus,
    reset_user_gpus,
)
from gpuwatch.model.errors import ModelInputError, UnknownIdError

REQUIRED_IDS = {
    "rtx3090", "rtx4090", "rtx5090", "a10", "a10g", "l4", "l40s", "a100-40gb-pcie", "a100-80gb-pcie",
    "a100-40gb-sxm", "a100-80gb-sxm", "h100-pcie", "h100-sxm", "h200", "b200", "mi300x",
}  # fmt: skip


@pytest.fixture(autouse=True)
def _clean_user_gpus() -> Iterator[None]:
    reset_user_gpus()
    yield
    reset_user_gpus()


def test_catalog_has_every_gpu_the_issue_names() -> None:
    assert set(gpu_ids()) >= REQUIRED_IDS
    assert len(all_gpus()) >= 16


@pytest.mark.parametrize("gpu", all_gpus(), ids=lambda g: g.id)
def test_every_gpu_is_complete_and_sourced(gpu) -> None:  # type: ignore[no-untyped-def]
    assert set(gpu.peak_flops) <= set(DTYPE_KEYS)
    for dtype in ("fp16", "fp16acc", "int8", "fp32"):
        assert gpu.peak(dtype) > 0
    if gpu.architecture != "turing":  # Turing has no bf16 tensor path (engines run fp16 there)
        assert gpu.peak("bf16") > 0
    # fp16 with fp16 accumulate is never slower than with fp32 accumulate; GeForce is exactly 2x
    ratio = gpu.peak("fp16acc") / gpu.peak("fp16")
    assert ratio == pytest.approx(2.0 if gpu.segment == "geforce" else 1.0, rel=1e-3)  # whitepaper rounding
    for key in ("peak_flops", "memory_bandwidth_bytes_s", "tdp_w", "list_price_usd"):
        assert gpu.sources.get(key), f"{gpu.id}: no source for {key}"
    assert gpu.planning_only == (gpu.vendor != "nvidia")
    if not gpu.planning_only:
        assert gpu.pci_device_ids
        assert gpu.nvml_names or gpu.id == "rtx4060ti-16gb"  # its NVML name is the 8 GB card's too


def test_datasheet_figures_the_articles_get_wrong() -> None:
    h100 = get_gpu("h100-sxm")
    # article 002 lists 312 dense BF16 for the H100 (the A100 figure); datasheet: 1979 sparse -> 989.5 dense
    assert h100.peak("bf16") == pytest.approx(989.5e12)
    assert get_gpu("a100-80gb-sxm").peak("bf16") == pytest.approx(312e12)
    rtx4090 = get_gpu("rtx4090")
    # 330 vs 82.6 in the articles are fp16-accumulate tensor and fp32 CUDA cores; fp32-accumulate tensor is
    # 165.2
    assert rtx4090.peak("fp16acc") == pytest.approx(330.3e12)
    assert rtx4090.peak("fp16") == pytest.approx(165.2e12)
    assert rtx4090.peak("fp32") == pytest.approx(82.6e12)
    assert rtx4090.peak("fp8") == pytest.approx(330.3e12)  # whitepaper v2.02 correction (FP32 accumulate)


def test_ridge_points_match_article_000() -> None:
    # article 000: 4090 ~330 FLOP/byte (fp16-accumulate peak over 1008 GB/s), H100 ~295
    rtx4090, h100 = get_gpu("rtx4090"), get_gpu("h100-sxm")
    assert rtx4090.peak("fp16acc") / rtx4090.memory_bandwidth_bytes_s == pytest.approx(330, rel=0.02)
    assert h100.peak("fp16") / h100.memory_bandwidth_bytes_s == pytest.approx(295, rel=0.01)


def test_memory_and_interconnect_units() -> None:
    h100 = get_gpu("h100-sxm")
    assert h100.memory_gib == 80
    assert h100.nvlink_bytes_s == pytest.approx(900e9)
    assert h100.pcie_gen == 5
    rtx4090 = get_gpu("rtx4090")
    assert rtx4090.nvlink_bytes_s is None and rtx4090.nvlink_bridge_bytes_s is None
    assert rtx4090.pcie_bytes_s == pytest.approx(31.5e9, rel=0.01)  # PCIe 4.0 x16, one direction
    # a bridge is optional hardware: kept apart from always-present NVLink
    assert get_gpu("rtx3090").nvlink_bytes_s is None
    assert get_gpu("rtx3090").nvlink_bridge_bytes_s == pytest.approx(112.5e9)
    assert get_gpu("rtx4090").list_price_usd == 1599
    assert get_gpu("h100-sxm").list_price_usd is None


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("NVIDIA GeForce RTX 4090", "rtx4090"),
        ("nvidia geforce rtx 4090", "rtx4090"),
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA A100-SXM4-80GB", "a100-80gb-sxm"),
        ("NVIDIA A100-SXM4-40GB", "a100-40gb-sxm"),
        ("NVIDIA A100-PCIE-40GB", "a100-40gb-pcie"),
        ("NVIDIA A100 80GB PCIe", "a100-80gb-pcie"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA A10G", "a10g"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA B200", "b200"),
        ("NVIDIA GeForce RTX 3090", "rtx3090"),
        ("NVIDIA GeForce RTX 5090", "rtx5090"),
        ("H100-SXM", "h100-sxm"),
        (0x268410DE, "rtx4090"),
        (0x233010DE, "h100-sxm"),
        (0x2684, "rtx4090"),
        ("0x233010de", "h100-sxm"),
    ],
)
def test_lookup_by_nvml_name_id_and_pci_id(key: str | int, expected: str) -> None:
    assert get_gpu(key).id == expected


def test_unknown_gpu_lists_close_matches() -> None:
    with pytest.raises(UnknownIdError, match=r"unknown GPU 'rtx4085'; did you mean .*rtx4080"):
        get_gpu("rtx4085")
    with pytest.raises(UnknownIdError, match="0xdeadbeef"):
        get_gpu(0xDEADBEEF)


def test_user_toml_partially_overrides_and_adds(tmp_path: Path) -> None:
    path = tmp_path / "gpus.toml"
    path.write_text(
        """
[gpu.rtx4090]
tdp_w = 300                       # power-limited card
list_price_usd = 1800
[gpu.rtx4090.peak_tflops]
fp16 = 150.0

[gpu.my-card]
name = "Lab Card 9000"
vendor = "nvidia"
architecture = "ada"
segment = "workstation"
memory_gib = 48
memory_type = "GDDR6"
memory_bandwidth_gb_s = 960
memory_bus_width_bits = 384
tdp_w = 300
boost_clock_mhz = 2500
pcie_gen = 4
pcie_lanes = 16
nvml_names = ["NVIDIA Lab Card 9000"]
[gpu.my-card.peak_tflops]
fp16 = 182.0
fp32 = 91.0
"""
    )
    loaded = load_user_gpus(path)
    assert {g.id for g in loaded} == {"rtx4090", "my-card"}
    rtx4090 = get_gpu("NVIDIA GeForce RTX 4090")
    assert rtx4090.tdp_w == 300 and rtx4090.list_price_usd == 1800
    assert rtx4090.peak("fp16") == pytest.approx(150e12)
    assert rtx4090.peak("fp16acc") == pytest.approx(330.3e12)  # untouched keys keep the datasheet figure
    assert rtx4090.memory_gib == 24
    card = get_gpu("NVIDIA Lab Card 9000")
    assert card.memory_bytes == 48 * 2**30 and card.memory_bandwidth_bytes_s == pytest.approx(960e9)
    assert [g.id for g in all_gpus()][-1] == "my-card"
    reset_user_gpus()
    assert get_gpu("rtx4090").tdp_w == 450


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[gpu.rtx4090]\ntdp_w = -5\n", r"gpu\.rtx4090\.tdp_w: expected a positive number"),
        ("[gpu.rtx4090]\ntdp_w = 'lots'\n", r"gpu\.rtx4090\.tdp_w"),
        ("[gpu.rtx4090]\nwatts = 300\n", r"gpu\.rtx4090\.watts: unknown key"),
        ("[gpu.rtx4090.peak_tflops]\nfp6 = 1.0\n", r"gpu\.rtx4090\.peak_tflops\.fp6: unknown dtype"),
        ("[gpu.rtx4090]\naliases = ['h100']\n", r"gpu\.(rtx4090|h100-sxm)\.aliases: 'h100' already names"),
        ("[gpu.newcard]\nname = 'x'\n", r"gpu\.newcard\.vendor: missing"),
        ("[gpu.rtx4090\n", "not valid TOML"),
    ],
)
def test_bad_user_toml_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "gpus.toml"
    path.write_text(text)
    with pytest.raises(ModelInputError, match=message):
        load_user_gpus(path)
    assert get_gpu("rtx4090").tdp_w == 450  # nothing registered from a bad file


def test_missing_user_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelInputError, match="cannot read GPU file"):
        load_user_gpus(tmp_path / "nope.toml")


#: ids `gpuwatch --sim` accepted before the catalog carried aliases (telemetry/simulated/profiles.py)
SIM_IDS = {"4090": "rtx4090", "3090": "rtx3090", "5090": "rtx5090", "h100": "h100-sxm",
           "a100": "a100-80gb-sxm", "a100-sxm": "a100-80gb-sxm", "a100-pcie": "a100-80gb-pcie"}  # fmt: skip


@pytest.mark.parametrize(("alias", "gpu_id"), sorted(SIM_IDS.items()))
def test_one_id_scheme_sim_ids_resolve_in_the_catalog(alias: str, gpu_id: str) -> None:
    assert get_gpu(alias).id == gpu_id
    assert get_gpu(alias.upper()).id == gpu_id


NEW_CARDS = {
    # id: (memory GiB, bandwidth GB/s, dense fp16 (fp32-accumulate) TFLOPS, TDP W) from each card's datasheet
    "rtx3090ti": (24, 1008, 80.0, 450),
    "rtx4060ti-16gb": (16, 288, 44.13, 165),
    "rtx4070tisuper": (16, 672, 88.2, 285),
    "rtx4080": (16, 716.8, 97.5, 320),
    "rtx4080super": (16, 736, 104.4, 320),
    "rtx5080": (16, 960, 112.6, 360),
    "rtxa6000": (48, 768, 154.8, 300),
    "rtx6000ada": (48, 960, 364.2, 300),
    "rtxpro6000": (96, 1792, 500.0, 600),
    "l40": (48, 864, 181.05, 300),
    "a40": (48, 696, 149.7, 300),
    "h100-nvl": (94, 3900, 835.5, 400),
    "h20": (96, 4000, 148.0, 500),
    "h200-nvl": (141, 4800, 835.5, 600),
    "b200": (180, 8000, 2250.0, 1000),
    "mi300x": (192, 5300, 1307.4, 750),
}


@pytest.mark.parametrize(("gpu_id", "figures"), sorted(NEW_CARDS.items()))
def test_issue_14_cards_with_sourced_figures(gpu_id: str, figures: tuple[float, float, float, float]) -> None:
    gpu = get_gpu(gpu_id)
    gib, gb_s, fp16, tdp = figures
    assert (gpu.memory_gib, gpu.memory_bandwidth_bytes_s / 1e9, gpu.peak("fp16") / 1e12, gpu.tdp_w) == (
        pytest.approx(gib),
        pytest.approx(gb_s),
        pytest.approx(fp16),
        pytest.approx(tdp),
    )
    for key in ("peak_flops", "memory_bandwidth_bytes_s", "tdp_w", "list_price_usd"):
        assert gpu.sources[key]
    assert gpu.planning_only == (gpu_id == "mi300x")


def test_the_real_4080_super_capture_identifies_and_matches_the_catalog() -> None:
    # shared/captures/linux-x86_64__nvidia-geforce-rtx-4080-super__595.71.05.txt: Device Id 0x270210DE,
    # FB memory total 16376 MiB, default power limit 320.00 W, max memory clock 11501 MHz (23 Gbps GDDR6X)
    gpu = get_gpu(0x270210DE)
    assert gpu.id == "rtx4080super" and get_gpu("NVIDIA GeForce RTX 4080 SUPER") is gpu
    assert gpu.tdp_w == 320
    assert gpu.memory_bandwidth_bytes_s == pytest.approx(11501e6 * 2 * 256 / 8, rel=0.001)
    assert gpu.memory_bytes >= 16376 * 2**20


def test_fp4_only_where_the_chip_has_fp4_tensor_cores() -> None:
    assert {g.id for g in all_gpus() if "fp4" in g.peak_flops} == {"rtx5090", "rtx5080", "rtxpro6000", "b200"}
    assert get_gpu("b200").peak("fp4") == 2 * get_gpu("b200").peak("fp8")


def test_a_name_two_boards_share_identifies_by_pci_id_only() -> None:
    assert identify_gpu(0x280510DE, "NVIDIA GeForce RTX 4060 Ti").id == "rtx4060ti-16gb"
    assert identify_gpu(0x280310DE, "NVIDIA GeForce RTX 4060 Ti") is None  # the 8 GB card: not in the catalog


def test_oversized_or_binary_gpu_file_is_one_line(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * (2 << 20) + "\n")
    with pytest.raises(ModelInputError, match="larger than 1024 KiB"):
        load_user_gpus(big)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ModelInputError, match="not a UTF-8 text file"):
        load_user_gpus(binary)


_FROM_ZIP = """
import sys
sys.path[:0] = [sys.argv[1], *sys.argv[2:]]
from gpuwatch.model.catalog import get_gpu
from gpuwatch.telemetry.simulated.profiles import DRIVER_PROFILES
import gpuwatch
print(gpuwatch.__file__)
print(get_gpu("rtx4090").tdp_w, DRIVER_PROFILES["r610"].has_symbol("nvmlDeviceGetHandles"))
"""


def test_the_catalog_and_the_simulators_symbol_lists_load_from_a_zip_import(tmp_path: Path) -> None:
    # the data files are read as plain files beside the modules; a zip archive has none, and must work
    import subprocess
    import sys
    import zipfile

    import gpuwatch

    root = Path(gpuwatch.__file__).parent
    archive = tmp_path / "gpuwatch.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in root.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                z.write(path, Path("gpuwatch") / path.relative_to(root))
    others = [p for p in sys.path if p and Path(p).resolve() != root.parent.resolve()]
    done = subprocess.run(  # -S: no editable-install finder to find the source tree instead
        [sys.executable, "-S", "-c", _FROM_ZIP, str(archive), *others],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    where, figures = done.stdout.splitlines()
    assert where.startswith(str(archive))
    assert figures == "450.0 True"  # the RTX 4090's TDP; r610's captured list has nvmlDeviceGetHandles
