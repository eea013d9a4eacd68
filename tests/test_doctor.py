"""`gpuwatch doctor`: the support matrix shows GeForce vs Hopper differences and fallbacks."""

from __future__ import annotations

import pytest

from gpuwatch.cli import main

sim_mod = pytest.importorskip("gpuwatch.telemetry.simulated", reason="simulated NVML not available yet")
needs_sim = pytest.mark.skipif(
    not hasattr(sim_mod, "install"), reason="simulated NVML install() not available yet"
)


def matrix_row(out: str, reading: str) -> list[str]:
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 2 and cells[1] == reading:
            return cells[2:-1]
    raise AssertionError(f"no row {reading!r} in:\n{out}")


@needs_sim
def test_doctor_shows_geforce_and_hopper_differences(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--sim", "2xrtx4090,h100-sxm"]) == 0
    out = capsys.readouterr().out
    assert "driver" in out and "NVML" in out and "nvidia-ml-py" in out
    assert matrix_row(out, "fan_speed_ratio") == ["✓", "✓", "not supported"]
    assert matrix_row(out, "gpm") == ["not supported", "not supported", "✓"]
    assert matrix_row(out, "memory_temperature_c") == ["not supported", "not supported", "✓"]
    assert matrix_row(out, "energy_j") == ["✓", "✓", "✓"]
    assert matrix_row(out, "ecc_errors_uncorrected_total") == ["not supported", "not supported", "✓"]
    assert "1008 GB/s" in out and "3352 GB/s" in out


@needs_sim
def test_doctor_on_an_old_driver_names_fallbacks_and_missing_functions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["doctor", "--sim", "h100-sxm", "--driver", "r470"]) == 0
    out = capsys.readouterr().out
    assert matrix_row(out, "temperature_c") == ["✓ via nvmlDeviceGetTemperature"]
    assert matrix_row(out, "gpm") == ["function not found"]
    assert "driver lacks:" in out and "nvmlDeviceGetMemoryBusWidth" in out


def test_doctor_without_a_driver_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    if hasattr(sim_mod, "uninstall"):
        sim_mod.uninstall()
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "NVML unavailable" in out and "nvidia-ml-py" in out


def test_doctor_refuses_a_recording_and_an_empty_sim(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--replay", "/nonexistent.gwrec", "doctor"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpuwatch: error: doctor probes the NVML driver") and err.count("\n") == 1
    assert main(["doctor", "--sim", ""]) == 2  # not "use the real driver"
    assert capsys.readouterr().err.startswith("gpuwatch: error: --sim '': bad device entry")
