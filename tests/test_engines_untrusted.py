"""Serving engines are untrusted input: resets, impossible values, dead, garbage and trickling
endpoints, stale measurements, and one bad engine next to a simulated card (through the real exporter)."""

from __future__ import annotations

import http.server
import logging
import os
import re
import shutil
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from gpuwatch.exporter.collector import GpuwatchCollector
from gpuwatch.telemetry.engines import EngineReading, EngineWatcher, error_kind, parse_engine_metrics

ROOT = Path(__file__).resolve().parents[1]


def vllm_text(generation_total: float, prompt_total: float = 5000.0, running: float = 4.0) -> str:
    return (
        "# TYPE vllm:num_requests_running gauge\n"
        f'vllm:num_requests_running{{model_name="m"}} {running}\n'
        "# TYPE vllm:generation_tokens counter\n"
        f'vllm:generation_tokens_total{{model_name="m"}} {generation_total}\n'
        "# TYPE vllm:prompt_tokens counter\n"
        f'vllm:prompt_tokens_total{{model_name="m"}} {prompt_total}\n'
    )


def two_scrapes(first: float, second: float, dt_s: float = 2.0, **kw: float) -> EngineReading:
    a = parse_engine_metrics(vllm_text(first), "u", None, 1000.0)
    assert a.error is None
    return parse_engine_metrics(vllm_text(second), "u", a, 1000.0 + dt_s, **kw)


# -- values ----------------------------------------------------------------------------------------


def test_a_counter_that_goes_down_is_a_restart_rated_from_zero_and_then_from_the_new_baseline() -> None:
    first = parse_engine_metrics(vllm_text(50_000), "u", None, 1000.0)
    reset = parse_engine_metrics(vllm_text(300), "u", first, 1002.0)
    assert reset.error is None and reset.counter_reset
    assert reset.generation_tokens_per_s == pytest.approx(150.0)  # 300 since the restart, over 2 s
    after = parse_engine_metrics(vllm_text(700), "u", reset, 1004.0)
    assert after.generation_tokens_per_s == pytest.approx(200.0) and not after.counter_reset


@pytest.mark.parametrize(
    ("second", "why"),
    [
        (-200.0, "negative"),  # garbage below zero: was a negative tokens/s published as measured
        (float("inf"), "inf"),
        (float("nan"), "nan"),
        (1e308, "2**53"),  # was ~5e307 tokens/s "measured"
    ],
)
def test_impossible_counter_values_are_rejected_with_the_reason(second: float, why: str) -> None:
    reading = two_scrapes(100.0, second)
    assert reading.generation_tokens_per_s is None and reading.prompt_tokens_per_s is None
    assert reading.error is not None and reading.error.startswith("rejected: ")
    assert why in reading.error and "vllm:generation_tokens_total" in reading.error
    assert error_kind(reading.error) == "implausible"


def test_a_negative_gauge_is_rejected() -> None:
    reading = parse_engine_metrics(vllm_text(10, running=-3), "u", None, 1.0)
    assert reading.error is not None and "vllm:num_requests_running is negative" in reading.error


def test_a_rate_beyond_the_cards_roofline_is_rejected_and_a_plausible_one_kept() -> None:
    too_fast = two_scrapes(0.0, 2e6, max_tokens_per_s=1e5)  # 1 M tokens/s against a 100 k ceiling
    assert too_fast.generation_tokens_per_s is None
    assert too_fast.error is not None and "beyond the 1e+05 tokens/s" in too_fast.error
    fine = two_scrapes(0.0, 2e4, max_tokens_per_s=1e5)
    assert fine.error is None and fine.generation_tokens_per_s == pytest.approx(1e4)


def test_the_live_session_tells_the_watcher_the_ceiling_of_the_cards() -> None:
    from gpuwatch.live.config import LiveConfig
    from gpuwatch.live.session import LiveSession
    from gpuwatch.telemetry.sources import open_source

    source = open_source(
        sim="rtx4090", scenario=None, time_scale=1.0, seed=0, replay=None, replay_speed=1.0, interval_s=0.2
    )
    watcher = EngineWatcher(["http://127.0.0.1:9/metrics"], fetch=lambda u, t: vllm_text(0))
    session = LiveSession(source, LiveConfig(), watcher)
    session.start()
    try:
        deadline = time.monotonic() + 10
        while session.latest() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        session.stop()
    ceiling = watcher.ceiling_tokens_per_s
    # an RTX 4090's highest dense peak (~660 TFLOP/s fp8) over 2 x 100 M params, x4: a few 1e7
    assert ceiling is not None and 1e6 < ceiling < 1e8


# -- endpoints -------------------------------------------------------------------------------------


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


@pytest.fixture
def endpoint() -> Iterator[tuple[str, dict[str, Callable[[http.server.BaseHTTPRequestHandler], None]]]]:
    """A loopback engine whose behaviour the test sets in ``handlers["GET"]``."""
    handlers: dict[str, Callable[[http.server.BaseHTTPRequestHandler], None]] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            handlers["GET"](self)

        def log_message(self, *args: object) -> None:
            pass

    httpd = _Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/metrics", handlers
    finally:
        httpd.shutdown()
        httpd.server_close()


