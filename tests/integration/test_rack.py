"""A simulated rack against a real Prometheus and Alertmanager (Debian's binaries), all on loopback.

Three `gpuwatch exporter --sim` processes are the hosts; one runs the failing-fan scenario at 30x
simulated time. Prometheus scrapes them every second with the repo's rule files, time-compressed 30x
(every `for:` and range window divided by 30, so a 5-minute rule holds for 10 s) and Alertmanager posts
to a webhook receiver in this test. The thermal-throttle alert must reach the webhook for exactly that
host and GPU and resolve once the host runs an idle scenario; every dashboard panel's and every rule's
PromQL must run against the live data; hostile requests must not crash an exporter or stall its polling.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuwatch.exporter.collector import METRIC_READINGS

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "grafana" / "rules").glob("*.yml"))
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
TIME_COMPRESSION = 30
WORKLOAD = "llama-3-8b:fp16:batch=8:context=4096"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        PROMETHEUS is None or ALERTMANAGER is None, reason="prometheus/alertmanager not installed"
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # not up yet
            last_error = exc
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last error: {last_error})")


# -- processes ---------------------------------------------------------------------------------------


@dataclass
class Processes:
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out = log.open("wb")
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)


@dataclass
class Exporter:
    name: str
    args: list[str]
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_exporter(procs: Processes, exporter: Exporter, tmp: Path, env: dict[str, str]) -> None:
    argv = [sys.executable, "-m", "gpuwatch", "exporter", "--listen", exporter.instance, *exporter.args]
    log = tmp / f"exporter-{exporter.name}.log"
    exporter.proc = procs.start(argv, log, env)
    wait_for(
        f"exporter {exporter.name} to serve ({log})", lambda: "gpuwatch_polls_total" in scrape(exporter), 60
    )


def scrape(exporter: Exporter) -> str:
    with urllib.request.urlopen(f"http://{exporter.instance}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def polls_total(exporter: Exporter) -> float:
    match = re.search(r"^gpuwatch_polls_total (\S+)$", scrape(exporter), re.M)
    assert match, "no gpuwatch_polls_total"
    return float(match.group(1))


# -- the webhook receiver ----------------------------------------------------------------------------


class Webhook:
    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.notifications.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def alerts(self, name: str, status: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                a
                for n in self.notifications
                for a in n["alerts"]
                if a["labels"].get("alertname") == name and a["status"] == status
            ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- rule time compression ---------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+)([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def compress(duration: str) -> str:
    seconds = sum(int(n) * _SECONDS[u] for n, u in _DURATION.findall(duration))
    return f"{max(1, round(seconds / TIME_COMPRESSION))}s"


def compress_expr(expr: str) -> str:
    return re.sub(
        r"\[(\d+[smhd])(?::(\d+[smhd]))?\]",
        lambda m: f"[{compress(m.group(1))}" + (f":{compress(m.group(2))}]" if m.group(2) else "]"),
        expr,
    )


def write_compressed_rules(out_dir: Path) -> list[Path]:
    paths = []
    for path in RULES:
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                rule["expr"] = compress_expr(rule["expr"])
                if "for" in rule:
                    rule["for"] = compress(rule["for"])
        target = out_dir / path.name
        target.write_text(yaml.safe_dump(doc))
        paths.append(target)
    return paths


def test_rule_time_compression() -> None:
    assert compress("5m") == "10s" and compress("6h") == "720s" and compress("1m") == "2s"
    assert compress_expr("max_over_time(x[1m]) < max_over_time(y[6h:5m])") == (
        "max_over_time(x[2s]) < max_over_time(y[720s:10s])"
    )


# -- the rack ----------------------------------------------------------------------------------------


@dataclass
class Rack:
    exporters: dict[str, Exporter]
    prometheus_url: str
    webhook: Webhook
    procs: Processes
    tmp: Path
    env: dict[str, str]

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


@pytest.fixture(scope="module")
def rack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rack]:
    tmp = tmp_path_factory.mktemp("rack")
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp / "config"), "HOME": str(tmp)}  # no user config
    procs = Processes()
    webhook = Webhook()
    prices = ["--server-capex", "6000", "--cloud-price", "2.0", "--workload", WORKLOAD]
    exporters = {
        "hot": Exporter(
            "hot", ["--sim", "rtx4090", "--scenario", "failing-fan", "--time-scale", "30", *prices], 0
        ),
        "h100": Exporter(
            "h100", ["--sim", "h100-sxm", "--scenario", "decode", "--faults", "xid:0:13@3", *prices], 0
        ),
        "pair": Exporter("pair", ["--sim", "2xrtx4090", "--scenario", "decode", *prices], 0),
    }
    try:
        for exporter in exporters.values():
            exporter.port = free_port()
            start_exporter(procs, exporter, tmp, env)

        am_port = free_port()
        (tmp / "alertmanager.yml").write_text(
            yaml.safe_dump(
                {
                    "route": {
                        "receiver": "test",
                        "group_by": ["alertname", "instance", "gpu"],
                        "group_wait": "1s",
                        "group_interval": "1s",
                        "repeat_interval": "1h",
                    },
                    "receivers": [
                        {"name": "test", "webhook_configs": [{"url": webhook.url, "send_resolved": True}]}
                    ],
                }
            )
        )
        assert ALERTMANAGER is not None and PROMETHEUS is not None
        procs.start(
            [
                ALERTMANAGER,
                f"--config.file={tmp / 'alertmanager.yml'}",
                f"--storage.path={tmp / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            ],
            tmp / "alertmanager.log",
        )
        rules = write_compressed_rules(tmp)
        prom_port = free_port()
        (tmp / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {
                        "scrape_interval": "1s",
                        "evaluation_interval": "1s",
                        "scrape_timeout": "900ms",
                    },
                    "rule_files": [str(p) for p in rules],
                    "alerting": {
                        "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
                    },
                    "scrape_configs": [
                        {
                            "job_name": "gpuwatch",
                            "static_configs": [{"targets": [e.instance for e in exporters.values()]}],
                        }
                    ],
                }
            )
        )
        procs.start(
            [
                PROMETHEUS,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            tmp / "prometheus.log",
        )
        rack = Rack(exporters, f"http://127.0.0.1:{prom_port}", webhook, procs, tmp, env)
        wait_for(
            "Prometheus to scrape all exporters",
            lambda: len(rack.query('up{job="gpuwatch"} == 1')) == len(exporters),
            60,
        )
        yield rack
    finally:
        procs.stop_all()
        webhook.close()


def thermal_alerts(rack: Rack, status: str) -> list[dict[str, Any]]:
    return rack.webhook.alerts("GpuThermalThrottling", status)


def test_thermal_throttle_alert_fires_for_exactly_the_hot_host_and_gpu(rack: Rack) -> None:
    hot = rack.exporters["hot"]
    firing = wait_for("GpuThermalThrottling to reach the webhook", lambda: thermal_alerts(rack, "firing"), 90)
    assert {(a["labels"]["instance"], a["labels"]["gpu"]) for a in firing} == {(hot.instance, "0")}
    alert = firing[0]
    assert alert["labels"]["severity"] == "warning"
    assert hot.instance in alert["annotations"]["summary"] and "GPU 0" in alert["annotations"]["summary"]
    assert "Reason:" in alert["annotations"]["description"] and alert["annotations"]["runbook"]
    # Prometheus agrees: no other host or GPU is throttling thermally
    active = rack.query('ALERTS{alertname="GpuThermalThrottling"}')
    assert {(s["metric"]["instance"], s["metric"]["gpu"]) for s in active} == {(hot.instance, "0")}


def dashboard_expressions() -> list[tuple[str, str, str]]:
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                out.append(
                    (path.name, f"variable {var['name']}", var["definition"].replace("label_values(", "("))
                )
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                out.append((path.name, panel["title"], target["expr"]))
    return out


def substitute(expr: str) -> str:
    expr = re.sub(r"^\((.*), \w+\)$", r"\1", expr)  # label_values(selector, label) -> selector
    return (
        expr.replace("$__rate_interval", "10s")
        .replace("$__interval", "2s")
        .replace("$instance", ".*")
        .replace("$gpu", ".*")
    )


def test_every_dashboard_panel_query_returns_data(rack: Rack) -> None:
    wait_for("an H100 XID to be recorded", lambda: rack.query("gpuwatch_xid_errors_total > 0"), 30)
    time.sleep(3)  # a few samples for rate() windows
    empty = [
        (board, title, expr)
        for board, title, expr in dashboard_expressions()
        if not rack.query(substitute(expr))
    ]
    assert empty == []
    assert len(dashboard_expressions()) > 40


def test_every_rule_expression_runs_and_reads_series_that_exist(rack: Rack) -> None:
    missing = []
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                rack.query(compress_expr(rule["expr"]))  # valid PromQL, evaluates without error
                for metric in sorted(set(re.findall(r"\b(gpuwatch_[a-z0-9_]+|up)\b", rule["expr"]))):
                    if rack.query(f"count({metric})"):
                        continue
                    readings = "|".join(METRIC_READINGS.get(metric, ()))
                    # allowed only where every GPU in the rack says it cannot give this reading (the
                    # exporter lists only the readings a card lacks, as 0)
                    lacking = readings and rack.query(
                        "count(count by (instance, gpu) "
                        f'(gpuwatch_reading_supported{{reading=~"{readings}"}} == 0))'
                    )
                    gpus = rack.query("count(gpuwatch_gpu_up == 1)")
                    if not lacking or float(lacking[0]["value"][1]) < float(gpus[0]["value"][1]):
                        missing.append((rule["alert"], metric))
    assert missing == []


def test_hostile_requests_neither_crash_the_exporter_nor_stall_polling(rack: Rack) -> None:
    pair = rack.exporters["pair"]
    before = polls_total(pair)

    def request(path: str, headers: dict[str, str]) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", pair.port, timeout=15)
        try:
            conn.request("GET", path, headers=headers)
            return conn.getresponse().status
        finally:
            conn.close()

    assert request("/metrics", {"X-Huge": "x" * 200_000}) == 431
    assert request("/" + "a" * 100_000, {}) == 414
    assert request("/admin/../../etc/passwd", {}) == 404
    with socket.create_connection(("127.0.0.1", pair.port), timeout=5) as idle:  # a client that says nothing
        with ThreadPoolExecutor(max_workers=50) as pool:
            statuses = list(pool.map(lambda _: request("/metrics", {}), range(50)))
        idle.sendall(b"GET / HTTP/1.1\r\n")  # ... and never finishes its request
    assert statuses == [200] * 50
    assert pair.proc is not None and pair.proc.poll() is None
    wait_for("polling to go on", lambda: polls_total(pair) >= before + 3, 15)
    assert rack.query(f'up{{instance="{pair.instance}"}} == 1')


def test_thermal_alert_resolves_when_the_host_goes_idle(rack: Rack) -> None:
    hot = rack.exporters["hot"]
    wait_for("GpuThermalThrottling to fire first", lambda: thermal_alerts(rack, "firing"), 90)
    assert hot.proc is not None
    rack.procs.stop(hot.proc)
    # the same host (same port, same instance label) comes back running an idle scenario
    hot.args = [a if a != "failing-fan" else "idle" for a in hot.args]
    start_exporter(rack.procs, hot, rack.tmp, rack.env)
    resolved = wait_for("GpuThermalThrottling to resolve", lambda: thermal_alerts(rack, "resolved"), 60)
    assert {(a["labels"]["instance"], a["labels"]["gpu"]) for a in resolved} == {(hot.instance, "0")}
    assert rack.query('ALERTS{alertname="GpuThermalThrottling", alertstate="firing"}') == []
