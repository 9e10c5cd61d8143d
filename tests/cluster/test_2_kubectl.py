"""2c: the kubectl paths of docs/kubernetes.md ("Plain manifest", "Re-run with kubectl"), run as written.

k8s/rayjob.yaml is the chart's GPU default (a 7-CPU, 1-GPU worker; resnet50 weights from the internet).
Its header says to edit a copy first (image, --input/--output, S3 env); the edited copy here is the same
render made for this cluster (the one-machine values, run id run-0001, Helm's ownership metadata
removed, exactly as tests.chart.render makes k8s/rayjob.yaml), and the doc's commands run on it.
"""

from __future__ import annotations

import yaml

from tests.chart.render import PLAIN_MANIFEST_ARGS, PLAIN_RUN_ID, documents, template, without_helm_ownership
from tests.cluster import docblocks
from tests.cluster.conftest import NAMESPACE, ROOT, Cluster

PLAIN = "batchinfer"  # the plain manifest's release name: RayJob batchinfer-<runId>


def edited_copy(cluster: Cluster, path) -> str:
    docs = without_helm_ownership(documents(template(
        values_files=[ROOT / "k8s/kind/values-cpu.yaml", ROOT / "k8s/local/values.yaml"],
        set_values=[f"job.runId={PLAIN_RUN_ID}", "image.repository=batchinfer",
                    f"s3.endpoint={cluster.env['BATCHINFER_S3_ENDPOINT']}"],
        extra=PLAIN_MANIFEST_ARGS)))
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return str(path)


def test_plain_manifest_runs_and_its_next_run_too(cluster: Cluster, seeded, tmp_path) -> None:
    manifest = edited_copy(cluster, tmp_path / "rayjob.yaml")
    cluster.sh(docblocks.script(docblocks.block("plain-manifest"), replace={"k8s/rayjob.yaml": manifest}))
    for run_id in (PLAIN_RUN_ID, "run-0002"):
        job = cluster.wait_rayjob(f"{PLAIN}-{run_id}")
        assert (job["status"]["jobDeploymentStatus"], job["status"]["jobStatus"]) == ("Complete", "SUCCEEDED"), job["status"]
        cluster.assert_each_input_once(f"predictions/{run_id}/")
    # Re-applying the first run's manifest changes nothing: KubeRay never runs a finished RayJob again.
    before = cluster.kubectl_json(f"-n {NAMESPACE} get rayjob {PLAIN}-{PLAIN_RUN_ID}")
    cluster.sh(f"kubectl apply -n {NAMESPACE} -f {manifest}")
    after = cluster.kubectl_json(f"-n {NAMESPACE} get rayjob {PLAIN}-{PLAIN_RUN_ID}")
    assert after["status"]["jobDeploymentStatus"] == "Complete"
    assert after["status"].get("startTime") == before["status"].get("startTime")
    cluster.sh(f"kubectl delete -n {NAMESPACE} -f {manifest} --wait")
    cluster.sh(f"kubectl -n {NAMESPACE} delete rayjob {PLAIN}-run-0002 --wait")


def test_kubectl_rerun_block(cluster: Cluster, seeded, tmp_path) -> None:
    """The chart rendered and applied without Helm in the cluster, then the plain manifest's next run."""
    manifest = edited_copy(cluster, tmp_path / "rayjob.yaml")
    run = cluster.sh(docblocks.script(
        docblocks.block("kubectl-rerun"),
        replace={"<registry>/batchinfer": "batchinfer -f k8s/kind/values-cpu.yaml -f k8s/local/values.yaml "
                                          "--set s3.endpoint=$BATCHINFER_S3_ENDPOINT",
                 "--set job.input=...": "--set job.input=s3://batchinfer/images/",
                 "k8s/rayjob.yaml": manifest},
        after="kubectl -n batch get rayjobs -o name"))
    names = [line.split("/", 1)[1] for line in run.stdout.splitlines() if line.startswith("rayjob")]
    rendered = [n for n in names if n.startswith("classify-batchinfer-")]
    assert rendered and f"{PLAIN}-run-0002" in names, names
    for name in (rendered[0], f"{PLAIN}-run-0002"):
        job = cluster.wait_rayjob(name)
        assert job["status"]["jobStatus"] == "SUCCEEDED", job["status"]
    cluster.sh(f"kubectl -n {NAMESPACE} delete rayjob {rendered[0]} {PLAIN}-run-0002 --wait")
    cluster.sh(f"kubectl -n {NAMESPACE} delete serviceaccount,networkpolicy -l app.kubernetes.io/instance --wait", check=False)
