"""The k8s/ directory: the generated plain RayJob, KubeRay kustomizations, kind files, GitOps."""
from __future__ import annotations

import subprocess

import pytest
import yaml

from .conftest import K8S_VERSIONS
from .render import RAYJOB_MANIFEST, REPO_ROOT, default_manifest, documents, rayjob_of, template
from .schemas import as_pod_template_object, crd_errors, k8s_errors, pod_templates, unknown_fields
from .tools import ensure_lupa, ensure_tool

K8S = REPO_ROOT / "k8s"
KUBERAY_COMMIT = "59d663aeec13760646da3db9c1cf8cfe883e30b7"


def test_plain_rayjob_equals_chart_default_render(helm_bin):
    want = default_manifest(helm_bin=helm_bin)
    have = RAYJOB_MANIFEST.read_text()
    assert documents(have) == documents(want), "k8s/rayjob.yaml is stale: run python -m tests.chart.render"
    assert have.startswith("# GENERATED FILE")
    kinds = [d["kind"] for d in documents(have)]
    assert kinds == ["ServiceAccount", "RayJob"]


def test_plain_rayjob_validates(rayjob_crd_schema):
    rayjob = rayjob_of(documents(RAYJOB_MANIFEST.read_text()))
    assert crd_errors(rayjob, rayjob_crd_schema) == []
    assert list(unknown_fields(rayjob, rayjob_crd_schema)) == []


