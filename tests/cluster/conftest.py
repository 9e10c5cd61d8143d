"""The local cluster's end to end (make cluster-e2e): a real Kubernetes made by k8s/local/cluster.sh.

Runs only when BATCHINFER_CLUSTER_E2E=1 (make cluster-e2e sets it); plain `make test` skips it. Without
a running cluster every test fails with one line saying so: it never passes silently.
Everything goes through the commands a user types (kubectl, helm) with the cluster's KUBECONFIG.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest

from tests.chart.tools import ensure_tool

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SH = ROOT / "k8s" / "local" / "cluster.sh"
CLUSTER_HOME = Path(os.environ.get("CLUSTER_HOME", ROOT / ".cluster"))
ENABLED = os.environ.get("BATCHINFER_CLUSTER_E2E") == "1"
HERE = Path(__file__).resolve().parent
NAMESPACE = "batch"
BUCKET = "batchinfer"
INPUT_PREFIX = "images/"
LOCAL_VALUES = ["-f", "k8s/kind/values-cpu.yaml", "-f", "k8s/local/values.yaml"]
RUN_TIMEOUT_S = int(os.environ.get("CLUSTER_E2E_RUN_TIMEOUT_S", "900"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.cluster)
            if not ENABLED:
                item.add_marker(pytest.mark.skip(reason="the local cluster's e2e: make cluster-up && make cluster-e2e"))


@dataclass
class Cluster:
    """Connection details of the running cluster, and the user's commands against it."""

    env: dict[str, str] = field(repr=False)     # holds the S3 credentials: never in a report
    s3_env: dict[str, str] = field(repr=False)

    def sh(self, command: str, check: bool = True, timeout: float = 600, input: str | None = None,
           ) -> subprocess.CompletedProcess:
        """Run a shell command line as a user would type it (bash, repo root, the cluster's env)."""
        proc = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=ROOT, env=self.env, text=True,
                              capture_output=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise AssertionError(f"$ {command}\nexit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def kubectl_json(self, args: str) -> dict:
        return json.loads(self.sh(f"kubectl {args} -o json").stdout)

    def s3(self):
        return boto3.client("s3", endpoint_url=self.s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                            aws_access_key_id=self.s3_env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.s3_env["AWS_SECRET_ACCESS_KEY"])

    # ---- RayJobs
    def rayjobs(self, selector: str, namespace: str = NAMESPACE) -> list[dict]:
        return self.kubectl_json(f"-n {namespace} get rayjobs -l {shlex.quote(selector)}")["items"]

    def wait_rayjob(self, name: str, namespace: str = NAMESPACE, timeout: float = RUN_TIMEOUT_S,
                    until: tuple[str, ...] = ("Complete", "Failed")) -> dict:
        """Wait until the RayJob's jobDeploymentStatus is one of `until`; return the RayJob."""
        deadline = time.monotonic() + timeout
        job: dict = {}
        while time.monotonic() < deadline:
            job = self.kubectl_json(f"-n {namespace} get rayjob {name}")
            if job.get("status", {}).get("jobDeploymentStatus") in until:
                return job
            time.sleep(3)
        raise AssertionError(f"RayJob {name} not in {until} after {timeout:.0f} s: {json.dumps(job.get('status'))}\n"
                             + self.diagnose(namespace))

    def new_rayjob(self, command: str, selector: str, namespace: str = NAMESPACE) -> dict:
        """Run a user's `command`; the one RayJob it made (among those `selector` matches), once KubeRay
        has taken it up. A RayJob the command replaced may still be listed for a while (KubeRay's
        finalizer deletes its Ray cluster first): only a name that was not there before counts."""
        before = {job["metadata"]["name"] for job in self.rayjobs(selector, namespace)}
        self.sh(command)
        new = [job["metadata"]["name"] for job in self.rayjobs(selector, namespace)
               if job["metadata"]["name"] not in before]
        assert len(new) == 1, f"$ {command}\nmade RayJobs {new}, expected one new one (there were {sorted(before)})"
        return self.wait_started(new[0], namespace)

    def wait_started(self, name: str, namespace: str = NAMESPACE, timeout: float = 120) -> dict:
        """Wait until KubeRay has taken up the RayJob (a Ray cluster is being made for it): the check for
        a run that a command started, where the e2e does not need its end."""
        return self.wait_rayjob(name, namespace, timeout, until=("Initializing", "Running", "Complete"))

    def diagnose(self, namespace: str = NAMESPACE) -> str:
        out = self.sh(f"kubectl -n {namespace} get rayjobs,rayclusters,pods,jobs -o wide; "
                      f"kubectl -n {namespace} get events --sort-by=.lastTimestamp | tail -25; "
                      f"for j in $(kubectl -n {namespace} get jobs -o name); do kubectl -n {namespace} logs $j --tail=30; done",
                      check=False)
        return out.stdout[-6000:] + out.stderr[-2000:]

    def wait_gone(self, what: str, namespace: str = NAMESPACE, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.sh(f"kubectl -n {namespace} get {what} -o name", check=False).stdout.strip():
                return
            time.sleep(2)
        raise AssertionError(f"{what} still there after {timeout:.0f} s:\n" + self.diagnose(namespace))

    # ---- output
    def output_rows(self, prefix: str) -> list[dict]:
        """Every row of the Parquet files under s3://BUCKET/<prefix>, which must hold _SUCCESS."""
        client = self.s3()
        keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
                for o in page.get("Contents", [])]
        assert f"{prefix}_SUCCESS" in keys, f"no _SUCCESS under s3://{BUCKET}/{prefix}: {keys}"
        rows: list[dict] = []
        for key in keys:
            if key.endswith(".parquet"):
                body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
                rows += pq.read_table(io.BytesIO(body)).to_pylist()
        return rows

    def input_keys(self) -> set[str]:
        client = self.s3()
        return {o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=INPUT_PREFIX)
                for o in page.get("Contents", [])}

    def assert_each_input_once(self, prefix: str) -> list[dict]:
        rows = self.output_rows(prefix)
        paths = [row["path"].split(f"{BUCKET}/", 1)[-1] for row in rows]
        assert sorted(paths) == sorted(self.input_keys()), (
            f"s3://{BUCKET}/{prefix}: {len(paths)} rows for {len(self.input_keys())} inputs; "
            f"duplicates {sorted({p for p in paths if paths.count(p) > 1})}, "
            f"missing {sorted(self.input_keys() - set(paths))}")
        return rows


