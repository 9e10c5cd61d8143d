"""helm lint --strict / helm template over the values matrix, and schema validation of every
rendered object: RayJobs against KubeRay v1.7.0's own CRD, everything else (and every pod
template inside the RayJob) against Kubernetes' schemas with kubernetes-validate --strict."""
from __future__ import annotations

import pytest

from .conftest import K8S_VERSIONS, VALUES_FILES, VALUES_IDS
from .render import CHART_DIR, helm, rayjob_of
from .schemas import as_pod_template_object, crd_errors, k8s_errors, pod_templates, unknown_fields


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=VALUES_IDS)
def test_helm_lint_strict(helm_bin, values_file):
    proc = helm("lint", "--strict", str(CHART_DIR), "--values", str(values_file), helm_bin=helm_bin, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=VALUES_IDS)
def test_render_kinds(render, values_file):
    docs = render(values_file)
    kinds = sorted(d["kind"] for d in docs)
    assert "RayJob" in kinds
    assert set(kinds) <= {"RayJob", "ServiceAccount", "NetworkPolicy", "PodDisruptionBudget", "Pod"}, kinds
    for doc in docs:
        assert "namespace" not in doc["metadata"], "leave the namespace to helm/kubectl -n"


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=VALUES_IDS)
def test_rayjob_matches_kuberay_crd(render, rayjob_crd_schema, values_file):
    rayjob = rayjob_of(render(values_file))
    assert rayjob["apiVersion"] == "ray.io/v1"
    assert crd_errors(rayjob, rayjob_crd_schema) == []
    # The API server would silently drop fields the CRD does not declare: there must be none.
    assert list(unknown_fields(rayjob, rayjob_crd_schema)) == []


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=VALUES_IDS)
def test_rayclusterspec_matches_raycluster_crd(render, raycluster_crd_schema, values_file):
    """The rayClusterSpec becomes a RayCluster: check it against that CRD as well."""
    rayjob = rayjob_of(render(values_file))
    cluster = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "x"},
               "spec": rayjob["spec"]["rayClusterSpec"]}
    assert crd_errors(cluster, raycluster_crd_schema) == []
    assert list(unknown_fields(cluster, raycluster_crd_schema)) == []


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
@pytest.mark.parametrize("values_file", VALUES_FILES, ids=VALUES_IDS)
def test_kubernetes_objects_validate(render, values_file, k8s_version):
    docs = render(values_file)
    checked = 0
    for doc in docs:
        if doc["kind"] == "RayJob":
            for name, template in pod_templates(doc):
                assert k8s_errors(as_pod_template_object(name, template), k8s_version) == [], name
                checked += 1
        else:
            assert k8s_errors(doc, k8s_version) == [], doc["kind"]
            checked += 1
    assert checked >= 3


def test_crd_check_catches_mistakes(render, rayjob_crd_schema):
    """The validators above are not vacuous: they reject a wrong type, a bad enum and a typo."""
    rayjob = rayjob_of(render("defaults"))
    bad = __import__("copy").deepcopy(rayjob)
    bad["spec"]["backoffLimit"] = "two"
    bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replica"] = 3
    bad["spec"]["deletionStrategy"] = {"onSuccess": {"policy": "Explode"}}
    errors = crd_errors(bad, rayjob_crd_schema)
    assert any("backoffLimit" in e for e in errors), errors
    assert any("Explode" in e for e in errors), errors
    assert list(unknown_fields(bad, rayjob_crd_schema)) == ["spec.rayClusterSpec.workerGroupSpecs[0].replica"]
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    broken = __import__("copy").deepcopy(head)
    broken["spec"]["containers"][0]["imagePullPolicy"] = 3
    broken["spec"]["containers"][0]["volumeMount"] = []
    assert k8s_errors(as_pod_template_object("head", broken), K8S_VERSIONS[-1])
