"""A throw-away CA, server and client certificate made with the openssl CLI (nothing downloaded)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = shutil.which("openssl")


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def issue(
    directory: Path, ca_cert: Path, ca_key: Path, name: str, cn: str, *, server: bool
) -> tuple[Path, Path]:
    """A key and a certificate for ``cn`` signed by the CA (with SANs for loopback when ``server``)."""
    key, csr, cert, ext = (directory / f"{name}{suffix}" for suffix in (".key", ".csr", ".pem", ".ext"))
    usage = "serverAuth" if server else "clientAuth"
    sans = "subjectAltName=DNS:localhost,IP:127.0.0.1\n" if server else ""
    ext.write_text(f"basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n{sans}")
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        f"/CN={cn}",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        cwd=directory,
    )
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", "2", "-extfile", str(ext), "-out", str(cert), cwd=directory,
    )  # fmt: skip
    return cert, key


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=gpuwatch test CA",
        "-keyout", str(ca_key), "-out", str(ca_cert), cwd=directory,
    )  # fmt: skip
    server_cert, server_key = issue(directory, ca_cert, ca_key, "server", "localhost", server=True)
    client_cert, client_key = issue(directory, ca_cert, ca_key, "client", "prometheus", server=False)
    return Pki(ca_cert, server_cert, server_key, client_cert, client_key)
