"""The exporter's collector and HTTP server against hand-built snapshots (no NVML, no simulator)."""

from __future__ import annotations

import dataclasses
import gzip
import http.client
import math
import shutil
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from gpuwatch.errors import UserError
from gpuwatch.exporter.collector import GpuwatchCollector
from gpuwatch.exporter.server import ExporterServer, make_app, parse_listen
from gpuwatch.live.assessment import (
    Alert,
    Bound,
    BoundKind,
    BoxAssessment,
    CostSplit,
    CostView,
    GpuAssessment,
    Provenance,
    RooflinePosition,
)
from gpuwatch.telemetry.sample import (
    ClockEventReason,
    GpuSample,
    ProcessSample,
    Snapshot,
    Unavailable,
)

Listener = Callable[[Snapshot, BoxAssessment], None]


class FakeSession:
    def __init__(self, latest: tuple[Snapshot, BoxAssessment] | None = None) -> None:
        self.value = latest
        self.listeners: list[Listener] = []

    def latest(self) -> tuple[Snapshot, BoxAssessment] | None:
        return self.value

    def add_listener(self, fn: Listener) -> None:
        self.listeners.append(fn)

    def push(self, snap: Snapshot, box: BoxAssessment) -> None:
        self.value = (snap, box)
        for fn in self.listeners:
            fn(snap, box)


def rtx4090(index: int = 0, **overrides: object) -> GpuSample:
    values: dict[str, object] = dict(
        index=index,
        uuid=f"GPU-0000000{index}-4090",
        name="NVIDIA GeForce RTX 4090",
        pci_bus_id=f"00000000:0{index + 1}:00.0",
        temperature_c=84.0,
        memory_temperature_c=None,
        slowdown_temperature_c=88.0,
        shutdown_temperature_c=93.0,
        slowdown_margin_c=4.0,
        power_w=441.5,
        power_limit_w=450.0,
        energy_j=123456.0,
        sm_clock_hz=2.1e9,
        sm_clock_max_hz=3.105e9,
        memory_clock_hz=10.501e9,
        memory_used_bytes=20 * 2**30,
        memory_total_bytes=24 * 2**30,
        peak_memory_bandwidth_bytes_s=1008.1e9,
        sm_busy_ratio=0.97,
        memory_controller_busy_ratio=0.88,
        pcie_tx_bytes_s=1.5e6,
        fan_speed_ratio=1.02,
        clock_event_reasons=int(ClockEventReason.SW_THERMAL | ClockEventReason.SW_POWER_CAP),
        clock_event_seconds_total={"sw_thermal": 12.5, "sw_power_cap": 3.0},
        remapped_rows_correctable=0,
        remapped_rows_uncorrectable=0,
        remap_pending=False,
        remap_failure=False,
        xid_errors_total=1,
        last_xid=79,
        processes=(ProcessSample(pid=4242, name="python3 serve.py", used_memory_bytes=19 * 2**30),),
        unavailable={"memory_temperature_c": Unavailable.NOT_SUPPORTED, "gpm": Unavailable.NOT_SUPPORTED},
    )
    values.update(overrides)
    return GpuSample(**values)


def assessment(index: int = 0) -> GpuAssessment:
    return GpuAssessment(
        index=index,
        gpu_id="rtx4090",
        roofline=RooflinePosition(
            peak_bandwidth_bytes_s=1008.1e9,
            peak_flops=165.2e12,
            current_peak_flops=137.7e12,
            ridge_flop_per_byte=163.8,
            attained_bandwidth_bytes_s=850e9,
            attained_flops=1.7e12,
            arithmetic_intensity_flop_per_byte=2.0,
            attainable_flops=2.016e12,
            headroom_ratio=0.84,
            bandwidth_provenance=Provenance.DERIVED,
            flops_provenance=Provenance.DERIVED,
        ),
        bound=Bound(kind=BoundKind.THROTTLED, throttle_reasons=("sw_thermal",), clock_loss_ratio=0.32),
        cost=CostView(
            live_usd_per_mtok=0.61,
            projected_usd_per_mtok=0.48,
            tokens_per_joule=2.1,
            cost_per_hour=CostSplit(capex_usd_per_h=0.12, power_usd_per_h=0.07, hosting_usd_per_h=0.0),
            cloud_usd_per_mtok=None,
        ),
        tokens_per_s=940.0,
        tokens_per_s_provenance=Provenance.MEASURED,
        modelled_tokens_per_s=1200.0,
    )


