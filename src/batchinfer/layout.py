"""Where a run's files live under `--output`, and the markers that say what state it is in.

The output prefix holds only what readers want: `part-NNNNN.parquet` files and, once they are all
there, an empty `_SUCCESS` (Spark's convention; polars, DuckDB's `*.parquet` glob, pandas, pyarrow and
Spark read the prefix as it is). Everything else a run keeps lives in a sibling prefix, `Output.meta` =
`<output>.batchinfer/`: the lease (lease.py), the staging area `staging/<run-id>/` where the write
stage puts its files (staging.py), `staging/job.json` (which job the staged results belong to:
identity.py), `summary.json` and the report. Publishing the staged files is commit_tasks.py's.
"""

from __future__ import annotations

import re

import pyarrow.fs as pafs

from batchinfer.config import S3Options, UserError
from batchinfer.storage import Location, file_info

SUCCESS = "_SUCCESS"      # in the output prefix, empty, written last
META_SUFFIX = ".batchinfer"  # the run's own files: <output>.batchinfer/
SUMMARY = "summary.json"  # in Output.meta
REPORT = "report.html"    # in Output.meta
STAGING = "staging"       # in Output.meta: staging/<run-id>/*.parquet
JOB = "job.json"          # in the staging area: which job the staged results belong to
_PART = re.compile(r"part-\d{5}\.parquet$")


def part_name(index: int) -> str:
    """The name of the output's `index`-th part file (consecutive from 0)."""
    return f"part-{index:05d}.parquet"


class Output:
    """The output prefix: its files, its `.batchinfer/` sibling and its staging area."""

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
        """True once `_SUCCESS` is there: every part file is."""
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
        """Remove the staging area (every run's staged files and job.json)."""
        try:
            self.fs.delete_dir(self.staging_root)
        except FileNotFoundError:  # never created, or an object store that drops empty prefixes
            pass
