"""The exporter's HTTP(S) server: one asyncio event loop, h11 for HTTP/1.1 parsing, the WSGI app in a
small thread pool.

Why this and not the standard library's threaded WSGI server (what prometheus_client and nvitop-exporter
use), aiohttp or uvicorn: none of them bounds the time a client may take to send its request head.
http.server's timeout is per ``recv`` (a client trickling a header line every few seconds holds a thread
for ever), and uvicorn's ``timeout_keep_alive`` is reset by every byte received (xorbitsai/inference#5213
had to patch uvicorn's protocol class for exactly this). What a scrape endpoint facing a network needs is
small enough to hold in one place:

- a deadline on the whole request head, TLS handshake included (``Limits.head_deadline_s`` from the first byte
  of a request, or from accept for a new connection), so slowloris clients are cut off whatever they trickle;
- idle connections that cost next to nothing: a parked coroutine and a socket, no thread; beyond
  ``Limits.max_connections`` the oldest connection not in a request is closed to make room, so a flood of
  sockets cannot lock the port;
- at most ``Limits.max_in_flight`` requests admitted at once (a few worker threads run the app, the
  rest queue), and beyond that an immediate 503 with ``Retry-After``; the body is cached per snapshot,
  so a request in flight is short;
- a write deadline, so a client that never reads its response cannot hold memory or a slot;
- TLS sniffed from the first byte: plain HTTP on the TLS port gets a clear 400, not an empty reply;
  the certificate is taken from ``WatchedWebConfig`` per connection, so rotated files apply at once;
- basic auth with bcrypt checks cached per (user, password) and run one at a time, so a scraper pays
  bcrypt once and a password-guessing client cannot starve scrapes of CPU.

h11 (python-hyper, the parser under uvicorn's pure-Python mode and httpx) does the HTTP/1.1 framing:
keep-alive, pipelining, HTTP/1.0, malformed requests and the head-size limit. No ``Server`` header names
the interpreter; it says ``gpuwatch``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import socket
import sys
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import h11

from gpuwatch.errors import UserError
from gpuwatch.exporter.app import WsgiApp, landing_page, make_app
from gpuwatch.exporter.webconfig import (
    BasicAuthCache,
    TlsSettings,
    WatchedWebConfig,
    WebConfig,
    check_password,
    lookup,
    parse_basic_auth,
)

__all__ = ["DEFAULT_LISTEN", "DEFAULT_PORT", "ExporterServer", "Limits", "landing_page", "make_app"]

#: default port. The Prometheus wiki's "Default port allocations" page has the whole 9100-9999 exporter
#: range allocated, the GPU exporters included: 9400 (NVIDIA dcgm-exporter), 9401 (bugroger
#: nvidia_exporter), 9445 (mindprince nvidia_gpu_prometheus_exporter), 9835 (utkuozdemir
#: nvidia_gpu_exporter). gpuwatch therefore sits outside that range, on 19400 (dcgm-exporter's port
#: + 10000, easy to remember), which no entry of that page, in or outside the range, uses.
DEFAULT_PORT = 19400
DEFAULT_LISTEN = f":{DEFAULT_PORT}"

SERVER_HEADER = ("Server", "gpuwatch")


@dataclass(frozen=True)
class Limits:
    """What one client may cost. The defaults hold 200 slowloris and 64 silent sockets off a 1 s scrape."""

    #: seconds to send a whole request head (and finish the TLS handshake, on a new connection)
    head_deadline_s: float = 10.0
    #: seconds a keep-alive connection may sit between requests (Prometheus scrapes every 15-60 s)
    idle_timeout_s: float = 120.0
    #: seconds to take a response off our hands
    write_deadline_s: float = 10.0
    #: open connections; beyond, the oldest one not in a request is closed
    max_connections: int = 512
    #: requests admitted at once (answered or queued for a worker); beyond, 503 at once
    max_in_flight: int = 64
    #: threads running the WSGI app (encoding holds the GIL: more would only queue there)
    workers: int = 4
    #: bytes of request line + headers (414 / 431 beyond)
    max_head_bytes: int = 16 * 1024
    max_headers: int = 100
    #: password checks waiting for the one bcrypt worker; beyond, 503
    max_auth_waiting: int = 4


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

#: what a plain-HTTP client on the TLS port reads (Go's net/http answers the same way)
PLAIN_ON_TLS_PORT = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
    b"Server: gpuwatch\r\n\r\nClient sent an HTTP request to an HTTPS server: use https://\n"
)


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


class _Conn:
    """One open connection: its task, and whether it is inside a request (then it is never evicted)."""

    __slots__ = ("busy", "evicted", "task")

    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task = task
        self.busy = False
        self.evicted = False


class _Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


def _plain(status: int, text: str, extra: Iterable[tuple[str, str]] = ()) -> _Response:
    body = text.encode()
    return _Response(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), *extra],
        body,
    )


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
        web_config: WebConfig | None = None,
        limits: Limits | None = None,
    ) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise UserError("--tls-cert and --tls-key go together: give both, or neither for plain HTTP")
        if tls_cert is not None and tls_key is not None:
            if web_config is not None and web_config.tls is not None:
                raise UserError(
                    "--tls-cert/--tls-key and a web config with tls_server_config: give one of them"
                )
            base = web_config or WebConfig()
            web_config = WebConfig(
                tls=TlsSettings(cert_file=tls_cert, key_file=tls_key),
                users=base.users,
                headers=base.headers,
                path=base.path,
            )
        self._web = WatchedWebConfig(web_config or WebConfig())  # loads the certificates: fails now
        self.tls = (web_config or WebConfig()).tls is not None
        self._app = app
        self.limits = limits or Limits()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._sock = socket.create_server((host, port), family=family, backlog=1024)
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self._sock.setblocking(False)
        self._conns: dict[int, _Conn] = {}
        self._in_flight = 0
        self._auth_waiting = 0
        self._auth_cache = BasicAuthCache()
        self._auth_lock: asyncio.Lock | None = None
        self._pool = ThreadPoolExecutor(max_workers=self.limits.workers, thread_name_prefix="gpuwatch-http")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        #: responses by status since start (tests and the benchmark read it)
        self.statuses: dict[int, int] = {}

    @property
    def host(self) -> str:
        return str(self._sock.getsockname()[0])

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/metrics"

    @property
    def serving(self) -> bool:
        """False once the serving thread has ended (shut down, or failed)."""
        return not self._stopped.is_set()

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    # -- lifecycle ---------------------------------------------------------------------------------
    def serve_forever(self) -> None:
        try:
            asyncio.run(self._main())
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._sock.close()
            self._stopped.set()

    def start(self) -> None:
        """Serve on a background thread (tests, embedding)."""
        self._thread = threading.Thread(target=self.serve_forever, name="gpuwatch-exporter-http", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Stop serving (from any thread but the serving one) and close the socket."""
        self._stop_requested.set()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
            self._stopped.wait(timeout=5)
        else:
            self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._auth_lock = asyncio.Lock()
        if self._stop_requested.is_set():
            return
        accept = asyncio.ensure_future(self._accept_loop())
        try:
            await self._stop.wait()
        finally:
            accept.cancel()
            tasks = [c.task for c in self._conns.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(accept, *tasks, return_exceptions=True)

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(self._sock)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._evict_one()
                    await asyncio.sleep(0.05)
                continue
            if len(self._conns) >= self.limits.max_connections:
                self._evict_one()
            task = asyncio.ensure_future(self._connection(sock))
            self._conns[id(task)] = _Conn(task)
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Future[None]) -> None:
        self._conns.pop(id(task), None)

    def _evict_one(self) -> None:
        """Close the oldest connection that is not inside a request (dicts keep insertion order)."""
        for conn in self._conns.values():
            if not conn.busy and not conn.evicted and not conn.task.done():
                conn.evicted = True
                conn.task.cancel()
                return

    # -- one connection ----------------------------------------------------------------------------
    async def _connection(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        limits = self.limits
        writer: asyncio.StreamWriter | None = None
        conn = self._conns.get(id(asyncio.current_task()))
        clean = False
        try:
            deadline = loop.time() + limits.head_deadline_s
            async with asyncio.timeout_at(deadline):
                opened = await self._open(sock)
            if opened is None:
                return
            reader, writer, web = opened
            h = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head_bytes)
            first = True  # a new connection's first request runs on the clock started at accept
            while True:
                if not first:
                    if not h.trailing_data[0]:
                        # between requests: wait cheaply for the next one's first byte, then start its clock
                        async with asyncio.timeout(limits.idle_timeout_s):
                            data = await reader.read(65536)
                        h.receive_data(data)
                        if not data:
                            return
                    deadline = loop.time() + limits.head_deadline_s
                try:
                    async with asyncio.timeout_at(deadline):
                        event = await self._next_request(h, reader)
                except h11.RemoteProtocolError as exc:
                    await self._send_raw(writer, self._protocol_error(h, exc))
                    clean = True
                    return
                if not isinstance(event, h11.Request):
                    return  # the client closed
                if conn is not None:
                    conn.busy = True
                try:
                    response = await self._answer(event, web, writer)
                    if not await self._send(h, writer, event, response):
                        return
                finally:
                    if conn is not None:
                        conn.busy = False
                clean = True
                if h.our_state is h11.DONE and h.their_state is h11.DONE:
                    h.start_next_cycle()
                    web = self._web.current()[0]
                    clean = first = False
                else:
                    return
        except (TimeoutError, OSError, h11.LocalProtocolError, asyncio.IncompleteReadError):
            return  # deadline passed, client vanished, TLS handshake failed: nothing to answer
        except Exception as exc:  # a bug here must cost one connection, not the server
            print(f"gpuwatch exporter: dropped a connection: {exc!r}", file=sys.stderr)
            return
        finally:
            if writer is None:
                sock.close()
            elif clean:
                writer.close()  # response written: an orderly close (TLS close_notify)
            else:
                writer.transport.abort()  # timed out, evicted or broken: drop it now, no goodbye

    async def _open(
        self, sock: socket.socket
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, WebConfig] | None:
        """Streams over the accepted socket: TLS when configured and the client speaks it, else a 400."""
        loop = asyncio.get_running_loop()
        web, context = self._web.current()
        if context is not None:
            first = await self._peek(sock)
            if not first:
                sock.close()
                return None
            if first[0] != 0x16:  # not a TLS handshake record: plain HTTP (or junk) on the TLS port
                with contextlib.suppress(OSError):
                    sock.send(PLAIN_ON_TLS_PORT)
                    sock.shutdown(socket.SHUT_WR)
                self._count(400)
                sock.close()
                return None
        reader = asyncio.StreamReader(limit=self.limits.max_head_bytes * 2)
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await loop.connect_accepted_socket(
            lambda: protocol,
            sock,
            ssl=context,
            ssl_handshake_timeout=self.limits.head_deadline_s if context is not None else None,
        )
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        return reader, writer, web

    @staticmethod
    async def _peek(sock: socket.socket) -> bytes:
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()
        fd = sock.fileno()

        def ready() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(fd, ready)
        try:
            await readable
        finally:
            loop.remove_reader(fd)
        try:
            return sock.recv(1, socket.MSG_PEEK)
        except OSError:
            return b""

    @staticmethod
    async def _next_request(h: h11.Connection, reader: asyncio.StreamReader) -> Any:
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                h.receive_data(await reader.read(65536))
                continue
            if isinstance(event, h11.Request):
                # a bodiless request ends here; one with a body is answered and the connection closed
                end = h.next_event()
                if not isinstance(end, h11.EndOfMessage | h11.Data) and end is not h11.NEED_DATA:
                    return end
            return event

    def _protocol_error(self, h: h11.Connection, exc: h11.RemoteProtocolError) -> _Response:
        status = exc.error_status_hint
        if status == 431 and b"\n" not in h.trailing_data[0][: self.limits.max_head_bytes]:
            status = 414  # it was the request line that never ended
        text = {414: "request line too long\n", 431: "request headers too large\n"}.get(
            status, "bad request\n"
        )
        return _plain(status, text, [("Connection", "close")])

    async def _send_raw(self, writer: asyncio.StreamWriter, response: _Response) -> None:
        self._count(response.status)
        head = f"HTTP/1.1 {response.status} {_REASONS.get(response.status, '')}\r\n"
        headers = [SERVER_HEADER, *response.headers]
        data = (
            head.encode() + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers) + b"\r\n" + response.body
        )
        writer.write(data)
        async with asyncio.timeout(self.limits.write_deadline_s):
            await writer.drain()

    async def _send(
        self, h: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, response: _Response
    ) -> bool:
        """Write the response; False when the connection must close after it."""
        self._count(response.status)
        headers = [SERVER_HEADER, *response.headers]
        close = h.their_state is not h11.DONE  # a request body we will not read: answer, then close
        if close:
            headers.append(("Connection", "close"))
        events: list[Any] = [
            h11.Response(
                status_code=response.status, headers=headers, reason=_REASONS.get(response.status, "")
            )
        ]
        if request.method != b"HEAD" and response.body:
            events.append(h11.Data(data=response.body))  # passed through: the cached body is not copied
        events.append(h11.EndOfMessage())
        for event in events:
            writer.writelines(h.send_with_data_passthrough(event) or [])
        async with asyncio.timeout(self.limits.write_deadline_s):
            await writer.drain()
        return not close

    def _count(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    # -- one request -------------------------------------------------------------------------------
    async def _answer(self, request: h11.Request, web: WebConfig, writer: asyncio.StreamWriter) -> _Response:
        extra = list(web.headers)
        if len(request.headers) > self.limits.max_headers:
            return _plain(431, "too many request headers\n", [("Connection", "close")])
        if self._in_flight >= self.limits.max_in_flight:
            return _plain(503, "busy: too many requests in flight, retry\n", [("Retry-After", "1"), *extra])
        self._in_flight += 1
        try:
            if web.users:
                authorised = await self._authorised(request, web)
                if authorised is None:
                    return _plain(503, "busy checking passwords, retry\n", [("Retry-After", "1"), *extra])
                if not authorised:
                    return _plain(
                        401, "unauthorised\n", [("WWW-Authenticate", 'Basic realm="gpuwatch"'), *extra]
                    )
            environ = self._environ(request, writer)
            loop = asyncio.get_running_loop()
            status, headers, body = await loop.run_in_executor(self._pool, _call_wsgi, self._app, environ)
            return _Response(status, [*headers, *extra], body)
        finally:
            self._in_flight -= 1

    async def _authorised(self, request: h11.Request, web: WebConfig) -> bool | None:
        """Whether the request's basic-auth credentials match; None when too many checks already wait."""
        header = next((v for k, v in request.headers if k == b"authorization"), None)
        creds = parse_basic_auth(header.decode("latin-1") if header is not None else None)
        if creds is None:
            return False
        user, password = creds
        hashed, known = lookup(web.users, user)
        key = self._auth_cache.key(user, hashed, password)
        cached = self._auth_cache.get(key)
        if cached is not None:
            return cached and known
        if self._auth_waiting >= self.limits.max_auth_waiting:
            return None
        assert self._auth_lock is not None
        self._auth_waiting += 1
        try:
            async with self._auth_lock:  # bcrypt is CPU by design: one check at a time
                loop = asyncio.get_running_loop()
                ok = await loop.run_in_executor(self._pool, check_password, hashed, password)
        finally:
            self._auth_waiting -= 1
        self._auth_cache.put(key, ok)
        return ok and known

    def _environ(self, request: h11.Request, writer: asyncio.StreamWriter) -> dict[str, Any]:
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method.decode("latin-1"),
            "PATH_INFO": unquote(path, "latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": self.host,
            "SERVER_PORT": str(self.port),
            "SERVER_PROTOCOL": "HTTP/" + request.http_version.decode("latin-1"),
            "SCRIPT_NAME": "",
            "wsgi.url_scheme": "https" if self.tls else "http",
            "wsgi.input": None,
            "wsgi.errors": sys.stderr,
            "wsgi.version": (1, 0),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in request.headers:
            key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
            text = value.decode("latin-1")
            environ[key] = f"{environ[key]},{text}" if key in environ else text
        return environ


def _call_wsgi(app: WsgiApp, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    """Run the WSGI app to completion (its bodies are in memory already)."""
    captured: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        captured[:] = [status, headers]

    try:
        result = app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    except Exception as exc:  # the app's bug must not kill the connection loop; say what it was
        print(f"gpuwatch exporter: error answering {environ.get('PATH_INFO')}: {exc!r}", file=sys.stderr)
        body = b"internal error\n"
        return 500, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))], body
    status_text, headers = captured
    status = int(status_text.split(" ", 1)[0])
    if not any(k.lower() == "content-length" for k, _ in headers):
        headers = [*headers, ("Content-Length", str(len(body)))]
    return status, list(headers), body
