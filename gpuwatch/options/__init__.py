"""Every user-facing setting declared once: flag, TOML key, type, unit, default, allowed range, help.

argparse arguments, the config-file validator (gpuwatch/live/config.py), the TUI plan form's checks
(gpuwatch/tui/plan_pane.py) and the ``gpuwatch plan …`` command the TUI copies
(gpuwatch/options/plan_command.py) are all derived from these declarations, so a range or a default
is written in one place and cannot drift between faces.

To declare a new option::

    from gpuwatch.options import Option, add_options, declare

    declare(Option("kv_dtype", ("--kv-dtype",), "text", "KV-cache dtype", default="fp16",
                   choices=("fp16", "fp8"), toml="workload.kv_dtype"))
    add_options(parser, ["kv_dtype"])   # in the command's register(); the value is args.kv_dtype

Numbers take ``minimum``/``maximum`` (inclusive) or ``above`` (exclusive) and are refused outside
them, as are NaN, inf and numbers too big for a float; ``parse`` checks what a kind cannot (a catalog id,
a URL) by raising :class:`Invalid`. A default that a dataclass already holds is read from it
(``default=OwnershipCost().pue``), never written twice. Shared settings live in
gpuwatch/options/settings.py; an option only one command has may be declared in that command's module.
"""

from __future__ import annotations

from gpuwatch.options import settings
from gpuwatch.options.core import (
    Invalid,
    OneLineParser,
    Option,
    OptionError,
    UsageError,
    add_options,
    all_options,
    declare,
    get,
    given,
    toml_options,
)

__all__ = [
    "Invalid",
    "OneLineParser",
    "Option",
    "OptionError",
    "UsageError",
    "add_options",
    "all_options",
    "declare",
    "get",
    "given",
    "settings",
    "toml_options",
]
