"""The image, run the way KubeRay runs it: head, worker and submitter containers (make image-e2e).

docker/e2e.sh builds the image and runs this module with BATCHINFER_E2E_IMAGE set; without it (plain
`make test`) the module is skipped. Everything comes from the chart's real render (helm template with
tests/chart/values/cpu.yaml + tests/container/e2e-values.yaml):

* head:      the head container's env + `ray start --head --block <head rayStartParams>`
* worker:    the worker group's env + `ray start --address=<head> --block <worker rayStartParams>`
* submitter: KubeRay's K8sJobMode submitter command around the RayJob's `entrypoint`
* resources: `--cpus`/`--memory` from limits, `--shm-size` from the dshm volume, the user and
  capabilities from the securityContexts, Ray's --num-cpus/--memory from the limits (as KubeRay does)
* credentials: env entries with secretKeyRef are resolved from a Secret the test plays, written to a
  0600 --env-file, never to an argument, a log line or the image.

Host networking replaces Services: every Ray port the pods would share (6379, 8265, 52365, 8080,
worker port ranges) is a free port of this host instead, and Ray binds to 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import os
import re
import resource
import secrets
import shlex
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from devkit.seaweed import free_ports
from tests.chart.kuberay_rules import ray_start_flags
from tests.chart.render import documents, rayjob_of, template  # the chart tests' own helm renderer

ROOT = Path(__file__).resolve().parents[2]

IMAGE = os.environ.get("BATCHINFER_E2E_IMAGE", "")
pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(not IMAGE, reason="needs a built image: make image-e2e (docker/e2e.sh)"),
]

CPU_VALUES = ROOT / "tests" / "chart" / "values" / "cpu.yaml"
E2E_VALUES = Path(__file__).with_name("e2e-values.yaml")
LABEL = "batchinfer-e2e"
BUCKET = "e2e"
N_GOOD = 20
JOB_TIMEOUT_S = int(os.environ.get("E2E_JOB_TIMEOUT_S", "900"))
RUN_ID = os.environ.get("BATCHINFER_E2E_RUN_ID") or secrets.token_hex(3)
STATE_DIR = os.environ.get("BATCHINFER_E2E_STATE", "")  # docker/e2e.sh's run directory (its cleanup reads it)
# KubeRay prefixes `ray start` with `ulimit -n 65536`; where the hard limit is lower that line fails
# with a message and the command goes on, as in a pod. Keep the message out of the logs.
ULIMIT = "ulimit -n 65536 2>/dev/null || ulimit -n $(ulimit -Hn)"


# ----------------------------------------------------------------------------------------- helpers
def docker(*args: str, check: bool = True, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} … failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def quantity_bytes(q: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q))
    assert m, q
    return int(float(m.group(1)) * units.get(m.group(2), 1))


def quantity_cpus(q: str) -> float:
    q = str(q)
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


def http_json(url: str, timeout: float = 5) -> dict | list:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback only)
        return json.loads(resp.read())


def wait_until(what: str, predicate, timeout: float, interval: float = 1.0, on_timeout=None):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except AssertionError:  # a container exited: no point in waiting
            raise
        except Exception as exc:  # not there yet
            last_error = exc
        time.sleep(interval)
    detail = on_timeout() if on_timeout else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error})\n{detail}")


class Pod:
    """One container standing in for a pod of the rendered RayJob."""

    def __init__(self, role: str, template: dict, env_file: Path, secret_data: dict[str, str]):
        self.role = role
        self.name = f"{LABEL}-{RUN_ID}-{role}"
        self.spec = template["spec"]
        self.container = self.spec["containers"][0]
        self.env_file = env_file
        self.secret_data = secret_data

    def env_args(self, extra: dict[str, str]) -> list[str]:
        """Plain values as -e; secretKeyRef values into the --env-file (0600), never onto argv."""
        args, secret_lines = [], []
        for entry in self.container.get("env", []):
            if "value" in entry:
                args += ["-e", f"{entry['name']}={entry['value']}"]
            else:
                ref = entry["valueFrom"]["secretKeyRef"]
                secret_lines.append(f"{entry['name']}={self.secret_data[ref['key']]}")
        for key, value in extra.items():
            args += ["-e", f"{key}={value}"]
        if secret_lines:
            path = self.env_file.with_name(f"{self.role}.env")
            path.touch(mode=0o600)
            path.write_text("\n".join(secret_lines) + "\n")
            args += ["--env-file", str(path)]
        return args

    def resource_args(self) -> list[str]:
        args = []
        limits = self.container.get("resources", {}).get("limits", {})
        if "cpu" in limits:
            args += ["--cpus", str(min(quantity_cpus(limits["cpu"]), os.cpu_count() or 1))]
        if "memory" in limits:
            args += ["--memory", str(quantity_bytes(limits["memory"]))]
        for vol in self.spec.get("volumes", []):
            if vol.get("emptyDir", {}).get("medium") == "Memory":  # dshm -> /dev/shm
                args += ["--shm-size", str(quantity_bytes(vol["emptyDir"]["sizeLimit"]))]
        return args

    def security_args(self) -> list[str]:
        pod_sc, ctr_sc = self.spec.get("securityContext", {}), self.container.get("securityContext", {})
        args = []
        uid, gid = ctr_sc.get("runAsUser", pod_sc.get("runAsUser")), ctr_sc.get("runAsGroup", pod_sc.get("runAsGroup"))
        if uid is not None:
            args += ["--user", f"{uid}:{gid if gid is not None else uid}"]
        if pod_sc.get("fsGroup") is not None:
            args += ["--group-add", str(pod_sc["fsGroup"])]
        if "ALL" in ctr_sc.get("capabilities", {}).get("drop", []):
            args += ["--cap-drop", "ALL"]
        if ctr_sc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        return args

    def run(self, image: str, shell_command: str, env: dict[str, str], detach: bool = True,
            timeout: float = 120, restarts: int = 0) -> subprocess.CompletedProcess:
        # KubeRay's container command is `/bin/bash -lc -- <generated command>`.
        # KubeRay's command raises the soft limit to 65536; this host may cap the hard limit lower.
        nofile = min(65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        args = ["run", "--name", self.name, "--label", f"{LABEL}={RUN_ID}", "--network", "host",
                "--ulimit", f"nofile={nofile}:{nofile}",
                # the chart's /tmp/ray emptyDir (fsGroup 1000 makes it writable there)
                "--tmpfs", "/tmp/ray:rw,exec,uid=1000,gid=1000,mode=0770,size=2g",
                *self.resource_args(), *self.security_args(), *self.env_args(env),
                "--entrypoint", "/bin/bash"]
        args += ["--detach"] if detach else []
        # Ray pods restart like this under a kubelet: e.g. when `ray start` gives up on a slow raylet.
        args += ["--restart", f"on-failure:{restarts}"] if restarts else []
        return docker(*args, image, "-lc", "--", shell_command, timeout=timeout, check=detach)

    def assert_running(self) -> None:
        """Fail at once if the container is gone for good (restarts, like a kubelet's, are fine)."""
        state = docker("inspect", "--format", "{{.State.Status}}", self.name, check=False, timeout=60)
        if state.stdout.strip() not in ("running", "restarting", "created"):
            raise AssertionError(f"the {self.role} container is {state.stdout.strip() or 'gone'}:\n"
                                 f"{self.logs()[-5000:]}")

    def logs(self) -> str:
        proc = docker("logs", self.name, check=False, timeout=60)
        return proc.stdout + proc.stderr

    def processes(self) -> list[tuple[int, str]]:
        out = docker("exec", self.name, "ps", "-eo", "uid=,args=", timeout=60).stdout
        return [(int(line.split(None, 1)[0]), line.split(None, 1)[1] if " " in line.strip() else "")
                for line in out.splitlines() if line.strip()]

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False, timeout=120)


