"""Container attribution on fabricated /proc trees: each runtime, cgroup v1 and v2, systemd and cgroupfs.

The cgroup lines are the layouts the runtimes write (Docker, Podman rootful and rootless, containerd
under Kubernetes and nerdctl, CRI-O); the runtime state files carry the fields gpuwatch reads from
the real ones (Docker's config.v2.json ``Name``, containers/storage's ``containers.json`` ``names``,
the OCI bundle's ``annotations``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from gpuwatch.exporter.collector import GpuwatchCollector
from gpuwatch.telemetry.containers import Container, ContainerResolver, parse_cgroup

CID = "3f4e9b1c2d7a8e6f5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a"
POD = "0f5b1b6e-2c3d-4e5f-8a9b-0c1d2e3f4a5b"
POD_SYSTEMD = POD.replace("-", "_")

V1_CONTROLLERS = ("memory", "cpu,cpuacct", "pids", "devices", "name=systemd")


def v1(path: str) -> str:
    return "".join(f"{i + 1}:{c}:{path}\n" for i, c in enumerate(V1_CONTROLLERS))


def v2(path: str) -> str:
    return f"0::{path}\n"


LAYOUTS = {
    # runtime, layout -> cgroup path
    ("docker", "cgroupfs"): f"/docker/{CID}",
    ("docker", "systemd"): f"/system.slice/docker-{CID}.scope",
    ("podman", "systemd"): f"/machine.slice/libpod-{CID}.scope",
    ("podman", "systemd-split"): f"/machine.slice/libpod-{CID}.scope/container",
    ("podman", "cgroupfs"): f"/libpod_parent/libpod-{CID}",
    ("containerd", "systemd"): (
        f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_SYSTEMD}.slice/"
        f"cri-containerd-{CID}.scope"
    ),
    ("containerd", "nerdctl-systemd"): f"/system.slice/nerdctl-{CID}.scope",
    ("containerd", "namespace-cgroupfs"): f"/default/{CID}",
    ("cri-o", "systemd"): (
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_SYSTEMD}.slice/crio-{CID}.scope"
    ),
    # a Guaranteed-QoS pod has no QoS slice; dockershim-era nodes named the container docker-<id>.scope
    (
        "docker",
        "kubernetes-guaranteed",
    ): f"/kubepods.slice/kubepods-pod{POD_SYSTEMD}.slice/docker-{CID}.scope",
}


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize(("runtime", "layout"), sorted(LAYOUTS))
def test_every_runtime_and_layout_names_its_container(runtime: str, layout: str, version: str) -> None:
    path = LAYOUTS[(runtime, layout)]
    text = v1(path) if version == "v1" else v2(path)
    found = parse_cgroup(text)
    assert found is not None and (found.runtime, found.id) == (runtime, CID)
    assert found.pod_uid == (POD if "kubepods" in path else None)
    assert found.label == CID[:12]  # no state read: the short id, never a guessed name


def test_kubernetes_cgroupfs_layout_keeps_the_pod_and_leaves_the_runtime_to_the_state() -> None:
    found = parse_cgroup(v1(f"/kubepods/besteffort/pod{POD}/{CID}"))
    assert found == Container(runtime="cri", id=CID, pod_uid=POD)


@pytest.mark.parametrize(
    "text",
    [
        "0::/user.slice/user-1000.slice/session-3.scope\n",  # a login shell
        "0::/\n",
        v1("/"),
        "0::/system.slice/docker.service\n",  # the daemon itself is not in a container
        f"0::/machine.slice/libpod-conmon-{CID}.scope\n",  # Podman's monitor, not the container
        "garbage without colons\n",
        "",
    ],
)
def test_host_processes_and_nonsense_have_no_container(text: str) -> None:
    assert parse_cgroup(text) is None


def test_paths_seen_from_another_cgroup_namespace_still_name_the_container() -> None:
    """gpuwatch in its own container (the DaemonSet) reads the host's /proc from a private cgroup
    namespace: other containers' paths then start with `/..` segments."""
    found = parse_cgroup(v2(f"/../../kubepods-besteffort-pod{POD_SYSTEMD}.slice/cri-containerd-{CID}.scope"))
    assert found == Container(runtime="containerd", id=CID, pod_uid=POD)


