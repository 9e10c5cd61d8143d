"""What KubeRay v1.7.0 and Ray 2.60 do with a rendered RayJob, written out so tests can check it.

Each function names the upstream code it follows (KubeRay: github.com/ray-project/kuberay at tag
v1.7.0, ray-operator/...; Ray: the installed ray package). Read them there; nothing is copied.
"""
from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Iterator

_SUFFIX = {"": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
           "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity(value) -> Decimal:
    """A Kubernetes resource quantity (k8s.io/apimachinery resource.Quantity) as a number."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    assert match and match.group(2) in _SUFFIX, f"not a quantity: {value!r}"
    return Decimal(match.group(1)) * _SUFFIX[match.group(2)]


def ray_container(template: dict) -> dict:
    """KubeRay's Ray container is the first one (utils.RayContainerIndex = 0)."""
    return template["spec"]["containers"][0]


def is_gpu_resource_key(key: str) -> bool:
    """ray-operator/controllers/ray/utils/resources.go IsGPUResourceKey."""
    return key.endswith("gpu") or re.search(r"nvidia\.com/mig-\d+g\.\d+gb$", key) is not None


def ray_start_params(params: dict, container: dict) -> dict:
    """The `ray start` parameters KubeRay runs a pod with: common/pod.go generateRayStartCommand.
    num-cpus from the CPU limit (else the request), memory from the memory limit, num-gpus from the
    first GPU resource in the limits (addWellKnownAcceleratorResources), unless set explicitly.
    resource.Quantity.Value() rounds up, so a CPU limit of 7.5 becomes num-cpus 8."""
    params = dict(params)
    resources = container.get("resources", {})
    limits, requests = resources.get("limits", {}), resources.get("requests", {})
    if "num-cpus" not in params:
        cpu = limits.get("cpu") or requests.get("cpu")
        if cpu is not None:
            params["num-cpus"] = str(math.ceil(quantity(cpu)))
    if "memory" not in params and "memory" in limits:
        params["memory"] = str(math.ceil(quantity(limits["memory"])))
    if "num-gpus" not in params:
        for key in sorted(limits):
            if is_gpu_resource_key(key) and quantity(limits[key]) > 0:
                params["num-gpus"] = str(math.ceil(quantity(limits[key])))
                break
    return params


# `ray start` flags that take an explicit boolean value (`--include-dashboard=false`): common/pod.go
# convertParamMap's specialParameterOptions.
EXPLICIT_BOOLEAN_FLAGS = frozenset({"log-color", "include-dashboard", "include-log-monitor"})


def ray_start_flags(params: dict) -> list[str]:
    """rayStartParams as the `ray start` flags KubeRay passes: KubeRay v1.7.0
    ray-operator/controllers/ray/common/pod.go convertParamMap. Keys in sorted order; a value of "true"
    (any case) is a bare `--key`, "false" drops the flag, except for the flags that take an explicit
    boolean (EXPLICIT_BOOLEAN_FLAGS), which like every other value become `--key=value`."""
    flags = []
    for key in sorted(params):
        value = str(params[key])
        if value.lower() in ("true", "false") and key not in EXPLICIT_BOOLEAN_FLAGS:
            if value.lower() == "true":
                flags.append(f"--{key}")
        else:
            flags.append(f"--{key}={value}")
    return flags


def dev_shm_bytes(template: dict, params: dict) -> int | None:
    """Size of /dev/shm in the Ray container, as KubeRay builds the pod: common/pod.go BuildPod.
    A container that mounts /dev/shm itself keeps its volume (addEmptyDir -> checkIfVolumeMounted);
    otherwise KubeRay adds the `shared-mem` Memory emptyDir sized to the container's memory limit,
    else its request (makeEmptyDirVolume -> findMemoryReqOrLimit); with plasma-directory set it adds
    none (None). A memory-backed emptyDir's tmpfs is as large as its sizeLimit."""
    container = ray_container(template)
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    if "/dev/shm" in mounts:
        volume = next(v for v in template["spec"].get("volumes", []) if v["name"] == mounts["/dev/shm"])
        assert volume["emptyDir"]["medium"] == "Memory", volume
        return int(quantity(volume["emptyDir"]["sizeLimit"]))
    if "plasma-directory" in params:
        return None
    resources = container.get("resources", {})
    memory = resources.get("limits", {}).get("memory") or resources.get("requests", {}).get("memory")
    return int(quantity(memory)) if memory is not None else None


def ray_groups(rayjob: dict) -> Iterator[tuple[str, dict, dict]]:
    """(name, rayStartParams, pod template) of the head and every worker group."""
    cluster = rayjob["spec"]["rayClusterSpec"]
    yield "head", cluster["headGroupSpec"].get("rayStartParams", {}), cluster["headGroupSpec"]["template"]
    for group in cluster.get("workerGroupSpecs", []):
        yield group["groupName"], group.get("rayStartParams", {}), group["template"]


def pod_requests(name: str, template: dict, rayjob: dict) -> dict:
    """Requests of the whole pod (every container), including the autoscaler sidecar KubeRay adds
    to the head with enableInTreeAutoscaling (common/pod.go BuildAutoscalerContainer: 500m / 512Mi
    unless autoscalerOptions.resources says otherwise)."""
    total = {"cpu": Decimal(0), "memory": Decimal(0), "gpu": Decimal(0)}
    containers = list(template["spec"]["containers"])
    cluster = rayjob["spec"]["rayClusterSpec"]
    if name == "head" and cluster.get("enableInTreeAutoscaling"):
        resources = cluster.get("autoscalerOptions", {}).get("resources") or {
            "requests": {"cpu": "500m", "memory": "512Mi"}}
        containers.append({"name": "autoscaler", "resources": resources})
    for container in containers:
        resources = container.get("resources", {})
        requests = {**resources.get("limits", {}), **resources.get("requests", {})}  # limits default requests
        for key, value in requests.items():
            if key in ("cpu", "memory"):
                total[key] += quantity(value)
            elif is_gpu_resource_key(key):
                total["gpu"] += quantity(value)
    return total


def rayjob_validation_errors(rayjob: dict) -> list[str]:
    """The checks of ray-operator/controllers/ray/utils/validation.go that the chart's values can
    reach: ValidateRayJobMetadata, ValidateRayJobSpec with validateDeletionConfiguration,
    validateDeletionRules, validateDeletionCondition, validateTTLConsistency and
    validateLegacyDeletionPolicies, and ValidateRayClusterSpec's worker group replica rules."""
    errors: list[str] = []
    name = rayjob["metadata"]["name"]
    spec = rayjob["spec"]
    if len(name) > 47 or not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name):
        errors.append(f"name {name!r}: at most 47 characters, a DNS-1035 label")
    shutdown = spec.get("shutdownAfterJobFinishes", False)
    ttl = spec.get("ttlSecondsAfterFinished", 0)
    cluster = spec["rayClusterSpec"]
    autoscaling = bool(cluster.get("enableInTreeAutoscaling"))
    if spec.get("suspend") and not shutdown:
        errors.append("suspend needs shutdownAfterJobFinishes")
    if not shutdown and ttl > 0:
        errors.append("ttlSecondsAfterFinished needs shutdownAfterJobFinishes")
    strategy = spec.get("deletionStrategy")
    if strategy is not None:
        rules = strategy.get("deletionRules") or []
        legacy = "onSuccess" in strategy or "onFailure" in strategy
        if rules and shutdown:
            errors.append("deletionRules and shutdownAfterJobFinishes are mutually exclusive")
        if rules and legacy:
            errors.append("deletionRules and onSuccess/onFailure together")
        if legacy:
            if "onSuccess" not in strategy or "onFailure" not in strategy:
                errors.append("onSuccess and onFailure must both be set")
            else:
                policies = {strategy["onSuccess"].get("policy"), strategy["onFailure"].get("policy")}
                if None in policies:
                    errors.append("onSuccess/onFailure policy unset")
                if "DeleteWorkers" in policies and autoscaling:
                    errors.append("DeleteWorkers with autoscaling")
                if "DeleteNone" in policies and shutdown:
                    errors.append("DeleteNone with shutdownAfterJobFinishes")
        elif rules:
            by_condition: dict[tuple[str, str], dict[str, int]] = {}
            for index, rule in enumerate(rules):
                condition = rule["condition"]
                kinds = [k for k in ("jobStatus", "jobDeploymentStatus") if k in condition]
                if len(kinds) != 1:
                    errors.append(f"deletionRules[{index}]: exactly one of jobStatus and jobDeploymentStatus")
                    continue
                if condition.get("ttlSeconds", 0) < 0:
                    errors.append(f"deletionRules[{index}]: negative ttlSeconds")
                if autoscaling and rule["policy"] == "DeleteWorkers":
                    errors.append(f"deletionRules[{index}]: DeleteWorkers with autoscaling")
                    continue
                policies = by_condition.setdefault((kinds[0], condition[kinds[0]]), {})
                if rule["policy"] in policies:
                    errors.append(f"deletionRules[{index}]: duplicate rule")
                    continue
                policies[rule["policy"]] = condition.get("ttlSeconds", 0)
            for key, policies in by_condition.items():
                ttls = [policies[p] for p in ("DeleteWorkers", "DeleteCluster", "DeleteSelf") if p in policies]
                if ttls != sorted(ttls):
                    errors.append(f"deletion TTLs for {key} must not decrease Workers <= Cluster <= Self")
        else:
            errors.append("deletionStrategy needs deletionRules or onSuccess+onFailure")
    mode = spec.get("submissionMode", "K8sJobMode")
    if mode == "SidecarMode" and ("submitterPodTemplate" in spec or "submitterConfig" in spec):
        errors.append("SidecarMode has no submitter")
    for field in ("activeDeadlineSeconds", "preRunningDeadlineSeconds"):
        if field in spec and spec[field] <= 0:
            errors.append(f"{field} must be positive")
    if spec.get("backoffLimit", 0) < 0:
        errors.append("backoffLimit must not be negative")
    for group in cluster.get("workerGroupSpecs", []):
        low, high = group.get("minReplicas"), group.get("maxReplicas")
        if not autoscaling and (low is None or high is None):
            errors.append(f"{group['groupName']}: minReplicas and maxReplicas needed without autoscaling")
        if low is not None and high is not None and low > high:
            errors.append(f"{group['groupName']}: minReplicas > maxReplicas")
    return errors



