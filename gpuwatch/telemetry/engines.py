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

An engine is untrusted input: a counter that goes down is a restart (the rate counts what the
restarted engine generated from zero, as Prometheus' ``rate()`` does, and the new value is the next
baseline); a value that is NaN, infinite, negative, a counter beyond 2**53, or a rate above the
ceiling the cards' roofline allows is rejected with the reason; the whole response has one deadline
(an engine trickling its answer byte by byte is cut off); and a measurement older than
``stale_after_s`` is no longer served as one. ``EngineWatcher.states()`` says, per URL, whether the
engine is up, when it last answered, why it last failed and how long the scrape took.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from gpuwatch.telemetry.engine_state import EngineWork, ServingState, engine_work, serving_state

if TYPE_CHECKING:
    import http.client

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
    #: the generation counter went down since the previous reading (an engine restart)
    counter_reset: bool = False
    #: the engine's own per-GPU work estimate (vLLM/SGLang --enable-mfu-metrics); None without it
    work: EngineWork | None = None
    #: why the work counters were not used (e.g. "rejected: ..."); None when fine or absent
    work_error: str | None = None
    #: queue, KV cache, latency means, finished requests (gpuwatch/telemetry/engine_state.py)
    serving: ServingState | None = None


@dataclass(frozen=True)
class EngineState:
    """How scraping one engine goes: what ``gpuwatch_engine_*`` exports and the TUI shows."""

    url: str
    up: bool  # the last scrape gave a usable reading
    engine: str | None  # the engine last recognised at this URL
    last_success_s: float | None  # Unix time of the last usable reading; None: never
    last_error: str | None  # why the last scrape was not usable; None while up
    scrape_duration_s: float | None  # wall time of the last scrape (fetch + parse); None: none yet
    counter_resets: int = 0  # restarts seen (a token counter going down)
    scrapes: int = 0


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

#: a token counter beyond 2**53 has lost integer precision; at a million tokens/s it takes 285 years
#: to get there, so such a value is garbage, not a count
MAX_COUNTER = float(2**53)
#: the ceiling when no card is known: 100 M generated tokens/s is ~50x what a rack of 8 H200s decodes
#: on a 1 B model at batch 1024 (about 2e6 tokens/s at fp8 dense peak), so only garbage gets here
ABSOLUTE_MAX_TOKENS_PER_S = 1e8


#: what an engine's last error was, in a few words fit for a Prometheus label (bounded cardinality)
ERROR_KINDS = (
    ("waiting for the first scrape", "waiting"),
    ("connection refused", "refused"),
    ("timed out", "timeout"),
    ("HTTP ", "http_status"),
    ("bad HTTP response", "bad_http"),
    ("not Prometheus metrics text", "not_metrics"),
    ("no known engine metrics", "unknown_engine"),
    ("rejected: ", "implausible"),
    ("stale: ", "stale"),
    ("internal error", "internal_error"),
    ("bad engine URL", "bad_url"),
    ("unknown host", "unknown_host"),
    ("response larger than", "too_large"),
)


def error_kind(error: str | None) -> str:
    """``ok`` for None, else one of :data:`ERROR_KINDS`' kinds (``other`` for the rest)."""
    if error is None:
        return "ok"
    return next((kind for text, kind in ERROR_KINDS if text in error), "other")


def _unknown(url: str, now_s: float, error: str, engine: str | None = None) -> EngineReading:
    return EngineReading(url, engine, now_s, None, None, None, error)


def _rate(current: float | None, previous: float | None, dt_s: float) -> float | None:
    if current is None or previous is None or dt_s <= 0:
        return None
    # a counter below its last value means the engine restarted: everything since counts (rate())
    increase = current - previous if current >= previous else current
    return increase / dt_s


def _implausible(name: str, value: float, counter: bool) -> str | None:
    """Why ``value`` of metric ``name`` cannot be real, or None."""
    if math.isnan(value) or math.isinf(value):
        return f"{name} is {value}"
    if value < 0:
        return f"{name} is negative ({value:g})"
    if counter and value > MAX_COUNTER:
        return f"{name} = {value:.3g} is beyond any real token count (2**53)"
    return None


