"""Parquet output (the schema is columns.prediction_schema): a staging area, an atomic-looking commit.

The output prefix holds only what readers want: `part-NNNNN.parquet` files and, once they are all
there, an empty `_SUCCESS` (Spark's convention; polars, DuckDB's `*.parquet` glob, pandas, pyarrow and
Spark read the prefix as it is). Everything else a run keeps lives in a sibling prefix, `Output.meta` =
`<output>.batchinfer/`: the lease (lease.py), the staging area `staging/<run-id>/` where Ray Data
writes, `staging/job.json` (which job the staged results belong to), `summary.json` and the report.

The commit never holds all paths, or all rows, on the driver:
1. Each staged file's footer is read by a Ray task (row count; unreadable = cut short, ignored) with a
   few column totals (ok, errors per kind, correct): one small record per file comes back.
2. This run's own record of what it staged (rows per Ray Data write task, `WriteRecord`) is checked
   against those footers: a write task whose rows are not all there is a missing result.
3. The staged `path` columns (and, on a resumed run, the input paths) are hash-bucketed by Ray tasks
   (one per group of files or block of inputs) and each bucket is checked by one task (`find_row_problems`): duplicates (one row kept per path: the one in the
   first file by name), foreign rows (not an input of a resumed run), inputs without a result.
   Only counts per file and a few examples come back.
4. `plan_commit` (pure) decides each file's fate: copy (server-side), rewrite without its dropped rows
   (a Ray task), or skip; and whether the run is complete. Incomplete: nothing changes, no `_SUCCESS`.
5. Part files, then the summary, then, last, `_SUCCESS`; the lease is confirmed before the first
   change and right before `_SUCCESS`. A reader that sees `_SUCCESS` sees exactly one row per input.
   The staging area's listing, the copies and its removal are Ray tasks too: the driver makes no
   request per staged file (each request leaves some of its memory behind).
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import timezone
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from batchinfer import columns as col
from batchinfer.config import JobConfig, S3Options, UserError
from batchinfer.storage import Location, file_info, read_bytes, write_bytes

if TYPE_CHECKING:
    import ray.data

SUCCESS = "_SUCCESS"      # in the output prefix, empty, written last
META_SUFFIX = ".batchinfer"  # the run's own files: <output>.batchinfer/
SUMMARY = "summary.json"  # in Output.meta
REPORT = "report.html"    # in Output.meta
STAGING = "staging"       # in Output.meta: staging/<run-id>/*.parquet
JOB = "job.json"          # in the staging area: which job the staged results belong to
_PART = re.compile(r"part-\d{5}\.parquet$")
_STAGED_TASK = re.compile(r"_(\d{6})-\d+\.parquet$")  # a staged file's write task (staging.staged_name)
ROWS_PER_BUCKET = 500_000  # commit checks: staged paths per hash bucket (one task holds one bucket)
# Commit tasks (footers, bucket checks, rewrites): a quarter CPU each, so at most four per CPU hold a
# bucket's paths at once, and a few worker processes serve them all.
CHECK_TASK = {"num_cpus": 0.25}
FILES_PER_TASK = 256  # staged files whose footers one task reads
IO_THREADS = 16       # concurrent storage requests of one footer task, and of the commit's copies
SHUFFLE_ARGS = {"num_cpus": 0}  # join/groupby aggregators: no CPU asked, so they never wait behind inference


class CommitError(RuntimeError):
    """The staged results don't cover every input; nothing was marked successful."""


def errors_by_kind(table: pa.Table) -> Counter:
    """How many rows of `table` are error rows, per `error_kind`."""
    return Counter({item["values"]: item["counts"]
                    for item in pc.value_counts(table[col.ERROR_KIND].drop_null()).to_pylist()})


