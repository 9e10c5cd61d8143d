"""Nothing waits forever, on a real Ray cluster (head 2 CPUs, a second node 1 CPU).

The plan check: an inference actor no node can hold is refused before any work. The stall watchdog:
another job's actors hold all but 0.1 CPU of each node, so this job's listing task runs, but its
inference actor (1.5 CPUs) cannot start and its decode tasks (0.3 CPU) cannot run. The plan fits the
nodes, so only the watchdog can end the run: exit 1, one line naming the stage and what it waits
for, the lease released, and a --resume once the CPUs are free finishes the job."""

from __future__ import annotations

import os
import re

import pyarrow.parquet as pq
import pytest
import ray

from batchinfer.config import JobConfig, UserError
from batchinfer.layout import Output
from batchinfer.lease import lease_store
from batchinfer.pipeline import check_plan, connect_ray, place_inference
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
def joined(ray_cluster):
    connect_ray()
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def stalled(joined, samples, s3):
    """The stalled run (its CompletedProcess), its CPUs still held by the Holders: kill them to free them."""
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


def test_a_plan_no_node_can_hold_is_refused_on_a_local_ray_and_a_warning_on_a_joined_one(joined, monkeypatch,
                                                                                        capsys) -> None:
    """An inference actor of 3 CPUs, on nodes of 2 and 1: before any work (preflight's check_plan)."""
    config = JobConfig(input_uri="s3://b/in/", output_uri="s3://b/out/", num_cpus_per_worker=3).validate()
    resources = place_inference(config, "cpu", 0, [2, 1])
    check_plan(config, resources)  # joined (RAY_ADDRESS): the autoscaler may add a node
    assert capsys.readouterr().err.startswith("batchinfer: warning: inference cannot start: an actor asks for "
                                              "3 CPU and none fit on the Ray cluster's nodes (the roomiest has 2 CPU")
    monkeypatch.delenv("RAY_ADDRESS")
    with pytest.raises(UserError, match=r"^inference cannot start: an actor asks for 3 CPU and none fit"):
        check_plan(config, resources)


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
