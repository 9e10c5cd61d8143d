"""What a real GPU cluster would do with the chart, checked on the default render and every values
file: pods fit their nodes, Ray sees the pod's resources, the object store stays in /dev/shm, the
run gives up in bounded time, every run has an identity, KubeRay accepts the spec and deletes the
cluster however the run ends, the inference pool can grow to the worker groups' size,
head/submitter stay off GPU nodes, and KubeRay's head Services select the head pod.

Each rule names its upstream source (KubeRay v1.7.0 ray-operator/..., Ray 2.60 functions); the
mirror of KubeRay's code is tests/chart/kuberay_rules.py, node shapes are tests/chart/node_shapes.py.
"""
from __future__ import annotations

import copy
import json
import math
import shlex
from decimal import Decimal

import pytest

from .conftest import VALUES_FILES, VALUES_IDS
from .kuberay_rules import (TERMINAL_STATES, dev_shm_bytes, head_services, pod_requests, quantity, ray_container,
                            ray_groups, ray_pod_default_labels, ray_pods, ray_start_params, rayjob_cluster_name,
                            rayjob_validation_errors, terminal_deletions)
from .node_shapes import DAEMONSET_HEADROOM, SHAPES, declared_shapes, shape_allocatable, worker_group_names
from .render import REPO_ROOT, rayjob_of
from .schemas import pod_templates

KIND_VALUES = REPO_ROOT / "k8s" / "kind" / "values-cpu.yaml"
ALL_VALUES = VALUES_FILES + [KIND_VALUES]
ALL_IDS = VALUES_IDS + ["kind-values-cpu"]


def _argv(rayjob: dict) -> list[str]:
    return shlex.split(rayjob["spec"]["entrypoint"])


def _flag(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def _pod_name(name: str) -> str:
    return name.split(":", 1)[1] if name.startswith("worker:") else name


# --- 1. Schedules -------------------------------------------------------------------------------

@pytest.mark.parametrize("values_file", VALUES_FILES, ids=VALUES_IDS)
def test_every_pod_fits_its_documented_node_shape(render, values_file):
    """Each pod's requests (all containers, plus the autoscaler sidecar KubeRay adds to the head)
    fit the allocatable of the node shape its values file declares, minus DaemonSet headroom.
    A pod that does not fit any node stays Pending forever (the issue's 8 CPU / 32Gi worker)."""
    shapes = declared_shapes(values_file)
    # A shape per worker group the file renders, and none for a group it removed (e.g. gpu: null).
    assert set(shapes) - {"head", "submitter"} == worker_group_names(values_file), values_file.name
    rayjob = rayjob_of(render(values_file))
    pods = {_pod_name(name): tpl for name, tpl in pod_templates(rayjob)}
    assert set(pods) <= set(shapes), f"{values_file.name}: declare node shapes for {set(pods) - set(shapes)}"
    for pod, template in pods.items():
        assert shapes[pod] in SHAPES, shapes[pod]
        free = shape_allocatable(shapes[pod])
        requested = pod_requests(pod, template, rayjob)
        assert requested["gpu"] <= free["gpu"], (pod, requested, shapes[pod])
        assert requested["cpu"] <= Decimal(str(free["cpu"] - DAEMONSET_HEADROOM["cpu"])), (pod, requested, free)
        assert requested["memory"] <= Decimal(free["memory"] - DAEMONSET_HEADROOM["memory"]), (pod, requested, free)


def test_node_fit_check_is_not_vacuous(render):
    """The issue's old default (a GPU worker asking for 8 CPU / 32Gi) does not fit a 1-GPU node."""
    rayjob = rayjob_of(render(None, "workerDefaults.cpu=8", "workerDefaults.memory=32Gi"))
    (group,) = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    requested = pod_requests("gpu", group["template"], rayjob)
    free = shape_allocatable("gpu-1x-a10g-l4")
    assert requested["cpu"] > Decimal(str(free["cpu"])) and requested["memory"] > Decimal(free["memory"])


def test_default_render_is_sized_for_a_one_gpu_node(render):
    """Default values: a 1-GPU worker for g5.2xlarge / g6.2xlarge / g2-standard-8 (~7.9 CPU, ~28 GiB)."""
    assert declared_shapes(VALUES_FILES[VALUES_IDS.index("defaults")])["gpu"] == "gpu-1x-a10g-l4"
    free = shape_allocatable("gpu-1x-a10g-l4")
    assert 7.8 < free["cpu"] < 8 and 27 < free["memory"] / 2**30 < 29  # the shape the issue names


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=VALUES_IDS)
def test_ray_sees_the_pods_resources(render, values_file):
    """KubeRay starts Ray with num-cpus / memory / num-gpus taken from the Ray container's limits
    (common/pod.go generateRayStartCommand, addWellKnownAcceleratorResources). Requests equal limits
    (the kubelet guarantees what Ray is told), CPU limits are whole numbers (Quantity.Value() rounds
    up, so 7.5 CPUs would make Ray schedule 8), and the head runs no tasks (num-cpus 0)."""
    rayjob = rayjob_of(render(values_file))
    for name, params, template in ray_groups(rayjob):
        container = ray_container(template)
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert {k: quantity(v) for k, v in requests.items()} == {k: quantity(v) for k, v in limits.items()}, name
        effective = ray_start_params(params, container)
        if name == "head":
            assert effective["num-cpus"] == "0"
        else:
            assert Decimal(effective["num-cpus"]) == quantity(limits["cpu"]), (name, limits["cpu"])
        assert int(effective["memory"]) == quantity(limits["memory"]), name
        gpus = sum(quantity(v) for k, v in limits.items() if "gpu" in k)
        assert Decimal(effective.get("num-gpus", "0")) == gpus, name


