"""`gpuwatch exporter`: serve the live session as Prometheus metrics.

NVML runs in a child process (``isolate=True``): a crash inside libnvidia-ml, as when a card falls off
the bus, kills only that child; the poller restarts it and the exporter keeps answering scrapes, with
the restart counted in ``gpuwatch_poll_errors_total{kind="nvml_child_restart"}``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

from gpuwatch.commands import SUMMARIES
from gpuwatch.commands.common import add_source_options
from gpuwatch.errors import UserError
from gpuwatch.exporter.server import DEFAULT_LISTEN
from gpuwatch.options import Option, add_options, declare, get
from gpuwatch.telemetry.kubernetes import DEFAULT_SOCKET

#: the exporter's own options (the address is parsed by gpuwatch.exporter.server.parse_listen)
EXPORTER_OPTIONS = (
    "listen",
    "tls_cert",
    "tls_key",
    "web_config_file",
    "process_metrics",
    "kubernetes",
    "kubelet_socket",
)
declare(
    Option(
        "listen",
        ("--listen",),
        "text",
        "address to serve on: HOST:PORT, :PORT (all interfaces) or [IPV6]:PORT (port 0 picks a free one)",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
    )
)
declare(Option("tls_cert", ("--tls-cert",), "text", "serve HTTPS with this PEM certificate (needs --tls-key)",
               metavar="FILE"))  # fmt: skip
declare(Option("tls_key", ("--tls-key",), "text", "PEM private key of --tls-cert", metavar="FILE"))
declare(
    Option(
        "web_config_file",
        ("--web.config.file",),
        "text",
        "TLS, client certificates, basic auth and headers in the Prometheus exporter-toolkit format (as "
        "node_exporter and dcgm-exporter read it); certificates are re-read when their files change",
        metavar="FILE",
    )
)
declare(
    Option(
        "process_metrics",
        ("--process-metrics",),
        "bool",
        "also publish per-process GPU memory with pid, process name and container labels (off by "
        "default: process names can be sensitive and each process adds series)",
        default=False,
    )
)
declare(
    Option(
        "kubernetes",
        ("--kubernetes",),
        "bool",
        "label per-GPU series with the pod, namespace and container holding the GPU, from the kubelet's "
        "pod-resources API (needs the kubernetes extra)",
        default=False,
    )
)
declare(
    Option(
        "kubelet_socket",
        ("--kubelet-socket",),
        "text",
        "with --kubernetes: the kubelet's pod-resources socket",
        default=DEFAULT_SOCKET,
        metavar="PATH",
    )
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "exporter",
        help=SUMMARIES["exporter"],
        description="Serve /metrics for Prometheus (OpenMetrics when asked) and a landing page at /. "
        "Metrics are named gpuwatch_*; see grafana/ for dashboards and alert rules.",
    )
    add_options(p, EXPORTER_OPTIONS, group="serving")
    add_source_options(p, with_prices=True, subcommand=True)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from prometheus_client import ProcessCollector
    from prometheus_client.registry import CollectorRegistry

    from gpuwatch.commands.common import live_config, open_live_session, source_spec
    from gpuwatch.exporter.collector import GpuwatchCollector, PendingSession
    from gpuwatch.exporter.kubernetes import PodCollector
    from gpuwatch.exporter.server import ExporterServer, make_app, parse_listen
    from gpuwatch.live.assessor import history_points
    from gpuwatch.telemetry.heap import release_freed_heap, share_one_malloc_arena
    from gpuwatch.telemetry.kubernetes import PodAllocations

    share_one_malloc_arena()  # before the server's, the session's and the supervisor's threads start

    host, port = parse_listen(args.listen or get("listen").default)
    for option, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if path is not None and not os.path.isfile(path):
            raise UserError(f"{option} {path}: no such file")
    web_config = None
    if args.web_config_file is not None:
        from gpuwatch.exporter.webconfig import load_web_config

        web_config = load_web_config(args.web_config_file)
    # before the NVML child starts: without the kubernetes extra this is one line, and nothing to stop
    pods = PodAllocations(args.kubelet_socket or DEFAULT_SOCKET) if args.kubernetes else None
    # Bind and serve first: the port answers from the first second (health series only, no GPU yet)
    # while the session opens, instead of staying silent while NVML starts.
    pending = PendingSession()
    # a collector that describes nothing (it must not read the session before the first poll) is
    # only reached by a ?name[]= filtered scrape when the registry is told to keep such collectors
    registry = CollectorRegistry(support_collectors_without_names=True)
    pod_collector = PodCollector(pending, pods) if pods is not None else None
    collector = GpuwatchCollector(
        pending,
        process_metrics=bool(args.process_metrics),
        gpu_labels=pod_collector.gpu_labels if pod_collector is not None else None,
    )
    registry.register(collector)
    if pod_collector is not None:
        registry.register(pod_collector)
    # the exporter's own CPU and memory; served from the per-snapshot cache, so as of the last poll
    ProcessCollector(registry=registry)
    server = ExporterServer(
        make_app(
            registry, lambda: collector.source_description or "starting", generation=collector.generation
        ),
        host,
        port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        web_config=web_config,
    )
    server.start()
    try:
        # no driver and no --sim: NvmlUnavailable, one line. The exporter shows no history: it keeps
        # only the points the assessment reads (not the TUI's 15 minutes, ~0.5 MiB per GPU)
        config = live_config(args)
        capacity = history_points(config.interval_s, source_spec(args).time_scale)
        session = open_live_session(args, isolate=True, config=config, history_capacity=capacity)
    except BaseException:
        server.shutdown()
        raise
    # scraped every 15-60 s, polled every second: the power-cap advice is computed per scraped poll
    session.assessor.advise_every_poll = False
    collector.source_description = session.description
    pending.attach(session)
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = signal.signal(signal.SIGTERM, stop)
    session.start()
    if pods is not None:
        pods.start()
    print(f"gpuwatch exporter: serving {server.url} ({session.description})", file=sys.stderr, flush=True)
    trimmed = False
    try:
        while not stopping.wait(0.5) and server.serving:
            if not trimmed and session.latest() is not None:
                # start-up (options, catalog, first assessment) is done: its freed heap back to the kernel
                trimmed = True
                release_freed_heap()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.shutdown()
        if pods is not None:
            pods.stop()
        session.stop()
    return 0
