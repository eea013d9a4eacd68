"""The exporter's HTTP server under hostile clients, and --web.config.file (TLS, client certs, basic auth)."""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import threading
import time
from base64 import b64encode
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from prometheus_client import Gauge
from prometheus_client.registry import CollectorRegistry

from gpuwatch.errors import UserError
from gpuwatch.exporter.server import ExporterServer, Limits, make_app
from gpuwatch.exporter.webconfig import WebConfig, load_web_config

tls_pki = pytest.importorskip("tls_pki")
needs_openssl = pytest.mark.skipif(tls_pki.OPENSSL is None, reason="openssl CLI not installed")


def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Gauge("gpuwatch_gpu_up", "up", ["gpu"], registry=reg).labels("0").set(1)
    return reg


@contextmanager
def serving(
    app: Any = None, *, limits: Limits | None = None, web_config: WebConfig | None = None
) -> Iterator[ExporterServer]:
    srv = ExporterServer(
        app or make_app(registry(), "test"), "127.0.0.1", 0, limits=limits, web_config=web_config
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.shutdown()


def get(
    srv: ExporterServer,
    path: str = "/metrics",
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn: http.client.HTTPConnection
    if context is not None:
        conn = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=10, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def closed_by_peer(sock: socket.socket, within_s: float) -> bool:
    """True when the server closes ``sock`` (EOF or reset) within the time given."""
    deadline = time.monotonic() + within_s
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if sock.recv(65536) == b"":  # whatever the server still had to say, then EOF
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        pass
    return False


# -- hostile clients ---------------------------------------------------------------------------------


def test_a_client_trickling_its_headers_is_cut_off_at_the_head_deadline_while_scrapes_go_on() -> None:
    with serving(limits=Limits(head_deadline_s=1.0)) as srv:
        slow = []
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        silent = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(10)]
        stop = time.monotonic() + 3.0
        statuses = []
        while time.monotonic() < stop:
            for s in slow:  # a header line every 0.2 s: a per-read timeout would never fire
                with suppress(OSError):
                    s.sendall(b"X-Slow: 1\r\n")
            statuses.append(get(srv)[0])
            time.sleep(0.2)
        assert statuses and set(statuses) == {200}
        # every slow and every silent socket was closed by the server (it does not wait for them)
        assert all(closed_by_peer(s, 1.0) for s in slow + silent)
        for s in slow + silent:
            s.close()


def test_requests_beyond_the_bound_in_flight_get_503_at_once() -> None:
    release = threading.Event()

    def slow_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return [b"ok\n"]

    with serving(slow_app, limits=Limits(max_in_flight=2, workers=1)) as srv, ThreadPoolExecutor(2) as pool:
        admitted = [pool.submit(get, srv) for _ in range(2)]
        time.sleep(0.5)  # both admitted and waiting on the app
        status, headers, body = get(srv)
        assert status == 503 and headers["retry-after"] == "1" and b"too many requests" in body
        release.set()
        assert [f.result()[0] for f in admitted] == [200, 200]
        assert get(srv)[0] == 200  # the bound frees as requests finish


def test_past_the_connection_cap_idle_sockets_make_room_for_a_scrape() -> None:
    with serving(limits=Limits(max_connections=8, head_deadline_s=30.0)) as srv:
        idle = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(8)]
        time.sleep(0.3)
        assert get(srv)[0] == 200
        assert closed_by_peer(idle[0], 2.0)  # the oldest idle one went first
        for s in idle:
            s.close()