# --- 2. Gives up --------------------------------------------------------------------------------

def test_defaults_give_up_and_do_not_rebuild_the_cluster(render):
    """KubeRay rayjob_controller.go checkPreRunningDeadlineAndUpdateStatusIfNeeded fails a RayJob
    whose job is not running after preRunningDeadlineSeconds (image pull error, missing Secret, no
    GPU node); checkBackoffLimitAndUpdateStatusIfNeeded retries any Failed RayJob (a new cluster
    each time) until backoffLimit, whatever the exit code. Default: bounded deadline, no retry,
    --resume so that re-applying the same run finishes its work."""
    spec = rayjob_of(render())["spec"]
    assert 900 <= spec["preRunningDeadlineSeconds"] <= 1800
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 86400  # the whole run, a submitter that never starts included
    assert "--resume" in _argv(rayjob_of(render()))


@pytest.mark.parametrize("values_file", ALL_VALUES, ids=ALL_IDS)
def test_every_values_file_has_a_bounded_pre_running_deadline(render, values_file):
    spec = rayjob_of(render(values_file))["spec"]
    assert 0 < spec["preRunningDeadlineSeconds"] <= 3600, values_file.name


# --- 3. Object store in shared memory -------------------------------------------------------------

def _plasma_directory(params: dict, template: dict, monkeypatch, tmp_path) -> tuple[str, int, int]:
    """Where Ray 2.60 puts the object store of this pod: ray._private.utils.resolve_object_store_memory
    (30% of available memory, capped at max(10 GB, 95% of /dev/shm) and 200 GB) unless
    object-store-memory is given, then ray._private.services.determine_plasma_store_config (/dev/shm
    if it has room, else the temp dir on disk). The two reads of the running machine (/dev/shm size,
    cgroup memory limit) are replaced by the pod's values: no pod's cgroup exists here."""
    import ray._common.utils
    import ray._private.services
    import ray._private.utils

    container = ray_container(template)
    memory = int(quantity(container["resources"]["limits"]["memory"]))
    shm = dev_shm_bytes(template, params)
    assert shm is not None, "plasma-directory set: the object store is not in /dev/shm"
    monkeypatch.setattr(ray._private.utils, "get_shared_memory_bytes", lambda: shm)
    monkeypatch.setattr(ray._common.utils, "get_system_memory", lambda *a, **k: memory)
    if "object-store-memory" in params:
        store = int(params["object-store-memory"])
    else:
        store = ray._private.utils.resolve_object_store_memory(memory)
    plasma_dir, _, _ = ray._private.services.determine_plasma_store_config(store, str(tmp_path))
    return plasma_dir, store, shm


