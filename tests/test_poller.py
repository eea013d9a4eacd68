"""The real poller over the simulated NVML: readings per scenario, flags, unsupported calls, fallbacks."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

sim_mod = pytest.importorskip("gpuwatch.telemetry.simulated", reason="simulated NVML not available yet")
if not hasattr(sim_mod, "install"):
    pytest.skip(
        "gpuwatch.telemetry.simulated.install not available yet (SIM in progress)", allow_module_level=True
    )

from gpuwatch.telemetry.poller import NvmlPoller, SimSpec  # noqa: E402
from gpuwatch.telemetry.sample import ClockEventReason, Snapshot, Unavailable  # noqa: E402

SimFactory = Callable[..., tuple[object, NvmlPoller]]


@pytest.fixture
def box() -> Iterator[SimFactory]:
    """Install a manual-clock simulated box and open a poller over it (driven with poll_once)."""
    pollers: list[NvmlPoller] = []

    def make(devices: str, **kw: object) -> tuple[object, NvmlPoller]:
        sim = sim_mod.install(devices, manual_clock=True, **kw)
        poller = NvmlPoller(interval_s=0.5, clock=sim.now_s, sim=SimSpec(devices), backoff_initial_s=2.0)
        poller.start(background=False)
        pollers.append(poller)
        return sim, poller

    yield make
    for p in pollers:
        p.stop()
    sim_mod.uninstall()


def run(sim: object, poller: NvmlPoller, seconds: int, step_s: float = 1.0) -> list[Snapshot]:
    snaps = []
    for _ in range(int(seconds / step_s)):
        sim.advance(step_s)  # type: ignore[attr-defined]
        snaps.append(poller.poll_once())
    return snaps


SCENARIOS = ("idle", "decode", "decode-batched", "prefill", "training", "failing-fan", "power-capped")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_gives_consistent_readings(box: SimFactory, scenario: str) -> None:
    sim, poller = box("rtx4090,h100-sxm", scenario=scenario)
    snaps = run(sim, poller, 30)  # t=30 s: inside a decode request, not in a gap between requests
    first, last = snaps[0], snaps[-1]
    assert [g.name for g in last.gpus] == ["NVIDIA GeForce RTX 4090", "NVIDIA H100 80GB HBM3"]
    for a, b in zip(first.gpus, last.gpus, strict=True):
        assert not b.lost
        # energy is an exact integral: its delta over time is the mean power, between idle and the limit
        mean_power_w = (b.energy_j - a.energy_j) / (last.timestamp_s - first.timestamp_s)
        assert 10.0 < mean_power_w <= b.power_limit_max_w * 1.02
        assert b.power_w is not None and 0 < b.power_w <= b.power_limit_w * 1.05
        assert b.temperature_c is not None and 15.0 < b.temperature_c < b.shutdown_temperature_c
        assert b.slowdown_margin_c == pytest.approx(b.slowdown_temperature_c - b.temperature_c)
        assert 0 < b.sm_clock_hz <= b.sm_clock_max_hz
        assert 0 <= b.memory_used_bytes <= b.memory_total_bytes  # an idle H100 reads 0 MiB (capture)
        assert 0.0 <= b.sm_busy_ratio <= 1.0 and 0.0 <= b.memory_controller_busy_ratio <= 1.0
        assert b.clock_event_reasons is not None and b.performance_state is not None
        assert b.pcie_link_gen is not None and b.pcie_link_width_max is not None
    g4090, h100 = last.gpus
    # GeForce: no GPM, no memory temperature; Hopper: GPM over the poll interval, no fan
    assert g4090.gpm is None and g4090.unavailable["gpm"] is Unavailable.NOT_SUPPORTED
    assert g4090.memory_temperature_c is None
    assert g4090.unavailable["memory_temperature_c"] is Unavailable.NOT_SUPPORTED
    assert h100.fan_speed_ratio is None and h100.unavailable["fan_speed_ratio"] is Unavailable.NOT_SUPPORTED
    assert g4090.fan_speed_ratio is not None
    assert h100.gpm is not None and h100.gpm.interval_s == pytest.approx(1.0)
    assert h100.gpm.dram_bandwidth_util_ratio is not None and 0.0 <= h100.gpm.dram_bandwidth_util_ratio <= 1.0
    if scenario == "idle":
        assert all(g.clock_event_reasons & ClockEventReason.GPU_IDLE for g in last.gpus)
        assert all(g.sm_busy_ratio < 0.05 for g in last.gpus)
        assert h100.gpm.dram_bandwidth_util_ratio < 0.05
    if scenario == "decode":
        # memory-bound: GPM measures DRAM bandwidth well above the tensor-pipe share
        assert h100.gpm.dram_bandwidth_util_ratio > 0.5
        assert h100.gpm.tensor_util_ratio < 0.3
    if scenario in ("decode", "decode-batched", "training"):
        assert g4090.processes and g4090.processes[0].name and g4090.processes[0].used_memory_bytes > 0


def test_power_capped_card_sets_the_flag_and_counts_violation_time(box: SimFactory) -> None:
    sim, poller = box("rtx4090", scenario="power-capped")
    snaps = run(sim, poller, 30)
    gpu = snaps[-1].gpus[0]
    assert gpu.power_limit_w == pytest.approx(0.6 * gpu.power_limit_default_w, rel=0.05)
    assert gpu.clock_event_reasons & ClockEventReason.SW_POWER_CAP
    assert gpu.throttling and "sw_power_cap" in gpu.throttle_reason_names
    assert gpu.sm_clock_hz < gpu.sm_clock_max_hz
    # violation counter is in ns in NVML, seconds here: it grows by ~ the time spent capped
    before = snaps[-11].gpus[0].clock_event_seconds_total["sw_power_cap"]
    after = gpu.clock_event_seconds_total["sw_power_cap"]
    assert 5.0 < after - before <= 10.0 + 1e-6


def test_failing_fan_heats_into_thermal_slowdown(box: SimFactory) -> None:
    sim, poller = box("rtx4090", scenario="failing-fan")
    snaps = run(sim, poller, 600, step_s=5.0)
    temps = [s.gpus[0].temperature_c for s in snaps]
    assert temps[-1] > temps[0] + 20
    gpu = snaps[-1].gpus[0]
    assert gpu.fan_speed_ratio == pytest.approx(0.2, abs=0.02)
    assert gpu.clock_event_reasons & (ClockEventReason.SW_THERMAL | ClockEventReason.HW_THERMAL)
    assert gpu.slowdown_margin_c is not None and gpu.slowdown_margin_c < 10
    assert (
        gpu.clock_event_seconds_total["sw_thermal"] + gpu.clock_event_seconds_total.get("hw_thermal", 0) > 0
    )


def test_peak_bandwidth_from_nvml_clock_and_bus_width(box: SimFactory) -> None:
    _, poller = box("rtx4090,h100-sxm")
    g4090, h100 = poller.poll_once().gpus
    assert g4090.memory_bus_width_bits == 384
    assert g4090.peak_memory_bandwidth_bytes_s == pytest.approx(1008e9, rel=0.01)
    assert h100.peak_memory_bandwidth_bytes_s == pytest.approx(3.35e12, rel=0.01)


def test_not_supported_is_probed_once_not_every_poll(box: SimFactory) -> None:
    sim, poller = box("h100-sxm")
    run(sim, poller, 5)
    # the passive H100 answers NOT_SUPPORTED to the fan count once; no fan call is made again
    fan_calls = {k: v for k, v in sim.calls.items() if "Fan" in k}
    assert fan_calls == {"nvmlDeviceGetNumFans": 1}
    sim.inject("not_supported", 0, call="nvmlDeviceGetPowerManagementLimit")  # unused call: no effect
    sim.inject("not_supported", 0, call="nvmlDeviceGetUtilizationRates")
    before = sim.calls.get("nvmlDeviceGetUtilizationRates", 0)
    snaps = run(sim, poller, 5)
    assert sim.calls.get("nvmlDeviceGetUtilizationRates", 0) == before + 1
    assert all(s.gpus[0].sm_busy_ratio is None for s in snaps)
    assert snaps[-1].gpus[0].unavailable["sm_busy_ratio"] is Unavailable.NOT_SUPPORTED
    assert snaps[-1].gpus[0].power_w is not None  # everything else still read


def test_no_permission_costs_only_that_reading(box: SimFactory) -> None:
    sim, poller = box("rtx4090", faults="noperm:0:processes")
    gpu = run(sim, poller, 2)[-1].gpus[0]
    assert gpu.processes is None and gpu.unavailable["processes"] is Unavailable.NO_PERMISSION
    assert gpu.temperature_c is not None and gpu.energy_j is not None


def test_old_driver_falls_back_to_older_symbols(box: SimFactory) -> None:
    sim, poller = box("rtx4090,h100-sxm", driver="r470")
    g4090, h100 = run(sim, poller, 3)[-1].gpus
    dev = poller.reader.devices[0]
    assert g4090.temperature_c is not None
    assert dev.fallbacks["temperature_c"] == "nvmlDeviceGetTemperature"
    assert g4090.clock_event_reasons is not None
    assert dev.fallbacks["clock_event_reasons"] == "nvmlDeviceGetCurrentClocksThrottleReasons"
    # no nvmlDeviceGetMemoryBusWidth on r470: the catalog supplies bus width and peak bandwidth
    assert g4090.memory_bus_width_bits == 384
    assert g4090.peak_memory_bandwidth_bytes_s == pytest.approx(1008e9, rel=0.01)
    assert h100.gpm is None and h100.unavailable["gpm"] is Unavailable.FUNCTION_NOT_FOUND


def test_xid_events_are_counted_per_gpu(box: SimFactory) -> None:
    sim, poller = box("rtx4090,rtx4090")
    poller.poll_once()
    sim.emit_xid(1, 79)
    sim.emit_xid(1, 48)
    for _ in range(50):  # the event thread wakes within its 200 ms wait
        sim.advance(0.1)
        snap = poller.poll_once()
        if snap.gpus[1].xid_errors_total == 2:
            break
    assert snap.gpus[1].xid_errors_total == 2 and snap.gpus[1].last_xid == 48
    assert snap.gpus[0].xid_errors_total == 0


def test_lost_gpu_is_marked_others_polled_and_recovers_after_backoff(box: SimFactory) -> None:
    sim, poller = box("rtx4090,rtx4090,rtx4090", scenario="decode")
    before = run(sim, poller, 2)[-1]
    sim.inject("gpu_lost", 1)
    snaps = run(sim, poller, 6)
    lost = snaps[-1].gpus[1]
    assert (
        lost.lost and lost.temperature_c is None and lost.unavailable["temperature_c"] is Unavailable.GPU_LOST
    )
    assert (lost.uuid, lost.pci_bus_id) == (before.gpus[1].uuid, before.gpus[1].pci_bus_id)  # identity kept
    assert lost.name == "NVIDIA GeForce RTX 4090"
    energies = [s.gpus[0].energy_j for s in snaps]
    assert energies == sorted(energies) and energies[-1] > energies[0]  # others keep being polled
    assert not snaps[-1].gpus[2].lost
    sim.inject("clear", 1)
    recovered = run(sim, poller, 20)
    assert not recovered[-1].gpus[1].lost and recovered[-1].gpus[1].temperature_c is not None
    # back-off: not re-initialised on the very next poll after the fault cleared
    assert recovered[0].gpus[1].lost


def test_timestamps_follow_the_simulated_clock(box: SimFactory) -> None:
    sim, poller = box("rtx4090")
    snaps = run(sim, poller, 3)
    assert [s.timestamp_s - snaps[0].timestamp_s for s in snaps] == [0.0, 1.0, 2.0]
    assert snaps[-1].timestamp_s == sim.now_s()
    assert snaps[-1].source == "sim" and snaps[-1].driver_version
    # history rate of the energy counter equals the mean power
    rate = poller.history.rate(0, "energy_j", 10.0)
    assert rate is not None and 20.0 < rate < 600.0


def test_processes_and_reliability_counters_are_read_on_the_slow_tier(box: SimFactory) -> None:
    sim, poller = box("rtx4090", scenario="decode")
    snaps = run(sim, poller, 1)
    per_read = sim.calls["nvmlDeviceGetComputeRunningProcesses_v3"]  # pynvml sizes, then fetches
    snaps += run(sim, poller, 9)
    # the process list is fetched once per SLOW_TIER_EVERY (5) polls, not on every poll ...
    assert sim.calls["nvmlDeviceGetComputeRunningProcesses_v3"] == 2 * per_read
    # ... yet every snapshot carries the list and the remap counters (reused between reads)
    assert all(s.gpus[0].processes for s in snaps)
    assert all(s.gpus[0].remapped_rows_correctable is not None for s in snaps)
    assert all("processes" not in s.gpus[0].unavailable for s in snaps)


def test_a_hung_gpu_does_not_keep_a_recovered_one_marked_lost() -> None:
    sim = sim_mod.install("rtx4090,rtx4090", manual_clock=True)
    poller = NvmlPoller(
        interval_s=0.05, clock=sim.now_s, sim=SimSpec("2xrtx4090"), backoff_initial_s=1.0, xid_events=False
    )
    poller.start(background=False)
    try:
        run(sim, poller, 2)
        sim.inject("slow", 0, latency_s=0.2)  # every call on GPU 0 now hangs for a while
        sim.inject("gpu_lost", 1)
        assert run(sim, poller, 3)[-1].gpus[1].lost
        sim.inject("clear", 1)  # GPU 1 is back; GPU 0 is still inside a read
        snaps = run(sim, poller, 6)
        assert not snaps[-1].gpus[1].lost and snaps[-1].gpus[1].temperature_c is not None
        assert snaps[-1].errors.get("stale", 0) >= 1  # GPU 0 really was still busy
    finally:
        sim.inject("clear", 0)
        poller.stop()
        sim_mod.uninstall()


def test_a_zero_bus_width_or_max_clock_is_absent_not_zero(
    box: SimFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GB10-like: NVML answers 0 bits and 0 MHz, and the card is not in the catalog
    import pynvml

    from gpuwatch.telemetry import nvml_reader

    real_max_clock = pynvml.nvmlDeviceGetMaxClockInfo
    monkeypatch.setattr(nvml_reader, "identify_gpu", lambda pci, name: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryBusWidth", lambda h: 0)
    monkeypatch.setattr(
        pynvml,
        "nvmlDeviceGetMaxClockInfo",
        lambda h, t: 0 if t == pynvml.NVML_CLOCK_MEM else real_max_clock(h, t),
    )
    _, poller = box("rtx4090")
    gpu = poller.poll_once().gpus[0]
    for reading in ("memory_bus_width_bits", "memory_clock_max_hz", "peak_memory_bandwidth_bytes_s"):
        assert getattr(gpu, reading) is None
        assert gpu.unavailable[reading] is Unavailable.NOT_SUPPORTED, reading
    assert gpu.sm_clock_max_hz is not None


#: What a real RTX 4080 SUPER under load reported (nvidia-smi -q, "load :: query (-q)", PCI > Tx/Rx
#: Throughput; nvidia_gpu_exporter's capture linux-x86_64__nvidia-geforce-rtx-4080-super__595.71.05.txt).
#: nvidia-smi prints NVML's nvmlDeviceGetPcieThroughput answer as is, in KB/s; NVML documents the call
#: in KB/s and nvitop (api/device.py, pcie_throughput: "in KiB/s") reads a KB as 1024 bytes.
CAPTURED_PCIE_KB_S = {"Tx": 174169, "Rx": 1436230}
CAPTURE = "linux-x86_64__nvidia-geforce-rtx-4080-super__595.71.05.txt"


def _capture_text() -> str | None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for folder in (
        root / "shared" / "captures",
        root.parent / "shared" / "captures",
        root / "tests" / "data" / "captures",
    ):
        if (folder / CAPTURE).is_file():
            return (folder / CAPTURE).read_text(errors="replace")
    return None


def test_the_captured_pcie_figures_are_what_the_real_card_printed() -> None:
    text = _capture_text()
    if text is None:
        pytest.skip(f"{CAPTURE} not beside this checkout (shared/captures)")
    load = text[text.index("# load :: query (-q)") :]
    for direction, kb_s in CAPTURED_PCIE_KB_S.items():
        assert f"{direction} Throughput" in load
        line = next(ln for ln in load.splitlines() if f"{direction} Throughput" in ln)
        assert line.split(":")[1].strip() == f"{kb_s} KB/s"


def test_pcie_throughput_is_read_as_nvml_documents_it(
    box: SimFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader turns NVML's KB/s into bytes/s: the real card's raw answers, not our own constant."""
    import pynvml

    raw = {
        pynvml.NVML_PCIE_UTIL_TX_BYTES: CAPTURED_PCIE_KB_S["Tx"],
        pynvml.NVML_PCIE_UTIL_RX_BYTES: CAPTURED_PCIE_KB_S["Rx"],
    }
    monkeypatch.setattr(pynvml, "nvmlDeviceGetPcieThroughput", lambda h, counter: raw[counter])
    sim, poller = box("rtx4090", scenario="decode")
    gpu = run(sim, poller, 2)[-1].gpus[0]
    assert gpu.pcie_tx_bytes_s == 174169 * 1024  # 178.3 MB/s
    assert gpu.pcie_rx_bytes_s == 1436230 * 1024  # 1.47 GB/s, well inside a Gen4 x16 link
    assert gpu.pcie_rx_bytes_s < 32e9


