"""The one-line error for an NVML that cannot start, with the fix a user can apply."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpuwatch.errors import UserError

if TYPE_CHECKING:
    import pynvml


class NvmlUnavailable(UserError):
    """No usable NVML (no driver, no library, driver/library mismatch): one line saying what to do."""


def unavailable_message(exc: pynvml.NVMLError) -> str:
    """One line for a failed nvmlInit, with the fix a user can apply."""
    import pynvml as N  # here, not at import: a supervising parent never loads pynvml itself

    code = exc.value
    if code == N.NVML_ERROR_LIBRARY_NOT_FOUND:
        hint = "no NVIDIA driver on this machine (libnvidia-ml.so.1 not found); try --sim rtx4090"
    elif code == N.NVML_ERROR_DRIVER_NOT_LOADED:
        hint = "the NVIDIA kernel driver is not loaded; load it (modprobe nvidia) or try --sim rtx4090"
    elif code == N.NVML_ERROR_LIB_RM_VERSION_MISMATCH:
        hint = "driver/library version mismatch after a driver upgrade; reboot or reload the nvidia module"
    elif code == N.NVML_ERROR_NO_PERMISSION:
        hint = "no permission to open the NVIDIA devices; check /dev/nvidia* permissions"
    else:
        hint = "try --sim rtx4090 to use the simulator"
    return f"NVML unavailable: {exc} ({hint})"
