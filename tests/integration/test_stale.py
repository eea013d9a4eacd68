"""NVML hung on ONE GPU of a simulated host, under a real Prometheus with the repo's rules (Debian's binary).

The simulated NVML's fault ``slow:0:30000@T-E`` makes every call on GPU 0 hang from simulated second T
until E, when the hung call returns. The exporter must publish GPU 0 as stale (gpu_up 0, readings
withheld) and GPU 1 as fresh; Prometheus, with the rules time-compressed as in test_rack.py, must fire
GpuwatchGpuStale for GPU 0 only, never GpuLost, and resolve it by itself after the hang ends.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from gpuwatch.errors import UserError
from gpuwatch.telemetry.simulated.faults import parse_faults

PROMETHEUS = shutil.which("prometheus")
HANG_FROM_S, HANG_UNTIL_S = 8, 30
FAULT = f"slow:0:30000@{HANG_FROM_S}-{HANG_UNTIL_S}"


def _fault_windows() -> bool:
    try:
        parse_faults(FAULT)
    except UserError:
        return False
    return True


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed"),
    pytest.mark.skipif(not _fault_windows(), reason="the simulated NVML's faults have no end time yet"),
]

rack = pytest.importorskip("test_rack")  # the rule time compression and helpers, shared


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("stale")
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp / "config"), "HOME": str(tmp)}
    procs = rack.Processes()
    port, prom_port = rack.free_port(), rack.free_port()
    try:
        argv = [sys.executable, "-m", "gpuwatch", "exporter", "--sim", "2xrtx4090", "--interval", "1"]
        argv += ["--faults", FAULT, "--listen", f"127.0.0.1:{port}"]
        started = time.monotonic()
        exporter = procs.start(argv, tmp / "exporter.log", env)
        rules = rack.write_compressed_rules(tmp)
        (tmp / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {
                        "scrape_interval": "1s",
                        "evaluation_interval": "1s",
                        "scrape_timeout": "900ms",
                    },
                    "rule_files": [str(p) for p in rules],
                    "scrape_configs": [
                        {"job_name": "gpuwatch", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                    ],
                }
            )
        )
        assert PROMETHEUS is not None
        procs.start(
            [
                PROMETHEUS,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            tmp / "prometheus.log",
        )
        yield {
            "prometheus": f"http://127.0.0.1:{prom_port}",
            "started": started,
            "exporter": exporter,
            "tmp": tmp,
        }
    finally:
        procs.stop_all()


def query(host: dict[str, Any], expr: str) -> list[dict[str, Any]]:
    url = f"{host['prometheus']}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def firing(host: dict[str, Any]) -> set[tuple[str, str]]:
    with urllib.request.urlopen(f"{host['prometheus']}/api/v1/alerts", timeout=10) as resp:
        alerts = json.loads(resp.read())["data"]["alerts"]
    return {(a["labels"]["alertname"], a["labels"].get("gpu", "")) for a in alerts if a["state"] == "firing"}


def values(host: dict[str, Any], expr: str) -> dict[str, float]:
    return {r["metric"].get("gpu", ""): float(r["value"][1]) for r in query(host, expr)}


def test_one_hung_gpu_fires_the_stale_alert_for_that_gpu_only_and_it_resolves_by_itself(
    host: dict[str, Any],
) -> None:
    seen: set[tuple[str, str]] = set()
    during: dict[str, dict[str, float]] = {}
    resolved_after_firing = False
    deadline = time.monotonic() + HANG_UNTIL_S + 60
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            now = firing(host)
        except OSError:
            continue  # Prometheus still starting
        seen |= now
        if ("GpuwatchGpuStale", "0") in now and not during:
            during = {
                "up": values(host, "gpuwatch_gpu_up"),
                "stale": values(host, "gpuwatch_gpu_stale"),
                "temperature": values(host, "gpuwatch_temperature_celsius"),
            }
        if during and ("GpuwatchGpuStale", "0") not in now:
            resolved_after_firing = True
            break
    log = (host["tmp"] / "exporter.log").read_text()[-2000:]
    assert during, f"GpuwatchGpuStale never fired for GPU 0; firing seen: {sorted(seen)}; exporter: {log}"
    # while it hangs: GPU 0 down and stale with no readings passed off as current, GPU 1 fresh
    assert during["up"] == {"0": 0.0, "1": 1.0} and during["stale"] == {"0": 1.0, "1": 0.0}
    assert set(during["temperature"]) == {"1"}
    stale_alerts = {gpu for name, gpu in seen if name == "GpuwatchGpuStale"}
    assert stale_alerts == {"0"}, seen
    assert not any(name in ("GpuLost", "GpuwatchStale", "GpuwatchExporterDown") for name, _ in seen), seen
    assert resolved_after_firing, f"GpuwatchGpuStale still firing {HANG_UNTIL_S + 60} s in: {sorted(seen)}"
    # and everything reads again, by itself
    time.sleep(2)
    assert values(host, "gpuwatch_gpu_up") == {"0": 1.0, "1": 1.0}
    assert set(values(host, "gpuwatch_temperature_celsius")) == {"0", "1"}
    assert host["exporter"].poll() is None  # never restarted by hand
