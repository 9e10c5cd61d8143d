"""The commit as Ray tasks: publish the staged results as part files, then the summary, then `_SUCCESS`
(the layout: layout.py; each decision: commit.py). It never holds all paths, or all rows, on the driver:

1. Each staged file's footer is read by a Ray task (row count; unreadable = cut short, ignored) with a
   few column totals (ok, errors per kind, correct): one small record per file comes back.
2. This run's own record of what it staged (rows per Ray Data write task, staging.WriteRecord) is
   checked against those footers (`commit.commit_candidates`): a write task whose rows are not all
   there is a missing result.
3. The staged `path` columns (and, on a resumed run, the input paths) are hash-bucketed by Ray tasks
   (one per group of files or block of inputs) and each bucket is checked by one task
   (`commit.find_row_problems`): duplicates (one row kept per path: the one in the first file by
   name), foreign rows (not an input of a resumed run), inputs without a result. Only counts per file
   and a few examples come back.
4. `commit.plan_commit` decides each file's fate: copy (server-side), rewrite without its dropped rows
   (a Ray task), or skip; and whether the run is complete. Incomplete: nothing changes, no `_SUCCESS`.
5. Part files, then the summary, then, last, `_SUCCESS`; the lease is confirmed before the first
   change and right before `_SUCCESS`. A reader that sees `_SUCCESS` sees exactly one row per input.
   The staging area's listing, the copies and its removal are Ray tasks too: the driver makes no
   request per staged file (each request leaves some of its memory behind).

`exclude_finished` (--resume) reads the same footers to skip the inputs an earlier run staged.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timezone
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from batchinfer import columns as col
from batchinfer.commit import (CommitError, CommitPlan, FileTotals, StagedFile, bucket_of, commit_candidates,
                               drop_rows, find_row_problems, plan_commit, totals_summary)
from batchinfer.layout import SUCCESS, SUMMARY, Output
from batchinfer.staging import WriteRecord
from batchinfer.storage import write_bytes

if TYPE_CHECKING:
    import ray
    import ray.data

ROWS_PER_BUCKET = 500_000  # commit checks: staged paths per hash bucket (one task holds one bucket)
# Commit tasks (footers, bucket checks, rewrites): a quarter CPU each, so at most four per CPU hold a
# bucket's paths at once, and a few worker processes serve them all.
CHECK_TASK = {"num_cpus": 0.25}
FILES_PER_TASK = 256  # staged files whose footers one task reads
IO_THREADS = 16       # concurrent storage requests of one footer task, and of the commit's copies
SHUFFLE_ARGS = {"num_cpus": 0}  # join/groupby aggregators: no CPU asked, so they never wait behind inference


@dataclass
class BucketChecks:
    """What the bucket checks found: per bucket a small summary (`dropped` rows per file, `missing`
    inputs and an `example` of one) on the driver, and its problem rows (commit.PROBLEMS_SCHEMA) left in the
    object store for the rewrites."""

    summaries: list[dict] = field(default_factory=list)
    problems: "list[ray.ObjectRef]" = field(default_factory=list)


def read_footer(filesystem: pafs.FileSystem, path: str, staging_root: str) -> StagedFile:
    """A staged file's facts; unreadable (cut short, not Parquet) gives totals None."""
    run_id = path[len(staging_root) + 1:].split("/", 1)[0]
    info = filesystem.get_file_info(path)
    written_at = info.mtime.astimezone(timezone.utc).isoformat() if info.mtime else ""
    try:
        columns = [name for name in (col.ERROR, col.ERROR_KIND, col.CORRECT)
                   if name in pq.read_schema(path, filesystem=filesystem).names]
        totals = FileTotals.of(pq.read_table(path, columns=columns, filesystem=filesystem))
    except pa.ArrowInvalid:
        totals = None
    return StagedFile(path, run_id, written_at, totals)


def read_footers(filesystem: pafs.FileSystem, paths: list[str], staging_root: str) -> list[StagedFile]:
    """`read_footer` of each path, IO_THREADS at a time."""
    with ThreadPoolExecutor(IO_THREADS) as pool:
        return list(pool.map(lambda path: read_footer(filesystem, path, staging_root), paths))


def copy_files(filesystem: pafs.FileSystem, copies: list[tuple[str, str]]) -> None:
    """Copy each (source, destination), IO_THREADS at a time (server-side on S3: no data passes here)."""
    with ThreadPoolExecutor(IO_THREADS) as pool:
        list(pool.map(lambda copy: filesystem.copy_file(*copy), copies))


