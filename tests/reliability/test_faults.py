"""Faults mid-run on real parts: a lost Ray worker node, a killed inference actor, a restarted or dead
S3 server, a killed driver. Every finished run holds exactly one row per input."""

from __future__ import annotations

import os
import signal
import time

import pytest

from batchinfer.seaweed import SeaweedServer
from tests.reliability.catalog import photo_crops
from tests.reliability.conftest import Driver, job_env, keys, read_output, replace_worker, upload
from tests.support import run_cli

pytestmark = pytest.mark.slow

BUCKET = "faults"
PHOTOS = 240
# Staged files hold at least --rows-per-file rows; with 16 the job stages one per decode block (64
# images), four in all: a fault after the first finds some work done and most still to do.
JOB_ARGS = ["--model", "resnet18", "--weights", "none", "--batch-size", "16", "--rows-per-file", "16",
            "--top-k", "1"]
INFERENCE_ACTOR = "ray::MapWorker(MapBatches(Predictor"  # the actor's process title, set by Ray
PIPELINE_STARTED = "Starting execution of Dataset"  # Ray Data's first line: the decode stage starts reading


@pytest.fixture(scope="module")
def photos(store) -> str:
    upload(store, BUCKET, {f"photos/{index:04d}.jpg": data for index, data in enumerate(photo_crops(PHOTOS, 128))})
    return f"s3://{BUCKET}/photos/"


@pytest.fixture
def flaky_store(tmp_path) -> SeaweedServer:
    """A SeaweedFS server of the test's own, to stop and restart (same ports, same data directory)."""
    server = SeaweedServer(workdir=tmp_path / "s3").start()
    upload(server, BUCKET, {f"photos/{index:04d}.jpg": data for index, data in enumerate(photo_crops(PHOTOS, 128))})
    yield server
    server.stop()


def assert_exactly_one_row_per_input(server: SeaweedServer, prefix: str) -> dict:
    table, summary, names = read_output(server, BUCKET, prefix)
    paths = table["path"].to_pylist()
    assert len(paths) == len(set(paths)) == PHOTOS == summary["rows"]
    assert summary["errors"] == 0, [row["error"] for row in table.to_pylist() if row["error"]][:3]
    assert prefix + "_SUCCESS" in names and not keys(server, BUCKET, prefix + "_staging/")
    return summary


def test_worker_node_lost_mid_run(store, cluster, photos, tmp_path) -> None:
    """The node with the inference actor dies (like a lost pod); a replacement joins; the job finishes."""
    driver = Driver(["--input", photos, "--output", f"s3://{BUCKET}/node-lost/", *JOB_ARGS],
                    job_env(store, cluster), tmp_path)
    try:
        driver.wait_for_staged_files(store, BUCKET, "node-lost/", 1)
        worker = cluster.nodes[-1]
        cluster.kill_node(worker)
        replace_worker(cluster, worker)
        assert driver.wait() == 0, driver.stderr[-4000:]
    finally:
        driver.kill()
    assert_exactly_one_row_per_input(store, "node-lost/")


def test_inference_actor_killed_mid_run(store, cluster, photos, tmp_path) -> None:
    """SIGKILL the inference actor's process: Ray restarts it and retries its batches."""
    # ResNet-50 (the last --model wins) keeps the actor busy for a while after the first staged file,
    # so the kill lands mid-run on a quiet machine too.
    driver = Driver(["--input", photos, "--output", f"s3://{BUCKET}/actor-killed/", *JOB_ARGS,
                     "--model", "resnet50"], job_env(store, cluster), tmp_path)
    try:
        driver.wait_for_staged_files(store, BUCKET, "actor-killed/", 1)
        actors = cluster.process_ids(INFERENCE_ACTOR)
        assert actors, f"no {INFERENCE_ACTOR} process among the cluster's processes"
        os.kill(actors[0], signal.SIGKILL)
        assert driver.wait() == 0, driver.stderr[-4000:]
    finally:
        driver.kill()
    assert_exactly_one_row_per_input(store, "actor-killed/")