def test_kuberay_kustomizations_pinned():
    main = yaml.safe_load((K8S / "kuberay" / "kustomization.yaml").read_text())
    crds = yaml.safe_load((K8S / "kuberay" / "crds" / "kustomization.yaml").read_text())
    for kust in (main, crds):
        assert kust["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and kust["kind"] == "Kustomization"
    remote = [r for r in main["resources"] if r.startswith("https://")]
    assert remote == [f"https://github.com/ray-project/kuberay/ray-operator/config/default?ref={KUBERAY_COMMIT}"]
    assert crds["resources"] == [f"https://github.com/ray-project/kuberay/ray-operator/config/crd?ref={KUBERAY_COMMIT}"]
    assert main["namespace"] == "kuberay-system"
    # The local part of it is a valid Namespace.
    for local in (r for r in main["resources"] if not r.startswith("https://")):
        for doc in documents((K8S / "kuberay" / local).read_text()):
            assert k8s_errors(doc, K8S_VERSIONS[-1]) == []
    # The chart says which KubeRay it targets; the CRDs the tests validate against are that version.
    chart = yaml.safe_load((REPO_ROOT / "helm" / "batchinfer" / "Chart.yaml").read_text())
    assert chart["annotations"]["batchinfer.io/kuberay-version"] == "v1.7.0"
    assert "v1.7.0" in (K8S / "kuberay" / "kustomization.yaml").read_text()


@pytest.fixture(scope="module")
def kind_manifests() -> list[dict]:
    """`kubectl kustomize k8s/kind` (offline: only local files)."""
    kubectl = ensure_tool("kubectl")
    out = subprocess.run([kubectl, "kustomize", str(K8S / "kind")], capture_output=True, text=True, check=True).stdout
    return documents(out)


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_kind_s3_server_manifests_validate(kind_manifests, k8s_version):
    assert sorted(d["kind"] for d in kind_manifests) == ["Deployment", "Service"]
    for doc in kind_manifests:
        assert k8s_errors(doc, k8s_version) == [], doc["kind"]


def test_kind_values_render_and_match_kind_setup(helm_bin, rayjob_crd_schema, kind_manifests):
    values = K8S / "kind" / "values-cpu.yaml"
    rayjob = rayjob_of(documents(template([values], helm_bin=helm_bin)))
    assert crd_errors(rayjob, rayjob_crd_schema) == []
    for name, tpl in pod_templates(rayjob):
        assert k8s_errors(as_pod_template_object(name, tpl), K8S_VERSIONS[-1]) == []
        container = tpl["spec"]["containers"][0]
        assert container["image"] == "batchinfer:0.1.0-cpu" and container["imagePullPolicy"] == "Never"
        assert "nvidia.com/gpu" not in repr(container.get("resources"))
    # The S3 endpoint in the values is the in-cluster Service the kustomization creates.
    service = next(d for d in kind_manifests if d["kind"] == "Service")
    port = service["spec"]["ports"][0]["port"]
    env = {e["name"]: e for e in rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AWS_ENDPOINT_URL"]["value"] == f"http://{service['metadata']['name']}:{port}"
    # ... and the credentials Secret is the one e2e.sh creates.
    e2e = (K8S / "kind" / "e2e.sh").read_text()
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "batchinfer-s3"
    assert "create secret generic batchinfer-s3" in e2e
    assert "seaweedfs-s3-config" in e2e and "seaweedfs-s3-config" in (K8S / "kind" / "seaweedfs.yaml").read_text()
    kind_cfg = yaml.safe_load((K8S / "kind" / "kind-config.yaml").read_text())
    assert kind_cfg["kind"] == "Cluster" and kind_cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [n["role"] for n in kind_cfg["nodes"]].count("worker") >= 1


@pytest.mark.parametrize("script", ["up.sh", "e2e.sh", "down.sh"])
def test_kind_scripts_parse(script):
    path = K8S / "kind" / script
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert path.read_text().startswith("#!/usr/bin/env bash\n")


def test_argocd_application():
    app = yaml.safe_load((K8S / "gitops" / "argocd-application.yaml").read_text())
    assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
    assert app["spec"]["source"]["path"] == "helm/batchinfer"
    ignores = {(i["group"], i["kind"]): i["jqPathExpressions"] for i in app["spec"]["ignoreDifferences"]}
    assert ".spec.rayClusterSpec.workerGroupSpecs[].replicas" in ignores[("ray.io", "RayJob")]
    assert ".spec.workerGroupSpecs[].replicas" in ignores[("ray.io", "RayCluster")]
    assert "RespectIgnoreDifferences=true" in app["spec"]["syncPolicy"]["syncOptions"]


def test_argocd_application_values_render(helm_bin, tmp_path, rayjob_crd_schema):
    """The values embedded in the Application are valid chart values."""
    app = yaml.safe_load((K8S / "gitops" / "argocd-application.yaml").read_text())
    values = tmp_path / "argo.yaml"
    values.write_text(yaml.safe_dump(app["spec"]["source"]["helm"]["valuesObject"]))
    rayjob = rayjob_of(documents(template([values], release=app["spec"]["source"]["helm"]["releaseName"],
                                          helm_bin=helm_bin)))
    assert rayjob["metadata"]["name"] == "batchinfer-nightly"
    assert crd_errors(rayjob, rayjob_crd_schema) == []


def test_flux_helmrelease_values_render(helm_bin, tmp_path):
    docs = documents((K8S / "gitops" / "flux-helmrelease.yaml").read_text())
    release = next(d for d in docs if d["kind"] == "HelmRelease")
    assert release["apiVersion"] == "helm.toolkit.fluxcd.io/v2"
    assert release["spec"]["chart"]["spec"]["chart"] == "./helm/batchinfer"
    values = tmp_path / "flux.yaml"
    values.write_text(yaml.safe_dump(release["spec"]["values"]))
    assert rayjob_of(documents(template([values], helm_bin=helm_bin)))


def test_argocd_cm_patch_carries_the_health_check():
    cm = yaml.safe_load((K8S / "gitops" / "argocd-cm-patch.yaml").read_text())
    lua = (K8S / "gitops" / "rayjob-health.lua").read_text()
    assert cm["data"]["resource.customizations.health.ray.io_RayJob"] == lua


HEALTH_CASES = [
    (None, "Progressing"),
    ({}, "Progressing"),
    ({"jobDeploymentStatus": "Initializing"}, "Progressing"),
    ({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "rayClusterName": "batchinfer-x7k2p"}, "Progressing"),
    ({"jobDeploymentStatus": "Retrying", "failed": 1}, "Progressing"),
    ({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, "Healthy"),
    ({"jobDeploymentStatus": "Complete", "jobStatus": "FAILED"}, "Degraded"),
    ({"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"}, "Degraded"),
    ({"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "AppFailed", "message": "exit 2"}, "Degraded"),
    ({"jobDeploymentStatus": "ValidationFailed", "message": "bad spec"}, "Degraded"),
    ({"jobDeploymentStatus": "Suspended"}, "Suspended"),
    ({"jobDeploymentStatus": "Suspending"}, "Progressing"),
]


@pytest.mark.parametrize("status,expected", HEALTH_CASES, ids=[str(c[0]) for c in HEALTH_CASES])
def test_rayjob_health_check_lua(status, expected):
    """Run the Lua health check (as Argo CD does: a global `obj`) on KubeRay status examples."""
    lupa = ensure_lupa()
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    obj = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "batchinfer"}}
    if status is not None:
        obj["status"] = status

    def to_lua(value):
        if isinstance(value, dict):
            return runtime.table_from({k: to_lua(v) for k, v in value.items()})
        return value

    runtime.globals().obj = to_lua(obj)
    lua = (K8S / "gitops" / "rayjob-health.lua").read_text()
    result = runtime.execute(lua)
    assert result["status"] == expected
    assert isinstance(result["message"], str) and result["message"]
    if status and status.get("message"):
        assert status["message"] in result["message"]
    if status and status.get("reason"):
        assert status["reason"] in result["message"]
