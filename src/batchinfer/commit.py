"""The commit's decisions: pure functions from small records and pyarrow tables to what is published.
No Ray, no storage; commit_tasks.py applies them (its docstring: the commit step by step).

Each staged file is described by its footer (`StagedFile`, `FileTotals`); this run's own record of
what it staged (staging.WriteRecord) says which of its files count (`commit_candidates`); one hash
bucket of staged paths (and inputs) at a time gives the rows to drop and the inputs without a result
(`find_row_problems`); `plan_commit` decides each file's fate (copy, rewrite without dropped rows,
skip) and whether the run is complete.
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from batchinfer import columns as col
from batchinfer.layout import part_name
from batchinfer.staging import WriteRecord, staged_task


class CommitError(RuntimeError):
    """The staged results don't cover every input; nothing was marked successful."""


def errors_by_kind(table: pa.Table) -> Counter:
    """How many rows of `table` are error rows, per `error_kind`."""
    return Counter({item["values"]: item["counts"]
                    for item in pc.value_counts(table[col.ERROR_KIND].drop_null()).to_pylist()})


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
        return staged_task(self.path)


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


PROBLEMS_SCHEMA = pa.schema([(col.PROBLEM, pa.string()), (col.PATH, pa.string()),
                             (col.FILE, pa.string()), (col.PROBLEM_ROWS, pa.int64())])


def find_row_problems(rows: pa.Table, with_inputs: bool) -> pa.Table:
    """Rows that must not be published, and inputs without a result, from one bucket of `rows`
    (columns `path`, `file`: a staged row, or, with `with_inputs`, an input when `file` is "").

    Returns PROBLEMS_SCHEMA rows: `duplicate` (`rows` rows of `path` to drop from `file`: a path keeps
    one row, in the first file by name), `foreign` (a staged path that is not an input), `missing`
    (an input with no staged row)."""
    staged = rows.filter(pc.not_equal(rows[col.FILE], ""))
    per_file = staged.group_by([col.PATH, col.FILE]).aggregate([([], "count_all")])
    parts = []
    if with_inputs:
        inputs = rows.filter(pc.equal(rows[col.FILE], "")).select([col.PATH])
        foreign = per_file.join(inputs, col.PATH, join_type="left anti")
        missing = inputs.join(per_file.select([col.PATH]), col.PATH, join_type="left anti")
        per_file = per_file.join(inputs, col.PATH, join_type="left semi")
        parts += [_problems("foreign", foreign[col.PATH], foreign[col.FILE], foreign["count_all"]),
                  _problems("missing", missing[col.PATH], pa.array([""] * missing.num_rows, pa.string()),
                            pa.array([1] * missing.num_rows, pa.int64()))]
    keeper = per_file.group_by(col.PATH).aggregate([(col.FILE, "min")]).rename_columns([col.PATH, "keeper"])
    per_file = per_file.join(keeper, col.PATH)
    drop = pc.subtract(per_file["count_all"], pc.cast(pc.equal(per_file[col.FILE], per_file["keeper"]), pa.int64()))
    duplicates = per_file.append_column("drop", drop).filter(pc.greater(drop, 0))
    parts.append(_problems("duplicate", duplicates[col.PATH], duplicates[col.FILE], duplicates["drop"]))
    table = pa.concat_tables(parts)
    return table.filter(pc.greater(table[col.PROBLEM_ROWS], 0))


def _problems(kind: str, paths, files, rows) -> pa.Table:
    return pa.table({col.PROBLEM: pa.array([kind] * len(paths), pa.string()), col.PATH: paths, col.FILE: files,
                     col.PROBLEM_ROWS: pc.cast(rows, pa.int64())}, schema=PROBLEMS_SCHEMA)


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
        publish.append(Publish(file.path, part_name(len(publish)), action, kept, earlier))
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


def totals_summary(totals: list[FileTotals]) -> dict:
    """rows, ok, errors, errors_by_kind, accuracy of the published files."""
    by_kind: Counter = Counter()
    for each in totals:
        by_kind.update(each.by_kind)
    rows, ok = sum(each.rows for each in totals), sum(each.ok for each in totals)
    judged, correct = sum(each.judged for each in totals), sum(each.correct for each in totals)
    return {"rows": rows, "ok": ok, "errors": rows - ok, "errors_by_kind": dict(sorted(by_kind.items())),
            "accuracy": correct / judged if judged else None}
