"""Scale stage: what the framework costs per object at N tiny objects, against Ray Data's read_images.

    python -m bench.scale --counts 10000,100000,1000000 [--layout flat|dirs] [--stages job,read_images]

N tiny JPEGs (16×16 px, a few hundred bytes) go into the local S3 server once (kept and reused by later
runs), and a trivial TorchScript model (one small convolution, average pool, linear) into the same bucket,
so the figures measure the framework (listing, scheduling, decode, staging, commit, the driver) rather
than a model. For each N, each stage runs in a fresh Python process, which is the driver, so its peak RSS
is its own and no earlier N leaves memory behind:

- `job`: the real job through its public entry point, run_job(JobConfig(...)) (TorchScript model from
  S3, local Ray started by the job). Time to first output row: from just before run_job is called to the
  first poll (every 0.25 s) that lists a Parquet file under the run's staging prefix (rows are staged
  --rows-per-file at a time; the commit publishes them at the end).
- `read_images`: the anchor, ray.data.read_images over the same prefix, iterated to the end with
  iter_batches (whole blocks); time to first row: from just before ray.init to the first block in
  the driver.

Both record the driver's peak RSS (kernel high-water mark, and the sampled peak), the CPU seconds of the
driver and of its whole process tree (Ray's GCS, raylet, workers) per 1,000 images, and whole-run
images/s. The result JSON under bench/results/ has per-N figures, ratios job / read_images, and the
per-object slopes of driver peak RSS extrapolated to 100 M objects. Definitions: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import ray
import torch
from PIL import Image

from batchinfer.config import JobConfig, S3Options
from batchinfer.pipeline import connect_ray, run_job
from batchinfer.layout import Output
from batchinfer.storage import resolve

from bench.measure import DriverRssWatch, OutputWatcher, ProcessSampler, status_mib
from bench.photos import BUCKET
from bench.report import scale_stage_table
from bench.run import machine
from devkit.seaweed import SeaweedServer

STAGES = ("job", "read_images")
LAYOUTS = ("flat", "dirs")
OBJECTS_PER_DIRECTORY = 1000  # the `dirs` layout: keys in "directories" of this many objects
JPEG_VARIANTS = 16  # distinct tiny JPEGs the N objects cycle through
MODEL_KEY = "scale/tiny-model.pt"
EXTRAPOLATE_TO = 100_000_000
RESULTS = Path(__file__).parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="10000,100000,1000000",
                        help="comma-separated object counts N (default 10000,100000,1000000)")
    parser.add_argument("--layout", choices=LAYOUTS, default="flat",
                        help=f"flat keys, or keys in {OBJECTS_PER_DIRECTORY}-object 'directories' (default flat)")
    parser.add_argument("--size", type=int, default=16, help="JPEG side in pixels (default 16)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {STAGES}")
    parser.add_argument("--batch-size", type=int, default=None, help="the job's --batch-size (default: the job's)")
    parser.add_argument("--rows-per-file", type=int, default=JobConfig.rows_per_file,
                        help=f"the job's --rows-per-file: rows per staged file (default the job's, "
                             f"{JobConfig.rows_per_file})")
    parser.add_argument("--upload-threads", type=int, default=64,
                        help="files `weed filer.copy` sends at once when uploading (default 64)")
    parser.add_argument("--timeout-s", type=float, default=4 * 3600,
                        help="limit for one stage at one N, in seconds (default 4 h)")
    parser.add_argument("--workdir", default="/tmp/batchinfer-bench-scale",
                        help="SeaweedFS data (objects are reused between runs) and Ray's temp dirs")
    parser.add_argument("--results", default=str(RESULTS), help="folder for the JSON (default bench/results)")
    parser.add_argument("--label", default="", help="suffix for the JSON file name")
    args = parser.parse_args(argv)
    try:
        args.counts = [int(count) for count in args.counts.split(",") if count.strip()]
    except ValueError:
        parser.error(f"--counts must be comma-separated integers, e.g. 10000,100000 (got {args.counts!r})")
    args.stages = [stage.strip() for stage in args.stages.split(",") if stage.strip()]
    unknown = set(args.stages) - set(STAGES)
    if unknown or not args.stages:
        parser.error(f"--stages must be a non-empty subset of {STAGES} (got {sorted(unknown) or 'none'})")
    if not args.counts or min(args.counts) < 1 or args.size < 1 or args.rows_per_file < 1 \
            or args.upload_threads < 1 or (args.batch_size is not None and args.batch_size < 1):
        parser.error("--counts, --size, --rows-per-file, --upload-threads and --batch-size must be ≥ 1")
    return args


def tiny_jpegs(size: int) -> list[bytes]:
    """JPEG_VARIANTS distinct size×size JPEGs (a colour gradient with a little noise)."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, size)
    images = []
    for index in range(JPEG_VARIANTS):
        base = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], np.full((size, size), 16.0 * index)), -1)
        pixels = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
        images.append(buffer.getvalue())
    return images


