"""A real committed output on SeaweedFS, read as it is by the readers users reach for: pyarrow.dataset,
pandas, polars (through s3:// and from a directory) and DuckDB (the documented `*.parquet` pattern).
Also: `--rows-per-file` is a maximum, and the run's own files sit beside the output prefix."""

from __future__ import annotations

import math

import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from batchinfer.config import JobConfig
from batchinfer.pipeline import run_job
from batchinfer.storage import s3_filesystem

OUTPUT = "s3://samples/out/readers/"
ROWS_PER_FILE = 4


@pytest.fixture(scope="module")
def committed(ray_cluster, samples, s3, s3_options, tmp_path_factory):
    """One finished run, and a byte-for-byte copy of every object under its output prefix."""
    summary = run_job(JobConfig(input_uri=samples["images"], output_uri=OUTPUT, model="resnet18", weights="none",
                                top_k=2, rows_per_file=ROWS_PER_FILE, s3=s3_options)).summary
    client = s3.client()
    copy = tmp_path_factory.mktemp("readers") / "out"
    copy.mkdir()
    listing = client.list_objects_v2(Bucket="samples", Prefix="out/readers/")["Contents"]
    for obj in listing:
        (copy / obj["Key"].rsplit("/", 1)[1]).write_bytes(
            client.get_object(Bucket="samples", Key=obj["Key"])["Body"].read())
    return summary, sorted(obj["Key"] for obj in listing), copy


def test_output_prefix_holds_only_part_files_and_success(committed, samples, s3) -> None:
    summary, keys, _ = committed
    parts = [f"out/readers/{f['name']}" for f in summary["files"]]
    assert keys == sorted([*parts, "out/readers/_SUCCESS"])
    beside = [obj["Key"] for obj in s3.client().list_objects_v2(Bucket="samples", Prefix="out/readers.batchinfer/")
              .get("Contents", []) if not obj["Key"].endswith("/")]  # "dir/": a marker pyarrow leaves on delete
    assert beside == ["out/readers.batchinfer/report.html", "out/readers.batchinfer/summary.json"]  # no staging, no lease
    assert summary["rows"] == int(samples["count"])


def test_rows_per_file_is_a_maximum(committed, s3_options) -> None:
    """Every part file holds at most --rows-per-file rows (before: at least, one file per decode block)."""
    summary, _, _ = committed
    fs = s3_filesystem(s3_options)
    rows = [pq.ParquetFile(fs.open_input_file(f"samples/out/readers/{f['name']}")).metadata.num_rows
            for f in summary["files"]]
    assert rows == [f["rows"] for f in summary["files"]]
    print(f"--rows-per-file {ROWS_PER_FILE}: {summary['rows']} rows committed as files of {rows} rows")
    assert max(rows) <= ROWS_PER_FILE and len(rows) >= math.ceil(summary["rows"] / ROWS_PER_FILE)


def paths(frame) -> list[str]:
    return sorted(frame["path"].to_list() if isinstance(frame, pl.DataFrame) else frame["path"].tolist())


def test_pyarrow_dataset_and_pandas_read_the_prefix(committed, s3_options) -> None:
    summary, _, _ = committed
    fs = s3_filesystem(s3_options)
    table = ds.dataset("samples/out/readers/", filesystem=fs, format="parquet").to_table()
    frame = pd.read_parquet("samples/out/readers/", filesystem=fs)
    assert table.num_rows == len(frame) == summary["rows"]
    assert sorted(table["path"].to_pylist()) == paths(frame)


def test_polars_reads_the_prefix_through_s3(committed, s3, s3_options) -> None:
    summary, _, _ = committed
    options = {"aws_endpoint_url": s3.endpoint, "aws_access_key_id": s3.access_key,
               "aws_secret_access_key": s3.secret_key, "aws_region": "us-east-1", "aws_allow_http": "true"}
    frame = pl.scan_parquet(OUTPUT, storage_options=options).collect()
    expected = pd.read_parquet("samples/out/readers/", filesystem=s3_filesystem(s3_options))
    assert frame.height == summary["rows"] and paths(frame) == paths(expected)


def test_polars_and_duckdb_read_a_copy_of_the_prefix(committed) -> None:
    """The prefix copied as it is (part files and the empty `_SUCCESS`): polars reads the directory,
    DuckDB reads it with the documented `*.parquet` glob."""
    summary, _, copy = committed
    frame = pl.read_parquet(copy)
    rows = duckdb.sql(f"SELECT path FROM read_parquet('{copy}/*.parquet')").fetchall()
    assert frame.height == len(rows) == summary["rows"]
    assert paths(frame) == sorted(row[0] for row in rows)