@pytest.mark.parametrize("values_file", ALL_VALUES, ids=ALL_IDS)
def test_object_store_stays_in_dev_shm(render, values_file, monkeypatch, tmp_path):
    """Head and every worker group: the object store Ray picks fits the /dev/shm the pod gets."""
    rayjob = rayjob_of(render(values_file))
    for name, params, template in ray_groups(rayjob):
        plasma_dir, store, shm = _plasma_directory(params, template, monkeypatch, tmp_path)
        assert plasma_dir == "/dev/shm", (values_file.name, name, store, shm)
        assert store <= shm


def test_object_store_check_is_not_vacuous(render, monkeypatch, tmp_path):
    """The issue's old worker (32Gi memory, an explicit 8Gi /dev/shm, no object-store-memory): Ray
    caps its store at 10 GB, more than /dev/shm holds, and puts it on disk. The same pod without the
    volume (KubeRay's /dev/shm = the memory limit) keeps its 30%-of-memory store in /dev/shm."""
    rayjob = rayjob_of(render(None, "workerDefaults.memory=32Gi", "workerDefaults.cpu=8"))
    (_, params, template) = list(ray_groups(rayjob))[1]
    plasma_dir, store, shm = _plasma_directory(params, template, monkeypatch, tmp_path)
    assert plasma_dir == "/dev/shm" and store > 10**10 and shm == 32 * 2**30
    old = copy.deepcopy(template)
    old["spec"]["volumes"].append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}})
    ray_container(old)["volumeMounts"].append({"name": "dshm", "mountPath": "/dev/shm"})
    plasma_dir, store, shm = _plasma_directory(params, old, monkeypatch, tmp_path)
    assert plasma_dir == str(tmp_path) and store == 10**10 and store > shm


def test_declared_shm_size_derives_the_object_store(render):
    """With an explicit shmSize the chart passes object-store-memory = min(30% of memory, 95% of
    /dev/shm); without one it mounts nothing and KubeRay sizes /dev/shm to the memory limit."""
    rayjob = rayjob_of(render(None, "workerDefaults.shmSize=2Gi"))
    (_, params, template) = list(ray_groups(rayjob))[1]
    assert int(params["object-store-memory"]) == math.floor(0.95 * 2 * 2**30)
    assert dev_shm_bytes(template, params) == 2 * 2**30
    (_, params, template) = list(ray_groups(rayjob_of(render())))[1]
    assert "object-store-memory" not in params
    assert dev_shm_bytes(template, params) == quantity(ray_container(template)["resources"]["limits"]["memory"])


# --- 4. Re-runs run ------------------------------------------------------------------------------

def test_run_identity_in_name_and_output(render):
    """KubeRay ignores spec changes of an existing RayJob and Complete/Failed are terminal, so a new
    run needs a new RayJob: its name and (by default) its output prefix carry the run id."""
    rayjob = rayjob_of(render())
    run_id = rayjob["metadata"]["labels"]["batchinfer.io/run-id"]
    assert rayjob["metadata"]["name"] == f"batchinfer-{run_id}"
    assert _flag(_argv(rayjob), "--output") == f"s3://batchinfer/predictions/{run_id}/"
    # The same values: the same run (a GitOps re-sync or `helm upgrade` with nothing changed runs nothing).
    assert rayjob_of(render(None, "job.topK=5"))["metadata"]["name"] == rayjob["metadata"]["name"]
    # A changed input, model or output is a new run, with its own output prefix.
    for change in ("job.input=s3://batchinfer/other/", "job.model=resnet18", "job.output=s3://b/out",
                   "cpuFallback.enabled=true"):
        other = rayjob_of(render(None, change))
        assert other["metadata"]["name"] != rayjob["metadata"]["name"], change
        other_id = other["metadata"]["labels"]["batchinfer.io/run-id"]
        assert _flag(_argv(other), "--output").endswith(f"/{other_id}/")
    # An explicit id re-runs the same job.
    named = rayjob_of(render(None, "job.runId=nightly-20261123"))
    assert named["metadata"]["name"] == "batchinfer-nightly-20261123"
    assert _flag(_argv(named), "--output") == "s3://batchinfer/predictions/nightly-20261123/"
    # A date typed as a number (--set parses it as an integer, YAML/JSON as a float) stays that date.
    for numeric in ("job.runId=20261123", "json:job.runId=20261123"):
        assert rayjob_of(render(None, numeric))["metadata"]["name"] == "batchinfer-20261123", numeric
    # outputPerRun off: the output prefix is the value itself.
    plain = rayjob_of(render(None, "job.outputPerRun=false"))
    assert _flag(_argv(plain), "--output") == "s3://batchinfer/predictions/"


