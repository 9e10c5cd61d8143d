"""The stall watchdog on a real Ray cluster (head 2 CPUs, a second node 1 CPU): another job's actors
hold all but 0.1 CPU of each node, so this job's listing task runs, but its inference actor (1.5 CPUs)
cannot start and its decode tasks (0.3 CPU) cannot run. The plan fits the nodes, so only the watchdog
can end the run: exit 1, one line naming the stage and what it waits for, the lease released, and a
--resume once the CPUs are free finishes the job."""

from __future__ import annotations

import os
import re

import pyarrow.parquet as pq
import pytest
import ray

from batchinfer.layout import Output
from batchinfer.lease import lease_store
from batchinfer.pipeline import connect_ray
from batchinfer.storage import resolve, s3_filesystem
from tests.support import RAY_ENV, run_cli

STALL_TIMEOUT_S = 10
OUTPUT = "s3://samples/out/stalled/"


@ray.remote
class Holder:
    """Holds CPUs, as another job's actors would."""

    def ready(self) -> bool:
        return True


@pytest.fixture(scope="module")
def stalled(ray_cluster, samples, s3):
    """The stalled run (its CompletedProcess), its CPUs still held by the Holders: kill them to free them."""
    connect_ray()
    holders = []
    for cpus in (1.9, 0.9):  # one at a time: 1.9 fits the head only, then 0.9 the second node only
        holders.append(Holder.options(num_cpus=cpus).remote())
        ray.get(holders[-1].ready.remote(), timeout=120)
    run = run_cli(["run", "--input", samples["images"], "--output", OUTPUT, "--model", "timm:efficientnet_lite0",
                   "--weights", samples["checkpoint"], "--batch-size", "4", "--stall-timeout", str(STALL_TIMEOUT_S)],
                  {**os.environ, **s3.env(), **RAY_ENV}, timeout_s=300)
    yield run, holders
    for holder in holders:
        ray.kill(holder)
    ray.shutdown()


def test_a_stalled_run_exits_1_with_one_line_naming_the_stage_and_releases_its_lease(stalled, s3_options) -> None:
    run, _ = stalled
    errors = [line for line in run.stderr.splitlines() if line.startswith("batchinfer: error:")]
    assert run.returncode == 1, run.stderr[-3000:]
    assert len(errors) == 1 and run.stderr.rstrip().endswith(errors[0]), run.stderr[-3000:]
    assert re.fullmatch(rf"batchinfer: error: no progress for {STALL_TIMEOUT_S} s: decode waits for .*0\.3 CPU.*"
                        r"[\d.]+ of 3 CPUs free \(free CPUs for it: .*", errors[0]), errors[0]
    assert "Traceback" not in run.stderr
    meta = Output(resolve(OUTPUT, s3_options), s3_options).meta
    assert lease_store(meta, s3_options).read() is None  # a next run takes the output at once


@pytest.mark.slow  # a whole job after the stall
def test_resume_after_a_stall_finishes_the_job(stalled, samples, cli_env, s3_options) -> None:
    _, holders = stalled
    for holder in holders:
        ray.kill(holder)
    run = run_cli(["run", "--input", samples["images"], "--output", OUTPUT, "--model", "timm:efficientnet_lite0",
                   "--weights", samples["checkpoint"], "--batch-size", "4", "--resume"], cli_env)
    assert run.returncode == 0, run.stderr[-3000:]
    table = pq.read_table(OUTPUT.removeprefix("s3://"), filesystem=s3_filesystem(s3_options))
    assert table.num_rows == int(samples["count"]) == len(set(table["path"].to_pylist()))