def parse_engine_metrics(
    text: str,
    url: str,
    previous: EngineReading | None,
    now_s: float,
    *,
    max_tokens_per_s: float | None = None,
) -> EngineReading:
    """Turn one scrape's exposition text into a reading; rates against ``previous`` (the last good
    reading of the same URL, or None). A value that cannot be real gives a reading with ``error``
    "rejected: …" and no figures; ``max_tokens_per_s`` is the ceiling for the generation rate
    (default :data:`ABSOLUTE_MAX_TOKENS_PER_S`)."""
    values: dict[str, float] = {}
    series: dict[str, int] = {}  # label sets per name: the MFU counters are per GPU, so averaged
    model_name: str | None = None
    # imported on the first scrape: the TUI without --engine never pays for it (~120 ms, ~3 MiB)
    from prometheus_client.parser import text_string_to_metric_families

    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                try:
                    value = float(sample.value)
                except (OverflowError, TypeError, ValueError):  # a 400-digit integer: no real count
                    value = math.inf
                # summed over label sets: data-parallel engines publish one series per rank
                values[sample.name] = values.get(sample.name, 0.0) + value
                series[sample.name] = series.get(sample.name, 0) + 1
                model_name = model_name or sample.labels.get("model_name")
    except (ValueError, TypeError, IndexError, KeyError, OverflowError) as exc:  # the parser's "not text"
        return _unknown(url, now_s, f"not Prometheus metrics text ({_short(str(exc)) or type(exc).__name__})")
    spec = next(
        (e for e in ENGINES if e.generation_total in values or e.running in values),
        None,
    ) or next((e for e in ENGINES if any(n.startswith(e.prefix) for n in values)), None)
    if spec is None:
        return _unknown(url, now_s, NO_KNOWN_METRICS)
    checked = [(spec.generation_total, True), (spec.prompt_total, True), (spec.running, False)]
    checked += [(g, False) for g in (spec.generation_gauge, spec.prompt_gauge) if g is not None]
    for name, counter in checked:
        if name in values and (why := _implausible(name, values[name], counter)) is not None:
            return _unknown(url, now_s, f"rejected: {why}", spec.name)
    gen_total = values.get(spec.generation_total)
    prompt_total = values.get(spec.prompt_total)
    gen_rate = prompt_rate = None
    basis = None
    reset = False
    if previous is not None and previous.engine == spec.name:
        dt_s = now_s - previous.timestamp_s
        gen_rate = _rate(gen_total, previous.generation_tokens_total, dt_s)
        prompt_rate = _rate(prompt_total, previous.prompt_tokens_total, dt_s)
        basis = "counters" if gen_rate is not None else None
        reset = (
            gen_total is not None
            and previous.generation_tokens_total is not None
            and gen_total < previous.generation_tokens_total
        )
    if gen_rate is None and spec.generation_gauge is not None and spec.generation_gauge in values:
        gen_rate = values[spec.generation_gauge]
        basis = "gauge"
    if prompt_rate is None and spec.prompt_gauge is not None:
        prompt_rate = values.get(spec.prompt_gauge)
    if gen_total is None and gen_rate is None:
        return _unknown(url, now_s, f"{spec.name} metrics without {spec.generation_total}", spec.name)
    same = previous if previous is not None and previous.engine == spec.name else None
    dt = now_s - same.timestamp_s if same is not None else None
    work, work_error = engine_work(spec.name, values, series, same.work if same else None, dt)
    serving = serving_state(spec.name, values, same.serving if same else None, dt)
    ceiling = ABSOLUTE_MAX_TOKENS_PER_S if max_tokens_per_s is None else max_tokens_per_s
    for what, rate in (("generation", gen_rate), ("prompt", prompt_rate)):
        limit = ceiling if what == "generation" else ABSOLUTE_MAX_TOKENS_PER_S
        if rate is not None and not (math.isfinite(rate) and 0 <= rate <= limit):
            return _unknown(
                url,
                now_s,
                f"rejected: {what} rate {rate:.3g} tokens/s is beyond the {limit:.3g} tokens/s "
                "the cards could produce",
                spec.name,
            )
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
        counter_reset=reset,
        work=work,
        work_error=work_error,
        serving=serving,
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