# How the e2e fills the docs' placeholders for this cluster (docblocks.script's `replace`/`skip`): the
# image repository is the image cluster-up imported, with the one-machine sizing and this S3 endpoint;
# the docs' example buckets become the seeded one; `...` credentials come from the S3 server's env.
LOCAL_IMAGE = ("batchinfer -f k8s/kind/values-cpu.yaml -f k8s/local/values.yaml "
               '--set s3.endpoint="$BATCHINFER_S3_ENDPOINT"')
BUCKETS = {"s3://photos/incoming/": "s3://batchinfer/images/", "s3://photos/labels/": "s3://batchinfer/labels/"}
CREDENTIALS = {"AWS_ACCESS_KEY_ID=...": 'AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID"',
               "AWS_SECRET_ACCESS_KEY=...": 'AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"'}
NO_IMAGE_BUILD = {"make image": "cluster-up built the image and imported it into the node",
                  "docker push": "nothing is pushed: the node's containerd holds the image"}


def uninstall(cluster: Cluster, release: str = "classify") -> None:
    cluster.sh(f"helm uninstall {release} -n {NAMESPACE} --ignore-not-found --wait --timeout 3m")
    cluster.wait_gone(f"pods -l app.kubernetes.io/instance={release}")


def read_env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().split())


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    kubeconfig = CLUSTER_HOME / "kubeconfig"
    s3_env_file = CLUSTER_HOME / "s3.env"
    if not kubeconfig.exists() or not s3_env_file.exists():
        pytest.fail(f"no local cluster ({kubeconfig} missing): run make cluster-up first", pytrace=False)
    helm_dir = str(Path(ensure_tool("helm")).parent)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig),
           "PATH": f"{CLUSTER_HOME / 'bin'}:{helm_dir}:{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
           "BATCHINFER_S3_ENV": str(s3_env_file)}
    s3_env = read_env_file(s3_env_file)
    # As after the docs' `set -a; . "$BATCHINFER_S3_ENV"; set +a`: the S3 client settings in the env.
    env.update(s3_env, BATCHINFER_S3_ENDPOINT=s3_env["AWS_ENDPOINT_URL"])
    found = Cluster(env=env, s3_env=s3_env)
    ready = found.sh("kubectl get --raw /readyz", check=False, timeout=20)
    if ready.returncode != 0:
        pytest.fail(f"the local cluster does not answer ({ready.stderr.strip()[:200]}): run make cluster-up", pytrace=False)
    nodes = found.sh("kubectl get nodes -l '!type' -o jsonpath='{.items[*].status.conditions[?(@.type==\"Ready\")].status}'").stdout
    if "True" not in nodes:
        pytest.fail(f"the local cluster's node is not Ready: a kubelet cannot run here ({nodes!r}); "
                    f"see {CLUSTER_HOME / 'logs' / 'kubelet.log'}", pytrace=False)
    return found


