"""The Prometheus face of a live session: a custom collector over the latest snapshot and assessment.

A scrape only reads what the poll thread already produced (``LiveSession.latest()`` never blocks),
so a slow or wedged NVML never stalls Prometheus, and the poll interval is independent of the scrape
interval. A reading the card cannot give is *omitted*, never published as NaN or 0: absent series are
what PromQL's ``absent()`` and dashboards' "no data" understand, and ``gpuwatch_reading_supported``
says which readings each GPU lacks. Counters that must survive between scrapes (polls, errors by
kind) are accumulated by a session listener, because each snapshot carries only its own poll's errors.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from gpuwatch import __version__
from gpuwatch.live.assessment import BoundKind, BoxAssessment, GpuAssessment, Provenance
from gpuwatch.telemetry.engines import EngineReading
from gpuwatch.telemetry.sample import ClockEventReason, GpuSample, Snapshot, Unavailable, reason_names
from gpuwatch.telemetry.source import SourceState

#: labels every per-GPU series carries; nothing high-cardinality (process metrics are opt-in)
GPU_LABELS = ("gpu", "uuid")

#: unavailability reasons that mean "this card/driver cannot give it" rather than "failed this poll"
_UNSUPPORTED = frozenset(
    {Unavailable.NOT_SUPPORTED, Unavailable.FUNCTION_NOT_FOUND, Unavailable.NO_PERMISSION}
)


class SessionLike(Protocol):
    """What the collector needs from ``gpuwatch.live.session.LiveSession``."""

    def latest(self) -> tuple[Snapshot, BoxAssessment] | None: ...

    def add_listener(self, fn: Callable[[Snapshot, BoxAssessment], None]) -> None: ...


class PendingSession:
    """A session that is not open yet: the exporter binds and answers from its first second (health
    series only) while the real session opens, then forwards to it."""

    def __init__(self) -> None:
        self._session: SessionLike | None = None
        self._listeners: list[Callable[[Snapshot, BoxAssessment], None]] = []

    def attach(self, session: SessionLike) -> None:
        for fn in self._listeners:
            session.add_listener(fn)
        self._session = session

    def latest(self) -> tuple[Snapshot, BoxAssessment] | None:
        session = self._session
        return session.latest() if session is not None else None

    @property
    def assessor(self) -> object | None:
        """The open session's assessor (None while opening): a scrape asks it for the power advice."""
        return getattr(self._session, "assessor", None)

    def add_listener(self, fn: Callable[[Snapshot, BoxAssessment], None]) -> None:
        if self._session is not None:
            self._session.add_listener(fn)
        else:
            self._listeners.append(fn)

    @property
    def engines(self) -> object | None:
        """The open session's engine watcher (None while opening, or without --engine): the engine
        series read it through here."""
        return getattr(self._session, "engines", None)

    def source_state(self) -> SourceState:
        """The source's state (the NVML supervisor's phase); "starting" while the session opens."""
        source = getattr(self._session, "source", None)
        if source is None:
            return SourceState("starting", "opening the session")
        state: SourceState = source.state()
        return state


@dataclass(frozen=True)
class Reading:
    """One GpuSample field published as one gauge (or counter) per GPU."""

    field: str
    metric: str
    help: str
    unit: str = ""
    counter: bool = False
    #: multiplies the field's value into the metric's base unit
    scale: float = 1.0


