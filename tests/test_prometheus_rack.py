"""The rack client against a fake Prometheus HTTP API (auth, TLS, errors, hostile answers), and the rack
screen in Pilot on the snapshots it makes. The real-Prometheus test is tests/integration/test_rack_tui.py."""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import ssl
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gpuwatch.cli import build_parser, main
from gpuwatch.commands.rack import config_from_args
from gpuwatch.errors import UserError
from gpuwatch.telemetry.prometheus_match import parse_match
from gpuwatch.telemetry.prometheus_rack import (
    PrometheusConfig,
    PrometheusRack,
    RackAlert,
    RackGpu,
    RackSnapshot,
    sort_gpus,
)
from gpuwatch.tui.rack_view import HostScreen, RackApp

A, B, C = "10.0.0.1:9400", "10.0.0.2:9400", "10.0.0.3:9400"


def vector(*items: tuple[dict[str, str], float]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": labels, "value": [1700000000.5, str(value)]} for labels, value in items],
        },
    }


def gpu(metric: str, instance: str, index: str, value: float, **extra: str) -> tuple[dict[str, str], float]:
    return ({"__name__": metric, "instance": instance, "job": "gpuwatch", "gpu": index, **extra}, value)


def rack_answers(query: str) -> dict[str, Any]:
    """A rack of three hosts: A with one hot throttled GPU and an alert, B with two GPUs, C down."""
    if query.startswith("up{"):
        return vector(
            ({"__name__": "up", "instance": A, "job": "gpuwatch"}, 1),
            ({"__name__": "up", "instance": B, "job": "gpuwatch"}, 1),
            ({"__name__": "up", "instance": C, "job": "gpuwatch"}, 0),
        )
    if query.startswith("last_over_time"):
        info = "gpuwatch_gpu_info"
        return vector(
            gpu(info, A, "0", 1, uuid="GPU-a0", name="NVIDIA GeForce RTX 4090"),
            gpu(info, B, "0", 1, uuid="GPU-b0", name="NVIDIA H100 80GB HBM3"),
            gpu(info, B, "1", 1, uuid="GPU-b1", name="NVIDIA H100 80GB HBM3"),
            gpu(info, C, "0", 1, uuid="GPU-c0", name="NVIDIA L40S"),
        )
    if query.startswith("ALERTS"):
        return vector(
            (
                {
                    "__name__": "ALERTS",
                    "alertname": "GpuThermalThrottling",
                    "alertstate": "firing",
                    "severity": "warning",
                    "instance": A,
                    "job": "gpuwatch",
                    "gpu": "0",
                    "uuid": "GPU-a0",
                },
                1,
            ),
            (
                {
                    "__name__": "ALERTS",
                    "alertname": "GpuwatchExporterDown",
                    "alertstate": "firing",
                    "severity": "warning",
                    "instance": C,
                    "job": "gpuwatch",
                },
                1,
            ),
        )
    return vector(
        (
            {"__name__": "gpuwatch_last_successful_poll_timestamp_seconds", "instance": A, "job": "gpuwatch"},
            1699999999.5,
        ),
        (
            {"__name__": "gpuwatch_last_successful_poll_timestamp_seconds", "instance": B, "job": "gpuwatch"},
            1700000000.0,
        ),
        gpu("gpuwatch_temperature_celsius", A, "0", 88),
        gpu("gpuwatch_throttled", A, "0", 1),
        gpu("gpuwatch_clock_event_reason_active", A, "0", 1, reason="sw_thermal"),
        gpu("gpuwatch_clock_event_reason_active", A, "0", 0, reason="hw_slowdown"),
        gpu("gpuwatch_roofline_headroom_ratio", A, "0", 0.9),
        gpu("gpuwatch_usd_per_million_tokens", A, "0", 0.34, basis="live", provenance="modelled"),
        gpu("gpuwatch_usd_per_million_tokens", A, "0", 9.99, basis="cloud", provenance="configured"),
        gpu("gpuwatch_reading_supported", A, "0", 0, reading="fan_speed_ratio"),  # a passive card
        gpu("gpuwatch_reading_supported", A, "0", 1, reading="temperature_c"),
        gpu("gpuwatch_temperature_celsius", B, "0", 60),
        gpu("gpuwatch_throttled", B, "0", 0),
        gpu("gpuwatch_roofline_headroom_ratio", B, "0", 0.2),
        gpu("gpuwatch_usd_per_million_tokens", B, "0", 1.25, basis="live", provenance="measured"),
        gpu("gpuwatch_temperature_celsius", B, "1", 70),
        gpu("gpuwatch_throttled", B, "1", 0),
        gpu("gpuwatch_temperature_celsius", B, "2", float("nan")),  # never shown as a number
    )


