"""The commit's decisions and the resume identity check, without Ray or an S3 server: staged files on
the local filesystem (pyarrow LocalFileSystem), the pure functions the distributed commit applies."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from batchinfer.config import JobConfig, S3Options, UserError
from batchinfer.commit import (FileTotals, StagedFile, commit_candidates, drop_rows, find_row_problems, plan_commit,
                               totals_summary)
from batchinfer.commit_tasks import read_footer
from batchinfer.identity import JobIdentity, check_output
from batchinfer.layout import JOB, STAGING, SUMMARY, SUCCESS, Output
from batchinfer.staging import WriteRecord, staged_name
from batchinfer.storage import Location

RUN = "thisrun00001"
EARLIER = "earlierrun01"


def rows_of(paths: list[str], kinds: list[str | None] | None = None) -> pa.Table:
    """Staged prediction rows for `paths` (error rows where `kinds` names an error kind)."""
    kinds = kinds or [None] * len(paths)
    return pa.table({"path": paths, "label": ["cat" if kind is None else None for kind in kinds],
                     "error": [None if kind is None else f"{kind} failure" for kind in kinds],
                     "error_kind": kinds}, schema=pa.schema([("path", pa.string()), ("label", pa.string()),
                                                             ("error", pa.string()), ("error_kind", pa.string())]))


def staged(run_id: str, task: int, rows: int | None) -> StagedFile:
    """A staged file of `run_id`'s write task `task` holding `rows` rows (None: unreadable)."""
    totals = None if rows is None else FileTotals(rows=rows, ok=rows)
    return StagedFile(f"/out.batchinfer/staging/{run_id}/{staged_name('abc', task, 0)}", run_id, "", totals)


def pairs(staged_rows: dict[str, list[str]], inputs: list[str] = ()) -> pa.Table:
    """The rows find_row_problems sees: (path, staged file) per staged row, (path, "") per input."""
    paths = [path for file in staged_rows for path in staged_rows[file]] + list(inputs)
    files = [file for file in staged_rows for _ in staged_rows[file]] + [""] * len(inputs)
    return pa.table({"path": pa.array(paths, pa.string()), "file": pa.array(files, pa.string())})


def problems_of(table: pa.Table) -> list[tuple[str, str, str, int]]:
    return sorted((row["kind"], row["path"], row["file"], row["rows"]) for row in table.to_pylist())


def test_duplicates_keep_one_row_per_path_in_the_first_file() -> None:
    found = find_row_problems(pairs({"a.parquet": ["x", "y"], "b.parquet": ["y", "z", "z"]}), with_inputs=False)
    assert problems_of(found) == [("duplicate", "y", "b.parquet", 1), ("duplicate", "z", "b.parquet", 1)]
    assert drop_rows(rows_of(["y", "z", "z"]), {"y": 1, "z": 1})["path"].to_pylist() == ["z"]


def test_foreign_paths_and_missing_inputs_of_a_resumed_run() -> None:
    found = find_row_problems(pairs({"a.parquet": ["x", "gone", "gone"], "b.parquet": ["gone"]},
                                    inputs=["x", "y"]), with_inputs=True)
    assert problems_of(found) == [("foreign", "gone", "a.parquet", 2), ("foreign", "gone", "b.parquet", 1),
                                  ("missing", "y", "", 1)]


def test_a_clean_bucket_has_no_problems() -> None:
    assert find_row_problems(pairs({"a.parquet": ["x"], "b.parquet": ["y"]}, inputs=["x", "y"]),
                             with_inputs=True).num_rows == 0


def test_plan_copies_clean_files_rewrites_affected_ones_and_skips_emptied_ones() -> None:
    files = [staged(RUN, 2, 3), staged(EARLIER, 0, 4), staged(RUN, 1, 2)]
    plan = plan_commit(files, {files[0].path: 1, files[2].path: 2}, missing=0, example="",
                       record=WriteRecord(RUN, {1: 2, 2: 3}))
    assert plan.problem is None
    assert [(entry.staged, entry.part, entry.action, entry.rows) for entry in plan.publish] == [
        (files[1].path, "part-00000.parquet", "copy", 4), (files[0].path, "part-00001.parquet", "rewrite", 2)]
    assert plan.resumed_rows == 4