def _trickle(h: http.server.BaseHTTPRequestHandler) -> None:
    body = vllm_text(100).encode()
    h.send_response(200)
    h.send_header("Content-Type", "text/plain")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    try:
        for i in range(0, len(body), 8):  # 8 bytes every 0.1 s: each read is quick, the whole (3 s) is not
            h.wfile.write(body[i : i + 8])
            h.wfile.flush()
            time.sleep(0.1)
    except OSError:
        pass  # the client gave up, as it should


def test_a_trickling_engine_is_cut_off_at_the_deadline_for_the_whole_answer(endpoint: tuple) -> None:
    url, handlers = endpoint
    handlers["GET"] = _trickle
    watcher = EngineWatcher([url], timeout_s=0.5)
    started = time.monotonic()
    reading = watcher.scrape_once(url, None)
    elapsed = time.monotonic() - started
    assert elapsed < 2.5, f"the trickle held the scrape for {elapsed:.1f} s"
    assert reading.error is not None and "timed out after 0.5 s" in reading.error
    assert error_kind(reading.error) == "timeout"


def test_a_dead_engine_is_reported_in_its_state_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    with socketserver.TCPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler) as probe:
        port = probe.server_address[1]
    url = f"http://127.0.0.1:{port}/metrics"  # nothing listens there now
    watcher = EngineWatcher([url], interval_s=0.05)
    with caplog.at_level(logging.WARNING, logger="gpuwatch.telemetry.engines"):
        watcher.start()
        try:
            deadline = time.monotonic() + 10
            while watcher.states()[0].scrapes < 4 and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            watcher.stop()
    (state,) = watcher.states()
    assert not state.up and state.last_success_s is None
    assert state.last_error == "connection refused" and error_kind(state.last_error) == "refused"
    assert state.scrape_duration_s is not None and state.scrape_duration_s < 1.0
    assert sum("connection refused" in r.getMessage() for r in caplog.records) == 1


def test_garbage_is_reported_and_an_engine_that_answers_again_is_up(endpoint: tuple) -> None:
    url, handlers = endpoint
    answer = {"body": b"\x00\xff{{not metrics at all"}

    def serve(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(answer["body"])))
        h.end_headers()
        h.wfile.write(answer["body"])

    handlers["GET"] = serve
    watcher = EngineWatcher([url], interval_s=0.05)
    watcher.start()
    try:
        deadline = time.monotonic() + 10
        while watcher.states()[0].scrapes < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        garbage = watcher.states()[0]
        answer["body"] = vllm_text(100).encode()
        while not watcher.states()[0].up and time.monotonic() < deadline:
            time.sleep(0.02)
        good = watcher.states()[0]
    finally:
        watcher.stop()
    assert not garbage.up and error_kind(garbage.last_error) in ("not_metrics", "unknown_engine")
    assert good.up and good.engine == "vllm" and good.last_success_s is not None


def test_a_measurement_older_than_the_bound_is_no_longer_measured() -> None:
    release = threading.Event()
    calls = []

    def fetch(url: str, timeout_s: float) -> str:
        calls.append(url)
        if len(calls) > 2:
            release.wait(10)  # the engine stops answering (a trickle the deadline has not yet cut)
        return vllm_text(100.0 * len(calls))

    watcher = EngineWatcher(["http://e/metrics"], interval_s=0.05, fetch=fetch, stale_after_s=0.5)
    watcher.start()
    try:
        deadline = time.monotonic() + 10
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        (measured,) = watcher.latest()
        time.sleep(0.8)
        (stale,) = watcher.latest()
        (state,) = watcher.states()
    finally:
        release.set()
        watcher.stop()
    assert measured.error is None and measured.generation_tokens_per_s is not None
    assert stale.generation_tokens_per_s is None
    assert stale.error is not None and stale.error.startswith("stale: no answer for")
    assert not state.up and error_kind(state.last_error) == "stale"


def test_engine_state_is_exported_per_url() -> None:
    watcher = EngineWatcher(["http://a/metrics", "http://b/metrics"], interval_s=0.05)
    watcher._fetch = lambda url, t: vllm_text(10) if "//a/" in url else (_ for _ in ()).throw(OSError("boom"))

    class Session:
        engines = watcher

        def latest(self) -> None:
            return None

        def add_listener(self, fn: object) -> None:
            pass

    watcher.start()
    try:
        deadline = time.monotonic() + 10
        while any(s.scrapes < 1 for s in watcher.states()) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        watcher.stop()
    collector = GpuwatchCollector(Session())  # type: ignore[arg-type]
    got = {(s.name, s.labels.get("url")): s for fam in collector.collect() for s in fam.samples}
    assert got[("gpuwatch_engine_up", "http://a/metrics")].value == 1.0
    assert got[("gpuwatch_engine_up", "http://b/metrics")].value == 0.0
    assert ("gpuwatch_engine_last_success_timestamp_seconds", "http://a/metrics") in got
    assert ("gpuwatch_engine_last_success_timestamp_seconds", "http://b/metrics") not in got
    assert 0 <= got[("gpuwatch_engine_scrape_duration_seconds", "http://b/metrics")].value < 1
    assert got[("gpuwatch_engine_info", "http://b/metrics")].labels["reason"] == "other"
    assert got[("gpuwatch_engine_info", "http://a/metrics")].labels["reason"] == "ok"
    if shutil.which("promtool"):  # the names and types follow Prometheus' conventions
        registry = CollectorRegistry(support_collectors_without_names=True)
        registry.register(collector)
        done = subprocess.run(
            ["promtool", "check", "metrics"], input=generate_latest(registry), capture_output=True, timeout=30
        )
        assert done.returncode == 0, done.stdout + done.stderr


