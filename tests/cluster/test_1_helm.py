"""2a: the chart installed as docs/kubernetes.md "Try it on one machine" says, as written."""

from __future__ import annotations

import json

from tests.cluster import docblocks
from tests.cluster.conftest import NAMESPACE, Cluster

RELEASE = "classify"
SELECTOR = f"app.kubernetes.io/instance={RELEASE}"


def test_one_machine_block_runs_as_written(cluster: Cluster, fresh_namespace, tmp_path) -> None:
    """The doc's block, as written: cluster-up/-down are what `make cluster-e2e` runs between, so the
    e2e skips those two lines; before `helm uninstall` it keeps the RayJob and its pods as evidence."""
    evidence = tmp_path / "rayjob.json"
    run = cluster.sh(docblocks.script(
        docblocks.block("one-machine"),
        skip={"make cluster-up": "the e2e runs on the cluster it started",
              "make cluster-down": "`make cluster-down` follows the e2e"},
        before={"helm uninstall": f"kubectl -n {NAMESPACE} get rayjob -l {SELECTOR} -o json > {evidence}"},
        after='echo "E2E_RUN=$RUN"'), timeout=1800)
    job = json.loads(evidence.read_text())["items"][0]
    status = job["status"]
    assert (status["jobDeploymentStatus"], status["jobStatus"]) == ("Complete", "SUCCEEDED"), status
    run_id = run.stdout.rsplit("E2E_RUN=", 1)[1].split()[0]
    assert job["metadata"]["labels"]["batchinfer.io/run-id"] == run_id
    assert "$ helm test classify" in run.stdout  # and it exited 0 (set -e)
    rows = cluster.assert_each_input_once(f"predictions/{run_id}/")
    assert any(row["error"] for row in rows), "the corrupt sample must be an error row"
    assert sum(1 for row in rows if row["label"]) >= len(rows) - 1
    print(f"2a: RayJob {job['metadata']['name']} Complete/SUCCEEDED, {len(rows)} rows, helm test passed")