def test_a_card_known_only_by_pci_id_gets_catalog_bandwidth_and_is_in_the_catalog(
    box: SimFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a board whose NVML name the catalog does not list (OEM/driver naming), no usable bus width:
    # the PCI device id alone must identify it, for the reader's bandwidth and the assessor alike
    import pynvml

    from gpuwatch.live.assessor import Assessor
    from gpuwatch.live.config import LiveConfig, parse_workload
    from gpuwatch.model.catalog import get_gpu

    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lambda h: "NVIDIA Board 2684 (OEM)")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryBusWidth", lambda h: 0)
    sim, poller = box("rtx4090", scenario="decode")
    snap = run(sim, poller, 3)[-1]
    gpu = snap.gpus[0]
    spec = get_gpu("rtx4090")
    assert gpu.name == "NVIDIA Board 2684 (OEM)" and gpu.catalog_id == "rtx4090"
    assert gpu.pci_device_id in spec.pci_device_ids
    assert gpu.memory_bus_width_bits == spec.memory_bus_width_bits
    config = LiveConfig(workload=parse_workload("llama-3-8b:fp16:batch=8"))
    assessed = Assessor(config).assess(snap, poller.history, ()).gpus[0]
    assert assessed.gpu_id == "rtx4090"
    assert "not in the catalog" not in (assessed.bound.detail or "")
    assert assessed.roofline is not None


