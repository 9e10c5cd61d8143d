"""Security defaults, each checked against the KubeRay v1.7.0 / Ray 2.60 rule it relies on:
Ray token authentication (authOptions), the NetworkPolicy (its selectors against the labels KubeRay
puts on the pods it creates), the autoscaler's own ServiceAccount, and SidecarMode refused under the
restricted Pod Security Standard."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import BIN, LocalRayCluster

from .conftest import VALUES_FILES, VALUES_IDS
from .kuberay_rules import check_name, ray_pods
from .render import HelmError, REPO_ROOT, documents, rayjob_of, template
from .schemas import pod_templates


def submitter_pod_labels(template_labels: dict, rayjob_name: str) -> dict:
    """The submitter Job's pod labels (rayjob_controller.go getSubmitterTemplate): the template's,
    plus originated-from and created-by."""
    return {**template_labels, "ray.io/originated-from-cr-name": rayjob_name,
            "ray.io/originated-from-crd": "RayJob", "app.kubernetes.io/created-by": "kuberay-operator"}


def operator_pod_labels() -> dict:
    """The KubeRay operator pod's labels in the vendored v1.7.0 manifest (k8s/kuberay/upstream)."""
    deployment = yaml.safe_load((REPO_ROOT / "k8s/kuberay/upstream/manager/manager.yaml").read_text())
    return deployment["spec"]["template"]["metadata"]["labels"]


