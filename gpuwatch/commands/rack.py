"""`gpuwatch --prometheus URL`: the rack view, read from Prometheus (no connection to any host)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from gpuwatch.errors import UserError

if TYPE_CHECKING:
    from gpuwatch.telemetry.prometheus_rack import PrometheusConfig
    from gpuwatch.tui.rack_view import RackApp

#: seconds between rack refreshes when --interval is not given (Prometheus scrapes every 15 s by default)
DEFAULT_INTERVAL_S = 5.0


def add_rack_options(parser: argparse.ArgumentParser) -> None:
    """Options of the rack view. Secrets are read from files, never taken on the command line (where
    every user of the machine can read them in the process list)."""
    from gpuwatch.telemetry.prometheus_rack import DEFAULT_MATCH

    g = parser.add_argument_group("rack (from Prometheus)")
    g.add_argument(
        "--prometheus",
        metavar="URL",
        help="show the whole rack from this Prometheus server (e.g. http://127.0.0.1:9090) instead of "
        "this machine's GPUs",
    )
    g.add_argument(
        "--match",
        metavar="MATCHERS",
        default=DEFAULT_MATCH,
        help=f"with --prometheus: label matchers selecting the exporters' targets (default {DEFAULT_MATCH})",
    )
    g.add_argument("--prometheus-user", metavar="USER", help="basic-auth user for --prometheus")
    g.add_argument("--prometheus-password-file", metavar="FILE", help="file holding the basic-auth password")
    g.add_argument(
        "--prometheus-bearer-token-file", metavar="FILE", help="file holding a bearer token for --prometheus"
    )
    g.add_argument("--prometheus-ca", metavar="FILE", help="CA bundle (PEM) to verify an https Prometheus")
    g.add_argument("--prometheus-cert", metavar="FILE", help="client certificate (PEM) for mutual TLS")
    g.add_argument("--prometheus-key", metavar="FILE", help="private key (PEM) of --prometheus-cert")
    g.add_argument(
        "--prometheus-insecure",
        action="store_true",
        help="do not verify the https Prometheus' certificate (testing only)",
    )


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
    from gpuwatch.telemetry.prometheus_rack import DEFAULT_MATCH, PrometheusConfig, parse_match

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
