"""2d/2e: autoscaling from zero workers, a worker pod killed mid-run, a job stopped by hand."""

from __future__ import annotations

import time

from tests.cluster import docblocks
from tests.cluster.conftest import BUCKET, NAMESPACE, Cluster

LOCAL = "-f k8s/kind/values-cpu.yaml -f k8s/local/values.yaml --set s3.endpoint=\"$BATCHINFER_S3_ENDPOINT\""
MANY_PREFIX = "many/"
MANY = 1500  # a run of a few minutes on one CPU actor: the fault lands well inside it


def seed_many(cluster: Cluster, samples: set[str]) -> set[str]:
    """MANY copies of the sample photos (the corrupt one included) under many/."""
    client = cluster.s3()
    existing = {o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=MANY_PREFIX)
                for o in page.get("Contents", [])}
    sources = sorted(samples)
    wanted = {f"{MANY_PREFIX}{i:04d}-{key.rsplit('/', 1)[-1]}": key for i, key in
              zip(range(MANY), (sources[j % len(sources)] for j in range(MANY)))}
    bodies = {key: client.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in sources}
    for target, source in wanted.items():
        if target not in existing:
            client.put_object(Bucket=BUCKET, Key=target, Body=bodies[source])
    return set(wanted)


def pods(cluster: Cluster, selector: str) -> list[dict]:
    return cluster.kubectl_json(f"-n {NAMESPACE} get pods -l {selector}")["items"]


