"""BoundedBlockStats on a real Ray cluster: the driver keeps a bounded number of Ray Data's per-block
stats records, whatever the number of blocks (issue #16)."""

from __future__ import annotations

import pytest
import ray

from batchinfer import driver_memory
from batchinfer.pipeline import connect_ray

BLOCKS = 300


@pytest.fixture
def joined(ray_cluster):
    connect_ray()
    yield
    ray.shutdown()


def _stats_records(bounded: bool) -> dict[str, int]:
    """Run BLOCKS one-row blocks through a map; return the block stats records each operator kept."""
    dataset = ray.data.from_items([{"n": n} for n in range(BLOCKS)], override_num_blocks=BLOCKS) \
        .map_batches(lambda batch: batch, batch_size=1)
    if bounded:
        driver_memory.bound_block_stats(dataset.context)
    done = dataset.materialize()
    assert done.count() == BLOCKS
    return {name: len(records) for name, records in done._raw_stats().metadata.items()}


def test_block_stats_stay_bounded(joined, monkeypatch) -> None:
    monkeypatch.setattr(driver_memory, "STATS_KEPT", 5)
    unbounded = _stats_records(bounded=False)
    bounded = _stats_records(bounded=True)
    # Ray Data (2.60) keeps one record per output block in MapOperator._output_blocks_stats: if that
    # changes, the unbounded run no longer shows it and this test says so.
    assert max(unbounded.values()) == BLOCKS, unbounded
    assert bounded.keys() == unbounded.keys()
    assert all(0 < count <= 2 * 5 for count in bounded.values()), bounded
