"""Which container a GPU process runs in, from its cgroup path, and the container's name from the runtime.

NVIDIA's driver is not PID-namespace aware: NVML lists host PIDs. The cgroup a PID belongs to
(``/proc/PID/cgroup``) names its container in every common layout (systemd driver / cgroupfs driver):

* Docker: ``/system.slice/docker-<id>.scope`` / ``/docker/<id>``;
* Podman: ``/machine.slice/libpod-<id>.scope`` (rootless: ``…/user@UID.service/…/libpod-<id>.scope``,
  possibly ending in ``/container``) / ``/libpod_parent/libpod-<id>``;
* containerd under Kubernetes: ``/kubepods.slice/…-pod<uid>.slice/cri-containerd-<id>.scope`` /
  ``/kubepods/<qos>/pod<uid>/<id>``; nerdctl: ``nerdctl-<id>.scope`` / ``/<namespace>/<id>``;
* CRI-O: ``…/crio-<id>.scope`` / ``/kubepods/…/pod<uid>/<id>``.

On cgroup v1 every controller has a line (``4:memory:/docker/<id>``); on v2 there is one
(``0::/docker/<id>``). The name comes from the runtime's state where it is readable (root, or the
state mounted into gpuwatch's own container): Docker's ``containers/<id>/config.v2.json``, Podman's
``containers.json`` in its storage (rootful, and rootless under the user's home), the OCI bundle
``config.json`` of containerd and CRI-O (annotations carry the Kubernetes container name). Where it is
not readable the container is still known by its short id: a name is never guessed.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the most of a cgroup file, a state file or a passwd file read (a hostile file costs us no more)
MAX_CGROUP_BYTES = 64 * 1024
MAX_STATE_BYTES = 16 * 1024 * 1024
#: where the host's filesystem is mounted when gpuwatch runs in a container (deploy/ sets it)
HOST_ROOT_ENV = "GPUWATCH_HOST_ROOT"
#: PIDs remembered; NVML lists few processes, and a PID's container does not change while it lives
MAX_CACHED_PIDS = 4096

_ID = r"(?P<id>[0-9a-f]{64})"
#: one cgroup path segment -> runtime; the most specific first
_SEGMENTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"docker-{_ID}\.scope"), "docker"),
    (re.compile(rf"libpod-{_ID}(?:\.scope)?"), "podman"),
    (re.compile(rf"cri-containerd-{_ID}\.scope"), "containerd"),
    (re.compile(rf"nerdctl-{_ID}\.scope"), "containerd"),
    (re.compile(rf"crio-{_ID}(?:\.scope)?"), "cri-o"),
    (re.compile(_ID), ""),  # a bare id: the runtime follows from its parent or from whose state has it
)
_POD = re.compile(r"pod(?P<uid>[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
_ROOTLESS_UID = re.compile(r"user@(?P<uid>\d+)\.service")


@dataclass(frozen=True, slots=True)
class Container:
    """A process's container: the runtime that made it, its full id, and its name when the runtime says."""

    runtime: str  # docker, podman, containerd, cri-o
    id: str  # 64 hex digits
    name: str | None = None
    #: the Kubernetes pod UID when the cgroup sits under kubepods
    pod_uid: str | None = None

    @property
    def label(self) -> str:
        """What a screen or a `container` label shows: the name, or Docker's 12-digit short id."""
        return self.name or self.id[:12]


def parse_cgroup(text: str) -> Container | None:
    """The container named by the contents of a ``/proc/PID/cgroup`` file (v1 or v2), without its name.

    The v2 line (``0::``) is preferred; on v1 the first controller line naming a container is used
    (all of a container's controllers name the same one).
    """
    lines = [line.split(":", 2) for line in text.splitlines() if line.count(":") >= 2]
    lines.sort(key=lambda parts: parts[0] != "0")  # the unified hierarchy first
    for parts in lines:
        found = _parse_path(parts[2])
        if found is not None:
            return found
    return None


def _parse_path(path: str) -> Container | None:
    segments = [s for s in path.split("/") if s]
    pod_uid = None
    for s in segments:
        match = _POD.search(s)
        if match:
            pod_uid = match.group("uid").replace("_", "-")
    # the deepest segment naming a container wins (Podman's split cgroups end in `/container`)
    for depth in range(len(segments) - 1, -1, -1):
        for pattern, runtime in _SEGMENTS:
            match = pattern.fullmatch(segments[depth])
            if match is None:
                continue
            if not runtime:
                runtime = _bare_runtime(segments[:depth], pod_uid)
            return Container(runtime=runtime, id=match.group("id"), pod_uid=pod_uid)
    return None


def _bare_runtime(parents: list[str], pod_uid: str | None) -> str:
    """A bare id's runtime from the segment above it: ``docker``, ``libpod_parent``, a pod (CRI: which
    runtime is decided by whose state holds the id) or a containerd namespace."""
    parent = parents[-1] if parents else ""
    if parent == "docker":
        return "docker"
    if parent.startswith("libpod"):
        return "podman"
    if pod_uid is not None:
        return "cri"
    return "containerd"


