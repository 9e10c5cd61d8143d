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


def one_by_one(block: docblocks.Block) -> list[docblocks.Block]:
    """A block's commands as blocks of their own: "the first run" and "the next run" are typed at
    different times (applied together, two Ray clusters on one small node could each hold half of it)."""
    return [docblocks.Block(block.path, block.line, block.marker, command) for command in block.commands()]


def test_plain_manifest_runs_and_its_next_run_too(cluster: Cluster, seeded, tmp_path) -> None:
    manifest = edited_copy(cluster, tmp_path / "rayjob.yaml")
    first, following = one_by_one(docblocks.block("plain-manifest"))
    cluster.sh(docblocks.script(first, replace={"k8s/rayjob.yaml": manifest}))
    job = cluster.wait_rayjob(f"{PLAIN}-{PLAIN_RUN_ID}")
    assert (job["status"]["jobDeploymentStatus"], job["status"]["jobStatus"]) == ("Complete", "SUCCEEDED"), job["status"]
    cluster.assert_each_input_once(f"predictions/{PLAIN_RUN_ID}/")
    # Re-applying the first run's manifest changes nothing: KubeRay never runs a finished RayJob again.
    cluster.sh(docblocks.script(first, replace={"k8s/rayjob.yaml": manifest}))
    after = cluster.kubectl_json(f"-n {NAMESPACE} get rayjob {PLAIN}-{PLAIN_RUN_ID}")
    assert after["metadata"]["uid"] == job["metadata"]["uid"]
    assert after["status"]["jobDeploymentStatus"] == "Complete"
    assert after["status"].get("startTime") == job["status"].get("startTime")
    cluster.sh(docblocks.script(following, replace={"k8s/rayjob.yaml": manifest}))
    cluster.wait_started(f"{PLAIN}-run-0002")  # the next run: a new RayJob, taken up by KubeRay
    cluster.sh(f"kubectl -n {NAMESPACE} delete rayjob {PLAIN}-run-0002 --wait")
    cluster.sh(f"kubectl delete -n {NAMESPACE} -f {manifest} --wait")


def test_kubectl_rerun_block(cluster: Cluster, seeded, tmp_path) -> None:
    """The chart rendered and applied without Helm in the cluster, then the plain manifest's next run:
    each starts (the plain manifest's run is followed to its end above)."""
    manifest = edited_copy(cluster, tmp_path / "rayjob.yaml")
    replace = {"<registry>/batchinfer": "batchinfer -f k8s/kind/values-cpu.yaml -f k8s/local/values.yaml "
                                        "--set s3.endpoint=$BATCHINFER_S3_ENDPOINT",
               "--set job.input=...": "--set job.input=s3://batchinfer/images/",
               "k8s/rayjob.yaml": manifest}
    started = []
    for command in one_by_one(docblocks.block("kubectl-rerun")):
        script = docblocks.script(command, replace={k: v for k, v in replace.items() if k in command.text})
        started.append(cluster.new_rayjob(script, "app.kubernetes.io/instance")["metadata"]["name"])
        cluster.sh(f"kubectl -n {NAMESPACE} delete rayjob {started[-1]} --wait")
    assert started[0].startswith("classify-batchinfer-") and started[1] == f"{PLAIN}-run-0002", started
    cluster.sh(f"kubectl -n {NAMESPACE} delete serviceaccount,networkpolicy,poddisruptionbudget -l app.kubernetes.io/instance --wait",
               check=False)
