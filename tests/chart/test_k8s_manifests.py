"""The k8s/ directory: the generated plain RayJob, KubeRay kustomizations, kind files, GitOps."""
from __future__ import annotations

import hashlib
import re
import subprocess

import pytest
import yaml

from .conftest import K8S_VERSIONS, VALUES_DIR
from .render import (HELM_OWNERSHIP_LABELS, PLAIN_RUN_ID, RAYJOB_MANIFEST, REPO_ROOT, default_manifest, documents,
                     plain_manifest_documents, rayjob_of, template)
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
    assert kinds == ["NetworkPolicy", "PodDisruptionBudget", "ServiceAccount", "RayJob"]  # no `helm test` Pod (--skip-tests)


def test_plain_rayjob_validates(rayjob_crd_schema):
    rayjob = rayjob_of(documents(RAYJOB_MANIFEST.read_text()))
    assert crd_errors(rayjob, rayjob_crd_schema) == []
    assert list(unknown_fields(rayjob, rayjob_crd_schema)) == []


def _metadata(node):
    """Every metadata map in a manifest (objects and the pod templates inside them)."""
    if isinstance(node, dict):
        if isinstance(node.get("metadata"), dict):
            yield node["metadata"]
        for value in node.values():
            yield from _metadata(value)
    elif isinstance(node, list):
        for item in node:
            yield from _metadata(item)


def test_plain_rayjob_carries_no_helm_ownership():
    """Helm refuses to install over objects that carry another release's ownership metadata
    (helm.sh/chart, app.kubernetes.io/managed-by: Helm, meta.helm.sh/release-*); the plain manifest
    is for kubectl, so it has none, at any level."""
    docs = documents(RAYJOB_MANIFEST.read_text())
    metadata = list(_metadata(docs))
    assert len(metadata) >= 5  # ServiceAccount, RayJob, submitter, head and worker pod templates
    for meta in metadata:
        assert not set(meta.get("labels", {})) & set(HELM_OWNERSHIP_LABELS), meta
        assert "Helm" not in meta.get("labels", {}).values(), meta
        assert not [k for k in meta.get("annotations", {}) if k.startswith("meta.helm.sh/")], meta
    # The chart itself does render them (what the plain render takes away).
    rendered = documents(template([VALUES_DIR / "defaults.yaml"]))
    assert any(set(m.get("labels", {})) & set(HELM_OWNERSHIP_LABELS) for m in _metadata(rendered))


def test_plain_rayjob_reruns_with_a_new_run_id(helm_bin):
    """The documented kubectl re-run, `sed 's/run-0001/run-0002/g' k8s/rayjob.yaml | kubectl apply -f -`,
    yields exactly the chart's render for job.runId=run-0002: a new RayJob name and output prefix."""
    text = RAYJOB_MANIFEST.read_text()
    assert f"sed 's/{PLAIN_RUN_ID}/run-0002/g' k8s/rayjob.yaml | kubectl apply" in text
    rerun = documents(text.replace(PLAIN_RUN_ID, "run-0002"))
    assert rerun == plain_manifest_documents("run-0002", helm_bin=helm_bin)
    rayjob = rayjob_of(rerun)
    assert rayjob["metadata"]["name"] == "batchinfer-run-0002"
    assert "--output s3://batchinfer/predictions/run-0002/" in rayjob["spec"]["entrypoint"]