def test_keep_alive_serves_many_scrapes_on_one_connection_and_no_interpreter_in_server_header() -> None:
    with serving() as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        for _ in range(5):
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            assert resp.status == 200 and b"gpuwatch_gpu_up" in resp.read()
            assert resp.getheader("Server") == "gpuwatch"
            assert resp.getheader("Connection") is None  # kept open
        conn.close()
        raw = socket.create_connection(("127.0.0.1", srv.port))
        raw.sendall(
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := raw.recv(65536):
            data += chunk
        raw.close()
        assert data.count(b"HTTP/1.1 200 OK") == 2 and b"Python" not in data  # pipelined, in order
        assert data.index(b"<h1>gpuwatch exporter") < data.index(b"gpuwatch_gpu_up")


def test_garbage_gets_400_and_a_body_we_do_not_read_closes_the_connection() -> None:
    with serving() as srv:
        raw = socket.create_connection(("127.0.0.1", srv.port))
        raw.sendall(b"\x00\x01 nonsense\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 400 Bad Request")
        raw.close()
        raw = socket.create_connection(("127.0.0.1", srv.port))
        raw.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\nabc")
        head = raw.recv(65536)
        assert head.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in head
        assert closed_by_peer(raw, 2.0)
        raw.close()


# -- --web.config.file -------------------------------------------------------------------------------


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth_with_bcrypt_hashes_and_configured_headers(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    config = write_config(
        tmp_path / "web.yml",
        f"basic_auth_users:\n  prom: {hashed}\n"
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n",
    )
    with serving(web_config=load_web_config(str(config))) as srv:
        status, headers, body = get(srv, headers=basic("prom", "s3cret"))
        assert status == 200 and b"gpuwatch_gpu_up" in body
        assert headers["x-frame-options"] == "deny" and headers["x-content-type-options"] == "nosniff"
        for wrong in (basic("prom", "guess"), basic("root", "s3cret"), {}, {"Authorization": "Basic !!"}):
            status, headers, body = get(srv, headers=wrong)
            assert status == 401 and headers["www-authenticate"].startswith("Basic")
            assert b"gpuwatch_gpu_up" not in body


def test_password_guessing_cannot_starve_a_scraper_whose_password_was_checked(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(11)).decode()  # slow on purpose
    config = write_config(tmp_path / "web.yml", f"basic_auth_users:\n  prom: {hashed}\n")
    with serving(web_config=load_web_config(str(config))) as srv:
        assert get(srv, headers=basic("prom", "s3cret"))[0] == 200  # bcrypt once; cached from here on
        stop = threading.Event()
        guesses: list[int] = []

        def guess(k: int) -> None:
            n = 0
            while not stop.is_set():
                guesses.append(get(srv, headers=basic("prom", f"guess-{k}-{n}"))[0])
                n += 1

        with ThreadPoolExecutor(12) as pool:
            for k in range(12):
                pool.submit(guess, k)
            time.sleep(0.5)
            scrapes = [get(srv, headers=basic("prom", "s3cret"))[0] for _ in range(5)]
            stop.set()
        assert scrapes == [200] * 5
        assert set(guesses) <= {401, 503} and 503 in guesses  # checks beyond the queue are refused at once


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tls_server_config:\n  cert_file: a.pem\n", "tls_server_config needs key_file"),
        ("basic_auth_users:\n  prom: plaintext\n", "basic_auth_users.prom: not a bcrypt hash"),
        ("basic_auth_user:\n  prom: x\n", "unknown field 'basic_auth_user' in the file"),
        (
            "http_server_config:\n  headers:\n    Server: nginx\n",
            "HTTP header 'Server' can not be configured",
        ),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            "invalid value for X-Frame-Options",
        ),
        (
            "tls_server_config:\n  cert_file: a.pem\n  key_file: a.key\n"
            "  client_auth_type: RequireAnyClientCert\n",
            "client_auth_type RequireAnyClientCert (a certificate asked for but not verified)",
        ),
        (
            "tls_server_config:\n  cert_file: a.pem\n  key_file: a.key\n  min_version: SSL3\n",
            "unknown min_version",
        ),
        ("tls_server_config: [\n", "not valid YAML"),
        ("tls_server_config:\n  cert_file: a.pem\n  key_file: a.key\n", "cannot load cert_file"),
    ],
)
def test_a_bad_web_config_is_a_one_line_error_naming_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    config = write_config(tmp_path / "web.yml", text)
    with pytest.raises(UserError) as err:
        load_web_config(str(config))
    assert str(err.value).startswith(f"--web.config.file {config}: ") and message in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="no such file"):
        load_web_config(str(tmp_path / "missing.yml"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if tls_pki.OPENSSL is None:
        pytest.skip("openssl CLI not installed")
    return tls_pki.make_pki(tmp_path_factory.mktemp("pki"))


def client_context(pki: Any, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    if with_cert:
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context


@needs_openssl
def test_client_certificates_are_required_and_verified(tmp_path: Path, pki: Any) -> None:
    config = write_config(
        tmp_path / "web.yml",
        f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
        "  client_auth_type: RequireAndVerifyClientCert\n"
        f"  client_ca_file: {pki.ca_cert}\n  min_version: TLS12\n",
    )
    with serving(web_config=load_web_config(str(config))) as srv:
        assert srv.url.startswith("https://")
        status, _, body = get(srv, context=client_context(pki, with_cert=True))
        assert status == 200 and b"gpuwatch_gpu_up" in body
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            get(srv, context=client_context(pki, with_cert=False))
        status, _, body = get(srv)  # plain HTTP on the TLS port
        assert status == 400 and b"HTTPS server" in body
        assert get(srv, context=client_context(pki, with_cert=True))[0] == 200  # none of it hurt


@needs_openssl
def test_a_rotated_certificate_is_served_without_a_restart(tmp_path: Path, pki: Any) -> None:
    cert, key = tmp_path / "tls.pem", tmp_path / "tls.key"
    cert.write_bytes(pki.server_cert.read_bytes())
    key.write_bytes(pki.server_key.read_bytes())
    config = write_config(
        tmp_path / "web.yml", "tls_server_config:\n  cert_file: tls.pem\n  key_file: tls.key\n"
    )

    def served_cert(srv: ExporterServer) -> bytes:
        context = client_context(pki, with_cert=False)
        with (
            socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return der

    with serving(web_config=load_web_config(str(config))) as srv:  # relative paths: next to web.yml
        first = served_cert(srv)
        ca_key = pki.ca_cert.with_name("ca.key")
        new_cert, new_key = tls_pki.issue(tmp_path, pki.ca_cert, ca_key, "rotated", "localhost", server=True)
        key.write_bytes(new_key.read_bytes())
        cert.write_bytes(new_cert.read_bytes())
        os.utime(cert, None)
        deadline = time.monotonic() + 5
        while (second := served_cert(srv)) == first and time.monotonic() < deadline:
            time.sleep(0.2)
        assert second != first
        assert second == ssl.PEM_cert_to_DER_cert(new_cert.read_text())
        # a half-written rotation keeps the last good certificate
        cert.write_text("not a certificate\n")
        time.sleep(1.2)
        assert served_cert(srv) == second


@needs_openssl
def test_the_shipped_example_web_config_loads(tmp_path: Path, pki: Any) -> None:
    import yaml

    example = Path(__file__).resolve().parents[1] / "grafana" / "web-config.example.yml"
    doc = yaml.safe_load(example.read_text())
    assert bcrypt.checkpw(b"change me", doc["basic_auth_users"]["prometheus"].encode())
    tls = doc["tls_server_config"]
    tls.update(cert_file=str(pki.server_cert), key_file=str(pki.server_key), client_ca_file=str(pki.ca_cert))
    config = write_config(tmp_path / "web.yml", yaml.safe_dump(doc))
    loaded = load_web_config(str(config))
    assert loaded.tls is not None and loaded.tls.client_auth_type == "RequireAndVerifyClientCert"
    assert dict(loaded.headers) == {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "deny"}