class FakePrometheus:
    def __init__(self, answer: Any = rack_answers, *, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.required_auth: str | None = None
        self.queries: list[str] = []
        self.auth_seen: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                query = urllib.parse.parse_qs(body)["query"][0]
                outer.queries.append(query)
                outer.auth_seen.append(self.headers.get("Authorization"))
                if outer.required_auth and self.headers.get("Authorization") != outer.required_auth:
                    self._send(401, b'{"status":"error","error":"unauthorized"}')
                    return
                answer = outer.answer(query)
                self._send(200, answer if isinstance(answer, bytes) else json.dumps(answer).encode())

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def prom() -> Iterator[FakePrometheus]:
    p = FakePrometheus()
    yield p
    p.close()


def test_rack_snapshot_places_readings_alerts_and_down_hosts(prom: FakePrometheus) -> None:
    snap = PrometheusRack(PrometheusConfig(prom.url)).read()
    assert snap.error is None
    hosts = {h.instance: h for h in snap.hosts}
    assert set(hosts) == {A, B, C}
    a0 = hosts[A].gpus[0]
    assert (a0.name, a0.temperature_c, a0.throttle_reasons) == (
        "NVIDIA GeForce RTX 4090",
        88,
        ("sw_thermal",),
    )
    assert (a0.usd_per_mtok, a0.usd_per_mtok_provenance) == (0.34, "modelled")  # live, not the cloud basis
    assert [a.name for a in a0.alerts] == ["GpuThermalThrottling"]
    assert hosts[A].poll_age_s == pytest.approx(1.0)
    # the down host keeps its GPUs' identity, with no readings, and its host-wide alert
    c = hosts[C]
    assert not c.up and c.poll_age_s is None and [a.name for a in c.alerts] == ["GpuwatchExporterDown"]
    assert [(g.gpu, g.name, g.temperature_c) for g in c.gpus] == [("0", "NVIDIA L40S", None)]
    # NaN is not a reading
    assert {g.gpu: g.temperature_c for g in hosts[B].gpus} == {"0": 60, "1": 70, "2": None}
    # four queries per refresh whatever the rack's size, each restricted by the match
    assert len(prom.queries) == 4 and all('job=~"gpuwatch.*"' in q for q in prom.queries)


def test_sorts_put_unknown_figures_last() -> None:
    def g(i: str, **kw: Any) -> RackGpu:
        return RackGpu(instance="h", job="j", gpu=i, **kw)

    gpus = (
        g("0", temperature_c=50, throttled=0, usd_per_mtok=0.5, headroom_ratio=0.5),
        g("1", temperature_c=80, throttled=0, usd_per_mtok=None, headroom_ratio=0.9),
        g("2", temperature_c=None, throttled=None, usd_per_mtok=2.0, headroom_ratio=None),
        g("3", temperature_c=60, throttled=1, usd_per_mtok=0.1, headroom_ratio=0.1),
    )
    order = {by: [x.gpu for x in sort_gpus(gpus, by)] for by in ("hottest", "throttled", "cost", "headroom")}
    assert order == {
        "hottest": ["1", "3", "0", "2"],
        "throttled": ["3", "1", "0", "2"],
        "cost": ["2", "0", "3", "1"],
        "headroom": ["3", "0", "1", "2"],
    }


def args(*argv: str) -> Any:
    return build_parser().parse_args(list(argv))


def test_basic_auth_and_bearer_token_come_from_files(prom: FakePrometheus, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    prom.required_auth = "Basic " + base64.b64encode(b"ana:s3cret").decode()
    config = config_from_args(
        args("--prometheus", prom.url, "--prometheus-user", "ana", "--prometheus-password-file", str(secret))
    )
    assert PrometheusRack(config).read().error is None

    token = tmp_path / "token"
    token.write_text("tok-123")
    snap = PrometheusRack(
        config_from_args(args("--prometheus", prom.url, "--prometheus-bearer-token-file", str(token)))
    ).read()
    assert (
        snap.error is not None and "HTTP 401" in snap.error and "--prometheus-bearer-token-file" in snap.error
    )
    assert prom.auth_seen[-1] == "Bearer tok-123"
    prom.required_auth = "Bearer tok-123"
    assert (
        PrometheusRack(
            config_from_args(args("--prometheus", prom.url, "--prometheus-bearer-token-file", str(token)))
        )
        .read()
        .error
        is None
    )


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"<html>proxy error</html>", "not a Prometheus API answer"),
        ({"status": "error", "error": "parse error at char 3"}, "parse error at char 3"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "matrix"),
        (
            {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}},
            "not a Prometheus",
        ),
    ],
)
def test_a_broken_answer_is_an_error_on_screen_not_a_crash(answer: Any, message: str) -> None:
    p = FakePrometheus(lambda q: answer)
    try:
        snap = PrometheusRack(PrometheusConfig(p.url)).read()
    finally:
        p.close()
    assert snap.hosts == () and snap.error is not None and message in snap.error


