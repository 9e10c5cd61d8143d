"""Faults mid-run on real parts: a lost Ray worker node, a killed inference actor, a restarted or dead
S3 server, a killed driver. Each test first proves its fault landed mid-run (rows staged before it, work
left after it, a replacement node or actor seen), then that the finished run holds exactly one row per
input."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import pytest

from devkit.seaweed import SeaweedServer
from tests.reliability.catalog import photo_crops
from tests.reliability.conftest import (Driver, job_env, keys, meta, read_output, replace_worker, staged_rows,
                                        upload)
from tests.support import run_cli

pytestmark = pytest.mark.slow

BUCKET = "faults"
PHOTOS = 240
# Staged files hold at most (and, but for the last, exactly) --rows-per-file rows: 16 gives fifteen, so a
# fault after the first finds some work done and most still to do.
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
    assert prefix + "_SUCCESS" in names and not keys(server, BUCKET, meta(prefix) + "staging/")
    return summary


def assert_mid_run(staged_before: int) -> None:
    """The fault came after some rows were staged and before all were."""
    assert 0 < staged_before < PHOTOS, f"{staged_before} of {PHOTOS} rows staged when the fault landed"


class ActorWatcher:
    """Records the pids of the cluster's inference actors (on the given nodes, else any) while a job runs."""

    def __init__(self, cluster, driver: Driver, nodes=None) -> None:
        self.seen: set[int] = set()
        self._cluster, self._driver, self._nodes = cluster, driver, nodes
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while self._driver.process.poll() is None:
            for pid in self._cluster.process_ids(INFERENCE_ACTOR):
                try:
                    if self._nodes is None or os.getsid(pid) in {node.pid for node in self._nodes}:
                        self.seen.add(pid)
                except ProcessLookupError:
                    continue
            time.sleep(0.2)  # the sampling interval: an actor lives far longer than this

    def stop(self) -> set[int]:
        self._thread.join()
        return self.seen


def test_worker_node_lost_mid_run(store, fault_cluster, photos, tmp_path) -> None:
    """The node with the inference actor dies (like a lost pod) after some rows are staged; a replacement
    node joins, a new inference actor starts on it, and the job finishes."""
    driver = Driver(["--input", photos, "--output", f"s3://{BUCKET}/node-lost/", *JOB_ARGS],
                    job_env(store, fault_cluster), tmp_path)
    try:
        driver.wait_for_staged_files(store, BUCKET, "node-lost/", 1)
        worker = fault_cluster.nodes[-1]
        fault_cluster.kill_node(worker)
        assert_mid_run(staged_rows(store, BUCKET, "node-lost/"))
        replace_worker(fault_cluster, worker)
        watcher = ActorWatcher(fault_cluster, driver, nodes=[fault_cluster.nodes[-1]])
        assert driver.wait() == 0, driver.stderr[-4000:]
    finally:
        driver.kill()
    assert watcher.stop(), "no inference actor ran on the replacement node"
    assert_exactly_one_row_per_input(store, "node-lost/")


def test_inference_actor_killed_mid_run(store, fault_cluster, photos, tmp_path) -> None:
    """SIGKILL the inference actor: Ray starts a replacement and retries its batches. The driver is frozen
    (SIGSTOP) around the kill, so no new work is handed out while the staged rows are counted: the kill
    lands mid-run however fast the model is."""
    driver = Driver(["--input", photos, "--output", f"s3://{BUCKET}/actor-killed/", *JOB_ARGS],
                    job_env(store, fault_cluster), tmp_path)
    try:
        driver.wait_for_staged_files(store, BUCKET, "actor-killed/", 1)
        os.kill(driver.process.pid, signal.SIGSTOP)
        actors = fault_cluster.process_ids(INFERENCE_ACTOR)
        assert len(actors) == 1, f"expected one {INFERENCE_ACTOR} process, found {actors}"
        os.kill(actors[0], signal.SIGKILL)
        assert_mid_run(staged_rows(store, BUCKET, "actor-killed/"))
        watcher = ActorWatcher(fault_cluster, driver)
        os.kill(driver.process.pid, signal.SIGCONT)
        assert driver.wait() == 0, driver.stderr[-4000:]
    finally:
        if driver.process.poll() is None:
            os.kill(driver.process.pid, signal.SIGCONT)
        driver.kill()
    assert watcher.stop() - set(actors), "no replacement inference actor was seen"
    assert_exactly_one_row_per_input(store, "actor-killed/")


