"""Tokens/s from serving engines' Prometheus endpoints: vLLM, Hugging Face TGI, llama.cpp, SGLang.

The engine is recognised from its metric names. Throughput is the rise of the engine's token
counters between two scrapes divided by the time between them: a wall-clock rate, which is what
$/token needs. Where an engine also publishes a throughput gauge it fills in on the first scrape,
before there is a previous one to difference against.

Metric names, checked against each engine's documentation and source:
- vLLM: docs "Production Metrics" (docs.vllm.ai/en/latest/usage/metrics.html) and
  docs/source/design/v1/metrics.md: counters ``vllm:prompt_tokens_total``,
  ``vllm:generation_tokens_total``, gauge ``vllm:num_requests_running`` (labels model_name,
  and engine on V1). The V0 gauges ``vllm:avg_generation_throughput_toks_per_s`` /
  ``vllm:avg_prompt_throughput_toks_per_s`` were removed in V1; used when present.
- TGI: docs/source/reference/metrics.md: histograms ``tgi_request_generated_tokens`` and
  ``tgi_request_input_length`` (their ``_sum`` rises as requests finish, so the rate is bursty
  at low request rates), gauge ``tgi_batch_current_size``. TGI has no token counters.
- llama.cpp server (``--metrics``): tools/server/README.md: counters
  ``llamacpp:prompt_tokens_total``, ``llamacpp:tokens_predicted_total``, gauges
  ``llamacpp:predicted_tokens_seconds``, ``llamacpp:prompt_tokens_seconds`` (per-slot decode
  speed since the last scrape, not wall-clock throughput), ``llamacpp:requests_processing``.
  Without ``--metrics`` it answers HTTP 501.
- SGLang (``--enable-metrics``): docs/references/production_metrics.md: counters
  ``sglang:prompt_tokens_total``, ``sglang:generation_tokens_total``, gauges
  ``sglang:num_running_reqs``, ``sglang:gen_throughput``.
"""

from __future__ import annotations

import http.client
import logging
import math
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineReading:
    """One scrape of one engine. ``generation_tokens_per_s`` None with ``error`` None means the
    engine answered but there is no rate yet (first scrape, and no throughput gauge)."""

    url: str
    engine: str | None  # "vllm" | "tgi" | "llama.cpp" | "sglang" | None
    timestamp_s: float
    generation_tokens_per_s: float | None
    prompt_tokens_per_s: float | None
    requests_running: float | None
    error: str | None  # why unknown ("connection refused", "no known engine metrics", ...)
    #: raw cumulative counters at this scrape (summed over label sets): the base of the next rate
    generation_tokens_total: float | None = None
    prompt_tokens_total: float | None = None
    #: "counters" (delta between scrapes) or "gauge" (the engine's own throughput figure)
    rate_basis: str | None = None
    #: the model_name label where the engine publishes one
    model_name: str | None = None


@dataclass(frozen=True)
class _EngineMetrics:
    name: str
    prefix: str
    generation_total: str
    prompt_total: str
    running: str
    generation_gauge: str | None = None
    prompt_gauge: str | None = None


ENGINES: tuple[_EngineMetrics, ...] = (
    _EngineMetrics(
        "vllm",
        "vllm:",
        "vllm:generation_tokens_total",
        "vllm:prompt_tokens_total",
        "vllm:num_requests_running",
        "vllm:avg_generation_throughput_toks_per_s",
        "vllm:avg_prompt_throughput_toks_per_s",
    ),
    _EngineMetrics(
        "tgi",
        "tgi_",
        "tgi_request_generated_tokens_sum",
        "tgi_request_input_length_sum",
        "tgi_batch_current_size",
    ),
    _EngineMetrics(
        "llama.cpp",
        "llamacpp:",
        "llamacpp:tokens_predicted_total",
        "llamacpp:prompt_tokens_total",
        "llamacpp:requests_processing",
        "llamacpp:predicted_tokens_seconds",
        "llamacpp:prompt_tokens_seconds",
    ),
    _EngineMetrics(
        "sglang",
        "sglang:",
        "sglang:generation_tokens_total",
        "sglang:prompt_tokens_total",
        "sglang:num_running_reqs",
        "sglang:gen_throughput",
    ),
)

NO_KNOWN_METRICS = "no known engine metrics (expected vLLM, TGI, llama.cpp or SGLang)"


def _unknown(url: str, now_s: float, error: str, engine: str | None = None) -> EngineReading:
    return EngineReading(url, engine, now_s, None, None, None, error)


def _rate(current: float | None, previous: float | None, dt_s: float) -> float | None:
    if current is None or previous is None or dt_s <= 0:
        return None
    # a counter below its last value means the engine restarted: everything since counts
    increase = current - previous if current >= previous else current
    return increase / dt_s