@dataclass(frozen=True)
class JobIdentity:
    """What makes two runs the same job for `--resume`: their staged results are interchangeable."""

    input: str
    model: str
    weights: str
    categories: str | None
    top_k: int
    label_from_path: str | None
    path_column: str | None = None  # manifest input: which column names the objects
    key_column: str | None = None   # manifest input: carried into the output as `key`

    @classmethod
    def of(cls, config: JobConfig) -> "JobIdentity":
        return cls(config.input_uri, config.model, config.weights, config.categories, config.top_k,
                   config.label_from_path, config.path_column, config.key_column)

    def as_dict(self) -> dict:
        return asdict(self)

    def changes_from(self, earlier: dict) -> str:
        """What differs from an earlier run's identity (as stored), e.g. "model 'a' -> 'b'"; "" if nothing."""
        return ", ".join(f"{key} {earlier.get(key)!r} -> {value!r}" for key, value in self.as_dict().items()
                         if earlier.get(key) != value)


@dataclass(frozen=True)
class FileTotals:
    """Column totals of the rows a part file holds (summed into the summary)."""

    rows: int = 0
    ok: int = 0
    judged: int = 0    # rows with a ground truth (--label-from-path)
    correct: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, table: pa.Table) -> "FileTotals":
        judged = table.num_rows - table[col.CORRECT].null_count if col.CORRECT in table.column_names else 0
        correct = (pc.sum(table[col.CORRECT]).as_py() or 0) if col.CORRECT in table.column_names else 0
        return cls(table.num_rows, table[col.ERROR].null_count, judged, correct, dict(errors_by_kind(table)))


@dataclass(frozen=True)
class StagedFile:
    """One staged file, as its footer describes it: `totals` None when unreadable (cut short)."""

    path: str
    run_id: str
    written_at: str
    totals: FileTotals | None

    @property
    def task(self) -> int | None:
        """The Ray Data write task that wrote it (from its name), None for another naming."""
        found = _STAGED_TASK.search(self.path)
        return int(found.group(1)) if found else None


@dataclass(frozen=True)
class WriteRecord:
    """What this run's pipeline staged: rows per Ray Data write task, as the write tasks reported them."""

    run_id: str
    rows_by_task: dict[int, int]

    @property
    def rows(self) -> int:
        return sum(self.rows_by_task.values())


@dataclass(frozen=True)
class Publish:
    """One part file: made from `staged` by `action` ("copy" as it is, "rewrite" without dropped rows)."""

    staged: str
    part: str
    action: str
    rows: int
    earlier_run: bool  # staged by an interrupted earlier run (--resume)


@dataclass(frozen=True)
class CommitPlan:
    """What the commit does: the part files in order, and what is missing (nothing published then)."""

    publish: list[Publish]
    problem: str | None  # why the output cannot be committed; None when complete

    @property
    def resumed_rows(self) -> int:
        return sum(entry.rows for entry in self.publish if entry.earlier_run)


# --- decisions (pure: pyarrow tables and small records in, decisions out; no Ray, no storage) ---

def commit_candidates(files: list[StagedFile], record: WriteRecord | None) -> tuple[list[StagedFile], int, str]:
    """The staged files whose rows count, how many rows of this run's record are not among them, and an
    example of a short write task. Unreadable files never count; this run's files count only when a
    write task it recorded wrote them (another file there is a leftover of a retried attempt)."""
    readable = [file for file in files if file.totals is not None]
    if record is None:
        return readable, 0, ""
    own = [file for file in readable if file.run_id == record.run_id]
    found: Counter = Counter()
    for file in own:
        if file.task is not None:
            found[file.task] += file.totals.rows
    short = {task: rows - found[task] for task, rows in record.rows_by_task.items() if found[task] < rows}
    keep = [file for file in readable if file.run_id != record.run_id or file.task in record.rows_by_task]
    example = (f"write task {min(short)} staged {found[min(short)]} of its {record.rows_by_task[min(short)]} "
               f"rows") if short else ""
    return keep, sum(short.values()), example


def bucket_of(paths: pa.Array | pa.ChunkedArray, buckets: int) -> pa.Array:
    """A stable hash bucket per path: every row of one path lands in the same bucket."""
    return pa.array([zlib.crc32(path.encode()) % buckets for path in paths.to_pylist()], pa.int64())