# -- one bad engine next to a simulated card, through the real exporter -------------------------------


def _scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


@pytest.mark.slow
def test_an_engine_with_a_decreasing_counter_does_not_freeze_the_exporter(
    endpoint: tuple, tmp_path: Path
) -> None:
    url, handlers = endpoint
    served = [0]

    def decreasing(h: http.server.BaseHTTPRequestHandler) -> None:
        served[0] += 1
        body = vllm_text(1000.0 - 400.0 * served[0]).encode()  # 600, 200, -200, -600, ...
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    handlers["GET"] = decreasing
    config = tmp_path / "gpuwatch.toml"
    config.write_text("")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "gpuwatch", "exporter", "--sim", "rtx4090", "--time-scale", "5"]
    cmd += ["--engine", url, "--interval", "0.2", "--listen", "127.0.0.1:0", "--config", str(config)]
    cmd += ["--workload", "llama-3-8b:fp16:batch=8:context=4096"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
        reader.start()
        deadline = time.monotonic() + 30
        while not any("serving" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
        match = re.search(r"serving (http://\S+)", "".join(lines))
        assert match, lines
        metrics = match.group(1)
        polls, temps, ups = [], [], []
        deadline = time.monotonic() + 30
        # (NVML's child takes a moment to start: wait for polls, then for five more with the engine bad)
        while time.monotonic() < deadline and (not polls or polls[-1] < 10 or served[0] < 5):
            got = _scrape(metrics)
            polls.append(got.get("gpuwatch_polls_total", [({}, 0.0)])[0][1])
            temps.append(
                got["gpuwatch_temperature_celsius"][0][1] if "gpuwatch_temperature_celsius" in got else None
            )
            ups.append(got.get("gpuwatch_engine_up", [({}, -1.0)])[0][1])
            time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        reader.join(timeout=5)
    err = "".join(lines)
    assert served[0] >= 5, "the engine was scraped into its negative values"
    assert polls[-1] >= 10, f"gpuwatch_polls_total stuck: {polls}"
    assert len({t for t in temps if t is not None}) > 1, f"temperatures frozen: {temps}"
    assert ups[-1] == 0.0  # the negative counter is rejected: the engine is not up
    assert err.count("Traceback") == 0, err[-2000:]


def test_an_assessment_that_raises_is_logged_once_and_the_snapshots_keep_flowing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from gpuwatch.live.config import LiveConfig
    from gpuwatch.live.session import LiveSession
    from gpuwatch.telemetry.sample import GpuSample, Snapshot
    from gpuwatch.telemetry.source import SnapshotFeed

    class Source(SnapshotFeed):
        description = "test"
        simulated = True

        def start(self) -> None:
            pass

        def stop(self) -> None:
            pass

        def push(self, snap: Snapshot) -> None:
            self._publish(snap)

    source = Source()
    watcher = EngineWatcher(["http://e/metrics"], fetch=lambda u, t: vllm_text(0))
    session = LiveSession(source, LiveConfig(), watcher)
    calls: list[int] = []

    def assess(snap: Snapshot, history: object, engines: tuple = ()) -> object:
        calls.append(len(engines))
        raise ArithmeticError("a bug in the model")

    session.assessor.assess = assess  # type: ignore[method-assign]
    seen: list[float] = []
    session.add_listener(lambda snap, box: seen.append(snap.timestamp_s))
    gpu = GpuSample(index=0, uuid="u", name="NVIDIA GeForce RTX 4090", pci_bus_id="p", temperature_c=50.0)
    with caplog.at_level(logging.ERROR):
        for i in range(5):
            source.push(Snapshot(timestamp_s=float(i), source="sim", gpus=(gpu,)))
    assert seen == [0.0, 1.0, 2.0, 3.0, 4.0]  # every snapshot still reaches the faces
    latest = session.latest()
    assert latest is not None and latest[0].timestamp_s == 4.0 and latest[1].tokens_per_s is None
    assert calls[:2] == [1, 0]  # with the engines' readings, then without them
    # one traceback for the failure, not one per poll
    assert sum("assessment failed" in r.getMessage() for r in caplog.records) == 1
