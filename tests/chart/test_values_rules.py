"""Bad values are rejected with a clear message; rendered values mean what they say."""
from __future__ import annotations

import json
import re
import shlex

import pytest
import yaml

from .conftest import VALUES_DIR
from .render import CHART_DIR, HelmError, documents, rayjob_of, template
from .schemas import pod_templates

# (name, --set overrides or values YAML, substrings the error must contain)
BAD_VALUES = [
    ("wrong-type-batch-size", ["job.batchSize=big"], ["batchSize", "integer"]),
    ("wrong-type-gpus", ["workerGroups.gpu.gpus=one"], ["gpus", "integer"]),
    ("unknown-top-level-key", ["replicas=3"], ["additional properties", "replicas"]),
    ("unknown-job-key", ["job.inputs=s3://a/b/"], ["additional properties", "inputs"]),
    ("unknown-worker-group-key", ["workerGroups.gpu.gpu=1"], ["additional properties", "gpu"]),
    ("negative-replicas", ["workerGroups.gpu.replicas=-1"], ["replicas", "minimum"]),
    # Worker groups are a map keyed by group name (KubeRay's ray-cluster chart's convention): the old list
    # form is refused by its type, a name by its pattern (a DNS label of at most 40 characters).
    ("worker-groups-as-a-list", ['json:workerGroups=[{"name": "gpu", "replicas": 1}]'],
     ["/workerGroups", "got array, want object"]),
    ("worker-group-name-not-a-label", ["json:workerGroups.GPU={}"], ["/workerGroups", "'GPU' not allowed"]),
    ("worker-group-name-too-long", ["json:workerGroups." + "g" * 41 + "={}"], ["/workerGroups", "g" * 41]),
    ("negative-backoff", ["rayJob.backoffLimit=-1"], ["backoffLimit", "minimum"]),
    ("bad-device", ["job.device=tpu"], ["device"]),
    ("bad-input-uri", ["job.input=/local/dir"], ["input"]),
    ("rayStartParams-not-string", ["head.rayStartParams.num-gpus=0"], ["num-gpus", "string"]),
    # cpuFallback runs without GPUs (the schema's allOf "cpuFallback.enabled runs without GPUs").
    ("gpu-group-with-cpu-fallback", ["cpuFallback.enabled=true", "workerGroups.gpu.gpus=1"],
     ["/workerGroups/gpu/gpus", "maximum: got 1, want 0"]),
    ("cuda-with-cpu-fallback", ["cpuFallback.enabled=true", "job.device=cuda"], ["/job/device", "'not' failed"]),
    ("gpus-per-actor-with-cpu-fallback", ["cpuFallback.enabled=true", "job.numGpusPerWorker=1"],
     ["/job/numGpusPerWorker", "maximum: got 1, want 0"]),
    ("min-above-max", ["workerGroups.gpu.minReplicas=3", "workerGroups.gpu.maxReplicas=1"],
     ["workerGroups.gpu: minReplicas (3) is greater than maxReplicas (1)"]),
    ("replicas-outside-range", ["workerGroups.gpu.replicas=5", "workerGroups.gpu.maxReplicas=2",
                                "workerGroups.gpu.minReplicas=0"], ["workerGroups.gpu: replicas (5) must lie between"]),
    # Every phase's bound fits in the whole-run bound (rayjob_controller.go checks activeDeadlineSeconds in
    # Initializing and Running alike): a whole-run deadline shorter than cluster start + GPU wait is refused.
    ("active-deadline-inside-the-start-bounds", ["rayJob.activeDeadlineSeconds=3600"],
     ["rayJob.activeDeadlineSeconds (3600) must exceed rayJob.preRunningDeadlineSeconds + job.nodeWait (3600)"]),
    ("rerun-not-a-name-part", ["rerun=Tuesday"], ["rerun"]),
    # KubeRay v1.7.0 ray-operator/controllers/ray/utils/validation.go ValidateRayJobSpec, in the schema
    # (rayJob.allOf; each branch's description says why):
    ("ttl-without-shutdown", ["rayJob.shutdownAfterJobFinishes=false", "rayJob.ttlSecondsAfterFinished=60"],
     ["/rayJob/ttlSecondsAfterFinished", "maximum: got 60, want 0"]),
    # ... validateDeletionConfiguration:
    ("rules-with-shutdown", ["rayJob.deletionStrategy.deletionRules[0].policy=DeleteCluster",
                             "rayJob.deletionStrategy.deletionRules[0].condition.jobStatus=FAILED"],
     ["/rayJob/shutdownAfterJobFinishes", "value must be false"]),
    ("rules-with-legacy", ["rayJob.shutdownAfterJobFinishes=false",
                           "rayJob.deletionStrategy.deletionRules[0].policy=DeleteCluster",
                           "rayJob.deletionStrategy.deletionRules[0].condition.jobStatus=FAILED",
                           "rayJob.deletionStrategy.onSuccess.policy=DeleteCluster",
                           "rayJob.deletionStrategy.onFailure.policy=DeleteCluster"], ["/rayJob/deletionStrategy", "'not' failed"]),
    # ... validateDeletionRules: DeleteWorkers with autoscaling.
    ("autoscaling-with-DeleteWorkers-rule", ["autoscaling.enabled=true", "rayJob.shutdownAfterJobFinishes=false",
                                             "rayJob.deletionStrategy.deletionRules[0].policy=DeleteWorkers",
                                             "rayJob.deletionStrategy.deletionRules[0].condition.jobStatus=FAILED"],
     ["/rayJob/deletionStrategy/deletionRules/0/policy", "'not' failed"]),
    # ... validateLegacyDeletionPolicies: DeleteWorkers with autoscaling, DeleteNone with shutdown.
    ("autoscaling-with-legacy-DeleteWorkers", ["autoscaling.enabled=true",
                                               "rayJob.deletionStrategy.onSuccess.policy=DeleteCluster",
                                               "rayJob.deletionStrategy.onFailure.policy=DeleteWorkers"],
     ["/rayJob/deletionStrategy/onFailure/policy", "'not' failed"]),
    ("legacy-DeleteNone-with-shutdown", ["rayJob.deletionStrategy.onSuccess.policy=DeleteNone",
                                         "rayJob.deletionStrategy.onFailure.policy=DeleteCluster"],
     ["/rayJob/deletionStrategy/onSuccess/policy", "'not' failed"]),
    # ... validateDeletionCondition.
    ("rule-with-two-conditions", ["rayJob.shutdownAfterJobFinishes=false",
                                  "rayJob.deletionStrategy.deletionRules[0].policy=DeleteCluster",
                                  "rayJob.deletionStrategy.deletionRules[0].condition.jobStatus=FAILED",
                                  "rayJob.deletionStrategy.deletionRules[0].condition.jobDeploymentStatus=Failed"],
     ["/rayJob/deletionStrategy/deletionRules/0/condition", "'oneOf' failed"]),
    ("rule-without-a-condition", ["rayJob.shutdownAfterJobFinishes=false",
                                  "rayJob.deletionStrategy.deletionRules[0].policy=DeleteCluster",
                                  "rayJob.deletionStrategy.deletionRules[0].condition.ttlSeconds=60"],
     ["/rayJob/deletionStrategy/deletionRules/0/condition", "'oneOf' failed"]),
    # ... validateDeletionRules (one rule per condition and policy) and validateTTLConsistency.
    ("duplicate-rule", ["rayJob.shutdownAfterJobFinishes=false",
                        "rayJob.deletionStrategy.deletionRules[0].policy=DeleteCluster",
                        "rayJob.deletionStrategy.deletionRules[0].condition.jobStatus=FAILED",
                        "rayJob.deletionStrategy.deletionRules[1].policy=DeleteCluster",
                        "rayJob.deletionStrategy.deletionRules[1].condition.jobStatus=FAILED"],
     ["deletionRules[1]: a second DeleteCluster rule for jobStatus FAILED"]),
    ("cluster-before-workers", ["rayJob.shutdownAfterJobFinishes=false",
                                "rayJob.deletionStrategy.deletionRules[0].policy=DeleteWorkers",
                                "rayJob.deletionStrategy.deletionRules[0].condition.jobStatus=FAILED",
                                "rayJob.deletionStrategy.deletionRules[0].condition.ttlSeconds=600",
                                "rayJob.deletionStrategy.deletionRules[1].policy=DeleteCluster",
                                "rayJob.deletionStrategy.deletionRules[1].condition.jobStatus=FAILED",
                                "rayJob.deletionStrategy.deletionRules[1].condition.ttlSeconds=60"],
     ["for jobStatus FAILED: the DeleteCluster ttlSeconds (60) must not be below the DeleteWorkers one (600)"]),
    ("kueue-without-shutdown", ["rayJob.shutdownAfterJobFinishes=false", "rayJob.queueName=gpu-queue"],
     ["/rayJob/shutdownAfterJobFinishes", "value must be true"]),
    ("suspend-without-shutdown", ["rayJob.shutdownAfterJobFinishes=false", "rayJob.suspend=true"],
     ["/rayJob/shutdownAfterJobFinishes", "value must be true"]),
    # Ray 2.60 ray._private.services.determine_plasma_store_config: a store larger than /dev/shm goes to disk.
    ("object-store-above-shm", ["workerDefaults.shmSize=1Gi",
                                'json:workerDefaults.rayStartParams={"object-store-memory": "2000000000"}'],
     ["gpu: rayStartParams object-store-memory (2000000000 bytes) does not fit in /dev/shm (1Gi"]),
    ("object-store-above-memory", ['json:head.rayStartParams={"num-cpus": "0", "object-store-memory": "9000000000"}'],
     ["head: rayStartParams object-store-memory", "memory limit"]),
    # A memory size the chart computes with (definitions/memory): bytes or <number><unit>.
    ("unreadable-shm-size", ["head.shmSize=2e9"], ["/head/shmSize", "'2e9' does not match pattern"]),
    ("unreadable-memory", ["workerDefaults.memory=500m"], ["/workerDefaults/memory", "'500m' does not match pattern"]),
    # --num-workers 1-MAX needs room for one actor.
    ("no-gpu-for-actors", ["workerGroups.gpu.gpus=0"],
     ["no worker group can run an inference actor", "cpuFallback.enabled=true"]),
    ("actor-larger-than-pod", ["job.numGpusPerWorker=2"], ["no worker group can run an inference actor"]),
    ("bad-run-id", ["job.runId=Nightly_1"], ["runId"]),
    ("legacy-policy-half", ["rayJob.deletionStrategy.onSuccess.policy=DeleteCluster"], ["onFailure"]),
    ("name-too-long", ["fullnameOverride=" + "a" * 48], ["fullnameOverride"]),
    ("name-not-dns1035", ["fullnameOverride=9lives"], ["fullnameOverride"]),
    ("no-worker-groups-left", ["workerGroups.gpu=null"], ["/workerGroups", "minProperties: got 0, want 1"]),
    ("no-worker-groups", ["workerGroups=null"], ["missing property 'workerGroups'"]),
    # KubeRay v1.7.0 common/pod.go labelPod's own labels: its head Services select the head by them
    # (the schema's definitions/podLabels).
    ("kuberay-label-in-head-labels", ["head.labels.app\\.kubernetes\\.io/name=ray"],
     ["/head/labels/app.kubernetes.io~1name", "false schema"]),
    ("kuberay-label-in-common-labels", ["commonLabels.ray\\.io/identifier=x"],
     ["/commonLabels/ray.io~1identifier", "false schema"]),
    ("kuberay-label-in-group-labels", ["workerGroups.gpu.labels.app\\.kubernetes\\.io/created-by=me"],
     ["/workerGroups/gpu/labels/app.kubernetes.io~1created-by", "false schema"]),
    ("kuberay-label-in-default-labels", ["workerDefaults.labels.ray\\.io/group=x"],
     ["/workerDefaults/labels/ray.io~1group", "false schema"]),
]


