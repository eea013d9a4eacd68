"""Serving-engine throughput: each engine's real /metrics format, served over loopback HTTP."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from loopback_http import PROMETHEUS_TEXT, serving

from gpuwatch.telemetry.engines import (
    NO_KNOWN_METRICS,
    EngineReading,
    EngineWatcher,
    metrics_url,
    parse_engine_metrics,
)

DATA = Path(__file__).parent / "data" / "engines"

#: fixture file, engine name, generation counter, prompt counter, running requests in the fixture
ENGINES = [
    ("vllm.txt", "vllm", "vllm:generation_tokens_total", "vllm:prompt_tokens_total", 8.0),
    ("tgi.txt", "tgi", "tgi_request_generated_tokens_sum", "tgi_request_input_length_sum", 6.0),
    ("llamacpp.txt", "llama.cpp", "llamacpp:tokens_predicted_total", "llamacpp:prompt_tokens_total", 1.0),
    ("sglang.txt", "sglang", "sglang:generation_tokens_total", "sglang:prompt_tokens_total", 162.0),
]


def fixture(name: str) -> str:
    return (DATA / name).read_text()


def with_counter(text: str, sample: str, value: float) -> str:
    """The exposition text with every series of ``sample`` set to ``value``."""
    pattern = re.compile(rf"^({re.escape(sample)}(?:\{{[^}}]*\}})?) \S+$", re.M)
    new, n = pattern.subn(lambda m: f"{m.group(1)} {value}", text)
    assert n >= 1, f"{sample} not in fixture"
    return new


@dataclass
class Endpoint:
    """What the fake engine answers; tests change it between scrapes."""

    body: str = ""
    status: int = 200
    hold: threading.Event | None = None  # when set, the handler waits for it before answering
    entered: threading.Event = field(default_factory=threading.Event)
    content_type: str = PROMETHEUS_TEXT


@pytest.fixture
def server() -> Iterator[tuple[str, Endpoint]]:
    endpoint = Endpoint()

    def answer(path: str) -> tuple[int, str, bytes]:
        endpoint.entered.set()
        if endpoint.hold is not None:
            endpoint.hold.wait(10)
        if path != "/metrics":
            return 404, endpoint.content_type, b"Not Found"
        return endpoint.status, endpoint.content_type, endpoint.body.encode()

    with serving(answer) as base:
        try:
            yield f"{base}/metrics", endpoint
        finally:
            if endpoint.hold is not None:
                endpoint.hold.set()


def wait_for_first_scrapes(watcher: EngineWatcher, timeout_s: float = 10.0) -> tuple[EngineReading, ...]:
    deadline = time.monotonic() + timeout_s
    readings = watcher.latest()
    while any(r.error == "waiting for the first scrape" for r in readings) and time.monotonic() < deadline:
        time.sleep(0.02)
        readings = watcher.latest()
    return readings


class Clock:
    def __init__(self, now_s: float = 1000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


@pytest.mark.parametrize(("name", "engine", "gen", "prompt", "running"), ENGINES)
def test_each_engine_is_detected_and_rated_from_counter_deltas(
    server: tuple[str, Endpoint], name: str, engine: str, gen: str, prompt: str, running: float
) -> None:
    url, endpoint = server
    clock = Clock()
    watcher = EngineWatcher([url], clock=clock)
    text = with_counter(with_counter(fixture(name), gen, 10_000), prompt, 50_000)
    endpoint.body = text
    first = watcher.scrape_once(url, None)
    assert first.error is None
    assert first.engine == engine
    assert first.requests_running == running
    assert first.generation_tokens_total == 10_000

    clock.now_s += 2.0
    endpoint.body = with_counter(with_counter(text, gen, 10_900), prompt, 54_000)
    second = watcher.scrape_once(url, first)
    assert second.error is None
    assert second.generation_tokens_per_s == pytest.approx(450.0)  # 900 tokens in 2 s
    assert second.prompt_tokens_per_s == pytest.approx(2000.0)
    assert second.rate_basis == "counters"


def test_counter_reset_counts_what_the_restarted_engine_generated(server: tuple[str, Endpoint]) -> None:
    url, endpoint = server
    clock = Clock()
    watcher = EngineWatcher([url], clock=clock)
    endpoint.body = with_counter(fixture("vllm.txt"), "vllm:generation_tokens_total", 1_000_000)
    first = watcher.scrape_once(url, None)
    clock.now_s += 4.0
    endpoint.body = with_counter(fixture("vllm.txt"), "vllm:generation_tokens_total", 600)
    after_restart = watcher.scrape_once(url, first)
    assert after_restart.generation_tokens_per_s == pytest.approx(150.0)  # 600 since restart, in 4 s


def test_data_parallel_ranks_are_summed_and_created_timestamps_ignored() -> None:
    text = fixture("vllm.txt")
    rank1 = "\n".join(
        line.replace('engine="0"', 'engine="1"')
        for line in text.splitlines()
        if line.startswith("vllm:generation_tokens_")
    )
    merged = text.replace(
        'vllm:generation_tokens_created{engine="0"',
        rank1 + '\nvllm:generation_tokens_created{engine="0"',
    )
    first = parse_engine_metrics(merged, "u", None, 0.0)
    assert first.generation_tokens_total == 2_000_000  # two ranks of 1e6, no 1.7e9 _created added in


def test_throughput_gauge_fills_the_first_scrape_where_the_engine_publishes_one() -> None:
    llama = parse_engine_metrics(fixture("llamacpp.txt"), "u", None, 0.0)
    assert (llama.generation_tokens_per_s, llama.prompt_tokens_per_s, llama.rate_basis) == (
        97.9,
        554.9,
        "gauge",
    )
    sglang = parse_engine_metrics(fixture("sglang.txt"), "u", None, 0.0)
    assert sglang.generation_tokens_per_s == pytest.approx(86.508, abs=1e-3)
    vllm = parse_engine_metrics(fixture("vllm.txt"), "u", None, 0.0)
    assert vllm.generation_tokens_per_s is None and vllm.error is None  # V1 has no gauge: wait for a delta
    assert vllm.model_name == "meta-llama/Llama-3.1-8B-Instruct"


def test_down_endpoint_is_unknown_with_the_reason() -> None:
    # a port nobody listens on: bind one, then close it
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/metrics"
    reading = EngineWatcher([dead]).scrape_once(dead, None)
    assert reading.generation_tokens_per_s is None
    assert reading.error == "connection refused"


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, "<html><body>It works!</body></html>", "not Prometheus metrics text"),
        (200, '{"object": "list", "data": []}', "not Prometheus metrics text"),
        (200, "# TYPE node_load1 gauge\nnode_load1 0.42\n", NO_KNOWN_METRICS),
        (200, "", NO_KNOWN_METRICS),
        (404, "Not Found", "HTTP 404"),
        (
            501,
            "This server does not support metrics endpoint.",
            "llama.cpp serves metrics only with --metrics",
        ),
    ],
)
def test_garbage_or_errors_degrade_to_unknown(
    server: tuple[str, Endpoint], status: int, body: str, expected: str
) -> None:
    url, endpoint = server
    endpoint.status, endpoint.body = status, body
    reading = EngineWatcher([url]).scrape_once(url, None)
    assert reading.generation_tokens_per_s is None
    assert reading.error is not None and expected in reading.error


def test_timeout_is_reported_and_latest_never_waits_for_a_hung_engine(server: tuple[str, Endpoint]) -> None:
    url, endpoint = server
    endpoint.body = fixture("vllm.txt")
    endpoint.hold = threading.Event()
    watcher = EngineWatcher([url], interval_s=0.05, timeout_s=0.2)
    watcher.start()
    try:
        assert endpoint.entered.wait(5)  # the scrape thread is now stuck inside the request
        (reading,) = watcher.latest()
        assert reading.error == "waiting for the first scrape"
        (reading,) = wait_for_first_scrapes(watcher)
        assert reading.error is not None and "timed out after 0.2 s" in reading.error
    finally:
        endpoint.hold.set()
        watcher.stop()


def test_watcher_reads_every_url_in_the_background(server: tuple[str, Endpoint]) -> None:
    url, endpoint = server
    endpoint.body = fixture("sglang.txt")
    watcher = EngineWatcher([url, url.replace("/metrics", "/missing-metrics")], interval_s=0.05)
    watcher.start()
    try:
        good, missing = wait_for_first_scrapes(watcher)
        assert good.engine == "sglang" and good.requests_running == 162.0
        assert missing.error is not None and missing.error.startswith("HTTP ")
    finally:
        watcher.stop()


def test_bare_host_gets_the_metrics_path() -> None:
    assert metrics_url("http://gpu-box:8000") == "http://gpu-box:8000/metrics"
    assert metrics_url("gpu-box:30000") == "http://gpu-box:30000/metrics"
    assert metrics_url("http://h:8080/custom/metrics") == "http://h:8080/custom/metrics"


def test_an_unknown_charset_is_read_as_utf8_not_a_dead_scrape_thread(server: tuple[str, Endpoint]) -> None:
    url, endpoint = server
    endpoint.body = fixture("vllm.txt")
    endpoint.content_type = "text/plain; charset=no-such-charset"  # used to raise LookupError
    reading = EngineWatcher([url]).scrape_once(url, None)
    assert reading.error is None and reading.engine == "vllm"


def test_a_failing_scrape_is_reported_and_the_watcher_keeps_going() -> None:
    calls = []

    def fetch(url: str, timeout_s: float) -> str:
        calls.append(url)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return fixture("vllm.txt")

    watcher = EngineWatcher(["http://e/metrics"], interval_s=0.05, fetch=fetch)
    watcher.start()
    try:
        deadline = time.monotonic() + 10
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        deadline = time.monotonic() + 10
        while watcher.latest()[0].engine != "vllm" and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        watcher.stop()
    assert len(calls) >= 2  # the thread survived the exception
    assert watcher.latest()[0].engine == "vllm"
