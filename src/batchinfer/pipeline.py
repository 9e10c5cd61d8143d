"""The job: list → decode/preprocess (CPU tasks) → predict (actor pool) → Parquet (staged, committed)."""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa
import ray

from batchinfer.config import JobConfig, UserError
from batchinfer.models import ModelRequest, load_model
from batchinfer.predictor import CPU_BATCH_SIZE, CUDA_ACTOR_BATCH, InferenceSettings, Predictor
from batchinfer.preprocess import Preprocessor
from batchinfer.sink import Output, check_output, prepare_output
from batchinfer.source import list_images
from batchinfer.storage import check_bucket, resolve, retry_storage

DECODE_BATCH = 64         # images per decode task batch (one object-store block each)
CPU_DECODE_SHARE = 0.5    # CPUs left beside a CPU inference actor: room for one decode task, never two
CPU_DECODE_TASK = 0.3     # CPUs per decode task beside a CPU actor
CPU_WRITE_TASK = 0.0      # a Parquet write of one block is light: asking for none keeps Ray Data's CPU budget
                          # (reserved for actor + decode on a 2-CPU node) from holding writes back to the end
CPU_IN_FLIGHT_BYTES = 256 * 2**20  # on CPU, per actor: blocks waiting for the model stay under this, whatever N
GPU_WAIT_S = 600          # how long --device cuda waits for autoscaled GPU workers
ACTOR_CALLS_IN_FLIGHT = 2  # per actor: Ray Data batches the next input while the UDF runs (on CPU too: one
                           # call at a time was slower, docs/benchmarks.md)


@dataclass(frozen=True)
class Resources:
    """How the inference stage is placed on the cluster."""

    device: str
    actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    decode_cpus: float
    threads: int | None
    write_cpus: float = 1.0


def connect_ray() -> None:
    """Join the cluster in RAY_ADDRESS (how a RayJob runs us), else start a local one."""
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, logging_level=logging.WARNING, include_dashboard=False
             if address == "local" else None, configure_logging=True)


def _alive_nodes() -> list[dict]:
    return [node for node in ray.nodes() if node.get("Alive")]


def _wait_for_gpus(needed: float) -> float:
    """Ask the autoscaler for GPU workers and wait for them; 0 when none come."""
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[{"GPU": needed}])
    deadline = time.monotonic() + GPU_WAIT_S
    while time.monotonic() < deadline:
        gpus = ray.cluster_resources().get("GPU", 0)
        if gpus >= needed:
            return gpus
        time.sleep(5)
    return 0


