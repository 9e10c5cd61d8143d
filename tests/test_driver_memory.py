"""What keeps the driver flat, on a real Ray cluster (issue #16): a bounded number of Ray Data's per-block
stats records and a bounded queue of blocks. Also the canaries of ray_compat's two touches for it: each
test runs Ray Data without the touch first and fails if Ray no longer shows what the touch bounds."""

from __future__ import annotations

import threading
import time

import pytest
import ray

from batchinfer import driver_memory
from batchinfer.pipeline import connect_ray

pytestmark = pytest.mark.slow  # hundreds of blocks through real Ray Data: make test-slow

BLOCKS = 300
QUEUE_BLOCKS = 200


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


@ray.remote(num_cpus=0)
class Lead:
    """How far a producer stage ran ahead of its consumer: blocks produced less blocks consumed, at most."""

    def __init__(self) -> None:
        self.produced = self.consumed = self.most = 0

    def produce(self) -> None:
        self.produced += 1

    def consume(self) -> None:
        self.consumed += 1
        self.most = max(self.most, self.produced - self.consumed)

    def result(self) -> tuple[int, int]:
        return self.consumed, self.most


class SlowConsumer:
    """A stage slower than its producer (as decode is slower than the listing's split)."""

    def __init__(self, lead) -> None:
        self.lead = lead

    def __call__(self, batch: dict) -> dict:
        ray.get(self.lead.consume.remote())
        threading.Event().wait(0.02)  # the work this stage stands for
        return batch


def _most_blocks_ahead(capped: bool) -> int:
    """Run QUEUE_BLOCKS one-row blocks through a fast task stage into a slow actor; return how many blocks
    the fast stage was ever ahead of the slow one."""
    lead = Lead.remote()
    started = time.monotonic()

    def produce(batch: dict) -> dict:
        ray.get(lead.produce.remote())
        return batch

    dataset = ray.data.from_items([{"n": n} for n in range(QUEUE_BLOCKS)], override_num_blocks=QUEUE_BLOCKS) \
        .map_batches(produce, batch_size=1, num_cpus=0.1) \
        .map_batches(SlowConsumer, fn_constructor_kwargs={"lead": lead}, batch_size=1, num_cpus=0.5,
                     compute=ray.data.ActorPoolStrategy(size=1))
    if capped:
        driver_memory.cap_queued_blocks(dataset.context)
    assert dataset.count() == QUEUE_BLOCKS
    consumed, most = ray.get(lead.result.remote())
    print(f"{QUEUE_BLOCKS} blocks, capped={capped}: {time.monotonic() - started:.1f} s")
    assert consumed == QUEUE_BLOCKS
    return most


def test_queued_blocks_stay_bounded(joined, monkeypatch) -> None:
    monkeypatch.setattr(driver_memory, "QUEUED_BLOCKS", 10)
    unbounded = _most_blocks_ahead(capped=False)
    bounded = _most_blocks_ahead(capped=True)
    print(f"most blocks ahead of the slow stage: {unbounded} uncapped, {bounded} capped")
    # Ray Data's own backpressure counts bytes: one-row blocks pile up ahead of the slow stage
    assert unbounded > 5 * 10, unbounded
    # capped: the queue, plus the blocks the slow actor holds and the fast tasks running when it filled
    assert bounded <= 10 + 10, bounded


def test_queued_blocks_cap_lets_a_consumer_gather_more(joined, monkeypatch) -> None:
    """A consumer that gathers more blocks than the cap into one task (as a write task gathers
    --rows-per-file rows) still gets them: blocks it has taken in do not count as queued."""
    monkeypatch.setattr(driver_memory, "QUEUED_BLOCKS", 10)
    dataset = ray.data.from_items([{"n": n} for n in range(100)], override_num_blocks=100) \
        .map_batches(lambda batch: batch, batch_size=1, num_cpus=0.1) \
        .map_batches(lambda batch: {"rows": [len(batch["n"])]}, batch_size=50, num_cpus=0.5)
    driver_memory.cap_queued_blocks(dataset.context)
    finished = threading.Event()
    gathered: list[int] = []

    def run() -> None:
        gathered.extend(dataset.to_pandas()["rows"])
        finished.set()

    threading.Thread(target=run, daemon=True).start()
    assert finished.wait(600), "the pipeline stalled: the cap held back blocks its consumer was gathering"
    assert sorted(gathered) == [50, 50]
