"""``--web.config.file``: TLS, client certificates, basic auth and extra headers, in the format of the
Prometheus exporter-toolkit (what node_exporter and dcgm-exporter read), so one file serves a rack.

Read as the toolkit reads it: unknown keys are errors (its YAML is strict), relative paths are relative
to the file, TLS defaults to 1.2..1.3, ``basic_auth_users`` maps names to bcrypt hashes and only the
toolkit's five security headers may be set. What Python's ``ssl`` cannot do the way Go's crypto/tls does
(cipher suites by Go name, curve lists, client certificates requested but not verified, SAN allow-lists,
inline PEM) is refused with a one-line error rather than silently ignored.

The file and the certificate, key and CA files it names are watched: a change is picked up by the next
connection, without a restart (certificate rotation). A change that does not load (a key written before
its certificate) keeps the last good configuration and says so once on stderr.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import ssl
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpuwatch.errors import UserError

OPTION = "--web.config.file"

_TOP_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"}
_TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "prefer_server_cipher_suites",
    # known to the toolkit, refused here with a reason
    "cert",
    "key",
    "client_ca",
    "cipher_suites",
    "curve_preferences",
    "client_allowed_sans",
}
_UNSUPPORTED_TLS = {
    "cert": "inline PEM is not supported: put the certificate in a file and name it in cert_file",
    "key": "inline PEM is not supported: put the key in a file and name it in key_file",
    "client_ca": "inline PEM is not supported: put the CA in a file and name it in client_ca_file",
    "cipher_suites": "Go cipher-suite names are not supported: remove it (OpenSSL's defaults apply)",
    "curve_preferences": "curve lists are not supported: remove it (OpenSSL's defaults apply)",
    "client_allowed_sans": "SAN allow-lists are not supported: issue client certificates from a dedicated CA",
}
_HTTP_KEYS = {"http2", "headers"}

#: the exporter-toolkit's settable headers and, where it restricts them, their allowed values
ALLOWED_HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}

_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

#: client_auth_type -> ssl verify mode. Go's RequestClientCert and RequireAnyClientCert ask for a
#: certificate without verifying it; OpenSSL verifies whatever it asks for, so those two are refused.
_CLIENT_AUTH = {
    "": ssl.CERT_NONE,
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_UNVERIFIED_CLIENT_AUTH = {"RequestClientCert", "RequireAnyClientCert", "RequireClientCert"}

_BCRYPT_HASH = re.compile(rb"^\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}$")


@dataclass(frozen=True)
class TlsSettings:
    cert_file: str
    key_file: str
    client_auth_type: str = ""
    client_ca_file: str | None = None
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    prefer_server_cipher_suites: bool = True

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(f for f in (self.cert_file, self.key_file, self.client_ca_file) if f)


@dataclass(frozen=True)
class WebConfig:
    tls: TlsSettings | None = None
    #: user -> bcrypt hash; empty = no authentication
    users: Mapping[str, bytes] = field(default_factory=dict)
    headers: tuple[tuple[str, str], ...] = ()
    path: str | None = None


def _fail(path: str, what: str) -> UserError:
    return UserError(f"{OPTION} {path}: {what}")


def _mapping(path: str, value: object, where: str, keys: set[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, f"{where} must be a mapping")
    for key in value:
        if key not in keys:
            raise _fail(path, f"unknown field {key!r} in {where} (known: {', '.join(sorted(keys))})")
    return value


def _string(path: str, value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(path, f"{where} must be a string")
    return value


def load_web_config(path: str) -> WebConfig:
    """Parse and check the file (certificates loaded once, to fail now rather than at the first client)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except OSError as exc:
        raise _fail(path, exc.strerror or str(exc)) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise _fail(path, f"not valid YAML: {' '.join(str(exc).split())}") from None
    top = _mapping(path, raw, "the file", _TOP_KEYS)
    if top.get("rate_limit"):
        raise _fail(path, "rate_limit is not supported: the exporter bounds requests in flight itself")
    base = os.path.dirname(os.path.abspath(path))
    tls = _tls(path, _mapping(path, top.get("tls_server_config"), "tls_server_config", _TLS_KEYS), base)
    http = _mapping(path, top.get("http_server_config"), "http_server_config", _HTTP_KEYS)
    headers = _headers(path, http.get("headers"))
    users = _users(path, top.get("basic_auth_users"))
    config = WebConfig(tls=tls, users=users, headers=headers, path=path)
    if tls is not None:
        build_ssl_context(config)
    return config