def object_key(prefix: str, layout: str, index: int) -> str:
    if layout == "dirs":
        return f"{prefix}d{index // OBJECTS_PER_DIRECTORY:06d}/img-{index:09d}.jpg"
    return f"{prefix}img-{index:09d}.jpg"


def listed_keys(client, prefix: str) -> set[str]:
    """Every key under `prefix` in the bench bucket."""
    return {obj["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
            for obj in page.get("Contents", [])}


def ensure_objects(server: SeaweedServer, client, count: int, layout: str, size: int, threads: int) -> dict:
    """N tiny JPEGs under s3://bench/scale/<layout>/<size>px/n<N>/, uploaded unless a marker says a
    previous run finished them (an unfinished upload is completed: only missing keys are sent).

    The missing objects are hard links to the few distinct JPEGs in a local folder that `weed filer.copy`
    sends through the filer (1,000,000 objects in under 6 minutes on 2 cores, against an hour of
    boto3 PUTs); a listing then checks that every key arrived before the marker is written."""
    parent = f"scale/{layout}/{size}px/"
    prefix = f"{parent}n{count}/"
    marker = f"scale/_ready/{layout}-{size}px-n{count}.json"
    payloads = tiny_jpegs(size)
    cycles, rest = divmod(count, JPEG_VARIANTS)
    mean_bytes = round((cycles * sum(map(len, payloads)) + sum(map(len, payloads[:rest]))) / count)
    clock = time.monotonic()
    try:
        client.head_object(Bucket=BUCKET, Key=marker)
        uploaded = 0
    except client.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] not in ("404", "NoSuchKey", "NotFound"):
            raise
        present = listed_keys(client, prefix)
        missing = [index for index in range(count) if object_key(prefix, layout, index) not in present]
        with tempfile.TemporaryDirectory(dir=server.workdir) as local:
            variants = []
            for number, payload in enumerate(payloads):
                variants.append(Path(local) / f"variant-{number}.jpg")
                variants[-1].write_bytes(payload)
            folder = Path(local) / f"n{count}"
            for index in missing:
                path = folder / object_key("", layout, index)
                path.parent.mkdir(parents=True, exist_ok=True)
                os.link(variants[index % JPEG_VARIANTS], path)
            if missing:
                server.copy_tree(folder, BUCKET, parent, concurrency=threads)
        still_missing = count - len(listed_keys(client, prefix))
        if still_missing:
            raise RuntimeError(f"{still_missing} of {count} objects under s3://{BUCKET}/{prefix} are missing "
                               "after the upload; run again to send them")
        client.put_object(Bucket=BUCKET, Key=marker, Body=json.dumps({"count": count}).encode())
        uploaded = len(missing)
    return {"uri": f"s3://{BUCKET}/{prefix}", "count": count, "layout": layout, "size_px": size,
            "mean_bytes": mean_bytes, "uploaded": uploaded, "upload_s": round(time.monotonic() - clock, 2)}


