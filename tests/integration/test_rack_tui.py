"""`gpuwatch --prometheus URL` against a real Prometheus scraping three simulated exporters.

The rack view reads Prometheus alone: the exporters' ports are never given to it. One host runs the
failing-fan scenario at 30x simulated time, and Prometheus evaluates the repository's rule files
time-compressed 30x (as in test_rack.py), so GpuThermalThrottling fires within a minute. The TUI runs
in Textual's Pilot and in a real terminal (tmux); both must show the three hosts' GPUs on one screen
with the firing alert beside the failing-fan host's GPU, and a host whose exporter stops as DOWN.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from test_rack import Exporter, Processes, free_port, start_exporter, wait_for, write_compressed_rules

from gpuwatch.telemetry.prometheus_rack import PrometheusConfig, PrometheusRack, RackSnapshot
from gpuwatch.tui.rack_view import HostScreen, RackApp

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus")
WORKLOAD = "llama-3-8b:fp16:batch=8:context=4096"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed"),
]


@dataclass
class PromRack:
    exporters: dict[str, Exporter]
    url: str
    procs: Processes

    def read(self) -> RackSnapshot:
        return PrometheusRack(PrometheusConfig(self.url)).read()


def hot_alert_firing(rack: PromRack) -> RackSnapshot | None:
    snap = rack.read()
    hot = rack.exporters["hot"].instance
    for g in snap.gpus:
        if g.instance == hot and any(a.name == "GpuThermalThrottling" for a in g.alerts):
            return snap
    return None


@pytest.fixture(scope="module")
def prom_rack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PromRack]:
    tmp = tmp_path_factory.mktemp("promrack")
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp / "config"), "HOME": str(tmp), "PYTHONPATH": str(ROOT)}
    procs = Processes()
    prices = ["--server-capex", "6000", "--cloud-price", "2.0", "--workload", WORKLOAD]
    exporters = {
        "hot": Exporter(
            "hot", ["--sim", "rtx4090", "--scenario", "failing-fan", "--time-scale", "30", *prices], 0
        ),
        "h100": Exporter("h100", ["--sim", "h100-sxm", "--scenario", "decode", *prices], 0),
        "pair": Exporter("pair", ["--sim", "2xrtx4090", "--scenario", "decode", *prices], 0),
    }
    try:
        for exporter in exporters.values():
            exporter.port = free_port()
            start_exporter(procs, exporter, tmp, env)
        rules = write_compressed_rules(tmp)
        port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
            "rule_files": [str(p) for p in rules],
            "scrape_configs": [
                {
                    "job_name": "gpuwatch",
                    "static_configs": [{"targets": [e.instance for e in exporters.values()]}],
                }
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        assert PROMETHEUS is not None
        procs.start(
            [
                PROMETHEUS,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            tmp / "prometheus.log",
        )
        rack = PromRack(exporters, f"http://127.0.0.1:{port}", procs)
        wait_for(
            "Prometheus to scrape the three exporters", lambda: sum(h.up for h in rack.read().hosts) == 3, 60
        )
        wait_for("GpuThermalThrottling to fire for the failing-fan host", lambda: hot_alert_firing(rack), 120)
        yield rack
    finally:
        procs.stop_all()


def test_the_client_reads_every_host_and_gpu_with_the_alert_beside_the_hot_gpu(prom_rack: PromRack) -> None:
    snap = prom_rack.read()
    assert snap.error is None
    by_instance = {h.instance: h for h in snap.hosts}
    assert set(by_instance) == {e.instance for e in prom_rack.exporters.values()}
    hot = by_instance[prom_rack.exporters["hot"].instance]
    pair = by_instance[prom_rack.exporters["pair"].instance]
    h100 = by_instance[prom_rack.exporters["h100"].instance]
    assert [g.name for g in hot.gpus] == ["NVIDIA GeForce RTX 4090"]
    assert [g.gpu for g in pair.gpus] == ["0", "1"]
    assert h100.gpus[0].name and "H100" in h100.gpus[0].name
    g = hot.gpus[0]
    assert {a.name for a in g.alerts} >= {"GpuThermalThrottling"}
    assert g.throttled == 1.0 and "sw_thermal" in g.throttle_reasons
    assert g.temperature_c is not None and g.temperature_c > 80
    # the other hosts' GPUs have no thermal alert
    assert not [a for h in (pair, h100) for x in h.gpus for a in x.alerts if a.name == "GpuThermalThrottling"]
    # $/1M tokens from the exporters, with the provenance they published
    assert all(x.usd_per_mtok is not None and x.usd_per_mtok_provenance for x in (*pair.gpus, *h100.gpus))
    assert all(h.poll_age_s is not None and h.poll_age_s < 10 for h in snap.hosts)


def _capture(server: str, session: str) -> str:
    return subprocess.run(
        ["tmux", "-L", server, "capture-pane", "-t", session, "-p"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_gpuwatch_prometheus_in_tmux_shows_the_rack_on_one_screen(
    prom_rack: PromRack, tmp_path: Path
) -> None:
    server = f"gpuwatch-rack-{uuid.uuid4().hex[:8]}"  # own tmux server: our environment, no one else's
    session = "rack"
    exit_file = tmp_path / "exit"
    command = (
        f"sleep 1; cd {ROOT} && PYTHONPATH={ROOT} HOME={tmp_path} {sys.executable} -m gpuwatch "
        f"--prometheus {prom_rack.url} --interval 1; echo $? > {exit_file}"
    )
    subprocess.run(
        [
            "tmux",
            "-L",
            server,
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "200",
            "-y",
            "40",
            command,
        ],
        check=True,
    )
    try:
        hot = prom_rack.exporters["hot"].instance
        screen = ""
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            screen = _capture(server, session)
            if "3 host(s), 4 GPU(s)" in screen and "GpuThermalThrottling" in screen:
                break
            time.sleep(0.5)
        (tmp_path / "screen.txt").write_text(screen)
        assert "3 host(s), 4 GPU(s), 0 down" in screen, screen
        for exporter in prom_rack.exporters.values():
            assert exporter.instance in screen
        hot_lines = [line for line in screen.splitlines() if hot in line]
        assert (
            len(hot_lines) == 1 and "RTX 4090" in hot_lines[0] and "GpuThermalThrottling" in hot_lines[0]
        ), screen
        assert "H100" in screen
        subprocess.run(["tmux", "-L", server, "send-keys", "-t", session, "q"], check=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not exit_file.exists():
            time.sleep(0.2)
        assert exit_file.exists() and exit_file.read_text().strip() == "0"
    finally:
        subprocess.run(["tmux", "-L", server, "kill-server"], capture_output=True, check=False)


def _cells(app: RackApp) -> list[list[str]]:
    from textual.widgets import DataTable

    table = app.query_one("#rack-table", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_pilot_rack_sorts_opens_a_host_and_shows_a_stopped_exporter_as_down(
    prom_rack: PromRack,
) -> None:
    from textual.widgets import DataTable, Label

    app = RackApp(prom_rack.read, source=prom_rack.url, interval_s=1.0)
    hot = prom_rack.exporters["hot"].instance
    async with app.run_test(size=(200, 40)) as pilot:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(_cells(app)) < 4:
            await pilot.pause(0.3)
        rows = _cells(app)
        assert len(rows) == 4
        assert {r[0] for r in rows} == {e.instance for e in prom_rack.exporters.values()}
        # hottest first: the failing fan's card leads, with its alert in the same line
        assert rows[0][0] == hot and "GpuThermalThrottling" in rows[0][-1]
        await pilot.press("4")  # lowest headroom first
        await pilot.pause()
        assert "lowest headroom" in str(app.query_one("#rack-title", Label).render())
        await pilot.press("1")
        await pilot.pause()
        table = app.query_one("#rack-table", DataTable)
        table.move_cursor(row=0)
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert isinstance(app.screen, HostScreen) and app.screen.instance == hot
        assert hot in str(app.screen.query_one("#host-title", Label).render())
        card = "".join(str(s.render()) for s in app.screen.query(".host-card"))
        assert "RTX 4090" in card and "GpuThermalThrottling" in card and "sw_thermal" in card
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HostScreen)

        pair = prom_rack.exporters["pair"]
        assert pair.proc is not None
        Processes.stop(pair.proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            await pilot.pause(0.5)
            down = [r for r in _cells(app) if r[0] == pair.instance]
            if down and all("DOWN" in r[3] for r in down):
                break
        down = [r for r in _cells(app) if r[0] == pair.instance]
        assert len(down) == 2 and all(r[3] == "DOWN" for r in down), _cells(app)
        assert "1 down" in str(app.query_one("#rack-title", Label).render())
        # the rule's `for:` (compressed) passes, and the host-wide alert shows beside the host's GPUs
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all("GpuwatchExporterDown" in r[-1] for r in _cells(app) if r[0] == pair.instance):
                break
            await pilot.pause(0.5)
        down = [r for r in _cells(app) if r[0] == pair.instance]
        assert all("GpuwatchExporterDown" in r[-1] for r in down), down
