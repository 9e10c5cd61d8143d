"""Driver memory of the commit: stage N prediction rows in a local output's staging area (files of
--rows-per-file rows, named as the job's write tasks name them), start a local Ray, commit, and print
the driver's peak RSS during the commit above its RSS before it (sampled every 10 ms).

    python bench/commit_memory.py --rows 100000 --workdir /tmp/commit-mem

Runs against whichever batchinfer is importable: this checkout's commit (record + footers) or an older
one whose `Output.commit(expected, summary, still_owner)` takes the list of every input URI.
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray

from batchinfer.config import S3Options
from batchinfer.columns import prediction_schema
from batchinfer.sink import Output
from batchinfer.storage import Location

RUN_ID = "benchrun0001"


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def stage(output: Output, rows: int, rows_per_file: int) -> list[str]:
    """Write `rows` prediction rows as staged files; return every input URI."""
    directory = Path(output.staging_root) / RUN_ID
    directory.mkdir(parents=True)
    Path(output.location.path).mkdir(parents=True)  # as prepare_output makes it for a local output
    schema = prediction_schema(False)
    for task, start in enumerate(range(0, rows, rows_per_file)):
        count = min(rows_per_file, rows - start)
        paths = [f"s3://bucket/images/class-{index % 1000:03d}/image-{index:09d}.jpg"
                 for index in range(start, start + count)]
        table = pa.table({
            "path": paths, "label": ["tabby"] * count, "label_index": pa.array([281] * count, pa.int32()),
            "score": pa.array([0.9] * count, pa.float32()),
            "topk_labels": [["tabby", "tiger cat", "Egyptian cat", "lynx", "tiger"]] * count,
            "topk_scores": pa.array([[0.9, 0.05, 0.03, 0.01, 0.01]] * count, pa.list_(pa.float32())),
            "model": ["resnet50"] * count, "error": pa.array([None] * count, pa.string()),
            "error_kind": pa.array([None] * count, pa.string())}, schema=schema)
        pq.write_table(table, directory / f"bench_{task:06d}-0.parquet")
    return [f"s3://bucket/images/class-{index % 1000:03d}/image-{index:09d}.jpg" for index in range(rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rows-per-file", type=int, default=10_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/commit-mem"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    output = Output(Location(pafs.LocalFileSystem(), str(args.workdir / "out"), "file"), S3Options())
    expected = stage(output, args.rows, args.rows_per_file)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    ray.get(ray.remote(lambda: None).remote())  # a warm worker, as a running job has
    new_api = "record" in inspect.signature(Output.commit).parameters
    if new_api:
        from batchinfer.sink import WriteRecord

        tasks = range(0, args.rows, args.rows_per_file)
        record = WriteRecord(RUN_ID, {task: min(args.rows_per_file, args.rows - start)
                                      for task, start in enumerate(tasks)})
        del expected  # the new commit has no list of inputs: a fresh run's inputs are in its record
    before, peak, done = rss_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    clock = time.monotonic()
    if new_api:
        summary = output.commit(record, None, {}, lambda: None)
    else:
        summary = output.commit(expected, {}, lambda: None)
    seconds = time.monotonic() - clock
    done.set()
    sampler.join()
    assert summary["rows"] == args.rows, summary["rows"]
    print(f"commit of {args.rows} staged rows ({'footers + record' if new_api else 'rows read on the driver'}): "
          f"{seconds:.1f} s, driver RSS before {before / 2**20:.0f} MiB, peak during commit "
          f"{peak[0] / 2**20:.0f} MiB (+{(peak[0] - before) / 2**20:.0f} MiB)")
    ray.shutdown()
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
