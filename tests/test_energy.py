"""Energy economics: the engine's own roofline counters, serving state, idle burn and the advised cap.

The engine fixtures are vLLM's and SGLang's exposition with ``--enable-mfu-metrics``
(tests/data/engines/*_mfu.txt) and without it (vllm.txt, sglang.txt); the done-when tests serve one
over loopback HTTP to a simulated RTX 4090 watched by the exporter (a real subprocess) and the TUI.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from loopback_http import PROMETHEUS_TEXT, serving
from textual.widgets import Static
from tui_rack import ManualRack

from gpuwatch.live.assessment import Provenance, weakest
from gpuwatch.live.idle_burn import IdleTracker
from gpuwatch.live.pricing import Pricing
from gpuwatch.model import cost
from gpuwatch.model.cost import OwnershipCost
from gpuwatch.options.engine_gpus import engine_gpus
from gpuwatch.telemetry.engines import EngineReading, EngineState, fetch_metrics, parse_engine_metrics
from gpuwatch.tui.app import GpuwatchApp
from gpuwatch.tui.formatting import percent, usd

DATA = Path(__file__).parent / "data" / "engines"
ROOT = Path(__file__).resolve().parent.parent

#: the fake engine's work per GPU per second, about an 8B fp16 model decoding at batch 8 on a 4090
#: (~55 steps/s of 16 GB weights): intensity 7e12 / (8.6e11 + 1.4e10) = 8.0 FLOP/byte
FLOPS_S, READ_S, WRITE_S = 7.0e12, 8.6e11, 1.4e10
TOKENS_S, REQUESTS_S = 900.0, 3.0


def fixture(name: str) -> str:
    return (DATA / name).read_text()


def with_value(text: str, sample: str, value: float) -> str:
    pattern = re.compile(rf"^({re.escape(sample)}(?:\{{[^}}]*\}})?) \S+$", re.M)
    new, n = pattern.subn(lambda m: f"{m.group(1)} {value!r}", text)
    assert n >= 1, f"{sample} not in fixture"
    return new


def mfu_body(t_s: float, serving_s: float | None = None) -> str:
    """vllm_mfu.txt after ``t_s`` seconds of work (``serving_s`` of them generating, default all)."""
    s = t_s if serving_s is None else serving_s
    text = fixture("vllm_mfu.txt")
    for name, value in (
        ("vllm:estimated_flops_per_gpu_total", 1e15 + FLOPS_S * s),
        ("vllm:estimated_read_bytes_per_gpu_total", 1e14 + READ_S * s),
        ("vllm:estimated_write_bytes_per_gpu_total", 1e12 + WRITE_S * s),
        ("vllm:generation_tokens_total", 1e6 + TOKENS_S * s),
    ):
        text = with_value(text, name, value)
    # request_success_total has two series (stop, length): each gets half
    return with_value(text, "vllm:request_success_total", 1000.0 + REQUESTS_S * s / 2)


# -- parsing --------------------------------------------------------------------------------------


def test_mfu_counters_give_per_gpu_flops_bytes_and_intensity_between_two_scrapes() -> None:
    first = parse_engine_metrics(mfu_body(0.0), "u", None, 100.0)
    assert first.error is None and first.work is not None
    assert first.work.flops_per_s is None  # no rate before a second scrape
    second = parse_engine_metrics(mfu_body(4.0), "u", first, 104.0)
    assert second.work is not None
    assert second.work.flops_per_s == pytest.approx(FLOPS_S)
    assert second.work.bytes_per_s == pytest.approx(READ_S + WRITE_S)
    assert second.work.intensity_flop_per_byte == pytest.approx(FLOPS_S / (READ_S + WRITE_S))


def test_without_the_flag_there_is_no_engine_work_and_nothing_else_changes() -> None:
    reading = parse_engine_metrics(fixture("vllm.txt"), "u", None, 0.0)
    assert reading.error is None and reading.work is None and reading.work_error is None
    assert reading.requests_running == 8.0
    sglang = parse_engine_metrics(fixture("sglang.txt"), "u", None, 0.0)
    assert sglang.error is None and sglang.work is None


def test_per_gpu_counters_of_several_ranks_are_averaged_not_summed() -> None:
    # SGLang TP=2 with metrics from every scheduler: each tp_rank's series is one GPU's work
    reading = parse_engine_metrics(fixture("sglang_mfu.txt"), "u", None, 0.0)
    assert reading.work is not None
    assert reading.work.flops_total == pytest.approx((4.0e16 + 2.0e16) / 2)
    assert reading.work.read_bytes_total == pytest.approx(1.0e15)
    # vLLM data parallel: one series per engine
    two = fixture("vllm_mfu.txt").replace('engine="0"', 'engine="1"')
    both = parse_engine_metrics(fixture("vllm_mfu.txt") + two.split("\n", 5)[5], "u", None, 0.0)
    assert both.work is not None and both.work.flops_total == pytest.approx(3.2e16)


def test_garbage_work_counters_are_rejected_with_the_reason_and_the_tokens_still_count() -> None:
    text = with_value(fixture("vllm_mfu.txt"), "vllm:estimated_flops_per_gpu_total", float("nan"))
    reading = parse_engine_metrics(text, "u", None, 0.0)
    assert reading.error is None and reading.work is None
    assert reading.work_error is not None and "estimated_flops_per_gpu_total" in reading.work_error


def test_serving_state_of_each_engine() -> None:
    vllm = parse_engine_metrics(fixture("vllm_mfu.txt"), "u", None, 0.0).serving
    assert vllm is not None
    assert vllm.requests_waiting == 2.0 and vllm.kv_cache_usage_ratio == pytest.approx(0.4127)
    assert vllm.ttft_mean_s == pytest.approx(161.72 / 2105)  # histogram sum / count
    assert vllm.tpot_mean_s == pytest.approx(3600.0 / 100000)
    assert vllm.requests_finished_total == 1893.0 + 212.0  # both finished_reason series
    sglang = parse_engine_metrics(fixture("sglang.txt"), "u", None, 0.0).serving
    assert sglang is not None and sglang.requests_waiting == 2826.0
    assert sglang.kv_cache_usage_ratio == pytest.approx(0.28)
    assert sglang.ttft_mean_s == pytest.approx(2.3518979474117756e06 / 11008)
    tgi = parse_engine_metrics(fixture("tgi.txt"), "u", None, 0.0).serving
    assert tgi is not None and tgi.requests_waiting is not None and tgi.kv_cache_usage_ratio is None
    llama = parse_engine_metrics(fixture("llamacpp.txt"), "u", None, 0.0).serving
    assert llama is not None and llama.kv_cache_usage_ratio is not None and llama.ttft_mean_s is None


def test_latency_means_and_request_rate_are_over_the_window_since_the_last_scrape() -> None:
    first = parse_engine_metrics(fixture("vllm_mfu.txt"), "u", None, 0.0)
    text = with_value(fixture("vllm_mfu.txt"), "vllm:time_to_first_token_seconds_sum", 161.72 + 10 * 0.5)
    text = with_value(text, "vllm:time_to_first_token_seconds_count", 2105.0 + 10)
    text = with_value(text, "vllm:request_success_total", (1893.0 + 212.0 + 20) / 2)
    second = parse_engine_metrics(text, "u", first, 5.0).serving
    assert second is not None
    assert second.ttft_mean_s == pytest.approx(0.5)  # the ten new requests, not the 2105 before
    assert second.requests_finished_per_s == pytest.approx(20 / 5.0)


def test_engine_gpu_list_from_the_url_fragment() -> None:
    assert engine_gpus("http://127.0.0.1:8000") is None
    assert engine_gpus("http://127.0.0.1:8000/metrics#gpus=2,0") == (0, 2)
    with pytest.raises(ValueError, match="#gpus=0,1"):
        engine_gpus("http://127.0.0.1:8000#gpu=zero")
    # the fragment is never sent: the engine is asked for /metrics
    from gpuwatch.telemetry.engines import metrics_url

    assert metrics_url("http://h:8000#gpus=1").startswith("http://h:8000/metrics")


def test_a_bad_gpu_list_on_the_engine_url_is_a_one_line_error() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "gpuwatch", "exporter", "--sim", "rtx4090", "--listen", "127.0.0.1:0"]
    result = subprocess.run(
        [*argv, "--engine", "http://127.0.0.1:9#gpus=one"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--engine" in lines[0] and "#gpus=0,1" in lines[0], result.stderr


def test_order_of_trust_puts_engine_estimates_between_measured_and_derived() -> None:
    assert weakest([Provenance.MEASURED, Provenance.ENGINE_ESTIMATED]) == Provenance.ENGINE_ESTIMATED
    assert weakest([Provenance.ENGINE_ESTIMATED, Provenance.DERIVED]) == Provenance.DERIVED


# -- the live layer on simulated cards --------------------------------------------------------------


class LoopbackEngines:
    """An engine source for a LiveSession on a manual clock: scrapes a real loopback HTTP endpoint with
    the real fetch and parser when the test says so (EngineWatcher's threads run on wall time)."""

    def __init__(self, url: str) -> None:
        self.urls = (url,)
        self.ceiling_tokens_per_s: float | None = None
        self._good: EngineReading | None = None
        self._latest: EngineReading | None = None

    def scrape(self, now_s: float) -> EngineReading:
        reading = parse_engine_metrics(fetch_metrics(self.urls[0], 2.0), self.urls[0], self._good, now_s)
        if reading.error is None:
            self._good = reading
        self._latest = reading
        return reading

    def latest(self) -> tuple[EngineReading, ...]:
        return (self._latest,) if self._latest is not None else ()

    def states(self) -> tuple[EngineState, ...]:
        r = self._latest
        return (EngineState(self.urls[0], r is not None and r.error is None, "vllm", None, None, None),)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


@pytest.fixture
def engine() -> Iterator[tuple[str, dict[str, Callable[[], str]]]]:
    """A loopback vLLM: ``served["body"]()`` is what each GET answers; stopped when the test ends."""
    served: dict[str, Callable[[], str]] = {"body": lambda: fixture("vllm_mfu.txt")}
    with serving(lambda path: (200, PROMETHEUS_TEXT, served["body"]().encode())) as base:
        yield base, served


def drive(
    rack: ManualRack, engines: LoopbackEngines, served: dict[str, Callable[[], str]], plan: str
) -> None:
    """One poll per character of ``plan``: ``s`` a second of serving, ``i`` a second of idling."""
    start = rack.sim.now_s()
    serving = 0.0
    for step, what in enumerate(plan, start=1):
        serving += 1.0 if what == "s" else 0.0
        body = mfu_body(float(step), serving)
        served["body"] = lambda body=body: body  # type: ignore[misc]
        rack.sim.advance(1.0)
        assert rack.sim.now_s() == pytest.approx(start + step)
        engines.scrape(rack.sim.now_s())
        rack.poller.poll_once()


def test_h100_keeps_gpm_and_the_engine_estimate_side_by_side(
    engine: tuple[str, dict[str, Callable[[], str]]],
) -> None:
    url, served = engine
    rack = ManualRack("h100-sxm", workload=None)
    try:
        engines = LoopbackEngines(url)
        rack.session.engines = engines  # type: ignore[assignment]
        drive(rack, engines, served, "sss")
        latest = rack.session.latest()
        assert latest is not None
        roof = latest[1].gpus[0].roofline
        assert roof is not None
        assert roof.bandwidth_provenance == Provenance.MEASURED  # GPM wins
        assert roof.engine_flops == pytest.approx(FLOPS_S)
        assert roof.engine_bandwidth_bytes_s == pytest.approx(READ_S + WRITE_S)
        assert roof.attained_bandwidth_bytes_s
        assert roof.engine_vs_measured_bandwidth_ratio == pytest.approx(
            (READ_S + WRITE_S) / roof.attained_bandwidth_bytes_s
        )
    finally:
        rack.close()


def test_an_engine_on_gpu_1_places_only_gpu_1_and_leaves_gpu_0_idle(
    engine: tuple[str, dict[str, Callable[[], str]]],
) -> None:
    url, served = engine
    rack = ManualRack("2xrtx4090", workload=None)
    try:
        engines = LoopbackEngines(f"{url}/metrics#gpus=1")
        rack.session.engines = engines  # type: ignore[assignment]
        drive(rack, engines, served, "sss")
        latest = rack.session.latest()
        assert latest is not None
        gpu0, gpu1 = latest[1].gpus
        assert gpu1.roofline is not None and gpu1.roofline.flops_provenance == Provenance.ENGINE_ESTIMATED
        assert gpu1.tokens_per_s == pytest.approx(TOKENS_S)  # all of the engine's tokens, not half
        assert gpu0.tokens_per_s is None
        assert gpu0.roofline is None or gpu0.roofline.flops_provenance != Provenance.ENGINE_ESTIMATED
        assert gpu0.cost is not None and gpu0.cost.burn is not None and gpu0.cost.burn.idle_ratio == 1.0
    finally:
        rack.close()


def test_a_recording_keeps_the_engine_work_so_a_replay_places_the_same_point() -> None:
    from gpuwatch.telemetry.recording import decode_record, encode_snapshot
    from gpuwatch.telemetry.sample import Snapshot

    first = parse_engine_metrics(mfu_body(0.0), "u", None, 0.0)
    second = parse_engine_metrics(mfu_body(2.0), "u", first, 2.0)
    record = decode_record(encode_snapshot(Snapshot(timestamp_s=2.0, source="nvml", gpus=()), (second,)))
    assert record.engines[0].work == second.work and record.engines[0].serving == second.serving


def test_idle_tracker_splits_serving_from_idle_time() -> None:
    tracker = IdleTracker(window_s=100.0)
    window = None
    # 2 s serving at 1000 tokens/s and 400 W, then 8 s idle at 50 W, one poll a second
    for t in range(11):
        serving = t in (1, 2)
        window = tracker.update(0, float(t), 1000.0 if serving else 0.0, 400.0 if serving else 50.0, 1.0)
    assert window is not None
    assert window.window_s == 10.0 and window.idle_ratio == pytest.approx(0.8)
    assert window.idle_power_w == 50.0 and window.serving_power_w == 400.0
    assert window.serving_tokens_per_s == 1000.0 and window.tokens_per_s == pytest.approx(200.0)
    assert window.power_w == pytest.approx((2 * 400 + 8 * 50) / 10)
    # no engine reading: the interval is not counted, never guessed as idle or serving
    after = tracker.update(0, 11.0, None, 50.0)
    assert after is not None and after.window_s == 10.0
    assert IdleTracker().update(1, 0.0, None, 50.0) is None


def test_idle_hours_make_the_overall_price_dearer_than_the_serving_one() -> None:
    prices = OwnershipCost()
    tracker = IdleTracker()
    for t in range(11):
        serving = t in (1, 2)
        window = tracker.update(0, float(t), 1000.0 if serving else 0.0, 400.0 if serving else 50.0, 0.5)
    assert window is not None
    burn = Pricing.idle_burn(prices, 1600.0, window)
    every_hour = replace(prices, utilisation_ratio=1.0)
    hourly_serving = float(
        cost.cost_per_hour(every_hour, gpu_capex_usd=1600.0, power_w=400.0).total_usd_per_h
    )
    assert burn.usd_per_mtok_serving == pytest.approx(hourly_serving / (1000.0 * 3600) * 1e6)
    hourly_mean = float(cost.cost_per_hour(every_hour, gpu_capex_usd=1600.0, power_w=120.0).total_usd_per_h)
    # 2000 tokens in 10 s: 200 tokens/s over every hour
    assert burn.usd_per_mtok_overall == pytest.approx(hourly_mean / (200.0 * 3600) * 1e6)
    assert burn.usd_per_mtok_overall > burn.usd_per_mtok_serving  # type: ignore[operator]
    assert burn.joules_per_request == pytest.approx(120.0 / 0.5)
    assert burn.usd_per_k_requests == pytest.approx(hourly_mean / 3600 / 0.5 * 1000)


# -- done when: the TUI and the exporter ---------------------------------------------------------------


async def test_tui_shows_the_engine_estimated_point_and_serving_vs_idle_price(
    engine: tuple[str, dict[str, Callable[[], str]]],
) -> None:
    url, served = engine
    rack = ManualRack("rtx4090", workload=None)
    try:
        engines = LoopbackEngines(url)
        rack.session.engines = engines  # type: ignore[assignment]
        app = GpuwatchApp(rack.session)
        async with app.run_test(size=(120, 40)) as pilot:
            drive(rack, engines, served, "siiiisss")
            await pilot.pause()
            latest = rack.session.latest()
            assert latest is not None
            gpu = latest[1].gpus[0]
            roof = gpu.roofline
            assert roof is not None and roof.flops_provenance == Provenance.ENGINE_ESTIMATED
            intensity = FLOPS_S / (READ_S + WRITE_S)
            assert roof.arithmetic_intensity_flop_per_byte == pytest.approx(intensity)
            await pilot.press("2")
            await pilot.pause()
            words = str(app.query_one("#roofline-words", Static).render())
            assert f"Intensity {intensity:.3g} FLOP/byte" in words
            assert "engine-estimated" in words
            await pilot.press("3")
            await pilot.pause()
            summary = str(app.query_one("#cost-summary", Static).render())
            burn = gpu.cost.burn if gpu.cost is not None else None
            assert burn is not None
            # 7 counted intervals (the first scrape has no rate yet): 4 idle, 3 serving
            assert burn.idle_ratio == pytest.approx(4 / 7)
            assert burn.usd_per_mtok_overall > burn.usd_per_mtok_serving  # type: ignore[operator]
            assert f"serving {usd(burn.usd_per_mtok_serving, digits=3)}" in summary
            assert f"overall {usd(burn.usd_per_mtok_overall, digits=3)}" in summary
            assert f"{percent(burn.idle_ratio)} of the time" in summary
            assert "concurrent requests" in summary
    finally:
        rack.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_exporter_publishes_the_engine_estimated_point_and_the_advised_cap(
    engine: tuple[str, dict[str, Callable[[], str]]], tmp_path: Path
) -> None:
    url, served = engine
    t0 = time.monotonic()
    served["body"] = lambda: mfu_body(time.monotonic() - t0)  # the engine works at a steady rate
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = (tmp_path / "exporter.log").open("wb")
    argv = [sys.executable, "-m", "gpuwatch", "exporter", "--sim", "rtx4090", "--scenario", "decode"]
    argv += ["--engine", url, "--listen", f"127.0.0.1:{port}", "--interval", "0.5"]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        text = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                    text = resp.read().decode()
            except OSError:
                text = ""
            if all(m in text for m in ('flops="engine-estimated"', 'basis="overall"', "advice_info")):
                break
            assert proc.poll() is None, (tmp_path / "exporter.log").read_text()
            time.sleep(0.3)
        assert 'flops="engine-estimated"' in text, text[-3000:]
        flops = re.search(
            r'^gpuwatch_roofline_attained_flop_per_second\{[^}]*provenance="engine-estimated"[^}]*\} (\S+)$',
            text,
            re.M,
        )
        assert flops, "\n".join(line for line in text.splitlines() if "roofline" in line)
        # the rate is over the scrapes' wall-clock times, 0.5 s apart: a loopback fetch's jitter on a
        # loaded 2-core CI machine (tens of ms) is several per cent of that; a wrong rate is off by far more
        assert float(flops.group(1)) == pytest.approx(FLOPS_S, rel=0.15)
        ai = re.search(r"^gpuwatch_roofline_arithmetic_intensity_flop_per_byte\{[^}]*\} (\S+)$", text, re.M)
        assert ai and float(ai.group(1)) == pytest.approx(FLOPS_S / (READ_S + WRITE_S), rel=1e-6)
        assert re.search(r'^gpuwatch_usd_per_million_tokens\{[^}]*basis="serving"', text, re.M)
        assert re.search(r'^gpuwatch_usd_per_million_tokens\{[^}]*basis="overall"', text, re.M)
        assert re.search(r"^gpuwatch_idle_ratio\{", text, re.M)
        assert re.search(r"^gpuwatch_engine_kv_cache_usage_ratio\{[^}]*\} 0.4127$", text, re.M)
        # the real promtool finds nothing to complain about in the new series' names, types and help
        lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        ours = ("idle", "per_request", "thousand_requests", "power_limit_advi", "engine_estimated", "engine_")
        complaints = [
            line for line in (lint.stdout + lint.stderr).splitlines() if any(o in line for o in ours)
        ]
        assert not complaints
        advice = re.search(r'^gpuwatch_power_limit_advice_info\{[^}]*reason="(\w+)"', text, re.M)
        assert advice is not None
        if advice.group(1) in ("lower_cap", "keep_default"):
            assert re.search(r"^gpuwatch_power_limit_advised_watts\{", text, re.M)
    finally:
        proc.terminate()  # stopped by its PID
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def test_roofline_pane_shows_the_engine_estimate_beside_the_gpm_measurement() -> None:
    from gpuwatch.live.assessment import Bound, BoundKind, GpuAssessment, RooflinePosition
    from gpuwatch.tui.roofline_pane import bound_in_words

    roof = RooflinePosition(
        peak_bandwidth_bytes_s=3.35e12,
        peak_flops=9.89e14,
        current_peak_flops=9.89e14,
        ridge_flop_per_byte=295.0,
        attained_bandwidth_bytes_s=2.0e12,
        attained_flops=3.0e13,
        arithmetic_intensity_flop_per_byte=15.0,
        attainable_flops=3.0e13,
        headroom_ratio=1.0,
        bandwidth_provenance=Provenance.MEASURED,
        flops_provenance=Provenance.MEASURED,
        engine_flops=2.4e13,
        engine_bandwidth_bytes_s=2.2e12,
        engine_vs_measured_flops_ratio=0.8,
        engine_vs_measured_bandwidth_ratio=1.1,
    )
    words = str(
        bound_in_words(
            GpuAssessment(0, "h100-sxm", roof, Bound(BoundKind.MEMORY), None, None, Provenance.UNKNOWN)
        )
    )
    assert "engine est." in words and "24.0 TFLOP/s" in words and "2.20 TB/s" in words
    assert "compute x0.80" in words and "bandwidth x1.10" in words