PROBLEMS_SCHEMA = pa.schema([("kind", pa.string()), (col.PATH, pa.string()), ("file", pa.string()),
                             ("rows", pa.int64())])


def find_row_problems(rows: pa.Table, with_inputs: bool) -> pa.Table:
    """Rows that must not be published, and inputs without a result, from one bucket of `rows`
    (columns `path`, `file`: a staged row, or, with `with_inputs`, an input when `file` is "").

    Returns PROBLEMS_SCHEMA rows: `duplicate` (`rows` rows of `path` to drop from `file`: a path keeps
    one row, in the first file by name), `foreign` (a staged path that is not an input), `missing`
    (an input with no staged row)."""
    staged = rows.filter(pc.not_equal(rows["file"], ""))
    per_file = staged.group_by([col.PATH, "file"]).aggregate([([], "count_all")])
    parts = []
    if with_inputs:
        inputs = rows.filter(pc.equal(rows["file"], "")).select([col.PATH])
        foreign = per_file.join(inputs, col.PATH, join_type="left anti")
        missing = inputs.join(per_file.select([col.PATH]), col.PATH, join_type="left anti")
        per_file = per_file.join(inputs, col.PATH, join_type="left semi")
        parts += [_problems("foreign", foreign[col.PATH], foreign["file"], foreign["count_all"]),
                  _problems("missing", missing[col.PATH], pa.array([""] * missing.num_rows, pa.string()),
                            pa.array([1] * missing.num_rows, pa.int64()))]
    keeper = per_file.group_by(col.PATH).aggregate([("file", "min")]).rename_columns([col.PATH, "keeper"])
    per_file = per_file.join(keeper, col.PATH)
    drop = pc.subtract(per_file["count_all"], pc.cast(pc.equal(per_file["file"], per_file["keeper"]), pa.int64()))
    duplicates = per_file.append_column("drop", drop).filter(pc.greater(drop, 0))
    parts.append(_problems("duplicate", duplicates[col.PATH], duplicates["file"], duplicates["drop"]))
    table = pa.concat_tables(parts)
    return table.filter(pc.greater(table["rows"], 0))


def _problems(kind: str, paths, files, rows) -> pa.Table:
    return pa.table({"kind": pa.array([kind] * len(paths), pa.string()), col.PATH: paths, "file": files,
                     "rows": pc.cast(rows, pa.int64())}, schema=PROBLEMS_SCHEMA)


def plan_commit(candidates: list[StagedFile], dropped: dict[str, int], missing: int, example: str,
                record: WriteRecord | None) -> CommitPlan:
    """Each candidate's fate, in file-name order: skipped when all its rows are dropped, copied when
    none is, rewritten otherwise; part names are consecutive. `missing` inputs (with an `example`)
    make the output uncommittable."""
    publish: list[Publish] = []
    for file in sorted(candidates, key=lambda each: each.path):
        kept = file.totals.rows - dropped.get(file.path, 0)
        if kept <= 0:
            continue
        action = "copy" if kept == file.totals.rows else "rewrite"
        earlier = record is None or file.run_id != record.run_id
        publish.append(Publish(file.path, f"part-{len(publish):05d}.parquet", action, kept, earlier))
    problem = None
    if missing:
        total = sum(entry.rows for entry in publish) + missing
        problem = (f"{missing} of {total} inputs have no result (e.g. {example}); output left "
                   "uncommitted, rerun with --resume")
    return CommitPlan(publish, problem)


def drop_rows(table: pa.Table, drops: dict[str, int]) -> pa.Table:
    """`table` without `drops[path]` rows of each path (the last ones: the first stays when one does)."""
    remaining = dict(drops)
    keep = []
    for path in reversed(table[col.PATH].to_pylist()):
        dropping = remaining.get(path, 0) > 0
        if dropping:
            remaining[path] -= 1
        keep.append(not dropping)
    return table.filter(pa.array(keep[::-1], pa.bool_()))


def earlier_identity(committed: bool, summary: dict | None, job_file: dict | None) -> dict | None:
    """The identity an output's earlier run recorded: in summary.json once committed, else in the
    staging area's job.json; None when there is none."""
    return (summary or {}).get("job") if committed else job_file