class TinyModel(torch.nn.Module):
    """A trivial classifier (conv 3→4, stride 8; global average pool; linear 4→10): costs next to nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, kernel_size=3, stride=8)
        self.head = torch.nn.Linear(4, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(images)).mean(dim=(2, 3)))


def upload_model(client) -> str:
    """TinyModel traced to TorchScript, in S3 (the job loads it as `--model s3://…/tiny-model.pt`)."""
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.trace(TinyModel().eval(), torch.zeros(1, 3, 224, 224)), buffer)
    client.put_object(Bucket=BUCKET, Key=MODEL_KEY, Body=buffer.getvalue())
    return f"s3://{BUCKET}/{MODEL_KEY}"


def _driver_figures(sampler: ProcessSampler, watch: DriverRssWatch, phases: dict[str, tuple[float, float]],
                    images: int, wall_s: float, high_water_mib: float) -> dict:
    """The driver's figures over the stage: `high_water_mib` read when the stage returned, before
    ray.shutdown(), whose own memory the stage does not include (it is recorded apart); where and in
    which of `phases` its peak was (`DriverRssWatch`)."""
    peak = sampler.peak()
    fine = watch.peaks(phases)
    driver_cpu_s = max(0.0, peak["driver_cpu_s"] - watch.cpu_s)
    # The kernel's high-water mark, or a sample above it (per-thread RSS counters reach it late).
    return {"whole_run_s": round(wall_s, 3), "whole_run_images_per_s": round(images / wall_s, 2),
            "driver_peak_rss_mib": round(max(high_water_mib, peak["driver_peak_rss_mib"],
                                             fine.get("driver_peak_rss_mib_fine", 0.0)), 1),
            "driver_peak_rss_mib_sampled": peak["driver_peak_rss_mib"], **fine,
            "driver_peak_rss_mib_by_tenth": peak["driver_peak_rss_mib_by_tenth"], "driver_cpu_s": round(driver_cpu_s, 2),
            "tree_cpu_s": peak["cpu_s"], "driver_cpu_s_per_1k": round(1000 * driver_cpu_s / images, 3),
            "tree_cpu_s_per_1k": round(1000 * peak["cpu_s"] / images, 3),
            # the CPU profile: CPU-ms per image by what each process was doing (bench.measure._stage)
            "tree_cpu_ms_per_image_by_process": {stage: round(1000 * cpu / images, 4)
                                                 for stage, cpu in peak["cpu_s_by_process"].items()},
            "tree_peak_rss_mib": peak["peak_rss_mib"], "tree_peak_pss_mib": peak["peak_pss_mib"],
            "processes": peak["processes"]}


def start_ray(attempts: int = 3) -> float:
    """Start the local Ray the job itself would start (its own connect_ray, which a running Ray then
    satisfies), before the clock: Ray's start-up is the same at every N, and under heavy load its fixed
    30 s wait for the raylet can run out, so a failed start is retried. Returns the seconds it took."""
    clock = time.monotonic()
    for attempt in range(1, attempts):
        try:
            connect_ray()
            break
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception when its node start times out
            ray.shutdown()
            print(f"Ray did not start ({exc}); attempt {attempt + 1} of {attempts}", flush=True)
    else:
        connect_ray()
    return round(time.monotonic() - clock, 3)


def measure_job(input_uri: str, output_uri: str, model_uri: str, count: int, batch_size: int | None,
                rows_per_file: int) -> dict:
    """The real job, in this (fresh) process as its driver."""
    s3 = S3Options.from_env()
    config = JobConfig(input_uri=input_uri, output_uri=output_uri, model=model_uri, batch_size=batch_size,
                       rows_per_file=rows_per_file, overwrite=True, s3=s3)
    output = Output(resolve(output_uri, s3), s3)
    ray_start_s = start_ray()
    load_start, rss_before = os.getloadavg(), status_mib("VmRSS")
    watcher = OutputWatcher(output.fs, output.staging_root, first_only=True)  # stops at the first file
    with ProcessSampler() as sampler, watcher, DriverRssWatch() as rss_watch:
        start = time.monotonic()
        summary = run_job(config).summary
        end = time.monotonic()
    high_water_mib = rss_watch.lifetime_peak_mib()
    ray.shutdown()
    timed = "startup_s" in summary and "pipeline_s" in summary  # the job's own split, where it gives one
    pipeline_end = start + summary["startup_s"] + summary["pipeline_s"] if timed else end
    phases = {"startup": (0.0, summary["startup_s"]), "pipeline": (summary["startup_s"], pipeline_end - start),
              "commit_and_report": (pipeline_end - start, end - start + 1)} if timed else {}
    # A poll that lists the first file after the pipeline ended saw a file written before that end.
    first = (watcher.batches() or [None])[0]  # (when the first staged file was seen, its rows)
    seen_at, first_rows = first or (pipeline_end, summary.get("rows"))
    return {"images": count, "rows_committed": summary.get("rows"), "errors": summary.get("errors"),
            "first_output_s": round(min(seen_at, pipeline_end) - start, 3), "first_output_rows": first_rows,
            "first_output_seen_while_running": first is not None and first[0] <= pipeline_end,
            "job_startup_s": summary.get("startup_s"), "job_pipeline_s": summary.get("pipeline_s"),
            "job_images_per_s": summary.get("images_per_s"), "ray_start_s": ray_start_s,
            "driver_rss_before_mib": rss_before,
            **_driver_figures(sampler, rss_watch, phases, count, end - start, high_water_mib),
            "driver_high_water_after_shutdown_mib": rss_watch.lifetime_peak_mib(),
            "load_avg_1_5_15_at_start": [round(x, 2) for x in load_start],
            "load_avg_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()]}


def measure_read_images(input_uri: str, count: int) -> dict:
    """The anchor: ray.data.read_images over the same objects, iterated to the end in the driver."""
    filesystem = resolve(input_uri, S3Options.from_env()).filesystem
    ray_start_s = start_ray()
    load_start, rss_before = os.getloadavg(), status_mib("VmRSS")
    first_s, rows = None, 0
    with ProcessSampler() as sampler, DriverRssWatch() as rss_watch:
        start = time.monotonic()
        dataset = ray.data.read_images(input_uri, filesystem=filesystem, mode="RGB")
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            first_s = first_s if first_s is not None else time.monotonic() - start
            rows += len(batch["image"])
        end = time.monotonic()
    high_water_mib = rss_watch.lifetime_peak_mib()
    ray.shutdown()
    return {"images": count, "rows_read": rows, "first_row_s": round(first_s, 3) if first_s is not None else None,
            "ray_start_s": ray_start_s, "driver_rss_before_mib": rss_before,
            **_driver_figures(sampler, rss_watch, {"read": (0.0, end - start + 1)}, count, end - start,
                              high_water_mib),
            "driver_high_water_after_shutdown_mib": rss_watch.lifetime_peak_mib(),
            "load_avg_1_5_15_at_start": [round(x, 2) for x in load_start],
            "load_avg_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()]}


def measure_main(argv: list[str]) -> int:
    """`python -m bench.scale measure STAGE …`: one stage at one N, in this process; writes JSON to --json."""
    parser = argparse.ArgumentParser(prog="python -m bench.scale measure")
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--rows-per-file", type=int, required=True)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.stage == "job":
        result = measure_job(args.input, args.output, args.model, args.count, args.batch_size, args.rows_per_file)
    else:
        result = measure_read_images(args.input, args.count)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def run_stage(stage: str, args: argparse.Namespace, server: SeaweedServer, dataset: dict, model_uri: str,
              output_uri: str) -> dict:
    """One stage at one N in a fresh Python process (the driver) with its own local Ray."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="bi-scale-", dir="/tmp"))  # short: Ray socket paths < 108 bytes
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env.update(server.env(), RAY_TMPDIR=str(ray_tmp), RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    result_path = ray_tmp / "result.json"
    command = [sys.executable, "-m", "bench.scale", "measure", stage, "--input", dataset["uri"],
               "--output", output_uri, "--model", model_uri, "--count", str(dataset["count"]),
               "--rows-per-file", str(args.rows_per_file), "--json", str(result_path),
               *(["--batch-size", str(args.batch_size)] if args.batch_size else [])]
    try:
        done = subprocess.run(command, env=env, cwd=Path(__file__).parent.parent, timeout=args.timeout_s)
        if done.returncode != 0:
            raise RuntimeError(f"stage {stage} at N={dataset['count']} failed (exit {done.returncode})")
        return json.loads(result_path.read_text())
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 3) if numerator and denominator else None