def test_reuse_values_keeps_a_set_run_id(render):
    """docs/kubernetes.md "Runs and re-runs", chart README, NOTES: `helm upgrade --reuse-values` keeps
    a job.runId set before (here as the earlier --set), so a changed input alone keeps the finished
    RayJob's name and runs nothing; `--set job.runId=""` with it gives the hash id, a new run."""
    dated = "job.runId=20261124-1530"
    new_input = "job.input=s3://photos/2026-11-24/"
    assert rayjob_of(render(None, dated, new_input))["metadata"]["name"] == "batchinfer-20261124-1530"
    reset = rayjob_of(render(None, dated, new_input, "job.runId="))
    assert reset["metadata"]["name"] == rayjob_of(render(None, new_input))["metadata"]["name"]
    assert reset["metadata"]["name"] not in ("batchinfer-20261124-1530", rayjob_of(render())["metadata"]["name"])


def test_run_name_stays_a_valid_rayjob_name(helm_bin):
    """KubeRay ValidateRayJobMetadata: at most 47 characters, a DNS-1035 label, whatever the release."""
    from .conftest import VALUES_DIR
    from .render import documents, template
    rayjob = rayjob_of(documents(template([VALUES_DIR / "defaults.yaml"], ["job.runId=" + "r" * 20],
                                          release="x" * 53, helm_bin=helm_bin)))
    name = rayjob["metadata"]["name"]
    assert len(name) <= 47 and name.endswith("-" + "r" * 20)
    assert rayjob_validation_errors(rayjob) == []


# --- 5. The inference pool can grow to the worker groups -------------------------------------------

@pytest.mark.parametrize("values_file", ALL_VALUES, ids=ALL_IDS)
def test_num_workers_spans_the_worker_groups(render, values_file):
    """`--num-workers 1-MAX` (a Ray Data autoscaling actor pool): MAX = sum over worker groups of
    maxReplicas x floor(GPUs per pod / GPUs per actor); with --device cpu one actor per worker pod.
    Actors beyond the running workers stay pending, which is what makes KubeRay's autoscaler add
    worker pods up to maxReplicas."""
    rayjob = rayjob_of(render(values_file))
    argv = _argv(rayjob)
    per_actor = float(_flag(argv, "--num-gpus-per-worker") or 1)
    cpu = _flag(argv, "--device") == "cpu"
    expected = 0
    for group in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        limits = ray_container(group["template"])["resources"]["limits"]
        gpus = sum(float(quantity(v)) for k, v in limits.items() if "gpu" in k)
        expected += group["maxReplicas"] * (1 if cpu else math.floor(gpus / per_actor))
    assert expected >= 1
    assert _flag(argv, "--num-workers") == f"1-{expected}", values_file.name


def test_fixed_num_workers_is_passed_as_is(render):
    assert _flag(_argv(rayjob_of(render(None, "job.numWorkers=3"))), "--num-workers") == "3"


# --- 8. KubeRay accepts the spec --------------------------------------------------------------------

@pytest.mark.parametrize("values_file", ALL_VALUES, ids=ALL_IDS)
def test_kuberay_validation_accepts_every_render(render, values_file):
    """ray-operator/controllers/ray/utils/validation.go (see kuberay_rules.rayjob_validation_errors)."""
    assert rayjob_validation_errors(rayjob_of(render(values_file))) == []