def check_same_job(identity: JobIdentity, earlier: dict | None, output_uri: str) -> None:
    """`--resume` continues only the same job: a UserError naming what changed otherwise."""
    if earlier is None:
        return
    changed = identity.changes_from(earlier)
    if changed:
        raise UserError(f"--resume: {output_uri} holds results of a different job ({changed}): "
                        "pass --overwrite to replace them, or choose another --output")


def totals_summary(totals: list[FileTotals]) -> dict:
    """rows, ok, errors, errors_by_kind, accuracy of the published files."""
    by_kind: Counter = Counter()
    for each in totals:
        by_kind.update(each.by_kind)
    rows, ok = sum(each.rows for each in totals), sum(each.ok for each in totals)
    judged, correct = sum(each.judged for each in totals), sum(each.correct for each in totals)
    return {"rows": rows, "ok": ok, "errors": rows - ok, "errors_by_kind": dict(sorted(by_kind.items())),
            "accuracy": correct / judged if judged else None}


# --- storage and Ray: the footers, the bucketed checks, the copies and rewrites ---

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


class Output:
    """The output prefix: its state, its staging area and its commit."""

    def __init__(self, location: Location, s3: S3Options) -> None:
        if ("/" not in location.path) if location.scheme == "s3" else location.path == "/":
            example = f"{location.uri().rstrip('/')}/predictions/"
            raise UserError(f"--output {location.uri()} is a bucket or filesystem root: give a prefix such as "
                            f"{example} (batchinfer keeps its own files beside it, in a sibling "
                            f"prefix ending in {META_SUFFIX}/)")
        self.location = location
        self.s3 = s3
        self.fs = location.filesystem
        self.meta = Location(self.fs, location.path + META_SUFFIX, location.scheme)  # the run's own files
        self.staging_root = self.meta.join(STAGING)

    def _files(self, path: str) -> list[str]:
        infos = self.fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
        return sorted(info.path for info in infos if info.type == pafs.FileType.File)

    def is_committed(self) -> bool:
        return file_info(self.location, self.location.join(SUCCESS), self.s3).type == pafs.FileType.File

    def staged_files(self) -> list[str]:
        """The staged Parquet files (one name per file: a few per --rows-per-file rows)."""
        return [path for path in self._files(self.staging_root) if path.endswith(".parquet")]

    def _own_files(self) -> list[str]:
        """Files this tool writes (never anyone else's), `_SUCCESS` first: an output stops looking
        finished before any of its files goes."""
        top = self.fs.get_file_info(pafs.FileSelector(self.location.path, allow_not_found=True))
        parts = sorted(info.path for info in top if info.type == pafs.FileType.File and _PART.search(info.path))
        markers = [self.location.join(SUCCESS), self.meta.join(SUMMARY), self.meta.join(REPORT)]
        return [path for path in markers if self.fs.get_file_info(path).type == pafs.FileType.File] + parts

    def clear(self, staging: bool) -> None:
        """Remove our part files, `_SUCCESS`, summary and report (and the staging area when asked)."""
        for path in self._own_files():
            self.fs.delete_file(path)
        if staging:
            self.remove_staging()

    def remove_staging(self) -> None:
        try:
            self.fs.delete_dir(self.staging_root)
        except FileNotFoundError:  # never created, or an object store that drops empty prefixes
            pass

    def inspect_staged(self) -> list[StagedFile]:
        """Every staged file's footer facts, read by Ray tasks (FILES_PER_TASK files each, several at a
        time), after a Ray task lists them: one small record per file comes back."""
        import ray

        paths = ray.get(ray.remote(**CHECK_TASK)(Output.staged_files).remote(self))
        inspect = ray.remote(**CHECK_TASK)(read_footers)
        chunks = [paths[start:start + FILES_PER_TASK] for start in range(0, len(paths), FILES_PER_TASK)]
        return [file for facts in ray.get([inspect.remote(self.fs, chunk, self.staging_root) for chunk in chunks])
                for file in facts]

    def read_paths(self, files: list[str]) -> "ray.data.Dataset":
        """The `path` column of the given staged files, as a Ray dataset (never on the driver)."""
        import ray

        return ray.data.read_parquet(files, filesystem=self.fs, columns=[col.PATH])

    def find_problems(self, candidates: list[StagedFile], inputs: "ray.data.Dataset | None") -> "BucketChecks":
        """Duplicates, foreign rows and missing inputs (`find_row_problems`) over the candidates' rows (and
        the inputs, when given), checked in hash buckets of about ROWS_PER_BUCKET paths: plain Ray tasks
        scatter each group of staged files (each block of inputs) into the buckets, one task per bucket
        checks it (a Ray Data groupby did the same many times slower: docs/benchmarks.md, "Commit")."""
        import ray

        rows = sum(file.totals.rows for file in candidates) + (inputs.count() if inputs is not None else 0)
        buckets = max(1, math.ceil(rows / ROWS_PER_BUCKET))
        scatter = ray.remote(**CHECK_TASK)(_scatter).options(num_returns=buckets)
        scattered = [scatter.remote(None, group, self.fs, buckets)
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

    def commit(self, record: WriteRecord | None, inputs: "ray.data.Dataset | None", summary: dict,
               still_owner: Callable[[], None]) -> dict:
        """Publish staged results as part files, then the summary, then `_SUCCESS`.

        `record`: what this run's pipeline staged (None when it staged nothing). `inputs`: the inputs
        of a resumed run, checked for results (a fresh run's inputs are all in its record). Raises
        CommitError, changing nothing, when an input has no result. `still_owner()` raises when this
        run no longer holds the output's lease; it is asked before the first change and again right
        before `_SUCCESS`."""
        import ray

        files = self.inspect_staged()
        candidates, short, example = commit_candidates(files, record)
        checks = self.find_problems(candidates, inputs) if candidates or inputs is not None else BucketChecks()
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
        self.clear(staging=False)
        facts = {file.path: file for file in files}
        totals = self._publish(plan, checks.problems, facts)
        summary = {**summary, **totals_summary(list(totals.values())), "resumed_rows": plan.resumed_rows,
                   "files": [{"name": entry.part, "rows": entry.rows, "written_at": facts[entry.staged].written_at}
                             for entry in plan.publish]}
        write_bytes(self.fs, self.meta.join(SUMMARY), json.dumps(summary, indent=2).encode())
        still_owner()
        write_bytes(self.fs, self.location.join(SUCCESS), b"")
        ray.get(ray.remote(**CHECK_TASK)(Output.remove_staging).remote(self))
        return summary

    def _publish(self, plan: CommitPlan, problems: "list[ray.ObjectRef]",
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
                copies.append((entry.staged, self.location.join(entry.part)))
                totals[entry.staged] = facts[entry.staged].totals
            else:
                rewrites[entry.staged] = rewrite.remote(entry.staged, self.location.join(entry.part), self.fs,
                                                        *problems)
        copy = ray.remote(**CHECK_TASK)(copy_files)
        ray.get([copy.remote(self.fs, copies[start:start + FILES_PER_TASK])
                 for start in range(0, len(copies), FILES_PER_TASK)])
        totals.update(zip(rewrites, ray.get(list(rewrites.values()))))
        return totals


@dataclass
class BucketChecks:
    """What the bucket checks found: per bucket a small summary (`dropped` rows per file, `missing`
    inputs and an `example` of one) on the driver, and its problem rows (PROBLEMS_SCHEMA) left in the
    object store for the rewrites."""

    summaries: list[dict] = field(default_factory=list)
    problems: "list[ray.ObjectRef]" = field(default_factory=list)




_NO_ROWS = pa.table({col.PATH: pa.array([], pa.string()), "file": pa.array([], pa.string())})


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
        tables.append(pa.table({col.PATH: paths, "file": pa.array([name] * len(paths), pa.string())}))
    if inputs is not None:
        tables.append(pa.table({col.PATH: inputs[col.PATH].cast(pa.string()),
                                "file": pa.array([""] * inputs.num_rows, pa.string())}))
    rows = pa.concat_tables(tables) if tables else _NO_ROWS
    if buckets == 1:
        return rows
    bucket = bucket_of(rows[col.PATH], buckets)
    return tuple(rows.filter(pc.equal(bucket, index)) for index in range(buckets))


def _check_bucket(with_inputs: bool, *parts: pa.Table) -> tuple[dict, pa.Table]:
    """`find_row_problems` over one bucket: a small summary for the driver and the problem rows."""
    problems = find_row_problems(pa.concat_tables(parts) if parts else _NO_ROWS, with_inputs)
    missing = problems.filter(pc.equal(problems["kind"], "missing"))
    dropping = problems.filter(pc.not_equal(problems["kind"], "missing"))
    dropped = {row["file"]: row["rows_sum"] for row in
               dropping.group_by("file").aggregate([("rows", "sum")]).to_pylist()}
    return ({"dropped": dropped, "missing": missing.num_rows,
             "example": missing[col.PATH][0].as_py() if missing.num_rows else ""}, dropping)


def _rewrite(staged: str, destination: str, filesystem: pafs.FileSystem, *problems: pa.Table) -> FileTotals:
    """Write one staged file's part file without its dropped rows; return its totals."""
    drops: Counter = Counter()
    for table in problems:
        mine = table.filter(pc.equal(table["file"], staged))
        for path, rows in zip(mine[col.PATH].to_pylist(), mine["rows"].to_pylist()):
            drops[path] += rows
    table = drop_rows(pq.read_table(staged, filesystem=filesystem), drops)
    pq.write_table(table, destination, filesystem=filesystem)
    return FileTotals.of(table)


def _read_json(output: Output, path: str) -> dict | None:
    try:
        return json.loads(read_bytes(output.fs, path))
    except FileNotFoundError:
        return None


def check_output(output: Output, overwrite: bool, resume: bool, identity: JobIdentity) -> None:
    """Refuse, before any work, to run over a finished output unless asked to, and to resume the
    results of a different job."""
    committed = output.is_committed()
    if committed and not (overwrite or resume):
        raise UserError(f"{output.location.uri()} already holds a finished run (_SUCCESS): pass "
                        "--overwrite to replace it, --resume to accept it, or choose another --output")
    if not resume:
        return
    summary = _read_json(output, output.meta.join(SUMMARY)) if committed else None
    job_file = None if committed else _read_json(output, output.meta.join(STAGING, JOB))
    check_same_job(identity, earlier_identity(committed, summary, job_file), output.location.uri())


def prepare_output(output: Output, resume: bool, identity: JobIdentity) -> bool:
    """Clear or reuse what is at the output prefix; False when a resumed output is already complete.

    Without --resume, leftovers of a crashed run (staging, part files of an interrupted commit) are
    removed, never mixed in. With it, part files of an interrupted commit go (staging still has them).
    """
    if output.is_committed() and resume:
        return False
    output.clear(staging=not resume)
    if output.location.scheme != "s3":  # local writes need their directories; S3 has none
        output.fs.create_dir(output.staging_root, recursive=True)
        output.fs.create_dir(output.location.path, recursive=True)
    write_bytes(output.fs, output.meta.join(STAGING, JOB), json.dumps(identity.as_dict()).encode())
    return True


def exclude_finished(output: Output, inputs: "ray.data.Dataset") -> tuple["ray.data.Dataset", bool]:
    """The inputs without a staged result of an earlier run (a distributed left anti-join on `path`),
    and whether any earlier result was found. Unreadable staged files (cut short) are ignored."""
    readable = [file for file in output.inspect_staged() if file.totals is not None and file.totals.rows]
    if not readable:
        return inputs, False
    rows = sum(file.totals.rows for file in readable)
    done = output.read_paths([file.path for file in readable])
    return inputs.join(done, join_type="left_anti", num_partitions=max(1, math.ceil(rows / ROWS_PER_BUCKET)),
                       on=(col.PATH,), aggregator_ray_remote_args=SHUFFLE_ARGS), True

