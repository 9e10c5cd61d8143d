"""Chart -> job: run what the rendered RayJob describes on a local multi-node Ray cluster.

Takes the entrypoint, the container env and the head/worker rayStartParams from the chart's render
(CPU values, S3 endpoint pointed at the local SeaweedFS), starts the Ray nodes the way KubeRay would
(`ray start` with those params plus --num-cpus from the container CPU limit), resolves the
secretKeyRef env like the kubelet does, submits the entrypoint with the exact shell command KubeRay
v1.7.0's K8sJobMode submitter runs (`bash -ce "... ray job submit --no-wait -- <entrypoint> ; ...
ray job logs --follow ..."`) and reads the Parquet rows back from S3.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support import RAY_ENV, start_cluster

from .kuberay_rules import ray_start_flags
from .render import documents, rayjob_of, template

VALUES = Path(__file__).resolve().parent / "values" / "local-ray.yaml"
BIN = Path(sys.executable).parent


def _cpu_count(quantity) -> int:
    text = str(quantity)
    return max(1, int(text[:-1]) // 1000) if text.endswith("m") else int(float(text))


def _resolve_env(container: dict, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The kubelet's job: literal values and secretKeyRef lookups."""
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets[ref["name"]][ref["key"]]
    return env


def kuberay_submit_command(address: str, job_id: str, entrypoint: str) -> str:
    """KubeRay v1.7.0 BuildJobSubmitCommand (K8sJobMode), joined with spaces as the controller does
    and run with /bin/bash -ce. The health-wait loop is replaced by the cluster fixture's wait."""
    words = ["if", "!", "ray", "job", "status", "--address", address, job_id, ">/dev/null", "2>&1", ";", "then",
             "ray", "job", "submit", "--address", address, "--no-wait", "--submission-id", job_id,
             "--", entrypoint.strip(), ";", "fi", ";",
             "ray", "job", "logs", "--address", address, "--follow", job_id]
    return " ".join(words)