def test_missing_inputs_leave_the_output_uncommitted() -> None:
    plan = plan_commit([staged(RUN, 0, 5)], {}, missing=2, example="s3://in/b.jpg", record=WriteRecord(RUN, {0: 5}))
    assert plan.problem == ("2 of 7 inputs have no result (e.g. s3://in/b.jpg); output left uncommitted, "
                            "rerun with --resume")


def test_unreadable_and_stray_staged_files_are_ignored_and_short_writes_are_missing() -> None:
    record = WriteRecord(RUN, {0: 4, 1: 3})
    files = [staged(RUN, 0, 4), staged(RUN, 1, None), staged(RUN, 7, 3), staged(EARLIER, 3, None),
             staged(EARLIER, 4, 2)]
    candidates, missing, example = commit_candidates(files, record)
    assert candidates == [files[0], files[4]]  # unreadable (cut short) and unrecorded (a stray attempt) out
    assert missing == 3 and example == "write task 1 staged 0 of its 3 rows"
    assert commit_candidates(files, None) == ([files[0], files[2], files[4]], 0, "")


def test_footer_of_a_cut_short_file_is_unreadable(tmp_path: Path) -> None:
    root = tmp_path / "out.batchinfer" / STAGING
    (root / RUN).mkdir(parents=True)
    good, cut = root / RUN / staged_name("w", 0, 0), root / RUN / staged_name("w", 1, 0)
    pq.write_table(rows_of(["a", "b", "c"], [None, "decode", "decode"]), good)
    cut.write_bytes(good.read_bytes()[:40])
    fs = pafs.LocalFileSystem()
    facts = read_footer(fs, str(good), str(root))
    assert (facts.run_id, facts.task, facts.totals) == (RUN, 0, FileTotals(3, 1, 0, 0, {"decode": 2}))
    assert read_footer(fs, str(cut), str(root)).totals is None


def test_summary_totals_add_up_per_file() -> None:
    totals = [FileTotals(4, 3, 4, 2, {"decode": 1}), FileTotals(2, 1, 0, 0, {"decode": 1})]
    assert totals_summary(totals) == {"rows": 6, "ok": 4, "errors": 2, "errors_by_kind": {"decode": 2},
                                      "accuracy": 0.5}


def identity(**changes) -> JobIdentity:
    return JobIdentity.of(JobConfig(**{"input_uri": "s3://in/", "output_uri": "s3://out/p/", **changes}))


@pytest.fixture
def output(tmp_path: Path) -> Output:
    return Output(Location(pafs.LocalFileSystem(), str(tmp_path / "out"), "file"), S3Options())


def test_resume_of_a_different_job_is_refused(output: Output, tmp_path: Path) -> None:
    staging = tmp_path / "out.batchinfer" / STAGING
    staging.mkdir(parents=True)
    (staging / JOB).write_text(json.dumps(identity(model="resnet18").as_dict()))
    check_output(output, overwrite=False, resume=True, identity=identity(model="resnet18"))
    with pytest.raises(UserError, match=r"holds results of a different job \(model 'resnet18' -> 'resnet34'\)"):
        check_output(output, overwrite=False, resume=True, identity=identity(model="resnet34"))


def test_finished_output_of_a_different_job_is_refused(output: Output, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / SUCCESS).write_bytes(b"")
    (tmp_path / "out.batchinfer").mkdir()
    (tmp_path / "out.batchinfer" / SUMMARY).write_text(json.dumps({"job": identity(top_k=5).as_dict()}))
    with pytest.raises(UserError, match="already holds a finished run"):
        check_output(output, overwrite=False, resume=False, identity=identity(top_k=5))
    check_output(output, overwrite=False, resume=True, identity=identity(top_k=5))
    with pytest.raises(UserError, match=r"top_k 5 -> 3"):
        check_output(output, overwrite=False, resume=True, identity=identity(top_k=3))
