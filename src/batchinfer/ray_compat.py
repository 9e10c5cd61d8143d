"""Every reach into Ray's private modules and attributes, in one place (issue #32).

Ray Data has no public way to do what these do. Each was written against Ray TESTED_RAY and is checked
by canary tests that fail the day Ray changes what it relies on: tests/unit/test_ray_compat.py (the
names, fields and signatures), tests/test_ray_compat.py and tests/test_driver_memory.py (the effects,
on a real cluster). On any other Ray minor version none of them runs: the job takes Ray's public
behaviour instead, after one warning line, and never hangs.

| touch | what it changes in Ray Data | on an untested Ray |
|---|---|---|
| `split_blocks` | the streaming repartition's tasks ask for no CPU, SPLIT_TASKS at a time | no split: a decode task takes an upstream block whole (fewer, longer decode tasks) |
| `cap_queued_blocks` | `QueuedBlocksCap`, a backpressure policy beside Ray Data's own | Ray Data's byte-based backpressure only (more driver memory) |
| `bound_block_stats` | `BoundedBlockStats`, an execution callback trimming per-block stats | every block's stats kept (more driver memory) |
"""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING

import ray
from ray.data import DataContext, Dataset, TaskPoolStrategy

TESTED_RAY = (2, 60)  # the Ray minor version every touch here was written and tested against
QUEUED_BLOCKS_KEY = "batchinfer.queued_blocks"  # DataContext config: QueuedBlocksCap's limit
STATS_KEPT_KEY = "batchinfer.stats_kept"        # DataContext config: BoundedBlockStats' records kept

if TYPE_CHECKING:  # TaskContext: what Ray Data passes to Datasink.write (staging.py), not exported
    from ray.data._internal.execution.interfaces import PhysicalOperator, TaskContext
    from ray.data._internal.execution.streaming_executor import StreamingExecutor


def ray_minor(version: str) -> tuple[int, int]:
    """(major, minor) of a Ray version string such as '2.60.0' or '2.61.0rc1'."""
    major, minor = version.split(".")[:2]
    return int(major), int("".join(digit for digit in minor if digit.isdigit()) or 0)


@functools.cache
def tested() -> bool:
    """True on the tested Ray minor version; else False, after one warning line on stderr."""
    if ray_minor(ray.__version__) == TESTED_RAY:
        return True
    print(f"batchinfer: Ray {ray.__version__} is not the tested {TESTED_RAY[0]}.{TESTED_RAY[1]}: Ray Data "
          "runs without batchinfer's internal settings (the driver may use more memory, decode tasks take "
          "larger blocks)", file=sys.stderr, flush=True)
    return False


if ray_minor(ray.__version__) == TESTED_RAY:  # Ray 2.60 private layout: another Ray may lack these modules
    from ray.data._internal.execution.backpressure_policy import (ENABLED_BACKPRESSURE_POLICIES,
                                                                  ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY,
                                                                  BackpressurePolicy)
    from ray.data._internal.execution.execution_callback import ExecutionCallback
    from ray.data._internal.logical.operators import StreamingRepartition

    class QueuedBlocksCap(BackpressurePolicy):
        """Ray Data backpressure policy: an operator starts no task, and takes no more output from its
        running ones, while the context's QUEUED_BLOCKS_KEY or more of its blocks wait for its consumers
        (its output queue and their input queues). Ray Data's own policies count bytes only.

        Not counted: the blocks a consumer has taken in and is gathering into one task's input (a write
        task's --rows-per-file rows may be more blocks than the cap), which it needs to make progress."""

        @property
        def name(self) -> str:
            return "QueuedBlocksCap"

        def _queued_blocks(self, operator: PhysicalOperator) -> int:
            state = self._topology.get(operator)
            if state is None or not operator.output_dependencies:
                return 0
            return state.total_enqueued_output_blocks() + sum(
                queue.num_blocks for consumer in operator.output_dependencies if consumer in self._topology
                for queue in self._topology[consumer].input_queues)

        def _full(self, operator: PhysicalOperator) -> bool:
            return self._queued_blocks(operator) >= self._data_context.get_config(QUEUED_BLOCKS_KEY)

        def can_add_input(self, operator: PhysicalOperator) -> bool:
            return not self._full(operator)

        def max_task_output_bytes_to_read(self, operator: PhysicalOperator) -> int | None:
            return 0 if self._full(operator) else None

    class BoundedBlockStats(ExecutionCallback):
        """Ray Data execution callback: each operator keeps at most twice the context's STATS_KEPT_KEY
        block stats records, trimmed to the newest STATS_KEPT_KEY (a trim runs once per that many blocks)."""

        def on_execution_step(self, executor: StreamingExecutor) -> None:
            kept = executor._data_context.get_config(STATS_KEPT_KEY)
            for operator in executor._topology or ():
                records = getattr(operator, "_output_blocks_stats", None)
                if records is not None and len(records) > 2 * kept:
                    del records[:-kept]


def split_blocks(dataset: Dataset, rows: int, tasks: int) -> Dataset:
    """Blocks of `rows` rows (a listing task's block holds thousands of paths), so decode tasks run in
    parallel and results reach the writer in small steps, as they are classified; cut by tasks that ask
    for no CPU (they only move rows), at most `tasks` at a time (a 0-CPU task has no other bound: each
    one running is a worker process).

    Ray Data's streaming repartition runs as tasks of 1 CPU, with no public parameter to change it
    (Ray 2.60): on a CPU node whose cores the inference actor holds, one would never start and the job
    would hang. Here its frozen logical operator is given 0 CPUs and a task pool of `tasks`. On an
    untested Ray the dataset is returned as it is: each decode task then takes an upstream block whole."""
    if not tested():
        return dataset
    split = dataset.repartition(target_num_rows_per_block=rows)
    operator = split._logical_plan.dag
    assert isinstance(operator, StreamingRepartition), type(operator)
    operator.ray_remote_args["num_cpus"] = 0
    object.__setattr__(operator, "compute", TaskPoolStrategy(size=tasks))
    return split


def cap_queued_blocks(context: DataContext, blocks: int) -> None:
    """Add QueuedBlocksCap (at most `blocks` queued per operator) to the backpressure policies of
    `context`, once. On an untested Ray: nothing (Ray Data's own policies)."""
    if not tested():
        return
    context.set_config(QUEUED_BLOCKS_KEY, blocks)
    policies = list(context.get_config(ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY, ENABLED_BACKPRESSURE_POLICIES))
    if QueuedBlocksCap not in policies:
        context.set_config(ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY, [*policies, QueuedBlocksCap])


def bound_block_stats(context: DataContext, kept: int) -> None:
    """Install BoundedBlockStats (the newest `kept` records per operator) in `context`, once. On an
    untested Ray: nothing (Ray Data keeps every block's stats)."""
    if not tested():
        return
    context.set_config(STATS_KEPT_KEY, kept)
    if BoundedBlockStats not in context.custom_execution_callback_classes:
        context.custom_execution_callback_classes.append(BoundedBlockStats)
