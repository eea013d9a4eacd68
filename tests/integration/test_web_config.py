"""--web.config.file against a real Prometheus (Debian's binary), on loopback: TLS with basic auth, TLS with
a client certificate, and the wrong password / no certificate refused (the target is down with 401).

Certificates are made in the test with the openssl CLI; nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from base64 import b64encode
from collections.abc import Callable, Iterator
from typing import Any

import bcrypt
import pytest
import yaml

PROMETHEUS = shutil.which("prometheus")
tls_pki = pytest.importorskip("tls_pki")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed"),
    pytest.mark.skipif(tls_pki.OPENSSL is None, reason="openssl CLI not installed"),
]

PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last error: {last})")


def https_get(port: int, context: ssl.SSLContext, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"https://127.0.0.1:{port}/metrics", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("webcfg")
    pki = tls_pki.make_pki(tmp / "pki")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    (tmp / "basic.yml").write_text(
        "tls_server_config:\n"
        f"  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n  min_version: TLS12\n"
        f"basic_auth_users:\n  prometheus: {hashed}\n"
        "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
    )
    (tmp / "mtls.yml").write_text(
        "tls_server_config:\n"
        f"  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki.ca_cert}\n"
    )
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp / "config"), "HOME": str(tmp)}
    procs: list[subprocess.Popen[bytes]] = []
    ports = {"basic": free_port(), "mtls": free_port()}
    try:
        for name, port in ports.items():
            argv = [sys.executable, "-m", "gpuwatch", "exporter", "--sim", "rtx4090", "--interval", "1"]
            argv += ["--listen", f"127.0.0.1:{port}", "--web.config.file", str(tmp / f"{name}.yml")]
            with (tmp / f"exporter-{name}.log").open("wb") as log:
                procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env))
        ca_only = ssl.create_default_context(cafile=str(pki.ca_cert))
        with_cert = ssl.create_default_context(cafile=str(pki.ca_cert))
        with_cert.load_cert_chain(str(pki.client_cert), str(pki.client_key))
        auth = {"Authorization": "Basic " + b64encode(f"prometheus:{PASSWORD}".encode()).decode()}
        wait_for("the basic-auth exporter", lambda: https_get(ports["basic"], ca_only, auth)[0] == 200, 60)
        wait_for("the mTLS exporter", lambda: https_get(ports["mtls"], with_cert)[0] == 200, 60)

        tls = {"ca_file": str(pki.ca_cert)}
        client = {**tls, "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}

        def job(name: str, port: int, tls_config: dict[str, str], **extra: Any) -> dict[str, Any]:
            return {
                "job_name": name,
                "scheme": "https",
                "tls_config": tls_config,
                "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
                **extra,
            }

        prom_port = free_port()
        (tmp / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
                    "scrape_configs": [
                        job(
                            "basic",
                            ports["basic"],
                            tls,
                            basic_auth={"username": "prometheus", "password": PASSWORD},
                        ),
                        job(
                            "wrong-password",
                            ports["basic"],
                            tls,
                            basic_auth={"username": "prometheus", "password": "x"},
                        ),
                        job("client-cert", ports["mtls"], client),
                        job("no-client-cert", ports["mtls"], tls),
                    ],
                }
            )
        )
        assert PROMETHEUS is not None
        with (tmp / "prometheus.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [
                        PROMETHEUS,
                        f"--config.file={tmp / 'prometheus.yml'}",
                        f"--storage.tsdb.path={tmp / 'prom-data'}",
                        f"--web.listen-address=127.0.0.1:{prom_port}",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        yield {"prometheus": f"http://127.0.0.1:{prom_port}", "ports": ports, "pki": pki, "auth": auth}
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def api(setup: dict[str, Any], path: str, **params: str) -> Any:
    url = f"{setup['prometheus']}/api/v1/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]


def targets_by_job(setup: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["labels"]["job"]: t for t in api(setup, "targets")["activeTargets"]}


def test_prometheus_scrapes_over_tls_with_basic_auth_and_with_a_client_certificate(
    setup: dict[str, Any],
) -> None:
    def settled() -> dict[str, dict[str, Any]] | None:
        targets = targets_by_job(setup)
        if len(targets) == 4 and all(t["health"] != "unknown" for t in targets.values()):
            return targets
        return None

    targets = wait_for("Prometheus to scrape every target once", settled, 60)
    time.sleep(2)  # a few scrapes each
    targets = targets_by_job(setup)
    assert targets["basic"]["health"] == "up", targets["basic"]["lastError"]
    assert targets["client-cert"]["health"] == "up", targets["client-cert"]["lastError"]
    assert targets["wrong-password"]["health"] == "down"
    assert "401" in targets["wrong-password"]["lastError"]
    assert targets["no-client-cert"]["health"] == "down"  # refused in the TLS handshake
    # the readings arrived through TLS, as series Prometheus can query
    for job in ("basic", "client-cert"):
        result = api(setup, "query", query=f'gpuwatch_gpu_up{{job="{job}"}}')["result"]
        assert [r["value"][1] for r in result] == ["1"], (job, result)


def test_plain_http_on_the_tls_port_is_told_to_use_https(setup: dict[str, Any]) -> None:
    with socket.create_connection(("127.0.0.1", setup["ports"]["basic"]), timeout=5) as raw:
        raw.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = raw.recv(4096)
    assert reply.startswith(b"HTTP/1.0 400 Bad Request") and b"HTTPS server" in reply


def test_a_wrong_password_gets_401_with_a_challenge_and_configured_headers(setup: dict[str, Any]) -> None:
    context = ssl.create_default_context(cafile=str(setup["pki"].ca_cert))
    wrong = {"Authorization": "Basic " + b64encode(b"prometheus:guess").decode()}
    request = urllib.request.Request(f"https://127.0.0.1:{setup['ports']['basic']}/metrics", headers=wrong)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=5, context=context)
    assert err.value.code == 401 and err.value.headers["WWW-Authenticate"].startswith("Basic")
    assert err.value.headers["X-Content-Type-Options"] == "nosniff"
    assert err.value.headers["Server"] == "gpuwatch"
