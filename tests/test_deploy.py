"""deploy/: the manifests validate against Kubernetes' schemas (offline), the PrometheusRule is exactly
grafana/rules, the pieces refer to each other correctly, and the systemd unit verifies and is hardened."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuwatch.cli import build_parser
from gpuwatch.exporter.server import DEFAULT_PORT
from gpuwatch.telemetry.containers import HOST_ROOT_ENV
from gpuwatch.telemetry.kubernetes import DEFAULT_SOCKET

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "kubernetes"
UNIT = ROOT / "deploy" / "systemd" / "gpuwatch-exporter.service"
CONTAINERFILE = ROOT / "deploy" / "Containerfile"

sys.path.insert(0, str(ROOT / "scripts"))
import gen_prometheusrule  # noqa: E402


def manifest(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((K8S / name).read_text())
    assert isinstance(doc, dict)
    return doc


# -- the PrometheusRule is grafana/rules, once --------------------------------------------------------


def test_prometheusrule_groups_are_exactly_the_rule_files_groups() -> None:
    rule = manifest("prometheusrule.yaml")
    from_files = [
        g
        for p in sorted((ROOT / "grafana/rules").glob("*.yml"))
        for g in yaml.safe_load(p.read_text())["groups"]
    ]
    assert rule["kind"] == "PrometheusRule" and rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == from_files
    assert sum(len(g["rules"]) for g in from_files) > 20


def test_the_generator_check_passes_now_and_fails_on_a_drifted_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert gen_prometheusrule.main(["--check"]) == 0
    drifted = tmp_path / "prometheusrule.yaml"
    drifted.write_text((K8S / "prometheusrule.yaml").read_text().replace("for: 5m", "for: 6m", 1))
    monkeypatch.setattr(gen_prometheusrule, "TARGET", drifted)
    monkeypatch.setattr(gen_prometheusrule, "ROOT", tmp_path)
    assert gen_prometheusrule.main(["--check"]) == 1


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_prometheusrule_spec_passes_promtool(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": manifest("prometheusrule.yaml")["spec"]["groups"]}))
    result = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# -- schema validation (kubernetes-validate bundles the schemas: no network) ------------------------------


BUILTIN = ("namespace.yaml", "daemonset.yaml", "service.yaml")


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_resources_validate_strictly(name: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(manifest(name), kubernetes_validate.latest_version(), strict=True)


def test_the_validator_does_catch_a_mistake() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    broken = copy.deepcopy(manifest("daemonset.yaml"))
    broken["spec"]["template"]["spec"]["hostPid"] = True  # the field is hostPID
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_crds_get_structural_checks_the_schema_validator_cannot_make() -> None:
    """kubernetes-validate has no schema for Prometheus Operator CRDs: check what would break a scrape."""
    service, monitor, ds = (
        manifest("service.yaml"),
        manifest("servicemonitor.yaml"),
        manifest("daemonset.yaml"),
    )
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "ServiceMonitor"
    # the Service selects the DaemonSet's pods, the ServiceMonitor selects the Service and its port
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["metadata"]["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    assert re.fullmatch(r"\d+s", endpoint["interval"]) and re.fullmatch(r"\d+s", endpoint["scrapeTimeout"])
    container = ds["spec"]["template"]["spec"]["containers"][0]
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container_ports[ports[endpoint["port"]]["targetPort"]] == DEFAULT_PORT
    # the job is the Service's name: the rack view's default --match selects it
    assert re.fullmatch("gpuwatch.*", service["metadata"]["name"])
    # the exporter's pod labels are not overwritten by the operator's target labels
    drops = [r for r in endpoint["relabelings"] if r.get("action") == "labeldrop"]
    assert drops and all(
        re.fullmatch(drops[0]["regex"], label) for label in ("pod", "namespace", "container")
    )
    rule = manifest("prometheusrule.yaml")
    assert rule["metadata"]["namespace"] == monitor["metadata"]["namespace"]


def test_daemonset_runs_the_exporter_with_options_gpuwatch_accepts() -> None:
    spec = manifest("daemonset.yaml")["spec"]["template"]["spec"]
    assert spec["runtimeClassName"] == "nvidia" and spec["hostPID"] is True
    container = spec["containers"][0]
    args = build_parser().parse_args(["exporter", *container["args"]])
    assert args.kubernetes and args.listen == f":{DEFAULT_PORT}"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "utility"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[str(Path(DEFAULT_SOCKET).parent)]["readOnly"]
    assert mounts[f"{env[HOST_ROOT_ENV]}/proc"]["readOnly"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    # no runtime API socket is mounted: containerd's lives in /run/containerd itself
    assert all(
        v.get("hostPath", {}).get("path") not in ("/run/containerd", "/var/run/docker.sock")
        for v in volumes.values()
    )
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"]["drop"] == ["ALL"]


def test_kustomization_lists_every_manifest() -> None:
    listed = set(manifest("kustomization.yaml")["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


# -- the container image --------------------------------------------------------------------------------


def test_containerfile_copies_what_exists_and_runs_the_exporter_on_its_port() -> None:
    text = CONTAINERFILE.read_text()
    for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for source in sources.split():
            assert (ROOT / source).exists(), source
    assert re.search(rf"^EXPOSE {DEFAULT_PORT}$", text, re.M)
    entry = yaml.safe_load(re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    cmd = yaml.safe_load(re.search(r"^CMD (.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert Path(entry[0]).name == "gpuwatch" and entry[1] == "exporter"
    assert build_parser().parse_args([*entry[1:], *cmd]).listen == f":{DEFAULT_PORT}"
    assert "[kubernetes]" in text  # the image can serve --kubernetes, an extra pyproject declares
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {req.split(">")[0] for req in extras["kubernetes"]} == {"grpcio", "protobuf"}
    assert re.search(r"^USER \d+$", text, re.M)  # not root by default


# -- the systemd unit ------------------------------------------------------------------------------------


def unit_for_this_machine(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this environment's gpuwatch (verify checks it exists)."""
    gpuwatch = shutil.which("gpuwatch") or str(Path(sys.executable).with_name("gpuwatch"))
    if not Path(gpuwatch).exists():
        pytest.skip("no gpuwatch console script installed")
    target = tmp_path / UNIT.name
    target.write_text(UNIT.read_text().replace("/usr/local/bin/gpuwatch", gpuwatch))
    return target


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not available")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = unit_for_this_machine(tmp_path)
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    complaints = [line for line in result.stderr.splitlines() if UNIT.name in line]
    assert result.returncode == 0 and complaints == [], result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not available")
def test_systemd_unit_is_hardened(tmp_path: Path) -> None:
    unit = unit_for_this_machine(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True, text=True
    )
    if "--offline" in result.stderr and result.returncode != 0:
        pytest.skip("this systemd-analyze has no --offline security mode")
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0  # systemd calls 0-2 "OK"; a stock service scores 9.6 UNSAFE


def test_systemd_unit_runs_options_gpuwatch_accepts() -> None:
    exec_start = re.search(r"^ExecStart=(\S+) (.+)$", UNIT.read_text(), re.M)
    assert exec_start is not None
    args = build_parser().parse_args(exec_start.group(2).split())
    assert args.command == "exporter" and args.listen == f":{DEFAULT_PORT}"