def box(*gpus: GpuAssessment, alerts: tuple[Alert, ...] = ()) -> BoxAssessment:
    return BoxAssessment(
        timestamp_s=1.7e9,
        gpus=gpus,
        tokens_per_s=940.0,
        usd_per_mtok=0.61,
        tokens_per_joule=2.1,
        alerts=alerts,
        tokens_per_s_provenance=Provenance.MEASURED,
    )


def snapshot(*gpus: GpuSample, errors: dict[str, int] | None = None, timestamp_s: float = 1.7e9) -> Snapshot:
    return Snapshot(
        timestamp_s=timestamp_s,
        source="sim",
        gpus=gpus,
        driver_version="580.65.06",
        nvml_version="13.580.65.06",
        poll_duration_s=0.004,
        errors=errors or {},
    )


def scrape(collector: GpuwatchCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Exposition text -> {(sample name, sorted labels): value}, through prometheus_client's own parser."""
    registry = CollectorRegistry()
    registry.register(collector)
    from prometheus_client import generate_latest

    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def series(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> dict[str, float]:
    """{label string: value} of one metric name, labels other than gpu/uuid only, for readable asserts."""
    return {
        ",".join(f"{k}={v}" for k, v in labels if k not in ("uuid",)): value
        for (n, labels), value in samples.items()
        if n == name
    }


def test_readings_are_published_in_base_units_with_gpu_and_uuid_labels() -> None:
    session = FakeSession((snapshot(rtx4090()), box(assessment())))
    samples = scrape(GpuwatchCollector(session))

    key = (("gpu", "0"), ("uuid", "GPU-00000000-4090"))
    assert samples[("gpuwatch_temperature_celsius", key)] == 84.0
    assert samples[("gpuwatch_power_watts", key)] == 441.5
    assert samples[("gpuwatch_power_limit_watts", key)] == 450.0
    assert samples[("gpuwatch_energy_joules_total", key)] == 123456.0
    assert samples[("gpuwatch_memory_used_bytes", key)] == 20 * 2**30
    assert samples[("gpuwatch_memory_bandwidth_peak_bytes_per_second", key)] == 1008.1e9
    assert samples[("gpuwatch_fan_speed_ratio", key)] == 1.02  # "intended" speed may exceed 1
    assert series(samples, "gpuwatch_clock_hertz") == {
        "clock=memory,gpu=0": 10.501e9,
        "clock=sm,gpu=0": 2.1e9,
    }
    assert series(samples, "gpuwatch_temperature_threshold_celsius") == {
        "gpu=0,threshold=shutdown": 93.0,
        "gpu=0,threshold=slowdown": 88.0,
    }
    info = series(samples, "gpuwatch_gpu_info")
    assert info == {
        "driver_version=580.65.06,gpu=0,name=NVIDIA GeForce RTX 4090,pci_bus_id=00000000:01:00.0": 1.0
    }


def test_every_throttle_reason_is_its_own_zero_or_one_series_and_violation_time_is_seconds_total() -> None:
    samples = scrape(GpuwatchCollector(FakeSession((snapshot(rtx4090()), box(assessment())))))
    reasons = series(samples, "gpuwatch_clock_event_reason_active")
    assert len(reasons) == len([r for r in ClockEventReason if r.name])
    assert reasons["gpu=0,reason=sw_thermal"] == 1.0
    assert reasons["gpu=0,reason=sw_power_cap"] == 1.0
    assert reasons["gpu=0,reason=hw_thermal"] == 0.0
    assert reasons["gpu=0,reason=gpu_idle"] == 0.0
    assert series(samples, "gpuwatch_throttled") == {"gpu=0": 1.0}
    assert series(samples, "gpuwatch_clock_event_seconds_total") == {
        "gpu=0,reason=sw_power_cap": 3.0,
        "gpu=0,reason=sw_thermal": 12.5,
    }


def test_an_unknown_throttle_bit_stays_visible_as_hex() -> None:
    gpu = rtx4090(clock_event_reasons=0x400 | int(ClockEventReason.HW_SLOWDOWN))
    samples = scrape(GpuwatchCollector(FakeSession((snapshot(gpu), box(assessment())))))
    reasons = series(samples, "gpuwatch_clock_event_reason_active")
    assert reasons["gpu=0,reason=0x400"] == 1.0
    assert reasons["gpu=0,reason=hw_slowdown"] == 1.0


def test_an_unsupported_reading_is_omitted_and_flagged_never_nan() -> None:
    samples = scrape(GpuwatchCollector(FakeSession((snapshot(rtx4090()), box(assessment())))))
    assert not any(math.isnan(v) for v in samples.values())
    assert series(samples, "gpuwatch_memory_temperature_celsius") == {}
    supported = series(samples, "gpuwatch_reading_supported")
    assert supported["gpu=0,reading=memory_temperature_c"] == 0.0
    assert "gpu=0,reading=temperature_c" not in supported  # supported readings are not listed
    assert supported["gpu=0,reading=gpm"] == 0.0
    assert set(supported.values()) == {0.0}
    assert not any(name.startswith("gpuwatch_gpm_") for name, _ in samples)


def test_a_transient_error_drops_the_series_but_keeps_the_reading_supported() -> None:
    gpu = rtx4090(power_w=None, unavailable={"power_w": Unavailable.ERROR})
    samples = scrape(GpuwatchCollector(FakeSession((snapshot(gpu), box(assessment())))))
    assert series(samples, "gpuwatch_power_watts") == {}
    assert "gpu=0,reading=power_w" not in series(samples, "gpuwatch_reading_supported")


def test_a_lost_gpu_is_visible_as_down_and_its_readings_vanish() -> None:
    lost = GpuSample(
        index=1, uuid="GPU-00000001-4090", name="NVIDIA GeForce RTX 4090", pci_bus_id="0:02", lost=True
    )
    session = FakeSession((snapshot(rtx4090(), lost), box(assessment(0), assessment(1))))
    samples = scrape(GpuwatchCollector(session))
    assert series(samples, "gpuwatch_gpu_up") == {"gpu=0": 1.0, "gpu=1": 0.0}
    assert set(series(samples, "gpuwatch_temperature_celsius")) == {"gpu=0"}
    assert set(series(samples, "gpuwatch_tokens_per_second")) == {"gpu=0,provenance=measured"}


def test_bandwidth_and_flops_carry_their_provenance_and_busy_is_not_called_bandwidth() -> None:
    registry = CollectorRegistry()
    registry.register(GpuwatchCollector(FakeSession((snapshot(rtx4090()), box(assessment())))))
    from prometheus_client import generate_latest

    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    attained = families["gpuwatch_memory_bandwidth_attained_bytes_per_second"].samples
    assert [(s.labels["provenance"], s.value) for s in attained] == [("derived", 850e9)]
    busy = families["gpuwatch_memory_controller_busy_ratio"]
    assert "NOT a share of bandwidth" in busy.documentation
    flops = families["gpuwatch_roofline_attained_flop_per_second"].samples
    assert flops[0].labels["provenance"] == "derived"


def test_roofline_throughput_and_cost_series() -> None:
    samples = scrape(GpuwatchCollector(FakeSession((snapshot(rtx4090()), box(assessment())))))
    assert series(samples, "gpuwatch_roofline_arithmetic_intensity_flop_per_byte") == {"gpu=0": 2.0}
    assert series(samples, "gpuwatch_roofline_attainable_flop_per_second") == {"gpu=0": 2.016e12}
    assert series(samples, "gpuwatch_roofline_headroom_ratio") == {"gpu=0": 0.84}
    assert series(samples, "gpuwatch_roofline_peak_flop_per_second") == {"dtype=fp16,gpu=0": 165.2e12}
    assert series(samples, "gpuwatch_usd_per_million_tokens") == {
        "basis=live,gpu=0,provenance=measured": 0.61,
        "basis=projected,gpu=0,provenance=modelled": 0.48,
    }
    assert series(samples, "gpuwatch_tokens_per_joule") == {"gpu=0,provenance=measured": 2.1}
    assert series(samples, "gpuwatch_modelled_tokens_per_second") == {"gpu=0": 1200.0}
    bound = series(samples, "gpuwatch_bound")
    assert bound["gpu=0,kind=throttled"] == 1.0 and sum(bound.values()) == 1.0
    assert series(samples, "gpuwatch_box_usd_per_million_tokens") == {"provenance=measured": 0.61}


def test_estimated_cost_figures_are_labelled_with_their_provenance() -> None:
    # modelled tokens/s (no engine) and a TDP-based power cost must not read as measurements
    a = dataclasses.replace(assessment(), tokens_per_s_provenance=Provenance.MODELLED)
    assert a.cost is not None
    a = dataclasses.replace(a, cost=dataclasses.replace(a.cost, power_provenance=Provenance.MODELLED))
    b = dataclasses.replace(box(a), tokens_per_s_provenance=Provenance.MODELLED)
    samples = scrape(GpuwatchCollector(FakeSession((snapshot(rtx4090()), b))))
    assert series(samples, "gpuwatch_usd_per_million_tokens")["basis=live,gpu=0,provenance=modelled"] == 0.61
    assert series(samples, "gpuwatch_tokens_per_joule") == {"gpu=0,provenance=modelled": 2.1}
    assert series(samples, "gpuwatch_cost_usd_per_hour") == {
        "component=capex,gpu=0,provenance=configured": 0.12,
        "component=power,gpu=0,provenance=modelled": 0.07,
        "component=hosting,gpu=0,provenance=configured": 0.0,
    }
    assert series(samples, "gpuwatch_box_tokens_per_second") == {"provenance=modelled": 940.0}


def test_process_memory_is_published_only_when_asked() -> None:
    session = FakeSession((snapshot(rtx4090()), box(assessment())))
    assert series(scrape(GpuwatchCollector(session)), "gpuwatch_process_memory_used_bytes") == {}
    opted_in = series(
        scrape(GpuwatchCollector(session, process_metrics=True)), "gpuwatch_process_memory_used_bytes"
    )
    assert opted_in == {"container=,gpu=0,pid=4242,process=python3 serve.py": 19 * 2**30}


def test_health_counters_accumulate_across_polls_and_staleness_uses_the_wall_clock() -> None:
    session = FakeSession()
    now = [1000.0]
    collector = GpuwatchCollector(session, clock=lambda: now[0])
    before = scrape(collector)
    assert series(before, "gpuwatch_gpu_up") == {}  # no snapshot yet: health only
    assert series(before, "gpuwatch_polls_total") == {"": 0.0}
    assert series(before, "gpuwatch_last_successful_poll_timestamp_seconds") == {}

    alert = Alert("throttle_started", 0, "warning", "GPU 0 throttled: sw_thermal", 1.7e9)
    session.push(snapshot(rtx4090(), errors={"gpu_lost": 1}), box(assessment(), alerts=(alert,)))
    now[0] = 1001.0
    session.push(
        snapshot(rtx4090(), errors={"gpu_lost": 2, "timeout": 1}, timestamp_s=1.7e9 + 1), box(assessment())
    )
    after = scrape(collector)
    assert series(after, "gpuwatch_polls_total") == {"": 2.0}
    assert series(after, "gpuwatch_poll_errors_total") == {
        "kind=gpu_lost": 3.0,
        "kind=nvml_child_restart": 0.0,
        "kind=stale": 0.0,
        "kind=timeout": 1.0,
    }
    assert series(after, "gpuwatch_last_successful_poll_timestamp_seconds") == {"": 1001.0}
    assert series(after, "gpuwatch_poll_duration_seconds") == {"": 0.004}
    assert series(after, "gpuwatch_live_alerts_total") == {"kind=throttle_started,severity=warning": 1.0}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_check_metrics_finds_nothing_to_complain_about() -> None:
    from prometheus_client import generate_latest

    lost = GpuSample(index=1, uuid="GPU-1", name="NVIDIA H100 80GB HBM3", pci_bus_id="0:02", lost=True)
    session = FakeSession((snapshot(rtx4090(), lost), box(assessment(0))))
    registry = CollectorRegistry()
    collector = GpuwatchCollector(session, process_metrics=True)
    registry.register(collector)
    session.push(*session.value)  # type: ignore[misc]
    text = generate_latest(registry)
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.decode().strip() == ""
    assert result.stderr.decode().strip() == ""


# -- the HTTP server ---------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[ExporterServer]:
    registry = CollectorRegistry()
    registry.register(GpuwatchCollector(FakeSession((snapshot(rtx4090()), box(assessment())))))
    srv = ExporterServer(make_app(registry, "simulated NVML: 1x rtx4090"), "127.0.0.1", 0)
    srv.start()
    yield srv
    srv.shutdown()


def get(
    srv: ExporterServer, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_metrics_landing_page_and_unknown_paths(server: ExporterServer) -> None:
    status, headers, body = get(server, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    assert b"gpuwatch_temperature_celsius{" in body
    status, headers, body = get(server, "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert status == 200 and headers["content-type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    assert b"# UNIT gpuwatch_temperature_celsius celsius" in body
    status, headers, body = get(server, "/")
    assert status == 200 and b"href='/metrics'" in body and b"1x rtx4090" in body
    status, _, body = get(server, "/../../etc/passwd")
    assert status == 404
    assert get(server, "/metricsX")[0] == 404


def test_huge_headers_are_refused_and_the_server_keeps_serving(server: ExporterServer) -> None:
    status, _, _ = get(server, "/metrics", {"X-Junk": "a" * 70000})
    assert status == 431
    many = {f"X-H{i}": "v" for i in range(150)}
    assert get(server, "/metrics", many)[0] == 431
    assert get(server, "/" + "a" * 70000)[0] == 414
    assert get(server, "/metrics")[0] == 200


def test_fifty_concurrent_scrapes_all_succeed(server: ExporterServer) -> None:
    barrier = threading.Barrier(50)

    def one(_: int) -> int:
        barrier.wait(timeout=10)
        return get(server, "/metrics")[0]

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(one, range(50)))
    assert statuses == [200] * 50


class CountingCollector(GpuwatchCollector):
    """Counts collect() calls: each one is an encoding of the body the cache should have saved."""

    collects = 0

    def collect(self) -> Iterable[Metric]:
        self.collects += 1
        return super().collect()


@pytest.fixture
def cached() -> Iterator[tuple[FakeSession, CountingCollector, ExporterServer]]:
    """The exporter as `gpuwatch exporter` wires it: bodies cached per collector generation."""
    session = FakeSession()
    collector = CountingCollector(session, clock=lambda: 1000.0)  # no 5 s tick moves the token mid-test
    session.push(snapshot(rtx4090()), box(assessment()))
    registry = CollectorRegistry(support_collectors_without_names=True)
    registry.register(collector)
    srv = ExporterServer(make_app(registry, "cached", generation=collector.generation), "127.0.0.1", 0)
    srv.start()
    yield session, collector, srv
    srv.shutdown()


OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0"}


def test_scrapes_of_one_snapshot_get_the_same_body_encoded_once(
    cached: tuple[FakeSession, CountingCollector, ExporterServer],
) -> None:
    session, collector, srv = cached
    status, headers, first = get(srv, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    assert headers["content-length"] == str(len(first))
    assert b"gpuwatch_polls_total 1.0" in first and b"gpuwatch_temperature_celsius{" in first
    assert get(srv, "/metrics")[2] == first
    assert collector.collects == 1
    # a new snapshot: the next scrape says so, health counters included
    session.push(snapshot(rtx4090(temperature_c=86.0)), box(assessment()))
    _, _, second = get(srv, "/metrics")
    assert second != first and collector.collects == 2
    assert b"gpuwatch_polls_total 2.0" in second
    assert b'gpuwatch_temperature_celsius{gpu="0",uuid="GPU-00000000-4090"} 86.0' in second


def test_openmetrics_and_gzip_variants_are_cached_apart(
    cached: tuple[FakeSession, CountingCollector, ExporterServer],
) -> None:
    _, collector, srv = cached
    _, _, text = get(srv, "/metrics")
    _, headers, om = get(srv, "/metrics", OPENMETRICS)
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert om.rstrip().endswith(b"# EOF") and b"# UNIT gpuwatch_temperature_celsius celsius" in om
    _, headers, zipped = get(srv, "/metrics", {"Accept-Encoding": "gzip"})
    assert headers["content-encoding"] == "gzip" and headers["content-length"] == str(len(zipped))
    assert gzip.decompress(zipped) == text
    _, headers, om_zipped = get(srv, "/metrics", {**OPENMETRICS, "Accept-Encoding": "deflate, gzip;q=0.9"})
    assert headers["content-encoding"] == "gzip" and gzip.decompress(om_zipped) == om
    assert collector.collects == 4
    for extra in ({}, OPENMETRICS, {"Accept-Encoding": "gzip"}, {**OPENMETRICS, "Accept-Encoding": "gzip"}):
        get(srv, "/metrics", extra)
    assert collector.collects == 4  # all four served from the cache


def test_name_filters_bypass_the_cache_and_head_gets_headers_only(
    cached: tuple[FakeSession, CountingCollector, ExporterServer],
) -> None:
    _, collector, srv = cached
    get(srv, "/metrics")
    status, _, body = get(srv, "/metrics?name[]=gpuwatch_gpu_up")
    assert status == 200
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert names == {"gpuwatch_gpu_up"} and collector.collects == 2
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    try:
        conn.request("HEAD", "/metrics")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b""
        assert int(resp.getheader("Content-Length") or 0) == len(get(srv, "/metrics")[2])
    finally:
        conn.close()


def test_listen_spec_parsing() -> None:
    assert parse_listen(":19400") == ("0.0.0.0", 19400)
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    for bad in ("19400", "host:port", "127.0.0.1:70000", "[nothex]:1"):
        with pytest.raises(UserError, match="--listen"):
            parse_listen(bad)


def test_a_busy_port_is_a_one_line_error(server: ExporterServer) -> None:
    with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:{server.port}"):
        ExporterServer(make_app(CollectorRegistry(), ""), "127.0.0.1", server.port)


def test_tls_needs_both_files() -> None:
    with pytest.raises(UserError, match="--tls-cert and --tls-key go together"):
        ExporterServer(make_app(CollectorRegistry(), ""), "127.0.0.1", 0, tls_cert="cert.pem")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_tls_serves_metrics_over_https(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    registry = CollectorRegistry()
    registry.register(GpuwatchCollector(FakeSession((snapshot(rtx4090()), box(assessment())))))
    srv = ExporterServer(make_app(registry, "tls"), "127.0.0.1", 0, tls_cert=str(cert), tls_key=str(key))
    srv.start()
    try:
        assert srv.url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        conn = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=10, context=context)
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        assert resp.status == 200 and b"gpuwatch_gpu_up" in resp.read()
        conn.close()
        # a plain-HTTP client on the TLS port is told so (not an empty reply), and the server survives it
        plain = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        plain.request("GET", "/metrics")
        resp = plain.getresponse()
        assert resp.status == 400 and b"HTTPS server" in resp.read()
        plain.close()
        conn = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=10, context=context)
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        srv.shutdown()
    with pytest.raises(UserError, match="cannot load --tls-cert"):
        ExporterServer(make_app(registry, ""), "127.0.0.1", 0, tls_cert=str(key), tls_key=str(key))


# -- the command -------------------------------------------------------------------------------------


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run(
        [sys.executable, "-m", "gpuwatch", "exporter", *argv], capture_output=True, text=True, timeout=60
    )


def nvml_present() -> bool:
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


@pytest.mark.skipif(nvml_present(), reason="this machine has an NVIDIA driver")
def test_without_a_driver_and_without_sim_the_exporter_exits_with_one_line() -> None:
    result = run_cli("--listen", "127.0.0.1:0")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpuwatch: error:") and "--sim" in lines[0]


def test_bad_command_line_values_are_one_line_errors(tmp_path: Path) -> None:
    result = run_cli("--listen", "localhost", "--sim", "rtx4090")
    assert result.returncode == 2 and result.stderr.strip() == (
        "gpuwatch: error: --listen 'localhost': expected HOST:PORT, :PORT or [IPV6]:PORT with a port 0-65535"
    )
    missing = tmp_path / "missing.pem"
    result = run_cli("--sim", "rtx4090", "--tls-cert", str(missing), "--tls-key", str(missing))
    assert (
        result.returncode == 2
        and result.stderr.strip() == f"gpuwatch: error: --tls-cert {missing}: no such file"
    )


def test_help_documents_the_default_port_and_opt_in_process_metrics() -> None:
    result = run_cli("--help")
    assert (
        ":19400" in result.stdout and "--process-metrics" in result.stdout and "--tls-cert" in result.stdout
    )


# -- Xid, freshness ----------------------------------------------------------------------------------


def test_xid_counts_per_code_and_a_lost_gpu_keeps_the_xid_that_took_it_down() -> None:
    session = FakeSession()
    collector = GpuwatchCollector(session)
    session.push(snapshot(rtx4090(xid_errors_total=2, last_xid=13)), box(assessment()))
    session.push(snapshot(rtx4090(xid_errors_total=3, last_xid=13), timestamp_s=1.7e9 + 1), box(assessment()))
    lost = GpuSample(
        index=0,
        uuid="GPU-00000000-4090",
        name="NVIDIA GeForce RTX 4090",
        pci_bus_id="00000000:01:00.0",
        lost=True,
        xid_errors_total=4,
        last_xid=79,
    )
    session.push(snapshot(lost, timestamp_s=1.7e9 + 2), box())
    samples = scrape(collector)
    assert series(samples, "gpuwatch_gpu_up") == {"gpu=0": 0.0}
    assert series(samples, "gpuwatch_xid_errors_total") == {"gpu=0": 4.0}
    assert series(samples, "gpuwatch_xid_errors_by_code_total") == {"gpu=0,xid=13": 3.0, "gpu=0,xid=79": 1.0}
    assert series(samples, "gpuwatch_xid_last_code") == {"gpu=0": 79.0}
    assert series(samples, "gpuwatch_temperature_celsius") == {}


def test_gpu_info_names_the_cuda_version_the_driver_supports() -> None:
    snap = dataclasses.replace(snapshot(rtx4090()), cuda_driver_version=12080)
    samples = scrape(GpuwatchCollector(FakeSession((snap, box()))))
    (info,) = [labels for name, labels in samples if name == "gpuwatch_gpu_info"]
    assert dict(info)["cuda_driver_version"] == "12.8" and dict(info)["driver_version"] == "580.65.06"


def test_xid_counts_by_code_come_from_telemetry_when_it_counts_them() -> None:
    session = FakeSession()
    collector = GpuwatchCollector(session)
    gpu = rtx4090(xid_errors_total=3, last_xid=79, xid_errors_by_code={"13": 2, "79": 1})
    session.push(snapshot(gpu), box(assessment()))
    samples = scrape(collector)
    assert series(samples, "gpuwatch_xid_errors_by_code_total") == {"gpu=0,xid=13": 2.0, "gpu=0,xid=79": 1.0}
    assert series(samples, "gpuwatch_xid_errors_total") == {"gpu=0": 3.0}


def test_bus_width_is_published_in_bytes() -> None:
    samples = scrape(GpuwatchCollector(FakeSession((snapshot(rtx4090(memory_bus_width_bits=384)), box()))))
    assert series(samples, "gpuwatch_memory_bus_width_bytes") == {"gpu=0": 48.0}
    assert not any(name.endswith("_bits") for name, _ in samples)


@pytest.mark.slow
@pytest.mark.parametrize("devices", ["8xh100", "8xrtx4090"])
def test_a_simulated_8_gpu_host_passes_promtool_and_reading_supported_is_a_minor_share(devices: str) -> None:
    import socket
    import sys
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [sys.executable, "-m", "gpuwatch", "exporter", "--sim", devices, "--listen", f"127.0.0.1:{port}"]
    proc = subprocess.Popen([*argv, "--interval", "0.5"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        text = b""
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/metrics")
                text = conn.getresponse().read()
                conn.close()
                if text.count(b"gpuwatch_gpu_info{") == 8 and b"gpuwatch_temperature_celsius{" in text:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        samples = [line for line in text.decode().splitlines() if line and not line.startswith("#")]
        supported = [line for line in samples if line.startswith("gpuwatch_reading_supported{")]
        assert len(samples) > 300, text[-2000:]
        assert len(supported) / len(samples) < 0.15, supported  # was 36 % with one series per reading
        if shutil.which("promtool") is not None:
            result = subprocess.run(
                ["promtool", "check", "metrics"], input=text, capture_output=True, timeout=30
            )
            assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_a_stale_gpu_is_down_with_its_last_read_time_and_the_poll_time_stops() -> None:
    session = FakeSession()
    now = [5000.0]
    collector = GpuwatchCollector(session, clock=lambda: now[0])
    fresh = [rtx4090(i, uuid=f"GPU-{i}", read_timestamp_s=1.7e9) for i in range(2)]
    session.push(snapshot(*fresh, timestamp_s=1.7e9), box(assessment(0), assessment(1)))
    now[0] = 5010.0
    hung = GpuSample(
        index=0,
        uuid="GPU-0",
        name="NVIDIA GeForce RTX 4090",
        pci_bus_id="0:01",
        read_timestamp_s=1.7e9,
        stale=True,
    )
    still = rtx4090(1, uuid="GPU-1", read_timestamp_s=1.7e9 + 10)
    session.push(snapshot(hung, still, timestamp_s=1.7e9 + 10), box(assessment(1)))
    samples = scrape(collector)
    assert series(samples, "gpuwatch_gpu_up") == {"gpu=0": 0.0, "gpu=1": 1.0}
    assert series(samples, "gpuwatch_gpu_stale") == {"gpu=0": 1.0, "gpu=1": 0.0}
    assert series(samples, "gpuwatch_gpu_last_read_timestamp_seconds") == {
        "gpu=0": 1.7e9,
        "gpu=1": 1.7e9 + 10,
    }
    assert set(series(samples, "gpuwatch_temperature_celsius")) == {"gpu=1"}  # no old value as current
    assert series(samples, "gpuwatch_last_successful_poll_timestamp_seconds") == {"": 5010.0}
    # every GPU hung: the poll time stops where the last real read was
    now[0] = 5020.0
    all_hung = [dataclasses.replace(hung, index=i, uuid=f"GPU-{i}") for i in range(2)]
    session.push(snapshot(*all_hung, timestamp_s=1.7e9 + 20), box())
    samples = scrape(collector)
    assert series(samples, "gpuwatch_last_successful_poll_timestamp_seconds") == {"": 5010.0}
    assert series(samples, "gpuwatch_gpu_up") == {"gpu=0": 0.0, "gpu=1": 0.0}


@pytest.mark.slow
def test_the_port_answers_while_nvml_is_still_starting() -> None:
    """NVML answering slowly from the first call: scrapes get the health series instead of silence."""
    import socket
    import sys
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [sys.executable, "-m", "gpuwatch", "exporter", "--sim", "rtx4090", "--faults", "slow:0:4"]
    proc = subprocess.Popen([*argv, "--listen", f"127.0.0.1:{port}"], stderr=subprocess.PIPE)
    try:
        body = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not body:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/metrics")
                resp = conn.getresponse()
                body = resp.read() if resp.status == 200 else b""
                conn.close()
            except OSError:
                time.sleep(0.1)
        assert b"gpuwatch_polls_total 0.0" in body  # answered before the first poll finished
        assert b"gpuwatch_exporter_start_time_seconds" in body and b"gpuwatch_temperature_celsius" not in body
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_the_source_phase_is_published_and_moves_the_body_without_a_snapshot() -> None:
    from gpuwatch.exporter.collector import PendingSession
    from gpuwatch.telemetry.source import SourceState

    pending = PendingSession()
    now = [1000.0]
    collector = GpuwatchCollector(pending, clock=lambda: now[0])
    assert series(scrape(collector), "gpuwatch_source_phase") == {
        "phase=starting": 1.0,
        "phase=running": 0.0,
        "phase=restarting": 0.0,
        "phase=failed": 0.0,
    }

    class Source:
        phase = "starting"

        def state(self) -> SourceState:
            return SourceState(self.phase, "NVML init: driver not loaded")  # type: ignore[arg-type]

    class Session(FakeSession):
        source = Source()

    session = Session()
    pending.attach(session)
    before = collector.generation()
    Session.source.phase = "failed"
    assert collector.generation() != before  # the cached body is re-encoded: no snapshot needed
    assert series(scrape(collector), "gpuwatch_source_phase")["phase=failed"] == 1.0
    token = collector.generation()
    now[0] += 5
    assert collector.generation() != token  # and every 5 s anyway, for the health series


def test_new_readings_in_base_units_and_a_card_without_nvlink_says_so_once() -> None:
    gpu = rtx4090(
        memory_free_bytes=3 * 2**30,
        memory_reserved_bytes=2**29,
        video_clock_hz=1.8e9,
        encoder_util_ratio=0.25,
        pcie_replay_errors_total=7,
        ecc_errors_corrected_aggregate_total=12,
        retired_pages_double_bit_total=1,
        vbios_version="95.02.3C.00.8E",
        compute_capability="8.9",
    )
    samples = scrape(GpuwatchCollector(FakeSession((snapshot(gpu), box()))))
    assert series(samples, "gpuwatch_memory_free_bytes") == {"gpu=0": 3 * 2**30}
    assert series(samples, "gpuwatch_memory_reserved_bytes") == {"gpu=0": 2**29}
    assert series(samples, "gpuwatch_clock_hertz")["clock=video,gpu=0"] == 1.8e9
    assert series(samples, "gpuwatch_encoder_busy_ratio") == {"gpu=0": 0.25}
    assert series(samples, "gpuwatch_decoder_busy_ratio") == {}  # not given: absent, never 0
    assert series(samples, "gpuwatch_pcie_replay_errors_total") == {"gpu=0": 7.0}
    assert series(samples, "gpuwatch_ecc_errors_aggregate_total") == {"gpu=0,kind=corrected": 12.0}
    assert series(samples, "gpuwatch_retired_pages_total") == {"cause=double_bit,gpu=0": 1.0}
    (info,) = [dict(labels) for name, labels in samples if name == "gpuwatch_gpu_info"]
    assert info["vbios_version"] == "95.02.3C.00.8E" and info["compute_capability"] == "8.9"
    supported = series(samples, "gpuwatch_reading_supported")
    assert supported["gpu=0,reading=nvlink_bytes"] == 0.0 and supported["gpu=0,reading=nvlink_errors"] == 0.0
    assert not any("nvlink_tx" in key for key in supported)  # one series per family, not per counter
    assert "gpu=0,reading=retired_pages" not in supported  # one of its counters is given
