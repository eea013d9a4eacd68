"""The exporter's HTTP server: /metrics (Prometheus text, or OpenMetrics when the Accept header asks), a
landing page at /, 404 elsewhere, optional TLS.

Built on the standard library's WSGI server with one thread per connection, like prometheus_client's own
server, plus what a daemon facing a network needs: a cap on concurrent connections (further clients wait
in the listen backlog instead of spawning unbounded threads), a socket timeout so an idle or slow client
cannot hold a thread forever, and the TLS handshake done in the connection's thread so a client that
never completes it cannot block accept(). Oversized request lines and headers are refused by
http.server itself (414 / 431).
"""

from __future__ import annotations

import contextlib
import gzip
import html
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Hashable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import CollectorRegistry

from gpuwatch import __version__
from gpuwatch.errors import UserError

#: default port. The Prometheus wiki's "Default port allocations" page has the whole 9100-9999 exporter
#: range allocated, the GPU exporters included: 9400 (NVIDIA dcgm-exporter), 9401 (bugroger
#: nvidia_exporter), 9445 (mindprince nvidia_gpu_prometheus_exporter), 9835 (utkuozdemir
#: nvidia_gpu_exporter). gpuwatch therefore sits outside that range, on 19400 (dcgm-exporter's port
#: + 10000, easy to remember), which no entry of that page, in or outside the range, uses.
DEFAULT_PORT = 19400
DEFAULT_LISTEN = f":{DEFAULT_PORT}"

#: connections served at once; more wait in the kernel's accept backlog
MAX_CONNECTIONS = 64
#: seconds a connection may sit idle mid-request (slow or hostile clients)
CONNECTION_TIMEOUT_S = 10.0

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def parse_listen(spec: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (all interfaces) or ``[IPV6]:PORT`` -> (host, port)."""
    host, sep, port_text = spec.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UserError(f"--listen {spec!r}: expected HOST:PORT, :PORT or [IPV6]:PORT with a port 0-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UserError(f"--listen {spec!r}: {host!r} is not an IPv6 address") from None
    return host or "0.0.0.0", int(port_text)


def landing_page(description: str) -> bytes:
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>gpuwatch exporter</title></head><body>"
        f"<h1>gpuwatch exporter {html.escape(__version__)}</h1>"
        f"<p>Source: {html.escape(description)}</p>"
        "<p><a href='/metrics'>/metrics</a> (Prometheus text; OpenMetrics when the Accept header asks)</p>"
        "</body></html>\n"
    ).encode()


def make_app(
    registry: CollectorRegistry, description: str, generation: Callable[[], Hashable] | None = None
) -> WsgiApp:
    """Route / to the landing page and /metrics to the registry's exposition (content negotiation, gzip).

    ``generation`` returns a token that changes whenever what the registry would say changes (in the
    exporter: a new snapshot arrived). Encoding the body is most of a scrape's cost, so each
    (format, gzip) variant is encoded once per generation and served from memory to every scrape
    until the token changes. Without it every scrape encodes afresh, as does a ``name[]`` filter.
    """
    metrics_app = make_wsgi_app(registry)
    landing = landing_page(description)
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
                result: Iterable[bytes] = metrics_app(environ, start_response)
                return result
            body, headers = cache.get(environ.get("HTTP_ACCEPT", ""), environ.get("HTTP_ACCEPT_ENCODING", ""))
            start_response("200 OK", headers)
            return [b""] if method == "HEAD" else [body]
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


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr (a scrape every few seconds is noise); a timeout on every connection."""

    timeout = CONNECTION_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()  # applies the timeout to the socket
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()  # here, in the connection's thread, not in accept()

    def handle(self) -> None:
        # a client that went away, timed out or failed the TLS handshake gets no answer
        with contextlib.suppress(OSError):  # ssl.SSLError is an OSError
            super().handle()


class _BoundedThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        self._slots.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a broken connection is the client's problem, not a traceback on the exporter's stderr


class _BoundedThreadingServer6(_BoundedThreadingServer):
    address_family = socket.AF_INET6


class ExporterServer:
    """Bound on construction (so a busy port is a one-line error before polling starts)."""

    def __init__(
        self,
        app: WsgiApp,
        host: str,
        port: int,
        *,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise UserError("--tls-cert and --tls-key go together: give both, or neither for plain HTTP")
        server_class = _BoundedThreadingServer6 if ":" in host else _BoundedThreadingServer
        try:
            self._server = make_server(
                host, port, app, server_class=server_class, handler_class=_QuietHandler
            )
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.tls = tls_cert is not None
        if tls_cert is not None and tls_key is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                context.load_cert_chain(tls_cert, tls_key)
            except (OSError, ssl.SSLError) as exc:
                self._server.server_close()
                raise UserError(f"cannot load --tls-cert {tls_cert} / --tls-key {tls_key}: {exc}") from None
            self._server.socket = context.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/metrics"

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.5)

    def start(self) -> None:
        """Serve on a background thread (tests, embedding)."""
        self._thread = threading.Thread(target=self.serve_forever, name="gpuwatch-exporter-http", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Stop serving (from any thread but the serving one) and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
