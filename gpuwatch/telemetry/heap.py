"""Keep a long-running process's C heap small: one malloc arena, and start-up's freed pages handed back.

Parsing the catalog, building the simulator and attaching to NVML allocate and free a few MiB once;
glibc keeps the freed pages mapped (resident) unless asked. ``malloc_trim(0)`` returns them; no value
is touched. Each thread that calls ``malloc`` also gets its own arena (up to 8 per core), ~200 KiB
resident apiece once the exporter's worker threads have served a few scrapes (measured at 8 simulated
GPUs: 6 of them, 1.1 MiB; one shared arena: 0.8 MiB less in all); the GIL serialises those threads
anyway, so sharing costs no scrape throughput (measured side by side). Both are
no-ops where the C library has no such call (musl, macOS).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc

#: glibc's mallopt parameter for the most arenas it creates (malloc.h)
_M_ARENA_MAX = -8


def release_freed_heap() -> None:
    """Collect garbage, then return free heap pages to the kernel (glibc ``malloc_trim``)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def share_one_malloc_arena() -> bool:
    """Make every thread started from now on allocate from glibc's main arena; True where it applied.

    Call it before the process starts threads: an arena a thread already has stays.
    """
    with contextlib.suppress(OSError, AttributeError):
        return bool(ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 1))
    return False
