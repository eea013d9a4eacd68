"""`gpuwatch capture FILE` and `--sim capture:FILE`: capture a simulated card, replay it, capture again.

What must survive the round trip is what a bug report is for: every static answer and error (value or
NVML error code) of every probe and field, the support matrix, the driver's version and symbol list;
readings that move are compared loosely (idle power within 10 %, temperature within 3 C).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gpuwatch.cli import main
from gpuwatch.commands.capture import (
    DYNAMIC_FIELDS,
    MASKED_SERIAL,
    MASKED_UUID,
    PROBES,
    library_symbols,
)
from gpuwatch.telemetry.simulated.from_capture import CAPTURE_FIELDS

STATIC_KEYS = [p.key for p in PROBES if p.static and p.key != "UUID"] + [
    k for k in CAPTURE_FIELDS if k not in DYNAMIC_FIELDS
]


def _capture(tmp_path: Path, name: str, sim: str, *extra: str) -> dict[str, Any]:
    out = tmp_path / name
    rc = main(["--sim", sim, "--scenario", "idle", "capture", str(out), "--seconds", "0.5", *extra])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["format"] == "gpuwatch-capture"
    return doc


def _answer(entry: dict[str, Any]) -> Any:
    return ("error", entry["code"]) if "error" in entry else ("value", entry["value"])


@pytest.mark.parametrize("card", ["rtx4080-super", "h100-sxm", "rtx2080-super", "l40s", "rtx4090"])
def test_capture_replays_as_the_same_card(tmp_path: Path, card: str) -> None:
    first = _capture(tmp_path, "first.json", card)
    second = _capture(tmp_path, "second.json", f"capture:{tmp_path / 'first.json'}")
    a, b = first["devices"][0], second["devices"][0]
    for key in STATIC_KEYS:
        assert _answer(b["calls"][key]) == _answer(a["calls"][key]), key
    assert b["support"] == a["support"]
    assert second["symbols"]["names"] == first["symbols"]["names"]
    for key in ("DriverVersion", "NVMLVersion", "CudaDriverVersion"):
        assert second["system"][key]["value"] == first["system"][key]["value"]
    # dynamics from the physics, started from the captured idle state
    assert b["calls"]["PowerUsage"]["value"] == pytest.approx(a["calls"]["PowerUsage"]["value"], rel=0.10)
    assert b["calls"]["Temperature"]["value"] == pytest.approx(a["calls"]["Temperature"]["value"], abs=3)
    assert b["calls"]["Clock.SM"] == {**a["calls"]["Clock.SM"], "us": b["calls"]["Clock.SM"]["us"]}


def test_a_replayed_card_runs_a_load_from_the_physics(tmp_path: Path) -> None:
    _capture(tmp_path, "idle.json", "rtx4080-super")
    out = tmp_path / "load.json"
    argv = ["--sim", f"capture:{tmp_path / 'idle.json'}", "--scenario", "training", "--time-scale", "60"]
    assert main([*argv, "capture", str(out), "--seconds", "0.5"]) == 0
    last = json.loads(out.read_text())["devices"][0]["samples"][-1]
    assert last["performance_state"] == 2  # GeForce under load
    assert last["power_w"] > 100  # well above the captured 26 W idle
    assert last["sm_clock_hz"] > 2000e6


def test_serials_and_uuids_are_masked_unless_asked(tmp_path: Path) -> None:
    masked = _capture(tmp_path, "masked.json", "h100-sxm")
    kept = _capture(tmp_path, "kept.json", "h100-sxm", "--no-mask")
    real_uuid = kept["devices"][0]["calls"]["UUID"]["value"]
    real_serial = kept["devices"][0]["calls"]["Serial"]["value"]
    assert real_uuid.startswith("GPU-") and real_uuid != MASKED_UUID
    text = (tmp_path / "masked.json").read_text()
    assert real_uuid not in text and real_serial not in text
    assert masked["devices"][0]["calls"]["UUID"]["value"] == MASKED_UUID
    assert masked["devices"][0]["calls"]["Serial"]["value"] == MASKED_SERIAL
    assert masked["masked"] is True and kept["masked"] is False


def test_every_probe_records_its_latency_and_the_errors_by_name(tmp_path: Path) -> None:
    doc = _capture(tmp_path, "c.json", "rtx2080-super")
    calls = doc["devices"][0]["calls"]
    assert all(entry["us"] >= 0 for entry in calls.values())
    # the captured 2080 SUPER: no average power (Turing), deprecated applications clocks on r610
    assert calls["FI.POWER_AVERAGE"]["error"] == "NVMLError_NotSupported"
    assert calls["ApplicationsClock.SM"]["code"] == 26  # NVML_ERROR_DEPRECATED
    assert calls["FI.GET_GPU_RECOVERY_ACTION"]["value"] == 0
    assert doc["symbols"]["source"] == "simulated driver profile r610"
    assert "nvmlDeviceGetHandles" in doc["symbols"]["names"]  # r610 adds it (captured list)
    assert len(doc["devices"][0]["samples"]) >= 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("not json", "not a gpuwatch capture"),
        ('{"format": "something-else"}', "not a gpuwatch capture"),
        ("[" * 100_000 + "]" * 100_000, "not a gpuwatch capture"),
        ('{"format": "gpuwatch-capture", "devices": [{"calls": {}}]}', "has no calls"),
        (
            '{"format": "gpuwatch-capture", "system": {"DriverVersion": {"value": "595.80"}}, "devices": '
            '[{"calls": {"Name": {"value": "NVIDIA L40S"}, "MemoryInfo_v2": {"value": {"total": "lots"}}}}]}',
            "malformed capture",
        ),
    ],
)
def test_a_bad_capture_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    rc = main(["--sim", f"capture:{path}", "capture", str(tmp_path / "out.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert message in err and "Traceback" not in err


def test_capture_refuses_a_path_it_cannot_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--sim", "rtx4090", "capture", str(tmp_path / "missing" / "c.json")])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err


def test_library_symbols_reads_the_exported_nvml_functions_of_an_elf(tmp_path: Path) -> None:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler to build a stand-in libnvidia-ml.so")
    src = tmp_path / "lib.c"
    src.write_text(
        "int nvmlInit_v2(void) { return 0; }\n"
        "int nvmlDeviceGetCount_v2(unsigned *n) { *n = 1; return 0; }\n"
        "static int nvmlHidden(void) { return 1; }\n"
        "int helper(void) { return nvmlHidden(); }\n"
    )
    lib = tmp_path / "libnvidia-ml.so.1"
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    names, where = library_symbols(str(lib))
    assert names == ["nvmlDeviceGetCount_v2", "nvmlInit_v2"]
    assert str(lib) in where


def test_capture_without_a_driver_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import ctypes.util

    if ctypes.util.find_library("nvidia-ml"):
        pytest.skip("this machine has an NVIDIA driver")
    rc = main(["capture", str(tmp_path / "c.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "NVML unavailable" in err and "--sim" in err
    assert not (tmp_path / "c.json").exists()


def test_every_gpu_of_a_capture_is_replayed(tmp_path: Path) -> None:
    box = _capture(tmp_path, "box.json", "rtx4080-super,h100-sxm")
    again = _capture(tmp_path, "again.json", f"capture:{tmp_path / 'box.json'}")
    names = [d["calls"]["Name"]["value"] for d in again["devices"]]
    assert names == [d["calls"]["Name"]["value"] for d in box["devices"]]
    assert names == ["NVIDIA GeForce RTX 4080 SUPER", "NVIDIA H100 80GB HBM3"]
    # one box, one driver: the first card's (the 4080 SUPER was captured on r595)
    assert again["system"]["DriverVersion"]["value"] == box["system"]["DriverVersion"]["value"] == "595.80"


def test_a_capture_of_a_busy_card_replays_its_idle_state_not_its_load(tmp_path: Path) -> None:
    busy = tmp_path / "busy.json"
    assert (
        main(["--sim", "h100-sxm", "--scenario", "decode", "--time-scale", "30", "capture", str(busy)]) == 0
    )
    again = _capture(tmp_path, "again.json", f"capture:{busy}")  # replayed idle
    calls = again["devices"][0]["calls"]
    assert calls["MemoryInfo_v2"]["value"]["used"] < 64 << 20  # decode's ~70 GiB belonged to its process
    assert calls["Clock.SM"]["value"] == 345  # the profile's idle clock, not the captured busy one
    assert calls["PowerUsage"]["value"] < 100_000


def test_a_card_the_catalog_lacks_replays_from_the_capture_alone(tmp_path: Path) -> None:
    doc = _capture(tmp_path, "known.json", "rtx4080-super")
    calls = doc["devices"][0]["calls"]
    calls["Name"]["value"] = "NVIDIA GeForce RTX 9999 Mystery"
    calls["PciInfo"]["value"]["pciDeviceId"] = 0x9999_10DE
    calls["MaxClock.SM"]["value"] = 3333
    (tmp_path / "unknown.json").write_text(json.dumps(doc))
    again = _capture(tmp_path, "again.json", f"capture:{tmp_path / 'unknown.json'}")
    replayed = again["devices"][0]["calls"]
    assert replayed["Name"]["value"] == "NVIDIA GeForce RTX 9999 Mystery"
    assert replayed["PciInfo"]["value"]["pciDeviceId"] == 0x9999_10DE
    assert replayed["MaxClock.SM"]["value"] == 3333
    assert replayed["MemoryInfo_v2"]["value"]["total"] == calls["MemoryInfo_v2"]["value"]["total"]
