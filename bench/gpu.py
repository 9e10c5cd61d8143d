"""GPU stages of the job, measured without Ray, with the code the actors run.

    python -m bench.gpu --device cuda --json gpu.json       # on a GPU machine (see docs/gpu.md)
    python -m bench.gpu --device cpu --images 64 --models resnet50 --batch-sizes 32

Measures, on synthetic 500x375 JPEGs made from real photos:
- model ceiling: `Predictor._top_k` on crops already on the device (normalize, forward, softmax, top-k),
  per model, precision, eager/compiled and batch size; peak device memory on CUDA;
- host->device copy of uint8 crops (pinned, non-blocking), as `Predictor.to_device` does it;
- decode: the CPU stage (`Preprocessor.preprocess`, PIL) per core, the CPU stage's work with GPU decode on
  (`jpeg_orientation`, header only) per core, and `DeviceDecoder` (decode_jpeg batched on the device);
- actor loop: `Predictor.__call__` on batches exactly as the decode stage hands them over, with GPU decode
  on and off; its ratio to the ceiling, and the CPU cores per actor the decode stage then needs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.fs as pafs
import torch

from batchinfer.gpu_decode import DeviceDecoder
from batchinfer.models import ModelRequest, load_model
from batchinfer.predictor import (CPU_BATCH_SIZE, CUDA_ACTOR_BATCH, InferenceSettings, Predictor,
                                  default_batch_size, resolve_precision)
from batchinfer.preprocess import Preprocessor, jpeg_orientation
from bench.photos import make_photo, source_photos

def synthetic_jpegs(count: int, size: tuple[int, int], quality: int = 90) -> list[bytes]:
    """`count` JPEGs of `size`, made as the main harness makes them (bench.photos)."""
    photos = source_photos()
    return [make_photo(photos, index, size, quality) for index in range(count)]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(work: Callable[[], object], items: int, device: torch.device, repeats: int,
         warmup: int = 1) -> float:
    """Items per second of `work()` (which handles `items`), after `warmup` untimed calls."""
    for _ in range(warmup):
        work()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    synchronize(device)
    return round(items * repeats / (time.perf_counter() - start), 2)


def per_core_rate(work: Callable[[bytes], object], payloads: list[bytes]) -> float:
    """Images per second of one thread's CPU time (one core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.thread_time()
    for data in payloads:
        work(data)
    elapsed = time.thread_time() - start
    torch.set_num_threads(threads)
    return round(len(payloads) / elapsed, 2)


def measure_ceiling(args: argparse.Namespace, device: torch.device) -> list[dict]:
    rows = []
    for model in args.models:
        for precision in args.precisions:
            for compiled in ([False, True] if args.compile else [False]):
                for batch_size in args.batch_sizes:
                    settings = InferenceSettings(device=device.type, precision=precision, compile=compiled,
                                                 batch_size=batch_size, threads=args.threads)
                    predictor = Predictor(ModelRequest(model, weights="none"), settings)
                    images = torch.randint(0, 256, (batch_size, 3, 224, 224), dtype=torch.uint8,
                                           device=device)
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    with torch.inference_mode():
                        images_per_s = rate(lambda: predictor._top_k(images), batch_size, device,
                                            repeats=args.repeats, warmup=3 if compiled else 1)
                    rows.append({"model": model, "precision": resolve_precision(precision, device),
                                 "compiled": compiled, "batch_size": batch_size, "images_per_s": images_per_s,
                                 "peak_device_mib": round(torch.cuda.max_memory_allocated(device) / 2**20)
                                 if device.type == "cuda" else None})
                    print(f"ceiling {rows[-1]}", flush=True)
    return rows


def measure_copy(predictor: Predictor, batch_size: int, device: torch.device, repeats: int) -> dict:
    crops = np.random.default_rng(0).integers(0, 256, (batch_size, 224, 224, 3), dtype=np.uint8)
    images_per_s = rate(lambda: predictor.to_device(crops), batch_size, device, repeats)
    return {"batch_size": batch_size, "images_per_s": images_per_s,
            "gb_per_s": round(images_per_s * crops[0].nbytes / 1e9, 3)}


def measure_decode(payloads: list[bytes], transform, device: torch.device, batch_size: int,
                   repeats: int) -> dict:
    stage = Preprocessor(pafs.LocalFileSystem(), transform, "")
    decoder = DeviceDecoder(transform, device)
    batch = payloads[:batch_size]
    orientations = [jpeg_orientation(data) for data in batch]
    return {
        "cpu_stage_pil_per_core": per_core_rate(stage.preprocess, payloads),
        "cpu_stage_header_only_per_core": per_core_rate(jpeg_orientation, payloads),
        "device_decode_resize_crop": rate(lambda: decoder(batch, orientations), len(batch), device, repeats),
        "device": device.type, "decode_batch": len(batch),
        "mean_jpeg_bytes": int(sum(map(len, payloads)) / len(payloads)),
    }