def _tls(path: str, raw: dict[str, Any], base: str) -> TlsSettings | None:
    if not raw:
        return None
    for key, why in _UNSUPPORTED_TLS.items():
        if raw.get(key):
            raise _fail(path, f"tls_server_config.{key}: {why}")
    for key in ("cert_file", "key_file"):
        if not raw.get(key):
            raise _fail(path, f"tls_server_config needs {key}")

    def resolve(key: str) -> str:
        value = _string(path, raw[key], f"tls_server_config.{key}")
        return value if os.path.isabs(value) else os.path.join(base, value)

    auth = _string(path, raw.get("client_auth_type") or "", "tls_server_config.client_auth_type")
    if auth in _UNVERIFIED_CLIENT_AUTH:
        raise _fail(
            path,
            f"client_auth_type {auth} (a certificate asked for but not verified) is not supported: use "
            "VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file",
        )
    if auth not in _CLIENT_AUTH:
        raise _fail(path, f"invalid client_auth_type {auth!r} (expected one of {', '.join(_names())})")
    ca = resolve("client_ca_file") if raw.get("client_ca_file") else None
    if ca is not None and _CLIENT_AUTH[auth] == ssl.CERT_NONE:
        raise _fail(
            path, "client_ca_file is set without a client_auth_type that verifies client certificates"
        )
    if ca is None and _CLIENT_AUTH[auth] != ssl.CERT_NONE:
        raise _fail(path, f"client_auth_type {auth} needs client_ca_file")
    versions = {}
    for key, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        value = _string(path, raw.get(key) or default, f"tls_server_config.{key}")
        if value not in _TLS_VERSIONS:
            raise _fail(path, f"unknown {key} {value!r} (expected one of {', '.join(_TLS_VERSIONS)})")
        versions[key] = value
    prefer = raw.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        raise _fail(path, "tls_server_config.prefer_server_cipher_suites must be true or false")
    return TlsSettings(
        cert_file=resolve("cert_file"),
        key_file=resolve("key_file"),
        client_auth_type=auth,
        client_ca_file=ca,
        min_version=versions["min_version"],
        max_version=versions["max_version"],
        prefer_server_cipher_suites=prefer,
    )


def _names() -> list[str]:
    return [n for n in _CLIENT_AUTH if n]


def _headers(path: str, raw: object) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise _fail(path, "http_server_config.headers must be a mapping")
    out = []
    for name, value in raw.items():
        allowed = ALLOWED_HEADERS.get(name)
        if allowed is None:
            raise _fail(
                path, f"HTTP header {name!r} can not be configured (allowed: {', '.join(ALLOWED_HEADERS)})"
            )
        text = _string(path, value, f"header {name}")
        if allowed and text not in allowed:
            raise _fail(path, f"invalid value for {name}: expected one of {list(allowed)}, got {text!r}")
        if any(c in text for c in "\r\n\0"):
            raise _fail(path, f"header {name}: value has a line break")
        out.append((name, text))
    return tuple(out)


def _users(path: str, raw: object) -> dict[str, bytes]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _fail(path, "basic_auth_users must be a mapping of user names to bcrypt hashes")
    users = {}
    for user, hashed in raw.items():
        if not isinstance(user, str) or ":" in user:
            raise _fail(path, f"basic_auth_users: user name {user!r} must be a string without ':'")
        value = str(hashed).encode() if hashed is not None else b""
        if not _BCRYPT_HASH.match(value):
            raise _fail(
                path, f"basic_auth_users.{user}: not a bcrypt hash (make one with htpasswd -nBC 10 '')"
            )
        users[user] = value
    return users


def build_ssl_context(config: WebConfig) -> ssl.SSLContext:
    """A server context for ``config.tls`` (which must be set); a one-line UserError if it does not load."""
    tls = config.tls
    assert tls is not None
    where = f"{OPTION} {config.path}"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _TLS_VERSIONS[tls.min_version]
    context.maximum_version = _TLS_VERSIONS[tls.max_version]
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        if config.path is None:
            raise UserError(
                f"cannot load --tls-cert {tls.cert_file} / --tls-key {tls.key_file}: {exc}"
            ) from None
        raise UserError(
            f"{where}: cannot load cert_file {tls.cert_file} / key_file {tls.key_file}: {exc}"
        ) from None
    context.verify_mode = _CLIENT_AUTH[tls.client_auth_type]
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise UserError(f"{where}: cannot load client_ca_file {tls.client_ca_file}: {exc}") from None
    return context


