"""Parquet output: the prediction schema, a staging area per output, and an atomic-looking commit.

Ray Data writes part files under `<output>/_staging/<run-id>/`. Commit copies them to
`<output>/part-NNNNN.parquet` (dropping any duplicate or foreign path), then writes `_SUMMARY.json`
and, last, an empty `_SUCCESS`. A reader that sees `_SUCCESS` sees exactly one row per input.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from batchinfer.config import S3Options, UserError
from batchinfer.storage import Location, file_info, read_bytes, write_bytes

SUCCESS = "_SUCCESS"
SUMMARY = "_SUMMARY.json"
STAGING = "_staging"
JOB = "_JOB.json"  # in the staging area: which job the staged results belong to
_PART = re.compile(r"part-\d{5}\.parquet$")


class CommitError(RuntimeError):
    """The staged results don't cover every input; nothing was marked successful."""


def prediction_schema(with_truth: bool = False) -> pa.Schema:
    """The output contract: one row per input object."""
    fields = [
        pa.field("path", pa.string(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("label_index", pa.int32()),
        pa.field("score", pa.float32()),
        pa.field("topk_labels", pa.list_(pa.string())),
        pa.field("topk_scores", pa.list_(pa.float32())),
        pa.field("model", pa.string()),
        pa.field("error", pa.string()),
    ]
    if with_truth:
        fields += [pa.field("true_label", pa.string()), pa.field("correct", pa.bool_())]
    return pa.schema(fields)


@dataclass(frozen=True)
class CommittedFile:
    name: str
    rows: int


class Output:
    """The output prefix: its state, its staging area and its commit."""

    def __init__(self, location: Location, s3: S3Options) -> None:
        self.location = location
        self.s3 = s3
        self.fs = location.filesystem
        self.staging_root = location.join(STAGING)

    def _files(self, path: str) -> list[str]:
        infos = self.fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
        return sorted(info.path for info in infos if info.type == pafs.FileType.File)

    def is_committed(self) -> bool:
        return file_info(self.location, self.location.join(SUCCESS), self.s3).type == pafs.FileType.File

    def staged_files(self) -> list[str]:
        return [path for path in self._files(self.staging_root) if path.endswith(".parquet")]

    def _own_files(self) -> list[str]:
        """Files this tool writes at the top of the output prefix (never anyone else's)."""
        top = self.fs.get_file_info(pafs.FileSelector(self.location.path, allow_not_found=True))
        return [info.path for info in top if info.type == pafs.FileType.File
                and (_PART.search(info.path) or info.base_name in (SUCCESS, SUMMARY))]

    def clear(self, staging: bool) -> None:
        """Remove our part files and markers (and the staging area when asked)."""
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

    def commit(self, expected: list[str], summary: dict) -> dict:
        """Publish staged results as part files, then `_SUMMARY.json`, then `_SUCCESS`."""
        self.clear(staging=False)
        wanted, seen = set(expected), set()
        files: list[CommittedFile] = []
        totals = {"rows": 0, "ok": 0, "errors": 0, "judged": 0, "correct": 0}
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
            files.append(CommittedFile(name, table.num_rows))
            classified = table["error"].null_count
            totals["rows"] += table.num_rows
            totals["ok"] += classified
            totals["errors"] += table.num_rows - classified
            if "correct" in table.column_names:
                totals["judged"] += table.num_rows - table["correct"].null_count
                totals["correct"] += pc.sum(table["correct"]).as_py() or 0
        missing = wanted - seen
        if missing:
            raise CommitError(f"{len(missing)} of {len(wanted)} inputs have no result (e.g. "
                              f"{sorted(missing)[0]}); output left uncommitted, rerun with --resume")
        summary = {
            **summary, "rows": totals["rows"], "ok": totals["ok"], "errors": totals["errors"],
            "accuracy": totals["correct"] / totals["judged"] if totals["judged"] else None,
            "files": [{"name": f.name, "rows": f.rows} for f in files],
        }
        write_bytes(self.fs, self.location.join(SUMMARY), json.dumps(summary, indent=2).encode())
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
    found = _read_json(output, output.location.join(SUMMARY) if committed else output.location.join(STAGING, JOB))
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
    output.fs.create_dir(output.staging_root, recursive=True)
    write_bytes(output.fs, output.location.join(STAGING, JOB), json.dumps(job).encode())
    return done
