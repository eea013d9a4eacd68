"""Options shared by the TUI, the exporter and `record` (where readings come from, workload, prices),
and the typed values live/ takes built from them: a LiveConfig and a SourceSpec, never a Namespace."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import TYPE_CHECKING

from gpuwatch.options import add_options, given
from gpuwatch.options.settings import PRICES, SOURCE

if TYPE_CHECKING:  # live loads when a command runs, not when the parser is built
    from gpuwatch.live.config import LiveConfig
    from gpuwatch.live.session import LiveSession, SourceSpec

#: the price and comparison options of the live faces (the TUI and the exporter)
LIVE_PRICES = (*PRICES, "gpu_price_usd", "alternatives")


def add_source_options(
    parser: argparse.ArgumentParser, *, with_prices: bool = False, subcommand: bool = False
) -> None:
    """Add the shared options; ``subcommand=True`` lets them be given before or after the sub-command.

    A sub-parser's defaults overwrite what the top-level parser already stored (`gpuwatch --sim X
    record F` would lose --sim), so on a sub-parser these options get no default at all and the
    top-level parser's (None: not given) stands.
    """
    add_options(parser, SOURCE, group="data source", suppress_defaults=subcommand)
    if with_prices:
        add_options(
            parser, LIVE_PRICES, group="prices (override the config file)", suppress_defaults=subcommand
        )


def live_config(args: argparse.Namespace) -> LiveConfig:
    """The config file named by --config (or the default one) with the command line's values on top."""
    from gpuwatch.live.config import load_config

    return load_config(getattr(args, "config", None), given(args))


def source_spec(args: argparse.Namespace, **changes: object) -> SourceSpec:
    """Where the snapshots come from; options not given keep SourceSpec's (the declarations') defaults."""
    from gpuwatch.live.session import SourceSpec

    names = {f.name for f in fields(SourceSpec)}
    values = {k: v for k, v in given(args).items() if k in names}
    values.update(changes)
    return SourceSpec(**values)


def open_live_session(
    args: argparse.Namespace, *, isolate: bool = False, config: LiveConfig | None = None, **source: object
) -> LiveSession:
    from gpuwatch.live.session import open_session

    return open_session(config or live_config(args), source_spec(args, **source), isolate=isolate)
