"""ray_compat's effects on a real Ray cluster: the split runs where no node has a CPU free (as on a CPU
node whose cores the inference actor holds) and cuts a one-block listing into many decode blocks;
on an untested Ray the job takes the public paths and still completes."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import ray

from batchinfer import ray_compat
from batchinfer.config import JobConfig
from batchinfer.pipeline import SPLIT_TASKS, connect_ray, run_job
from batchinfer.storage import s3_filesystem

PATHS = 300
ROWS = 64


@pytest.fixture
def joined(ray_cluster):
    connect_ray()
    yield
    ray.shutdown()


@ray.remote
class Holder:
    """Holds CPUs, as the inference actor holds its node's."""

    def ready(self) -> bool:
        return True


@pytest.fixture
def cpus_held(joined):
    """Every node keeps a quarter CPU free: 1.75 fits only the 2-CPU head, 0.75 then only the 1-CPU node."""
    holders = [Holder.options(num_cpus=1.75).remote(), Holder.options(num_cpus=0.75).remote()]
    ray.get([holder.ready.remote() for holder in holders], timeout=120)
    assert ray.available_resources().get("CPU", 0) == pytest.approx(0.5)
    yield
    for holder in holders:
        ray.kill(holder)


def _list(unit: dict) -> dict:
    """One listing task's block of PATHS paths (as listing.listing_dataset's tasks make them)."""
    return {"path": [f"s3://in/{n}.jpg" for n in range(PATHS)]}


def _decode_blocks() -> list[int]:
    """A one-block listing of PATHS paths, split, into a 0.25-CPU stage that sees one block per call."""
    listing = ray.data.from_items([{"unit": 0}], override_num_blocks=1).map_batches(
        _list, batch_size=1, num_cpus=0.1, compute=ray.data.TaskPoolStrategy(size=1))
    split = ray_compat.split_blocks(listing, ROWS, SPLIT_TASKS)
    blocks = split.map_batches(lambda batch: {"rows": [len(batch["path"])]}, batch_size=None, num_cpus=0.25)
    return list(blocks.to_pandas()["rows"])


def test_split_runs_where_no_cpu_is_free_and_feeds_decode_many_blocks(cpus_held) -> None:
    rows = _decode_blocks()
    assert sum(rows) == PATHS and len(rows) > 1 and max(rows) <= ROWS, rows


def test_split_on_an_untested_ray_passes_the_listing_on_whole(cpus_held, monkeypatch) -> None:
    monkeypatch.setattr(ray_compat, "tested", lambda: False)
    assert _decode_blocks() == [PATHS]


@pytest.mark.slow  # a whole job, about a minute
def test_the_job_completes_on_the_public_paths(joined, samples, s3_options, monkeypatch) -> None:
    """An untested Ray: no split, no queue cap, no stats bound; the job still classifies every input."""
    monkeypatch.setattr(ray_compat, "tested", lambda: False)
    config = JobConfig(input_uri=samples["images"], output_uri="s3://samples/out/public-paths/",
                       model="timm:efficientnet_lite0", weights=samples["checkpoint"], batch_size=4, s3=s3_options)
    summary = run_job(config).summary
    table = pq.read_table("samples/out/public-paths", filesystem=s3_filesystem(s3_options))
    assert summary["rows"] == table.num_rows == int(samples["count"]) == len(set(table["path"].to_pylist()))
