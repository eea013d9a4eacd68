"""GPU -> pod, namespace and container from the kubelet's pod-resources API (as dcgm-exporter does).

The kubelet serves ``v1.PodResourcesLister`` over gRPC on a unix socket
(:data:`DEFAULT_SOCKET`); ``List`` returns every pod's containers and the devices the device plugin
allocated to each. The NVIDIA device plugin's device ids are GPU UUIDs (``GPU-…``), indices with
``deviceIDStrategy=index``, and ``<id>::<n>`` replicas under time-slicing; resources named
``nvidia.com/…`` count (``nvidia.com/gpu``, renamed shared resources). MIG devices (``MIG-…``) name a
GPU instance, not the card: they are not attributed to a card here.

Labels stay bounded: a GPU carries ``pod``/``namespace``/``container`` only when exactly one container
holds it; a GPU shared by several (time-slicing, MPS) carries empty ones, and the list of sharers is
a separate series per (GPU, container) that only exists while the allocation does.

grpcio and protobuf are the optional extra ``kubernetes``; without them ``--kubernetes`` fails with one
line saying what to install.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpuwatch.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
#: how often the allocation is re-read; pods start and stop on a scale of seconds to hours
REFRESH_S = 10.0
TIMEOUT_S = 5.0
#: the most of a List response read (a node holds ~110 pods; a hostile kubelet socket costs us no more)
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
RESOURCE_PREFIX = "nvidia.com/"
#: labels added to per-GPU series under --kubernetes, in this order
POD_LABELS = ("pod", "namespace", "container")


@dataclass(frozen=True, slots=True, order=True)
class PodRef:
    """A container that the kubelet says holds a GPU."""

    namespace: str
    pod: str
    container: str


def _load_stubs() -> tuple[Any, Any, Any]:
    try:
        import grpc

        from gpuwatch.telemetry.podresources import api_pb2, api_pb2_grpc
    except Exception as exc:  # missing, or older than the stubs need (they raise their own error types)
        raise UserError(
            f"--kubernetes needs grpcio>=1.85.1 and protobuf>=7.35.1 ({exc}): "
            "pip install 'gpuwatch-roofline[kubernetes]'"
        ) from None
    return grpc, api_pb2, api_pb2_grpc


def list_gpu_allocations(
    socket_path: str = DEFAULT_SOCKET, timeout_s: float = TIMEOUT_S
) -> dict[str, tuple[PodRef, ...]]:
    """One ``List`` call: device id (GPU UUID or index, replica suffix dropped) -> the containers
    holding it, sorted. Raises ``OSError`` with the reason when the kubelet cannot be asked."""
    grpc, api_pb2, api_pb2_grpc = _load_stubs()
    options = [("grpc.max_receive_message_length", MAX_RESPONSE_BYTES), ("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(f"unix://{socket_path}", options=options) as channel:
        try:
            response = api_pb2_grpc.PodResourcesListerStub(channel).List(
                api_pb2.ListPodResourcesRequest(), timeout=timeout_s
            )
        except grpc.RpcError as exc:
            raise OSError(
                f"kubelet pod-resources {socket_path}: {exc.code().name}: {exc.details()}"
            ) from None
    found: dict[str, set[PodRef]] = {}
    for pod in response.pod_resources:
        for container in pod.containers:
            for devices in container.devices:
                if not devices.resource_name.startswith(RESOURCE_PREFIX):
                    continue
                for device_id in devices.device_ids:
                    base = device_id.split("::", 1)[0]
                    if base.startswith("MIG-"):
                        continue
                    found.setdefault(base, set()).add(PodRef(pod.namespace, pod.name, container.name))
    return {device: tuple(sorted(refs)) for device, refs in found.items()}


class PodAllocations:
    """The kubelet's GPU allocation, re-read every :data:`REFRESH_S` by a background thread.

    When the kubelet cannot be asked, the allocation is unknown: no pod labels at all (never the last
    answer, which may name pods long gone), ``up`` is False and ``error`` says why.
    """

    def __init__(
        self, socket_path: str = DEFAULT_SOCKET, *, refresh_s: float = REFRESH_S, timeout_s: float = TIMEOUT_S
    ) -> None:
        _load_stubs()  # fail now, with one line, when the extra is missing
        self.socket_path = socket_path
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._by_device: dict[str, tuple[PodRef, ...]] = {}
        self._up = False
        self._error: str | None = "not read yet"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        try:
            allocation = list_gpu_allocations(self.socket_path, self.timeout_s)
        except OSError as exc:
            with self._lock:
                if self._error != str(exc):
                    log.warning("%s; GPUs carry no pod labels until it answers", exc)
                self._by_device, self._up, self._error = {}, False, str(exc)
            return
        with self._lock:
            self._by_device, self._up, self._error = allocation, True, None

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="gpuwatch-kubelet", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 1)

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self.refresh()

    @property
    def up(self) -> bool:
        with self._lock:
            return self._up

    @property
    def error(self) -> str | None:
        with self._lock:
            return self._error

    def holders(self, uuid: str, index: int) -> tuple[PodRef, ...]:
        """The containers holding the GPU with this UUID (or this index, under the index strategy)."""
        with self._lock:
            return self._by_device.get(uuid) or self._by_device.get(str(index)) or ()

    def gpu_labels(self, uuid: str, index: int) -> Mapping[str, str]:
        """``pod``/``namespace``/``container`` for a GPU's series: the holder's when there is exactly one,
        empty otherwise (not allocated, shared, or the kubelet unknown)."""
        refs = self.holders(uuid, index)
        if len(refs) == 1:
            return {"pod": refs[0].pod, "namespace": refs[0].namespace, "container": refs[0].container}
        return dict.fromkeys(POD_LABELS, "")
