"""2f: the deploy blocks of README.md, docs/kubernetes.md and the chart's README, run as written on the
local cluster, with these changes only (each named where it is made):

* placeholders filled: the image repository is the image cluster-up imported (`batchinfer`), plus the
  one-machine sizing (`-f k8s/kind/values-cpu.yaml -f k8s/local/values.yaml`) and the S3 endpoint;
  the docs' example buckets become the seeded one; `...` credentials come from the S3 server's;
* `make image` / `docker push` are not run: cluster-up built the image and imported it into the node;
* the `aws` CLI is not installed here: its two reads are done with boto3 by the test instead;
* a watch (`kubectl get -w`) runs for 20 s.
"""

from __future__ import annotations

from tests.cluster import docblocks
from tests.cluster.conftest import CLUSTER_HOME, NAMESPACE, Cluster

LOCAL_IMAGE = ("batchinfer -f k8s/kind/values-cpu.yaml -f k8s/local/values.yaml "
               '--set s3.endpoint="$BATCHINFER_S3_ENDPOINT"')
BUCKETS = {"s3://photos/incoming/": "s3://batchinfer/images/", "s3://photos/labels/": "s3://batchinfer/labels/"}
CREDENTIALS = {"AWS_ACCESS_KEY_ID=...": 'AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID"',
               "AWS_SECRET_ACCESS_KEY=...": 'AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"'}
NO_IMAGE_BUILD = {"make image": "cluster-up built the image and imported it into the node",
                  "docker push": "nothing is pushed: the node's containerd holds the image"}


def uninstall(cluster: Cluster, release: str = "classify") -> None:
    cluster.sh(f"helm uninstall {release} -n {NAMESPACE} --wait --timeout 3m")
    cluster.wait_gone(f"pods -l app.kubernetes.io/instance={release}")


def only_rayjob(cluster: Cluster, release: str = "classify") -> dict:
    jobs = cluster.rayjobs(f"app.kubernetes.io/instance={release}")
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    return cluster.wait_rayjob(jobs[0]["metadata"]["name"])


def test_kuberay_install_block(cluster: Cluster) -> None:
    """Re-applying the documented KubeRay install is harmless (server-side apply, same objects). With the
    operator fallback (the proxy refuses v1.7.0's source) the image is set back to the built one first."""
    fallback = (CLUSTER_HOME / "kuberay.version").read_text().strip()
    before = {}
    if fallback != "v1.7.0":  # the documented image first (no field-manager conflict), the built one after
        image = "kubectl -n kuberay-system set image deploy/kuberay-operator kuberay-operator=quay.io/kuberay/operator:"
        before = {"kubectl apply --server-side -k k8s/kuberay": image + "v1.7.0",
                  "kubectl -n kuberay-system rollout status": image + fallback}
    cluster.sh(docblocks.script(docblocks.block("kuberay-install"), before=before))
    cluster.sh("kubectl get crd rayjobs.ray.io rayclusters.ray.io")


def test_helm_install_block(cluster: Cluster, fresh_namespace) -> None:
    cluster.sh(docblocks.script(docblocks.block("helm-install"),
                                replace={"<registry>/batchinfer": LOCAL_IMAGE, **BUCKETS, **CREDENTIALS}), timeout=1800)
    job = only_rayjob(cluster)
    assert job["status"]["jobStatus"] == "SUCCEEDED", job["status"]
    cluster.assert_each_input_once(f"labels/{job['metadata']['labels']['batchinfer.io/run-id']}/")
    uninstall(cluster)


def test_helm_rerun_block(cluster: Cluster, seeded) -> None:
    """2b: each documented `helm upgrade` is a new RayJob writing a new output."""
    cluster.sh(f"helm install classify helm/batchinfer -n {NAMESPACE} --set image.repository={LOCAL_IMAGE} --set job.runId=before")
    assert cluster.wait_rayjob("classify-batchinfer-before")["status"]["jobStatus"] == "SUCCEEDED"
    runs = cluster.sh(docblocks.script(docblocks.block("helm-rerun"), replace={"s3://photos/2026-11-24/": "s3://batchinfer/images/"},
                                       before={"helm upgrade classify helm/batchinfer -n batch --reuse-values --set job.input":
                                               "kubectl -n batch get rayjob -l app.kubernetes.io/instance=classify -o name"}))
    dated = [line.split("/", 1)[1] for line in runs.stdout.splitlines() if line.startswith("rayjob")]
    assert len(dated) == 1 and dated[0] != "classify-batchinfer-before", dated
    job = only_rayjob(cluster)  # the second upgrade: a changed input is a new run, the dated one was replaced
    assert job["metadata"]["name"] not in (dated[0], "classify-batchinfer-before")
    assert job["status"]["jobStatus"] == "SUCCEEDED", job["status"]
    cluster.assert_each_input_once(f"predictions/{job['metadata']['labels']['batchinfer.io/run-id']}/")
    uninstall(cluster)


def test_readme_deploy_block(cluster: Cluster, fresh_namespace) -> None:
    cluster.sh(docblocks.script(docblocks.block("readme-deploy"), skip=NO_IMAGE_BUILD,
                                replace={"<registry>/batchinfer \\": f"{LOCAL_IMAGE} \\", **BUCKETS, **CREDENTIALS}),
               timeout=600)
    job = only_rayjob(cluster)
    assert job["status"]["jobStatus"] == "SUCCEEDED", job["status"]
    cluster.assert_each_input_once(f"labels/{job['metadata']['labels']['batchinfer.io/run-id']}/")
    uninstall(cluster)


def test_chart_quickstart_block(cluster: Cluster, fresh_namespace) -> None:
    client = cluster.s3()
    aws_reads = "the aws CLI is not installed here: the test reads the same objects with boto3"
    cluster.sh(docblocks.script(
        docblocks.block("chart-quickstart"), skip={**NO_IMAGE_BUILD, "aws s3": aws_reads},
        replace={"$REGISTRY/batchinfer \\": f"{LOCAL_IMAGE} \\", **BUCKETS, **CREDENTIALS,
                 "s3://photos/labels/first/": "s3://batchinfer/labels/first/"}), timeout=1800)
    assert client.get_object(Bucket="batchinfer", Key="labels/first.batchinfer/summary.json")["ContentLength"] > 0
    cluster.assert_each_input_once("labels/first/")
    second = cluster.wait_rayjob("classify-batchinfer-second")
    assert second["status"]["jobStatus"] == "SUCCEEDED", second["status"]
    cluster.assert_each_input_once("labels/second/")
    uninstall(cluster)
