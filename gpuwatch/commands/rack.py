"""`gpuwatch --prometheus URL`: the rack view, read from Prometheus (no connection to any host)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from gpuwatch.errors import UserError
from gpuwatch.options import Invalid, Option, add_options, declare
from gpuwatch.telemetry.prometheus_match import DEFAULT_MATCH, parse_match

if TYPE_CHECKING:
    from gpuwatch.telemetry.prometheus_rack import PrometheusConfig
    from gpuwatch.tui.rack_view import RackApp

#: seconds between rack refreshes when --interval is not given (Prometheus scrapes every 15 s by default)
DEFAULT_INTERVAL_S = 5.0


def _url(text: str) -> str:
    from gpuwatch.telemetry.prometheus_rack import PrometheusConfig  # the rack client, for a rack run

    try:
        PrometheusConfig(url=text)
    except UserError:
        raise Invalid("the server's URL, e.g. http://127.0.0.1:9090") from None
    return text


def _matchers(text: str) -> str:
    try:
        return parse_match(text)
    except UserError:
        raise Invalid('label matchers, e.g. job="gpuwatch" or {job=~"gpu.*",env="prod"}') from None


#: the rack view's options (secrets are files: a value on the command line is in every user's `ps`)
RACK_OPTIONS = (
    "prometheus",
    "match",
    "prometheus_user",
    "prometheus_password_file",
    "prometheus_bearer_token_file",
    "prometheus_ca",
    "prometheus_cert",
    "prometheus_key",
    "prometheus_insecure",
)
declare(
    Option(
        "prometheus",
        ("--prometheus",),
        "text",
        "show the whole rack from this Prometheus server instead of this machine's GPUs",
        metavar="URL",
        parse=_url,
    )
)
declare(
    Option(
        "match",
        ("--match",),
        "text",
        "with --prometheus: label matchers selecting the exporters' targets",
        default=DEFAULT_MATCH,
        metavar="MATCHERS",
        parse=_matchers,
    )
)
declare(
    Option(
        "prometheus_user", ("--prometheus-user",), "text", "basic-auth user for --prometheus", metavar="USER"
    )
)
declare(Option("prometheus_password_file", ("--prometheus-password-file",), "text",
               "file holding the basic-auth password of --prometheus-user", metavar="FILE"))  # fmt: skip
declare(Option("prometheus_bearer_token_file", ("--prometheus-bearer-token-file",), "text",
               "file holding a bearer token for --prometheus", metavar="FILE"))  # fmt: skip
declare(Option("prometheus_ca", ("--prometheus-ca",), "text", "CA bundle (PEM) to verify an https Prometheus",
               metavar="FILE"))  # fmt: skip
declare(Option("prometheus_cert", ("--prometheus-cert",), "text", "client certificate (PEM) for mutual TLS",
               metavar="FILE"))  # fmt: skip
declare(Option("prometheus_key", ("--prometheus-key",), "text", "private key (PEM) of --prometheus-cert",
               metavar="FILE"))  # fmt: skip
declare(
    Option(
        "prometheus_insecure",
        ("--prometheus-insecure",),
        "bool",
        "do not verify the https Prometheus' certificate (testing only)",
        default=False,
    )
)


def add_rack_options(parser: argparse.ArgumentParser) -> None:
    add_options(parser, RACK_OPTIONS, group="rack (from Prometheus)")


def _secret(option: str, path: str | None) -> str | None:
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{option} {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not text:
        raise UserError(f"{option} {path}: the file is empty")
    return text


def config_from_args(args: argparse.Namespace) -> PrometheusConfig:
    from gpuwatch.telemetry.prometheus_rack import PrometheusConfig

    for option, path in (
        ("--prometheus-ca", args.prometheus_ca),
        ("--prometheus-cert", args.prometheus_cert),
        ("--prometheus-key", args.prometheus_key),
    ):
        if path is not None and not Path(path).is_file():
            raise UserError(f"{option} {path}: no such file")
    if args.prometheus_key and not args.prometheus_cert:
        raise UserError("--prometheus-key needs --prometheus-cert")
    if args.prometheus_password_file and not args.prometheus_user:
        raise UserError("--prometheus-password-file needs --prometheus-user")
    return PrometheusConfig(
        url=args.prometheus,
        match=parse_match(args.match or DEFAULT_MATCH),
        username=args.prometheus_user,
        password=_secret("--prometheus-password-file", args.prometheus_password_file),
        bearer_token=_secret("--prometheus-bearer-token-file", args.prometheus_bearer_token_file),
        ca_file=args.prometheus_ca,
        client_cert=args.prometheus_cert,
        client_key=args.prometheus_key,
        insecure_skip_verify=bool(args.prometheus_insecure),
    )


def build_app(args: argparse.Namespace) -> RackApp:
    from gpuwatch.telemetry.prometheus_rack import PrometheusRack
    from gpuwatch.tui.rack_view import RackApp

    config = config_from_args(args)
    rack = PrometheusRack(config)
    interval = args.interval if getattr(args, "interval", None) else DEFAULT_INTERVAL_S
    return RackApp(rack.read, source=config.url, interval_s=interval)


def run(args: argparse.Namespace) -> int:
    build_app(args).run()
    return 0
