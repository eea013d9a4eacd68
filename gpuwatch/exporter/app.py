"""The exporter's WSGI application: /metrics (Prometheus text, or OpenMetrics when the Accept header asks),
a landing page at /, 404 elsewhere; encoded bodies cached per snapshot."""

from __future__ import annotations

import gzip
import html
import threading
from collections.abc import Callable, Hashable, Iterable
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import CollectorRegistry

from gpuwatch import __version__

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def landing_page(description: str) -> bytes:
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>gpuwatch exporter</title></head><body>"
        f"<h1>gpuwatch exporter {html.escape(__version__)}</h1>"
        f"<p>Source: {html.escape(description)}</p>"
        "<p><a href='/metrics'>/metrics</a> (Prometheus text; OpenMetrics when the Accept header asks)</p>"
        "</body></html>\n"
    ).encode()


def make_app(
    registry: CollectorRegistry,
    description: str | Callable[[], str],
    generation: Callable[[], Hashable] | None = None,
) -> WsgiApp:
    """Route / to the landing page and /metrics to the registry's exposition (content negotiation, gzip).

    ``generation`` returns a token that changes whenever what the registry would say changes (in the
    exporter: a new snapshot arrived). Encoding the body is most of a scrape's cost, so each
    (format, gzip) variant is encoded once per generation and served from memory to every scrape
    until the token changes. Without it every scrape encodes afresh, as does a ``name[]`` filter.
    """
    metrics_app = make_wsgi_app(registry)
    describe = description if callable(description) else (lambda: description)
    cache = _BodyCache(registry, generation) if generation is not None else None

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path not in ("/", "/metrics"):
            return _plain(start_response, "404 Not Found", b"not found: try /metrics\n")
        if method not in ("GET", "HEAD"):
            return _plain(
                start_response, "405 Method Not Allowed", b"only GET and HEAD\n", [("Allow", "GET, HEAD")]
            )
        if path == "/metrics":
            if cache is None or "name[]" in parse_qs(environ.get("QUERY_STRING", "")):
                # prometheus_client's app answers GET only; HEAD is a GET whose body the server drops
                result: Iterable[bytes] = metrics_app({**environ, "REQUEST_METHOD": "GET"}, start_response)
                return result
            body, headers = cache.get(environ.get("HTTP_ACCEPT", ""), environ.get("HTTP_ACCEPT_ENCODING", ""))
            start_response("200 OK", headers)
            return [b""] if method == "HEAD" else [body]
        landing = landing_page(describe())
        start_response(
            "200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(landing)))]
        )
        return [landing]

    return app


class _BodyCache:
    """Encoded /metrics bodies of the current generation, one per (content type, gzip)."""

    def __init__(self, registry: CollectorRegistry, generation: Callable[[], Hashable]) -> None:
        self._registry = registry
        self._generation = generation
        self._lock = threading.Lock()
        self._cached_generation: Hashable = _NO_GENERATION
        self._bodies: dict[tuple[str, bool], bytes] = {}

    def get(self, accept: str, accept_encoding: str) -> tuple[bytes, list[tuple[str, str]]]:
        encoder, content_type = choose_encoder(accept)
        compress = gzip_accepted(accept_encoding)
        key = (content_type, compress)
        # Held while encoding: concurrent scrapes of a fresh snapshot wait for one encoding instead of
        # each doing it; a generation that moves on mid-encoding only makes the next scrape re-encode.
        with self._lock:
            current = self._generation()
            if current != self._cached_generation:
                self._bodies.clear()
                self._cached_generation = current
            body = self._bodies.get(key)
            if body is None:
                body = encoder(self._registry)
                if compress:
                    body = gzip.compress(body, compresslevel=6)
                self._bodies[key] = body
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        if compress:
            headers.append(("Content-Encoding", "gzip"))
        return body, headers


_NO_GENERATION = object()


def _plain(
    start_response: Callable[..., Any], status: str, body: bytes, extra: list[tuple[str, str]] | None = None
) -> list[bytes]:
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        *(extra or []),
    ]
    start_response(status, headers)
    return [body]
