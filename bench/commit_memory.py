"""Time and driver memory of the commit: stage N prediction rows in a local output's staging area
(files of --rows-per-file rows, named as the job's write tasks name them), start a local Ray, commit,
and print the commit's wall time and the driver's peak RSS during it above its RSS before it (sampled
every 10 ms); the figures and the machine go to bench/results/<time>-commit-n<N>[-<label>].json.

    python -m bench.commit_memory --rows 1000000 [--label after]

Runs against whichever batchinfer is importable: this checkout's commit (`commit_tasks.commit_output`:
record + footers) or an older one (all in `batchinfer.sink`) whose `Output.commit(expected, summary,
still_owner)` takes the list of every input URI.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray

from batchinfer.config import S3Options
from batchinfer.columns import prediction_schema
from batchinfer.storage import Location
from bench.run import machine

try:
    from batchinfer.commit_tasks import commit_output
    from batchinfer.layout import Output
except ImportError:  # a checkout from before the commit left batchinfer.sink
    from batchinfer.sink import Output
    commit_output = Output.commit

RUN_ID = "benchrun0001"
RESULTS = Path(__file__).parent / "results"


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
        pq.write_table(table, directory / f"bench_{task:06d}-0.parquet")  # as staging.staged_name names them
    return [f"s3://bucket/images/class-{index % 1000:03d}/image-{index:09d}.jpg" for index in range(rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rows-per-file", type=int, default=10_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/commit-mem"))
    parser.add_argument("--label", default="", help="appended to the result file's name")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the result JSON goes")
    args = parser.parse_args()
    started = datetime.now(timezone.utc)
    where = machine()
    shutil.rmtree(args.workdir, ignore_errors=True)
    output = Output(Location(pafs.LocalFileSystem(), str(args.workdir / "out"), "file"), S3Options())
    expected = stage(output, args.rows, args.rows_per_file)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    ray.get(ray.remote(lambda: None).remote())  # a warm worker, as a running job has
    new_api = "record" in inspect.signature(commit_output).parameters
    if new_api:
        try:
            from batchinfer.staging import WriteRecord
        except ImportError:
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
        summary = commit_output(output, record, None, {}, lambda: None)
    else:
        summary = commit_output(output, expected, {}, lambda: None)
    seconds = time.monotonic() - clock
    done.set()
    sampler.join()
    assert summary["rows"] == args.rows, summary["rows"]
    print(f"commit of {args.rows} staged rows ({'footers + record' if new_api else 'rows read on the driver'}): "
          f"{seconds:.1f} s, driver RSS before {before / 2**20:.0f} MiB, peak during commit "
          f"{peak[0] / 2**20:.0f} MiB (+{(peak[0] - before) / 2**20:.0f} MiB)")
    name = f"{started:%Y%m%d-%H%M%S}-commit-n{args.rows}{'-' + args.label if args.label else ''}.json"
    result = {"started": started.isoformat(timespec="seconds"), "machine": where,
              "command": "python -m bench.commit_memory " + " ".join(sys.argv[1:]),
              "code": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                     cwd=Path(sys.modules[Output.__module__].__file__).parent
                                     ).stdout.strip(),  # the commit measured
              "rows": args.rows, "rows_per_file": args.rows_per_file,
              "commit_kind": "footers + record" if new_api else "rows read on the driver",
              "commit_s": round(seconds, 2), "driver_rss_before_mib": round(before / 2**20, 1),
              "driver_rss_peak_mib": round(peak[0] / 2**20, 1),
              "load_avg_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()]}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.results / name}")
    ray.shutdown()
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
