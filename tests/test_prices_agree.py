"""With default options, every face prices the same workload the same way (issue 10, "prices once").

Held through what a user runs: `gpuwatch plan … --json`, the real exporter (a subprocess on a free
loopback port, scraped over HTTP, stopped by its PID) and the real TUI panes (Pilot). No figure here is
computed by the test: each face is held against another.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Static
from tui_rack import show_pane, started

from gpuwatch.cli import build_parser, main
from gpuwatch.tui.formatting import rate, usd

ROOT = Path(__file__).resolve().parents[1]
WORKLOAD = ["--workload", "llama-3-8b:fp16:batch=8"]
PLAN_WORKLOAD = ["--model", "llama-3-8b", "--quant", "fp16", "--batch", "8", "--gpu", "rtx4090"]


@pytest.fixture(autouse=True)
def no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The defaults, not whatever config the machine running the tests has."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def plan(*argv: str) -> dict[str, Any]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["plan", *argv, "--json"]) == 0
    result: dict[str, Any] = json.loads(out.getvalue())
    return result


# --- the exporter ---------------------------------------------------------------------------------------


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[str]:
    """`gpuwatch exporter --sim rtx4090 --workload …` on a free loopback port; yields its /metrics URL."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gpuwatch",
            "exporter",
            "--sim",
            "rtx4090",
            *WORKLOAD,
            "--listen",
            "127.0.0.1:0",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # "gpuwatch exporter: serving http://127.0.0.1:PORT/ (...)"
        found = re.search(r"serving (https?://127\.0\.0\.1:\d+)/", line)
        assert found, line
        yield found.group(1) + "/metrics"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def scrape(url: str, name: str, timeout_s: float = 30.0) -> dict[str, float]:
    """Samples of one metric, by their label text, once the first assessment is published."""
    deadline = time.monotonic() + timeout_s
    while True:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
        samples = {
            m.group(1) or "": float(m.group(2))
            for m in re.finditer(rf"^{name}(\{{[^}}]*\}})? (\S+)$", body, re.MULTILINE)
        }
        if samples or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def test_the_exporter_prices_the_workload_as_plan_does(exporter: str) -> None:
    throughput = plan("throughput", *PLAN_WORKLOAD)
    cost = plan("cost", *PLAN_WORKLOAD)
    modelled = scrape(exporter, "gpuwatch_modelled_tokens_per_second")
    assert len(modelled) == 1
    assert next(iter(modelled.values())) == pytest.approx(throughput["decode_tokens_per_s"], rel=1e-9)

    usd_per_mtok = scrape(exporter, "gpuwatch_usd_per_million_tokens")
    by_basis = {re.search(r'basis="(\w+)"', k).group(1): v for k, v in usd_per_mtok.items()}  # type: ignore[union-attr]
    assert by_basis["projected"] == pytest.approx(cost["usd_per_mtok"], rel=1e-9)
    assert by_basis["cloud"] == pytest.approx(cost["cloud_usd_per_mtok"], rel=1e-9)

    hourly = scrape(exporter, "gpuwatch_cost_usd_per_hour")
    capex = [v for k, v in hourly.items() if 'component="capex"' in k]
    assert capex == [pytest.approx(cost["capex_usd_per_h"], rel=1e-9)]


# --- the TUI panes -------------------------------------------------------------------------------------


def text_of(widget: Static) -> str:
    return str(widget.render())


async def test_the_plan_and_cost_panes_start_from_the_workload_and_agree_with_plan_cost() -> None:
    from gpuwatch.commands import tui

    cost = plan("cost", *PLAN_WORKLOAD)
    app = tui.build_app(build_parser().parse_args(["--sim", "rtx4090", *WORKLOAD]))
    async with started(app, size=(120, 40)) as pilot:
        await pilot.press("3")
        summary = ""
        for _ in range(100):  # the first poll arrives from the session's thread
            await pilot.pause(0.1)
            summary = text_of(app.query_one("#cost-summary", Static))
            if "projected" in summary:
                break
        assert f"projected {usd(cost['usd_per_mtok'], digits=3)}" in summary
        assert f"cloud {usd(cost['cloud_usd_per_mtok'], digits=3)}" in summary
        assert f"model ceiling {rate(cost['decode_tokens_per_s'])}" in summary

        await show_pane(pilot, "4")  # the planner answers in a worker thread
        assert app.query_one("#plan-batch", Input).value == "8"  # the Plan pane starts from --workload
        shown = text_of(app.query_one("#plan-result", Static))
        assert f"own {usd(cost['usd_per_mtok'], digits=3)} at 70% utilisation" in shown
        assert f"cloud {usd(cost['cloud_usd_per_mtok'], digits=3)}" in shown
        assert f"decode   {rate(cost['decode_tokens_per_s'])}" in shown