def fetched_over_tls(url: str) -> bool:
    """Whether the engine at ``url`` is scraped over TLS, reading the URL as the scrape does."""
    return urllib.parse.urlsplit(metrics_url(url)).scheme == "https"


#: a vLLM /metrics with many histograms is ~100 kB; far more than this is not a metrics page
MAX_BODY_BYTES = 8 * 1024 * 1024


class _Deadline:
    """Shuts a connection's socket when the whole exchange overruns, waking any blocked read: socket
    timeouts bound each read, so an engine sending one byte a second would otherwise never time out."""

    def __init__(self, timeout_s: float) -> None:
        self.fired = False
        #: set once connected (http.client drops its own reference when the server closes after answering)
        self.sock: socket.socket | None = None
        self._timer = threading.Timer(timeout_s, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.fired = True
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def _connection(target: str, timeout_s: float) -> tuple[http.client.HTTPConnection, str]:
    import http.client

    try:
        parts = urllib.parse.urlsplit(target)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise OSError(f"bad engine URL {target!r} ({_short(str(exc))})") from None
    if parts.scheme not in ("http", "https") or not host:
        raise OSError(f"bad engine URL {target!r} (expected http://host:port)")
    path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    if fetched_over_tls(target):
        return http.client.HTTPSConnection(host, port, timeout=timeout_s), path
    return http.client.HTTPConnection(host, port, timeout=timeout_s), path


def fetch_metrics(url: str, timeout_s: float) -> str:
    """GET the metrics text within ``timeout_s`` for the whole exchange; raises OSError with a short
    reason a user can act on."""
    import http.client  # here, not at import: the TUI without --engine never scrapes (~20 ms at start)

    target = metrics_url(url)
    conn, path = _connection(target, timeout_s)
    timed_out = f"timed out after {timeout_s:g} s"
    deadline = _Deadline(timeout_s)
    try:
        with deadline:
            conn.connect()
            deadline.sock = conn.sock
            if deadline.fired:
                raise TimeoutError
            conn.request("GET", path, headers={"Accept": "text/plain"})
            response = conn.getresponse()
            if response.status != 200:
                hint = " (llama.cpp serves metrics only with --metrics)" if response.status == 501 else ""
                raise OSError(f"HTTP {response.status} {_short(response.reason)} from {target}{hint}")
            chunks: list[bytes] = []
            size = 0
            while chunk := response.read1(65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise OSError(
                        f"response larger than {MAX_BODY_BYTES // 1024 // 1024} MiB: not a metrics page"
                    )
            charset = response.headers.get_content_charset() or "utf-8"
        if deadline.fired:  # the shutdown may read as a clean end of a short body
            raise OSError(f"{timed_out} (the engine did not finish its answer)")
    except TimeoutError:
        raise OSError(timed_out) from None
    except (http.client.HTTPException, ValueError) as exc:
        if deadline.fired:
            raise OSError(f"{timed_out} (the engine did not finish its answer)") from None
        raise OSError(f"bad HTTP response ({_short(str(exc)) or type(exc).__name__})") from None
    except OSError as exc:
        if deadline.fired:
            raise OSError(f"{timed_out} (the engine did not finish its answer)") from None
        if exc.strerror is None and exc.errno is None:
            raise  # one of ours, already worded
        raise OSError(_reason(exc, timeout_s)) from None
    finally:
        conn.close()
    body = b"".join(chunks)
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
    timeout cannot delay the others); ``latest()`` only reads what the threads left.

    ``ceiling_tokens_per_s`` may be set at any time (the live session sets it from the cards'
    roofline): generation rates above it are rejected. A reading older than ``stale_after_s`` comes
    out of ``latest()`` as unknown, saying when the engine last answered.
    """

    def __init__(
        self,
        urls: Sequence[str],
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        *,
        timeout_s: float | None = None,
        fetch: Callable[[str, float], str] = fetch_metrics,
        stale_after_s: float | None = None,
    ) -> None:
        self.urls = tuple(urls)
        self.interval_s = interval_s
        self.timeout_s = timeout_s if timeout_s is not None else min(2.0, max(0.2, interval_s))
        #: a scrape every interval, each taking at most timeout: older than this, a reading is stale
        self.stale_after_s = (
            stale_after_s if stale_after_s is not None else 2 * interval_s + self.timeout_s + 1.0
        )
        self.ceiling_tokens_per_s: float | None = None
        self._clock = clock
        self._fetch = fetch
        now = clock()
        self._latest: dict[str, EngineReading] = {
            u: _unknown(u, now, "waiting for the first scrape") for u in self.urls
        }
        self._states: dict[str, EngineState] = {
            u: EngineState(u, False, None, None, "waiting for the first scrape", None) for u in self.urls
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
        now = self._clock()
        return tuple(self._fresh(snapshot[u], now) for u in self.urls)

    def _fresh(self, reading: EngineReading, now_s: float) -> EngineReading:
        age_s = now_s - reading.timestamp_s
        if reading.error is not None or age_s <= self.stale_after_s:
            return reading
        when = time.strftime("%H:%M:%S", time.localtime(reading.timestamp_s))
        return replace(
            reading,
            generation_tokens_per_s=None,
            prompt_tokens_per_s=None,
            requests_running=None,
            work=None,
            serving=None,
            error=f"stale: no answer for {age_s:.0f} s (last at {when})",
        )

    def states(self) -> tuple[EngineState, ...]:
        """Per URL, how scraping goes (up, last success, last error, scrape duration)."""
        snapshot: Mapping[str, EngineState] = self._states
        now = self._clock()
        out = []
        for u in self.urls:
            state = snapshot[u]
            if (
                state.up
                and state.last_success_s is not None
                and now - state.last_success_s > self.stale_after_s
            ):
                state = replace(state, up=False, last_error=self._fresh(self._latest[u], now).error)
            out.append(state)
        return tuple(out)

    def scrape_once(self, url: str, previous: EngineReading | None) -> EngineReading:
        try:
            text = self._fetch(url, self.timeout_s)
        except OSError as exc:
            return _unknown(url, self._clock(), str(exc))
        return parse_engine_metrics(
            text, url, previous, self._clock(), max_tokens_per_s=self.ceiling_tokens_per_s
        )

    def _watch(self, url: str) -> None:
        good: EngineReading | None = None
        last_error: str | None = None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                reading = self.scrape_once(url, good)
            except Exception as exc:  # a bug must not end this URL's thread and freeze its reading
                log.exception("scraping %s failed", url)
                reading = _unknown(
                    url, self._clock(), f"internal error: {_short(str(exc)) or type(exc).__name__}"
                )
            duration_s = time.monotonic() - started
            if reading.error is None:
                good = reading
                if last_error is not None:
                    log.info("engine %s answers again", url)
            elif reading.engine is None and good is not None:
                reading = replace(reading, engine=good.engine)  # "vllm: unknown (connection refused)"
            if reading.error is not None and reading.error != last_error:
                log.warning("engine %s: %s", url, reading.error)  # once per change, not every scrape
            last_error = reading.error
            state = self._states[url]
            state = EngineState(
                url=url,
                up=reading.error is None,
                engine=reading.engine,
                last_success_s=reading.timestamp_s if reading.error is None else state.last_success_s,
                last_error=reading.error,
                scrape_duration_s=duration_s,
                counter_resets=state.counter_resets + int(reading.counter_reset),
                scrapes=state.scrapes + 1,
            )
            with self._lock:
                self._latest = {**self._latest, url: reading}  # swap, never mutate what readers hold
                self._states = {**self._states, url: state}
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))
