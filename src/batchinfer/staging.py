"""The write stage: Ray Data's Parquet datasink into this run's staging area, keeping a record of what
each write task staged (the commit checks the staged files' footers against it), run so that the driver
does not keep every write task's result until the end (`write_streamed`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pyarrow.fs as pafs
import ray
from ray.data import Dataset, TaskPoolStrategy
from ray.data.block import Block, BlockAccessor
from ray.data.datasource import Datasink, FilenameProvider, WriteResult
from ray.data.datasource.datasink import _gen_datasink_write_result
from ray.data._internal.datasource.parquet_datasink import ParquetDatasink
from ray.data._internal.logical.interfaces import LogicalPlan
from ray.data._internal.logical.operators import Write

from batchinfer.sink import WriteRecord

if TYPE_CHECKING:
    from ray.data._internal.execution.interfaces import TaskContext


class StagingFilenames(FilenameProvider):
    """`<write-uuid>_<task:06d>` (Ray Data adds `-<i>.parquet`): the write task is in every staged name
    (sink._STAGED_TASK reads it back)."""

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        return f"{write_uuid}_{task_index:06d}"


class StagingDatasink(ParquetDatasink):
    """Ray Data's Parquet datasink whose write tasks report (task, rows); `record` holds them once the
    write completed."""

    def __init__(self, path: str, filesystem: pafs.FileSystem, rows_per_file: int, run_id: str) -> None:
        super().__init__(path, filesystem=filesystem, min_rows_per_file=rows_per_file,
                         max_rows_per_file=rows_per_file, filename_provider=StagingFilenames())
        self.run_id = run_id
        self.record: WriteRecord | None = None

    def write(self, blocks: Iterable[Block], ctx: "TaskContext") -> dict[str, int]:
        blocks = list(blocks)
        super().write(blocks, ctx)
        return {"task": ctx.task_idx, "rows": sum(BlockAccessor.for_block(block).num_rows() for block in blocks)}

    def on_write_complete(self, write_result: WriteResult) -> None:
        super().on_write_complete(write_result)
        rows_by_task: dict[int, int] = {}
        for each in write_result.write_returns:
            if each and each["rows"]:
                rows_by_task[each["task"]] = each["rows"]
        self.record = WriteRecord(self.run_id, rows_by_task)


def write_streamed(dataset: Dataset, datasink: Datasink, ray_remote_args: dict) -> None:
    """Write `dataset` to `datasink` as `Dataset.write_datasink` does (Ray Data's own Write operator,
    the datasink's on_write_start / on_write_complete / on_write_failed), without its `materialize()`.

    `write_datasink` (Ray 2.60) materializes the write, so the driver holds every write task's result
    block (its ObjectRef, metadata and schema) until the last write ends: about 8 KiB of driver per
    write task more than here (bench/write_memory.py), 78 MiB at 100 M images of the default
    10,000-row files, 0.8 GiB of 1,000-row files. Here each result is read as its task finishes and
    its block dropped; only the datasink's write returns stay.
    Ray's SaveMode.IGNORE (skip the write when the path exists) is not handled: the staging area is
    new for every run."""
    write = Write(datasink, input_dependencies=[dataset._logical_plan.dag], ray_remote_args=ray_remote_args,
                  compute=TaskPoolStrategy())
    written = Dataset._from_parent(dataset, LogicalPlan(write, dataset.context))
    results: list[WriteResult] = []
    try:
        datasink.on_write_start()
        for bundle in written.iter_internal_ref_bundles():
            results.append(_gen_datasink_write_result(ray.get(bundle.block_refs)))
        datasink.on_write_complete(WriteResult.combine(*results))
    except Exception as error:
        datasink.on_write_failed(error)
        raise