# ---------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def s3():
    from devkit.seaweed import SeaweedServer

    pidfile = Path(STATE_DIR, "weed.pid") if STATE_DIR else None
    with SeaweedServer() as server:
        if pidfile:  # so that docker/e2e.sh can stop it should this process die first
            pidfile.write_text(str(server._process.pid))
        yield server
    if pidfile:  # stopped: nothing left for the safety net
        pidfile.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def dataset(s3):
    """20 JPEGs of assorted sizes and modes plus one corrupt file, under s3://e2e/images/."""
    import numpy as np
    from PIL import Image

    client = s3.client()
    client.create_bucket(Bucket=BUCKET)
    rng = np.random.default_rng(7)
    keys = []
    for i in range(N_GOOD):
        h, w = int(rng.integers(64, 480)), int(rng.integers(64, 640))
        yy, xx = np.mgrid[0:h, 0:w]
        pixels = np.stack([(xx * (i + 3)) % 256, (yy * (i + 5)) % 256,
                           rng.integers(0, 256, (h, w))], axis=-1).astype("uint8")
        img = Image.fromarray(pixels).convert("L" if i % 7 == 3 else "RGB")
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        key = f"images/class{i % 4}/img_{i:03d}.jpg"
        client.put_object(Bucket=BUCKET, Key=key, Body=buf.getvalue())
        keys.append(key)
    client.put_object(Bucket=BUCKET, Key="images/class0/corrupt.jpg", Body=b"\xff\xd8\xff\xe0 not a JPEG at all")
    return {"good": keys, "corrupt": "images/class0/corrupt.jpg"}


