"""3: the chart's default values against a simulated GPU node pool (KWOK) beside the real node.

Fake nodes are shaped like the node types docs/kubernetes.md names (tests/chart/node_shapes.py: the
published instance sizes less the providers' reservations) and carry the labels and taints GKE and EKS
put on them. KWOK makes their pods Running (and Job-owned pods complete) without running anything:
fake GPU workers never join Ray. This checks scheduling and KubeRay's reconciliation, not GPU compute.
The real node is cordoned meanwhile, so every pod of the install must find its place in the pool.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.chart.node_shapes import SHAPES, Instance, allocatable
from tests.cluster.conftest import Cluster, ensure_namespace

NAMESPACE = "gpu-sim"
RELEASE = "nightly"
REAL_NODE = "batchinfer-node"
GPU_LABELS = {  # what each provider puts on a GPU node (and what the chart's gpuNodeLabels look for)
    "g5.2xlarge": {"k8s.amazonaws.com/accelerator": "nvidia-a10g", "nvidia.com/gpu.present": "true"},
    "g6.2xlarge": {"k8s.amazonaws.com/accelerator": "nvidia-l4", "nvidia.com/gpu.present": "true"},
    "g2-standard-8": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
}
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}  # GKE's; EKS node groups: configured


def fake_node(instance: Instance) -> dict:
    name = f"kwok-{instance.name.replace('.', '-')}"
    alloc = allocatable(instance)
    resources = {"cpu": f"{int(alloc['cpu'] * 1000)}m", "memory": str(int(alloc["memory"])),
                 "pods": str(instance.max_pods), "ephemeral-storage": "100Gi"}
    capacity = {"cpu": str(instance.vcpus), "memory": f"{int(instance.memory_gib)}Gi",
                "pods": str(instance.max_pods), "ephemeral-storage": "100Gi"}
    if instance.gpus:
        resources["nvidia.com/gpu"] = capacity["nvidia.com/gpu"] = str(instance.gpus)
    labels = {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
              "kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": instance.name,
              **({"cloud.google.com/gke-nodepool": "pool"} if instance.cloud == "gke" else
                 {"eks.amazonaws.com/nodegroup": "pool"}),
              **GPU_LABELS.get(instance.name, {})}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels, "annotations": {"kwok.x-k8s.io/node": "fake"}},
            "spec": {"providerID": f"kwok://{name}", "taints": [GPU_TAINT] if instance.gpus else []},
            "status": {"allocatable": resources, "capacity": capacity}}


@pytest.fixture()
def gpu_pool(cluster: Cluster):
    nodes = [fake_node(i) for shape in ("general-4", "gpu-1x-a10g-l4") for i in SHAPES[shape]]
    cluster.sh("kubectl apply -f -", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}))
    cluster.sh("kubectl wait --for=condition=Ready node -l type=kwok --timeout=60s")
    cluster.sh(f"kubectl cordon {REAL_NODE}")
    yield {n["metadata"]["name"]: n for n in nodes}
    cluster.sh(f"kubectl uncordon {REAL_NODE}")
    cluster.sh("kubectl delete node -l type=kwok --wait=false", check=False)


def test_default_values_schedule_on_a_simulated_gpu_pool(cluster: Cluster, gpu_pool, seeded) -> None:
    ensure_namespace(cluster, NAMESPACE)
    # The chart's defaults: only the image and the S3 settings given.
    cluster.sh(f"helm install {RELEASE} helm/batchinfer -n {NAMESPACE} --set image.repository=batchinfer "
               "--set s3.endpoint=\"$BATCHINFER_S3_ENDPOINT\" --set s3.existingSecret.name=batchinfer-s3")
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            clusters = cluster.kubectl_json(f"-n {NAMESPACE} get rayclusters")["items"]
            if clusters and clusters[0].get("status", {}).get("state") == "ready":
                break
            time.sleep(3)
        else:
            raise AssertionError("the RayCluster never became ready on the simulated pool\n" + cluster.diagnose(NAMESPACE))
        ray_cluster = clusters[0]
        pods = cluster.kubectl_json(f"-n {NAMESPACE} get pods")["items"]
        events = cluster.kubectl_json(f"-n {NAMESPACE} get events")["items"]
        unscheduled = [e["message"] for e in events if e.get("reason") == "FailedScheduling"]
        assert not unscheduled, unscheduled
        placed = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in pods}
        assert all(placed.values()), placed
        gpu_nodes = {n for n, spec in gpu_pool.items() if "nvidia.com/gpu" in spec["status"]["allocatable"]}
        for pod in pods:
            node, labels = pod["spec"]["nodeName"], pod["metadata"]["labels"]
            kind = labels.get("ray.io/node-type") or ("submitter" if "job-name" in labels else "other")
            wants_gpu = any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {}) for c in pod["spec"]["containers"])
            if kind == "worker":
                assert wants_gpu and node in gpu_nodes, (pod["metadata"]["name"], node)
            else:
                assert node not in gpu_nodes and node != REAL_NODE, (pod["metadata"]["name"], kind, node)
        workers = [p for p in pods if p["metadata"]["labels"].get("ray.io/node-type") == "worker"]
        expected = sum(g.get("replicas", 0) for g in ray_cluster["spec"]["workerGroupSpecs"])
        assert len(workers) == expected >= 1, (len(workers), expected)
        job = cluster.kubectl_json(f"-n {NAMESPACE} get rayjobs")["items"][0]
        assert job["status"].get("jobDeploymentStatus") in ("Initializing", "Running"), job["status"]
        print(f"3: {len(pods)} pods placed {placed}; RayCluster ready; RayJob {job['status'].get('jobDeploymentStatus')}")
    finally:
        cluster.sh(f"helm uninstall {RELEASE} -n {NAMESPACE} --wait --timeout 2m", check=False)
        cluster.sh(f"kubectl delete pods -n {NAMESPACE} --all --force --grace-period=0", check=False)
