"""Benchmark batchinfer against the model-only ceiling and the naive Ray Data recipe, in one run.

    python -m bench.run [--count 400] [--size 500x375] [--model resnet50] [--batch-size 16]

Stages (all by default, pick with --stages): `decode` (decode+preprocess only, one core), `ceiling`
(the job's own Predictor.forward on ready uint8 crops, with the job's thread count), `e2e` (the real
job, run_job: S3 → Parquet on a fresh local Ray), `baseline` (bench/baseline.py on a fresh local Ray).
Prints a table and writes the numbers as JSON under bench/results/. Definitions are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import ray
import torch

from batchinfer.config import JobConfig, S3Options
from batchinfer.models import ModelRequest, load_model
from batchinfer.pipeline import connect_ray, inference_settings, plan_resources, run_job
from batchinfer.predictor import CPU_BATCH_SIZE, InferenceSettings, Predictor, resolve_precision
from batchinfer.preprocess import Preprocessor
from devkit.seaweed import SeaweedServer
from batchinfer.layout import Output
from batchinfer.storage import resolve

from bench.baseline import run_baseline
from bench.measure import ProcessSampler, OutputWatcher, spilled_mib
from bench.photos import BUCKET, ensure_photos, read_photos

STAGES = ("decode", "ceiling", "e2e", "baseline")
RESULTS = Path(__file__).parent / "results"
BASELINE_BATCH = 32  # the recipe's batch size (the model figures are at batch 32 too)
DECODE_SAMPLE = 200  # images decoded for the decode-only rate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=400, help="number of JPEGs (default 400)")
    parser.add_argument("--size", default="500x375", help="JPEG width x height (default 500x375, ~100 KB)")
    parser.add_argument("--model", default="resnet50", help="torchvision model name (default resnet50)")
    parser.add_argument("--batch-size", type=int, default=CPU_BATCH_SIZE,
                        help=f"inference batch size (default {CPU_BATCH_SIZE}, the job's CPU default)")
    parser.add_argument("--baseline-batch-size", type=int, default=BASELINE_BATCH,
                        help=f"the naive baseline's batch size (default {BASELINE_BATCH}, as the recipe has it)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {STAGES}")
    parser.add_argument("--workdir", default="/tmp/batchinfer-bench",
                        help="SeaweedFS data (images are reused between runs) and Ray's temp dir")
    parser.add_argument("--results", default=str(RESULTS), help="folder for the JSON (default bench/results)")
    parser.add_argument("--label", default="", help="suffix for the JSON file name")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="the job's --num-workers: a fixed pool of N inference actors (default: the job's)")
    parser.add_argument("--num-cpus-per-worker", type=float, default=None,
                        help="the job's --num-cpus-per-worker (torch threads = its ceiling; default: the job's)")
    args = parser.parse_args(argv)
    args.stages = [stage.strip() for stage in args.stages.split(",") if stage.strip()]
    unknown = set(args.stages) - set(STAGES)
    if unknown or args.count < 1 or min(args.batch_size, args.baseline_batch_size) < 1:
        parser.error(f"bad --stages {sorted(unknown)}" if unknown else "--count and the batch sizes must be ≥ 1")
    width, _, height = args.size.partition("x")
    args.size = (int(width), int(height))
    return args


def machine() -> dict:
    """Where the numbers come from."""
    with open("/proc/meminfo") as meminfo:
        total_kib = int(meminfo.readline().split()[1])
    model_name = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                       if line.startswith("model name")), platform.processor())
    return {"cpu": model_name, "cores": os.cpu_count(), "memory_gib": round(total_kib / 2**20, 1),
            "load_avg_1_5_15_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
            "os": platform.platform()}


def job_config(args: argparse.Namespace, s3: S3Options, input_uri: str, output_uri: str) -> JobConfig:
    """The job exactly as `batchinfer run --model M --weights none --batch-size B` runs it; one output file
    per inference batch, so the harness can see when each batch lands."""
    return JobConfig(input_uri=input_uri, output_uri=output_uri, model=args.model, weights="none",
                     batch_size=args.batch_size, rows_per_file=args.batch_size, overwrite=True, s3=s3,
                     num_workers=(args.num_workers,) * 2 if args.num_workers else None,
                     num_cpus_per_worker=args.num_cpus_per_worker)


def fresh_ray(ray_tmp: Path) -> None:
    """Point the job's own local-Ray start-up at a private temp dir (never the test clusters)."""
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.update(RAY_TMPDIR=str(ray_tmp), RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")


def actor_settings(config: JobConfig) -> tuple[InferenceSettings, int]:
    """What the job gives each inference actor (as build_dataset builds them) and how many actors, from
    plan_resources on a fresh local Ray, as run_job does."""
    connect_ray()
    try:
        resources = plan_resources(config)
    finally:
        ray.shutdown()
    return inference_settings(config, resources), resources.actors


def measure_decode(preprocessor: Preprocessor, payloads: list[bytes]) -> tuple[dict, np.ndarray]:
    """Decode + resize + crop on one thread; rate per core from this thread's CPU time."""
    torch.set_num_threads(1)
    with ProcessSampler() as memory:
        wall, cpu = time.perf_counter(), time.thread_time()
        crops = np.stack([preprocessor.preprocess(data) for data in payloads])
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    return {"images": len(payloads), "images_per_s_per_core": round(len(payloads) / cpu, 2),
            "images_per_s_wall": round(len(payloads) / wall, 2), "cpu_s": round(cpu, 3),
            "mean_jpeg_bytes": int(sum(map(len, payloads)) / len(payloads)), **memory.peak()}, crops


def measure_ceiling(request: ModelRequest, settings: InferenceSettings, crops: np.ndarray, batch_size: int,
                    images: int, actors: int = 1) -> dict:
    """The job's own Predictor.forward on ready uint8 batches (normalize, forward, softmax, top-k); and,
    to show what folding BatchNorm gives, the same with the eager model as built. Both are built and
    warmed up first, then timed in turns (half the batches each turn) so drift hits both alike. With a
    pool of `actors`, the ceiling is `actors` times one actor's rate (an upper bound: one actor timed
    alone, with the machine to itself)."""
    batches = max(2, math.ceil(images / batch_size))
    ready = [np.ascontiguousarray(np.resize(crops, (batch_size, *crops.shape[1:]))) for _ in range(batches)]
    with ProcessSampler() as memory:
        predictors = {"job": Predictor(request, settings), "eager": Predictor(request, replace(settings, fuse=False))}
        seconds = dict.fromkeys(predictors, 0.0)
        for predictor in predictors.values():
            predictor.forward(ready[0])  # warm-up: first-call allocations, oneDNN primitives
        for turn in (ready[:batches // 2], ready[batches // 2:]):
            for name, predictor in predictors.items():
                start = time.perf_counter()
                for batch in turn:
                    predictor.forward(batch)
                seconds[name] += time.perf_counter() - start
    counted = batches * batch_size
    return {"images": counted, "batch_size": batch_size, "threads": torch.get_num_threads(), "actors": actors,
            "device": settings.device, "memory_format": "channels_last", "conv_bn_folded": settings.fuse,
            "precision": resolve_precision(settings.precision, torch.device(settings.device)),
            "seconds": round(seconds["job"], 3), "images_per_s_per_actor": round(counted / seconds["job"], 2),
            "images_per_s": round(actors * counted / seconds["job"], 2),
            "unfolded_images_per_s": round(actors * counted / seconds["eager"], 2), **memory.peak()}


def timed_run(run, count: int, watch_uri: str, s3: S3Options) -> dict:
    """Run `run()` (which returns the moment its pipeline ended, or None for "now") while watching its
    output; whole-run and steady-state rates. Steady state: images after the first output batch, over
    the time from that batch landing to the end of the pipeline."""
    watched = resolve(watch_uri, s3)
    with ProcessSampler() as memory, OutputWatcher(watched.filesystem, watched.path) as watcher:
        start = time.monotonic()
        result, pipeline_end = run(start)
        end = time.monotonic()
        spilled = spilled_mib()
        ray.shutdown()
    pipeline_end = pipeline_end or end
    batches = [(seen, rows) for seen, rows in watcher.batches() if seen <= pipeline_end + 0.5]
    first_seen, first_rows = batches[0] if batches else (pipeline_end, count)
    first_seen = min(first_seen, pipeline_end)  # seen by a poll after the end: it landed before the end
    steady_s = pipeline_end - first_seen
    middle = middle_half_rate(batches, count)
    return {"images": count, "whole_run_s": round(end - start, 3),
            "whole_run_images_per_s": round(count / (end - start), 2),
            "first_output_s": round(first_seen - start, 3), "first_output_rows": first_rows,
            "output_batches_seen": len(batches),
            "steady_images_per_s": round((count - first_rows) / steady_s, 2) if steady_s > 0 else None,
            "middle_half_images_per_s": middle,
            "object_store_spilled_mib": spilled, **result, **memory.peak()}


def middle_half_rate(batches: list[tuple[float, int]], count: int) -> float | None:
    """The marginal rate: images per second between the moments the output reached a quarter and three
    quarters of `count` rows (output files as seen, in order: (seconds, rows)); None when fewer than two
    files fall apart. Unlike the steady state it is not lifted by a late first file and a burst after it."""
    seen, total = [], 0
    for moment, rows in batches:
        total += rows
        seen.append((moment, total))
    quarter = next(((moment, rows) for moment, rows in seen if rows >= count / 4), None)
    three_quarters = next(((moment, rows) for moment, rows in seen if rows >= 3 * count / 4), None)
    if quarter is None or three_quarters is None or three_quarters[0] <= quarter[0]:
        return None
    return round((three_quarters[1] - quarter[1]) / (three_quarters[0] - quarter[0]), 2)


def measure_e2e(config: JobConfig, count: int) -> dict:
    """The real job (run_job) from S3 to committed Parquet, starting its own local Ray."""
    def run(start: float) -> tuple[dict, float]:
        summary = run_job(config).summary or {}
        if summary.get("rows") != count or summary.get("errors"):
            raise RuntimeError(f"the job did not classify every image: {summary}")
        keep = ("startup_s", "pipeline_s", "images_per_s", "rows", "errors", "inference_actors")
        return ({"job_" + key: summary.get(key) for key in keep},
                start + summary["startup_s"] + summary["pipeline_s"])

    output = Output(resolve(config.output_uri, config.s3), config.s3)
    return timed_run(run, count, output.location.uri(output.staging_root), config.s3)


def measure_baseline(args: argparse.Namespace, s3: S3Options, input_uri: str, output_uri: str) -> dict:
    """The naive recipe on a fresh local Ray; Ray start-up timed apart."""
    filesystem = resolve(input_uri, s3).filesystem

    def run(start: float) -> tuple[dict, None]:
        connect_ray()
        ray_start_s = time.monotonic() - start
        run_baseline(input_uri, output_uri, filesystem, args.model, args.baseline_batch_size)
        pipeline_s = time.monotonic() - start - ray_start_s
        return {"ray_start_s": round(ray_start_s, 3), "pipeline_s": round(pipeline_s, 3),
                "pipeline_images_per_s": round(args.count / pipeline_s, 2)}, None

    return timed_run(run, args.count, output_uri, s3)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 3) if numerator and denominator else None


def stage_sum_limit(cores: int, ceiling: float, decode_per_core: float) -> float:
    """What the model and the decode allow together on `cores` cores, each measured alone: every image
    costs cores / ceiling core-seconds of model and 1 / decode_per_core of decode (issue #33)."""
    return cores / (cores / ceiling + 1 / decode_per_core)


def ratios(results: dict) -> dict:
    """The targets: steady e2e / ceiling (ResNet-50 ≥ 0.95), the middle-half (marginal) rate / stage-sum
    limit (a fast model ≥ 0.85; the steady state's too), e2e / naive baseline ≥ 2.5."""
    e2e, ceiling, baseline = results.get("e2e"), results.get("ceiling"), results.get("baseline")
    decode = results.get("decode")
    out = {}
    if e2e and ceiling:
        for kind, key in (("steady", "steady_images_per_s"), ("pipeline", "job_images_per_s"),
                          ("whole", "whole_run_images_per_s")):
            out[f"e2e_{kind}_over_ceiling"] = _ratio(e2e[key], ceiling["images_per_s"])
    if e2e and ceiling and decode:
        limit = stage_sum_limit(results["machine"]["cores"], ceiling["images_per_s"], decode["images_per_s_per_core"])
        out["stage_sum_limit_images_per_s"] = round(limit, 2)
        out["e2e_steady_over_stage_sum_limit"] = _ratio(e2e["steady_images_per_s"], limit)
        out["e2e_middle_half_over_stage_sum_limit"] = _ratio(e2e.get("middle_half_images_per_s"), limit)
    if e2e and baseline:
        for kind, key, base_key in (("steady", "steady_images_per_s", "steady_images_per_s"),
                                    ("pipeline", "job_images_per_s", "pipeline_images_per_s"),
                                    ("whole", "whole_run_images_per_s", "whole_run_images_per_s")):
            out[f"e2e_{kind}_over_baseline_{kind}"] = _ratio(e2e[key], baseline[base_key])
    return out


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def table(results: dict) -> str:
    """The human-readable summary."""
    rows = [("stage", "images/s", "notes", "peak PSS MiB")]
    if "decode" in results:
        d = results["decode"]
        rows.append(("decode+preprocess (1 core)", f"{d['images_per_s_per_core']:.1f}",
                     f"{d['images']} JPEGs, {d['mean_jpeg_bytes'] // 1000} KB avg", f"{d['peak_pss_mib']:.0f}"))
    if "ceiling" in results:
        c = results["ceiling"]
        pool = f", {c['actors']} actors × {c['images_per_s_per_actor']:.1f}" if c["actors"] > 1 else ""
        rows.append(("model-only ceiling", f"{c['images_per_s']:.1f}",
                     f"{c['precision']}, batch {c['batch_size']}, {c['threads']} threads{pool}",
                     f"{c['peak_pss_mib']:.0f}"))
        rows.append(("model-only, BatchNorm not folded", f"{c['unfolded_images_per_s']:.1f}", "reference", ""))
    for name in ("e2e", "baseline"):
        if name in results:
            r = results[name]
            label = "batchinfer" if name == "e2e" else "naive baseline"
            startup = r.get("job_startup_s", r.get("ray_start_s"))
            rows.append((f"{label} steady state", _rate(r["steady_images_per_s"]),
                         f"first output at {r['first_output_s']:.1f} s", f"{r['peak_pss_mib']:.0f}"))
            rows.append((f"{label} whole run", f"{r['whole_run_images_per_s']:.1f}",
                         f"{r['whole_run_s']:.1f} s incl. start-up {startup:.1f} s", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.extend(f"{key}: {value}" for key, value in results.get("ratios", {}).items())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict = {"command": shlex.join(["python", "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)]),
                     "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
                     "settings": {"count": args.count, "size": list(args.size), "model": args.model,
                                  "batch_size": args.batch_size, "baseline_batch_size": args.baseline_batch_size,
                                  "num_workers": args.num_workers, "num_cpus_per_worker": args.num_cpus_per_worker,
                                  "weights": "none", "stages": args.stages}}
    workdir = Path(args.workdir)
    ray_tmp = Path(tempfile.mkdtemp(prefix="bi-bench-", dir="/tmp"))  # short: Ray socket paths < 108 bytes
    saved_env = {key: os.environ.get(key) for key in ("RAY_ADDRESS", "RAY_TMPDIR", "RAY_USAGE_STATS_ENABLED",
                                                      "RAY_AUTH_MODE")}
    server = SeaweedServer(workdir=workdir / "seaweedfs")
    try:
        server.start()
        s3 = S3Options(endpoint=server.endpoint, region="us-east-1", access_key=server.access_key,
                       secret_key=server.secret_key)
        clock = time.monotonic()
        dataset = ensure_photos(server, args.count, args.size)
        results["dataset"] = dataset | {"prepare_s": round(time.monotonic() - clock, 2)}
        print(f"dataset {dataset['uri']}: {args.count} JPEGs, {dataset['mean_bytes'] // 1000} KB avg "
              f"({'generated' if dataset['generated'] else 'reused'})", flush=True)
        run_id = datetime.now().strftime("%Y%m%d-%H%M%S")
        output_root = f"s3://{BUCKET}/runs/{run_id}/"
        config = job_config(args, s3, dataset["uri"], output_root + "e2e/")
        request = ModelRequest(args.model, "none")
        fresh_ray(ray_tmp)

        crops = None
        if "decode" in args.stages or "ceiling" in args.stages:
            preprocessor = Preprocessor(resolve(dataset["uri"], s3).filesystem, load_model(request).transform,
                                        dataset["uri"])
            payloads = read_photos(server, dataset["prefix"], min(args.count, DECODE_SAMPLE))
            results["decode"], crops = measure_decode(preprocessor, payloads)
            print(f"decode: {results['decode']['images_per_s_per_core']} images/s/core", flush=True)
            if "decode" not in args.stages:
                del results["decode"]
        if "ceiling" in args.stages:
            settings, actors = actor_settings(config)
            results["ceiling"] = measure_ceiling(request, settings, crops, args.batch_size, min(args.count, 400),
                                                 actors)
            print(f"ceiling: {results['ceiling']['images_per_s']} images/s (BatchNorm not folded: "
                  f"{results['ceiling']['unfolded_images_per_s']})", flush=True)
        if "e2e" in args.stages:
            results["e2e"] = measure_e2e(config, args.count)
            print(f"e2e: steady {results['e2e']['steady_images_per_s']} images/s", flush=True)
        if "baseline" in args.stages:
            results["baseline"] = measure_baseline(args, s3, dataset["uri"], output_root + "baseline/")
            print(f"baseline: steady {results['baseline']['steady_images_per_s']} images/s", flush=True)
        outputs = resolve(output_root, s3)
        if outputs.filesystem.get_file_info(outputs.path).type != pafs.FileType.NotFound:
            outputs.filesystem.delete_dir(outputs.path)
    finally:
        ray.shutdown()
        server.stop()
        shutil.rmtree(ray_tmp, ignore_errors=True)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    results["ratios"] = ratios(results)
    results["machine"]["load_avg_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(table(results))
    folder = Path(args.results)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{run_id}-{args.model}-n{args.count}-{args.size[0]}x{args.size[1]}{'-' + args.label if args.label else ''}"
    path = folder / f"{name}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
