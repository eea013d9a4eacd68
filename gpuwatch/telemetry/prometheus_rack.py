"""The rack as Prometheus sees it: every host's GPUs from the gpuwatch exporters' series.

`gpuwatch --prometheus URL` never talks to an exporter: Prometheus is the distributed part. Each
refresh is three instant queries (``/api/v1/query``), whatever the size of the rack:

* ``up{MATCH}``: the hosts, and which exporters answer their scrapes;
* ``{__name__=~"gpuwatch_(…)", MATCH}``: the per-GPU series the rack view shows;
* ``ALERTS{alertstate="firing", MATCH}``: the firing alerts, placed beside the GPU they name (or the
  host, for host-wide ones);

plus ``last_over_time(gpuwatch_gpu_info{MATCH}[1h])`` so a down host still lists which GPUs it has
(their identity, never their last readings). ``MATCH`` is ``--match``: label matchers that select the
targets (default the ``gpuwatch`` jobs).

Freshness: a reading is what the host's exporter served at the last scrape; the host's last NVML poll
time travels with it (``poll_age_s``). Prometheus drops a failed target's series at once (staleness
markers), so a down host's GPUs show no readings rather than old ones.
"""

from __future__ import annotations

import base64
import json
import math
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpuwatch.errors import UserError
from gpuwatch.telemetry.prometheus_match import DEFAULT_MATCH

if TYPE_CHECKING:  # ssl and urllib.request load when a rack is read
    import ssl

#: the alert (grafana/rules) that says a host's readings are stale
STALE_ALERT = "GpuwatchStale"
#: the most of one query's answer read (a rack of 1,000 GPUs answers in well under this)
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
TIMEOUT_S = 10.0

#: metric -> the RackGpu field it fills (the series must have no labels beyond the GPU's, or be
#: filtered by SELECT below)
GAUGES: Mapping[str, str] = {
    "gpuwatch_gpu_up": "up",
    "gpuwatch_temperature_celsius": "temperature_c",
    "gpuwatch_slowdown_margin_celsius": "slowdown_margin_c",
    "gpuwatch_power_watts": "power_w",
    "gpuwatch_power_limit_watts": "power_limit_w",
    "gpuwatch_sm_busy_ratio": "sm_busy_ratio",
    "gpuwatch_memory_controller_busy_ratio": "memory_controller_busy_ratio",
    "gpuwatch_memory_used_bytes": "memory_used_bytes",
    "gpuwatch_memory_total_bytes": "memory_total_bytes",
    "gpuwatch_fan_speed_ratio": "fan_speed_ratio",
    "gpuwatch_throttled": "throttled",
    "gpuwatch_roofline_headroom_ratio": "headroom_ratio",
    "gpuwatch_tokens_per_second": "tokens_per_s",
    "gpuwatch_usd_per_million_tokens": "usd_per_mtok",
    "gpuwatch_xid_errors_total": "xid_errors_total",
    "gpuwatch_performance_state": "performance_state",
}
#: series that carry an extra label: only the one with this label value is read
SELECT: Mapping[str, tuple[str, str]] = {"gpuwatch_usd_per_million_tokens": ("basis", "live")}
LABELLED = (
    "gpuwatch_clock_event_reason_active",
    "gpuwatch_clock_hertz",
    "gpuwatch_bound",
    "gpuwatch_reading_supported",
)
HOST_GAUGES = ("gpuwatch_last_successful_poll_timestamp_seconds",)

_ALERT_BOOKKEEPING = frozenset(
    {"__name__", "alertname", "alertstate", "severity", "instance", "job", "gpu", "uuid"}
)