def wait_for(what: str, predicate, timeout: float = 300, interval: float = 2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_worker_group_scales_up_from_zero_and_back(cluster: Cluster, seeded) -> None:
    """The Ray autoscaler adds the worker the job's actors wait for, and removes it when idle; the
    cluster then stays up for ttlSecondsAfterFinished so that the scale-down can be seen."""
    cluster.sh(f"helm install scale helm/batchinfer -n {NAMESPACE} {LOCAL} --set job.runId=scale "
               # The autoscaler sidecar (250m) joins the head: the head gives up as much, so that the
               # worker still fits beside them on the 2-CPU node.
               "--set head.cpu=500m --set autoscaling.enabled=true --set autoscaling.idleTimeoutSeconds=15 "
               """--set-json 'workerGroups.cpu={"replicas":0,"minReplicas":0,"maxReplicas":1}' """
               "--set rayJob.ttlSecondsAfterFinished=150")
    start = time.monotonic()
    workers = "app.kubernetes.io/instance=scale,ray.io/node-type=worker"
    assert not pods(cluster, workers), "a worker group at 0 replicas starts no worker"
    first = wait_for("a worker pod from the autoscaler", lambda: pods(cluster, workers), timeout=600)
    up_s = time.monotonic() - start
    job = cluster.wait_rayjob("scale-batchinfer-scale")
    assert job["status"]["jobStatus"] == "SUCCEEDED", job["status"]
    cluster.assert_each_input_once("predictions/scale/")
    wait_for("the idle worker to be removed", lambda: not pods(cluster, workers), timeout=300)
    down_s = time.monotonic() - start
    assert pods(cluster, "app.kubernetes.io/instance=scale,ray.io/node-type=head"), "the head outlived the scale-down"
    print(f"2d: worker pod {first[0]['metadata']['name']} appeared {up_s:.0f} s after install; removed at {down_s:.0f} s")
    cluster.sh(f"helm uninstall scale -n {NAMESPACE} --wait --timeout 3m")
    cluster.wait_gone("pods -l app.kubernetes.io/instance=scale")


def test_worker_pod_deleted_mid_run_loses_nothing(cluster: Cluster, seeded) -> None:
    inputs = seed_many(cluster, seeded)
    cluster.sh(f"helm install fault helm/batchinfer -n {NAMESPACE} {LOCAL} --set job.runId=fault "
               f"--set job.input=s3://{BUCKET}/{MANY_PREFIX}")
    workers = "app.kubernetes.io/instance=fault,ray.io/node-type=worker"
    cluster.wait_rayjob("fault-batchinfer-fault", until=("Running",))
    # Mid-run: the pipeline (the job's second dataset, after the listing) has run for a while, with
    # its inference actor on the worker; the fault must land before the commit.
    wait_for("the pipeline to start", lambda: cluster.sh(
        f"kubectl -n {NAMESPACE} logs job/fault-batchinfer-fault", check=False).stdout.count(
        "Starting execution of Dataset") >= 2, timeout=600, interval=1)
    time.sleep(20)
    assert "_SUCCESS" not in str(cluster.s3().list_objects_v2(Bucket=BUCKET, Prefix="predictions/fault/")), \
        "the run ended before the fault"
    victim = pods(cluster, workers)[0]["metadata"]["name"]
    cluster.sh(f"kubectl -n {NAMESPACE} delete pod {victim} --wait=false")
    job = cluster.wait_rayjob("fault-batchinfer-fault")
    assert job["status"]["jobStatus"] == "SUCCEEDED", job["status"]
    rows = cluster.output_rows("predictions/fault/")
    paths = sorted(row["path"].split(f"{BUCKET}/", 1)[-1] for row in rows)
    assert paths == sorted(inputs), f"{len(paths)} rows for {len(inputs)} inputs"
    replacement = [p["metadata"]["name"] for p in pods(cluster, workers)]
    print(f"2e: deleted {victim} mid-run; RayJob SUCCEEDED with {len(rows)} rows, each input once; workers now {replacement}")
    cluster.sh(f"helm uninstall fault -n {NAMESPACE} --wait --timeout 3m")


def test_job_stopped_through_the_documented_path_deletes_its_cluster(cluster: Cluster, seeded) -> None:
    """`ray job stop` through the chart README's port-forward and token (the ray-dashboard block)."""
    seed_many(cluster, seeded)
    cluster.sh(f"helm install classify helm/batchinfer -n {NAMESPACE} {LOCAL} --set job.runId=stop "
               f"--set job.input=s3://{BUCKET}/{MANY_PREFIX}")
    job = cluster.wait_rayjob("classify-batchinfer-stop", until=("Running",))
    wait_for("the Ray job to run", lambda: cluster.kubectl_json(
        f"-n {NAMESPACE} get rayjob classify-batchinfer-stop")["status"].get("jobStatus") == "RUNNING", timeout=600)
    ray_cluster = cluster.kubectl_json(f"-n {NAMESPACE} get rayjob classify-batchinfer-stop")["status"]["rayClusterName"]
    # Both head Services find the head pod (the chart leaves KubeRay's app.kubernetes.io/name alone).
    for service in ("classify-batchinfer-stop-head-svc", f"{ray_cluster}-head-svc"):
        slices = wait_for(f"endpoints of {service}", lambda s=service: [
            e for sl in cluster.kubectl_json(f"-n {NAMESPACE} get endpointslices -l kubernetes.io/service-name={s}")["items"]
            for e in sl.get("endpoints") or []], timeout=120)
        assert slices, service
    submission = cluster.kubectl_json(f"-n {NAMESPACE} get rayjob classify-batchinfer-stop")["status"]["jobId"]
    cluster.sh(docblocks.script(docblocks.block("ray-dashboard"),
                                after=f"sleep 1; ray job stop --address http://localhost:8265 {submission}; kill %1"),
               timeout=300)
    job = cluster.wait_rayjob("classify-batchinfer-stop")
    assert job["status"]["jobStatus"] == "STOPPED", job["status"]
    cluster.wait_gone(f"raycluster {ray_cluster}", timeout=180)
    cluster.wait_gone("pods -l app.kubernetes.io/instance=classify,ray.io/is-ray-node=yes", timeout=180)
    print(f"2e: {submission} STOPPED; RayCluster {ray_cluster} and its pods deleted")
    cluster.sh(f"helm uninstall classify -n {NAMESPACE} --wait --timeout 3m")