@pytest.mark.parametrize("state", TERMINAL_STATES, ids=list(TERMINAL_STATES))
def test_default_deletes_the_cluster_however_the_job_ends(render, state):
    """rayjob_controller.go Reconcile (case JobDeploymentStatusComplete, JobDeploymentStatusFailed)
    with shutdownAfterJobFinishes and no deletionStrategy calls handleShutdownAfterJobFinishes, which
    deletes the RayCluster (deleteClusterResources) after ttlSecondsAfterFinished whatever the end:
    SUCCEEDED, FAILED, STOPPED (`ray job stop`) and a RayJob failed by a deadline. So no GPU node
    idles after a run, and the RayJob stays (no DeleteSelf), so Helm/GitOps never re-create it."""
    spec = rayjob_of(render())["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] == 0
    assert "deletionStrategy" not in spec and "clusterSelector" not in spec
    assert terminal_deletions(spec, *TERMINAL_STATES[state]) == [("DeleteCluster", 0)]


@pytest.mark.parametrize("values_file", ALL_VALUES, ids=ALL_IDS)
def test_no_values_file_deletes_the_rayjob(render, values_file):
    """A deleted RayJob would be re-created (re-run) by Helm or GitOps: no terminal state of any values
    file deletes it (DeleteSelf), and every one frees the GPU workers on SUCCEEDED and FAILED."""
    spec = rayjob_of(render(values_file))["spec"]
    for state in TERMINAL_STATES.values():
        assert "DeleteSelf" not in {policy for policy, _ in terminal_deletions(spec, *state)}, values_file.name
    for state in ("succeeded", "failed"):
        assert {p for p, _ in terminal_deletions(spec, *TERMINAL_STATES[state])} & {"DeleteCluster", "DeleteWorkers"}, \
            values_file.name


def test_deletion_rules_and_legacy_policies_keep_a_stopped_jobs_cluster(render):
    """Why the default is shutdownAfterJobFinishes (kuberay#5184): a rule's condition can only name
    jobStatus SUCCEEDED or FAILED, or jobDeploymentStatus Failed (the CRD's enums), and
    isDeletionRuleMatched compares exactly; handleLegacyDeletionPolicy applies no policy to other job
    statuses. A STOPPED job (jobDeploymentStatus Complete) keeps its cluster under both opt-ins."""
    for values in ("deletion-rules", "irsa"):
        spec = rayjob_of(render(values))["spec"]
        assert spec.get("deletionStrategy"), values
        assert terminal_deletions(spec, *TERMINAL_STATES["stopped"]) == [], values
    assert terminal_deletions(rayjob_of(render("deletion-rules"))["spec"], *TERMINAL_STATES["failed"]) == [
        ("DeleteWorkers", 0), ("DeleteCluster", 3600)]


def test_deletion_rule_conditions_are_the_crds_enums(rayjob_crd_schema):
    """The transcription's premise: KubeRay's CRD admits no STOPPED (or Complete) rule condition."""
    condition = (rayjob_crd_schema["properties"]["spec"]["properties"]["deletionStrategy"]["properties"]
                 ["deletionRules"]["items"]["properties"]["condition"]["properties"])
    assert condition["jobStatus"]["enum"] == ["SUCCEEDED", "FAILED"]
    assert condition["jobDeploymentStatus"]["enum"] == ["Failed"]


_RULES = [{"policy": "DeleteCluster", "condition": {"jobStatus": "SUCCEEDED", "ttlSeconds": 0}}]

REJECTED_BY_KUBERAY = [
    ("autoscaling-with-DeleteWorkers-rule",
     lambda s: (s["rayClusterSpec"].update(enableInTreeAutoscaling=True), s.update(
         shutdownAfterJobFinishes=False, deletionStrategy={"deletionRules": _RULES + [
             {"policy": "DeleteWorkers", "condition": {"jobStatus": "FAILED", "ttlSeconds": 0}}]}))),
    ("autoscaling-with-legacy-DeleteWorkers",
     lambda s: (s["rayClusterSpec"].update(enableInTreeAutoscaling=True), s.update(
         deletionStrategy={"onSuccess": {"policy": "DeleteCluster"}, "onFailure": {"policy": "DeleteWorkers"}}))),
    ("legacy-DeleteNone-with-shutdown",
     lambda s: s.update(deletionStrategy={
         "onSuccess": {"policy": "DeleteNone"}, "onFailure": {"policy": "DeleteCluster"}})),
    ("rules-with-shutdown", lambda s: s.update(deletionStrategy={"deletionRules": _RULES})),
    ("ttl-without-shutdown", lambda s: s.update(shutdownAfterJobFinishes=False, ttlSecondsAfterFinished=60)),
]


@pytest.mark.parametrize("mutate", [m for _, m in REJECTED_BY_KUBERAY], ids=[n for n, _ in REJECTED_BY_KUBERAY])
def test_kuberay_validation_mirror_rejects(render, mutate):
    """The mirror is not vacuous: each combination the chart refuses at template time
    (test_values_rules.BAD_VALUES) is one KubeRay's validation.go rejects."""
    rayjob = copy.deepcopy(rayjob_of(render()))
    mutate(rayjob["spec"])
    assert rayjob_validation_errors(rayjob)


# --- 9. Placement and cost ------------------------------------------------------------------------

def _tolerates_gpu_taint(template: dict) -> bool:
    return any(t.get("key") == "nvidia.com/gpu" or (t.get("operator") == "Exists" and "key" not in t)
               for t in template["spec"].get("tolerations", []))


def _excluded_labels(template: dict) -> set[str]:
    """Label keys every required node affinity term excludes (DoesNotExist)."""
    terms = (template["spec"].get("affinity", {}).get("nodeAffinity", {})
             .get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", []))
    if not terms:
        return set()
    return set.intersection(*({e["key"] for e in t.get("matchExpressions", []) if e["operator"] == "DoesNotExist"}
                              for t in terms))


GPU_NODE_LABELS = {"nvidia.com/gpu.present", "cloud.google.com/gke-accelerator", "k8s.amazonaws.com/accelerator"}


@pytest.mark.parametrize("values_file", ALL_VALUES, ids=ALL_IDS)
def test_only_gpu_pods_go_to_gpu_nodes(render, values_file):
    """Head, submitter and pods without GPUs neither tolerate the GPU taint nor may land on a node
    labelled as a GPU node (NVIDIA GPU Feature Discovery, GKE, EKS labels); GPU workers tolerate it."""
    rayjob = rayjob_of(render(values_file))
    for name, template in pod_templates(rayjob):
        limits = ray_container(template).get("resources", {}).get("limits", {})
        has_gpu = any("gpu" in k and quantity(v) > 0 for k, v in limits.items())
        if has_gpu:
            assert _tolerates_gpu_taint(template), (values_file.name, name)
            continue
        assert not _tolerates_gpu_taint(template), (values_file.name, name)
        assert _excluded_labels(template) >= GPU_NODE_LABELS, (values_file.name, name)


def test_own_node_affinity_replaces_the_gpu_exclusion(render):
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["system"]}]}]}}}
    rayjob = rayjob_of(render(None, "json:head.affinity=" + json.dumps(affinity), "head.avoidGpuNodes=true"))
    assert rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["affinity"] == affinity
    off = rayjob_of(render(None, "head.avoidGpuNodes=false"))
    assert "affinity" not in off["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]


def test_head_and_submitter_can_use_the_cpu_image(render):
    """The CPU variant is the GPU image's tag with `-cpu` (docker/: make image / make image-cpu)."""
    rayjob = rayjob_of(render("node-1x-a10g-l4"))
    images = {name: ray_container(tpl)["image"] for name, tpl in pod_templates(rayjob)}
    gpu_image = images["worker:gpu"]
    assert not gpu_image.endswith("-cpu")
    assert images == {"head": gpu_image + "-cpu", "worker:gpu": gpu_image, "submitter": gpu_image + "-cpu"}
    default = {name: ray_container(tpl)["image"] for name, tpl in pod_templates(rayjob_of(render()))}
    assert set(default.values()) == {gpu_image}


# --- 10. The head Services reach the head ------------------------------------------------------------

@pytest.mark.parametrize("values_file", ALL_VALUES, ids=ALL_IDS)
def test_head_services_select_the_head_pod(render, values_file):
    """KubeRay v1.7.0 gives a RayJob's cluster two head Services (kuberay_rules.head_services): the
    RayCluster's `<raycluster>-head-svc`, and the RayJob's `<rayjob>-head-svc`, whose selector is
    common/service.go HeadServiceLabels unchanged (common/job.go BuildHeadServiceForRayJob calls
    BuildServiceForHeadPod without labels), app.kubernetes.io/name=kuberay included. The head pod gets
    the template's labels over KubeRay's own (common/pod.go labelPod), so a template that sets one of
    those keys (the chart's app.kubernetes.io/name once did) leaves the RayJob's Service without endpoints.
    Each Service must select the head pod and no worker."""
    rayjob = rayjob_of(render(values_file))
    cluster = rayjob_cluster_name(rayjob["metadata"]["name"])
    pods = ray_pods(rayjob)
    head, workers = pods.pop("head"), pods.values()
    services = head_services(rayjob)
    assert set(services) == {f"{cluster}-head-svc", f"{rayjob['metadata']['name']}-head-svc"}
    for name, selector in services.items():
        assert head.items() >= selector.items(), (name, selector, head)
        assert not any(w.items() >= selector.items() for w in workers), name


def test_head_service_check_is_not_vacuous(render):
    """The chart's earlier head template label app.kubernetes.io/name=batchinfer: the RayCluster's head
    Service follows it (raycluster_controller.go reconcileHeadService), the RayJob's does not."""
    rayjob = copy.deepcopy(rayjob_of(render()))
    rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["metadata"]["labels"][
        "app.kubernetes.io/name"] = "batchinfer"
    cluster = rayjob_cluster_name(rayjob["metadata"]["name"])
    head = ray_pods(rayjob)["head"]
    selected = {name: head.items() >= selector.items() for name, selector in head_services(rayjob).items()}
    assert selected == {f"{cluster}-head-svc": True, f"{rayjob['metadata']['name']}-head-svc": False}


def test_chart_refuses_kuberays_pod_labels():
    """The label keys the chart's schema refuses in commonLabels and every group's labels
    (values.schema.json definitions/podLabels: `false` schemas; test_values_rules.BAD_VALUES) are the
    set labelPod gives every Ray pod."""
    schema = json.loads((REPO_ROOT / "helm/batchinfer/values.schema.json").read_text())
    kuberays = set(ray_pod_default_labels("head", "headgroup", "c"))
    for where in (schema["definitions"]["podLabels"], schema["properties"]["commonLabels"]):
        assert {key for key, rule in where["properties"].items() if rule is False} == kuberays
    for where in (schema["properties"]["head"], schema["properties"]["workerDefaults"], schema["definitions"]["workerGroup"]):
        assert where["properties"]["labels"] == {"$ref": "#/definitions/podLabels"}


def test_worker_groups_render_what_kuberays_update_writes_so_helm_upgrade_has_no_conflict() -> None:
    """KubeRay's own Update of a RayJob (adding its finalizer) serializes every worker group with
    `scaleStrategy: {}` (a struct field: `omitempty` never drops it; ray-operator apis/ray/v1
    raycluster_types.go WorkerGroupSpec.ScaleStrategy). workerGroupSpecs is an atomic list, so if the
    render lacks it that Update changes the list, the operator becomes its field manager, and the next
    server-side `helm upgrade` (Helm 4's default) of the same RayJob fails with a conflict on
    .spec.rayClusterSpec.workerGroupSpecs (seen on the local cluster, make cluster-e2e)."""
    from tests.chart.render import documents, rayjob_of, template

    for values in ([], ["tests/chart/values/two-gpu-groups.yaml"]):
        job = rayjob_of(documents(template(values_files=values, set_values=["image.repository=r/batchinfer"])))
        for group in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
            assert group["scaleStrategy"] == {}, group["groupName"]
