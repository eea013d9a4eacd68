"""One declaration per setting: the CLI, the config file and the copied plan command all follow it; hostile
numbers and files are one line each (issue 12's config and plan cases)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuwatch.cli import main
from gpuwatch.live.config import ConfigError, load_config
from gpuwatch.model.catalog import load_user_gpus, reset_user_gpus
from gpuwatch.model.cost import OwnershipCost
from gpuwatch.model.whatif import PlanInputs
from gpuwatch.options import all_options, get
from gpuwatch.options.plan_command import plan_command

ROOT = Path(__file__).resolve().parents[1]

LAB_CARD = """
[gpu.lab-card]
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
list_price_usd = 5000
nvml_names = ["NVIDIA Lab Card 9000"]
[gpu.lab-card.peak_tflops]
fp16 = 182.0
fp32 = 91.0
"""


@pytest.fixture(autouse=True)
def _no_user_gpus() -> Iterator[None]:
    yield
    reset_user_gpus()


def one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpuwatch: error: ") and err.count("\n") == 1, err
    return err.strip()


def write(tmp_path: Path, content: str | bytes) -> str:
    p = tmp_path / "config.toml"
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    return str(p)


# --- the declarations --------------------------------------------------------------------------------


def test_every_price_default_is_the_ownership_cost_default() -> None:
    """The flags' defaults are read from OwnershipCost, not written a second time."""
    defaults = OwnershipCost()
    for name in (
        "electricity_usd_per_kwh",
        "pue",
        "service_life_years",
        "utilisation_ratio",
        "cloud_usd_per_gpu_h",
    ):
        assert get(name).default == getattr(defaults, name)
        assert get(name).toml == f"prices.{name}"


def test_every_flag_is_declared_once() -> None:
    flags = [f for o in all_options() for f in o.flags]
    assert len(flags) == len(set(flags))


def test_the_same_price_flag_means_the_same_in_the_tui_exporter_and_plan() -> None:
    for command in ([], ["exporter"], ["plan", "cost"]):
        out = subprocess.run(
            [sys.executable, "-m", "gpuwatch", *command, "--help"],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        ).stdout
        for flag in (
            "--electricity-price",
            "--cloud-price",
            "--utilisation",
            "--service-life",
            "--gpu-price",
        ):
            assert flag in out, (command, flag)
        assert "electricity price (USD/kWh); from 0 to 10; default 0.15" in out


# --- issue 12: every number a user can type is range-checked where it is declared ----------------------


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (
            ["record", "x.gwrec", "--sim", "rtx4090", "--interval", "1e-9"],
            "--interval = '1e-09' is not allowed",
        ),
        (
            ["--sim", "rtx4090", "--time-scale", "1e6"],
            "--time-scale = '1e6' is not allowed: expected a number > 0",
        ),
        (["--sim", "rtx4090", "--replay-speed", "nan"], "--replay-speed = 'nan' is not allowed"),
        (["--sim", "rtx4090", "--seed", "9" * 400], "--seed = '99999"),
        (
            ["exporter", "--sim", "rtx4090", "--electricity-price", "1e308"],
            "--electricity-price = '1e308' is not allowed: expected a number from 0 to 10",
        ),
        (["exporter", "--sim", "rtx4090", "--utilisation", "2"], "--utilisation = '2' is not allowed"),
        (["plan", "cost", "--count", "9" * 400], "--count = '9999"),
        (
            ["--sim", "rtx4090", "--engine", "notaurl"],
            "--engine = 'notaurl' is not allowed: expected an engine URL",
        ),
        (
            ["exporter", "--sim", "rtx4090", "--engine", "http://[::1/metrics"],
            "--engine = 'http://[::1/metrics'",
        ),
    ],
)
def test_out_of_range_numbers_are_one_line_errors(
    argv: list[str],
    fragment: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    err = one_line_error(capsys, *argv)
    assert fragment.replace("'1e-09'", "'1e-9'") in err
    assert len(err) < 300  # a 400-digit number is cut, not echoed whole
    assert not (tmp_path / "x.gwrec").exists()


def test_none_clears_an_optional_price(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "cost", "--cloud-price", "none", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cloud_usd_per_gpu_h"] is None and out["cloud_usd_per_mtok"] is None
    assert out["usd_per_mtok"] > 0 and out["breakeven_months"] is None


# --- issue 12: config files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"[prices]\npue = 1.2\n# caf\xe9\n", "not UTF-8 text (byte 24)"),
        ("[prices]\nelectricity_usd_per_kwh = " + "9" * 400 + "\n", "prices.electricity_usd_per_kwh = 99999"),
        ("[prices]\nhosting_usd_per_h = " + "9" * 5000 + "\n", "not valid TOML"),
        ("interval_s = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
        ('engine_urls = ["http://[::1/metrics"]\n', "engine_urls = ['http://[::1/metrics'] is not allowed"),
        ('engine_urls = ["http://[::1]:99999/metrics"]\n', "is not allowed: expected an engine URL"),
        ("[prices]\nelectricity_usd_per_kwh = 1e308\n", "expected a number from 0 to 10"),
        ("[prices]\ncloud_usd_per_gpu_h = nan\n", "prices.cloud_usd_per_gpu_h = nan is not allowed"),
        ("[workload]\nmodel = 'llama-3-8b'\nquant = 'fp16'\nbatch = " + "9" * 30 + "\n", "workload.batch"),
    ],
)
def test_hostile_config_files_are_one_line(tmp_path: Path, content: str | bytes, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, content))
    message = str(info.value)
    assert fragment in message and "\n" not in message and len(message) < 400