def inspect_staged(output: Output) -> list[StagedFile]:
    """Every staged file's footer facts, read by Ray tasks (FILES_PER_TASK files each, several at a
    time), after a Ray task lists them: one small record per file comes back."""
    import ray

    paths = ray.get(ray.remote(**CHECK_TASK)(Output.staged_files).remote(output))
    inspect = ray.remote(**CHECK_TASK)(read_footers)
    chunks = [paths[start:start + FILES_PER_TASK] for start in range(0, len(paths), FILES_PER_TASK)]
    return [file for facts in ray.get([inspect.remote(output.fs, chunk, output.staging_root) for chunk in chunks])
            for file in facts]


def read_paths(output: Output, files: list[str]) -> "ray.data.Dataset":
    """The `path` column of the given staged files, as a Ray dataset (never on the driver)."""
    import ray

    return ray.data.read_parquet(files, filesystem=output.fs, columns=[col.PATH])


def find_problems(output: Output, candidates: list[StagedFile], inputs: "ray.data.Dataset | None") -> "BucketChecks":
    """Duplicates, foreign rows and missing inputs (`commit.find_row_problems`) over the candidates' rows (and
    the inputs, when given), checked in hash buckets of about ROWS_PER_BUCKET paths: plain Ray tasks
    scatter each group of staged files (each block of inputs) into the buckets, one task per bucket
    checks it (a Ray Data groupby did the same many times slower: docs/benchmarks.md, "Commit")."""
    import ray

    rows = sum(file.totals.rows for file in candidates) + (inputs.count() if inputs is not None else 0)
    buckets = max(1, math.ceil(rows / ROWS_PER_BUCKET))
    scatter = ray.remote(**CHECK_TASK)(_scatter).options(num_returns=buckets)
    scattered = [scatter.remote(None, group, output.fs, buckets)
                 for group in _file_groups(candidates, ROWS_PER_BUCKET)]
    if inputs is not None:
        for block in inputs.select_columns([col.PATH]).to_arrow_refs():
            scattered.append(scatter.remote(block, [], None, buckets))
    by_bucket = [refs if buckets > 1 else [refs] for refs in scattered]
    check = ray.remote(**CHECK_TASK)(_check_bucket).options(num_returns=2)
    outcomes = [check.remote(inputs is not None, *[refs[bucket] for refs in by_bucket])
                for bucket in range(buckets)]
    return BucketChecks(summaries=ray.get([summary for summary, _ in outcomes]),
                        problems=[problems for _, problems in outcomes])


def commit_output(output: Output, record: WriteRecord | None, inputs: "ray.data.Dataset | None", summary: dict,
                  still_owner: Callable[[], None]) -> dict:
    """Publish staged results as part files, then the summary, then `_SUCCESS`.

    `record`: what this run's pipeline staged (None when it staged nothing). `inputs`: the inputs
    of a resumed run, checked for results (a fresh run's inputs are all in its record). Raises
    CommitError, changing nothing, when an input has no result. `still_owner()` raises when this
    run no longer holds the output's lease; it is asked before the first change and again right
    before `_SUCCESS`."""
    import ray

    files = inspect_staged(output)
    candidates, short, example = commit_candidates(files, record)
    checks = find_problems(output, candidates, inputs) if candidates or inputs is not None else BucketChecks()
    dropped: Counter = Counter()
    missing = short
    for bucket in checks.summaries:
        dropped.update(bucket["dropped"])
        missing += bucket["missing"]
        example = example or bucket["example"]
    plan = plan_commit(candidates, dropped, missing, example, record)
    if plan.problem:
        raise CommitError(plan.problem)

    still_owner()
    output.clear(staging=False)
    facts = {file.path: file for file in files}
    totals = _publish(output, plan, checks.problems, facts)
    summary = {**summary, **totals_summary(list(totals.values())), "resumed_rows": plan.resumed_rows,
               "files": [{"name": entry.part, "rows": entry.rows, "written_at": facts[entry.staged].written_at}
                         for entry in plan.publish]}
    write_bytes(output.fs, output.meta.join(SUMMARY), json.dumps(summary, indent=2).encode())
    still_owner()
    write_bytes(output.fs, output.location.join(SUCCESS), b"")
    ray.get(ray.remote(**CHECK_TASK)(Output.remove_staging).remote(output))
    return summary