def run_ratios(run: dict) -> dict:
    """job / read_images at one N."""
    job, anchor = run.get("job"), run.get("read_images")
    if not (job and anchor):
        return {}
    return {"first_row_job_over_read_images": _ratio(job["first_output_s"], anchor["first_row_s"]),
            "driver_peak_rss_job_over_read_images": _ratio(job["driver_peak_rss_mib"], anchor["driver_peak_rss_mib"]),
            "images_per_s_job_over_read_images": _ratio(job["whole_run_images_per_s"],
                                                        anchor["whole_run_images_per_s"])}


def _bytes_per_object(a: tuple[int, float], b: tuple[int, float]) -> float:
    """Slope between two (N, MiB) points, in bytes per object."""
    return round((b[1] - a[1]) * 2**20 / (b[0] - a[0]), 1)


def slopes(runs: list[dict], stage: str) -> dict:
    """Driver peak RSS per object between successive N and from the smallest to the largest N, and the
    driver at 100 M objects if it kept growing at the latter rate."""
    points = sorted((run["count"], run[stage]["driver_peak_rss_mib"]) for run in runs if stage in run)
    if len(points) < 2:
        return {}
    overall = _bytes_per_object(points[0], points[-1])
    last_count, last_mib = points[-1]
    return {"rss_bytes_per_object_by_step": [{"from": a[0], "to": b[0], "bytes_per_object": _bytes_per_object(a, b)}
                                             for a, b in zip(points, points[1:])],
            "rss_bytes_per_object": overall,
            "driver_rss_growth_mib": round(last_mib - points[0][1], 1),
            "extrapolated_driver_rss_gib_at_100m": round(
                (last_mib * 2**20 + max(0.0, overall) * (EXTRAPOLATE_TO - last_count)) / 2**30, 2)}


