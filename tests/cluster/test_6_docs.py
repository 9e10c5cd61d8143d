"""2f: the install blocks of README.md and docs/kubernetes.md, run as written on the local cluster with
the changes conftest.py lists (placeholders filled, no image push). The other blocks run where their
scenario is: re-runs (test_2), kubectl (test_3), the stop path (test_4), one machine (test_1)."""

from __future__ import annotations

from tests.cluster import docblocks
from tests.cluster.conftest import (BUCKETS, CLUSTER_HOME, CREDENTIALS, LOCAL_IMAGE, NO_IMAGE_BUILD, Cluster,
                                    uninstall)

def only_rayjob(cluster: Cluster, release: str = "classify") -> dict:
    jobs = cluster.rayjobs(f"app.kubernetes.io/instance={release}")
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    return cluster.wait_rayjob(jobs[0]["metadata"]["name"])


def kuberay_apply_hooks(next_command: str) -> dict[str, str]:
    """Re-applying the documented KubeRay install under the operator fallback (the proxy refuses
    v1.7.0's source, cluster.sh runs v1.6.0): the documented image first, so that the apply meets no
    field-manager conflict, and the built one again before `next_command`."""
    fallback = (CLUSTER_HOME / "kuberay.version").read_text().strip()
    if fallback == "v1.7.0":
        return {}
    image = "kubectl -n kuberay-system set image deploy/kuberay-operator kuberay-operator=quay.io/kuberay/operator:"
    return {"kubectl apply --server-side -k k8s/kuberay": image + "v1.7.0", next_command: image + fallback}


def test_kuberay_install_block(cluster: Cluster) -> None:
    """Re-applying the documented KubeRay install is harmless (server-side apply, same objects)."""
    cluster.sh(docblocks.script(docblocks.block("kuberay-install"),
                                before=kuberay_apply_hooks("kubectl -n kuberay-system rollout status")))
    cluster.sh("kubectl get crd rayjobs.ray.io rayclusters.ray.io")


def test_helm_install_block(cluster: Cluster, fresh_namespace) -> None:
    cluster.sh(docblocks.script(docblocks.block("helm-install"),
                                replace={"<registry>/batchinfer": LOCAL_IMAGE, **BUCKETS, **CREDENTIALS}), timeout=1800)
    job = only_rayjob(cluster)
    assert job["status"]["jobStatus"] == "SUCCEEDED", job["status"]
    cluster.assert_each_input_once(f"labels/{job['metadata']['labels']['batchinfer.io/run-id']}/")
    uninstall(cluster)


def test_readme_deploy_block(cluster: Cluster, fresh_namespace) -> None:
    """The block starts a run (the same install as the helm-install block, which runs to its end)."""
    cluster.sh(docblocks.script(docblocks.block("readme-deploy"), skip=NO_IMAGE_BUILD,
                                before=kuberay_apply_hooks("kubectl create namespace batch"),
                                replace={"<registry>/batchinfer \\": f"{LOCAL_IMAGE} \\", **BUCKETS, **CREDENTIALS}),
               timeout=600)
    jobs = cluster.rayjobs("app.kubernetes.io/instance=classify")
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    cluster.wait_started(jobs[0]["metadata"]["name"])
    uninstall(cluster)