def test_a_config_file_through_the_cli_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "interval_s = " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested too deeply" in one_line_error(capsys, "exporter", "--sim", "rtx4090", "--config", path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any directory")
def test_an_unreadable_config_directory_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / "gpuwatch").mkdir(parents=True)
    home.chmod(0)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    try:
        with pytest.raises(ConfigError, match=r"cannot look into the config directory .*XDG_CONFIG_HOME"):
            load_config(None)
    finally:
        home.chmod(0o700)


def test_an_unreadable_config_directory_as_root_sees_through_a_failing_stat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root can read any directory, so the EACCES a user under `sudo -u` gets is made by hand here."""

    def denied(self: Path, *args: object, **kwargs: object) -> os.stat_result:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(Path, "stat", denied)
    with pytest.raises(ConfigError) as info:
        load_config(None)
    assert "Permission denied" in str(info.value) and "--config FILE" in str(info.value)


# --- --gpus-file: the user catalog, for plan and live ---------------------------------------------------


def test_gpus_file_adds_a_card_to_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gpus = tmp_path / "gpus.toml"
    gpus.write_text(LAB_CARD)
    assert main(["plan", "cost", "--gpus-file", str(gpus), "--gpu", "lab-card", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["workload"]["gpu"] == "lab-card" and out["gpu_price_usd"] == 5000 and out["tdp_w"] == 300
    assert out["power_provenance"] == "modelled" and 0 < out["power_w"] <= 300
    bad = tmp_path / "bad.toml"
    bad.write_text("[gpu.x]\nname = 1\n")
    assert "--gpus-file" in one_line_error(capsys, "plan", "memory", "--gpus-file", str(bad))


def test_the_copied_plan_command_carries_the_gpus_file(tmp_path: Path) -> None:
    """A card the user file adds is unknown to a fresh shell: the command `y` copies must load the file."""
    gpus = tmp_path / "gpus.toml"
    gpus.write_text(LAB_CARD)
    load_user_gpus(gpus)
    inputs = PlanInputs(gpu="lab-card", gpu_price_usd=5000.0)
    argv = shlex.split(plan_command(inputs, gpus_file=str(gpus)))
    assert argv[:5] == ["gpuwatch", "plan", "cost", "--gpus-file", str(gpus)]
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    done = subprocess.run(
        [sys.executable, "-m", "gpuwatch", *argv[1:], "--json"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["workload"]["gpu"] == "lab-card"
    assert "--gpus-file" not in plan_command(inputs.with_(gpu="rtx4090"))


def test_gpus_file_prices_the_live_alternatives(tmp_path: Path) -> None:
    gpus = tmp_path / "gpus.toml"
    gpus.write_text(LAB_CARD)
    config = load_config(write(tmp_path, f'gpus_file = "{gpus}"\nalternatives = ["lab-card"]\n'))
    assert config.alternatives == ("lab-card",) and config.gpus_file == str(gpus)