#: plain per-GPU readings; the metric name carries the base unit (Prometheus naming conventions)
READINGS: tuple[Reading, ...] = (
    Reading("temperature_c", "gpuwatch_temperature_celsius", "GPU core temperature.", "celsius"),
    Reading(
        "memory_temperature_c",
        "gpuwatch_memory_temperature_celsius",
        "Memory (HBM) temperature; absent where the card does not report it (GeForce).",
        "celsius",
    ),
    Reading(
        "slowdown_margin_c",
        "gpuwatch_slowdown_margin_celsius",
        "Distance to the nearest thermal slowdown threshold (Ada and newer report margins).",
        "celsius",
    ),
    Reading(
        "power_w", "gpuwatch_power_watts", "Board power draw (1 s average on Ampere+ except GA100).", "watts"
    ),
    Reading("power_instant_w", "gpuwatch_power_instant_watts", "Instantaneous board power draw.", "watts"),
    Reading(
        "power_limit_w", "gpuwatch_power_limit_watts", "Enforced power limit, after all limiters.", "watts"
    ),
    Reading("power_limit_min_w", "gpuwatch_power_limit_min_watts", "Lowest settable power limit.", "watts"),
    Reading("power_limit_max_w", "gpuwatch_power_limit_max_watts", "Highest settable power limit.", "watts"),
    Reading("power_limit_default_w", "gpuwatch_power_limit_default_watts", "Default power limit.", "watts"),
    Reading(
        "energy_j",
        "gpuwatch_energy_joules",
        "Energy consumed since the driver was last loaded (NVML's exact integral).",
        "joules",
        counter=True,
    ),
    Reading("memory_used_bytes", "gpuwatch_memory_used_bytes", "Device memory in use.", "bytes"),
    Reading("memory_total_bytes", "gpuwatch_memory_total_bytes", "Device memory in total.", "bytes"),
    Reading(
        "memory_free_bytes",
        "gpuwatch_memory_free_bytes",
        "Device memory free: total - reserved - used (NVML memory info v2).",
        "bytes",
    ),
    Reading(
        "memory_reserved_bytes",
        "gpuwatch_memory_reserved_bytes",
        "Device memory the driver and firmware keep back (NVML memory info v2).",
        "bytes",
    ),
    Reading(
        "encoder_util_ratio",
        "gpuwatch_encoder_busy_ratio",
        "Share of NVML's sampling period the video encoder was busy, 0..1.",
        "ratio",
    ),
    Reading(
        "decoder_util_ratio",
        "gpuwatch_decoder_busy_ratio",
        "Share of NVML's sampling period the video decoder was busy, 0..1.",
        "ratio",
    ),
    Reading(
        "pcie_replay_errors_total",
        "gpuwatch_pcie_replay_errors",
        "PCIe replays since reset: a rising count means a bad link, riser or slot.",
        counter=True,
    ),
    Reading(
        "memory_bus_width_bits",
        "gpuwatch_memory_bus_width_bytes",
        "Memory bus width in bytes (bits / 8: Prometheus names carry base units), e.g. 48 for 384 bits.",
        "bytes",
        scale=1 / 8,
    ),
    Reading(
        "sm_busy_ratio",
        "gpuwatch_sm_busy_ratio",
        "Share of the sample period in which at least one kernel ran (NVML utilization.gpu), 0..1.",
        "ratio",
    ),
    Reading(
        "memory_controller_busy_ratio",
        "gpuwatch_memory_controller_busy_ratio",
        "Share of the sample period in which device memory was read or written, 0..1. A duty cycle, "
        "NOT a share of bandwidth: see gpuwatch_memory_bandwidth_attained_bytes_per_second.",
        "ratio",
    ),
    Reading(
        "pcie_link_gen",
        "gpuwatch_pcie_link_generation",
        "Current PCIe link generation (down-trains at idle).",
    ),
    Reading(
        "pcie_link_gen_max",
        "gpuwatch_pcie_link_generation_max",
        "Highest PCIe generation of device and host.",
    ),
    Reading("pcie_link_width", "gpuwatch_pcie_link_width_lanes", "Current PCIe link width.", "lanes"),
    Reading("pcie_link_width_max", "gpuwatch_pcie_link_width_max_lanes", "Highest PCIe link width.", "lanes"),
    Reading(
        "fan_speed_ratio",
        "gpuwatch_fan_speed_ratio",
        "Intended fan speed, 0..1 (may exceed 1); absent on passively cooled cards.",
        "ratio",
    ),
    Reading("performance_state", "gpuwatch_performance_state", "Performance state (0 = P0, fastest .. 15)."),
    Reading(
        "remap_pending", "gpuwatch_row_remap_pending", "1 while a memory row remap waits for a GPU reset."
    ),
    Reading(
        "remap_failure", "gpuwatch_row_remap_failure", "1 when a memory row remap failed (an RMA criterion)."
    ),
    Reading(
        "retired_pages_pending",
        "gpuwatch_retired_pages_pending",
        "1 while a retired memory page waits for a reboot (pre-Ampere cards).",
    ),
    Reading(
        "recovery_action",
        "gpuwatch_recovery_action",
        "Recovery action the driver requests: 0 none, 1 GPU reset, 2 node reboot, 3 drain P2P, "
        "4 drain and reset.",
    ),
    Reading(
        "last_xid",
        "gpuwatch_xid_last_code",
        "Code of the most recent XID error seen since the exporter started.",
    ),
)

#: per-GPU readings published with a distinguishing label: (field, label value)
_THRESHOLDS = (
    ("slowdown_temperature_c", "slowdown"),
    ("shutdown_temperature_c", "shutdown"),
    ("max_operating_temperature_c", "max_operating"),
)
_CLOCKS = (
    ("sm_clock_hz", "sm"),
    ("memory_clock_hz", "memory"),
    ("graphics_clock_hz", "graphics"),
    ("video_clock_hz", "video"),
)
_MAX_CLOCKS = (
    ("sm_clock_max_hz", "sm"),
    ("memory_clock_max_hz", "memory"),
    ("graphics_clock_max_hz", "graphics"),
)
_PCIE = (("pcie_tx_bytes_s", "tx"), ("pcie_rx_bytes_s", "rx"))
_REMAPPED = (("remapped_rows_correctable", "correctable"), ("remapped_rows_uncorrectable", "uncorrectable"))
_ECC = (("ecc_errors_corrected_total", "corrected"), ("ecc_errors_uncorrected_total", "uncorrected"))


#: counter families whose support is reported once per family (a card without NVLink lacks all of it:
#: one ``reading_supported`` series says so, not one per counter)
@dataclass(frozen=True)
class CounterGroup:
    reading: str  # the name gpuwatch_reading_supported uses
    metric: str  # without _total
    label: str
    fields: tuple[tuple[str, str], ...]
    help: str
    unit: str = ""


COUNTER_GROUPS: tuple[CounterGroup, ...] = (
    CounterGroup(
        "nvlink_bytes",
        "gpuwatch_nvlink_transferred_bytes",
        "direction",
        (("nvlink_tx_bytes_total", "tx"), ("nvlink_rx_bytes_total", "rx")),
        "NVLink data bytes since reset, summed over links (NVML field values); rate() = throughput, also "
        "before Hopper.",
        "bytes",
    ),
    CounterGroup(
        "nvlink_errors",
        "gpuwatch_nvlink_errors",
        "kind",
        (
            ("nvlink_crc_flit_errors_total", "crc_flit"),
            ("nvlink_crc_data_errors_total", "crc_data"),
            ("nvlink_replay_errors_total", "replay"),
            ("nvlink_recovery_errors_total", "recovery"),
        ),
        "NVLink errors since reset, summed over links, by kind.",
    ),
    CounterGroup(
        "ecc_aggregate",
        "gpuwatch_ecc_errors_aggregate",
        "kind",
        (
            ("ecc_errors_corrected_aggregate_total", "corrected"),
            ("ecc_errors_uncorrected_aggregate_total", "uncorrected"),
        ),
        "ECC errors over the card's life (aggregate: survive driver reloads), by kind.",
    ),
    CounterGroup(
        "retired_pages",
        "gpuwatch_retired_pages",
        "cause",
        (("retired_pages_single_bit_total", "single_bit"), ("retired_pages_double_bit_total", "double_bit")),
        "Memory pages retired for ECC errors, by cause (pre-Ampere; Ampere+ remap rows instead).",
    ),
)