def test_an_older_recording_is_identified_on_load(tmp_path: object) -> None:
    # files written before catalog_id existed read back identified by the same matcher as live cards
    from pathlib import Path

    from gpuwatch.telemetry.recording import RecordWriter, read_recording
    from gpuwatch.telemetry.sample import GpuSample

    path = Path(str(tmp_path)) / "old.gwrec"
    old = GpuSample(index=0, uuid="GPU-0", name="NVIDIA H100 80GB HBM3", pci_bus_id="0:1", temperature_c=50.0)
    with RecordWriter(path) as writer:
        writer.write(Snapshot(1000.0, "nvml", (old,)))
    (back,) = list(read_recording(path))
    assert back.gpus[0].catalog_id == "h100-sxm" and not back.gpus[0].stale


def test_the_readings_operators_get_elsewhere_where_nvml_gives_them(box: SimFactory) -> None:
    # which card answers what follows the real captures (shared/captures, "query (-q)"): the H100 and
    # L40S count ECC (0), GeForce says N/A; retired pages are N/A on all four cards (Ampere+ remap rows)
    sim, poller = box("h100-sxm,rtx4090", scenario="decode")
    snaps = run(sim, poller, 6)
    h100, g4090 = snaps[-1].gpus
    for g in (h100, g4090):
        assert g.memory_reserved_bytes is not None and g.memory_reserved_bytes > 0
        assert g.memory_free_bytes == g.memory_total_bytes - g.memory_reserved_bytes - g.memory_used_bytes
        assert g.encoder_util_ratio == 0.0 and g.decoder_util_ratio == 0.0
        assert g.video_clock_hz is not None and g.video_clock_hz > 0
        assert g.pcie_replay_errors_total == 0
        assert g.vbios_version
        assert g.retired_pages_single_bit_total is None
        assert g.unavailable["retired_pages_single_bit_total"] is Unavailable.NOT_SUPPORTED
    assert (h100.compute_capability, g4090.compute_capability) == ("9.0", "8.9")
    assert h100.ecc_errors_corrected_aggregate_total == 0 and h100.ecc_errors_uncorrected_aggregate_total == 0
    assert g4090.ecc_errors_corrected_aggregate_total is None
    assert g4090.unavailable["ecc_errors_corrected_aggregate_total"] is Unavailable.NOT_SUPPORTED
    # NVLink: the SXM H100 has 18 links, byte counters that only grow and error counters at 0
    assert h100.nvlink_tx_bytes_total is not None and h100.nvlink_rx_bytes_total is not None
    assert snaps[0].gpus[0].nvlink_tx_bytes_total <= h100.nvlink_tx_bytes_total  # type: ignore[operator]
    assert h100.nvlink_crc_flit_errors_total == 0 and h100.nvlink_replay_errors_total == 0
    assert g4090.nvlink_tx_bytes_total is None
    assert g4090.unavailable["nvlink_tx_bytes_total"] is Unavailable.NOT_SUPPORTED
    assert g4090.unavailable["nvlink_crc_flit_errors_total"] is Unavailable.NOT_SUPPORTED
    assert snaps[-1].cuda_driver_version  # the CUDA driver version travels on the snapshot