def plan_resources(config: JobConfig) -> Resources:
    """Place inference: one actor per GPU (or per --num-gpus-per-worker), else CPU actors that get the
    node's cores (torch threads = CPUs asked for) while leaving room for one decode task."""
    gpus = ray.cluster_resources().get("GPU", 0)
    device = config.device if config.device != "auto" else ("cuda" if gpus > 0 else "cpu")
    if device == "cuda":
        if gpus < config.num_gpus_per_worker and os.environ.get("RAY_ADDRESS"):
            gpus = _wait_for_gpus(config.num_gpus_per_worker)
        if gpus < config.num_gpus_per_worker:
            raise UserError(f"--device cuda but the Ray cluster has {gpus:g} GPUs: add GPU workers, or run "
                            "with --device cpu (or auto)")
        actors = config.num_workers or max(1, int(gpus // config.num_gpus_per_worker))
        return Resources("cuda", actors, config.num_cpus_per_worker or 1.0, config.num_gpus_per_worker,
                         decode_cpus=1.0, threads=None)
    node_cpus = max(node["Resources"].get("CPU", 0) for node in _alive_nodes())
    if node_cpus < 1:
        raise UserError("the Ray cluster has no CPUs to run inference on: give worker nodes CPUs")
    cpus = config.num_cpus_per_worker or max(1.0, node_cpus - CPU_DECODE_SHARE)
    return Resources("cpu", config.num_workers or 1, cpus, 0.0, decode_cpus=CPU_DECODE_TASK,
                     threads=max(1, math.ceil(cpus)), write_cpus=CPU_WRITE_TASK)


def run_job(config: JobConfig) -> dict:
    """Run one batch job end to end and return its summary (also written as _SUMMARY.json)."""
    started_at = datetime.now(timezone.utc)
    clock = time.monotonic()
    config.validate()
    source = resolve(config.input_uri, config.s3)
    target = resolve(config.output_uri, config.s3)
    if source.scheme == target.scheme and (target.path + "/").startswith(source.path + "/"):
        raise UserError(f"--output {config.output_uri} is inside --input {config.input_uri}: write the "
                        "predictions to a prefix outside the input")
    check_bucket(target, config.s3)
    output = Output(target, config.s3)
    job = {"input": config.input_uri, "model": config.model, "weights": config.weights,
           "categories": config.categories, "top_k": config.top_k, "label_from_path": config.label_from_path}
    check_output(output, config.overwrite, config.resume, job)
    listing = list_images(source, config.s3, exclude_prefix=target.path, limit=config.limit)
    request = ModelRequest(config.model, config.weights, config.categories, config.s3)
    transform = load_model(request).transform  # model, weight and category mistakes surface here

    connect_ray()
    resources = plan_resources(config)
    done = retry_storage(lambda: prepare_output(output, config.overwrite, config.resume, job),
                         f"prepare {config.output_uri}", config.storage_timeout_s)
    inputs = [source.uri(path) for path in listing.paths]
    if done is None:
        print(f"{config.output_uri} is already complete; nothing to resume")
        return {}
    todo = [path for path in listing.paths if source.uri(path) not in done]
    startup_s = time.monotonic() - clock

    pipeline_clock = time.monotonic()
    if todo:
        staging = output.location.join("_staging", uuid.uuid4().hex[:12])
        preprocessor = Preprocessor(source.filesystem, transform, source.uri(""), config.label_from_path,
                                    storage_timeout_s=config.storage_timeout_s)
        build_dataset(config, request, resources, preprocessor, todo).write_parquet(
            staging, filesystem=target.filesystem, min_rows_per_file=config.rows_per_file,
            ray_remote_args={"num_cpus": resources.write_cpus})
    pipeline_s = time.monotonic() - pipeline_clock

    summary = {
        "input": config.input_uri, "output": config.output_uri, "model": config.model, "job": job,
        "weights": config.weights if "://" not in config.weights else "checkpoint",
        "device": resources.device, "inference_actors": resources.actors,
        "started_at": started_at.isoformat(), "skipped_non_images": listing.skipped,
        "resumed_rows": len(done), "processed_this_run": len(todo),
        "startup_s": round(startup_s, 3), "pipeline_s": round(pipeline_s, 3),
        "images_per_s": round(len(todo) / pipeline_s, 2) if todo and pipeline_s > 0 else None,
    }
    summary["finished_at"] = datetime.now(timezone.utc).isoformat()
    return retry_storage(lambda: output.commit(inputs, summary), f"commit {config.output_uri}",
                         config.storage_timeout_s)


def use_gpu_decode(mode: str, device: str) -> bool:
    """--gpu-decode: 'auto' decodes JPEGs in the inference actor when it runs on CUDA."""
    return mode == "on" or (mode == "auto" and device == "cuda")


def inference_settings(config: JobConfig, resources: Resources) -> InferenceSettings:
    """What each inference actor is given."""
    return InferenceSettings(device=resources.device, precision=config.precision, top_k=config.top_k,
                             threads=resources.threads, compile=config.compile, batch_size=config.batch_size)


def build_dataset(config: JobConfig, request: ModelRequest, resources: Resources,
                  preprocessor: Preprocessor, paths: list[str]) -> ray.data.Dataset:
    """The Ray Data graph: path blocks → batched decode tasks → inference actor pool.

    On CUDA an actor call takes CUDA_ACTOR_BATCH images and runs them in forward batches of
    --batch-size (default by GPU memory), staging the next forward batch while one computes; with two
    calls in flight per actor, Ray Data gathers the next call's input while the model runs."""
    blocks = [pa.table({"path": paths[i:i + DECODE_BATCH]}) for i in range(0, len(paths), DECODE_BATCH)]
    if use_gpu_decode(config.gpu_decode, resources.device):
        preprocessor = preprocessor.passing_jpegs()
    settings = inference_settings(config, resources)
    actor_batch = (max(CUDA_ACTOR_BATCH, config.batch_size or 0) if resources.device == "cuda"
                   else config.batch_size or CPU_BATCH_SIZE)
    dataset = (
        ray.data.from_arrow(blocks)
        .map_batches(preprocessor, batch_size=DECODE_BATCH, batch_format="numpy",
                     num_cpus=resources.decode_cpus)
        .map_batches(Predictor, fn_constructor_kwargs={"request": request, "settings": settings},
                     batch_size=actor_batch, batch_format="numpy",
                     compute=ray.data.ActorPoolStrategy(size=resources.actors,
                                                        max_concurrent_calls_per_actor=ACTOR_CALLS_IN_FLIGHT),
                     num_cpus=resources.cpus_per_actor, num_gpus=resources.gpus_per_actor)
    )
    if resources.device == "cpu":  # the model is the bottleneck: don't decode the whole input ahead of it
        dataset.context.execution_options.resource_limits = ray.data.ExecutionResources.for_limits(
            object_store_memory=CPU_IN_FLIGHT_BYTES * resources.actors)
    return dataset
