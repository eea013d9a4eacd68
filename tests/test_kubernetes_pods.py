"""GPU -> pod labels against a fake kubelet: a gRPC server on a unix socket speaking pod-resources v1.

The fake answers ``List`` as a kubelet with the NVIDIA device plugin does: GPU UUIDs as device ids,
``::N`` replicas under time-slicing, MIG devices, and resources of other plugins beside them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import pytest

grpc = pytest.importorskip("grpc")

from prometheus_client import generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from prometheus_client.registry import CollectorRegistry  # noqa: E402

from gpuwatch.exporter.collector import GpuwatchCollector  # noqa: E402
from gpuwatch.exporter.kubernetes import PodCollector  # noqa: E402
from gpuwatch.telemetry.kubernetes import PodAllocations, PodRef, list_gpu_allocations  # noqa: E402
from gpuwatch.telemetry.podresources import api_pb2 as pb  # noqa: E402
from gpuwatch.telemetry.podresources import api_pb2_grpc  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def allocation(uuid0: str, uuid1: str) -> pb.ListPodResourcesResponse:
    def devices(resource: str, *ids: str) -> pb.ContainerDevices:
        return pb.ContainerDevices(
            resource_name=resource,
            device_ids=list(ids),
            topology=pb.TopologyInfo(nodes=[pb.NUMANode(ID=0)]),
        )

    return pb.ListPodResourcesResponse(
        pod_resources=[
            pb.PodResources(
                name="vllm-0",
                namespace="serving",
                cpu_ids=[2, 3],
                containers=[
                    pb.ContainerResources(
                        name="vllm",
                        devices=[devices("nvidia.com/gpu", uuid0), devices("example.com/nic", "eth7")],
                        cpu_ids=[2, 3],
                        memory=[pb.ContainerMemory(memory_type="memory", size=2**30)],
                    ),
                    pb.ContainerResources(name="sidecar"),
                ],
            ),
            # two notebooks time-slicing the second GPU (device plugin replicas GPU-…::0, ::1)
            pb.PodResources(
                name="nb-ana",
                namespace="research",
                containers=[
                    pb.ContainerResources(name="jupyter", devices=[devices("nvidia.com/gpu", f"{uuid1}::0")])
                ],
            ),
            pb.PodResources(
                name="nb-ben",
                namespace="research",
                containers=[
                    pb.ContainerResources(
                        name="jupyter", devices=[devices("nvidia.com/gpu.shared", f"{uuid1}::1")]
                    )
                ],
            ),
            pb.PodResources(
                name="mig-job",
                namespace="batch",
                containers=[
                    pb.ContainerResources(
                        name="train",
                        devices=[
                            devices("nvidia.com/mig-1g.10gb", "MIG-2ce7a541-c516-5dbc-a76e-26cc100d9b55")
                        ],
                    )
                ],
            ),
            pb.PodResources(
                name="web", namespace="default", containers=[pb.ContainerResources(name="nginx")]
            ),
        ]
    )


class FakeKubelet(api_pb2_grpc.PodResourcesListerServicer):  # type: ignore[misc]
    def __init__(self, response: pb.ListPodResourcesResponse) -> None:
        self.response = response
        self.calls = 0

    def List(self, request: pb.ListPodResourcesRequest, context: object) -> pb.ListPodResourcesResponse:
        self.calls += 1
        return self.response


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # unix socket paths are limited to ~108 bytes: pytest's tmp_path can be longer
    with tempfile.TemporaryDirectory(prefix="gw-kubelet-") as d:
        yield Path(d)


def serve(kubelet: FakeKubelet, path: Path) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(kubelet, server)
    server.add_insecure_port(f"unix://{path}")
    server.start()
    return server


UUID0 = "GPU-11111111-2222-3333-4444-555555555555"
UUID1 = "GPU-66666666-7777-8888-9999-aaaaaaaaaaaa"


def test_list_maps_gpus_to_the_containers_holding_them(socket_dir: Path) -> None:
    sock = socket_dir / "kubelet.sock"
    server = serve(FakeKubelet(allocation(UUID0, UUID1)), sock)
    try:
        found = list_gpu_allocations(str(sock))
    finally:
        server.stop(None)
    assert found == {
        UUID0: (PodRef("serving", "vllm-0", "vllm"),),
        UUID1: (PodRef("research", "nb-ana", "jupyter"), PodRef("research", "nb-ben", "jupyter")),
    }  # the NIC, the MIG instance and the pods without devices are not GPUs of a card


def test_no_kubelet_is_an_error_with_the_reason_and_no_labels(socket_dir: Path) -> None:
    with pytest.raises(OSError, match=r"kubelet pod-resources .*kubelet.sock: UNAVAILABLE"):
        list_gpu_allocations(str(socket_dir / "kubelet.sock"), timeout_s=1)
    pods = PodAllocations(str(socket_dir / "kubelet.sock"), timeout_s=1)
    pods.refresh()
    assert not pods.up and pods.error and "UNAVAILABLE" in pods.error
    assert pods.gpu_labels(UUID0, 0) == {"pod": "", "namespace": "", "container": ""}


def scrape(registry: CollectorRegistry) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append({**s.labels, "value": str(s.value)})
    return out


def test_per_gpu_series_carry_the_single_holder_and_shared_gpus_list_each_sharer(socket_dir: Path) -> None:
    from tui_rack import ManualRack

    rack = ManualRack("2xrtx4090", workload=None)
    try:
        rack.tick(polls=2)
        latest = rack.session.latest()
        assert latest is not None
        uuid0, uuid1 = (g.uuid for g in latest[0].gpus)
        sock = socket_dir / "kubelet.sock"
        kubelet = FakeKubelet(allocation(uuid0, uuid1))
        server = serve(kubelet, sock)
        pods = PodAllocations(str(sock))
        pods.refresh()
        pod_collector = PodCollector(rack.session, pods)
        registry = CollectorRegistry()
        registry.register(
            GpuwatchCollector(rack.session, gpu_labels=pod_collector.gpu_labels, process_metrics=True)
        )
        registry.register(pod_collector)
        metrics = scrape(registry)

        temps = {
            s["gpu"]: (s["pod"], s["namespace"], s["container"])
            for s in metrics["gpuwatch_temperature_celsius"]
        }
        assert temps == {"0": ("vllm-0", "serving", "vllm"), "1": ("", "", "")}
        info = sorted(
            (s["gpu"], s["namespace"], s["pod"], s["container"]) for s in metrics["gpuwatch_gpu_pod_info"]
        )
        assert info == [
            ("0", "serving", "vllm-0", "vllm"),
            ("1", "research", "nb-ana", "jupyter"),
            ("1", "research", "nb-ben", "jupyter"),
        ]
        assert metrics["gpuwatch_kubernetes_pod_resources_up"][0]["value"] == "1.0"
        # a process whose cgroup names no container (the simulator's) carries the GPU holder's
        procs = {(s["gpu"], s["pod"], s["container"]) for s in metrics["gpuwatch_process_memory_used_bytes"]}
        assert ("0", "vllm-0", "vllm") in procs and all(c == "" for g, _, c in procs if g == "1")

        # the kubelet goes away: labels empty (never the pods of the last answer), up 0
        server.stop(None)
        pods.refresh()
        metrics = scrape(registry)
        assert {s["pod"] for s in metrics["gpuwatch_temperature_celsius"]} == {""}
        assert "gpuwatch_gpu_pod_info" not in metrics
        assert metrics["gpuwatch_kubernetes_pod_resources_up"][0]["value"] == "0.0"
    finally:
        rack.close()


@pytest.mark.slow
def test_exporter_kubernetes_flag_end_to_end(socket_dir: Path, tmp_path: Path) -> None:
    """`gpuwatch exporter --kubernetes --kubelet-socket S`: pod labels on the served /metrics."""
    sock = socket_dir / "kubelet.sock"
    kubelet = FakeKubelet(pb.ListPodResourcesResponse())
    server = serve(kubelet, sock)
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path)}
    argv = [sys.executable, "-m", "gpuwatch", "exporter", "--sim", "rtx4090", "--listen", "127.0.0.1:0"]
    log = (tmp_path / "exporter.log").open("w+")
    proc = subprocess.Popen([*argv, "--kubernetes", "--kubelet-socket", str(sock)], stderr=log, env=env)
    try:
        deadline = time.monotonic() + 60
        url = None
        while url is None and time.monotonic() < deadline:
            log.seek(0)
            match = re.search(r"serving (http://\S+) ", log.read())
            url = match.group(1) if match else None
            time.sleep(0.2)
        assert url, "the exporter did not start"
        uuid = None
        while uuid is None and time.monotonic() < deadline:
            body = urllib.request.urlopen(url, timeout=5).read().decode()
            found = re.search(r'gpuwatch_temperature_celsius\{[^}]*uuid="([^"]+)"', body)
            uuid = found.group(1) if found else None
            time.sleep(0.2)
        assert uuid is not None
        kubelet.response = allocation(uuid, "GPU-none")
        # the exporter re-reads every 10 s; wait for the labels to show up
        while time.monotonic() < deadline:
            body = urllib.request.urlopen(url, timeout=5).read().decode()
            if 'pod="vllm-0"' in body:
                break
            time.sleep(0.5)
        temperature = re.search(r"^gpuwatch_temperature_celsius\{([^}]*)\}", body, re.M)
        assert temperature is not None
        assert {'pod="vllm-0"', 'namespace="serving"', 'container="vllm"'} <= set(
            temperature.group(1).split(",")
        )
        assert "gpuwatch_kubernetes_pod_resources_up 1.0" in body
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        server.stop(None)


def test_generated_stubs_match_the_proto_beside_them() -> None:
    """The committed stubs describe exactly api.proto as it is now (no hand edits, no drift): the
    serialized descriptor and the RPC paths are what grpcio-tools makes of it (version stamps aside,
    so a newer grpcio-tools does not fail this)."""
    grpc_tools = pytest.importorskip("grpc_tools.protoc")
    out = Path(tempfile.mkdtemp(prefix="gw-stubs-"))
    rel = "gpuwatch/telemetry/podresources/api.proto"
    code = grpc_tools.main(
        ["protoc", f"-I{ROOT}", f"--python_out={out}", f"--grpc_python_out={out}", str(ROOT / rel)]
    )
    assert code == 0

    def descriptor(path: Path) -> str:
        found = re.search(r"AddSerializedFile\((b'.*?')\)", path.read_text())
        assert found, path
        return found.group(1)

    def rpc_paths(path: Path) -> list[str]:
        return sorted(set(re.findall(r"'(/v1\.PodResourcesLister/\w+)'", path.read_text())))

    committed = ROOT / "gpuwatch/telemetry/podresources"
    fresh = out / "gpuwatch/telemetry/podresources"
    assert descriptor(committed / "api_pb2.py") == descriptor(fresh / "api_pb2.py")
    assert (
        rpc_paths(committed / "api_pb2_grpc.py")
        == rpc_paths(fresh / "api_pb2_grpc.py")
        == ["/v1.PodResourcesLister/List"]
    )


def test_without_the_extra_kubernetes_is_one_line_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gpuwatch.errors import UserError

    monkeypatch.setitem(sys.modules, "grpc", None)  # import grpc -> ImportError
    with pytest.raises(UserError, match=r"pip install 'gpuwatch-roofline\[kubernetes\]'"):
        PodAllocations("/nonexistent.sock")