@pytest.fixture(scope="module")
def rayjob(s3):
    repository, _, tag = IMAGE.rpartition(":") if ":" in IMAGE.split("/")[-1] else (IMAGE, "", "latest")
    text = template([CPU_VALUES, E2E_VALUES],
                    [f"image.repository={repository}", f"image.tag={tag}", f"s3.endpoint={s3.endpoint}"])
    return rayjob_of(documents(text))


@pytest.fixture(scope="module")
def secret_data(s3):
    # The Secret `s3.existingSecret.name` refers to, with the chart's default key names.
    return {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}


@pytest.fixture(scope="module")
def cluster(rayjob, secret_data, dataset):
    """Head and worker containers, from the rendered RayJob; removed afterwards whatever happens."""
    spec = rayjob["spec"]["rayClusterSpec"]
    head_group, worker_group = spec["headGroupSpec"], spec["workerGroupSpecs"][0]
    workdir = Path(tempfile.mkdtemp(prefix="batchinfer-e2e-"))
    os.chmod(workdir, 0o700)
    (gcs, dash, client_port, head_agent, head_metrics, worker_agent, worker_metrics) = free_ports(7)
    head = Pod("head", head_group["template"], workdir / "secret.env", secret_data)
    worker = Pod("worker", worker_group["template"], workdir / "secret.env", secret_data)

    def limits_params(pod: Pod) -> dict:
        """What KubeRay adds from the container limits when rayStartParams do not say."""
        limits = pod.container["resources"]["limits"]
        return {"num-cpus": str(int(quantity_cpus(limits["cpu"]))), "memory": str(quantity_bytes(limits["memory"]))}

    head_params = {**limits_params(head), **head_group["rayStartParams"],
                   "port": gcs, "dashboard-port": dash, "ray-client-server-port": client_port,
                   "dashboard-agent-listen-port": head_agent, "metrics-export-port": head_metrics,
                   "min-worker-port": 20100, "max-worker-port": 20599, "node-ip-address": "127.0.0.1",
                   "block": "true"}
    worker_params = {**limits_params(worker), **worker_group["rayStartParams"],
                     "address": f"127.0.0.1:{gcs}",
                     "dashboard-agent-listen-port": worker_agent, "metrics-export-port": worker_metrics,
                     "min-worker-port": 20600, "max-worker-port": 21099, "node-ip-address": "127.0.0.1",
                     "block": "true"}
    info = {"head": head, "worker": worker, "dashboard": f"http://127.0.0.1:{dash}", "gcs": gcs,
            "head_params": head_params, "worker_params": worker_params, "workdir": workdir}
    try:
        head.run(IMAGE, f"{ULIMIT}; ray start --head " + " ".join(ray_start_flags(head_params)),
                 env={"RAY_ADDRESS": f"127.0.0.1:{gcs}", "RAY_CLUSTER_NAME": "batchinfer-e2e",
                      "RAY_NODE_TYPE_NAME": "headgroup", "RAY_USAGE_STATS_ENABLED": "0"}, restarts=3)
        def alive_nodes() -> int:
            head.assert_running()
            out = docker("exec", head.name, "ray", "list", "nodes", "--address", info["dashboard"],
                         "--format", "json", check=False, timeout=60).stdout
            nodes = json.loads(out[out.index("["):]) if "[" in out else []
            return len([n for n in nodes if n.get("state") == "ALIVE"])

        def head_up():
            head.assert_running()
            return http_json(f"{info['dashboard']}/api/version") and alive_nodes() == 1

        wait_until("the head node", head_up, timeout=240, interval=2, on_timeout=lambda: head.logs()[-4000:])
        worker.run(IMAGE, f"{ULIMIT}; ray start " + " ".join(ray_start_flags(worker_params)),
                   env={"RAY_NODE_TYPE_NAME": worker_group["groupName"], "RAY_USAGE_STATS_ENABLED": "0"},
                   restarts=3)

        def two_nodes_alive():
            worker.assert_running()
            return alive_nodes() == 2

        wait_until("the worker to join", two_nodes_alive, timeout=240, interval=3,
                   on_timeout=lambda: worker.logs()[-4000:])
        yield info
    finally:
        for pod in (head, worker):
            pod.remove()
        for f in workdir.iterdir():
            f.unlink()
        workdir.rmdir()


