"""Node shapes the chart's values files are sized for, and what a pod can request on them.

A shape is a cloud instance type as its provider publishes it (vCPUs, memory, GPUs). What the
kubelet offers pods (allocatable) is capacity minus the provider's documented reservations:

- GKE ("Standard cluster architecture > Node allocatable resources"): CPU 6% of the first core,
  1% of the next, 0.5% of the next 2, 0.25% of the rest; memory 25% of the first 4 GiB, 20% of the
  next 4, 10% of the next 8, 6% of the next 112, 2% above 128 GiB; plus a 100 MiB eviction threshold.
- EKS (the EKS-optimized AMIs' bootstrap): the same CPU rule; memory 255 MiB + 11 MiB x maxPods
  (the instance's ENI-based pod limit); plus a 100 MiB eviction threshold.

A shape that stands for instances on both clouds gets the smaller of the two. DaemonSets on every
node (device plugin, log/metrics agents, CNI, kube-proxy) request some of that too:
DAEMONSET_HEADROOM is left free for them. The numbers below are published instance sizes, the
inputs of the rule, not expected results.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

GIB = 1024**3
MIB = 1024**2
EVICTION_HARD_BYTES = 100 * MIB
# Left for DaemonSets: e.g. GKE's kube-proxy 100m, fluentbit 100m, gke-metadata-server 100m,
# nvidia-gpu-device-plugin 50m, netd/pdcsi a few m (about 0.4 CPU and well under 1 GiB in total).
DAEMONSET_HEADROOM = {"cpu": 0.5, "memory": 2 * GIB}


@dataclass(frozen=True)
class Instance:
    name: str
    cloud: str  # "gke" or "eks"
    vcpus: int
    memory_gib: float
    gpus: int = 0
    max_pods: int = 110  # EKS: the instance's ENI pod limit; GKE: 110 per node


def _tiered(amount: float, steps: list[tuple[float, float]], rest_share: float) -> float:
    """A reservation charged in tiers: `share` of each `size` in turn, `rest_share` of what is left."""
    reserved, left = 0.0, amount
    for size, share in steps:
        take = min(left, size)
        reserved += take * share
        left -= take
    return reserved + left * rest_share


def _kube_reserved_cpu(vcpus: int) -> float:
    return _tiered(vcpus, [(1, 0.06), (1, 0.01), (2, 0.005)], 0.0025)


def _gke_reserved_memory(memory_bytes: float) -> float:
    return _tiered(memory_bytes, [(4 * GIB, 0.25), (4 * GIB, 0.20), (8 * GIB, 0.10), (112 * GIB, 0.06)], 0.02)


def allocatable(instance: Instance) -> dict:
    memory = instance.memory_gib * GIB
    if instance.cloud == "gke":
        reserved_memory = _gke_reserved_memory(memory)
    else:
        reserved_memory = (255 + 11 * instance.max_pods) * MIB
    return {"cpu": instance.vcpus - _kube_reserved_cpu(instance.vcpus),
            "memory": memory - reserved_memory - EVICTION_HARD_BYTES,
            "gpu": instance.gpus}


# Shape name -> the instance types it stands for (published vCPU / memory / GPU counts).
SHAPES: dict[str, list[Instance]] = {
    # General-purpose nodes for the head and the submitter (and CPU-only workers).
    "general-4": [Instance("m6i.xlarge", "eks", 4, 16, max_pods=58),
                  Instance("e2-standard-4", "gke", 4, 16)],
    # One NVIDIA A10G (24 GB) or L4 (24 GB): the chart's default GPU worker.
    "gpu-1x-a10g-l4": [Instance("g5.2xlarge", "eks", 8, 32, 1, max_pods=58),
                       Instance("g6.2xlarge", "eks", 8, 32, 1, max_pods=58),
                       Instance("g2-standard-8", "gke", 8, 32, 1)],
    # One NVIDIA A100 40 GB (AWS sells A100s only as 8-GPU p4d.24xlarge).
    "gpu-1x-a100-40gb": [Instance("a2-highgpu-1g", "gke", 12, 85, 1)],
    # Four A100 40 GB.
    "gpu-4x-a100-40gb": [Instance("a2-highgpu-4g", "gke", 48, 340, 4)],
    # Eight NVIDIA H100 80 GB.
    "gpu-8x-h100": [Instance("p5.48xlarge", "eks", 192, 2048, 8, max_pods=100),
                    Instance("a3-highgpu-8g", "gke", 208, 1872, 8)],
}


def shape_allocatable(shape: str) -> dict:
    """The allocatable every instance of the shape offers (the smallest of each resource)."""
    per_instance = [allocatable(i) for i in SHAPES[shape]]
    return {key: min(a[key] for a in per_instance) for key in ("cpu", "memory", "gpu")}


NODE_SHAPES_LINE = re.compile(r"^# node shapes: (.+)$", re.M)


def declared_shapes(values_file: Path) -> dict[str, str]:
    """The `# node shapes: head=... submitter=... <group>=...` line of a values file: <group> is a key
    of workerGroups (the map keyed by group name)."""
    match = NODE_SHAPES_LINE.search(values_file.read_text())
    if not match:
        return {}
    return dict(item.split("=", 1) for item in match.group(1).split() if "=" in item)


def worker_group_names(values_file: Path) -> set[str]:
    """The worker groups a values file renders: the chart's default groups (values.yaml workerGroups)
    merged with the file's, less those the file sets to null (Helm's way to remove a default key)."""
    chart_values = Path(__file__).resolve().parents[2] / "helm" / "batchinfer" / "values.yaml"
    groups = dict(yaml.safe_load(chart_values.read_text())["workerGroups"])
    groups.update((yaml.safe_load(values_file.read_text()) or {}).get("workerGroups") or {})
    return {name for name, group in groups.items() if group is not None}