# The terminal states a RayJob ends in: (jobStatus, jobDeploymentStatus). rayjob_controller.go
# Reconcile, case JobDeploymentStatusRunning: a terminal Ray job status (rayv1.IsJobTerminal:
# SUCCEEDED, FAILED, STOPPED) becomes Complete, FAILED becomes Failed; the deadlines
# (checkActiveDeadlineAndUpdateStatusIfNeeded, checkPreRunningDeadlineAndUpdateStatusIfNeeded) set
# only jobDeploymentStatus Failed, whatever the Ray job's status was (none yet, PENDING, RUNNING).
TERMINAL_STATES = {
    "succeeded": ("SUCCEEDED", "Complete"),
    "failed": ("FAILED", "Failed"),
    "stopped": ("STOPPED", "Complete"),  # `ray job stop`
    "pre-running-deadline": ("", "Failed"),
    "active-deadline": ("RUNNING", "Failed"),
}


def terminal_deletions(spec: dict, job_status: str, job_deployment_status: str) -> list[tuple[str, int]]:
    """What KubeRay v1.7.0 deletes once a RayJob is terminal, as (policy, seconds after the end):
    rayjob_controller.go Reconcile, case JobDeploymentStatusComplete, JobDeploymentStatusFailed.
    - clusterSelector: nothing (the cluster is not the RayJob's).
    - deletionStrategy set (feature gate RayJobDeletionPolicy, on by default in v1.7.0) wins over
      shutdownAfterJobFinishes: deletionRules go to handleDeletionRules, which applies each rule that
      isDeletionRuleMatched (jobStatus or jobDeploymentStatus compared exactly) after its ttlSeconds;
      otherwise handleLegacyDeletionPolicy applies onSuccess on SUCCEEDED, onFailure on FAILED, and no
      policy for any other job status, after ttlSecondsAfterFinished (DeleteNone: nothing).
    - shutdownAfterJobFinishes: handleShutdownAfterJobFinishes, whatever the status, deletes the
      RayCluster (deleteClusterResources; the submitter Job and the RayJob stay) after
      ttlSecondsAfterFinished. It deletes the RayJob itself instead only when the operator runs with
      DELETE_RAYJOB_CR_AFTER_JOB_FINISHES=true (k8s/kuberay does not set it).
    - none of them: nothing."""
    assert job_deployment_status in ("Complete", "Failed"), "not a terminal RayJob"
    if spec.get("clusterSelector"):
        return []
    strategy = spec.get("deletionStrategy")
    if strategy is not None:
        rules = strategy.get("deletionRules")
        if rules is not None:
            return [(rule["policy"], rule["condition"].get("ttlSeconds", 0)) for rule in rules
                    if (rule["condition"].get("jobStatus") == job_status if "jobStatus" in rule["condition"]
                        else rule["condition"].get("jobDeploymentStatus") == job_deployment_status)]
        legacy = {"SUCCEEDED": strategy["onSuccess"], "FAILED": strategy["onFailure"]}.get(job_status)
        if legacy is None or legacy["policy"] == "DeleteNone":
            return []
        return [(legacy["policy"], spec.get("ttlSecondsAfterFinished", 0))]
    if spec.get("shutdownAfterJobFinishes", False):
        return [("DeleteCluster", spec.get("ttlSecondsAfterFinished", 0))]
    return []