def test_v2_line_wins_over_v1_lines_in_hybrid_mode() -> None:
    other = "a" * 64
    text = v1(f"/docker/{other}") + v2(f"/system.slice/docker-{CID}.scope")
    found = parse_cgroup(text)
    assert found is not None and found.id == CID


# -- names from the runtimes' state ------------------------------------------------------------------


def write(root: Path, rel: str, content: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)


def proc(root: Path, pid: int, cgroup: str, start: int = 100) -> None:
    write(root, f"proc/{pid}/cgroup", cgroup)
    # comm with a space and a parenthesis, as a hostile process can name itself
    fields = ["S", *["0"] * 18, str(start), "0"]
    write(root, f"proc/{pid}/stat", f"{pid} (py thon) x) " + " ".join(fields) + "\n")


def test_docker_name_from_config_v2_json(tmp_path: Path) -> None:
    proc(tmp_path, 4242, v2(f"/system.slice/docker-{CID}.scope"))
    write(
        tmp_path, f"var/lib/docker/containers/{CID}/config.v2.json", json.dumps({"ID": CID, "Name": "/vllm"})
    )
    found = ContainerResolver(tmp_path).lookup(4242)
    assert found == Container("docker", CID, "vllm")
    assert found.label == "vllm"


def test_docker_under_kubernetes_names_the_kubernetes_container(tmp_path: Path) -> None:
    proc(tmp_path, 7, v1(f"/kubepods/burstable/pod{POD}/{CID}"))
    config = {
        "Name": "/k8s_trainer_job-abc",
        "Config": {"Labels": {"io.kubernetes.container.name": "trainer"}},
    }
    write(tmp_path, f"var/lib/docker/containers/{CID}/config.v2.json", json.dumps(config))
    assert ContainerResolver(tmp_path).lookup(7) == Container("docker", CID, "trainer", POD)


def test_podman_rootful_and_rootless_names_from_containers_json(tmp_path: Path) -> None:
    entry = [{"id": "b" * 64, "names": ["other"]}, {"id": CID, "names": ["llama-server"], "image": "x"}]
    write(tmp_path, "var/lib/containers/storage/overlay-containers/containers.json", json.dumps(entry))
    proc(tmp_path, 10, v2(f"/machine.slice/libpod-{CID}.scope/container"))
    assert ContainerResolver(tmp_path).lookup(10) == Container("podman", CID, "llama-server")

    rootless = tmp_path / "rootless"
    write(rootless, "etc/passwd", "root:x:0:0::/root:/bin/sh\nana:x:1000:1000::/home/ana:/bin/bash\n")
    entry = [{"id": CID, "names": ["notebook"]}]
    write(
        rootless,
        "home/ana/.local/share/containers/storage/overlay-containers/containers.json",
        json.dumps(entry),
    )
    path = f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope"
    proc(rootless, 11, v2(path))
    assert ContainerResolver(rootless).lookup(11) == Container("podman", CID, "notebook")


def test_containerd_and_crio_names_from_oci_annotations(tmp_path: Path) -> None:
    notes = {
        "annotations": {
            "io.kubernetes.cri.container-name": "inference",
            "io.kubernetes.cri.sandbox-name": "p",
        }
    }
    write(
        tmp_path, f"run/containerd/io.containerd.runtime.v2.task/k8s.io/{CID}/config.json", json.dumps(notes)
    )
    proc(tmp_path, 20, v2(LAYOUTS[("containerd", "systemd")]))
    assert ContainerResolver(tmp_path).lookup(20) == Container("containerd", CID, "inference", POD)
    # the cgroupfs kubepods layout says only "a pod's container": the state says containerd
    proc(tmp_path, 21, v1(f"/kubepods/besteffort/pod{POD}/{CID}"))
    assert ContainerResolver(tmp_path).lookup(21) == Container("containerd", CID, "inference", POD)

    crio = tmp_path / "crio"
    notes = {"annotations": {"io.kubernetes.container.name": "embedder"}}
    write(crio, f"run/containers/storage/overlay-containers/{CID}/userdata/config.json", json.dumps(notes))
    proc(crio, 30, v2(LAYOUTS[("cri-o", "systemd")]))
    assert ContainerResolver(crio).lookup(30) == Container("cri-o", CID, "embedder", POD)


