"""Hand heap memory that start-up freed back to the kernel, so a long-running process does not keep it.

Parsing the catalog, building the simulator and attaching to NVML allocate and free a few MiB once;
glibc keeps the freed pages mapped (resident) unless asked. ``malloc_trim(0)`` returns them; no value
is touched. A no-op where the C library has no such call (musl, macOS).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc


def release_freed_heap() -> None:
    """Collect garbage, then return free heap pages to the kernel (glibc ``malloc_trim``)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
