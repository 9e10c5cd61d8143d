"""Every run ends clean (issue #31): each phase of a RayJob has a bound and every end deletes the
cluster; the run identity follows what changes the run; a failed run re-runs with one command on
every path; the driver's pods are protected from node disruption; NOTES' and `helm test`'s commands
do what they say; the chart works with the oldest Helm it claims.

Each rule names the KubeRay v1.7.0 source it follows (ray-operator/...); the transcriptions are in
tests/chart/kuberay_rules.py.
"""
from __future__ import annotations

import json
import re
import shlex

import jsonschema
import pytest
import yaml

from .conftest import VALUES_DIR, VALUES_FILES, VALUES_IDS
from .kuberay_rules import (TERMINAL_STATES, auth_secret, check_name, phase_bounds, ray_pods, rayjob_cluster_name,
                            rayjob_validation_errors, selects, submitter_pod_labels, terminal_deletions)
from .render import CHART_DIR, REPO_ROOT, documents, helm, rayjob_of, template
from .tools import ensure_helm3

KIND_VALUES = REPO_ROOT / "k8s" / "kind" / "values-cpu.yaml"
ALL_VALUES = VALUES_FILES + [KIND_VALUES]
ALL_IDS = VALUES_IDS + ["kind-values-cpu"]
FLUX = REPO_ROOT / "k8s" / "gitops" / "flux-helmrelease.yaml"
# A GPU node from zero: node start, NVIDIA driver and device plugin, a ~10 GB CUDA image pull.
COLD_GPU_NODE_S = 1800


def _argv(rayjob: dict) -> list[str]:
    return shlex.split(rayjob["spec"]["entrypoint"])


def _node_wait(rayjob: dict) -> float:
    argv = _argv(rayjob)
    return float(argv[argv.index("--node-wait") + 1]) if "--node-wait" in argv else 600.0  # the CLI's default


# --- item 2: every phase has a bound, every end deletes the cluster ----------------------------------

@pytest.mark.parametrize("values_file", ALL_VALUES, ids=ALL_IDS)
def test_every_phase_has_a_bound_and_ends_with_the_cluster_deleted(render, values_file):
    """rayjob_controller.go Reconcile: Initializing checks checkActiveDeadlineAndUpdateStatusIfNeeded and
    checkPreRunningDeadlineAndUpdateStatusIfNeeded, Waiting the pre-running one, Running the active one
    only; a RayJob whose submitter Job exists is Running (createK8sJobIfNeed) even if its pod never
    starts, and createNewK8sJob gives that Job only a backoffLimit. So every phase, a submitter that
    never starts included, is bounded only if activeDeadlineSeconds is set; a RayJob failed by any
    deadline is terminal and handleShutdownAfterJobFinishes deletes its cluster (terminal_deletions)."""
    rayjob = rayjob_of(render(values_file))
    spec = rayjob["spec"]
    bounds = phase_bounds(spec)
    assert set(bounds) == {"Initializing", "Waiting", "Running"}, values_file.name
    # The whole-run bound holds cluster start and the driver's GPU wait (--node-wait), with the run on top.
    assert spec["activeDeadlineSeconds"] > spec["preRunningDeadlineSeconds"] + _node_wait(rayjob)
    if spec["submissionMode"] == "K8sJobMode":
        assert spec["submitterConfig"]["backoffLimit"] >= 0  # a submitter that keeps failing fails the RayJob
    legacy = "onSuccess" in (spec.get("deletionStrategy") or {})
    for state in ("pre-running-deadline", "active-deadline"):
        # handleLegacyDeletionPolicy applies onSuccess/onFailure to SUCCEEDED/FAILED only: the opt-in's
        # documented gap (values.yaml rayJob.deletionStrategy); every other values file deletes.
        assert bool(terminal_deletions(spec, *TERMINAL_STATES[state])) != legacy, f"{values_file.name}: {state}"
    assert rayjob_validation_errors(rayjob) == []


