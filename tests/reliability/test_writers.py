"""One writer per output, with whole `batchinfer run` drivers on a real Ray cluster: two runs started
together on SeaweedFS and on moto's S3 server (exactly one commits, the other exits 2 naming it), and a
driver frozen past the lease TTL whose output is taken over (it commits nothing, exit 1)."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest

from batchinfer.lease import LEASE
from tests.reliability.catalog import photo_crops
from tests.reliability.conftest import Driver, job_env, keys, meta, read_output, upload
from tests.support import RAY_ENV, wait_until

pytestmark = pytest.mark.slow

BUCKET = "writers"
PHOTOS = 120
JOB_ARGS = ["--model", "resnet18", "--weights", "none", "--batch-size", "16", "--rows-per-file", "16",
            "--top-k", "1"]
RUN_LINE = re.compile(r"batchinfer: run ([0-9a-f]{12}) writes ")


class MotoStore:
    """moto's S3 server in this process, shaped like SeaweedServer for the helpers in conftest."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "moto", "AWS_SECRET_ACCESS_KEY": "moto",
                "AWS_REGION": "us-east-1"}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="moto", aws_secret_access_key="moto")


@pytest.fixture(scope="module")
def moto_store():
    store = MotoStore()
    yield store
    store.server.stop()


@pytest.fixture(params=["seaweedfs", "moto"])
def server(request, store):
    """The S3 server under test, with the photos uploaded."""
    chosen = store if request.param == "seaweedfs" else request.getfixturevalue("moto_store")
    upload(chosen, BUCKET, {f"photos/{index:04d}.jpg": data for index, data in enumerate(photo_crops(PHOTOS, 96))})
    return chosen


def env_for(server, cluster) -> dict[str, str]:
    return {**os.environ, **server.env(), **RAY_ENV, "RAY_ADDRESS": cluster.address}


def run_id(driver: Driver) -> str:
    found = RUN_LINE.search(driver.stdout)
    assert found, driver.stdout[-2000:] + driver.stderr[-2000:]
    return found.group(1)


def assert_complete(server, prefix: str, committed_by: str) -> None:
    table, summary, names = read_output(server, BUCKET, prefix)
    paths = table["path"].to_pylist()
    assert len(paths) == len(set(paths)) == PHOTOS == summary["rows"] and summary["errors"] == 0
    assert summary["run_id"] == committed_by
    assert sorted(names) == sorted([prefix + "_SUCCESS", *(prefix + f["name"] for f in summary["files"])])
    beside = [key for key in keys(server, BUCKET, meta(prefix)) if not key.endswith("/")]  # "dir/": a marker
    assert beside == [meta(prefix) + "report.html", meta(prefix) + "summary.json"]  # no lease, no staging left


def test_two_runs_on_one_output(server, fault_cluster, tmp_path) -> None:
    """Both start at once: the one that takes the lease commits; the other exits 2 within its
    pre-flight, before the first finishes, with one line naming the first (id, start time, host)."""
    prefix = f"together-{time.time_ns()}/"
    args = ["--input", f"s3://{BUCKET}/photos/", "--output", f"s3://{BUCKET}/{prefix}", *JOB_ARGS]
    drivers = [Driver(args, env_for(server, fault_cluster), tmp_path / name) for name in ("a", "b")]
    try:
        wait_until(lambda: any(driver.process.poll() is not None for driver in drivers), 600,
                   "either run to end", interval_s=0.2)
        loser = next(driver for driver in drivers if driver.process.poll() is not None)
        winner = next(driver for driver in drivers if driver is not loser)
        assert winner.process.poll() is None  # the second writer gave up while the first still ran
        assert loser.wait() == 2, loser.stderr[-3000:]
        assert winner.wait() == 0, winner.stderr[-3000:]
    finally:
        for driver in drivers:
            driver.kill()
    error = loser.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("batchinfer: error: "), loser.stderr[-3000:]
    holder = run_id(winner)
    assert f"being written by another run {holder} (started 20" in error[0] and "host " in error[0]
    assert "--wait-for-lease" in error[0]
    assert not RUN_LINE.search(loser.stdout)  # it never started writing
    assert_complete(server, prefix, committed_by=holder)


def test_frozen_driver_loses_its_output_and_commits_nothing(store, fault_cluster, tmp_path) -> None:
    """A driver is frozen (SIGSTOP: a paused VM, a partitioned node) after it staged results. Its lease
    expires; a retry with --resume --wait-for-lease takes the output over. Thawed, the first driver finds
    the lease gone to the retry, commits nothing and exits 1 with one line; the retry commits everything."""
    upload(store, BUCKET, {f"photos/{index:04d}.jpg": data for index, data in enumerate(photo_crops(PHOTOS, 96))})
    prefix = "frozen/"
    args = ["--input", f"s3://{BUCKET}/photos/", "--output", f"s3://{BUCKET}/{prefix}", *JOB_ARGS]
    first = Driver(args, job_env(store, fault_cluster), tmp_path / "first")
    retry = None
    try:
        first.wait_for_staged_files(store, BUCKET, prefix, 1)
        os.kill(first.process.pid, signal.SIGSTOP)
        frozen = run_id(first)
        retry = Driver([*args, "--resume", "--wait-for-lease", "120"], job_env(store, fault_cluster), tmp_path / "retry")
        lease_key = meta(prefix) + LEASE

        def lease_holder_other_than_frozen() -> str | None:
            holder = json.loads(store.client().get_object(Bucket=BUCKET, Key=lease_key)["Body"].read())["run_id"]
            return holder if holder != frozen else None

        # the retry takes the lease once the frozen run's heartbeat is older than the TTL
        holder = wait_until(lease_holder_other_than_frozen, 300, "the retry to take over the lease",
                            give_up=retry.ended, interval_s=0.5)
        assert holder == run_id(retry)
        assert not keys(store, BUCKET, prefix + "_SUCCESS")
        os.kill(first.process.pid, signal.SIGCONT)
        assert first.wait() == 1, first.stderr[-3000:]
        assert retry.wait() == 0, retry.stderr[-3000:]
    finally:
        if first.process.poll() is None:
            os.kill(first.process.pid, signal.SIGCONT)
        first.kill()
        if retry is not None:
            retry.kill()
    # Our one line; a Ray warning (a full disk, say) may come after it.
    [last] = [line for line in first.stderr.splitlines() if line.startswith("batchinfer: job failed")]
    assert last.startswith(f"batchinfer: job failed: lost the lease on s3://{BUCKET}/{prefix} to run {holder} ")
    assert last.endswith("nothing was committed by this run") and "Traceback" not in first.stderr
    assert_complete(store, prefix, committed_by=holder)