@pytest.mark.slow
def test_rendered_rayjob_runs_on_local_ray(helm_bin, s3, samples, tmp_path):
    rayjob = rayjob_of(documents(template([VALUES], [f"s3.endpoint={s3.endpoint}"], helm_bin=helm_bin)))
    spec = rayjob["spec"]
    cluster_spec = spec["rayClusterSpec"]
    head = cluster_spec["headGroupSpec"]
    head_container = head["template"]["spec"]["containers"][0]
    secrets = {"batchinfer-s3": {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}}
    env = _resolve_env(head_container, secrets)
    assert env["AWS_ENDPOINT_URL"] == s3.endpoint
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["batchinfer", "run"] and argv[argv.index("--device") + 1] == "cpu"
    # One CPU inference actor per worker pod, as an autoscaling pool.
    assert argv[argv.index("--num-workers") + 1] == "1-2"

    # Head: the chart's rayStartParams (num-cpus "0": no tasks on the head; object-store-memory
    # derived from its shmSize), dashboard on loopback.
    head_params = {k: v for k, v in head["rayStartParams"].items() if k != "dashboard-host"}
    assert head_params["num-cpus"] == "0" and int(head_params["object-store-memory"]) > 0
    head_flags = ray_start_flags(head_params)
    # Workers: one `ray start` per replica, with the group's rayStartParams and KubeRay's --num-cpus
    # from the container's CPU limit.
    worker_flags = []
    for group in cluster_spec["workerGroupSpecs"]:
        container = group["template"]["spec"]["containers"][0]
        assert _resolve_env(container, secrets) == env
        assert "nvidia.com/gpu" not in container["resources"]["limits"]
        params = {"num-cpus": str(_cpu_count(container["resources"]["limits"]["cpu"])), **group["rayStartParams"]}
        worker_flags += [ray_start_flags(params)] * group["replicas"]
    assert len(worker_flags) == 2

    workdir = Path(f"/tmp/bi-chart-{os.getpid()}")  # short: Ray socket paths must stay under 108 bytes
    # The image has `batchinfer` and `ray` on PATH; here they are in the venv's bin.
    # authOptions.mode token: KubeRay v1.7.0 gives every Ray container and the submitter RAY_AUTH_MODE=token
    # and RAY_AUTH_TOKEN from the cluster's generated Secret (common/pod.go SetContainerTokenAuthEnvVars,
    # rayjob_controller.go configureSubmitterContainer); the job runs under it here too.
    assert cluster_spec["authOptions"]["mode"] == "token"
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}
    node_env = {**env, **auth, "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    cluster = start_cluster(workdir, head_flags, worker_flags, node_env)  # head, then one worker at a time
    try:
        nodes = cluster.alive_nodes()
        assert sorted(n.get("CPU", 0) for n in nodes) == [0, 1, 1] or sorted(
            n.get("CPU", 0) for n in nodes)[1:] == [1, 1], nodes
        job_id = f"rayjob-{uuid.uuid4().hex[:8]}"
        # The submitter pod has no S3 credentials: only PATH and Ray settings.
        submitter_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **RAY_ENV, "PYTHONUNBUFFERED": "1",
                         "RAY_DASHBOARD_ADDRESS": cluster.dashboard_url.split("://", 1)[1],
                         "RAY_JOB_SUBMISSION_ID": job_id, **auth}
        submitter_env["PATH"] = f"{BIN}:{submitter_env['PATH']}"
        command = kuberay_submit_command(cluster.dashboard_url, job_id, spec["entrypoint"])
        proc = subprocess.run(["/bin/bash", "-ce", "--", command], env=submitter_env, capture_output=True,
                              text=True, timeout=900)
        logs = proc.stdout + proc.stderr
        assert proc.returncode == 0, logs[-6000:]
        # KubeRay decides the RayJob's outcome from the dashboard's job status, as here (with the token).
        status = subprocess.run([str(BIN / "ray"), "job", "status", "--address", cluster.dashboard_url, job_id],
                                env=submitter_env, capture_output=True, text=True, timeout=120)
        said = status.stdout + status.stderr
        assert status.returncode == 0 and f"Job '{job_id}' succeeded" in said, (logs[-4000:], said[-2000:])
    finally:
        cluster.stop()

    # Read back what the job wrote.
    client = s3.client()
    output = argv[argv.index("--output") + 1]
    bucket, prefix = output[len("s3://"):].split("/", 1)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    assert f"{prefix}_SUCCESS" in keys, keys
    summary_key = f"{prefix.rstrip('/')}.batchinfer/summary.json"  # the run's own files sit beside the output
    summary = json.loads(client.get_object(Bucket=bucket, Key=summary_key)["Body"].read())
    import pyarrow.parquet as pq
    from pyarrow import fs

    s3fs = fs.S3FileSystem(endpoint_override=s3.endpoint.split("://", 1)[1], scheme="http",
                           access_key=s3.access_key, secret_key=s3.secret_key, region="us-east-1")
    rows = []
    for key in sorted(k for k in keys if k.endswith(".parquet")):
        rows += pq.read_table(f"{bucket}/{key}", filesystem=s3fs).to_pylist()
    assert len(rows) == int(samples["count"]), (len(rows), summary)
    by_name = {r["path"].rsplit("/", 1)[1]: r for r in rows}
    assert len(by_name) == len(rows)
    # Real predictions from the real model, and the quoted regex reached the job intact.
    assert by_name["coffee.png"]["error"] is None and "espresso" in by_name["coffee.png"]["label"].lower()
    assert by_name["coffee.png"]["true_label"] == "photos"
    assert by_name["checkerboard.jpg"]["true_label"] == "generated"
    assert len(by_name["chelsea.png"]["topk_labels"]) == 3
    assert by_name["truncated.jpg"]["error"]  # a corrupt file is a row with an error, not a crash
    assert all(r["model"] for r in rows)