def test_default_bounds_fit_a_cold_gpu_node(render):
    """The defaults (values.yaml, chart README): 1800 s for the cluster to run the job
    (preRunningDeadlineSeconds) and 1800 s for the driver's wait for a GPU node scaled from zero
    (job.nodeWait -> --node-wait, pipeline._wait_for_gpu_node), the GPU budget both ways; 24 h in all."""
    rayjob = rayjob_of(render())
    spec = rayjob["spec"]
    assert spec["preRunningDeadlineSeconds"] == COLD_GPU_NODE_S
    assert _node_wait(rayjob) == COLD_GPU_NODE_S
    assert spec["activeDeadlineSeconds"] == 86400
    assert spec["submitterConfig"] == {"backoffLimit": 2}


def test_deadlines_and_the_gpu_wait_are_values(render):
    """Each bound is a value: 0 turns a deadline off (KubeRay: no deadline when unset) and leaves
    --node-wait to batchinfer's default; a set value is passed as is."""
    spec = rayjob_of(render(None, "rayJob.activeDeadlineSeconds=0", "rayJob.preRunningDeadlineSeconds=0"))["spec"]
    assert "activeDeadlineSeconds" not in spec and "preRunningDeadlineSeconds" not in spec
    assert phase_bounds(spec) == {}
    short = rayjob_of(render(None, "rayJob.activeDeadlineSeconds=120", "rayJob.preRunningDeadlineSeconds=60",
                             "job.nodeWait=30"))
    assert phase_bounds(short["spec"]) == {"Initializing": 60, "Waiting": 60, "Running": 120}
    assert _node_wait(short) == 30
    assert "--node-wait" not in _argv(rayjob_of(render(None, "job.nodeWait=0")))


# --- item 3: the driver's GPU wait is a flag the chart sets -------------------------------------------

def test_node_wait_reaches_the_drivers_wait(render):
    """job.nodeWait becomes `--node-wait`, which the CLI parses into JobConfig.node_wait_s, the timeout
    of pipeline._wait_for_gpu_node / _wait_for_cpu_node (no constant left)."""
    from batchinfer.cli import build_parser
    import batchinfer.pipeline as pipeline

    argv = _argv(rayjob_of(render(None, "job.nodeWait=2400")))
    assert vars(build_parser().parse_args(argv[1:]))["node_wait_s"] == 2400
    assert not hasattr(pipeline, "NODE_WAIT_S")


# --- item 4: the run identity follows what changes the run, and only that ------------------------------

RUN_CHANGES = ["s3.endpoint=http://minio.storage:9000", "s3.region=eu-west-1", "s3.existingSecret.name=other",
               "image.repository=registry.example.com/other/batchinfer", "image.tag=0.1.1",
               "json:extraEnv=[{\"name\":\"HF_HOME\",\"value\":\"/tmp/hf\"}]", "head.memory=16Gi",
               "workerDefaults.memory=20Gi", "workerDefaults.gpus=2", "workerGroups.gpu.replicas=2",
               "json:workerGroups.l4={\"gpus\":1}",
               "rayVersion=2.61.0", "job.topK=3", "job.nodeWait=2400", "cpuFallback.enabled=true"]
SAME_RUN = ["commonLabels.team=vision", "head.annotations.note=x", "json:head.nodeSelector={\"pool\":\"cpu\"}",
            "rayJob.activeDeadlineSeconds=172800", "rayJob.preRunningDeadlineSeconds=2400",
            "json:rayJob.submitter.tolerations=[{\"key\":\"spot\",\"operator\":\"Exists\"}]", "rayJob.backoffLimit=1",
            "networkPolicy.enabled=false", "helmTest.enabled=false", "disruptionProtection.annotations=false",
            "serviceAccount.annotations.a=b", "workerDefaults.priorityClassName=batch",
            # a group value set to its workerDefaults value: the same resources, the same run
            "json:workerGroups.gpu={\"replicas\":1,\"gpus\":1,\"memory\":\"24Gi\"}"]


