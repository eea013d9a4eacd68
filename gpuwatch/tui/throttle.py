"""Throttle (clock-event) reasons as the TUI shows them: a short badge label and a severity.

Severity follows what the reason means for the owner (nvml.h descriptions, see
/work/shared/domain/nvml-notes.md): hardware slowdowns cut clocks by 2x or more and point at cooling or
the power supply (critical); software thermal and power caps trim clocks to stay inside a limit the card
was given (warning); sync boost only holds a card to its group (info). Idle, application clocks and
display clocks are not throttling and get no badge. Unknown bits (board limit 0x200, reliability
0x400 on newer drivers) are shown as their hex value at warning, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpuwatch.telemetry.sample import reason_names


@dataclass(frozen=True)
class ThrottleBadge:
    reason: str  # telemetry.sample.reason_names() name
    label: str
    severity: str  # "critical" | "warning" | "info"
    meaning: str


_BADGES: dict[str, ThrottleBadge] = {
    b.reason: b
    for b in (
        ThrottleBadge(
            "hw_slowdown", "HW SLOWDOWN", "critical", "hardware slowdown: clocks cut by 2x or more"
        ),
        ThrottleBadge(
            "hw_thermal", "HW THERMAL", "critical", "hardware thermal slowdown: the chip is too hot"
        ),
        ThrottleBadge(
            "hw_power_brake", "POWER BRAKE", "critical", "external power brake asserted (power supply)"
        ),
        ThrottleBadge(
            "sw_thermal", "SW THERMAL", "warning", "driver holds clocks to stay under max temperature"
        ),
        ThrottleBadge(
            "sw_power_cap", "POWER CAP", "warning", "driver holds clocks to stay under the power limit"
        ),
        ThrottleBadge("sync_boost", "SYNC BOOST", "info", "held to the slowest card of its sync-boost group"),
    )
}

#: reasons that mean "not held back" and get no badge
_NOT_THROTTLING = frozenset({"gpu_idle", "applications_clocks", "display_clocks"})

_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def badges_for(mask: int | None) -> list[ThrottleBadge]:
    """The badges of a clock-event bitmask, most severe first."""
    badges = []
    for name in reason_names(mask or 0):
        if name in _NOT_THROTTLING:
            continue
        badges.append(
            _BADGES.get(name) or ThrottleBadge(name, name.upper(), "warning", f"unknown reason bit {name}")
        )
    return sorted(badges, key=lambda b: _SEVERITY_ORDER[b.severity])


def worst_severity(badges: list[ThrottleBadge]) -> str | None:
    return badges[0].severity if badges else None


#: what common Xid codes mean, from NVIDIA's Xid catalog (https://docs.nvidia.com/deploy/xid-errors/),
#: shortened to what the owner does next; the help screen lists them
XID_MEANINGS: dict[int, str] = {
    8: "GPU stopped processing: restart the application",
    13: "graphics engine exception, usually the application (bad address, illegal instruction)",
    31: "GPU memory page fault, usually the application's invalid memory access",
    43: "GPU stopped processing after an application fault",
    45: "preemptive cleanup after earlier errors (the application was stopped)",
    48: "double-bit ECC error: memory corrupted, reset the GPU",
    61: "internal micro-controller breakpoint/warning",
    62: "internal micro-controller halt: reset the GPU",
    63: "ECC page retirement or row remap recorded: reset when convenient",
    64: "ECC page retirement or row remap failed: reset the GPU, then check for RMA",
    74: "NVLink error: check the link and reset",
    79: "GPU has fallen off the bus: reboot; check power and the PCIe slot",
    92: "high single-bit ECC error rate",
    94: "contained ECC error: the application was stopped, reset when convenient",
    95: "uncontained ECC error: reset the GPU",
    119: "GSP RPC timeout: reset the GPU",
    120: "GSP error: reset the GPU",
}

#: Xids the application can cause; the rest point at the card, the driver or the board
_APPLICATION_XIDS = frozenset({13, 31, 43, 45})


def xid_meaning(code: int) -> str:
    return XID_MEANINGS.get(code, "not in gpuwatch's table: see NVIDIA's Xid catalog")


def xid_badge(code: int) -> ThrottleBadge:
    """The badge for a card's last Xid: critical unless the code is one an application causes."""
    severity = "warning" if code in _APPLICATION_XIDS else "critical"
    return ThrottleBadge(f"xid_{code}", f"XID {code}", severity, xid_meaning(code))
