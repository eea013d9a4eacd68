"""A small parser for the nvidia_gpu_exporter captures in tests/data/captures/.

The format (documented in each file's header): a few ``key: value`` header lines, then sections, each
opened by a banner of ``#`` lines whose second line is ``# <phase> :: <command>`` (``grep -n '^# .* :: '``)
and optionally a ``# $ <command line>`` line. Under ``idle``/``load`` come ``nvidia-smi -q`` (an indented
``Name : value`` tree, four spaces per level) and ``--query-gpu`` CSV (header line, one row per GPU).
``capabilities :: nvml-symbols`` lists the driver's exported ``nvml*`` functions, one per line.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

_BANNER = re.compile(r"^# (\S+) :: (.+?)\s*$")
_RULE = re.compile(r"^#{20,}\s*$")
_SYMBOL = re.compile(r"^(nvml[A-Za-z0-9_]+)\s*$")


@dataclass
class NvsmiCapture:
    path: Path
    header: dict[str, str] = field(default_factory=dict)
    #: "idle :: query (-q)" -> body lines (banner and command line removed)
    sections: dict[str, list[str]] = field(default_factory=dict)

    def section(self, phase: str, command_prefix: str) -> list[str]:
        for name, lines in self.sections.items():
            p, _, cmd = name.partition(" :: ")
            if p == phase and cmd.startswith(command_prefix):
                return lines
        raise KeyError(f"{self.path.name}: no section {phase} :: {command_prefix}")

    def query(self, phase: str) -> dict[str, str]:
        """``nvidia-smi -q`` of the first GPU, flattened: ``"Temperature/GPU Current Temp" -> "41 C"``."""
        out: dict[str, str] = {}
        stack: list[tuple[int, str]] = []
        in_gpu = False
        for line in self.section(phase, "query (-q)"):
            if not line.strip() or line.startswith("="):
                continue
            if re.match(r"^GPU [0-9A-Fa-f]{4,}:", line):
                if in_gpu:
                    break  # only the first GPU
                in_gpu, stack = True, []
                continue
            if not in_gpu:
                continue
            depth = (len(line) - len(line.lstrip(" "))) // 4 - 1
            key, _, value = line.strip().partition(" : ")
            key = key.strip().rstrip(":").strip()
            stack = [(d, k) for d, k in stack if d < depth]
            path = "/".join([k for _, k in stack] + [key])
            if value.strip():
                out[path] = value.strip()
            else:
                stack.append((depth, key))
        return out

    def query_gpu(self, phase: str) -> dict[str, str]:
        """``--query-gpu`` CSV of the first GPU: column header (units stripped) -> value."""
        lines = [ln for ln in self.section(phase, "query-gpu") if ln.strip()]
        rows = list(csv.reader(lines, skipinitialspace=True))
        header = [re.sub(r"\s*\[.*\]$", "", h.strip()) for h in rows[0]]
        return {h: v.strip() for h, v in zip(header, rows[1], strict=False)}

    def dmon(self, phase: str) -> list[dict[str, float]]:
        """``nvidia-smi dmon`` rows: column -> number (``-`` rows skipped)."""
        lines = self.section(phase, "dmon")
        cols = lines[0].lstrip("#").split()
        out = []
        for ln in lines[2:]:
            parts = ln.split()
            if len(parts) != len(cols):
                continue
            try:  # "-": no such sensor (GDDR has no memory temperature)
                out.append({c: float("nan" if v == "-" else v) for c, v in zip(cols, parts, strict=True)})
            except ValueError:
                continue
        return out

    def symbols(self) -> frozenset[str] | None:
        """The driver's exported ``nvml*`` symbols; None where the capture has no such section."""
        try:
            lines = self.section("capabilities", "nvml-symbols")
        except KeyError:
            return None
        return frozenset(m.group(1) for ln in lines if (m := _SYMBOL.match(ln.strip())))

    @property
    def driver_version(self) -> str:
        fields = {}
        for ln in self.section("capabilities", "version"):
            k, _, v = ln.partition(":")
            fields[k.strip()] = v.strip()
        # r610 prints "DRIVER version : Deprecated, see "KMD version" instead"
        for key in ("KMD version", "DRIVER version"):
            if fields.get(key, "")[:1].isdigit():
                return fields[key]
        raise KeyError(f"{self.path.name}: no driver version")


def parse_capture(path: Path) -> NvsmiCapture:
    cap = NvsmiCapture(path)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    current: list[str] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if _RULE.match(line) and i + 1 < len(lines) and (m := _BANNER.match(lines[i + 1])):
            current = []
            cap.sections[f"{m.group(1)} :: {m.group(2)}"] = current
            i += 2
            while i < len(lines) and (lines[i].startswith("# $") or _RULE.match(lines[i])):
                i += 1
            continue
        if current is None:
            k, sep, v = line.partition(":")
            if sep and not line.startswith("#"):
                cap.header[k.strip()] = v.strip()
        else:
            current.append(line)
        i += 1
    return cap


def number(text: str) -> float | None:
    """``"69.85 W"`` -> 69.85, ``"16x"`` -> 16; None for N/A and words."""
    m = re.match(r"^\[?(-?[0-9]+(?:\.[0-9]+)?)", text.strip())
    return float(m.group(1)) if m else None