@pytest.mark.parametrize("change", RUN_CHANGES)
def test_what_changes_the_run_is_a_new_run(render, change):
    """rayjob_controller.go: a RayJob's spec changes are ignored once it runs and Complete/Failed are
    terminal (Reconcile returns for them), so anything that changes what the run does (job, s3, image,
    extraEnv, resources, Ray version) must be a new RayJob name, or the fix of a failed run runs nothing."""
    base, other = rayjob_of(render()), rayjob_of(render(None, change))
    assert other["metadata"]["name"] != base["metadata"]["name"]
    run_id = other["metadata"]["labels"]["batchinfer.io/run-id"]
    assert f"/{run_id}/" in other["spec"]["entrypoint"]


@pytest.mark.parametrize("change", SAME_RUN)
def test_what_does_not_change_the_run_keeps_its_identity(render, change):
    """... and only that: labels, annotations, placement, lifecycle and deadlines, the NetworkPolicy and
    the test hook keep the name, so a release that changes only them re-runs nothing."""
    assert rayjob_of(render(None, change))["metadata"]["name"] == rayjob_of(render())["metadata"]["name"]


def test_rerun_is_a_new_rayjob_for_the_same_run(helm_bin, render):
    """`rerun`: a new RayJob name (KubeRay runs a new RayJob; Helm, Argo CD and Flux replace the terminal
    one) for the same run id and output prefix, so --resume finishes the failed run's work. The name
    stays a valid RayJob name (ValidateRayJobMetadata: 47 characters, DNS-1035) for any release."""
    base = rayjob_of(render())
    again = rayjob_of(render(None, "rerun=1765432100"))
    assert again["metadata"]["name"] == base["metadata"]["name"] + "-1765432100"
    assert again["metadata"]["labels"]["batchinfer.io/run-id"] == base["metadata"]["labels"]["batchinfer.io/run-id"]
    assert again["spec"]["entrypoint"] == base["spec"]["entrypoint"]
    assert "--resume" in _argv(again)
    long = rayjob_of(documents(template([VALUES_DIR / "defaults.yaml"], ["job.runId=" + "r" * 20, "rerun=" + "9" * 12],
                                        release="x" * 53, helm_bin=helm_bin)))
    assert long["metadata"]["name"].endswith("-" + "r" * 20 + "-" + "9" * 12)
    assert rayjob_validation_errors(long) == []


# --- item 5: the Flux re-run ---------------------------------------------------------------------------

def test_flux_rerun_replaces_the_terminal_rayjob(helm_bin, tmp_path):
    """Flux's drift correction skips the RayJob (helm.toolkit.fluxcd.io/driftDetection: disabled), so
    deleting it re-runs nothing; the documented re-run is a new `rerun` value in the ConfigMap the
    HelmRelease reads (valuesFrom targetPath rerun), which helm-controller picks up at once
    (reconcile.fluxcd.io/watch): a new RayJob name, the same output. The nightly command clears it."""
    docs = documents(FLUX.read_text())
    assert docs[0] == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "batch"}}
    release = next(d for d in docs if d["kind"] == "HelmRelease")
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    assert release["metadata"]["namespace"] == config["metadata"]["namespace"] == "batch"
    assert release["spec"]["install"]["createNamespace"] is True
    assert config["metadata"]["labels"]["reconcile.fluxcd.io/watch"] == "Enabled"
    by_key = {ref["valuesKey"]: ref["targetPath"] for ref in release["spec"]["valuesFrom"]}
    assert by_key == {"runId": "job.runId", "rerun": "rerun"}
    header = FLUX.read_text()
    patches = [json.loads(m.replace('\\"', '"')) for m in re.findall(r'-p "(\{.*\})"', header)]
    nightly, rerun = patches
    assert set(nightly["data"]) == {"runId", "rerun"} and nightly["data"]["rerun"] == ""
    assert set(rerun["data"]) == {"rerun"}
    values = tmp_path / "flux.yaml"
    values.write_text(yaml.safe_dump(release["spec"]["values"]))

    def reconcile(data: dict) -> dict:  # helm-controller: values, then each valuesFrom key at its targetPath
        sets = [f"{path}={data[key]}" for key, path in by_key.items()]
        return rayjob_of(documents(template([values], sets, release=release["spec"]["releaseName"], helm_bin=helm_bin)))

    first = reconcile(config["data"])
    again = reconcile({**config["data"], "rerun": rerun["data"]["rerun"].replace("$(date -u +%s)", "1765432100")})
    assert again["metadata"]["name"] == first["metadata"]["name"] + "-1765432100"
    assert again["spec"]["entrypoint"] == first["spec"]["entrypoint"]