def test_driver_killed_then_resume(store, cluster, photos, tmp_path) -> None:
    """Kill the driver once some files are staged; `--resume` keeps them and finishes the rest."""
    args = ["--input", photos, "--output", f"s3://{BUCKET}/driver-killed/", *JOB_ARGS]
    driver = Driver(args, job_env(store, cluster), tmp_path / "first")
    try:
        driver.wait_for_staged_files(store, BUCKET, "driver-killed/", 2)
    finally:
        driver.kill()
    assert not keys(store, BUCKET, "driver-killed/_SUCCESS")
    assert_refuses_other_job(args, job_env(store, cluster))  # staged results of another job: not mixed in
    resumed = Driver([*args, "--resume"], job_env(store, cluster), tmp_path / "resumed")
    assert resumed.wait() == 0, resumed.stderr[-4000:]
    summary = assert_exactly_one_row_per_input(store, "driver-killed/")
    assert summary["resumed_rows"] >= 16 and summary["processed_this_run"] == PHOTOS - summary["resumed_rows"]
    assert_refuses_other_job(args, job_env(store, cluster))  # a finished run of another job: not a no-op


def assert_refuses_other_job(args: list[str], env: dict[str, str]) -> None:
    """--resume with another model over this output exits 2 with one line, before any work."""
    other = run_cli(["run", *args, "--resume", "--model", "resnet34"], env)
    assert other.returncode == 2 and len(other.stderr.strip().splitlines()) == 1, other.stderr[-2000:]
    assert "holds results of a different job (model 'resnet18' -> 'resnet34')" in other.stderr
    assert "--overwrite" in other.stderr


def test_storage_restarted_and_paused_mid_run(flaky_store, cluster, tmp_path) -> None:
    """SeaweedFS is killed as the pipeline starts reading and restarted on the same ports 5 s later;
    later it freezes for a few seconds while results are written. Reads and writes are retried, no
    good image becomes an error row, and the job completes."""
    driver = Driver(["--input", f"s3://{BUCKET}/photos/", "--output", f"s3://{BUCKET}/restarted/", *JOB_ARGS,
                     "--storage-timeout", "120"], job_env(flaky_store, cluster), tmp_path)
    try:
        driver.wait_for_text(PIPELINE_STARTED)
        flaky_store.stop()
        time.sleep(5)
        flaky_store.start()
        driver.wait_for_staged_files(flaky_store, BUCKET, "restarted/", 1)
        flaky_store.pause()
        time.sleep(3)
        flaky_store.resume()
        assert driver.wait() == 0, driver.stderr[-4000:]
    finally:
        driver.kill()
    assert "storage unreachable while trying to read" in driver.stdout + driver.stderr  # retried, not errors
    assert_exactly_one_row_per_input(flaky_store, "restarted/")


def test_storage_down_past_limit_fails_cleanly(flaky_store, cluster, tmp_path) -> None:
    """SeaweedFS goes down as the pipeline starts and stays down past --storage-timeout: exit 1 with one
    clear last line and nothing visible at the output; once storage is back, --resume finishes the job."""
    args = ["--input", f"s3://{BUCKET}/photos/", "--output", f"s3://{BUCKET}/dead/", *JOB_ARGS,
            "--storage-timeout", "5"]
    driver = Driver(args, job_env(flaky_store, cluster), tmp_path / "first")
    try:
        driver.wait_for_text(PIPELINE_STARTED)
        flaky_store.stop()
        assert driver.wait() == 1, driver.stderr[-4000:]
    finally:
        driver.kill()
    last_line = driver.stderr.strip().splitlines()[-1]
    assert last_line.startswith("batchinfer: job failed: object storage unreachable for more than 5 s"), last_line
    assert "--resume" in last_line
    flaky_store.start()
    visible = [key for key in keys(flaky_store, BUCKET, "dead/")
               if not key.startswith("dead/_staging/") and not key.endswith("/")]  # "dir/": pyarrow's marker
    assert visible == []
    resumed = Driver([*args, "--resume"], job_env(flaky_store, cluster), tmp_path / "resumed")
    assert resumed.wait() == 0, resumed.stderr[-4000:]
    assert_exactly_one_row_per_input(flaky_store, "dead/")
