"""Parquet output: the prediction schema, a staging area per output, and an atomic-looking commit.

The output prefix holds only what readers want: `part-NNNNN.parquet` files and, once they are all
there, an empty `_SUCCESS` (Spark's convention; polars, DuckDB's `*.parquet` glob, pandas, pyarrow and
Spark read the prefix as it is). Everything else a run keeps lives in a sibling prefix, `Output.meta` =
`<output>.batchinfer/`: the lease (lease.py), the staging area `staging/<run-id>/` where Ray Data
writes, `staging/job.json` (which job the staged results belong to), `summary.json` and the report.
Commit copies staged files to the part files (dropping any duplicate or foreign path), writes the
summary and, last, `_SUCCESS`. A reader that sees `_SUCCESS` sees exactly one row per input.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timezone

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from batchinfer.config import S3Options, UserError
from batchinfer.storage import Location, file_info, read_bytes, write_bytes

SUCCESS = "_SUCCESS"      # in the output prefix, empty, written last
META_SUFFIX = ".batchinfer"  # the run's own files: <output>.batchinfer/
SUMMARY = "summary.json"  # in Output.meta
REPORT = "report.html"    # in Output.meta
STAGING = "staging"       # in Output.meta: staging/<run-id>/*.parquet
JOB = "job.json"          # in the staging area: which job the staged results belong to
_PART = re.compile(r"part-\d{5}\.parquet$")


class CommitError(RuntimeError):
    """The staged results don't cover every input; nothing was marked successful."""


