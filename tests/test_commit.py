"""The distributed commit on real parts: staged files in SeaweedFS, checked and published by Ray tasks
on the session's two-node cluster. Staged areas are built by hand so each case (a duplicate, a foreign
row, a cut-short file, a short write task) is there for sure."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from batchinfer import commit_tasks
from batchinfer.pipeline import connect_ray
from batchinfer.columns import prediction_schema
from batchinfer.commit import CommitError
from batchinfer.commit_tasks import commit_output
from batchinfer.layout import Output
from batchinfer.staging import WriteRecord, staged_name
from batchinfer.storage import resolve

BUCKET = "commit"
RUN = "thisrun00001"
EARLIER = "earlierrun01"


def predictions(paths: list[str], error_kind: str | None = None) -> bytes:
    """A staged Parquet file of prediction rows (error rows of `error_kind` when given)."""
    count = len(paths)
    columns = {name: pa.nulls(count, field.type) for name, field in zip(prediction_schema().names,
                                                                         prediction_schema())}
    columns["path"] = pa.array(paths, pa.string())
    columns["error"] = pa.array([f"{error_kind} failure" if error_kind else None] * count, pa.string())
    columns["error_kind"] = pa.array([error_kind] * count, pa.string())
    sink = io.BytesIO()
    pq.write_table(pa.table(columns, schema=prediction_schema()), sink)
    return sink.getvalue()


def stage(s3, s3_options, prefix: str, files: dict[str, bytes]) -> Output:
    """Put staged files (`<run-id>/<name>` → bytes) under `<prefix>.batchinfer/staging/`."""
    client = s3.client()
    for name, data in files.items():
        client.put_object(Bucket=BUCKET, Key=f"{prefix}.batchinfer/staging/{name}", Body=data)
    return Output(resolve(f"s3://{BUCKET}/{prefix}/", s3_options), s3_options)


def committed_paths(s3, prefix: str) -> tuple[list[str], list[str]]:
    """(every path in the part files, the keys at the output prefix)."""
    client = s3.client()
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/").get("Contents", [])
    keys = sorted(entry["Key"] for entry in listed)
    paths = []
    for key in keys:
        if key.endswith(".parquet"):
            paths += pq.read_table(io.BytesIO(client.get_object(Bucket=BUCKET, Key=key)["Body"].read()))[
                "path"].to_pylist()
    return sorted(paths), keys


@pytest.fixture
def cluster(ray_cluster, s3):
    """The session's Ray cluster, joined by this process; the bucket the staged areas go to."""
    client = s3.client()
    if BUCKET not in {bucket["Name"] for bucket in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=BUCKET)
    connect_ray()
    yield ray_cluster
    ray.shutdown()


@pytest.fixture(params=[commit_tasks.ROWS_PER_BUCKET, 2], ids=["one-bucket", "2-rows-per-bucket"])
def rows_per_bucket(request, monkeypatch) -> int:
    """The hash buckets of the commit check: one, or so small that the paths spread over several
    buckets and the staged files over several scatter tasks (and, then, one file per footer and copy
    task)."""
    monkeypatch.setattr(commit_tasks, "ROWS_PER_BUCKET", request.param)
    if request.param == 2:
        monkeypatch.setattr(commit_tasks, "FILES_PER_TASK", 1)
    return request.param


def uri(name: str) -> str:
    return f"s3://in/{name}.jpg"


def test_duplicates_dropped_cut_short_files_ignored_clean_files_copied(cluster, s3, s3_options,
                                                                       rows_per_bucket) -> None:
    prefix = f"commit-it/dedupe-{rows_per_bucket}"
    earlier = predictions([uri("a"), uri("b"), uri("c")])
    output = stage(s3, s3_options, prefix, {
        f"{EARLIER}/{staged_name('w', 0, 0)}": earlier,
        f"{EARLIER}/{staged_name('w', 1, 0)}": earlier[:50],  # cut short when its writer died
        f"{RUN}/{staged_name('w', 0, 0)}": predictions([uri("c"), uri("d")]),  # c: also staged by the earlier run
        f"{RUN}/{staged_name('w', 1, 0)}": predictions([uri("e")], error_kind="decode"),
    })
    owner_checks = []
    summary = commit_output(output, WriteRecord(RUN, {0: 2, 1: 1}), None, {"run_id": RUN},
                            lambda: owner_checks.append(True))
    paths, keys = committed_paths(s3, prefix)
    assert paths == [uri(name) for name in "abcde"]
    assert keys == [f"{prefix}/{name}" for name in ("_SUCCESS", "part-00000.parquet", "part-00001.parquet",
                                                    "part-00002.parquet")]
    assert (summary["rows"], summary["ok"], summary["errors"], summary["errors_by_kind"]) == (5, 4, 1, {"decode": 1})
    assert summary["resumed_rows"] == 3 and [entry["rows"] for entry in summary["files"]] == [3, 1, 1]
    assert len(owner_checks) == 2
    assert not s3.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}.batchinfer/staging/").get("Contents")
    written = json.loads(s3.client().get_object(Bucket=BUCKET, Key=f"{prefix}.batchinfer/summary.json")["Body"].read())
    assert written == summary


def test_short_write_task_commits_nothing(cluster, s3, s3_options) -> None:
    prefix = "commit-it/short"
    output = stage(s3, s3_options, prefix, {f"{RUN}/{staged_name('w', 0, 0)}": predictions([uri("a"), uri("b")])})
    with pytest.raises(CommitError, match=r"1 of 3 inputs have no result \(e.g. write task 0 staged 2 of its 3 rows\)"
                       r"; output left uncommitted, rerun with --resume"):
        commit_output(output, WriteRecord(RUN, {0: 3}), None, {}, lambda: None)
    assert committed_paths(s3, prefix) == ([], [])
    assert not output.is_committed()


def test_resumed_run_drops_foreign_rows_and_finds_missing_inputs(cluster, s3, s3_options, rows_per_bucket) -> None:
    prefix = f"commit-it/resumed-{rows_per_bucket}"
    files = {f"{EARLIER}/{staged_name('w', 0, 0)}": predictions([uri("a"), uri("gone")]),
             f"{RUN}/{staged_name('w', 0, 0)}": predictions([uri("b")])}
    output = stage(s3, s3_options, prefix, files)
    inputs = ray.data.from_items([{"path": uri(name)} for name in "abc"])
    with pytest.raises(CommitError, match=r"1 of 3 inputs have no result \(e.g. s3://in/c.jpg\)"):
        commit_output(output, WriteRecord(RUN, {0: 1}), inputs, {}, lambda: None)
    assert committed_paths(s3, prefix) == ([], [])
    inputs = ray.data.from_items([{"path": uri(name)} for name in "ab"])
    summary = commit_output(output, WriteRecord(RUN, {0: 1}), inputs, {}, lambda: None)
    assert committed_paths(s3, prefix)[0] == [uri("a"), uri("b")]
    assert summary["rows"] == 2 and summary["resumed_rows"] == 1