def _publish(output: Output, plan: CommitPlan, problems: "list[ray.ObjectRef]",
             facts: dict[str, StagedFile]) -> dict[str, FileTotals]:
    """Copy (server-side, Ray tasks of FILES_PER_TASK files) or rewrite (a Ray task each) every
    planned part file; return each one's totals."""
    import ray

    totals: dict[str, FileTotals] = {}
    rewrite = ray.remote(**CHECK_TASK)(_rewrite)
    rewrites = {}
    copies = []
    for entry in plan.publish:
        if entry.action == "copy":
            copies.append((entry.staged, output.location.join(entry.part)))
            totals[entry.staged] = facts[entry.staged].totals
        else:
            rewrites[entry.staged] = rewrite.remote(entry.staged, output.location.join(entry.part), output.fs,
                                                    *problems)
    copy = ray.remote(**CHECK_TASK)(copy_files)
    ray.get([copy.remote(output.fs, copies[start:start + FILES_PER_TASK])
             for start in range(0, len(copies), FILES_PER_TASK)])
    totals.update(zip(rewrites, ray.get(list(rewrites.values()))))
    return totals


_NO_ROWS = pa.table({col.PATH: pa.array([], pa.string()), col.FILE: pa.array([], pa.string())})


def _file_groups(files: list[StagedFile], rows: int) -> list[list[str]]:
    """The files' paths in groups of about `rows` rows (one scatter task each)."""
    groups: list[list[str]] = [[]]
    count = 0
    for file in files:
        if groups[-1] and count + file.totals.rows > rows:
            groups.append([])
            count = 0
        groups[-1].append(file.path)
        count += file.totals.rows
    return [group for group in groups if group]


def _scatter(inputs: pa.Table | None, files: list[str], filesystem: pafs.FileSystem | None,
             buckets: int) -> tuple[pa.Table, ...] | pa.Table:
    """(path, file) rows, split by `bucket_of(path)`: every row of the staged `files`, or every input
    of an `inputs` block (file "")."""
    tables = []
    for name in files:
        paths = pq.read_table(name, columns=[col.PATH], filesystem=filesystem)[col.PATH].cast(pa.string())
        tables.append(pa.table({col.PATH: paths, col.FILE: pa.array([name] * len(paths), pa.string())}))
    if inputs is not None:
        tables.append(pa.table({col.PATH: inputs[col.PATH].cast(pa.string()),
                                col.FILE: pa.array([""] * inputs.num_rows, pa.string())}))
    rows = pa.concat_tables(tables) if tables else _NO_ROWS
    if buckets == 1:
        return rows
    bucket = bucket_of(rows[col.PATH], buckets)
    return tuple(rows.filter(pc.equal(bucket, index)) for index in range(buckets))


def _check_bucket(with_inputs: bool, *parts: pa.Table) -> tuple[dict, pa.Table]:
    """`find_row_problems` over one bucket: a small summary for the driver and the problem rows."""
    problems = find_row_problems(pa.concat_tables(parts) if parts else _NO_ROWS, with_inputs)
    missing = problems.filter(pc.equal(problems[col.PROBLEM], "missing"))
    dropping = problems.filter(pc.not_equal(problems[col.PROBLEM], "missing"))
    dropped = {row[col.FILE]: row[f"{col.PROBLEM_ROWS}_sum"] for row in
               dropping.group_by(col.FILE).aggregate([(col.PROBLEM_ROWS, "sum")]).to_pylist()}
    return ({"dropped": dropped, "missing": missing.num_rows,
             "example": missing[col.PATH][0].as_py() if missing.num_rows else ""}, dropping)


def _rewrite(staged: str, destination: str, filesystem: pafs.FileSystem, *problems: pa.Table) -> FileTotals:
    """Write one staged file's part file without its dropped rows; return its totals."""
    drops: Counter = Counter()
    for table in problems:
        mine = table.filter(pc.equal(table[col.FILE], staged))
        for path, rows in zip(mine[col.PATH].to_pylist(), mine[col.PROBLEM_ROWS].to_pylist()):
            drops[path] += rows
    table = drop_rows(pq.read_table(staged, filesystem=filesystem), drops)
    pq.write_table(table, destination, filesystem=filesystem)
    return FileTotals.of(table)


def exclude_finished(output: Output, inputs: "ray.data.Dataset") -> tuple["ray.data.Dataset", bool]:
    """The inputs without a staged result of an earlier run (a distributed left anti-join on `path`),
    and whether any earlier result was found. Unreadable staged files (cut short) are ignored."""
    readable = [file for file in inspect_staged(output) if file.totals is not None and file.totals.rows]
    if not readable:
        return inputs, False
    rows = sum(file.totals.rows for file in readable)
    done = read_paths(output, [file.path for file in readable])
    return inputs.join(done, join_type="left_anti", num_partitions=max(1, math.ceil(rows / ROWS_PER_BUCKET)),
                       on=(col.PATH,), aggregator_ray_remote_args=SHUFFLE_ARGS), True

