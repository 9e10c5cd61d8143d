"""2b: runs and re-runs with Helm: the chart README's end-to-end example as written (a run, `helm test`,
its driver log and results, then a new run id: a new RayJob and a new output), an unchanged upgrade
that runs nothing, and docs/kubernetes.md's re-run block. The `aws` CLI is not installed here: the
example's two `aws s3` reads are made with boto3 by the test (the same objects)."""

from __future__ import annotations

from tests.cluster import docblocks
from tests.cluster.conftest import BUCKETS, CREDENTIALS, LOCAL_IMAGE, NAMESPACE, NO_IMAGE_BUILD, Cluster, uninstall

SELECTOR = "app.kubernetes.io/instance=classify"


def test_chart_example_then_unchanged_upgrade_then_documented_reruns(cluster: Cluster, fresh_namespace) -> None:
    try:
        run_example_then_reruns(cluster)
    finally:  # a failure here must not leave the release to the scenarios after it
        uninstall(cluster)


def run_example_then_reruns(cluster: Cluster) -> None:
    cluster.sh(docblocks.script(
        docblocks.block("chart-quickstart"),
        skip={**NO_IMAGE_BUILD, "aws s3": "the aws CLI is not installed here: the test reads the same objects"},
        replace={"$REGISTRY/batchinfer \\": f"{LOCAL_IMAGE} \\", **BUCKETS, **CREDENTIALS}), timeout=1800)
    client = cluster.s3()
    assert client.get_object(Bucket="batchinfer", Key="labels/first.batchinfer/summary.json")["ContentLength"] > 0
    cluster.assert_each_input_once("labels/first/")
    # The example's last step: a new run id is a new RayJob writing a new prefix.
    second = cluster.wait_rayjob("classify-batchinfer-second")
    assert (second["status"]["jobDeploymentStatus"], second["status"]["jobStatus"]) == ("Complete", "SUCCEEDED")
    cluster.assert_each_input_once("labels/second/")
    # Unchanged values: the same RayJob object (uid), still Complete; nothing runs.
    cluster.sh(f"helm upgrade classify helm/batchinfer -n {NAMESPACE} --reuse-values")
    again = cluster.rayjobs(SELECTOR)
    assert [j["metadata"]["uid"] for j in again] == [second["metadata"]["uid"]], again
    assert again[0]["status"]["jobDeploymentStatus"] == "Complete"
    # docs/kubernetes.md "Runs and re-runs": each command starts a new RayJob (checked as it starts),
    # and Helm deletes the one it replaces.
    names = ["classify-batchinfer-second"]
    block = docblocks.block("helm-rerun")
    for command in block.commands():
        script = docblocks.script(docblocks.Block(block.path, block.line, block.marker, command),
                                  replace={"s3://photos/2026-11-24/": "s3://batchinfer/images/"}
                                  if "2026-11-24" in command else None)
        names.append(cluster.new_rayjob(script, SELECTOR)["metadata"]["name"])
        cluster.wait_gone(f"rayjob {names[-2]}")
    assert len(set(names)) == 3, names
    print(f"2b: runs first, second (SUCCEEDED, own outputs); unchanged upgrade kept uid "
          f"{second['metadata']['uid']}; the re-run block started {names[1:]}, each replacing the one before")