@pytest.fixture()
def fresh_namespace(cluster: Cluster, samples: set[str]) -> str:
    """No namespace `batch` yet, as for a new user of the docs (their blocks create it)."""
    cluster.sh(f"kubectl delete namespace {NAMESPACE} --ignore-not-found --wait --timeout=180s")
    return NAMESPACE


@pytest.fixture(scope="session")
def samples(cluster: Cluster) -> set[str]:
    """Sample photos (one corrupt) and the pretrained weights in s3://batchinfer/ (k8s/kind/s3seed.py),
    in a bucket emptied first: the S3 server's data outlives cluster-down, and an earlier e2e's outputs
    would make this one's runs find their work done (--resume)."""
    client = cluster.s3()
    with contextlib.suppress(client.exceptions.NoSuchBucket):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})
    cluster.sh('python k8s/kind/s3seed.py seed --endpoint "$BATCHINFER_S3_ENDPOINT"')
    return cluster.input_keys()


@pytest.fixture()
def seeded(cluster: Cluster, samples: set[str]) -> set[str]:
    """The samples, the namespace `batch` and its credentials Secret: the documented first steps."""
    ensure_namespace(cluster, NAMESPACE)
    return samples


def ensure_namespace(cluster: Cluster, namespace: str) -> None:
    """The namespace and its S3 credentials Secret (as the docs create them), when missing."""
    cluster.sh(f"kubectl get namespace {namespace} || kubectl create namespace {namespace}")
    cluster.sh(f"kubectl -n {namespace} get secret batchinfer-s3 || kubectl -n {namespace} create secret generic "
               'batchinfer-s3 --from-literal=AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" '
               '--from-literal=AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"')


def guard_report(cluster: Cluster) -> tuple[dict[str, int], dict[str, str]]:
    """The guard's counters (rule -> packets: drops, and the refusals of the cloud metadata address)
    and each cluster range's route device."""
    counters, routes = {}, {}
    for line in cluster.sh(f"bash {CLUSTER_SH} guard").stdout.splitlines():
        kind, *rest = line.split()
        if kind in ("drop", "refused"):
            table, outward, cidr, packets = rest
            counters[f"{kind} {table} {outward} {cidr}"] = int(packets)
        elif kind == "route":
            routes[rest[0]] = rest[1] if len(rest) > 1 else ""
    return counters, routes


@pytest.fixture(scope="session", autouse=True)
def guard_baseline(cluster: Cluster) -> dict[str, int]:
    """Proves the guard drops (one probe to a private address out of the outward interface), then
    records its counters: the e2e's last test asserts that nothing else was dropped."""
    import socket

    before, _ = guard_report(cluster)
    probe = socket.socket()
    probe.settimeout(1)
    try:
        probe.connect(("192.168.255.1", 9))
    except OSError:
        pass
    finally:
        probe.close()
    after, _ = guard_report(cluster)
    rule = next(key for key in after if key.startswith("drop mangle") and key.endswith("192.168.0.0/16"))
    assert after[rule] > before[rule], f"the guard did not drop a probe to 192.168.255.1: {after}"
    return after
