"""bench/measure.py OutputWatcher on a real local folder: it notes each Parquet file as it lands, and with
`first_only` stops listing after the first (the scale stage's large runs stage a thousand files)."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from bench.measure import OutputWatcher


def _stage(folder: Path, name: str, rows: int) -> None:
    (folder / "run").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"path": [f"img-{index}" for index in range(rows)]}), folder / "run" / name)


def _wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the watcher did not get there in time"
        time.sleep(0.02)


def test_watcher_notes_every_file_with_its_rows(tmp_path: Path) -> None:
    with OutputWatcher(pafs.LocalFileSystem(), str(tmp_path), interval_s=0.02) as watcher:
        _stage(tmp_path, "a.parquet", 3)
        _wait_for(lambda: len(watcher.seen) == 1)
        _stage(tmp_path, "b.parquet", 5)
        (tmp_path / "run" / "notes.txt").write_text("not Parquet")
        _wait_for(lambda: len(watcher.seen) == 2)
    assert [rows for _, rows in watcher.batches()] == [3, 5]


def test_first_only_stops_listing_after_the_first_file(tmp_path: Path) -> None:
    with OutputWatcher(pafs.LocalFileSystem(), str(tmp_path), interval_s=0.02, first_only=True) as watcher:
        _stage(tmp_path, "a.parquet", 3)
        _wait_for(lambda: not watcher._thread.is_alive())
        _stage(tmp_path, "b.parquet", 5)
        time.sleep(0.2)  # ten intervals: a watcher still listing would see it
    assert [rows for _, rows in watcher.batches()] == [3]