def test_driver_killed_then_resume(store, fault_cluster, photos, tmp_path) -> None:
    """Kill the driver once some files are staged. Its lease outlives it for the TTL: an immediate rerun
    exits 2 naming the dead run; `--resume --wait-for-lease` takes over once the lease expires, keeps the
    staged rows and classifies only the rest."""
    args = ["--input", photos, "--output", f"s3://{BUCKET}/driver-killed/", *JOB_ARGS]
    driver = Driver(args, job_env(store, fault_cluster), tmp_path / "first")
    try:
        driver.wait_for_staged_files(store, BUCKET, "driver-killed/", 2)
    finally:
        driver.kill()
    staged_before = staged_rows(store, BUCKET, "driver-killed/")
    assert_mid_run(staged_before)
    assert not keys(store, BUCKET, "driver-killed/_SUCCESS")
    dead_run = driver.stdout.split("batchinfer: run ", 1)[1].split(" ", 1)[0]
    at_once = run_cli(["run", *args, "--resume"], job_env(store, fault_cluster))
    assert at_once.returncode == 2 and len(at_once.stderr.strip().splitlines()) == 1, at_once.stderr[-2000:]
    assert f"being written by another run {dead_run} (started" in at_once.stderr
    # staged results of another job are not mixed in (this call waits out the dead run's lease first)
    assert_refuses_other_job([*args, "--wait-for-lease", "120"], job_env(store, fault_cluster))
    resumed = Driver([*args, "--resume"], job_env(store, fault_cluster), tmp_path / "resumed")
    assert resumed.wait() == 0, resumed.stderr[-4000:]
    summary = assert_exactly_one_row_per_input(store, "driver-killed/")
    print(f"resume granularity: {staged_before} rows staged when the driver was killed, "
          f"{summary['resumed_rows']} kept by --resume, {summary['processed_this_run']} classified again; "
          f"committed files hold {sorted({f['rows'] for f in summary['files']})} rows")
    assert summary["resumed_rows"] >= staged_before
    assert summary["processed_this_run"] == PHOTOS - summary["resumed_rows"] > 0
    assert_refuses_other_job(args, job_env(store, fault_cluster))  # a finished run of another job: not a no-op


def assert_refuses_other_job(args: list[str], env: dict[str, str]) -> None:
    """--resume with another model over this output exits 2 with one line, before any work."""
    other = run_cli(["run", *args, "--resume", "--model", "resnet34"], env)
    *before, line = other.stderr.strip().splitlines()
    assert other.returncode == 2 and line.startswith("batchinfer: error: "), other.stderr[-2000:]
    assert all(taken.startswith("took over the lease") for taken in before), other.stderr[-2000:]  # dead run's
    assert "holds results of a different job (model 'resnet18' -> 'resnet34')" in other.stderr
    assert "--overwrite" in other.stderr


def test_storage_restarted_and_paused_mid_run(flaky_store, fault_cluster, tmp_path) -> None:
    """SeaweedFS is killed as the pipeline starts listing and reading (nothing staged yet) and restarted on the same
    ports 5 s later; later, with some rows staged and most not, it freezes for a few seconds while results
    are written. Reads and writes are retried, no good image becomes an error row, the job completes."""
    driver = Driver(["--input", f"s3://{BUCKET}/photos/", "--output", f"s3://{BUCKET}/restarted/", *JOB_ARGS,
                     "--storage-timeout", "120"], job_env(flaky_store, fault_cluster), tmp_path)
    try:
        driver.wait_for_text(PIPELINE_STARTED)
        assert staged_rows(flaky_store, BUCKET, "restarted/") == 0
        flaky_store.stop()
        time.sleep(5)  # the scenario: an outage of 5 s (shorter than --storage-timeout), not a wait for a condition
        flaky_store.start()
        driver.wait_for_staged_files(flaky_store, BUCKET, "restarted/", 1)
        flaky_store.pause()
        time.sleep(3)  # the scenario: the store frozen for 3 s while results are written
        flaky_store.resume()
        assert_mid_run(staged_rows(flaky_store, BUCKET, "restarted/"))
        assert driver.wait() == 0, driver.stderr[-4000:]
    finally:
        driver.kill()
    # retried, not errors: the listing tasks (which start the pipeline) or the reads met the outage
    assert re.search(r"storage unreachable while trying to (list|read) s3://", driver.stdout + driver.stderr)
    assert_exactly_one_row_per_input(flaky_store, "restarted/")


def test_storage_down_past_limit_fails_cleanly(flaky_store, fault_cluster, tmp_path) -> None:
    """SeaweedFS goes down as the pipeline starts and stays down past --storage-timeout: exit 1 with one
    clear last line and nothing at the output prefix; once storage is back, --resume finishes the job
    (waiting out the lease the failed run could not remove while the store was down)."""
    args = ["--input", f"s3://{BUCKET}/photos/", "--output", f"s3://{BUCKET}/dead/", *JOB_ARGS,
            "--storage-timeout", "5"]
    driver = Driver(args, job_env(flaky_store, fault_cluster), tmp_path / "first")
    try:
        driver.wait_for_text(PIPELINE_STARTED)
        flaky_store.stop()
        assert driver.wait() == 1, driver.stderr[-4000:]
    finally:
        driver.kill()
    last_line = [line for line in driver.stderr.splitlines() if line.startswith("batchinfer: ")][-1]  # Ray's
    # forwarded worker logs may still arrive after it
    assert last_line.startswith("batchinfer: job failed: object storage unreachable for more than 5 s"), last_line
    assert "--resume" in last_line
    flaky_store.start()
    assert [key for key in keys(flaky_store, BUCKET, "dead/") if not key.endswith("/")] == []  # "dir/": a marker
    resumed = Driver([*args, "--resume", "--wait-for-lease", "120"], job_env(flaky_store, fault_cluster),
                     tmp_path / "resumed")
    assert resumed.wait() == 0, resumed.stderr[-4000:]
    assert_exactly_one_row_per_input(flaky_store, "dead/")