def matches(selector: dict, labels: dict) -> bool:
    """Kubernetes LabelSelector semantics (matchLabels AND every matchExpression)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": lambda: labels.get(key) in values, "NotIn": lambda: labels.get(key) not in values,
              "Exists": lambda: key in labels, "DoesNotExist": lambda: key not in labels}[op]()
        if not ok:
            return False
    return True


def _kinds(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def _pods(docs: list[dict]) -> dict[str, dict]:
    """name -> labels of every pod KubeRay would create from the render (one per worker group)."""
    rayjob = rayjob_of(docs)
    pods = ray_pods(rayjob)
    if "submitterPodTemplate" in rayjob["spec"]:
        labels = rayjob["spec"]["submitterPodTemplate"]["metadata"].get("labels", {})
        pods["submitter"] = submitter_pod_labels(labels, rayjob["metadata"]["name"])
    return pods


# ---- Ray token authentication -------------------------------------------------------------------

@pytest.mark.parametrize("values_file", VALUES_FILES, ids=VALUES_IDS)
def test_token_auth_on_by_default(render, values_file):
    """authOptions.mode token everywhere; KubeRay rejects it below Ray 2.52 (utils/validation.go
    ValidateRayClusterSpec: 'minimum Ray version is 2.52.0'), so the rendered rayVersion must be newer."""
    cluster = rayjob_of(render(values_file))["spec"]["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token"}
    major, minor = (int(p) for p in cluster["rayVersion"].split(".")[:2])
    assert (major, minor) >= (2, 52), cluster["rayVersion"]
    import ray
    assert ray.__version__ == cluster["rayVersion"], "the image's Ray is the one the chart declares"


def test_token_auth_options(render):
    off = rayjob_of(render(None, "rayAuth.mode=disabled"))["spec"]["rayClusterSpec"]["authOptions"]
    assert off == {"mode": "disabled"}
    own = rayjob_of(render(None, "rayAuth.secretName=ray-token"))["spec"]["rayClusterSpec"]["authOptions"]
    assert own == {"mode": "token", "secretName": "ray-token"}


@pytest.mark.slow
def test_token_auth_with_real_ray(tmp_path):
    """Ray 2.60 with the environment KubeRay injects under authOptions.mode token (common/pod.go
    SetContainerTokenAuthEnvVars: RAY_AUTH_MODE=token, RAY_AUTH_TOKEN from the Secret) into the head and
    the submitter: the job API refuses a caller without the token and runs the job for one with it."""
    token = os.urandom(24).hex()
    workdir = Path(f"/tmp/bi-auth-{os.getpid()}")  # short: Ray socket paths must stay under 108 bytes
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    cluster = LocalRayCluster(workdir, head_params=["--num-cpus=1", "--object-store-memory=100000000"],
                              worker_params=[], env={**auth, "HOME": str(tmp_path)})
    try:
        cluster.start(timeout_s=240)
        base = {"PATH": f"{BIN}:{os.environ.get('PATH', '')}", "HOME": str(tmp_path),
                "RAY_USAGE_STATS_ENABLED": "0"}
        submit = [str(BIN / "ray"), "job", "submit", "--address", cluster.dashboard_url, "--",
                  sys.executable, "-c", "print('authorized job ran')"]
        without = subprocess.run(submit, env=base, capture_output=True, text=True, timeout=300)
        assert without.returncode != 0 and "authorized job ran" not in without.stdout
        assert "Token authentication is enabled" in without.stdout + without.stderr, without.stderr[-2000:]
        wrong = subprocess.run(submit, env={**base, **auth, "RAY_AUTH_TOKEN": token[::-1]}, capture_output=True,
                               text=True, timeout=300)
        assert wrong.returncode != 0 and "authorized job ran" not in wrong.stdout, wrong.stdout[-2000:]
        with_token = subprocess.run(submit, env={**base, **auth}, capture_output=True, text=True, timeout=300)
        assert with_token.returncode == 0, (with_token.stdout + with_token.stderr)[-3000:]
        assert "authorized job ran" in with_token.stdout
    finally:
        cluster.stop()


# ---- NetworkPolicy ------------------------------------------------------------------------------

@pytest.mark.parametrize("values_file", VALUES_FILES, ids=VALUES_IDS)
def test_network_policy_selects_the_pods_kuberay_creates(render, helm_bin, values_file):
    docs = render(values_file)
    (policy,) = _kinds(docs, "NetworkPolicy")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    pods = _pods(docs)
    # The policy applies to the head and every worker group, not to the submitter.
    for name, labels in pods.items():
        assert matches(spec["podSelector"], labels) == (name != "submitter"), name
    own_rule, operator_rule = spec["ingress"][:2]
    # Rule 1: any port, from this release's pods: head <-> workers and the submitter.
    assert "ports" not in own_rule
    for name, labels in pods.items():
        assert any(matches(peer["podSelector"], labels) for peer in own_rule["from"]), name
    # ... and from nothing else: not the operator, not the pods of another release or of another chart
    # name in the same release, which it does not cover either.
    other = [*_pods(documents(template([values_file], release="other", helm_bin=helm_bin))).values(),
             *_pods(render(values_file, "nameOverride=other")).values()]
    for labels in [operator_pod_labels(), *other]:
        assert not any(matches(peer["podSelector"], labels) for peer in own_rule["from"]), labels
    for labels in other:
        assert not matches(spec["podSelector"], labels), labels
    # Rule 2: the KubeRay operator (it polls the job through the dashboard: rayjob_controller.go
    # GetJobInfo), on the head's dashboard port only.
    head = rayjob_of(docs)["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    dashboard = next(p["containerPort"] for p in head["ports"] if p["name"] == "dashboard")
    assert operator_rule["ports"] == [{"protocol": "TCP", "port": dashboard}]
    (peer,) = operator_rule["from"]
    assert matches(peer["podSelector"], operator_pod_labels())
    assert peer["namespaceSelector"] == {}  # any namespace by default (operator installs vary)
    assert not any(matches(peer["podSelector"], labels) for labels in pods.values())


def test_network_policy_validation_is_not_vacuous(render):
    """kubernetes-validate --strict (test_chart_render.py checks every rendered object with it) knows
    NetworkPolicy: a misspelt peer field is an error."""
    from .schemas import k8s_errors
    (policy,) = _kinds(render(), "NetworkPolicy")
    assert k8s_errors(policy, "1.37.0") == []
    peer = policy["spec"]["ingress"][0]["from"][0]
    peer["podSelectr"] = peer.pop("podSelector")
    assert k8s_errors(policy, "1.37.0")


def test_network_policy_options(render):
    assert not _kinds(render(None, "networkPolicy.enabled=false"), "NetworkPolicy")
    docs = render(None, "networkPolicy.operator.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=kuberay-system",
                  "networkPolicy.extraIngress[0].ports[0].port=8080")
    (policy,) = _kinds(docs, "NetworkPolicy")
    peer = policy["spec"]["ingress"][1]["from"][0]
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "kuberay-system"}}
    assert policy["spec"]["ingress"][2] == {"ports": [{"port": 8080}]}


# ---- the autoscaler's own ServiceAccount ----------------------------------------------------------

@pytest.mark.parametrize("sets", [(), ("fullnameOverride=" + "a" * 47,), ("serviceAccount.name=team-sa",)],
                         ids=["default", "longest-name", "own-job-sa"])
def test_autoscaler_gets_its_own_service_account(render, sets):
    docs = render("autoscaling", *sets)
    rayjob = rayjob_of(docs)
    accounts = {sa["metadata"]["name"]: sa for sa in _kinds(docs, "ServiceAccount")}
    templates = dict(pod_templates(rayjob))
    head_sa = templates["head"]["spec"]["serviceAccountName"]
    job_sa = templates["worker:gpu"]["spec"]["serviceAccountName"]
    assert head_sa != job_sa and head_sa.endswith("-autoscaler")
    assert templates["submitter"]["spec"]["serviceAccountName"] == job_sa
    assert head_sa in accounts and job_sa in accounts
    # KubeRay sets the head pod's serviceAccountName to CheckName(name) and binds its Role to that
    # name: the chart's name must come out unchanged, or the pod would name a ServiceAccount nobody made.
    assert check_name(head_sa) == head_sa  # KubeRay's rule for the head pod's ServiceAccount name
    # Only the head (autoscaler sidecar) mounts an API token.
    assert templates["head"]["spec"]["automountServiceAccountToken"] is True
    assert templates["worker:gpu"]["spec"]["automountServiceAccountToken"] is False


def test_autoscaler_service_account_options(render):
    # Without autoscaling: one ServiceAccount, the head uses it.
    docs = render()
    (account,) = _kinds(docs, "ServiceAccount")
    names = {t["spec"]["serviceAccountName"] for _, t in pod_templates(rayjob_of(docs))}
    assert names == {account["metadata"]["name"]}
    # The cloud role follows the head (the driver runs there and reads/writes S3).
    docs = render("irsa", "autoscaling.enabled=true", "rayJob.deletionStrategy.onFailure.policy=DeleteCluster")
    role = {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/batchinfer-s3"}
    assert [sa["metadata"]["annotations"] for sa in _kinds(docs, "ServiceAccount")] == [role, role]
    # A ServiceAccount of your own for the head.
    docs = render("autoscaling", "autoscalerServiceAccount.create=false", "autoscalerServiceAccount.name=ray-head")
    assert len(_kinds(docs, "ServiceAccount")) == 1
    assert dict(pod_templates(rayjob_of(docs)))["head"]["spec"]["serviceAccountName"] == "ray-head"


def test_autoscaler_service_account_name_kuberay_would_change_is_refused(helm_bin):
    for name in ("a" * 51, "9head"):
        with pytest.raises(HelmError) as excinfo:
            template([VALUES_FILES[0]], [f"autoscalerServiceAccount.name={name}"], helm_bin=helm_bin)
        assert "autoscalerServiceAccount" in excinfo.value.stderr


# ---- SidecarMode under the restricted Pod Security Standard -------------------------------------

def test_sidecar_mode_refused_under_restricted(helm_bin, render):
    """KubeRay v1.7.0 injects the SidecarMode submitter into the head pod as a bare container
    (common/job.go GetDefaultSubmitterContainer: name, image, resources, no securityContext;
    rayjob_controller.go appends it to the head template), which the restricted level rejects."""
    defaults = REPO_ROOT / "tests/chart/values/defaults.yaml"
    with pytest.raises(HelmError) as excinfo:
        template([defaults], ["rayJob.submissionMode=SidecarMode"], helm_bin=helm_bin)
    assert "/rayJob/submissionMode" in excinfo.value.stderr
    # Below restricted it renders (tests/chart/values/deletion-rules.yaml does so too) ...
    spec = rayjob_of(render(None, "rayJob.submissionMode=SidecarMode", "podSecurityStandard=baseline"))["spec"]
    assert spec["submissionMode"] == "SidecarMode"
    # ... and the other modes render under restricted.
    for mode in ("K8sJobMode", "HTTPMode"):
        assert rayjob_of(render(None, f"rayJob.submissionMode={mode}"))["spec"]["submissionMode"] == mode