# --- item 6: disruption protection of the driver --------------------------------------------------------

DO_NOT_DISRUPT = {"karpenter.sh/do-not-disrupt": "true", "cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=VALUES_IDS)
def test_head_and_submitter_are_protected_from_disruption(render, helm_bin, values_file):
    """The head (the driver) and the submitter carry Karpenter's and the Cluster Autoscaler's
    do-not-evict annotations, and a PodDisruptionBudget with maxUnavailable 0 selects exactly them as
    KubeRay labels them (common/pod.go labelPod keeps the template's labels beside its ray.io/* ones;
    rayjob_controller.go getSubmitterTemplate keeps the submitter template's); the RayCluster's name
    is random (utils.GenerateRayClusterName), so the budget selects the chart's labels, not ray.io/cluster.
    Workers are not protected (batchinfer retries a lost worker's tasks)."""
    docs = render(values_file)
    rayjob = rayjob_of(docs)
    spec = rayjob["spec"]
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["metadata"]
    assert DO_NOT_DISRUPT.items() <= head["annotations"].items()
    for group in spec["rayClusterSpec"]["workerGroupSpecs"]:
        assert not DO_NOT_DISRUPT.keys() & group["template"]["metadata"].get("annotations", {}).keys()
    pods = ray_pods(rayjob)
    if "submitterPodTemplate" in spec:
        assert DO_NOT_DISRUPT.items() <= spec["submitterPodTemplate"]["metadata"]["annotations"].items()
        pods["submitter"] = submitter_pod_labels(rayjob)
    (pdb,) = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert pdb["spec"]["maxUnavailable"] == 0
    selected = {name for name, labels in pods.items() if selects(pdb["spec"]["selector"], labels)}
    assert selected == {"head"} | ({"submitter"} if "submitterPodTemplate" in spec else set())
    # Another release's pods in the same namespace are not this budget's.
    other = rayjob_of(documents(template([values_file], [], release="other", helm_bin=helm_bin)))
    assert not any(selects(pdb["spec"]["selector"], labels) for labels in ray_pods(other).values())


def test_disruption_protection_can_be_turned_off(render):
    docs = render(None, "disruptionProtection.annotations=false", "disruptionProtection.podDisruptionBudget=false")
    spec = rayjob_of(docs)["spec"]
    assert "annotations" not in spec["rayClusterSpec"]["headGroupSpec"]["template"]["metadata"]
    assert "annotations" not in spec["submitterPodTemplate"]["metadata"]
    assert not [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    # The head's own annotations stay, beside the protection's.
    own = rayjob_of(render(None, "head.annotations.note=x"))["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert own["template"]["metadata"]["annotations"] == {**DO_NOT_DISRUPT, "note": "x"}


# --- item 7: NOTES, helm test, Helm 3 ----------------------------------------------------------------

def _notes(helm_bin: str, release: str, *sets: str) -> str:
    out = helm("install", release, str(CHART_DIR), "--dry-run=client", "-f", str(VALUES_DIR / "defaults.yaml"),
               *[a for s in sets for a in ("--set", s)], helm_bin=helm_bin).stdout
    return out.split("NOTES:", 1)[1]


def test_notes_token_command_finds_the_secret_of_a_long_named_cluster(helm_bin):
    """raycluster_controller.go reconcileAuthSecret names the token Secret utils.CheckName(<raycluster>),
    the cluster name's last 50 characters, and createAuthSecret labels it ray.io/cluster: <raycluster>.
    A RayJob name over 44 characters makes the cluster name (utils.GenerateRayClusterName: +6) longer
    than 50, so NOTES finds the Secret by that label, never by the cluster's name."""
    notes = _notes(helm_bin, "x" * 53, "job.runId=long")
    rayjob = re.search(r"RayJob (\S+) \(run long\)", notes).group(1)
    assert len(rayjob) == 47
    cluster = rayjob_cluster_name(rayjob)
    secret_name, secret_labels = auth_secret(cluster)
    assert secret_name != cluster == secret_labels["ray.io/cluster"]  # the trimming is real here
    (command,) = [line for line in notes.splitlines() if "RAY_AUTH_TOKEN=" in line]
    selector = re.search(r"-l (\S+)", command).group(1)
    key, value = selector.split("=", 1)
    assert value == "$CLUSTER" and secret_labels[key] == cluster
    assert "get secret $CLUSTER" not in notes and check_name(cluster) not in notes


def test_notes_give_one_rerun_command_per_path(helm_bin):
    """The re-run of a failed run is one command: helm upgrade --set rerun (a new RayJob name), and its
    Argo CD form; the Flux and kubectl forms are in k8s/gitops/flux-helmrelease.yaml and docs/kubernetes.md."""
    notes = _notes(helm_bin, "classify")
    assert re.search(r"helm upgrade classify <chart> -n default --reuse-values --set rerun=\$\(date -u \+%s\)", notes)
    assert "argocd app set <app> --helm-set-string rerun=" in notes
    assert "kubectl delete rayjob" not in notes


def test_values_schema_is_draft_07(render):
    """Helm 3 before 3.18 validates values.schema.json with gojsonschema (drafts 4, 6 and 7): the
    schema is draft-07 (no 2019-09/2020-12 keywords), and every values file passes it."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    text = json.dumps(schema)
    for newer in ("$defs", "dependentRequired", "dependentSchemas", "unevaluated", "prefixItems", "$anchor"):
        assert f'"{newer}' not in text, newer
    jsonschema.Draft7Validator.check_schema(schema)
    def merge(base: dict, over: dict) -> dict:  # Helm's coalescing of a values file over the defaults,
        # where a key set to null removes the default's (e.g. the default worker group: gpu: null)
        merged = {**base, **{k: merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
                             for k, v in over.items()}}
        return {k: v for k, v in merged.items() if not (v is None and k in over and isinstance(base.get(k), dict))}

    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    for values_file in VALUES_FILES:
        merged = merge(defaults, yaml.safe_load(values_file.read_text()))
        assert list(jsonschema.Draft7Validator(schema).iter_errors(merged)) == [], values_file.name


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=VALUES_IDS)
def test_oldest_claimed_helm3_renders_what_helm4_renders(helm_bin, values_file):
    """helm/batchinfer/README.md claims Helm 3 from v3.18.4 (the oldest helm.sh/helm/v3 the Go module
    proxy serves here, built by tests/chart/tools.py ensure_helm3): it lints, validates the schema and
    renders the same objects as Helm 4."""
    helm3 = ensure_helm3()
    assert helm("version", "--short", helm_bin=helm3).stdout.startswith("v3.18.4")
    lint = helm("lint", "--strict", str(CHART_DIR), "--values", str(values_file), helm_bin=helm3, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert documents(template([values_file], helm_bin=helm3)) == documents(template([values_file], helm_bin=helm_bin))
    bad = helm(*["template", "x", str(CHART_DIR), "--values", str(values_file), "--set", "job.batchSize=big"],
               helm_bin=helm3, check=False)
    assert bad.returncode != 0 and "batchSize" in bad.stderr