#: GPM ratios (Hopper+): GpmSample field -> metric
_GPM_RATIOS = (
    (
        "dram_bandwidth_util_ratio",
        "gpuwatch_gpm_dram_bandwidth_utilisation_ratio",
        "DRAM bandwidth used vs peak.",
    ),
    ("sm_util_ratio", "gpuwatch_gpm_sm_utilisation_ratio", "Share of SMs busy."),
    ("sm_occupancy_ratio", "gpuwatch_gpm_sm_occupancy_ratio", "Resident warps vs the SMs' maximum."),
    ("tensor_util_ratio", "gpuwatch_gpm_tensor_utilisation_ratio", "Any tensor pipe busy."),
    (
        "hmma_tensor_util_ratio",
        "gpuwatch_gpm_hmma_tensor_utilisation_ratio",
        "Half-precision tensor pipe busy.",
    ),
    ("fp16_util_ratio", "gpuwatch_gpm_fp16_utilisation_ratio", "Non-tensor FP16 pipe busy."),
    ("fp32_util_ratio", "gpuwatch_gpm_fp32_utilisation_ratio", "Non-tensor FP32 pipe busy."),
)

#: metric -> the GpuSample fields it is published from (what ``gpuwatch_reading_supported`` names)
METRIC_READINGS: dict[str, tuple[str, ...]] = {
    **{r.metric + ("_total" if r.counter else ""): (r.field,) for r in READINGS},
    "gpuwatch_xid_errors_total": ("xid_errors_total",),
    "gpuwatch_temperature_threshold_celsius": tuple(f for f, _ in _THRESHOLDS),
    "gpuwatch_clock_hertz": tuple(f for f, _ in _CLOCKS),
    "gpuwatch_clock_max_hertz": tuple(f for f, _ in _MAX_CLOCKS),
    "gpuwatch_pcie_throughput_bytes_per_second": tuple(f for f, _ in _PCIE),
    "gpuwatch_remapped_rows_total": tuple(f for f, _ in _REMAPPED),
    "gpuwatch_ecc_errors_total": tuple(f for f, _ in _ECC),
    "gpuwatch_clock_event_reason_active": ("clock_event_reasons",),
    "gpuwatch_throttled": ("clock_event_reasons",),
    "gpuwatch_clock_event_seconds_total": ("clock_event_seconds_total",),
    **{group.metric + "_total": (group.reading,) for group in COUNTER_GROUPS},
}

#: every reading ``gpuwatch_reading_supported`` reports on (GpuSample field names)
SUPPORT_READINGS: tuple[str, ...] = (
    *(r.field for r in READINGS if r.field != "last_xid"),  # no XID yet is not "unsupported"
    *(f for f, _ in _THRESHOLDS + _CLOCKS + _MAX_CLOCKS + _PCIE + _REMAPPED + _ECC),
    "peak_memory_bandwidth_bytes_s",
    "clock_event_reasons",
    "clock_event_seconds_total",
    "gpm",
    "processes",
    *(group.reading for group in COUNTER_GROUPS),
)

_REASONS = tuple(r for r in ClockEventReason if r.name)

#: the source's phases (telemetry.source.SourceState), published one-hot
SOURCE_PHASES = ("starting", "running", "restarting", "failed")
#: seconds between re-encodings of /metrics when no snapshot arrives
GENERATION_TICK_S = 5

#: error kinds published as 0 before they first happen, so rate() and the rules see a series from the
#: start: the poller's child-process restarts (NVML crashed) and GPUs whose reading went stale
BASELINE_ERROR_KINDS = ("nvml_child_restart", "stale")


class _Families:
    """Metric families created on first use, yielded in first-use order, empty ones never."""

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}

    def gauge(self, name: str, doc: str, labels: Mapping[str, str], value: float, unit: str = "") -> None:
        fam = self._families.get(name)
        if fam is None:
            fam = GaugeMetricFamily(name, doc, labels=list(labels), unit=unit)
            self._families[name] = fam
        assert isinstance(fam, GaugeMetricFamily)
        fam.add_metric(list(labels.values()), value)

    def counter(self, name: str, doc: str, labels: Mapping[str, str], value: float, unit: str = "") -> None:
        fam = self._families.get(name)
        if fam is None:
            fam = CounterMetricFamily(name, doc, labels=list(labels), unit=unit)
            self._families[name] = fam
        assert isinstance(fam, CounterMetricFamily)
        fam.add_metric(list(labels.values()), value)

    def info(self, name: str, doc: str, labels: Mapping[str, str]) -> None:
        fam = self._families.get(name)
        if fam is None:
            fam = InfoMetricFamily(name, doc, labels=[])
            self._families[name] = fam
        assert isinstance(fam, InfoMetricFamily)
        fam.add_metric([], dict(labels))

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._families.values())


def _number(value: object) -> float | None:
    """A reading as a float; None, NaN and non-numbers are absent (never published)."""
    if value is None or isinstance(value, str):
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        f = float(value)
        return None if f != f else f  # NaN never reaches the exposition
    return None