class ContainerResolver:
    """PID -> :class:`Container`, reading ``/proc`` and the runtimes' state below ``root``.

    ``root`` is ``/`` on a host; in a container it is where the host's filesystem is mounted (the
    DaemonSet in deploy/ mounts it at ``/host``) — or a fabricated tree in the tests. Results are
    cached per PID and start time, so a reused PID is looked up afresh.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root if root is not None else os.environ.get(HOST_ROOT_ENV) or "/")
        self._lock = threading.Lock()
        self._cache: dict[int, tuple[str | None, Container | None]] = {}

    def lookup(self, pid: int) -> Container | None:
        """The container of ``pid``, or None: a host process, an unknown layout, or a PID gone or
        unreadable. Never raises for what /proc or a runtime's state holds."""
        start = self._start_time(pid)
        with self._lock:
            cached = self._cache.get(pid)
        if cached is not None and cached[0] == start:
            return cached[1]
        found = self._resolve(pid)
        with self._lock:
            if len(self._cache) >= MAX_CACHED_PIDS:
                self._cache.pop(next(iter(self._cache)))
            self._cache[pid] = (start, found)
        return found

    def _start_time(self, pid: int) -> str | None:
        text = _read_text(self.root / "proc" / str(pid) / "stat", 4096)
        if text is None:
            return None
        # the command name (field 2) may hold spaces and parentheses: count fields after the last ')'
        fields = text.rpartition(")")[2].split()
        return fields[19] if len(fields) > 19 else None

    def _resolve(self, pid: int) -> Container | None:
        text = _read_text(self.root / "proc" / str(pid) / "cgroup", MAX_CGROUP_BYTES)
        if text is None:
            return None
        found = parse_cgroup(text)
        if found is None:
            return None
        if found.runtime == "docker":
            name = self._docker_name(found.id)
        elif found.runtime == "podman":
            name = self._podman_name(found.id, text)
        elif found.runtime in ("containerd", "cri-o"):
            name = self._oci_name(found.runtime, found.id)
        else:  # "cri": under a pod, by id only; whichever runtime has its state made it
            for runtime in ("containerd", "cri-o"):
                name = self._oci_name(runtime, found.id)
                if name is not None:
                    return Container(runtime, found.id, name, found.pod_uid)
            name = self._docker_name(found.id)
            return Container("docker" if name else "cri", found.id, name, found.pod_uid)
        return Container(found.runtime, found.id, name, found.pod_uid)

    # -- names from runtime state ----------------------------------------------------------------
    def _docker_name(self, cid: str) -> str | None:
        doc = _read_json(self.root / "var/lib/docker/containers" / cid / "config.v2.json")
        if not isinstance(doc, dict):
            return None
        labels = (doc.get("Config") or {}).get("Labels") or {}
        k8s = labels.get("io.kubernetes.container.name") if isinstance(labels, dict) else None
        name = k8s or doc.get("Name")
        return _clean(name.lstrip("/")) if isinstance(name, str) else None

    def _podman_name(self, cid: str, cgroup_text: str) -> str | None:
        stores = [self.root / "var/lib/containers/storage"]
        rootless = _ROOTLESS_UID.search(cgroup_text)
        if rootless:
            home = self._home_of(int(rootless.group("uid")))
            if home is not None:
                stores.insert(0, self.root / home.lstrip("/") / ".local/share/containers/storage")
        for store in stores:
            for driver in ("overlay", "vfs", "btrfs"):
                doc = _read_json(store / f"{driver}-containers" / "containers.json")
                if not isinstance(doc, list):
                    continue
                for entry in doc:
                    if isinstance(entry, dict) and entry.get("id") == cid:
                        names = entry.get("names")
                        if isinstance(names, list) and names and isinstance(names[0], str):
                            return _clean(names[0])
                        return None
        return None

    def _home_of(self, uid: int) -> str | None:
        text = _read_text(self.root / "etc/passwd", MAX_CGROUP_BYTES)
        for line in (text or "").splitlines():
            parts = line.split(":")
            if len(parts) >= 6 and parts[2] == str(uid):
                return parts[5]
        return None

    def _oci_name(self, runtime: str, cid: str) -> str | None:
        """The container name among the annotations of its OCI bundle's config.json."""
        if runtime == "cri-o":
            bundles = [self.root / "run/containers/storage/overlay-containers" / cid / "userdata"]
        else:
            task_dir = self.root / "run/containerd/io.containerd.runtime.v2.task"
            try:
                namespaces = sorted(p for p in task_dir.iterdir() if p.is_dir())[:64]
            except OSError:
                return None
            bundles = [ns / cid for ns in namespaces]
        for bundle in bundles:
            doc = _read_json(bundle / "config.json")
            if not isinstance(doc, dict):
                continue
            notes = doc.get("annotations") or {}
            if not isinstance(notes, dict):
                return None
            for key in ("io.kubernetes.cri.container-name", "io.kubernetes.container.name", "nerdctl/name"):
                if isinstance(notes.get(key), str):
                    return _clean(notes[key])
            return None
        return None


def _clean(name: str) -> str | None:
    """A name fit for a screen and a label: printable, at most 128 characters (a hostile runtime state
    file cannot fill the terminal or a label)."""
    name = "".join(ch for ch in name if ch.isprintable())[:128]
    return name or None


def _read_text(path: Path, limit: int) -> str | None:
    try:
        with path.open("rb") as fh:
            return fh.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def _read_json(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_STATE_BYTES:
            return None
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