def prediction_schema(with_truth: bool = False, with_key: bool = False) -> pa.Schema:
    """The output contract: one row per input object (`key`: a manifest's --key-column, to join back)."""
    fields = [
        pa.field("path", pa.string(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("label_index", pa.int32()),
        pa.field("score", pa.float32()),
        pa.field("topk_labels", pa.list_(pa.string())),
        pa.field("topk_scores", pa.list_(pa.float32())),
        pa.field("model", pa.string()),
        pa.field("error", pa.string()),
        pa.field("error_kind", pa.string()),  # preprocess.ERROR_KINDS; null when classified
    ]
    if with_truth:
        fields += [pa.field("true_label", pa.string()), pa.field("correct", pa.bool_())]
    if with_key:
        fields.append(pa.field("key", pa.string()))
    return pa.schema(fields)


def errors_by_kind(table: pa.Table) -> Counter:
    """How many rows of `table` are error rows, per `error_kind`."""
    return Counter({item["values"]: item["counts"]
                    for item in pc.value_counts(table["error_kind"].drop_null()).to_pylist()})


@dataclass(frozen=True)
class CommittedFile:
    name: str
    rows: int
    written_at: str  # when its staged file was written (UTC): the report's throughput over the run


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

    def read_staged(self, path: str, columns: list[str] | None = None) -> pa.Table | None:
        """A staged file, or None when it is unreadable (cut short when a local writer was killed)."""
        try:
            return pq.read_table(path, columns=columns, filesystem=self.fs)
        except pa.ArrowInvalid:
            return None

    def completed_paths(self) -> set[str]:
        """Input URIs that already have a staged result (from an earlier, interrupted run)."""
        done: set[str] = set()
        for path in self.staged_files():
            table = self.read_staged(path, columns=["path"])
            if table is not None:
                done.update(table["path"].to_pylist())
        return done

    def commit(self, expected: list[str], summary: dict, still_owner: Callable[[], None]) -> dict:
        """Publish staged results as part files, then the summary, then `_SUCCESS`.

        `still_owner()` raises when this run no longer holds the output's lease; it is asked before
        the first change and again right before `_SUCCESS`."""
        still_owner()
        self.clear(staging=False)
        wanted, seen = set(expected), set()
        files: list[CommittedFile] = []
        totals = {"rows": 0, "ok": 0, "errors": 0, "judged": 0, "correct": 0}
        by_kind: Counter = Counter()
        for staged in self.staged_files():
            table = self.read_staged(staged)
            if table is None:
                continue
            keep = [path in wanted and path not in seen and not seen.add(path)
                    for path in table["path"].to_pylist()]
            table = table.filter(pa.array(keep, pa.bool_()))
            if table.num_rows == 0:
                continue
            name = f"part-{len(files):05d}.parquet"
            destination = self.location.join(name)
            if all(keep):
                self.fs.copy_file(staged, destination)
            else:
                pq.write_table(table, destination, filesystem=self.fs)
            written_at = self.fs.get_file_info(staged).mtime.astimezone(timezone.utc).isoformat()
            files.append(CommittedFile(name, table.num_rows, written_at))
            classified = table["error"].null_count
            totals["rows"] += table.num_rows
            totals["ok"] += classified
            totals["errors"] += table.num_rows - classified
            by_kind += errors_by_kind(table)
            if "correct" in table.column_names:
                totals["judged"] += table.num_rows - table["correct"].null_count
                totals["correct"] += pc.sum(table["correct"]).as_py() or 0
        missing = wanted - seen
        if missing:
            raise CommitError(f"{len(missing)} of {len(wanted)} inputs have no result (e.g. "
                              f"{sorted(missing)[0]}); output left uncommitted, rerun with --resume")
        summary = {
            **summary, "rows": totals["rows"], "ok": totals["ok"], "errors": totals["errors"],
            "errors_by_kind": dict(sorted(by_kind.items())),
            "accuracy": totals["correct"] / totals["judged"] if totals["judged"] else None,
            "files": [{"name": f.name, "rows": f.rows, "written_at": f.written_at} for f in files],
        }
        write_bytes(self.fs, self.meta.join(SUMMARY), json.dumps(summary, indent=2).encode())
        still_owner()
        write_bytes(self.fs, self.location.join(SUCCESS), b"")
        self.remove_staging()
        return summary


def _read_json(output: Output, path: str) -> dict | None:
    try:
        return json.loads(read_bytes(output.fs, path))
    except FileNotFoundError:
        return None


def check_output(output: Output, overwrite: bool, resume: bool, job: dict) -> None:
    """Refuse, before any work, to run over a finished output unless asked to, and to resume the
    results of a different job (`job`: what makes results comparable: input, model, weights, …)."""
    committed = output.is_committed()
    if committed and not (overwrite or resume):
        raise UserError(f"{output.location.uri()} already holds a finished run (_SUCCESS): pass "
                        "--overwrite to replace it, --resume to accept it, or choose another --output")
    if not resume:
        return
    found = _read_json(output, output.meta.join(SUMMARY) if committed else output.meta.join(STAGING, JOB))
    earlier = (found or {}).get("job") if committed else found
    if earlier is not None and earlier != job:
        changed = ", ".join(f"{key} {earlier.get(key)!r} -> {value!r}" for key, value in job.items()
                            if earlier.get(key) != value)
        raise UserError(f"--resume: {output.location.uri()} holds results of a different job ({changed}): "
                        "pass --overwrite to replace them, or choose another --output")


def prepare_output(output: Output, overwrite: bool, resume: bool, job: dict) -> set[str] | None:
    """Clear or reuse what is at the output prefix; return the input URIs already done.

    None means a resumed output is already complete. Without --resume, leftovers of a crashed run
    (staging, part files of an interrupted commit) are removed, never mixed in.
    """
    if output.is_committed() and resume:
        return None
    if resume:
        output.clear(staging=False)  # part files of an interrupted commit: staging still has them
        done = output.completed_paths()
    else:
        output.clear(staging=True)
        done = set()
    if output.location.scheme != "s3":  # local writes need their directories; S3 has none
        output.fs.create_dir(output.staging_root, recursive=True)
        output.fs.create_dir(output.location.path, recursive=True)
    write_bytes(output.fs, output.meta.join(STAGING, JOB), json.dumps(job).encode())
    return done