def _stat(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class WatchedWebConfig:
    """The current configuration and TLS context, re-read when the config file or its certificates change.

    ``current()`` is called per connection; it looks at the files at most every ``check_every_s``.
    """

    def __init__(self, config: WebConfig, *, check_every_s: float = 1.0) -> None:
        self._lock = threading.Lock()
        self._check_every_s = check_every_s
        self._config = config
        self._context = build_ssl_context(config) if config.tls is not None else None
        self._stats = self._file_stats(config)
        self._next_check = time.monotonic() + check_every_s
        self._last_error: str | None = None
        self.reloads = 0

    @staticmethod
    def _file_stats(config: WebConfig) -> tuple[tuple[int, int, int] | None, ...]:
        files = ((config.path,) if config.path else ()) + (config.tls.files if config.tls else ())
        return tuple(_stat(f) for f in files)

    def current(self) -> tuple[WebConfig, ssl.SSLContext | None]:
        now = time.monotonic()
        with self._lock:
            if now >= self._next_check:
                self._next_check = now + self._check_every_s
                self._maybe_reload()
            return self._config, self._context

    def _maybe_reload(self) -> None:
        stats = self._file_stats(self._config)
        if stats == self._stats:
            return
        try:
            config = load_web_config(self._config.path) if self._config.path else self._config
            context = build_ssl_context(config) if config.tls is not None else None
        except UserError as exc:
            if str(exc) != self._last_error:  # once per distinct problem, not per connection
                self._last_error = str(exc)
                print(f"gpuwatch exporter: kept the previous TLS/web configuration: {exc}", file=sys.stderr)
            return
        if (config.tls is None) != (self._config.tls is None):
            # the socket was opened for one scheme: switching HTTP <-> HTTPS needs a restart
            msg = (
                f"{OPTION}: switching between HTTP and HTTPS needs a restart; kept the previous configuration"
            )
            if msg != self._last_error:
                self._last_error = msg
                print(f"gpuwatch exporter: {msg}", file=sys.stderr)
            return
        self._config, self._context = config, context
        self._stats = self._file_stats(config)
        self._last_error = None
        self.reloads += 1


#: an unknown user is checked against this hash (result ignored), so it costs what a known one costs and
#: timing does not tell which users exist
_DECOY_HASH = b"$2b$10$9M5w/IuqsUiyMPE00zPvQuGOo.3DzM19imvIDRAHmuqw4koutdw/m"


class BasicAuthCache:
    """Results of bcrypt checks by (user, hash, password) digest, so a scraper pays bcrypt once, not per
    scrape (as the toolkit caches); bounded, oldest out first."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._results: OrderedDict[bytes, bool] = OrderedDict()

    @staticmethod
    def key(user: str, hashed: bytes, password: bytes) -> bytes:
        h = hashlib.sha256()
        for part in (user.encode(), hashed, password):
            h.update(len(part).to_bytes(4, "big"))
            h.update(part)
        return h.digest()

    def get(self, key: bytes) -> bool | None:
        with self._lock:
            value = self._results.get(key)
            if value is not None:
                self._results.move_to_end(key)
            return value

    def put(self, key: bytes, ok: bool) -> None:
        with self._lock:
            self._results[key] = ok
            self._results.move_to_end(key)
            while len(self._results) > self._size:
                self._results.popitem(last=False)


def parse_basic_auth(header: str | None) -> tuple[str, bytes] | None:
    """``Authorization: Basic ...`` -> (user, password); None when absent or malformed."""
    import base64
    import binascii

    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    with contextlib.suppress(binascii.Error, ValueError):
        decoded = base64.b64decode(value.strip(), validate=True)
        user, sep, password = decoded.partition(b":")
        if sep:
            return user.decode("utf-8", "replace"), password
    return None


def lookup(users: Mapping[str, bytes], user: str) -> tuple[bytes, bool]:
    """(hash to check against, whether the user exists)."""
    hashed = users.get(user)
    return (hashed, True) if hashed is not None else (_DECOY_HASH, False)


def check_password(hashed: bytes, password: bytes) -> bool:
    import bcrypt

    try:
        return bool(bcrypt.checkpw(password, hashed))
    except ValueError:
        return False
