"""Which GPUs a serving engine runs on: the ``#gpus=0,1`` fragment of its ``--engine`` URL.

A URL fragment is never sent to the server, so the engine is asked for its /metrics as before; the
option check (gpuwatch/options/settings.py) rejects a fragment that is not such a list, and the live
attribution (gpuwatch/live/attribution.py) places each engine's tokens and work on the GPUs listed.
"""

from __future__ import annotations

import urllib.parse


def engine_gpus(url: str) -> tuple[int, ...] | None:
    """The NVML indices the engine at ``url`` runs on (``#gpus=0,1``), or None: every GPU.

    Raises ValueError with what was wrong for a fragment that is not such a list."""
    fragment = urllib.parse.urlsplit(url if "://" in url else f"http://{url}").fragment
    if not fragment:
        return None
    key, _, listed = fragment.partition("=")
    parts = listed.split(",")
    if key.strip() != "gpus" or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"engine URL fragment #{fragment} is not a GPU list (expected #gpus=0,1)")
    return tuple(sorted({int(p) for p in parts}))
