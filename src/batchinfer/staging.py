"""The write stage: Ray Data's Parquet datasink into this run's staging area, keeping a record of what
each write task staged (the commit checks the staged files' footers against it)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pyarrow.fs as pafs
from ray.data.block import Block, BlockAccessor
from ray.data.datasource import FilenameProvider, WriteResult
from ray.data._internal.datasource.parquet_datasink import ParquetDatasink

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

