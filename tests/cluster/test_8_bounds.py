"""Issue #31 on the real cluster: a submitter that cannot start ends by its bound (and its Ray cluster
is deleted), and a changed S3 setting is a new run (a new RayJob name) with Helm."""

from __future__ import annotations

from tests.cluster.conftest import NAMESPACE, Cluster, uninstall

LOCAL = "-f k8s/kind/values-cpu.yaml -f k8s/local/values.yaml --set s3.endpoint=\"$BATCHINFER_S3_ENDPOINT\""


def test_submitter_that_cannot_start_ends_by_its_bound(cluster: Cluster, seeded) -> None:
    """The submitter's placement changed but not the head's (issue #31's first trigger): its pod stays
    Pending, the RayJob is Running (KubeRay created the submitter Job) where preRunningDeadlineSeconds
    no longer applies, and activeDeadlineSeconds ends it: Failed, DeadlineExceeded, cluster deleted."""
    cluster.sh(f"helm install nosub helm/batchinfer -n {NAMESPACE} {LOCAL} --set job.runId=nosub "
               """--set-json 'rayJob.submitter.nodeSelector={"batchinfer.io/no-such-node":"true"}' """
               "--set rayJob.preRunningDeadlineSeconds=300 --set job.nodeWait=30 --set rayJob.activeDeadlineSeconds=360")
    running = cluster.wait_rayjob("nosub-batchinfer-nosub", until=("Running", "Complete", "Failed"), timeout=300)
    assert running["status"]["jobDeploymentStatus"] == "Running", running["status"]
    ray_cluster = running["status"]["rayClusterName"]
    job = cluster.wait_rayjob("nosub-batchinfer-nosub", timeout=600)
    assert (job["status"]["jobDeploymentStatus"], job["status"]["reason"]) == ("Failed", "DeadlineExceeded"), job["status"]
    cluster.wait_gone(f"raycluster {ray_cluster}", timeout=180)
    cluster.wait_gone("pods -l app.kubernetes.io/instance=nosub,ray.io/is-ray-node=yes", timeout=180)
    print(f"#31: submitter never scheduled; RayJob Failed (DeadlineExceeded) at its 360 s bound, {ray_cluster} deleted")
    uninstall(cluster, "nosub")


def test_changed_s3_setting_is_a_new_run(cluster: Cluster, seeded) -> None:
    """`helm upgrade` changing only an s3.* value (the run id is the hash of what changes the run): a
    new RayJob name that KubeRay runs; Helm removes the old one."""
    cluster.sh(f"helm install s3id helm/batchinfer -n {NAMESPACE} {LOCAL}")
    (first,) = cluster.rayjobs("app.kubernetes.io/instance=s3id")
    cluster.wait_started(first["metadata"]["name"])
    cluster.sh(f"helm upgrade s3id helm/batchinfer -n {NAMESPACE} --reuse-values --set s3.region=eu-west-1")
    (second,) = cluster.rayjobs("app.kubernetes.io/instance=s3id")
    assert second["metadata"]["name"] != first["metadata"]["name"]
    assert second["metadata"]["labels"]["batchinfer.io/run-id"] != first["metadata"]["labels"]["batchinfer.io/run-id"]
    cluster.wait_started(second["metadata"]["name"])
    print(f"#31: s3.region changed: {first['metadata']['name']} -> {second['metadata']['name']}, started")
    uninstall(cluster, "s3id")