def test_xid_events_are_counted_per_code_and_a_lost_gpu_keeps_the_xid_that_took_it_down() -> None:
    sim = sim_mod.install("rtx4090,rtx4090", manual_clock=True, faults="xid:0:48@1,xid:0:48@2,lost:1@3")
    poller = NvmlPoller(interval_s=0.05, clock=sim.now_s, sim=SimSpec("2xrtx4090"), backoff_initial_s=60.0)
    poller.start(background=False)
    try:
        for _ in range(100):  # the event thread wakes within its wait
            sim.advance(0.1)
            snap = poller.poll_once()
            if snap.gpus[1].lost and snap.gpus[1].xid_errors_by_code and snap.gpus[0].xid_errors_total == 2:
                break
        assert snap.gpus[0].xid_errors_by_code == {"48": 2} and snap.gpus[0].last_xid == 48
        lost = snap.gpus[1]
        assert lost.lost and lost.xid_errors_by_code == {"79": 1} and lost.xid_errors_total == 1
    finally:
        poller.stop()
        sim_mod.uninstall()


def test_attach_lists_the_gpus_without_polling_and_start_then_polls() -> None:
    """What the TUI's first frame relies on: the names are known before the first poll, and attaching
    starts nothing that polls (the first poll waits for the live view)."""
    import threading
    import time

    sim = sim_mod.install("rtx4090,h100-sxm")
    poller = NvmlPoller(interval_s=0.05, clock=sim.now_s, sim=SimSpec("rtx4090,h100-sxm"))
    try:
        poller.attach()
        assert poller.reader is not None
        assert [d.name for d in poller.reader.devices] == ["NVIDIA GeForce RTX 4090", "NVIDIA H100 80GB HBM3"]
        time.sleep(0.3)  # six intervals
        assert poller.latest() is None
        polled = threading.Event()
        poller.add_listener(lambda snap: polled.set())
        poller.start()
        assert polled.wait(10.0)
        assert [g.index for g in poller.latest().gpus] == [0, 1]  # type: ignore[union-attr]
    finally:
        poller.stop()
        sim_mod.uninstall()