@dataclass(frozen=True, slots=True)
class PrometheusConfig:
    url: str
    match: str = DEFAULT_MATCH
    username: str | None = None
    password: str | None = None
    bearer_token: str | None = None
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    insecure_skip_verify: bool = False
    timeout_s: float = TIMEOUT_S

    def __post_init__(self) -> None:
        parsed = urllib.parse.urlparse(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise UserError(f"--prometheus {self.url!r}: give the server's URL, e.g. http://127.0.0.1:9090")
        if self.bearer_token and self.username:
            raise UserError("--prometheus: give basic auth (--prometheus-user) or a bearer token, not both")


@dataclass(frozen=True, slots=True)
class RackAlert:
    name: str
    severity: str
    #: the alert's own labels beyond instance/job/gpu (reason, kind, …), for the screen
    detail: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RackGpu:
    instance: str
    job: str
    gpu: str  # NVML index, as the exporter labels it
    uuid: str = ""
    name: str | None = None
    up: float | None = None
    temperature_c: float | None = None
    slowdown_margin_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    sm_busy_ratio: float | None = None
    memory_controller_busy_ratio: float | None = None
    memory_used_bytes: float | None = None
    memory_total_bytes: float | None = None
    fan_speed_ratio: float | None = None
    throttled: float | None = None
    headroom_ratio: float | None = None
    tokens_per_s: float | None = None
    #: "measured" or "modelled" (the exporter's provenance label)
    tokens_per_s_provenance: str | None = None
    usd_per_mtok: float | None = None
    usd_per_mtok_provenance: str | None = None
    xid_errors_total: float | None = None
    performance_state: float | None = None
    sm_clock_hz: float | None = None
    bound: str | None = None
    throttle_reasons: tuple[str, ...] = ()
    #: readings the host's exporter says this card cannot give (gpuwatch_reading_supported == 0)
    unsupported: tuple[str, ...] = ()
    alerts: tuple[RackAlert, ...] = ()

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.instance, self.job, int(self.gpu) if self.gpu.isdigit() else 1 << 30)


@dataclass(frozen=True, slots=True)
class RackHost:
    instance: str
    job: str
    #: Prometheus' last scrape of this host's exporter succeeded
    up: bool
    #: seconds since the host's last successful NVML poll, as of the query (None: unknown)
    poll_age_s: float | None = None
    gpus: tuple[RackGpu, ...] = ()
    #: firing alerts that name this host but no GPU of it (exporter down, stale, poll errors)
    alerts: tuple[RackAlert, ...] = ()

    @property
    def stale(self) -> bool:
        """The exporter answers but its NVML readings stopped: the rules' GpuwatchStale is firing (the
        rule holds the threshold; the rack does not keep a second one)."""
        return any(a.name == STALE_ALERT for a in self.alerts)


@dataclass(frozen=True, slots=True)
class RackSnapshot:
    timestamp_s: float
    hosts: tuple[RackHost, ...] = ()
    #: why this refresh failed (Prometheus unreachable, refused the query, …); hosts is then empty
    error: str | None = None
    #: the Prometheus evaluation time of the answers
    query_time_s: float | None = None
    unmatched_alerts: tuple[RackAlert, ...] = field(default_factory=tuple)

    @property
    def gpus(self) -> tuple[RackGpu, ...]:
        return tuple(g for h in self.hosts for g in h.gpus)


class PrometheusError(Exception):
    """One refresh failed; the message says what and where, for the screen."""


