"""The write stage: a Ray Data datasink of our own that writes each write task's rows as Parquet into
this run's staging area, under names it chooses, and keeps a record of what each write task staged
(the commit checks the staged files' footers against it: commit.commit_candidates). The staged files'
names are made and read back here only (`staged_name`, `staged_task`)."""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from ray.data.block import Block, BlockAccessor
from ray.data.datasource import Datasink, WriteResult

from batchinfer.storage import retry_storage

if TYPE_CHECKING:
    from batchinfer.ray_compat import TaskContext


_STAGED_NAME = re.compile(r"_(\d{6})-\d+\.parquet$")  # what staged_name makes: the write task's index


def staged_name(write_id: str, task: int, file: int) -> str:
    """A staged file's name: this write's id, the write task (`staged_task` reads it back) and the
    task's file number."""
    return f"{write_id}_{task:06d}-{file}.parquet"


def staged_task(path: str) -> int | None:
    """The write task that staged the file at `path` (named by `staged_name`); None for another naming."""
    found = _STAGED_NAME.search(path)
    return int(found.group(1)) if found else None


@dataclass(frozen=True)
class WriteRecord:
    """What this run's pipeline staged: rows per Ray Data write task, as the write tasks reported them."""

    run_id: str
    rows_by_task: dict[int, int]

    @property
    def rows(self) -> int:
        return sum(self.rows_by_task.values())


class StagingDatasink(Datasink[dict[str, int]]):
    """Writes each write task's rows (at least `rows_per_file`, Ray Data gathers them) into `path` as
    Parquet files of at most `rows_per_file` rows, one row group each, and returns (task, rows);
    `record` holds them once the write completed. A retried write task writes the same names again."""

    def __init__(self, path: str, filesystem: pafs.FileSystem, rows_per_file: int, run_id: str,
                 storage_timeout_s: float) -> None:
        self.path = path
        self.filesystem = filesystem
        self.rows_per_file = rows_per_file
        self.run_id = run_id
        self.storage_timeout_s = storage_timeout_s
        self.write_id = uuid.uuid4().hex
        self.record: WriteRecord | None = None

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def _write_file(self, table: pa.Table, name: str) -> None:
        if self.filesystem.type_name != "s3":  # an object store needs no directories
            self.filesystem.create_dir(self.path, recursive=True)
        pq.write_table(table, f"{self.path}/{name}", filesystem=self.filesystem, row_group_size=self.rows_per_file)

    def write(self, blocks: Iterable[Block], ctx: TaskContext) -> dict[str, int]:
        tables = [table for table in (BlockAccessor.for_block(block).to_arrow() for block in blocks) if table.num_rows]
        rows = sum(table.num_rows for table in tables)
        if rows:
            table = pa.concat_tables(tables, promote_options="default")
            for file, start in enumerate(range(0, rows, self.rows_per_file)):
                name = staged_name(self.write_id, ctx.task_idx, file)
                retry_storage(functools.partial(self._write_file, table.slice(start, self.rows_per_file), name),
                              f"write {self.path}/{name}", self.storage_timeout_s)
        return {"task": ctx.task_idx, "rows": rows}

    def on_write_complete(self, write_result: WriteResult[dict[str, int]]) -> None:
        rows_by_task = {each["task"]: each["rows"] for each in write_result.write_returns if each and each["rows"]}
        self.record = WriteRecord(self.run_id, rows_by_task)