def parse_engine_metrics(text: str, url: str, previous: EngineReading | None, now_s: float) -> EngineReading:
    """Turn one scrape's exposition text into a reading; rates against ``previous`` (the last good
    reading of the same URL, or None)."""
    values: dict[str, float] = {}
    model_name: str | None = None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if math.isnan(sample.value):
                    continue
                # summed over label sets: data-parallel engines publish one series per rank
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
                model_name = model_name or sample.labels.get("model_name")
    except ValueError as exc:
        return _unknown(url, now_s, f"not Prometheus metrics text ({_short(str(exc))})")
    spec = next(
        (e for e in ENGINES if e.generation_total in values or e.running in values),
        None,
    ) or next((e for e in ENGINES if any(n.startswith(e.prefix) for n in values)), None)
    if spec is None:
        return _unknown(url, now_s, NO_KNOWN_METRICS)
    gen_total = values.get(spec.generation_total)
    prompt_total = values.get(spec.prompt_total)
    gen_rate = prompt_rate = None
    basis = None
    if previous is not None and previous.engine == spec.name:
        dt_s = now_s - previous.timestamp_s
        gen_rate = _rate(gen_total, previous.generation_tokens_total, dt_s)
        prompt_rate = _rate(prompt_total, previous.prompt_tokens_total, dt_s)
        basis = "counters" if gen_rate is not None else None
    if gen_rate is None and spec.generation_gauge is not None and spec.generation_gauge in values:
        gen_rate = values[spec.generation_gauge]
        basis = "gauge"
    if prompt_rate is None and spec.prompt_gauge is not None:
        prompt_rate = values.get(spec.prompt_gauge)
    if gen_total is None and gen_rate is None:
        return _unknown(url, now_s, f"{spec.name} metrics without {spec.generation_total}", spec.name)
    return EngineReading(
        url=url,
        engine=spec.name,
        timestamp_s=now_s,
        generation_tokens_per_s=gen_rate,
        prompt_tokens_per_s=prompt_rate,
        requests_running=values.get(spec.running),
        error=None,
        generation_tokens_total=gen_total,
        prompt_tokens_total=prompt_total,
        rate_basis=basis,
        model_name=model_name,
    )


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def metrics_url(url: str) -> str:
    """``http://host:8000`` → ``http://host:8000/metrics``; a URL with a path is used as given."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parts.path in ("", "/"):
        parts = parts._replace(path="/metrics")
    return urllib.parse.urlunsplit(parts)


#: a vLLM /metrics with many histograms is ~100 kB; far more than this is not a metrics page
MAX_BODY_BYTES = 8 * 1024 * 1024


def fetch_metrics(url: str, timeout_s: float) -> str:
    """GET the metrics text; raises OSError with a short reason a user can act on."""
    target = metrics_url(url)
    request = urllib.request.Request(target, headers={"Accept": "text/plain"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body: bytes = response.read(MAX_BODY_BYTES + 1)
            charset = response.headers.get_content_charset() or "utf-8"
    except urllib.error.HTTPError as exc:
        hint = " (llama.cpp serves metrics only with --metrics)" if exc.code == 501 else ""
        raise OSError(f"HTTP {exc.code} {exc.reason} from {target}{hint}") from None
    except urllib.error.URLError as exc:
        raise OSError(_reason(exc.reason, timeout_s)) from None
    except TimeoutError:
        raise OSError(f"timed out after {timeout_s:g} s") from None
    except (http.client.HTTPException, ValueError) as exc:
        raise OSError(f"bad HTTP response ({_short(str(exc)) or type(exc).__name__})") from None
    if len(body) > MAX_BODY_BYTES:
        raise OSError(f"response larger than {MAX_BODY_BYTES // 1024 // 1024} MiB: not a metrics page")
    try:
        return body.decode(charset, errors="replace")
    except LookupError:  # a charset Python does not know; the exposition format is UTF-8 anyway
        return body.decode("utf-8", errors="replace")


def _reason(reason: object, timeout_s: float) -> str:
    if isinstance(reason, TimeoutError):
        return f"timed out after {timeout_s:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"unknown host ({reason.strerror})"
    if isinstance(reason, OSError):
        return reason.strerror or str(reason)
    return str(reason)


class EngineWatcher:
    """Scrapes each URL every ``interval_s`` on its own thread (a dead endpoint waiting out its
    timeout cannot delay the others); ``latest()`` only reads what the threads left."""

    def __init__(
        self,
        urls: Sequence[str],
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        *,
        timeout_s: float | None = None,
        fetch: Callable[[str, float], str] = fetch_metrics,
    ) -> None:
        self.urls = tuple(urls)
        self.interval_s = interval_s
        self.timeout_s = timeout_s if timeout_s is not None else min(2.0, max(0.2, interval_s))
        self._clock = clock
        self._fetch = fetch
        now = clock()
        self._latest: dict[str, EngineReading] = {
            u: _unknown(u, now, "waiting for the first scrape") for u in self.urls
        }
        self._lock = threading.Lock()  # between scrape threads; readers take the dict unlocked
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        if self._threads:
            return
        for url in self.urls:
            t = threading.Thread(target=self._watch, args=(url,), name=f"gpuwatch-engine {url}", daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout_s + 1.0)

    def latest(self) -> tuple[EngineReading, ...]:
        snapshot: Mapping[str, EngineReading] = self._latest
        return tuple(snapshot[u] for u in self.urls)

    def scrape_once(self, url: str, previous: EngineReading | None) -> EngineReading:
        try:
            text = self._fetch(url, self.timeout_s)
        except OSError as exc:
            return _unknown(url, self._clock(), str(exc))
        return parse_engine_metrics(text, url, previous, self._clock())

    def _watch(self, url: str) -> None:
        good: EngineReading | None = None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                reading = self.scrape_once(url, good)
            except Exception as exc:  # a bug must not end this URL's thread and freeze its reading
                log.exception("scraping %s failed", url)
                reading = _unknown(
                    url, self._clock(), f"internal error: {_short(str(exc)) or type(exc).__name__}"
                )
            if reading.error is None:
                good = reading
            elif reading.engine is None and good is not None:
                reading = replace(reading, engine=good.engine)  # "vllm: unknown (connection refused)"
            with self._lock:
                self._latest = {**self._latest, url: reading}  # swap, never mutate what readers hold
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))