def measure_actor(args: argparse.Namespace, model: str, files: list[str], device: torch.device) -> dict:
    """`Predictor.__call__` on the decode stage's own batches (made beforehand: in the job, other
    processes make them), GPU decode on and off; `actor_batch` images per call as build_dataset sets."""
    request = ModelRequest(model, weights="none")
    settings = InferenceSettings(device=device.type, precision="auto", compile=args.compile_actor,
                                 threads=args.threads)
    predictor = Predictor(request, settings)
    stage = Preprocessor(pafs.LocalFileSystem(), load_model(request).transform, "")
    calls = [np.array(files[start:start + args.actor_batch], dtype=object)
             for start in range(0, len(files), args.actor_batch)]
    result = {"model": model, "precision": resolve_precision("auto", device), "images": len(files),
              "forward_batch": predictor.batch_size, "actor_batch": args.actor_batch}
    for mode, decode_stage in (("gpu_decode_off", stage), ("gpu_decode_on", stage.passing_jpegs())):
        batches = [decode_stage({"path": paths}) for paths in calls]
        predictor(batches[0])  # warm-up
        synchronize(device)
        start = time.perf_counter()
        for batch in batches:
            table = predictor(batch)
            assert table.column("error").null_count == table.num_rows, "synthetic JPEGs must all decode"
        result[f"{mode}_images_per_s"] = round(len(files) / (time.perf_counter() - start), 2)
        print(f"actor {model} {mode}: {result[f'{mode}_images_per_s']} images/s", flush=True)
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=None,
                        help="synthetic JPEGs (default 4096 on CUDA, 64 on CPU)")
    parser.add_argument("--size", default="500x375", help="JPEG width x height")
    parser.add_argument("--models", type=lambda text: text.split(","), default=["resnet50", "resnet152"])
    parser.add_argument("--precisions", type=lambda text: text.split(","), default=None,
                        help="default fp32,bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--batch-sizes", type=lambda text: [int(x) for x in text.split(",")], default=None,
                        help="ceiling batch sizes (default 64,128,256,512 on CUDA, 32 on CPU)")
    parser.add_argument("--compile", action="store_true", help="add torch.compile variants to the ceiling")
    parser.add_argument("--compile-actor", action="store_true", help="torch.compile in the actor loop")
    parser.add_argument("--actor-batch", type=int, default=None,
                        help="images per actor call (default: as the job: 2048 on CUDA, 32 on CPU)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 20 CUDA, 2 CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.images = args.images or (4096 if cuda else 64)
    args.precisions = args.precisions or (["fp32", "bf16"] if cuda else ["fp32"])
    args.batch_sizes = args.batch_sizes or ([64, 128, 256, 512] if cuda else [32])
    args.actor_batch = args.actor_batch or (CUDA_ACTOR_BATCH if cuda else CPU_BATCH_SIZE)
    args.repeats = args.repeats or (20 if cuda else 2)
    return args


def machine(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor(),
            "cpu_cores": os.cpu_count(), "device": str(device)}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info |= {"gpu": properties.name, "gpu_memory_gib": round(properties.total_memory / 2**30, 1),
                 "default_batch_size": default_batch_size(device)}
    return info


def table(results: dict) -> str:
    lines = ["model-only ceiling (images/s, input on the device)",
             f"{'model':<12}{'precision':<10}{'compiled':<10}{'batch':>6}{'images/s':>12}{'peak MiB':>10}"]
    lines += [f"{r['model']:<12}{r['precision']:<10}{str(r['compiled']):<10}{r['batch_size']:>6}"
              f"{r['images_per_s']:>12}{str(r['peak_device_mib']):>10}" for r in results["ceiling"]]
    decode = results["decode"]
    lines += ["", "decode+resize+crop, images/s: "
              f"CPU stage (PIL) per core {decode['cpu_stage_pil_per_core']}, "
              f"CPU stage header-only (GPU decode on) per core {decode['cpu_stage_header_only_per_core']}, "
              f"DeviceDecoder on {decode['device']} {decode['device_decode_resize_crop']}"]
    if "copy" in results:
        lines.append(f"host->device copy of uint8 crops: {results['copy']['images_per_s']} images/s "
                     f"({results['copy']['gb_per_s']} GB/s)")
    lines += ["", f"{'actor loop':<12}{'decode off':>12}{'decode on':>12}{'ceiling':>10}{'on/ceil':>9}"
              f"{'cores/actor off':>17}{'on':>6}"]
    for row in results["actor"]:
        lines.append(f"{row['model']:<12}{row['gpu_decode_off_images_per_s']:>12}"
                     f"{row['gpu_decode_on_images_per_s']:>12}{row['ceiling_images_per_s']:>10}"
                     f"{row['on_vs_ceiling']:>9}"
                     f"{row['decode_cores_needed_off']:>17}{row['decode_cores_needed_on']:>6}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    width, height = (int(x) for x in args.size.split("x"))
    payloads = synthetic_jpegs(args.images, (width, height))
    results: dict = {"machine": machine(device), "args": {k: str(v) for k, v in vars(args).items()},
                     "ceiling": measure_ceiling(args, device)}
    transform = load_model(ModelRequest(args.models[0], weights="none")).transform
    results["decode"] = measure_decode(payloads, transform, device, args.actor_batch, args.repeats)
    if device.type == "cuda":
        copier = Predictor(ModelRequest(args.models[0], weights="none"), InferenceSettings(device="cuda"))
        results["copy"] = measure_copy(copier, max(args.batch_sizes), device, args.repeats)
    with tempfile.TemporaryDirectory() as folder:
        files = []
        for index, data in enumerate(payloads):
            files.append(f"{folder}/{index:06d}.jpg")
            Path(files[-1]).write_bytes(data)
        results["actor"] = [measure_actor(args, model, files, device) for model in args.models]
    auto = resolve_precision("auto", device)
    for row in results["actor"]:
        ceiling = max((r["images_per_s"] for r in results["ceiling"]
                       if r["model"] == row["model"] and r["precision"] == auto and not r["compiled"]),
                      default=None)
        row["ceiling_images_per_s"] = ceiling
        row["on_vs_ceiling"] = round(row["gpu_decode_on_images_per_s"] / ceiling, 3) if ceiling else None
        row["decode_cores_needed_off"] = round(row["gpu_decode_off_images_per_s"]
                                               / results["decode"]["cpu_stage_pil_per_core"], 2)
        row["decode_cores_needed_on"] = round(row["gpu_decode_on_images_per_s"]
                                              / results["decode"]["cpu_stage_header_only_per_core"], 2)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