@pytest.fixture(scope="module")
def job_run(cluster, rayjob):
    """KubeRay's K8sJobMode submitter around the rendered entrypoint; waits for the job to end."""
    entrypoint = rayjob["spec"]["entrypoint"]
    submission_id = f"batchinfer-e2e-{RUN_ID}"
    template_ = rayjob["spec"]["submitterPodTemplate"]
    submitter = Pod("submitter", template_, cluster["workdir"] / "secret.env", {})
    address = cluster["dashboard"]
    script = (f"echo submitter uid=$(id -u); "
              f"if ! ray job status --address {address} {submission_id} >/dev/null 2>&1 ; then "
              f"ray job submit --address {address} --no-wait --submission-id {submission_id} -- {entrypoint} ; fi ; "
              f"ray job logs --address {address} --follow {submission_id}")
    started = time.monotonic()
    try:
        try:
            proc = submitter.run(IMAGE, script, detach=False, timeout=JOB_TIMEOUT_S,
                                 env={"RAY_DASHBOARD_ADDRESS": address.removeprefix("http://"),
                                      "RAY_JOB_SUBMISSION_ID": submission_id})
        except subprocess.TimeoutExpired as exc:
            output = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            pytest.fail(f"the job did not finish in E2E_JOB_TIMEOUT_S={JOB_TIMEOUT_S} s; submitter output:\n"
                        f"{output[-6000:]}\nhead log:\n{cluster['head'].logs()[-3000:]}", pytrace=False)
        job = http_json(f"{address}/api/jobs/{submission_id}")
        yield {"proc": proc, "job": job, "entrypoint": entrypoint, "seconds": time.monotonic() - started,
               "submitter": submitter, "script": script}
    finally:
        submitter.remove()