def test_unreachable_prometheus_is_one_line() -> None:
    snap = PrometheusRack(PrometheusConfig("http://127.0.0.1:1", timeout_s=2)).read()
    assert snap.error is not None and "unreachable" in snap.error and "\n" not in snap.error


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('job="gpuwatch"', 'job="gpuwatch"'),
        ('{job=~"gpu.*", env!="dev"}', 'job=~"gpu.*",env!="dev"'),
        ('cluster="a,b"', 'cluster="a,b"'),
    ],
)
def test_match_accepts_label_matchers(text: str, expected: str) -> None:
    assert parse_match(text) == expected


@pytest.mark.parametrize(
    "text", ["gpuwatch", 'job="x"} or vector(1) {', "", 'job="unterminated', 'job="a" env="b"']
)
def test_match_refuses_anything_else_with_one_line(text: str) -> None:
    with pytest.raises(UserError, match="--match"):
        parse_match(text)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--prometheus", "localhost:9090"],
            "--prometheus = 'localhost:9090' is not allowed: expected the server's URL",
        ),
        (
            ["--prometheus", "http://127.0.0.1:9090", "--match", "up"],
            "--match = 'up' is not allowed: expected label",
        ),
        (["--prometheus", "http://127.0.0.1:9090", "--prometheus-ca", "/nonexistent.pem"], "no such file"),
        (
            ["--prometheus", "http://127.0.0.1:9090", "--prometheus-bearer-token-file", "/nonexistent"],
            "No such file",
        ),
        (
            ["--prometheus", "http://127.0.0.1:9090", "--prometheus-password-file", "/etc/hostname"],
            "needs --prometheus-user",
        ),
    ],
)
def test_bad_rack_options_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpuwatch: error: ") and message in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(d / "key.pem"),
            "-out",
            str(d / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return d / "cert.pem", d / "key.pem"


def test_tls_verifies_against_the_given_ca(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    p = FakePrometheus(tls=ctx)
    try:
        unverified = PrometheusRack(PrometheusConfig(p.url)).read()
        assert unverified.error is not None and "CERTIFICATE_VERIFY_FAILED" in unverified.error
        assert (
            PrometheusRack(config_from_args(args("--prometheus", p.url, "--prometheus-ca", str(cert))))
            .read()
            .error
            is None
        )
        assert (
            PrometheusRack(config_from_args(args("--prometheus", p.url, "--prometheus-insecure")))
            .read()
            .error
            is None
        )
    finally:
        p.close()


# -- the screen, on fabricated answers -------------------------------------------------------------------


def _rows(app: RackApp) -> list[list[str]]:
    from textual.widgets import DataTable

    table = app.query_one("#rack-table", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_screen_lines_sorting_down_hosts_and_errors(prom: FakePrometheus) -> None:
    from textual.widgets import Label, Static

    rack = PrometheusRack(PrometheusConfig(prom.url))
    answers: list[RackSnapshot] = [rack.read()]
    app = RackApp(lambda: answers[-1], source=prom.url, interval_s=3600)
    async with app.run_test(size=(200, 30)) as pilot:
        await pilot.pause(0.3)
        rows = _rows(app)
        assert [(r[0], r[1]) for r in rows] == [
            (A, "0"),
            (B, "1"),
            (B, "0"),
            (B, "2"),
            (C, "0"),
        ]  # hottest first
        assert (
            rows[0][7] == "sw_thermal" and "GpuThermalThrottling" in rows[0][-1] and rows[0][9] == "$0.34 mod"
        )
        assert rows[-1][3] == "DOWN" and "GpuwatchExporterDown" in rows[-1][-1]
        assert rows[3][3] == "n/a"  # the NaN temperature
        await pilot.press("3")
        await pilot.pause()
        assert [(r[0], r[1]) for r in _rows(app)][:2] == [(B, "0"), (A, "0")]  # highest $/1M tokens first
        await pilot.press("4")
        await pilot.pause()
        assert [(r[0], r[1]) for r in _rows(app)][:2] == [(B, "0"), (A, "0")]  # lowest headroom first
        await pilot.press("s")  # cycles back to hottest
        await pilot.pause()
        assert "hottest" in str(app.query_one("#rack-title", Label).render())
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert isinstance(app.screen, HostScreen) and app.screen.instance == A
        card = str(app.screen.query_one(".host-card", Static).render())
        assert "88 °C" in card and "sw_thermal" in card and "$0.34 mod" in card
        fan = next(line for line in card.splitlines() if line.startswith("fan"))
        power = next(line for line in card.splitlines() if line.startswith("power "))
        assert fan.endswith("not supported by this card") and power.endswith("n/a")  # unknown vs unsupported
        assert "GpuThermalThrottling (warning)" in card and "uuid=" not in card
        await pilot.press("escape")
        # host A's exporter answers but its readings stopped (the rules' GpuwatchStale fires): no figures
        first = answers[0]
        stale_alert = RackAlert("GpuwatchStale", "warning")
        hosts = tuple(
            dataclasses.replace(h, alerts=(*h.alerts, stale_alert)) if h.instance == A else h
            for h in first.hosts
        )
        answers.append(dataclasses.replace(first, hosts=hosts))
        await pilot.press("r")
        await pilot.pause(0.3)
        a_row = next(r for r in _rows(app) if r[0] == A)
        assert a_row[3] == "STALE" and set(a_row[4:12]) == {""} and "GpuwatchStale" in a_row[-1]
        assert next(r for r in _rows(app) if r[0] == B)[11] == "0 s ago"
        # Prometheus goes away: the error replaces the table, never the last answer
        answers.append(RackSnapshot(timestamp_s=0, error="Prometheus http://x unreachable: refused"))
        await pilot.press("r")
        await pilot.pause(0.3)
        assert _rows(app) == [] and "unreachable" in str(app.query_one("#rack-title", Label).render())


def test_lost_gpus_and_hosts_without_gpus_have_lines_of_their_own() -> None:
    from gpuwatch.telemetry.prometheus_rack import RackHost
    from gpuwatch.tui.rack_view import rack_rows

    lost = RackGpu(
        instance=A, job="gpuwatch", gpu="1", name="NVIDIA H100 80GB HBM3", up=0.0, temperature_c=None
    )
    fine = RackGpu(
        instance=A, job="gpuwatch", gpu="0", name="NVIDIA H100 80GB HBM3", up=1.0, temperature_c=50
    )
    snap = RackSnapshot(
        timestamp_s=0,
        hosts=(
            RackHost(A, "gpuwatch", up=True, poll_age_s=2.0, gpus=(fine, lost)),
            RackHost(B, "gpuwatch", up=True, poll_age_s=1.0),  # exporter up, no GPU series
            RackHost(C, "gpuwatch", up=False),  # down, never seen in the last hour
        ),
    )
    rows = {key: [str(c) for c in cells] for key, cells in rack_rows(snap, "hottest")}
    assert rows[f"{A}|gpuwatch|0"][3] == "50°C" and rows[f"{A}|gpuwatch|0"][11] == "2 s ago"
    assert rows[f"{A}|gpuwatch|1"][3] == "LOST" and set(rows[f"{A}|gpuwatch|1"][4:12]) == {""}
    assert rows[f"{B}|gpuwatch|"][3] == "no GPUs"
    assert rows[f"{C}|gpuwatch|"][3] == "DOWN"
    assert len(rows) == 4