def test_kuberay_kustomizations_use_vendored_manifests():
    """k8s/kuberay installs from the vendored v1.7.0 manifests only: no remote base, works offline."""
    main = yaml.safe_load((K8S / "kuberay" / "kustomization.yaml").read_text())
    crds = yaml.safe_load((K8S / "kuberay" / "crds" / "kustomization.yaml").read_text())
    for kust in (main, crds):
        assert kust["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and kust["kind"] == "Kustomization"
        assert not [r for r in kust["resources"] if "://" in r]
    assert main["resources"] == ["namespace.yaml", "upstream/default"]
    assert crds["resources"] == ["../upstream/crd"]
    assert main["namespace"] == "kuberay-system"
    kubectl = ensure_tool("kubectl")
    built = documents(subprocess.run([kubectl, "kustomize", str(K8S / "kuberay")], capture_output=True,
                                     text=True, check=True).stdout)
    kinds = sorted(d["kind"] for d in built)
    assert kinds.count("CustomResourceDefinition") == 4 and "Deployment" in kinds
    crd_names = {d["metadata"]["name"] for d in built if d["kind"] == "CustomResourceDefinition"}
    assert crd_names == {"rayclusters.ray.io", "rayjobs.ray.io", "rayservices.ray.io", "raycronjobs.ray.io"}
    operator = next(d for d in built if d["kind"] == "Deployment")
    assert operator["metadata"]["namespace"] == "kuberay-system"
    assert [c["image"] for c in operator["spec"]["template"]["spec"]["containers"]] == ["quay.io/kuberay/operator:v1.7.0"]
    for doc in built:
        if doc["kind"] != "CustomResourceDefinition":
            assert k8s_errors(doc, K8S_VERSIONS[-1]) == []
    # The chart says which KubeRay it targets; the CRDs the tests validate against are that version.
    chart = yaml.safe_load((REPO_ROOT / "helm" / "batchinfer" / "Chart.yaml").read_text())
    assert chart["annotations"]["batchinfer.io/kuberay-version"] == "v1.7.0"


def test_vendored_kuberay_matches_provenance():
    """Every vendored file is byte-for-byte the one recorded in PROVENANCE.md (tag v1.7.0, pinned commit),
    and nothing else is in the directory."""
    upstream = K8S / "kuberay" / "upstream"
    provenance = (upstream / "PROVENANCE.md").read_text()
    assert KUBERAY_COMMIT in provenance
    recorded = dict((path, digest) for digest, path in re.findall(r"^([0-9a-f]{64})  \./(\S+)$", provenance, re.M))
    present = {str(p.relative_to(upstream)): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in upstream.rglob("*") if p.is_file() and p.name != "PROVENANCE.md"}
    assert "LICENSE" in present and "crd/bases/ray.io_rayjobs.yaml" in present
    assert present == recorded


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
    """Only Kueue's spec.suspend is ignored on the RayJob: the Ray autoscaler patches the RayCluster
    KubeRay creates (not the RayJob, and not an object of this Application), so ignore rules for
    worker replicas would do nothing."""
    app = yaml.safe_load((K8S / "gitops" / "argocd-application.yaml").read_text())
    assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
    assert app["spec"]["source"]["path"] == "helm/batchinfer"
    assert app["spec"]["ignoreDifferences"] == [
        {"group": "ray.io", "kind": "RayJob", "jqPathExpressions": [".spec.suspend"]}]
    assert "RespectIgnoreDifferences=true" in app["spec"]["syncPolicy"]["syncOptions"]


def _argocd_render(helm_bin, tmp_path, run_id: str | None = None) -> dict:
    """The Application's RayJob as Argo CD renders it: valuesObject, then parameters (--set)."""
    app = yaml.safe_load((K8S / "gitops" / "argocd-application.yaml").read_text())
    helm_source = app["spec"]["source"]["helm"]
    values = tmp_path / "argo.yaml"
    values.write_text(yaml.safe_dump(helm_source["valuesObject"]))
    params = {p["name"]: p["value"] for p in helm_source["parameters"]}
    if run_id is not None:
        params["job.runId"] = run_id  # what `argocd app set --helm-set job.runId=...` writes
    return rayjob_of(documents(template([values], [f"{k}={v}" for k, v in params.items()],
                                        release=helm_source["releaseName"], helm_bin=helm_bin)))


def test_argocd_nightly_runs_are_new_runs(helm_bin, tmp_path, rayjob_crd_schema):
    """Each night's run id gives a new RayJob and a new output prefix; the same id re-syncs to the
    same RayJob (nothing runs again)."""
    tonight = _argocd_render(helm_bin, tmp_path)
    assert tonight["metadata"]["name"] == "batchinfer-nightly-20261123"
    assert "--output s3://photos/labels/nightly/20261123/" in tonight["spec"]["entrypoint"]
    assert crd_errors(tonight, rayjob_crd_schema) == []
    tomorrow = _argocd_render(helm_bin, tmp_path, "20261124")
    assert tomorrow["metadata"]["name"] == "batchinfer-nightly-20261124"
    assert "--output s3://photos/labels/nightly/20261124/" in tomorrow["spec"]["entrypoint"]
    assert _argocd_render(helm_bin, tmp_path, "20261123") == tonight


def test_flux_nightly_runs_are_new_runs(helm_bin, tmp_path):
    """The HelmRelease takes job.runId from a ConfigMap (valuesFrom targetPath) the scheduler
    rewrites each night; Flux creates that ConfigMap once and never reverts it (ssa: IfNotPresent)."""
    docs = documents((K8S / "gitops" / "flux-helmrelease.yaml").read_text())
    release = next(d for d in docs if d["kind"] == "HelmRelease")
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    assert release["apiVersion"] == "helm.toolkit.fluxcd.io/v2"
    assert release["spec"]["chart"]["spec"]["chart"] == "./helm/batchinfer"
    source = next(ref for ref in release["spec"]["valuesFrom"] if ref["valuesKey"] == "runId")
    assert (source["kind"], source["name"], source["targetPath"]) == ("ConfigMap", config["metadata"]["name"], "job.runId")
    assert config["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/ssa"] == "IfNotPresent"
    assert k8s_errors(config, K8S_VERSIONS[-1]) == []
    values = tmp_path / "flux.yaml"
    values.write_text(yaml.safe_dump(release["spec"]["values"]))
    names = set()
    for run_id in (config["data"][source["valuesKey"]], "20261124"):
        rayjob = rayjob_of(documents(template([values], [f"{source['targetPath']}={run_id}"],
                                              release=release["spec"]["releaseName"], helm_bin=helm_bin)))
        assert rayjob["metadata"]["name"] == f"batchinfer-nightly-{run_id}"
        assert f"--output s3://photos/labels/nightly/{run_id}/" in rayjob["spec"]["entrypoint"]
        names.add(rayjob["metadata"]["name"])
    assert len(names) == 2


def test_flux_drift_detection_never_recreates_a_rayjob(render):
    """Flux helm-controller drift detection skips objects annotated
    helm.toolkit.fluxcd.io/driftDetection: disabled, so a finished (or deleted) RayJob is not
    re-created, which would run it again; the HelmRelease has no ignore rules that do nothing."""
    release = next(d for d in documents((K8S / "gitops" / "flux-helmrelease.yaml").read_text())
                   if d["kind"] == "HelmRelease")
    assert release["spec"]["driftDetection"] == {"mode": "enabled"}
    from .conftest import VALUES_FILES
    for values_file in VALUES_FILES:
        annotations = rayjob_of(render(values_file))["metadata"]["annotations"]
        assert annotations["helm.toolkit.fluxcd.io/driftDetection"] == "disabled", values_file.name


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