class PrometheusRack:
    """Reads the rack from Prometheus' HTTP API (instant queries, read-only)."""

    def __init__(self, config: PrometheusConfig) -> None:
        self.config = config
        self._context = self._ssl_context()
        self._auth = self._auth_header()

    def _ssl_context(self) -> ssl.SSLContext | None:
        import ssl

        c = self.config
        if not c.url.startswith("https:"):
            return None
        try:
            ctx = ssl.create_default_context(cafile=c.ca_file)
            if c.client_cert:
                ctx.load_cert_chain(c.client_cert, c.client_key)
        except (OSError, ssl.SSLError) as exc:
            raise UserError(f"--prometheus TLS files: {exc}") from None
        if c.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _auth_header(self) -> str | None:
        c = self.config
        if c.bearer_token:
            return f"Bearer {c.bearer_token}"
        if c.username is not None:
            pair = f"{c.username}:{c.password or ''}".encode()
            return "Basic " + base64.b64encode(pair).decode()
        return None

    def query(self, expr: str) -> tuple[float, list[tuple[dict[str, str], float]]]:
        """One instant query: (evaluation time, [(labels, value)]) of a vector result."""
        import urllib.error
        import urllib.request

        url = self.config.url.rstrip("/") + "/api/v1/query"
        body = urllib.parse.urlencode({"query": expr}).encode()
        request = urllib.request.Request(url, data=body, method="POST")
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        request.add_header("Accept", "application/json")
        if self._auth:
            request.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(
                request, timeout=self.config.timeout_s, context=self._context
            ) as resp:
                raw = resp.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc.read(4096))
            if exc.code in (401, 403):
                raise PrometheusError(
                    f"Prometheus {self.config.url}: HTTP {exc.code} ({detail or exc.reason}): check "
                    "--prometheus-user/--prometheus-password-file or --prometheus-bearer-token-file"
                ) from None
            raise PrometheusError(
                f"Prometheus {self.config.url}: HTTP {exc.code}: {detail or exc.reason}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PrometheusError(f"Prometheus {self.config.url} unreachable: {reason}") from None
        if len(raw) > MAX_RESPONSE_BYTES:
            raise PrometheusError(f"Prometheus {self.config.url}: answer over {MAX_RESPONSE_BYTES} bytes")
        try:
            doc = json.loads(raw)
            if doc.get("status") != "success":
                raise PrometheusError(f"Prometheus {self.config.url}: {doc.get('error') or 'query failed'}")
            data = doc["data"]
            if data["resultType"] != "vector":
                raise PrometheusError(
                    f"Prometheus answered a {data['resultType']} to an instant vector query"
                )
            out = []
            when = 0.0
            for item in data["result"]:
                labels = {str(k): str(v) for k, v in item["metric"].items()}
                stamp, text = item["value"]
                when = max(when, float(stamp))
                out.append((labels, float(text)))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PrometheusError(
                f"Prometheus {self.config.url}: not a Prometheus API answer ({exc})"
            ) from None
        return when, out

    def read(self) -> RackSnapshot:
        """One refresh of the whole rack; a failure is a snapshot with ``error`` set, never an exception."""
        now = time.time()
        try:
            return self._read(now)
        except PrometheusError as exc:
            return RackSnapshot(timestamp_s=now, error=str(exc))

    def _read(self, now: float) -> RackSnapshot:
        m = self.config.match
        names = "|".join(sorted({*GAUGES, *LABELLED, *HOST_GAUGES}))
        when, ups = self.query(f"up{{{m}}}")
        _, series = self.query(f'{{__name__=~"{names}",{m}}}')
        _, known = self.query(f"last_over_time(gpuwatch_gpu_info{{{m}}}[1h])")
        _, alerts = self.query(f'ALERTS{{alertstate="firing",{m}}}')

        hosts = {_host_key(labels): _HostAcc(up=value == 1.0) for labels, value in ups}
        for labels, _value in known:
            gpu = _gpu_acc(hosts, labels)
            if gpu is not None:
                gpu.fields["uuid"] = labels.get("uuid", "")
                gpu.fields["name"] = labels.get("name")
        for labels, value in series:
            name = labels.get("__name__", "")
            if name in HOST_GAUGES:
                if _host_key(labels) in hosts:
                    hosts[_host_key(labels)].poll_s = value
                continue
            gpu = _gpu_acc(hosts, labels)
            if gpu is None or not math.isfinite(value):
                continue
            if name in SELECT and labels.get(SELECT[name][0]) != SELECT[name][1]:
                continue
            if name == "gpuwatch_clock_event_reason_active":
                if value == 1.0:
                    gpu.reasons.append(labels.get("reason", "?"))
            elif name == "gpuwatch_clock_hertz":
                if labels.get("clock") == "sm":
                    gpu.fields["sm_clock_hz"] = value
            elif name == "gpuwatch_reading_supported":
                if value == 0.0:
                    gpu.unsupported.append(labels.get("reading", "?"))
            elif name == "gpuwatch_bound":
                if value == 1.0:
                    gpu.fields["bound"] = labels.get("kind")
            elif name in GAUGES:
                gpu.fields[GAUGES[name]] = value
                if name in ("gpuwatch_tokens_per_second", "gpuwatch_usd_per_million_tokens"):
                    gpu.fields[GAUGES[name] + "_provenance"] = labels.get("provenance")
                gpu.fields.setdefault("uuid", labels.get("uuid", ""))

        unmatched: list[RackAlert] = []
        for labels, _value in alerts:
            alert = RackAlert(
                name=labels.get("alertname", "?"),
                severity=labels.get("severity", ""),
                detail=tuple(sorted((k, v) for k, v in labels.items() if k not in _ALERT_BOOKKEEPING)),
            )
            host = hosts.get(_host_key(labels))
            gpu = _gpu_acc(hosts, labels)
            if gpu is not None:
                gpu.alerts.append(alert)
            elif host is not None:
                host.alerts.append(alert)
            else:
                unmatched.append(alert)

        out = []
        for (instance, job), host in sorted(hosts.items()):
            gpus = [
                RackGpu(
                    instance=instance,
                    job=job,
                    gpu=index,
                    throttle_reasons=tuple(sorted(acc.reasons)),
                    unsupported=tuple(sorted(acc.unsupported)),
                    alerts=tuple(sorted(acc.alerts, key=_alert_order)),
                    **acc.fields,
                )
                for index, acc in host.gpus.items()
            ]
            age = max(0.0, when - host.poll_s) if host.poll_s is not None and host.up else None
            out.append(
                RackHost(
                    instance=instance,
                    job=job,
                    up=host.up,
                    poll_age_s=age,
                    gpus=tuple(sorted(gpus, key=lambda g: g.key)),
                    alerts=tuple(sorted(host.alerts, key=_alert_order)),
                )
            )
        return RackSnapshot(
            timestamp_s=now, hosts=tuple(out), query_time_s=when or None, unmatched_alerts=tuple(unmatched)
        )


@dataclass
class _GpuAcc:
    fields: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    alerts: list[RackAlert] = field(default_factory=list)


@dataclass
class _HostAcc:
    up: bool
    poll_s: float | None = None
    gpus: dict[str, _GpuAcc] = field(default_factory=dict)
    alerts: list[RackAlert] = field(default_factory=list)


def _host_key(labels: Mapping[str, str]) -> tuple[str, str]:
    return (labels.get("instance", ""), labels.get("job", ""))


def _gpu_acc(hosts: dict[tuple[str, str], _HostAcc], labels: Mapping[str, str]) -> _GpuAcc | None:
    """The GPU a series names, on a host Prometheus scrapes (series of other targets are ignored)."""
    host = hosts.get(_host_key(labels))
    if host is None or "gpu" not in labels:
        return None
    return host.gpus.setdefault(labels["gpu"], _GpuAcc())


_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def _alert_order(alert: RackAlert) -> tuple[int, str]:
    return (_SEVERITY_ORDER.get(alert.severity, 3), alert.name)


def _error_detail(raw: bytes) -> str:
    try:
        doc = json.loads(raw)
        return str(doc.get("error", ""))[:200]
    except ValueError:
        return raw.decode("utf-8", "replace").strip()[:200]


# -- sorting ---------------------------------------------------------------------------------------

#: sort key name -> (what the screen says, key function); unknown values sort last
SORTS: dict[str, str] = {
    "hottest": "hottest first",
    "throttled": "throttled first",
    "cost": "highest $/1M tokens first",
    "headroom": "lowest headroom first",
}


def sort_gpus(gpus: tuple[RackGpu, ...], by: str) -> list[RackGpu]:
    """The rack's GPUs in the order ``by`` names; GPUs without the figure go last, in rack order."""
    if by not in SORTS:
        raise ValueError(f"unknown sort {by!r}; one of {', '.join(SORTS)}")

    def key(g: RackGpu) -> tuple[int, float, tuple[str, str, int]]:
        if by == "hottest":
            value = None if g.temperature_c is None else -g.temperature_c
        elif by == "throttled":
            value = None if g.throttled is None else -(g.throttled * 1000 + (g.temperature_c or 0))
        elif by == "cost":
            value = None if g.usd_per_mtok is None else -g.usd_per_mtok
        else:
            value = g.headroom_ratio
        return (1, 0.0, g.key) if value is None else (0, value, g.key)

    return sorted(gpus, key=key)