def test_unreadable_or_hostile_state_leaves_the_short_id(tmp_path: Path) -> None:
    proc(tmp_path, 40, v2(f"/docker/{CID}"))
    resolver = ContainerResolver(tmp_path)
    assert resolver.lookup(40) == Container("docker", CID)  # no state at all
    write(tmp_path, f"var/lib/docker/containers/{CID}/config.v2.json", "{not json")
    assert ContainerResolver(tmp_path).lookup(40) == Container("docker", CID)
    write(
        tmp_path,
        f"var/lib/docker/containers/{CID}/config.v2.json",
        json.dumps({"Name": "/\x1b[2J" + "x" * 500}),
    )
    name = ContainerResolver(tmp_path).lookup(40)
    assert name is not None and name.name == "[2J" + "x" * 125  # no escape codes, at most 128 characters
    assert resolver.lookup(99999) is None  # the process is gone


def test_a_reused_pid_is_looked_up_again(tmp_path: Path) -> None:
    resolver = ContainerResolver(tmp_path)
    proc(tmp_path, 50, v2(f"/docker/{CID}"), start=100)
    assert resolver.lookup(50) == Container("docker", CID)
    proc(tmp_path, 50, v2("/user.slice/session-1.scope"), start=200)  # same PID, a new process
    assert resolver.lookup(50) is None


# -- through the reader, the process table's data and the exporter ------------------------------------


def test_the_reader_attributes_nvml_processes_and_the_exporter_labels_them(tmp_path: Path) -> None:
    from tui_rack import ManualRack

    proc(tmp_path, 4242, v2(f"/system.slice/docker-{CID}.scope"))
    write(tmp_path, f"var/lib/docker/containers/{CID}/config.v2.json", json.dumps({"Name": "/vllm"}))
    rack = ManualRack("rtx4090")
    try:
        assert rack.poller.reader is not None
        rack.poller.reader.containers = ContainerResolver(tmp_path)
        rack.tick(polls=3)
        latest = rack.session.latest()
        assert latest is not None
        procs = latest[0].gpus[0].processes
        assert procs and {(p.pid, p.container, p.container_runtime) for p in procs} == {
            (4242, "vllm", "docker")
        }

        registry = CollectorRegistry()
        registry.register(GpuwatchCollector(rack.session, process_metrics=True))
        labels = [
            s.labels
            for fam in text_string_to_metric_families(generate_latest(registry).decode())
            for s in fam.samples
            if s.name == "gpuwatch_process_memory_used_bytes"
        ]
        assert [(lab["pid"], lab["container"]) for lab in labels] == [("4242", "vllm")]
    finally:
        rack.close()


async def test_the_process_table_shows_the_container_beside_the_process(tmp_path: Path) -> None:
    from textual.widgets import DataTable
    from tui_rack import ManualRack

    from gpuwatch.tui.app import GpuwatchApp

    proc(tmp_path, 4242, v2(f"/machine.slice/libpod-{CID}.scope"))
    entry = [{"id": CID, "names": ["llama-server"]}]
    write(tmp_path, "var/lib/containers/storage/overlay-containers/containers.json", json.dumps(entry))
    rack = ManualRack("rtx4090")
    try:
        assert rack.poller.reader is not None
        rack.poller.reader.containers = ContainerResolver(tmp_path)
        app = GpuwatchApp(rack.session)
        async with app.run_test(size=(120, 40)) as pilot:
            rack.tick(1.0, polls=2)
            await pilot.pause()
            table = app.query_one("#process-table", DataTable)
            rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
            # columns: GPU, PID, user, process (container first), GPU memory, SM
            assert rows and rows[0][1] == "4242" and rows[0][3].startswith("(llama-server) ")
            await pilot.pause(0.5)  # let the lazily mounted panes finish mounting before the app exits
    finally:
        rack.close()