def targets(runs: list[dict]) -> dict:
    """Issue #16's targets, as measured (not asserted): driver RSS growth smallest → largest N, time to
    first output row largest / smallest N, whole-run images/s largest / second-largest N."""
    jobs = sorted(((run["count"], run["job"]) for run in runs if "job" in run), key=lambda item: item[0])
    if len(jobs) < 2:
        return {}
    (small, first), (large, last) = jobs[0], jobs[-1]
    return {"from_n": small, "to_n": large,
            "driver_rss_growth_mib": round(last["driver_peak_rss_mib"] - first["driver_peak_rss_mib"], 1),
            "first_output_largest_over_smallest": _ratio(last["first_output_s"], first["first_output_s"]),
            "images_per_s_largest_over_previous": _ratio(last["whole_run_images_per_s"],
                                                         jobs[-2][1]["whole_run_images_per_s"])}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["measure"]:
        return measure_main(argv[1:])
    args = parse_args(argv)
    run_id = datetime.now().strftime("%Y%m%d-%H%M%S")
    results: dict = {"stage": "scale", "command": shlex.join(["python", "-m", "bench.scale", *argv]),
                     "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
                     "settings": {"counts": args.counts, "layout": args.layout, "size_px": args.size,
                                  "stages": args.stages, "batch_size": args.batch_size,
                                  "rows_per_file": args.rows_per_file,
                                  "model": "TorchScript: conv 3→4 stride 8, mean pool, linear 4→10"},
                     "runs": []}
    counts = "_".join(str(count) for count in args.counts)
    path = Path(args.results) / f"{run_id}-scale-{args.layout}-n{counts}{'-' + args.label if args.label else ''}.json"
    server = SeaweedServer(workdir=Path(args.workdir) / "seaweedfs")
    try:
        server.start()
        client = server.client()
        if BUCKET not in {bucket["Name"] for bucket in client.list_buckets()["Buckets"]}:
            client.create_bucket(Bucket=BUCKET)
        model_uri = upload_model(client)
        for count in args.counts:
            dataset = ensure_objects(server, client, count, args.layout, args.size, args.upload_threads)
            print(f"N={count}: {dataset['uri']} ready ({dataset['uploaded']} uploaded in {dataset['upload_s']} s)",
                  flush=True)
            run: dict = {"count": count, "dataset": dataset}
            for stage in args.stages:
                output_uri = f"s3://{BUCKET}/scale-runs/{run_id}/n{count}/predictions/"
                clock = time.monotonic()
                run[stage] = run_stage(stage, args, server, dataset, model_uri, output_uri)
                run[stage]["stage_wall_s"] = round(time.monotonic() - clock, 1)  # incl. process start-up
                print(f"N={count} {stage}: {json.dumps(run[stage])}", flush=True)
            run["ratios"] = run_ratios(run)
            results["runs"].append(run)
            write_results(results, path)  # after every N: a run stopped later keeps the finished N
        s3 = S3Options(endpoint=server.endpoint, region="us-east-1", access_key=server.access_key,
                       secret_key=server.secret_key)
        runs_root = resolve(f"s3://{BUCKET}/scale-runs/{run_id}", s3)
        runs_root.filesystem.delete_dir_contents(runs_root.path, missing_dir_ok=True)
    finally:
        server.stop()

    write_results(results, path)
    print(scale_stage_table(results))
    print(f"wrote {path}")
    return 0


def write_results(results: dict, path: Path) -> None:
    """The JSON with the derived figures of the N measured so far."""
    stages = results["settings"]["stages"]
    results["slopes"] = {stage: slopes(results["runs"], stage) for stage in stages}
    results["targets"] = targets(results["runs"])
    results["machine"]["load_avg_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