@pytest.mark.parametrize("sets,needles", [(s, n) for _, s, n in BAD_VALUES], ids=[b[0] for b in BAD_VALUES])
def test_bad_values_rejected(helm_bin, sets, needles):
    with pytest.raises(HelmError) as excinfo:
        template(set_values=["image.repository=registry.example.com/ml/batchinfer", *sets], helm_bin=helm_bin)
    message = excinfo.value.stderr
    for needle in needles:
        assert needle in message, f"{needle!r} not in helm's message:\n{message}"


def test_bad_values_rejected_by_helm_install_too(helm_bin):
    """`helm install --dry-run=client` (no cluster needed) applies the same schema."""
    from .render import helm
    proc = helm("install", "x", str(CHART_DIR), "--dry-run=client", "--set", "job.topK=-3",
                helm_bin=helm_bin, check=False)
    assert proc.returncode != 0
    assert "topK" in proc.stderr


def _container(template_spec: dict) -> dict:
    return template_spec["spec"]["containers"][0]


def test_defaults(render):
    rayjob = rayjob_of(render("defaults"))
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] == 0
    assert "deletionStrategy" not in spec
    assert spec["backoffLimit"] == 0 and spec["preRunningDeadlineSeconds"] == 1800
    assert spec["submissionMode"] == "K8sJobMode"
    cluster = spec["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is False
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (group,) = cluster["workerGroupSpecs"]
    assert group["groupName"] == "gpu"
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (1, 1, 1)
    res = _container(group["template"])["resources"]
    assert res["limits"]["nvidia.com/gpu"] == 1
    assert str(res["requests"]["cpu"]) == "7" and res["requests"]["memory"] == "24Gi"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in group["template"]["spec"]["tolerations"]
    assert _container(cluster["headGroupSpec"]["template"])["image"] == "registry.example.com/ml/batchinfer:0.1.0"
    run_id = rayjob["metadata"]["labels"]["batchinfer.io/run-id"]
    assert shlex.split(spec["entrypoint"]) == [
        "batchinfer", "run", "--input", "s3://batchinfer/images/", "--output", f"s3://batchinfer/predictions/{run_id}/",
        "--model", "resnet50", "--weights", "default", "--device", "cuda", "--num-workers", "1-1", "--node-wait",
        "1800", "--resume",
        "--top-k", "5"]


def test_cpu_fallback_removes_every_gpu_request(render):
    docs = render("cpu")
    rayjob = rayjob_of(docs)
    text = repr(docs)
    assert "nvidia.com/gpu\': 1" not in text
    for name, tpl in pod_templates(rayjob):
        for c in tpl["spec"]["containers"]:
            for section in ("requests", "limits"):
                assert not any("gpu" in k for k in c.get("resources", {}).get(section, {})), (name, c["resources"])
            assert c["image"] == "registry.example.com/ml/batchinfer:0.1.0-cpu"
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[argv.index("--device") + 1] == "cpu"
    assert "--num-gpus-per-worker" not in argv
    # The same switch on the chart's default (GPU) worker group also works.
    rayjob = rayjob_of(render(None, "cpuFallback.enabled=true"))
    for _, tpl in pod_templates(rayjob):
        assert "nvidia.com/gpu" not in repr(tpl["spec"]["containers"][0].get("resources"))


def test_two_gpu_groups(render):
    rayjob = rayjob_of(render("two-gpu-groups"))
    groups = {g["groupName"]: g for g in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]}
    assert list(groups) == ["a100", "l4"]
    assert _container(groups["a100"]["template"])["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert groups["a100"]["replicas"] == 2 and groups["l4"]["replicas"] == 3
    assert groups["a100"]["template"]["spec"]["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}
    # a100 inherits the default toleration; l4 replaces the list with its own.
    assert len(groups["a100"]["template"]["spec"]["tolerations"]) == 1
    assert len(groups["l4"]["template"]["spec"]["tolerations"]) == 2
    assert "nodeAffinity" in groups["l4"]["template"]["spec"]["affinity"]
    assert groups["a100"]["rayStartParams"] == {"resources": '"{\\"a100\\": 1}"'}
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[argv.index("--label-from-path") + 1] == "^.*/([^/]+)/[^/]+$"
    assert argv[argv.index("--num-gpus-per-worker") + 1] == "0.5"
    assert argv[-2:] == ["--rows-per-file", "50000"]


def test_autoscaling(render):
    rayjob = rayjob_of(render("autoscaling"))
    cluster = rayjob["spec"]["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"]["idleTimeoutSeconds"] == 120
    assert cluster["autoscalerOptions"]["upscalingMode"] == "Aggressive"
    assert cluster["autoscalerOptions"]["securityContext"]["capabilities"]["drop"] == ["ALL"]
    (group,) = cluster["workerGroupSpecs"]
    assert (group["minReplicas"], group["replicas"], group["maxReplicas"]) == (0, 1, 8)
    # The autoscaler sidecar in the head needs the API token; nothing else gets one.
    assert cluster["headGroupSpec"]["template"]["spec"]["automountServiceAccountToken"] is True
    assert group["template"]["spec"]["automountServiceAccountToken"] is False
    assert rayjob["spec"]["activeDeadlineSeconds"] == 86400
    assert rayjob["spec"]["preRunningDeadlineSeconds"] == 1800


def _env(tpl: dict) -> dict:
    return {e["name"]: e for e in tpl["spec"]["containers"][0].get("env", [])}


def test_existing_secret_credentials_by_reference_only(render):
    docs = render("existing-secret")
    rayjob = rayjob_of(docs)
    assert not [d for d in docs if d["kind"] == "Secret"]
    for name, tpl in pod_templates(rayjob):
        env = _env(tpl)
        if name == "submitter":
            assert not any(k.startswith("AWS_") for k in env), "the submitter needs no S3 access"
            continue
        assert env["AWS_ENDPOINT_URL"]["value"] == "http://seaweedfs.storage.svc:8333"
        assert env["AWS_REGION"]["value"] == "eu-west-1"
        for var, key in [("AWS_ACCESS_KEY_ID", "access-key"), ("AWS_SECRET_ACCESS_KEY", "secret-key"),
                         ("AWS_SESSION_TOKEN", "session-token")]:
            assert "value" not in env[var]
            assert env[var]["valueFrom"] == {"secretKeyRef": {"name": "batchinfer-s3", "key": key}}
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[argv.index("--weights") + 1] == "s3://models/resnet50/ckpt.pth"
    assert "--resume" in argv and argv[argv.index("--limit") + 1] == "100000"


def test_irsa_service_account(render):
    docs = render("irsa")
    (sa,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert sa["metadata"]["name"] == "batchinfer-reader"
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/batchinfer-s3"}
    rayjob = rayjob_of(docs)
    for _, tpl in pod_templates(rayjob):
        assert tpl["spec"]["serviceAccountName"] == "batchinfer-reader"
        assert not any(k in _env(tpl) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
    labels = rayjob["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert labels["kueue.x-k8s.io/priority-class"] == "batch-low"
    assert rayjob["spec"]["suspend"] is True and rayjob["spec"]["shutdownAfterJobFinishes"] is True
    assert rayjob["spec"]["deletionStrategy"] == {"onSuccess": {"policy": "DeleteCluster"},
                                                  "onFailure": {"policy": "DeleteWorkers"}}


def test_existing_service_account(render):
    docs = render(None, "serviceAccount.create=false", "serviceAccount.name=team-sa")
    assert not [d for d in docs if d["kind"] == "ServiceAccount"]
    for _, tpl in pod_templates(rayjob_of(docs)):
        assert tpl["spec"]["serviceAccountName"] == "team-sa"


def test_sidecar_mode_has_no_submitter_template(render):
    """KubeRay rejects submitterPodTemplate/submitterConfig in SidecarMode."""
    spec = rayjob_of(render("deletion-rules"))["spec"]
    assert spec["submissionMode"] == "SidecarMode"
    assert "submitterPodTemplate" not in spec and "submitterConfig" not in spec
    assert spec["shutdownAfterJobFinishes"] is False and spec["ttlSecondsAfterFinished"] == 0


@pytest.mark.parametrize("values", ["defaults", "cpu", "two-gpu-groups", "autoscaling", "existing-secret", "irsa"])
def test_restricted_pods_labels_and_volumes(render, values):
    docs = render(values)
    rayjob = rayjob_of(docs)
    for doc in docs:
        labels = doc["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                    "app.kubernetes.io/managed-by", "helm.sh/chart"):
            assert key in labels, (doc["kind"], key)
    for name, tpl in pod_templates(rayjob):
        psc = tpl["spec"]["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert tpl["metadata"]["labels"]["app.kubernetes.io/instance"] == "batchinfer"
        for c in tpl["spec"]["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], name
            assert sc["runAsNonRoot"] is True
        if name == "submitter":
            assert tpl["spec"]["restartPolicy"] == "Never"
            continue
        volumes = {v["name"]: v for v in tpl["spec"]["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in tpl["spec"]["containers"][0]["volumeMounts"]}
        if "/dev/shm" in mounts:  # else KubeRay adds one (tests/chart/test_kuberay_rules.py)
            assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
        # KubeRay's name for the log volume it shares with the autoscaler sidecar (common/pod.go RayLogVolumeName).
        assert mounts["/tmp/ray"] == "ray-logs" and volumes["ray-logs"]["emptyDir"] == {}


@pytest.mark.parametrize("arg", [
    "it's", 'say "hi"', "$(touch /tmp/pwned)", "`id`", "a b\tc", "semi;colon", "back\\slash", "new\nline", "*", "",
])
def test_entrypoint_quoting_roundtrip(helm_bin, arg, tmp_path):
    """Every value reaches `batchinfer` as exactly one argv word, through the shell KubeRay uses."""
    values = tmp_path / "v.yaml"
    import yaml
    values.write_text(yaml.safe_dump({"job": {"labelFromPath": "x(.*)", "extraArgs": ["--note", arg]}}))
    entrypoint = rayjob_of(documents(template([VALUES_DIR / "defaults.yaml", values], helm_bin=helm_bin)))["spec"]["entrypoint"]
    argv = shlex.split(entrypoint)
    assert argv[-2:] == ["--note", arg]
    # Through a real shell, as the submitter's `bash -c` and Ray's job supervisor do.
    import subprocess, sys
    out = subprocess.run(["bash", "-c", f"{sys.executable} -c 'import sys,json; print(json.dumps(sys.argv[1:]))' "
                          + entrypoint.split(" ", 1)[1]], capture_output=True, text=True, check=True).stdout
    import json
    assert json.loads(out)[-2:] == ["--note", arg]


def test_no_secret_values_rendered(helm_bin, tmp_path):
    """Credentials cannot be passed as values, and nothing secret-looking is rendered."""
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    for sets in (["s3.accessKey=" + secret], ["s3.existingSecret.secretAccessKey=" + secret],
                 ["extraEnv[0].name=X", "extraEnv[0].value=ok", "s3.secretKey=" + secret]):
        with pytest.raises(HelmError) as excinfo:
            template(set_values=sets, helm_bin=helm_bin)
        assert "additional properties" in excinfo.value.stderr
    from .conftest import VALUES_FILES
    for f in VALUES_FILES:
        text = template([f], helm_bin=helm_bin)
        assert secret not in text
        for doc in documents(text):
            assert doc["kind"] != "Secret"
            for name, tpl in (pod_templates(doc) if doc["kind"] == "RayJob" else []):
                for c in tpl["spec"]["containers"]:
                    for e in c.get("env", []):
                        if any(w in e["name"] for w in ("SECRET", "TOKEN", "PASSWORD", "ACCESS_KEY")):
                            assert "value" not in e and "secretKeyRef" in e["valueFrom"], (f.name, name, e)


def test_retried_attempts_resume(render):
    """A RayJob retry (rayJob.backoffLimit > 0) or a re-applied run with the same runId reruns the
    same entrypoint: by default it passes --resume, so it finishes the earlier attempt's work
    (tests/reliability/test_faults.py kills a driver and resumes); with overwrite it starts over
    instead (--resume and --overwrite contradict each other)."""
    default = shlex.split(rayjob_of(render())["spec"]["entrypoint"])
    assert "--resume" in default and "--overwrite" not in default
    retried = rayjob_of(render(None, "rayJob.backoffLimit=2"))
    assert retried["spec"]["backoffLimit"] == 2 and shlex.split(retried["spec"]["entrypoint"]) == default
    overwrite = shlex.split(rayjob_of(render(None, "job.overwrite=true"))["spec"]["entrypoint"])
    assert "--overwrite" in overwrite and "--resume" not in overwrite


CHART_ONLY_JOB_VALUES = {"runId", "outputPerRun", "extraArgs"}


def test_every_job_value_is_a_run_flag_the_cli_parses(render, tmp_path):
    """Each job value becomes the `batchinfer run` flag of the same name in kebab-case with no template
    line of its own (_entrypoint.tpl batchinfer.jobArgs), so a new flag needs only a value and its schema.
    With every value changed, the rendered argv must parse with the CLI's own parser and carry each
    value into the configuration field its flag defines."""
    from batchinfer.cli import build_parser
    from batchinfer.config import JobConfig, flag_fields

    changed = {"input": "s3://in/photos/", "output": "s3://out/preds/", "model": "resnet18",
               "weights": "s3://models/ckpt.pth", "categories": "s3://models/labels.txt", "batchSize": 64,
               "device": "cpu", "numWorkers": 3, "numGpusPerWorker": 0.5, "topK": 3,
               "labelFromPath": "^(\\w+) it's/", "limit": 2000000, "overwrite": True, "nodeWait": 2400,
               "stallTimeout": 900}
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["job"]
    assert set(values) - CHART_ONLY_JOB_VALUES == set(changed) | {"resume"}, "a new job value: add it here"
    values_file = tmp_path / "every-flag.yaml"
    values_file.write_text(yaml.safe_dump({"image": {"repository": "registry.example.com/ml/batchinfer"},
                                           "job": {**changed, "outputPerRun": False}}))
    argv = shlex.split(rayjob_of(render(values_file))["spec"]["entrypoint"])
    assert argv[:2] == ["batchinfer", "run"]
    parsed = vars(build_parser().parse_args(argv[1:]))
    field_of_flag = {spec.name: spec_field.name for spec_field, spec in flag_fields(JobConfig)}
    for key, value in changed.items():
        flag = "--" + re.sub(r"(?<!^)(?=[A-Z])", "-", key).lower()
        assert flag in field_of_flag, f"job.{key}: `batchinfer run` has no {flag}"
        assert parsed[field_of_flag[flag]] == (value if key != "numWorkers" else (3, 3)), key
    assert "--resume" not in argv  # resume is dropped when overwrite is set: they contradict each other


def test_a_removed_group_kept_as_null_in_a_release_validates_and_renders_nothing() -> None:
    """`gpu: null` in a values file removes the chart's default group, and Helm stores that null in the
    release: `helm upgrade --reuse-values` validates and renders the stored values with it (found on the
    real cluster, tests/cluster/test_2_reruns.py). The schema takes null for a group; the templates skip it."""
    import jsonschema

    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    values["image"]["repository"] = "registry.example.com/batchinfer"
    values["workerGroups"] = {"gpu": None, "cpu": {"replicas": 1}}
    assert list(jsonschema.Draft7Validator(schema).iter_errors(values)) == []
