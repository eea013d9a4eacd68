"""The label matchers that select a rack's exporters in Prometheus (``--match``), checked before use.

Apart from gpuwatch/telemetry/prometheus_rack.py because the TUI's command line declares ``--match``
(its default and its check) at every start, and the rack client is for the runs that read a rack.
"""

from __future__ import annotations

import re

from gpuwatch.errors import UserError

DEFAULT_MATCH = 'job=~"gpuwatch.*"'

_MATCHER = re.compile(r'\s*[A-Za-z_][A-Za-z0-9_]*\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*')


def parse_match(text: str) -> str:
    """``--match``: label matchers, with or without braces (``job="gpuwatch",env="prod"``).

    Returned without braces, to be put into each query's selector. Anything else (a metric name, a
    function, an unbalanced quote) is refused here with one line, not sent to Prometheus.
    """
    inner = text.strip()
    if inner.startswith("{") and inner.endswith("}"):
        inner = inner[1:-1]
    parts: list[str] = []
    rest = inner
    while rest.strip():
        m = _MATCHER.match(rest)
        if m is None:
            raise UserError(
                f"--match {text!r}: not a list of label matchers; give e.g. "
                '\'job="gpuwatch"\' or \'{job=~"gpu.*",env="prod"}\''
            )
        parts.append(m.group(0).strip())
        rest = rest[m.end() :]
        if rest.startswith(","):
            rest = rest[1:]
        elif rest.strip():
            raise UserError(f"--match {text!r}: separate label matchers with commas")
    if not parts:
        raise UserError(f"--match {text!r}: give at least one label matcher, e.g. 'job=\"gpuwatch\"'")
    return ",".join(parts)
