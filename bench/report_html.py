"""Benchmark the HTML report over a large finished output (synthetic Parquet with the real schema).

    python -m bench.report_html [--rows 1000000] [--workdir /tmp/batchinfer-report-bench]

Writes a finished output to a local directory the way a run of `--label-from-path` leaves it (part files
of 10,000 rows, `summary.json` (in the sibling `.batchinfer/` prefix) with per-file write times, `_SUCCESS`), then times `write_report` on it:
reading the columns, the aggregates, the charts, the thumbnails, writing the page. The data is generated
once per row count and reused. Prints wall and CPU time and the process's peak RSS before and after the
report (imports, and the generation on a first run, included), and writes them as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from batchinfer.config import S3Options
from batchinfer.models import imagenet_categories
from batchinfer import report
from batchinfer.report import THUMBNAILS, write_report
from batchinfer.columns import prediction_schema
from batchinfer.layout import META_SUFFIX, SUCCESS, SUMMARY, Output
from batchinfer.storage import resolve
from bench.measure import own_peak_rss_mib

RESULTS = Path(__file__).parent / "results"
ROWS_PER_FILE = 10_000
ERROR_SHARE = 0.004
ERROR_KINDS = ["truncated", "truncated", "not_an_image", "too_large"]  # the job's error_kind of each of ERRORS
ERRORS = ["OSError: Truncated File Read", "OSError: image file is truncated ({} bytes not processed)",
          "UnidentifiedImageError: cannot identify image file <_io.BytesIO object at 0x{:x}>",
          "DecompressionBombError: Image size ({} pixels) exceeds limit of 178956970 pixels"]
IMAGES_PER_S = 400.0  # the synthetic run's pace, for the per-file write times


def synthetic_output(directory: Path, rows: int, seed: int = 0) -> dict:
    """A finished output of `rows` predictions under `directory`; returns its summary."""
    rng = np.random.default_rng(seed)
    names = np.array(imagenet_categories(), dtype=object)
    true_index = np.minimum(rng.zipf(1.3, rows) - 1, len(names) - 1)
    right = rng.random(rows) < 0.8
    label_index = np.where(right, true_index, rng.integers(0, len(names), rows)).astype(np.int32)
    score = rng.beta(np.where(right, 5.0, 1.5), 2.0).astype(np.float32)
    failed = rng.random(rows) < ERROR_SHARE
    kinds = rng.integers(0, len(ERRORS), rows)
    error = np.array([ERRORS[kind].format(int(number)) if bad else None for bad, kind, number
                      in zip(failed, kinds, rng.integers(1, 2**40, rows))], dtype=object)
    path = np.array([f"{directory}/input/{names[t].replace(' ', '_')}/{i:07d}.jpg"
                     for i, t in enumerate(true_index)], dtype=object)
    topk_index = (label_index[:, None] + np.arange(5)[None, :]) % len(names)
    topk_scores = np.sort(np.column_stack([score, rng.random((rows, 4)) * (1 - score[:, None]) / 4]), axis=1)[:, ::-1]
    offsets = pa.array(np.arange(0, rows * 5 + 1, 5, dtype=np.int32))
    mask = pa.array(failed)
    table = pa.table({
        "path": pa.array(path, pa.string()),
        "label": pa.array(names[label_index], pa.string(), mask=failed),
        "label_index": pa.array(label_index, pa.int32(), mask=failed),
        "score": pa.array(score, pa.float32(), mask=failed),
        "topk_labels": pa.ListArray.from_arrays(offsets, pa.array(names[topk_index].ravel(), pa.string()), mask=mask),
        "topk_scores": pa.ListArray.from_arrays(offsets, pa.array(topk_scores.astype(np.float32).ravel()), mask=mask),
        "model": pa.array(np.full(rows, "resnet50", dtype=object), pa.string()),
        "error": pa.array(error, pa.string()),
        "error_kind": pa.array(np.array(ERROR_KINDS, dtype=object)[kinds], pa.string(), mask=~failed),
        "true_label": pa.array(names[true_index], pa.string()),
        "correct": pa.array(right, pa.bool_(), mask=failed),
    }, schema=prediction_schema(with_truth=True))
    _lowest_images(directory, table, score, failed)
    started = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
    startup_s = 20.0
    files = []
    for number, start in enumerate(range(0, rows, ROWS_PER_FILE)):
        part = table.slice(start, ROWS_PER_FILE)
        name = f"part-{number:05d}.parquet"
        pq.write_table(part, directory / name)
        written = started + timedelta(seconds=startup_s + (start + part.num_rows) / IMAGES_PER_S)
        files.append({"name": name, "rows": part.num_rows, "written_at": written.isoformat()})
    ok = int((~failed).sum())
    pipeline_s = rows / IMAGES_PER_S
    summary = {"input": str(directory / "input"), "output": str(directory), "model": "resnet50",
               "weights": "default", "device": "cuda", "inference_actors": 4, "started_at": started.isoformat(),
               "skipped_non_images": 0, "resumed_rows": 0, "processed_this_run": rows, "startup_s": startup_s,
               "pipeline_s": pipeline_s, "images_per_s": IMAGES_PER_S,
               "finished_at": (started + timedelta(seconds=startup_s + pipeline_s)).isoformat(),
               "rows": rows, "ok": ok, "errors": rows - ok, "accuracy": float(right[~failed].mean()), "files": files}
    meta = Path(f"{directory}{META_SUFFIX}")
    meta.mkdir(parents=True, exist_ok=True)
    (meta / SUMMARY).write_text(json.dumps(summary, indent=2))
    (directory / SUCCESS).write_bytes(b"")
    return summary


def _lowest_images(directory: Path, table: pa.Table, score: np.ndarray, failed: np.ndarray) -> None:
    """Real JPEGs for the rows the report will show as thumbnails (the rest of the input is not needed)."""
    ranked = np.where(failed, np.inf, score)
    for index in np.argsort(ranked, kind="stable")[:THUMBNAILS]:
        target = Path(table["path"][int(index)].as_py())
        target.parent.mkdir(parents=True, exist_ok=True)
        y, x = np.mgrid[0:240, 0:320]
        tint = int(index) % 256
        Image.fromarray(np.stack([x * 255 // 319, y * 255 // 239, np.full_like(x, tint)], axis=-1).astype(np.uint8)
                        ).save(target, quality=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report_html", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/batchinfer-report-bench"))
    args = parser.parse_args(argv)
    directory = args.workdir / f"n{args.rows}"
    if (directory / SUCCESS).exists():
        summary = json.loads(Path(f"{directory}{META_SUFFIX}", SUMMARY).read_text())
    else:
        directory.mkdir(parents=True, exist_ok=True)
        print(f"generating {args.rows:,} rows under {directory} …")
        summary = synthetic_output(directory, args.rows)
    output = Output(resolve(str(directory), S3Options()), S3Options())
    load = os.getloadavg()
    rss_before_mib = round(own_peak_rss_mib())
    clock, cpu = time.perf_counter(), time.process_time()
    where = write_report(output, summary)
    seconds, cpu_s = time.perf_counter() - clock, time.process_time() - cpu
    size = Path(where).stat().st_size
    parquet_mib = sum((directory / entry["name"]).stat().st_size for entry in summary["files"]) / 2**20
    results = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rows": args.rows,
               "files": len(summary["files"]), "parquet_mib": round(parquet_mib, 1), "report_s": round(seconds, 2),
               "cpu_s": round(cpu_s, 2),
               "peak_rss_before_mib": rss_before_mib, "peak_rss_mib": round(own_peak_rss_mib()), "report_kib": round(size / 1024, 1), "report": where,
               "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "load_avg_1_5_15_at_start": [round(x, 2) for x in load]},
               "command": f"python -m bench.report_html --rows {args.rows}",
               "code": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                      cwd=Path(report.__file__).parent).stdout.strip()}  # the report measured
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-report-n{args.rows}-{results['code']}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"report over {args.rows:,} rows ({len(summary['files'])} files, {parquet_mib:.0f} MiB): "
          f"{seconds:.2f} s wall, {cpu_s:.2f} s CPU, peak RSS {rss_before_mib} → {results['peak_rss_mib']} MiB, {size / 1024:.0f} KiB → {where}\nresults: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