# The labels KubeRay v1.7.0 gives every Ray pod (common/pod.go labelPod; keys in utils/constant.go),
# and the three a pod template cannot override.
def ray_pod_default_labels(node_type: str, group: str, cluster: str) -> dict:
    return {"ray.io/is-ray-node": "yes", "ray.io/cluster": cluster, "ray.io/node-type": node_type,
            "ray.io/group": group, "ray.io/identifier": f"{cluster}-{node_type}",
            "app.kubernetes.io/name": "kuberay", "app.kubernetes.io/created-by": "kuberay-operator"}


NOT_OVERRIDABLE = ("ray.io/node-type", "ray.io/group", "ray.io/cluster")


def rayjob_cluster_name(rayjob_name: str, suffix: str = "x7k2p") -> str:
    """The RayJob's RayCluster (status.rayClusterName): rayjob_controller.go initRayJobStatusIfNeed ->
    utils.GenerateRayClusterName, `<rayjob>-<5 random characters>`."""
    return f"{rayjob_name}-{suffix}"


def ray_pod_labels(group_spec: dict, node_type: str, group: str, cluster: str) -> dict:
    """The labels of a head/worker pod: common/pod.go DefaultHeadPodTemplate / DefaultWorkerPodTemplate
    merge the template's labels with the group's `labels` (mergeLabels), and labelPod puts them over
    its defaults, except NOT_OVERRIDABLE. (GenerateIdentifier's value stays under CheckLabel's 63
    characters: a RayJob's cluster name has at most 53.)"""
    merged = {**group_spec["template"].get("metadata", {}).get("labels", {}), **group_spec.get("labels", {})}
    labels = ray_pod_default_labels(node_type, group, cluster)
    labels.update({k: v for k, v in merged.items() if k not in NOT_OVERRIDABLE})
    return labels


