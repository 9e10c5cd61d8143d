"""k8s/local: the one-machine cluster's script and pins, checked without running a cluster (that is
make cluster-up / cluster-e2e)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "k8s" / "local"


def pins() -> dict[str, str]:
    return dict(re.findall(r"^([A-Z0-9_]+)=(\S+)", (LOCAL / "versions.env").read_text(), re.M))


def test_cluster_script_parses() -> None:
    subprocess.run(["bash", "-n", str(LOCAL / "cluster.sh")], check=True)


def test_operator_pin_is_the_release_of_the_vendored_crds() -> None:
    kustomization = yaml.safe_load((ROOT / "k8s" / "kuberay" / "kustomization.yaml").read_text())
    assert pins()["KUBERAY_VERSION"] == kustomization["images"][0]["newTag"] == "v1.7.0"


def test_build_modules_require_the_pinned_releases() -> None:
    kubernetes = (LOCAL / "build" / "kubernetes" / "go.mod").read_text()
    assert f"require k8s.io/kubernetes {pins()['K8S_VERSION']}" in kubernetes
    staging = set(re.findall(r"=> (k8s\.io/\S+) (v\S+)", kubernetes))
    assert staging and {version for _, version in staging} == {pins()["K8S_STAGING_VERSION"]}
    minor = pins()["K8S_VERSION"].split(".")[1]
    assert pins()["K8S_STAGING_VERSION"].startswith(f"v0.{minor}.")
    assert f"require go.etcd.io/etcd/server/v3 {pins()['ETCD_VERSION']}" in (LOCAL / "build" / "etcd" / "go.mod").read_text()


def test_cluster_ranges_are_private_and_apart() -> None:
    import ipaddress

    ranges = [ipaddress.ip_network(pins()[key]) for key in ("POD_CIDR", "SERVICE_CIDR", "FAKE_NODE_POD_CIDR")]
    assert all(r.is_private for r in ranges)
    assert not any(a.overlaps(b) for i, a in enumerate(ranges) for b in ranges[i + 1:])