class GpuwatchCollector(Collector):
    """Reads the session's latest (snapshot, assessment); accumulates health counters per snapshot."""

    def __init__(
        self,
        session: SessionLike,
        *,
        process_metrics: bool = False,
        source_description: str = "",
        clock: Callable[[], float] = time.time,
        gpu_labels: Callable[[GpuSample], Mapping[str, str]] | None = None,
    ) -> None:
        self._session = session
        #: extra labels on every per-GPU series (pod/namespace/container under --kubernetes)
        self._gpu_labels = gpu_labels
        self._process_metrics = process_metrics
        #: where the readings come from (set once the session is open, when it was pending)
        self.source_description = source_description
        self._clock = clock
        self._lock = threading.Lock()
        self._polls_total = 0
        self._errors_total: Counter[str] = Counter()
        self._alerts_total: Counter[tuple[str, str]] = Counter()
        self._last_poll_wall_s: float | None = None
        self._last_read_s: float | None = None
        #: per GPU (uuid): Xid total, per-code counts, last code; kept across polls, lost GPUs included
        self._xid_total: dict[str, int] = {}
        self._xid_by_code: dict[str, dict[int, int]] = {}
        self._xid_last: dict[str, int] = {}
        self._started_wall_s = clock()
        session.add_listener(self.observe)

    def observe(self, snap: Snapshot, assessment: BoxAssessment) -> None:
        """Session listener (poll thread): count the poll, its errors and the live alerts it raised."""
        read_s = _last_read_s(snap)
        with self._lock:
            self._polls_total += 1
            self._errors_total.update({k: v for k, v in snap.errors.items() if v > 0})
            self._alerts_total.update((a.kind, a.severity) for a in assessment.alerts)
            if read_s is not None and (self._last_read_s is None or read_s > self._last_read_s):
                # a poll that really read a GPU; one that reused stale readings moves nothing
                self._last_read_s = read_s
                self._last_poll_wall_s = self._clock()
            for g in snap.gpus:
                self._observe_xid(g)

    def _observe_xid(self, g: GpuSample) -> None:
        """Xid counts per GPU, kept across polls (lock held): per code as telemetry counted them; for a
        source without per-code counts (an older recording), the total's growth goes to the last code."""
        total = max(g.xid_errors_total, self._xid_total.get(g.uuid, 0))
        grew = total - self._xid_total.get(g.uuid, 0)
        last = g.last_xid if g.last_xid is not None else self._xid_last.get(g.uuid)
        codes = self._xid_by_code.setdefault(g.uuid, {})
        if g.xid_errors_by_code:
            for code, n in g.xid_errors_by_code.items():
                with contextlib.suppress(ValueError):
                    codes[int(code)] = max(codes.get(int(code), 0), int(n))  # counters never go back
        elif grew > 0 and last is not None:
            codes[last] = codes.get(last, 0) + grew
        self._xid_total[g.uuid] = total
        if last is not None:
            self._xid_last[g.uuid] = last

    def generation(self) -> tuple[int, str, int]:
        """A token that changes when collect() has something new to say: snapshots observed, the source's
        phase, and a 5 s tick (so with NVML hung and no snapshot coming, the health series still move).

        The exporter encodes /metrics once per token (``make_app(generation=...)``). Every GPU series is
        a function of the session's latest snapshot and of the counters observe() keeps, and the session
        calls its listeners right after replacing the latest snapshot, so a body encoded in between (new
        snapshot, counters one poll behind) is dropped microseconds later, when observe() moves the token.
        """
        with self._lock:
            polls = self._polls_total
        return polls, self._phase()[0], int(self._clock() // GENERATION_TICK_S)

    def _phase(self) -> tuple[str, str | None]:
        state = getattr(self._session, "source_state", None)
        if state is None:
            return "running", None
        current = state()
        return str(current.phase), current.message

    def describe(self) -> Iterable[Metric]:
        # Registering must not call collect() (it would read the session before the first poll).
        return []

    def collect(self) -> Iterable[Metric]:
        fams = _Families()
        latest = self._session.latest()
        self._collect_health(fams, latest[0] if latest else None)
        if latest is not None:
            snap, box = latest
            # an exporter's assessor advises on demand (once per poll that is scraped): see Assessor
            with_advice = getattr(getattr(self._session, "assessor", None), "with_advice", None)
            if with_advice is not None:
                box = with_advice(box)
            by_index = {a.index: a for a in box.gpus}
            for g in snap.gpus:
                labels = {
                    "gpu": str(g.index),
                    "uuid": g.uuid,
                    **(self._gpu_labels(g) if self._gpu_labels else {}),
                }
                self._collect_gpu(fams, snap, g, labels)
                assessment = by_index.get(g.index)
                if assessment is not None and not g.lost and not g.stale:
                    self._collect_assessment(fams, g, assessment, labels)
            self._collect_box(fams, box)
        self._collect_engines(fams)
        return list(fams)

    # -- serving engines (gpuwatch.telemetry.engines: EngineWatcher.states()) --------------------
    def _collect_engines(self, fams: _Families) -> None:
        """One series per configured engine URL; the full last error goes to the log (the watcher
        logs each change), its kind to ``gpuwatch_engine_info{reason}`` (a bounded label)."""
        from gpuwatch.telemetry.engines import error_kind

        engines = getattr(self._session, "engines", None)
        for state in engines.states() if engines is not None else ():
            url = {"url": state.url}
            up = 1.0 if state.up else 0.0
            fams.gauge("gpuwatch_engine_up", "1 while the serving engine's last scrape was usable.", url, up)
            fams.info(
                "gpuwatch_engine",
                "The serving engine at url and why its last scrape failed (reason ok when up).",
                {**url, "engine": state.engine or "", "reason": error_kind(state.last_error)},
            )
            if state.last_success_s is not None:
                fams.gauge(
                    "gpuwatch_engine_last_success_timestamp_seconds",
                    "Wall-clock time of the engine's last usable scrape (Unix epoch).",
                    url,
                    state.last_success_s,
                    "seconds",
                )
            if state.scrape_duration_s is not None:
                fams.gauge(
                    "gpuwatch_engine_scrape_duration_seconds",
                    "How long the last scrape of the engine took.",
                    url,
                    state.scrape_duration_s,
                    "seconds",
                )
            fams.counter(
                "gpuwatch_engine_restarts",
                "Times the engine's token counter went down (a restart).",
                url,
                state.counter_resets,
            )
        for reading in engines.latest() if engines is not None else ():
            _collect_serving(fams, reading)

    # -- exporter health -------------------------------------------------------------------------
    def _collect_health(self, fams: _Families, snap: Snapshot | None) -> None:
        with self._lock:
            polls = self._polls_total
            errors = dict(self._errors_total)
            alerts = dict(self._alerts_total)
            last_wall = self._last_poll_wall_s
        fams.info(
            "gpuwatch_exporter",
            "The exporter: version and where its readings come from.",
            {
                "version": __version__,
                "source": snap.source if snap else "",
                "description": self.source_description,
                "nvml_version": (snap.nvml_version or "") if snap else "",
            },
        )
        fams.gauge(
            "gpuwatch_exporter_start_time_seconds",
            "Wall-clock time the exporter started (Unix epoch).",
            {},
            self._started_wall_s,
            "seconds",
        )
        fams.counter("gpuwatch_polls", "Snapshots received from the poller.", {}, polls)
        phase, _ = self._phase()
        for name in SOURCE_PHASES:
            fams.gauge(
                "gpuwatch_source_phase",
                "1 for where the reading source stands: starting (no snapshot yet: a slow driver stays "
                "here), running, restarting (the NVML child died) or failed (NVML cannot start; retried).",
                {"phase": name},
                1.0 if phase == name else 0.0,
            )
        for kind in sorted(set(errors) | set(BASELINE_ERROR_KINDS)):
            fams.counter(
                "gpuwatch_poll_errors",
                "Errors while polling, by kind (NVML error class, poller crash, ...).",
                {"kind": kind},
                errors.get(kind, 0),
            )
        if last_wall is not None:
            fams.gauge(
                "gpuwatch_last_successful_poll_timestamp_seconds",
                "Wall-clock time of the last poll that really read a GPU (Unix epoch); a poll that only "
                "reused stale readings does not move it, so time() minus this is staleness.",
                {},
                last_wall,
                "seconds",
            )
        if snap is not None:
            fams.gauge(
                "gpuwatch_snapshot_timestamp_seconds",
                "Timestamp of the latest snapshot on the source's own clock (simulated or replayed time).",
                {},
                snap.timestamp_s,
                "seconds",
            )
            if snap.poll_duration_s is not None:
                fams.gauge(
                    "gpuwatch_poll_duration_seconds",
                    "How long the last poll of all GPUs took: the real read time, not capped at the interval.",  # noqa: E501
                    {},
                    snap.poll_duration_s,
                    "seconds",
                )
        for (kind, severity), n in sorted(alerts.items()):
            fams.counter(
                "gpuwatch_live_alerts",
                "Findings raised by the live assessment (the same ones the TUI shows).",
                {"kind": kind, "severity": severity},
                n,
            )

    # -- one GPU's readings ----------------------------------------------------------------------
    def _collect_gpu(self, fams: _Families, snap: Snapshot, g: GpuSample, labels: dict[str, str]) -> None:
        fams.info(
            "gpuwatch_gpu",
            "Identity of each GPU: name, UUID, PCI bus id, driver and the CUDA version it supports.",
            {
                **labels,
                "name": g.name,
                "pci_bus_id": g.pci_bus_id,
                "driver_version": snap.driver_version or "",
                **({"vbios_version": g.vbios_version} if g.vbios_version else {}),
                **({"compute_capability": g.compute_capability} if g.compute_capability else {}),
                **(
                    {"cuda_driver_version": cuda} if (cuda := _cuda_version(snap.cuda_driver_version)) else {}
                ),
            },
        )
        stale = g.stale
        fams.gauge(
            "gpuwatch_gpu_up",
            "1 while the GPU answers with fresh readings; 0 once it is lost (fallen off the bus) or stale "
            "(gpuwatch_gpu_stale 1: NVML has not answered for it within the freshness bound, 3 poll "
            "intervals and at least 5 s): its readings are then absent, never old values passed off as new.",
            labels,
            0.0 if g.lost or stale else 1.0,
        )
        fams.gauge(
            "gpuwatch_gpu_stale",
            "1 while this GPU's last successful read is older than the freshness bound (a hung or slow "
            "NVML call); it recovers by itself when a read succeeds again.",
            labels,
            1.0 if stale and not g.lost else 0.0,
        )
        read_ts = _number(g.read_timestamp_s)
        if read_ts:
            fams.gauge(
                "gpuwatch_gpu_last_read_timestamp_seconds",
                "When this GPU's readings were last read successfully (Unix seconds on the source's clock: "
                "simulated time under --sim --time-scale).",
                labels,
                read_ts,
                "seconds",
            )
        self._collect_xid(fams, g, labels)
        if g.lost or stale:
            return
        for field in SUPPORT_READINGS:
            if _unsupported(g, field):
                # only the readings a card lacks: one series per supported reading would be a third of
                # an 8-GPU host's series for no information (absent here = supported)
                fams.gauge(
                    "gpuwatch_reading_supported",
                    "0 for each reading this GPU and driver cannot give (its series is then omitted); a "
                    "reading not listed here is supported.",
                    {**labels, "reading": field},
                    0.0,
                )
        for r in READINGS:
            if r.field == "last_xid":
                continue  # published with the Xid counters, lost or not
            value = _number(getattr(g, r.field))
            if value is None:
                continue
            value *= r.scale
            if r.counter:
                fams.counter(r.metric, r.help, labels, value, r.unit)
            else:
                fams.gauge(r.metric, r.help, labels, value, r.unit)
        self._labelled(
            fams,
            g,
            labels,
            _THRESHOLDS,
            "threshold",
            "gpuwatch_temperature_threshold_celsius",
            "Temperature thresholds (slowdown, shutdown, max operating).",
            "celsius",
        )
        self._labelled(fams, g, labels, _CLOCKS, "clock", "gpuwatch_clock_hertz", "Current clocks.", "hertz")
        self._labelled(
            fams,
            g,
            labels,
            _MAX_CLOCKS,
            "clock",
            "gpuwatch_clock_max_hertz",
            "Maximum clocks as NVML reports them (not the spec boost clock).",
            "hertz",
        )
        self._labelled(
            fams,
            g,
            labels,
            _PCIE,
            "direction",
            "gpuwatch_pcie_throughput_bytes_per_second",
            "PCIe throughput (NVML samples a 20 ms window: noisy).",
            "bytes_per_second",
        )
        self._labelled(
            fams,
            g,
            labels,
            _REMAPPED,
            "kind",
            "gpuwatch_remapped_rows",
            "Memory rows remapped, by error kind.",
            "",
            counter=True,
        )
        self._labelled(
            fams,
            g,
            labels,
            _ECC,
            "kind",
            "gpuwatch_ecc_errors",
            "ECC errors since the driver was loaded (volatile), by kind.",
            "",
            counter=True,
        )
        for group in COUNTER_GROUPS:
            self._labelled(
                fams, g, labels, group.fields, group.label, group.metric, group.help, group.unit, counter=True
            )
        peak = _number(g.peak_memory_bandwidth_bytes_s)
        if peak is not None:
            fams.gauge(
                "gpuwatch_memory_bandwidth_peak_bytes_per_second",
                "Peak DRAM bandwidth: 2 x max memory clock x bus width, or the catalog figure.",
                labels,
                peak,
                "bytes_per_second",
            )
        self._collect_throttle(fams, g, labels)
        if g.gpm is not None:
            for field, metric, doc in _GPM_RATIOS:
                value = _number(getattr(g.gpm, field))
                if value is not None:
                    fams.gauge(metric, f"GPM (Hopper+): {doc} 0..1.", labels, value, "ratio")
            for field, direction in (("pcie_tx_bytes_s", "tx"), ("pcie_rx_bytes_s", "rx")):
                value = _number(getattr(g.gpm, field))
                if value is not None:
                    fams.gauge(
                        "gpuwatch_gpm_pcie_throughput_bytes_per_second",
                        "GPM PCIe throughput.",
                        {**labels, "direction": direction},
                        value,
                        "bytes_per_second",
                    )
            for field, direction in (("nvlink_tx_bytes_s", "tx"), ("nvlink_rx_bytes_s", "rx")):
                value = _number(getattr(g.gpm, field))
                if value is not None:
                    fams.gauge(
                        "gpuwatch_nvlink_throughput_bytes_per_second",
                        "NVLink throughput (GPM).",
                        {**labels, "direction": direction},
                        value,
                        "bytes_per_second",
                    )
        if self._process_metrics and g.processes is not None:
            for p in g.processes:
                if p.used_memory_bytes is None:
                    continue
                fams.gauge(
                    "gpuwatch_process_memory_used_bytes",
                    "Device memory per process (opt-in: --process-metrics; process names can be sensitive).",
                    {
                        **labels,
                        "pid": str(p.pid),
                        "process": p.name or "",
                        "container": p.container or labels.get("container", ""),
                    },
                    float(p.used_memory_bytes),
                    "bytes",
                )

    def _collect_xid(self, fams: _Families, g: GpuSample, labels: dict[str, str]) -> None:
        """Xid counters, for lost and stale GPUs too: the Xid that took a card down is the news."""
        with self._lock:
            total = self._xid_total.get(g.uuid, 0)
            by_code = dict(self._xid_by_code.get(g.uuid, {}))
            last = self._xid_last.get(g.uuid)
        fams.counter(
            "gpuwatch_xid_errors",
            "XID errors seen since the exporter started, all codes (0 from the start: increase() sees the "
            "first one).",
            labels,
            float(total),
        )
        for code, n in sorted(by_code.items()):
            fams.counter(
                "gpuwatch_xid_errors_by_code",
                "XID errors since the exporter started, by code (docs.nvidia.com/deploy/xid-errors), as "
                "NVML's event set delivered them; a lost or stale GPU keeps its counts.",
                {**labels, "xid": str(code)},
                float(n),
            )
        if last is not None:
            fams.gauge(
                "gpuwatch_xid_last_code",
                "Code of the most recent XID error seen since the exporter started.",
                labels,
                float(last),
            )

    @staticmethod
    def _labelled(
        fams: _Families,
        g: GpuSample,
        labels: dict[str, str],
        fields: tuple[tuple[str, str], ...],
        label: str,
        metric: str,
        doc: str,
        unit: str,
        *,
        counter: bool = False,
    ) -> None:
        for field, label_value in fields:
            value = _number(getattr(g, field))
            if value is None:
                continue
            if counter:
                fams.counter(metric, doc, {**labels, label: label_value}, value, unit)
            else:
                fams.gauge(metric, doc, {**labels, label: label_value}, value, unit)

    @staticmethod
    def _collect_throttle(fams: _Families, g: GpuSample, labels: dict[str, str]) -> None:
        if g.clock_event_reasons is not None:
            mask = g.clock_event_reasons
            doc = "1 while the clock-event (throttle) reason is active, else 0; one series per reason."
            for reason in _REASONS:
                assert reason.name is not None
                fams.gauge(
                    "gpuwatch_clock_event_reason_active",
                    doc,
                    {**labels, "reason": reason.name.lower()},
                    1.0 if mask & reason.value else 0.0,
                )
            known = {r.name.lower() for r in _REASONS if r.name}
            for name in reason_names(mask):
                if name not in known:  # bits newer than this build: keep them visible, as hex
                    fams.gauge("gpuwatch_clock_event_reason_active", doc, {**labels, "reason": name}, 1.0)
            fams.gauge(
                "gpuwatch_throttled",
                "1 while any throttling reason (power cap, thermal, HW slowdown, brake, sync boost) is on.",
                labels,
                1.0 if g.throttling else 0.0,
            )
        for counter_reason, seconds in sorted(g.clock_event_seconds_total.items()):
            value = _number(seconds)
            if value is not None:
                fams.counter(
                    "gpuwatch_clock_event_seconds",
                    "Time clocks were held back, by reason (NVML violation counters); rate() = share.",
                    {**labels, "reason": counter_reason},
                    value,
                    "seconds",
                )

    # -- the live assessment ---------------------------------------------------------------------
    @staticmethod
    def _collect_assessment(fams: _Families, g: GpuSample, a: GpuAssessment, labels: dict[str, str]) -> None:
        rl = a.roofline
        if rl is not None:
            if g.peak_memory_bandwidth_bytes_s is None:
                fams.gauge(
                    "gpuwatch_memory_bandwidth_peak_bytes_per_second",
                    "Peak DRAM bandwidth: 2 x max memory clock x bus width, or the catalog figure.",
                    labels,
                    rl.peak_bandwidth_bytes_s,
                    "bytes_per_second",
                )
            dtype = {**labels, "dtype": rl.dtype}
            fams.gauge(
                "gpuwatch_roofline_peak_flop_per_second",
                "Compute ceiling for the workload's dtype at spec clocks.",
                dtype,
                rl.peak_flops,
            )
            fams.gauge(
                "gpuwatch_roofline_current_peak_flop_per_second",
                "Compute ceiling scaled by the live SM clock.",
                dtype,
                rl.current_peak_flops,
            )
            fams.gauge(
                "gpuwatch_roofline_ridge_point_flop_per_byte",
                "Arithmetic intensity where the roofline turns from bandwidth- to compute-bound.",
                dtype,
                rl.ridge_flop_per_byte,
            )
            optional = (
                (
                    rl.attained_bandwidth_bytes_s,
                    "gpuwatch_memory_bandwidth_attained_bytes_per_second",
                    "DRAM bandwidth the work attains; provenance says measured (GPM) or derived/modelled.",
                    {**labels, "provenance": str(rl.bandwidth_provenance)},
                ),
                (
                    rl.attained_flops,
                    "gpuwatch_roofline_attained_flop_per_second",
                    "FLOP/s the work attains; provenance says measured, derived or modelled.",
                    {**labels, "provenance": str(rl.flops_provenance)},
                ),
                (
                    rl.arithmetic_intensity_flop_per_byte,
                    "gpuwatch_roofline_arithmetic_intensity_flop_per_byte",
                    "Where the work sits on the roofline's x axis.",
                    labels,
                ),
                (
                    rl.attainable_flops,
                    "gpuwatch_roofline_attainable_flop_per_second",
                    "Roofline ceiling at this intensity: min(compute roof, intensity x bandwidth).",
                    labels,
                ),
                (
                    rl.headroom_ratio,
                    "gpuwatch_roofline_headroom_ratio",
                    "Attained / attainable FLOP/s, 0..1.",
                    labels,
                ),
            )
            for value, metric, doc, lab in optional:
                v = _number(value)
                if v is not None:
                    fams.gauge(metric, doc, lab, v)
        for kind in BoundKind:
            fams.gauge(
                "gpuwatch_bound",
                "1 for what currently limits the GPU (one-hot over kind).",
                {**labels, "kind": str(kind)},
                1.0 if a.bound.kind == kind else 0.0,
            )
        loss = _number(a.bound.clock_loss_ratio)
        if loss is not None:
            fams.gauge(
                "gpuwatch_throttle_clock_loss_ratio",
                "1 - live SM clock / max SM clock while throttled.",
                labels,
                loss,
                "ratio",
            )
        tps = _number(a.tokens_per_s)
        if tps is not None:
            fams.gauge(
                "gpuwatch_tokens_per_second",
                "Generated tokens per second on this GPU.",
                {**labels, "provenance": str(a.tokens_per_s_provenance)},
                tps,
            )
        modelled = _number(a.modelled_tokens_per_s)
        if modelled is not None:
            fams.gauge(
                "gpuwatch_modelled_tokens_per_second",
                "The roofline model's ceiling for the declared workload on this GPU.",
                labels,
                modelled,
            )
        cost = a.cost
        if cost is not None:
            tokens_prov = str(a.tokens_per_s_provenance)
            # the cloud figure prices the model's tokens/s where there is one (as the assessor does)
            cloud_prov = str(Provenance.MODELLED) if a.modelled_tokens_per_s else tokens_prov
            burn = cost.burn
            for basis, value, provenance in (
                ("live", cost.live_usd_per_mtok, tokens_prov),
                ("projected", cost.projected_usd_per_mtok, str(Provenance.MODELLED)),
                ("cloud", cost.cloud_usd_per_mtok, cloud_prov),
                ("serving", burn.usd_per_mtok_serving if burn else None, tokens_prov),
                ("overall", burn.usd_per_mtok_overall if burn else None, tokens_prov),
            ):
                v = _number(value)
                if v is not None:
                    fams.gauge(
                        "gpuwatch_usd_per_million_tokens",
                        "US$ per 1M generated tokens: live (live power and this GPU's tokens/s), projected "
                        "(roofline model of the declared workload), cloud (rented GPU-hours), serving (the "
                        "recent window's serving hours over their tokens) or overall (every hour of the "
                        "window, idle ones included); provenance says whether the tokens/s behind it were "
                        "measured or modelled.",
                        {**labels, "basis": basis, "provenance": provenance},
                        v,
                    )
            tpj = _number(cost.tokens_per_joule)
            if tpj is not None:
                fams.gauge(
                    "gpuwatch_tokens_per_joule",
                    "Generated tokens per joule of board energy; provenance is that of the tokens/s.",
                    {**labels, "provenance": tokens_prov},
                    tpj,
                )
            split = cost.cost_per_hour
            for component, value, provenance in (
                ("capex", split.capex_usd_per_h, "configured"),
                ("power", split.power_usd_per_h, str(cost.power_provenance)),
                ("hosting", split.hosting_usd_per_h, "configured"),
            ):
                fams.gauge(
                    "gpuwatch_cost_usd_per_hour",
                    "What running this GPU costs per hour, by component; the power component is "
                    "measured (live board power) or modelled (TDP, where the card reports no power).",
                    {**labels, "component": component, "provenance": provenance},
                    value,
                )
        _collect_energy(fams, a, labels)

    @staticmethod
    def _collect_box(fams: _Families, box: BoxAssessment) -> None:
        provenance = {"provenance": str(box.tokens_per_s_provenance)}
        for metric, value, doc in (
            ("gpuwatch_box_tokens_per_second", box.tokens_per_s, "Generated tokens per second, whole box."),
            ("gpuwatch_box_usd_per_million_tokens", box.usd_per_mtok, "Live US$ per 1M tokens, whole box."),
            ("gpuwatch_box_tokens_per_joule", box.tokens_per_joule, "Generated tokens per joule, whole box."),
        ):
            v = _number(value)
            if v is not None:
                fams.gauge(metric, f"{doc} Provenance: the weakest of the GPUs' tokens/s.", provenance, v)


#: an engine's serving state (gpuwatch/telemetry/engine_state.py ServingState): field, metric, help, unit
_SERVING = (
    ("requests_waiting", "gpuwatch_engine_requests_waiting", "Requests queued in the engine.", ""),
    (
        "kv_cache_usage_ratio",
        "gpuwatch_engine_kv_cache_usage_ratio",
        "Share of the engine's KV cache in use, 0..1.",
        "ratio",
    ),
    (
        "ttft_mean_s",
        "gpuwatch_engine_time_to_first_token_mean_seconds",
        "Mean time to first token of the requests finished since the last scrape.",
        "seconds",
    ),
    (
        "tpot_mean_s",
        "gpuwatch_engine_time_per_output_token_mean_seconds",
        "Mean time per output token since the last scrape.",
        "seconds",
    ),
    (
        "requests_finished_per_s",
        "gpuwatch_engine_requests_finished_per_second",
        "Requests the engine finished per second since the last scrape.",
        "",
    ),
)


def _collect_serving(fams: _Families, reading: EngineReading) -> None:
    url = {"url": reading.url}
    running = _number(reading.requests_running)
    if running is not None:
        fams.gauge("gpuwatch_engine_requests_running", "Requests the engine is running.", url, running)
    if reading.serving is not None:
        for field, metric, doc, unit in _SERVING:
            v = _number(getattr(reading.serving, field))
            if v is not None:
                fams.gauge(metric, doc, url, v, unit)


def _collect_energy(fams: _Families, a: GpuAssessment, labels: dict[str, str]) -> None:
    """Idle burn, per-request energy, the engine's roofline estimate beside GPM, the advised power cap."""
    rl = a.roofline
    if rl is not None:
        fams.info(
            "gpuwatch_roofline_provenance",
            "Where the live roofline point came from, best first: measured (GPM) > engine-estimated (the "
            "engine's MFU counters) > derived (tokens/s x the model) > modelled.",
            {**labels, "bandwidth": str(rl.bandwidth_provenance), "flops": str(rl.flops_provenance)},
        )
        for quantity, engine, ratio in (
            ("flops", rl.engine_flops, rl.engine_vs_measured_flops_ratio),
            ("bandwidth", rl.engine_bandwidth_bytes_s, rl.engine_vs_measured_bandwidth_ratio),
        ):
            v = _number(engine)
            if v is not None:
                fams.gauge(
                    "gpuwatch_roofline_engine_estimated",
                    "The serving engine's own estimate of the work per GPU (vLLM/SGLang MFU counters): "
                    "FLOP/s or bytes/s by quantity.",
                    {**labels, "quantity": quantity},
                    v,
                )
            r = _number(ratio)
            if r is not None:
                fams.gauge(
                    "gpuwatch_roofline_engine_vs_measured_ratio",
                    "Engine-estimated / GPM-measured, where both exist (1 = they agree).",
                    {**labels, "quantity": quantity},
                    r,
                    "ratio",
                )
    cost = a.cost
    burn = cost.burn if cost is not None else None
    if cost is not None and (c := _number(cost.concurrency)) is not None:
        fams.gauge(
            "gpuwatch_tokens_per_joule_concurrency",
            "Concurrent requests on this GPU (the engines' running gauge) when tokens/J was taken.",
            labels,
            c,
        )
    if burn is not None:
        for metric, value, doc, unit in (
            ("gpuwatch_idle_ratio", burn.idle_ratio, "Share of the recent window with no tokens.", "ratio"),
            ("gpuwatch_idle_power_watts", burn.idle_power_w, "Mean board power while idle.", "watts"),
            (
                "gpuwatch_joules_per_request",
                burn.joules_per_request,
                "Board energy per finished request over the recent window.",
                "",
            ),
            (
                "gpuwatch_usd_per_thousand_requests",
                burn.usd_per_k_requests,
                "US$ per 1000 finished requests over the recent window, idle hours included.",
                "",
            ),
            ("gpuwatch_idle_window_seconds", burn.window_s, "Time the idle figures cover.", "seconds"),
        ):
            v = _number(value)
            if v is not None:
                fams.gauge(metric, doc, labels, v, unit)
    fams.info(
        "gpuwatch_power_limit_advice",
        "The power-cap advice of this poll: reason is lower_cap, keep_default or why there is none.",
        {**labels, "reason": a.power_advice_kind},
    )
    advised = _number(a.advised_power_limit_w)
    if advised is not None:
        fams.gauge(
            "gpuwatch_power_limit_advised_watts",
            "The power limit that minimises $/1M tokens (or, without a GPU price, maximises tokens/J) "
            "from the live bound and the power model; reason as in gpuwatch_power_limit_advice_info.",
            {**labels, "reason": a.power_advice_kind},
            advised,
            "watts",
        )
    loss = _number(a.advised_speed_loss_ratio)
    if loss is not None:
        fams.gauge(
            "gpuwatch_power_limit_advised_speed_loss_ratio",
            "Expected tokens/s given up at the advised power limit, 0..1.",
            labels,
            loss,
            "ratio",
        )


def _cuda_version(value: int | None) -> str:
    """NVML's cudaDriverVersion integer (major * 1000 + minor * 10) as "12.8"; "" when unknown."""
    if value is None or value <= 0:
        return ""
    return f"{value // 1000}.{value % 1000 // 10}"


def _last_read_s(snap: Snapshot) -> float | None:
    """The newest fresh GPU read of ``snap``; a source without per-GPU read times (a recording made
    before they existed) counts every snapshot as a read."""
    if any(g.read_timestamp_s > 0 or g.stale for g in snap.gpus):
        return snap.last_read_timestamp_s
    return snap.timestamp_s


_GROUP_FIELDS = {group.reading: tuple(f for f, _ in group.fields) for group in COUNTER_GROUPS}


def _unsupported(g: GpuSample, field: str) -> bool:
    members = _GROUP_FIELDS.get(field)
    if members is not None:  # a family is unsupported when none of its counters can be read
        return all(_unsupported(g, member) for member in members)
    why = g.unavailable.get(field)
    if why is not None:
        return why in _UNSUPPORTED
    if field == "clock_event_seconds_total":
        return not g.clock_event_seconds_total
    return getattr(g, field) is None
