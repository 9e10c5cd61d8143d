"""The kind path (k8s/kind): every tool checked before anything starts, the node image pinned to the
documented kind release, and the CPU values sized for a 4-core / 16 GiB laptop."""
from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from .conftest import K8S_VERSIONS
from .render import REPO_ROOT, documents, rayjob_of, template
from .schemas import pod_templates

KIND = REPO_ROOT / "k8s" / "kind"
# What each script runs, and so must find on PATH before it starts.
SCRIPT_TOOLS = {"up.sh": ["docker", "kind", "kubectl"],
                "e2e.sh": ["docker", "kind", "kubectl", "helm", "openssl", "make"],
                "down.sh": ["kind"]}


def _require_sh() -> dict[str, str]:
    text = (KIND / "require.sh").read_text()
    return dict(re.findall(r'^(KIND_VERSION|KIND_NODE_IMAGE)="([^"]+)"', text, re.M))


@pytest.mark.parametrize("script,missing", [(s, t) for s, tools in SCRIPT_TOOLS.items() for t in tools],
                         ids=[f"{s}-without-{t}" for s, tools in SCRIPT_TOOLS.items() for t in tools])
def test_missing_tool_stops_the_script_with_one_line(tmp_path, script, missing):
    """Run the real script with a PATH that holds every tool it needs but one. The others are
    stand-ins that fail if called (kind and docker cannot run here): the script must stop at the check,
    before it calls any of them, with one line that names the missing tool and how to get it."""
    tools = SCRIPT_TOOLS[script]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in tools:
        if tool != missing:
            stub = bindir / tool
            stub.write_text("#!/bin/sh\necho \"stand-in $0 was called\" >&2\nexit 99\n")
            stub.chmod(0o755)
    proc = subprocess.run(["/bin/bash", str(KIND / script)], env={"PATH": str(bindir), "HOME": str(tmp_path)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"{script}: '{missing}' is not on PATH: ") and "install" in line


def test_scripts_check_every_tool_they_call():
    """Each script's require_tools line lists at least the tools SCRIPT_TOOLS says it runs."""
    for script, tools in SCRIPT_TOOLS.items():
        text = (KIND / script).read_text()
        (line,) = re.findall(r"^require_tools (.+)$", text, re.M)
        named = [t.strip('"').replace("$HELM", "helm") for t in line.split()]
        assert named == tools, (script, named)
        before = text[:text.index("\nrequire_tools ")].splitlines()
        commands = [ln.split()[0] for ln in before if ln.strip() and not ln.lstrip().startswith("#")]
        assert not set(commands) & set(tools), f"{script} runs a tool before checking for it"


def test_kind_node_image_pinned_to_documented_release():
    pinned = _require_sh()
    assert re.fullmatch(r"v\d+\.\d+\.\d+", pinned["KIND_VERSION"])
    cfg = yaml.safe_load((KIND / "kind-config.yaml").read_text())
    images = {node.get("image") for node in cfg["nodes"]}
    assert images == {pinned["KIND_NODE_IMAGE"]}, "every node runs the pinned image"
    assert pinned["KIND_VERSION"] in (KIND / "kind-config.yaml").read_text()
    assert pinned["KIND_VERSION"] in (REPO_ROOT / "docs" / "kubernetes.md").read_text()
    assert pinned["KIND_NODE_IMAGE"] in (REPO_ROOT / "docs" / "kubernetes.md").read_text()
    # The node's Kubernetes is one the chart and these tests cover.
    node_version = pinned["KIND_NODE_IMAGE"].rsplit(":v", 1)[1]
    assert tuple(map(int, node_version.split("."))) <= tuple(map(int, K8S_VERSIONS[-1].split(".")))
    chart = yaml.safe_load((REPO_ROOT / "helm/batchinfer/Chart.yaml").read_text())
    assert chart["kubeVersion"] == ">=1.25.0-0" and tuple(map(int, node_version.split(".")[:2])) >= (1, 25)


def _cpu(quantity) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _bytes(quantity) -> float:
    text = str(quantity)
    for suffix, factor in _BINARY.items():
        if text.endswith(suffix):
            return float(text[:-2]) * factor
    return float(text)


# The laptop: 4 cores, 16 GiB. What kind itself requests there (kubeadm's static pods and kind's
# addons, kind v0.33.0 defaults): kube-apiserver 250m, kube-controller-manager 200m, kube-scheduler
# 100m, etcd 100m + 100Mi, CoreDNS 2 x (100m + 70Mi), kindnet 100m + 50Mi on each of the 3 nodes.
LAPTOP_CPU, LAPTOP_MEMORY = 4.0, 16 * 2**30
KIND_SYSTEM_CPU = 0.25 + 0.2 + 0.1 + 0.1 + 2 * 0.1 + 3 * 0.1
KIND_SYSTEM_MEMORY = (100 + 2 * 70 + 3 * 50) * 2**20
OS_AND_DOCKER_MEMORY = 4 * 2**30  # left to the laptop itself and dockerd


def test_kind_values_fit_a_4_core_16_gib_laptop(helm_bin):
    """Everything the kind run starts at once (the RayJob's head, workers and submitter, the
    autoscaler when on, SeaweedFS, the KubeRay operator) requests no more than the laptop has left
    after kind's own pods; and every pod fits one kind node (each sees all 4 cores)."""
    docs = documents(template([KIND / "values-cpu.yaml"], helm_bin=helm_bin))
    rayjob = rayjob_of(docs)
    cluster = rayjob["spec"]["rayClusterSpec"]
    requests: list[tuple[str, dict]] = []
    for name, tpl in pod_templates(rayjob):
        copies = 1
        if name.startswith("worker:"):
            group = next(g for g in cluster["workerGroupSpecs"] if g["groupName"] == name.split(":", 1)[1])
            copies = group["maxReplicas"]  # the most the group can grow to
        for container in tpl["spec"]["containers"]:
            requests += [(name, container["resources"]["requests"])] * copies
    if cluster.get("enableInTreeAutoscaling"):
        requests.append(("autoscaler", cluster["autoscalerOptions"]["resources"]["requests"]))
    for path in (KIND / "seaweedfs.yaml", REPO_ROOT / "k8s/kuberay/upstream/manager/manager.yaml"):
        deployment = next(d for d in documents(path.read_text()) if d["kind"] == "Deployment")
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            requests.append((path.name, container["resources"]["requests"]))
    cpu = sum(_cpu(r["cpu"]) for _, r in requests)
    memory = sum(_bytes(r["memory"]) for _, r in requests)
    assert cpu <= LAPTOP_CPU - KIND_SYSTEM_CPU, (cpu, requests)
    assert memory <= LAPTOP_MEMORY - KIND_SYSTEM_MEMORY - OS_AND_DOCKER_MEMORY, (memory / 2**30, requests)
    for name, r in requests:
        assert _cpu(r["cpu"]) <= LAPTOP_CPU and _bytes(r["memory"]) <= LAPTOP_MEMORY, name
    for group in cluster["workerGroupSpecs"]:
        assert "nvidia.com/gpu" not in group["template"]["spec"]["containers"][0]["resources"]["limits"]