def ray_pods(rayjob: dict) -> dict[str, dict]:
    """name ("head", "worker:<group>") -> labels of the Ray pods KubeRay creates for the RayJob."""
    spec = rayjob["spec"]["rayClusterSpec"]
    cluster = rayjob_cluster_name(rayjob["metadata"]["name"])
    # utils.RayNodeHeadGroupLabelValue: the head's ray.io/group
    pods = {"head": ray_pod_labels(spec["headGroupSpec"], "head", "headgroup", cluster)}
    for group in spec.get("workerGroupSpecs", []):
        pods[f"worker:{group['groupName']}"] = ray_pod_labels(group, "worker", group["groupName"], cluster)
    return pods


def head_service_selector(cluster: str, labels: dict | None = None) -> dict:
    """common/service.go BuildServiceForHeadPod: the keys of HeadServiceLabels, each with its value
    from `labels` where given there."""
    head_service_labels = {"ray.io/cluster": cluster, "ray.io/node-type": "head",
                           "ray.io/identifier": f"{cluster}-head", "app.kubernetes.io/name": "kuberay",
                           "app.kubernetes.io/created-by": "kuberay-operator"}
    return {k: (labels or {}).get(k, v) for k, v in head_service_labels.items()}


def head_services(rayjob: dict) -> dict[str, dict]:
    """name -> selector of the head Services KubeRay creates for a RayJob (names: utils.GenerateHeadServiceName):
    - `<raycluster>-head-svc`: raycluster_controller.go reconcileHeadService, which passes the head
      template's app.kubernetes.io/name (if any) to BuildServiceForHeadPod;
    - `<rayjob>-head-svc`: rayjob_controller.go reconcileServices -> common/job.go
      BuildHeadServiceForRayJob, which passes no labels: HeadServiceLabels' values as they are."""
    cluster = rayjob_cluster_name(rayjob["metadata"]["name"])
    template_labels = (rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
                       .get("metadata", {}).get("labels", {}))
    own = {k: v for k, v in template_labels.items() if k == "app.kubernetes.io/name"}
    return {f"{cluster}-head-svc": head_service_selector(cluster, own),
            f"{rayjob['metadata']['name']}-head-svc": head_service_selector(cluster)}


