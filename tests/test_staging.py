"""The staging datasink through Ray Data's public write_datasink on a real Ray cluster: the names it
chooses, files of at most --rows-per-file rows, and the record the commit checks them against."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import ray

from batchinfer import columns as col
from batchinfer.pipeline import connect_ray
from batchinfer.commit import StagedFile, commit_candidates
from batchinfer.commit_tasks import read_footer
from batchinfer.staging import StagingDatasink

ROWS, BLOCKS, ROWS_PER_FILE = 95, 19, 20
RUN = "run-1"


@pytest.fixture
def joined(ray_cluster):
    connect_ray()
    yield
    ray.shutdown()


def _predictions(batch: pa.Table) -> pa.Table:
    """Rows shaped like the inference stage's: a path, no error."""
    nulls = pa.nulls(batch.num_rows, pa.string())
    return pa.table({col.PATH: pc.cast(batch["id"], pa.string()), col.ERROR: nulls, col.ERROR_KIND: nulls})


def _staged(root: str) -> list[StagedFile]:
    filesystem = pafs.LocalFileSystem()
    infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    return [read_footer(filesystem, info.path, root) for info in infos if info.type == pafs.FileType.File]


def test_staged_files_and_record_match(joined, tmp_path) -> None:
    root = str(tmp_path / "staging")
    sink = StagingDatasink(f"{root}/{RUN}", pafs.LocalFileSystem(), ROWS_PER_FILE, RUN, storage_timeout_s=30)
    ray.data.range(ROWS, override_num_blocks=BLOCKS).map_batches(_predictions, batch_format="pyarrow") \
        .write_datasink(sink, ray_remote_args={"num_cpus": 0})
    files = _staged(root)
    assert sink.record is not None and sink.record.rows == ROWS
    # each write task gathers --rows-per-file rows, but the last
    assert sum(rows < ROWS_PER_FILE for rows in sink.record.rows_by_task.values()) <= 1, sink.record
    assert all(file.run_id == RUN and file.task in sink.record.rows_by_task for file in files)
    assert all(0 < file.totals.rows <= ROWS_PER_FILE for file in files)
    assert all(pq.ParquetFile(file.path).metadata.num_row_groups == 1 for file in files)
    kept, short, _ = commit_candidates(files, sink.record)
    assert short == 0 and len(kept) == len(files)
    paths = sorted(int(path) for file in files for path in pq.read_table(file.path)[col.PATH].to_pylist())
    assert paths == list(range(ROWS))


def test_a_failed_write_fails_the_job(joined, tmp_path) -> None:
    (tmp_path / "staging").write_text("a file where the staging directory goes")
    sink = StagingDatasink(str(tmp_path / "staging" / RUN), pafs.LocalFileSystem(), ROWS_PER_FILE, RUN,
                           storage_timeout_s=30)
    with pytest.raises(Exception, match="staging"):
        ray.data.range(ROWS, override_num_blocks=BLOCKS).write_datasink(sink, ray_remote_args={"num_cpus": 0})
    assert sink.record is None
