"""Real parts for the reliability tests. Most run on the session's S3 server and Ray cluster
(tests/conftest.py: the server's secret is the distinctive SECRET, searched for in every log line and output
object); the fault tests, which kill and stop nodes, get a two-node Ray cluster of their own whose inference
actor fits only on the worker node (head 1 CPU, worker 2 CPUs), so they never touch the session's."""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from devkit.seaweed import SeaweedServer
from tests.support import BIN, RAY_ENV, LocalRayCluster, start_cluster, wait_until

NODE_PARAMS = {"head": ["--num-cpus=1", "--object-store-memory=400000000"],
               "worker": ["--num-cpus=2", "--object-store-memory=400000000"]}


@pytest.fixture(scope="session")
def store(s3) -> SeaweedServer:
    """The session's S3 server."""
    return s3


@pytest.fixture(scope="session")
def cluster(ray_cluster) -> LocalRayCluster:
    """The session's Ray cluster, for tests that only run jobs on it."""
    return ray_cluster


@pytest.fixture(scope="session")
def fault_cluster(store) -> LocalRayCluster:
    """A cluster the fault tests may kill nodes of. Nodes carry the S3 settings in their environment,
    like KubeRay pods fed from a Secret."""
    env = {**store.env(), "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    workdir = Path(f"/tmp/bi-rel-{os.getpid()}")  # Ray's socket paths must stay < 108 bytes
    ray_cluster = start_cluster(workdir, NODE_PARAMS["head"], [NODE_PARAMS["worker"]], env)
    yield ray_cluster
    ray_cluster.stop()


def replace_worker(ray_cluster: LocalRayCluster, lost: subprocess.Popen) -> None:
    """Start a new worker node in place of a lost one, as KubeRay does for a lost pod."""
    ray_cluster.replace_node(lost, NODE_PARAMS["worker"], f"replacement-{time.time_ns()}")


def job_env(server: SeaweedServer, ray_cluster: LocalRayCluster) -> dict[str, str]:
    """Environment of a `batchinfer` driver on `ray_cluster` reading from `server`."""
    return {**os.environ, **server.env(), **RAY_ENV, "RAY_ADDRESS": ray_cluster.address}


def upload(server: SeaweedServer, bucket: str, objects: dict[str, bytes]) -> None:
    client = server.client()
    if bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=bucket)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda item: client.put_object(Bucket=bucket, Key=item[0], Body=item[1]), objects.items()))


def keys(server: SeaweedServer, bucket: str, prefix: str) -> list[str]:
    paginator = server.client().get_paginator("list_objects_v2")
    return [obj["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])]


def meta(prefix: str) -> str:
    """The run's own files beside an output prefix (`out/` -> `out.batchinfer/`)."""
    return prefix.rstrip("/") + ".batchinfer/"


def read_output(server: SeaweedServer, bucket: str, prefix: str):
    """The committed output: (table of all part files, summary dict, object keys at the prefix)."""
    client = server.client()
    names = keys(server, bucket, prefix)
    parts = sorted(key for key in names if key.startswith(prefix + "part-"))
    tables = [pq.read_table(io.BytesIO(client.get_object(Bucket=bucket, Key=key)["Body"].read()))
              for key in parts]
    summary = json.loads(client.get_object(Bucket=bucket, Key=meta(prefix) + "summary.json")["Body"].read())
    return pa.concat_tables(tables), summary, names


def staged_rows(server: SeaweedServer, bucket: str, prefix: str) -> int:
    """Rows in the Parquet files a running job has staged so far (read from their footers)."""
    client = server.client()
    staged = [key for key in keys(server, bucket, meta(prefix) + "staging/") if key.endswith(".parquet")]
    return sum(pq.ParquetFile(io.BytesIO(client.get_object(Bucket=bucket, Key=key)["Body"].read())).metadata.num_rows
               for key in staged)


class Driver:
    """A `batchinfer run` driver process in the background, with its output in files; with `own_group`,
    in a process group of its own, as a terminal starts a command (the local Ray it starts joins it)."""

    def __init__(self, args: list[str], env: dict[str, str], logdir: Path, own_group: bool = False) -> None:
        logdir.mkdir(parents=True, exist_ok=True)
        self.stdout_path, self.stderr_path = logdir / "stdout.txt", logdir / "stderr.txt"
        self.process = subprocess.Popen([str(BIN / "batchinfer"), "run", *args], env=env,
                                        stdout=self.stdout_path.open("wb"), stderr=self.stderr_path.open("wb"),
                                        start_new_session=own_group)

    def wait(self, timeout_s: float = 600) -> int:
        return self.process.wait(timeout=timeout_s)

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def ended(self) -> str | None:
        """Why waiting on this run is pointless (it has exited), for wait_until's `give_up`."""
        if self.process.poll() is None:
            return None
        return f"the job ended (exit {self.process.returncode}):\n{self.stderr[-3000:]}"

    def wait_for_staged_files(self, server: SeaweedServer, bucket: str, prefix: str, count: int,
                              timeout_s: float = 300) -> None:
        """Block until the run has staged `count` Parquet files (i.e. it is mid-run)."""
        def staged() -> bool:
            found = [key for key in keys(server, bucket, meta(prefix) + "staging/") if key.endswith(".parquet")]
            return len(found) >= count

        wait_until(staged, timeout_s, f"{count} staged files", give_up=self.ended, interval_s=0.2)

    def wait_for_text(self, text: str, timeout_s: float = 300) -> None:
        """Block until the driver has printed `text` (stderr), e.g. Ray Data's start of execution."""
        wait_until(lambda: text in self.stderr, timeout_s, repr(text), give_up=self.ended, interval_s=0.1)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