# The deadlines KubeRay v1.7.0 checks in each non-terminal jobDeploymentStatus: rayjob_controller.go
# Reconcile, case Initializing (checkActiveDeadlineAndUpdateStatusIfNeeded, then
# checkPreRunningDeadlineAndUpdateStatusIfNeeded), case Waiting (the pre-running one only), case
# Running (the active one only). A RayJob is Running as soon as its submitter Job exists (case
# Initializing, createK8sJobIfNeed), whether or not the submitter pod ever starts; the submitter Job
# itself gets only a backoffLimit (createNewK8sJob; rayjob_types.go SubmitterConfig has nothing else),
# so a submitter that never starts is bounded by activeDeadlineSeconds alone.
DEADLINES_CHECKED = {
    "Initializing": ("activeDeadlineSeconds", "preRunningDeadlineSeconds"),
    "Waiting": ("preRunningDeadlineSeconds",),
    "Running": ("activeDeadlineSeconds",),
}


def phase_bounds(spec: dict) -> dict[str, int]:
    """phase -> the first deadline (seconds from the RayJob's start) that ends it; a phase missing
    from the result has none. A deadline is set when positive (the CRD's minimum is 1)."""
    bounds = {}
    for phase, checked in DEADLINES_CHECKED.items():
        set_ = [spec[key] for key in checked if spec.get(key, 0) > 0]
        if set_:
            bounds[phase] = min(set_)
    return bounds


def submitter_pod_labels(rayjob: dict) -> dict:
    """The labels of the submitter pod: rayjob_controller.go getSubmitterTemplate keeps the
    submitterPodTemplate's labels and adds ray.io/originated-from-cr-name, ray.io/originated-from-crd
    and app.kubernetes.io/created-by (utils.RayOriginatedFromCRNameLabelKey, ...)."""
    labels = dict(rayjob["spec"]["submitterPodTemplate"].get("metadata", {}).get("labels", {}))
    labels.update({"ray.io/originated-from-cr-name": rayjob["metadata"]["name"],
                   "ray.io/originated-from-crd": "RayJob", "app.kubernetes.io/created-by": "kuberay-operator"})
    return labels


def check_name(name: str) -> str:
    """utils.CheckName: a name over 50 characters loses its first characters down to 50; a leading
    digit or punctuation becomes 'r'."""
    if len(name) > 50:
        name = name[len(name) - 50:]
    if name[0].isdigit() or not name[0].isalnum():
        name = "r" + name[1:]
    return name


def auth_secret(cluster: str) -> tuple[str, dict]:
    """(name, labels) of the token Secret KubeRay generates for a RayCluster with authOptions.mode
    token and no secretName: raycluster_controller.go reconcileAuthSecret (name utils.CheckName of the
    cluster's) -> createAuthSecret (label ray.io/cluster: the cluster's full name)."""
    return check_name(cluster), {"ray.io/cluster": cluster}


def selects(selector: dict, labels: dict) -> bool:
    """A label selector (matchLabels, matchExpressions In/NotIn/Exists/DoesNotExist) against labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True