# ------------------------------------------------------------------------------------------- tests
def test_image_runs_as_uid_1000_with_batchinfer_on_path():
    config = json.loads(docker("image", "inspect", IMAGE).stdout)[0]["Config"]
    assert config["User"] in ("1000", "1000:1000")
    assert config["WorkingDir"] == "/home/ray"
    # No --user: the image's own default. `bash -lc` as KubeRay runs it (Debian's /etc/profile resets PATH).
    out = docker("run", "--rm", "--network", "none", "--entrypoint", "/bin/bash", IMAGE, "-lc",
                 "id -u; id -g; echo $HOME; pwd; command -v batchinfer ray python3; python3 --version").stdout.split()
    assert out[:4] == ["1000", "1000", "/home/ray", "/home/ray"], out
    assert out[4:7] == ["/opt/venv/bin/batchinfer", "/opt/venv/bin/ray", "/opt/venv/bin/python3"], out
    assert out[7] == "Python" and out[8].startswith("3.11."), out


def test_batchinfer_help_in_the_image():
    top = docker("run", "--rm", "--network", "none", IMAGE, "batchinfer", "--help").stdout
    assert "run" in top
    run_help = docker("run", "--rm", "--network", "none", IMAGE, "batchinfer", "run", "--help").stdout
    for flag in ("--input", "--output", "--model", "--weights", "--device", "--batch-size", "--top-k"):
        assert flag in run_help, flag
    versions = docker("run", "--rm", "--network", "none", IMAGE, "python3", "-c",
                      "import ray, torch, torchvision, pyarrow; "
                      "print(ray.__version__, torch.__version__, torchvision.__version__, pyarrow.__version__)").stdout
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    ray_v, torch_v, tv_v, pa_v = versions.split()
    assert ray_v == pins["ray"] and pa_v == pins["pyarrow"]
    assert torch_v.split("+")[0] == pins["torch"] and tv_v.split("+")[0] == pins["torchvision"]


def test_image_carries_no_credentials():
    inspect = json.loads(docker("image", "inspect", IMAGE).stdout)[0]
    env = inspect["Config"].get("Env") or []
    assert not [e for e in env if re.match(r"(AWS_|PIP_CERT|.*(SECRET|TOKEN|PASSWORD))", e)], env
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", IMAGE).stdout
    assert not re.search(r"AWS_SECRET|AWS_ACCESS_KEY_ID=|PASSWORD=|TOKEN=", history)
    # Nothing credential-like on the image's disk: no AWS config, no pip config/cert, no build secret.
    found = docker("run", "--rm", "--network", "none", "--entrypoint", "/bin/bash", IMAGE, "-c",
                   "ls -A /run/secrets 2>/dev/null; "
                   "ls -d /root/.aws /home/ray/.aws /etc/pip.conf /home/ray/.config/pip /home/ray/.netrc "
                   "/home/ray/.docker 2>/dev/null; env | grep -E '^(AWS_|PIP_CERT)' || true").stdout
    assert found.strip() == "", found


def test_cluster_processes_run_as_non_root(cluster):
    for role in ("head", "worker"):
        procs = cluster[role].processes()
        assert any("raylet" in args for _, args in procs), (role, procs)
        root = [(uid, args) for uid, args in procs if uid == 0]
        assert not root, f"{role} runs processes as root: {root}"
        assert {uid for uid, _ in procs} == {1000}, procs


