"""The job: list → decode/preprocess (CPU tasks) → predict (actor pool) → Parquet (staged, committed)."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import ray

from batchinfer.config import JobConfig, UserError
from batchinfer.lease import Lease, acquire
from batchinfer.models import ModelRequest, load_model
from batchinfer.predictor import CPU_BATCH_SIZE, CUDA_ACTOR_BATCH, InferenceSettings, Predictor, cuda_problem
from batchinfer.preprocess import Preprocessor
from batchinfer.report import write_report
from batchinfer.sink import Output, check_output, prepare_output
from batchinfer.source import SkippedCounter, check_input, count_skipped, input_dataset
from batchinfer.storage import Location, check_bucket, resolve, retry_storage

DECODE_BATCH = 64         # images per decode task batch (one object-store block each)
CPU_DECODE_SHARE = 0.5    # CPUs left beside a CPU inference actor: room for one decode task, never two
CPU_DECODE_TASK = 0.3     # CPUs per decode task beside a CPU actor
CPU_WRITE_TASK = 0.0      # a Parquet write of one block is light: asking for none keeps Ray Data's CPU budget
                          # (reserved for actor + decode on a 2-CPU node) from holding writes back to the end
CPU_IN_FLIGHT_BYTES = 256 * 2**20  # on CPU, per actor: blocks waiting for the model stay under this, whatever N
GPU_WAIT_S = 600          # how long --device cuda waits for the autoscaler to bring a GPU node
ACTOR_CALLS_IN_FLIGHT = 2  # per actor: Ray Data batches the next input while the UDF runs (on CPU too: one
                           # call at a time was slower, docs/benchmarks.md)


@dataclass(frozen=True)
class Resources:
    """How the inference stage is placed on the cluster: a pool of `min_actors` to `actors` inference
    actors (equal: a fixed pool), each asking for `cpus_per_actor` and `gpus_per_actor`."""

    device: str
    min_actors: int
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


def _wait_for_gpu_node(gpus_per_actor: float) -> float:
    """Run one task that asks for an inference actor's GPUs and checks CUDA where it lands; return the
    cluster's GPUs once it ran. On a cluster with no GPU yet (a KubeRay GPU group at 0 replicas) the
    pending task is resource demand the Ray autoscaler acts on, as the pending actors will be."""
    probe = ray.remote(num_cpus=0, num_gpus=gpus_per_actor)(cuda_problem).remote()
    if ray.cluster_resources().get("GPU", 0) < gpus_per_actor:
        print(f"--device cuda: waiting up to {GPU_WAIT_S} s for the Ray autoscaler to add a GPU node", flush=True)
    ready, _ = ray.wait([probe], timeout=GPU_WAIT_S)
    if not ready:
        ray.cancel(probe)
        raise UserError(f"--device cuda but no GPU node joined the Ray cluster within {GPU_WAIT_S} s: check the "
                        "GPU worker group (maxReplicas, GPU node pool, NVIDIA device plugin), or run with "
                        "--device cpu")
    problem = ray.get(probe)
    if problem:
        raise UserError(problem)
    return ray.cluster_resources().get("GPU", 0)


def plan_resources(config: JobConfig) -> Resources:
    """Place inference.

    Device: `cuda` asks for GPU actors even when the cluster has no GPU yet, and waits for the autoscaler
    to add one (`_wait_for_gpu_node`); `auto` is CUDA when the cluster has GPUs now, else CPU.
    Actors: --num-workers MIN-MAX is an autoscaling pool (Ray Data adds actors while the pool is busy
    and the cluster has room; pending actors are demand the Ray autoscaler acts on), N a fixed pool.
    Default: one actor per GPU present (per --num-gpus-per-worker), or one CPU actor. A CPU actor gets
    its node's cores (torch threads = CPUs asked for) less room for one decode task, so each CPU node
    holds one."""
    gpus = ray.cluster_resources().get("GPU", 0)
    device = config.device if config.device != "auto" else ("cuda" if gpus > 0 else "cpu")
    if device == "cuda":
        if gpus < config.num_gpus_per_worker and not os.environ.get("RAY_ADDRESS"):
            raise UserError(f"--device cuda but the local Ray has {gpus:g} GPUs: run on a machine with a "
                            "GPU, join a cluster with one (RAY_ADDRESS), or run with --device cpu (or auto)")
        gpus = _wait_for_gpu_node(config.num_gpus_per_worker)
        low, high = config.num_workers or (max(1, int(gpus // config.num_gpus_per_worker)),) * 2
        return Resources("cuda", low, high, config.num_cpus_per_worker or 1.0, config.num_gpus_per_worker,
                         decode_cpus=1.0, threads=None)
    node_cpus = max(node["Resources"].get("CPU", 0) for node in _alive_nodes())
    if node_cpus < 1:
        raise UserError("the Ray cluster has no CPUs to run inference on: give worker nodes CPUs")
    cpus = config.num_cpus_per_worker or max(1.0, node_cpus - CPU_DECODE_SHARE)
    low, high = config.num_workers or (1, 1)
    return Resources("cpu", low, high, cpus, 0.0, decode_cpus=CPU_DECODE_TASK,
                     threads=max(1, math.ceil(cpus)), write_cpus=CPU_WRITE_TASK)


def run_job(config: JobConfig) -> dict:
    """Run one batch job end to end and return its summary (also written to the output's meta prefix)."""
    started_at = datetime.now(timezone.utc)
    clock = time.monotonic()
    config.validate()
    source = resolve(config.input_uri, config.s3)
    target = resolve(config.output_uri, config.s3)
    output = Output(target, config.s3)
    for place in (output.location, output.meta):
        if source.scheme == place.scheme and (place.path + "/").startswith(source.path + "/"):
            raise UserError(f"--output {config.output_uri} is inside --input {config.input_uri} (or its "
                            f"sibling {output.meta.uri()}/ is): write the predictions to a prefix outside the input")
    check_bucket(target, config.s3)
    with acquire(output.meta, config.s3, config.output_uri, config.wait_for_lease_s) as lease:
        return _run_holding_lease(config, source, output, lease, started_at, clock)


def _run_holding_lease(config: JobConfig, source: Location, output: Output, lease: Lease, started_at: datetime,
                       clock: float) -> dict:
    """The job, once this run is the output's only writer."""
    print(f"batchinfer: run {lease.run_id} writes {config.output_uri}")
    target = output.location
    job = {"input": config.input_uri, "model": config.model, "weights": config.weights,
           "categories": config.categories, "top_k": config.top_k, "label_from_path": config.label_from_path}
    check_output(output, config.overwrite, config.resume, job)
    exclude = [target.path, output.meta.path]  # our own output, should the input hold it
    images = check_input(config, source, exclude)  # empty input, no images, bad manifest: one line, now
    request = ModelRequest(config.model, config.weights, config.categories, config.s3)
    transform = load_model(request).transform  # model, weight and category mistakes surface here

    connect_ray()
    resources = plan_resources(config)
    done = retry_storage(lambda: prepare_output(output, config.overwrite, config.resume, job),
                         f"prepare {config.output_uri}", config.storage_timeout_s)
    if done is None:
        print(f"{config.output_uri} is already complete; nothing to resume")
        return {}
    skipped = SkippedCounter.remote()
    listed = input_dataset(config, source, exclude, skipped)
    # INTERIM, until the new resume/commit (the "commit" work) lands: the old commit checks every input
    # URI on the driver, so the listing is materialized (in the object store) and its paths collected
    # here, and resume drops finished inputs with a driver-side set. The new commit takes `listed` as is.
    listed = listed.materialize()
    inputs = [path for batch in listed.iter_batches(batch_size=None, batch_format="pyarrow")
              for path in batch["path"].to_pylist()]
    todo = listed.filter(lambda row: row["path"] not in done) if done else listed
    todo_count = len(inputs) - len(done.intersection(inputs))
    startup_s = time.monotonic() - clock

    pipeline_clock = time.monotonic()
    if todo_count:
        staging = f"{output.staging_root}/{lease.run_id}"
        preprocessor = Preprocessor(images.filesystem, transform, images.uri(""), config.label_from_path,
                                    storage_timeout_s=config.storage_timeout_s,
                                    max_image_pixels=config.max_image_pixels, s3=config.s3)
        # Each write task gathers --rows-per-file rows, then writes files of at most that many rows.
        build_dataset(config, request, resources, preprocessor, todo).write_parquet(
            staging, filesystem=target.filesystem, min_rows_per_file=config.rows_per_file,
            max_rows_per_file=config.rows_per_file, ray_remote_args={"num_cpus": resources.write_cpus})
    pipeline_s = time.monotonic() - pipeline_clock

    summary = {
        "input": config.input_uri, "output": config.output_uri, "model": config.model, "job": job,
        "run_id": lease.run_id,
        "weights": config.weights if "://" not in config.weights else "checkpoint",
        "device": resources.device, "inference_actors": resources.actors,
        "started_at": started_at.isoformat(), "skipped_non_images": count_skipped(skipped),
        "resumed_rows": len(done), "processed_this_run": todo_count,
        "startup_s": round(startup_s, 3), "pipeline_s": round(pipeline_s, 3),
        "images_per_s": round(todo_count / pipeline_s, 2) if todo_count and pipeline_s > 0 else None,
    }
    summary["finished_at"] = datetime.now(timezone.utc).isoformat()
    summary = retry_storage(
        lambda: output.commit(inputs, summary, lambda: lease.confirm(config.storage_timeout_s)),
        f"commit {config.output_uri}", config.storage_timeout_s)
    write_report(output, summary)
    return summary


def use_gpu_decode(mode: str, device: str) -> bool:
    """--gpu-decode: 'auto' decodes JPEGs in the inference actor when it runs on CUDA."""
    return mode == "on" or (mode == "auto" and device == "cuda")


def inference_settings(config: JobConfig, resources: Resources) -> InferenceSettings:
    """What each inference actor is given."""
    return InferenceSettings(device=resources.device, precision=config.precision, top_k=config.top_k,
                             threads=resources.threads, compile=config.compile, batch_size=config.batch_size)


def build_dataset(config: JobConfig, request: ModelRequest, resources: Resources,
                  preprocessor: Preprocessor, inputs: ray.data.Dataset) -> ray.data.Dataset:
    """The Ray Data graph: input URIs (source.input_dataset) → batched decode tasks → inference actor pool.

    On CUDA an actor call takes CUDA_ACTOR_BATCH images and runs them in forward batches of
    --batch-size (default by GPU memory), staging the next forward batch while one computes; with two
    calls in flight per actor, Ray Data gathers the next call's input while the model runs."""
    if use_gpu_decode(config.gpu_decode, resources.device):
        preprocessor = preprocessor.passing_jpegs()
    settings = inference_settings(config, resources)
    actor_batch = (max(CUDA_ACTOR_BATCH, config.batch_size or 0) if resources.device == "cuda"
                   else config.batch_size or CPU_BATCH_SIZE)
    dataset = (
        inputs
        .repartition(target_num_rows_per_block=DECODE_BATCH)  # a listing task's block: thousands of paths
        .map_batches(preprocessor, batch_size=DECODE_BATCH, batch_format="numpy",
                     num_cpus=resources.decode_cpus)
        .map_batches(Predictor, fn_constructor_kwargs={"request": request, "settings": settings},
                     batch_size=actor_batch, batch_format="numpy",
                     compute=ray.data.ActorPoolStrategy(min_size=resources.min_actors, max_size=resources.actors,
                                                        max_concurrent_calls_per_actor=ACTOR_CALLS_IN_FLIGHT),
                     num_cpus=resources.cpus_per_actor, num_gpus=resources.gpus_per_actor)
    )
    if resources.device == "cpu":  # the model is the bottleneck: don't decode the whole input ahead of it
        dataset.context.execution_options.resource_limits = ray.data.ExecutionResources.for_limits(
            object_store_memory=CPU_IN_FLIGHT_BYTES * resources.actors)
    return dataset