def test_job_succeeds_and_results_land_in_the_bucket(job_run, s3, dataset):
    proc, job = job_run["proc"], job_run["job"]
    print(f"\nentrypoint: {job_run['entrypoint']}\njob {job.get('status')} in {job_run['seconds']:.0f} s")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "submitter uid=1000" in proc.stdout
    assert job.get("status") == "SUCCEEDED", (job, proc.stdout[-6000:])

    # The chart gives each run its own prefix: <job.output>/<runId>/ (its summary beside it, <prefix>.batchinfer/).
    args = shlex.split(job_run["entrypoint"])
    prefix = args[args.index("--output") + 1].removeprefix(f"s3://{BUCKET}/")
    assert prefix.startswith("predictions/") and prefix != "predictions/", prefix
    client = s3.client()
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    keys = sorted(obj["Key"] for obj in listing.get("Contents", []))
    assert prefix + "_SUCCESS" in keys, keys
    parts = [k for k in keys if k.endswith(".parquet")]
    assert parts, keys
    tables = [pq.read_table(io.BytesIO(client.get_object(Bucket=BUCKET, Key=k)["Body"].read())) for k in parts]
    rows = [row for table in tables for row in table.to_pylist()]
    by_path = {row["path"].split(f"{BUCKET}/", 1)[-1]: row for row in rows}
    assert len(rows) == N_GOOD + 1 == len(by_path), [r["path"] for r in rows]
    assert set(by_path) == set(dataset["good"]) | {dataset["corrupt"]}
    for key in dataset["good"]:
        row = by_path[key]
        assert row["error"] is None, row
        assert row["label"] and 0 <= row["label_index"] < 1000 and 0.0 <= row["score"] <= 1.0, row
        assert len(row["topk_labels"]) == 3 == len(row["topk_scores"]), row
        assert row["model"] and "resnet18" in row["model"], row
    assert by_path[dataset["corrupt"]]["error"], by_path[dataset["corrupt"]]
    assert by_path[dataset["corrupt"]]["label"] is None
    summary = json.loads(client.get_object(Bucket=BUCKET, Key=prefix.rstrip("/") + ".batchinfer/summary.json")["Body"].read())
    print("summary:", json.dumps(summary)[:800])


def test_single_container_run_as_documented(s3, dataset):
    """docs/container.md's one-container run: no Ray cluster (Ray starts in the container), env file."""
    with tempfile.TemporaryDirectory(prefix="batchinfer-e2e-") as tmp:
        env_file = Path(tmp, "s3.env")
        env_file.touch(mode=0o600)
        env_file.write_text(f"AWS_ACCESS_KEY_ID={s3.access_key}\nAWS_SECRET_ACCESS_KEY={s3.secret_key}\n")
        proc = docker("run", "--rm", "--label", f"{LABEL}={RUN_ID}", "--network", "host", "--shm-size=1g",
                      "--env-file", str(env_file), "-e", f"AWS_ENDPOINT_URL={s3.endpoint}",
                      "-e", "AWS_REGION=us-east-1", IMAGE,
                      "batchinfer", "run", "--input", f"s3://{BUCKET}/images/", "--output", f"s3://{BUCKET}/single/",
                      "--model", "resnet18", "--weights", "none", "--device", "cpu", "--limit", "6",
                      check=False, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert s3.secret_key not in proc.stdout + proc.stderr
    client = s3.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="single/").get("Contents", [])]
    assert "single/_SUCCESS" in keys, keys
    summary = json.loads(client.get_object(Bucket=BUCKET, Key="single.batchinfer/summary.json")["Body"].read())
    assert summary["rows"] == 6, summary


def test_secret_never_in_arguments_or_logs(cluster, job_run, s3):
    secret = s3.secret_key
    for pod in (cluster["head"], cluster["worker"]):
        # After the job too (its driver and Ray workers ran here): no process as root.
        assert {uid for uid, _ in pod.processes()} == {1000}, pod.processes()
        config = json.loads(docker("inspect", pod.name).stdout)[0]
        assert secret not in " ".join(config["Args"] + [config["Path"]])
        assert secret not in pod.logs()
        # The job's own Ray logs (driver, workers) inside the containers, searched here (the secret
        # must not go onto an argv to be searched for).
        logs = subprocess.run(["docker", "exec", pod.name, "tar", "-C", "/tmp/ray/session_latest/logs",
                               "-cf", "-", "."], capture_output=True, timeout=120, check=True).stdout
        assert len(logs) > 10240, "no Ray logs found"
        assert secret.encode() not in logs, f"the secret key is in {pod.role}'s Ray logs"
    assert secret not in job_run["script"]
    assert secret not in job_run["proc"].stdout + job_run["proc"].stderr
