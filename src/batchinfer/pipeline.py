"""The job: preflight, execute (list → decode/preprocess (CPU tasks) → predict (actor pool) → Parquet,
staged), commit."""

from __future__ import annotations

import enum
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import ray

from batchinfer import interrupts
from batchinfer.config import JobConfig, UserError
from batchinfer.driver_memory import bound_block_stats, cap_queued_blocks, heap_trimmed, limit_heap_arenas
from batchinfer.lease import Lease, acquire
from batchinfer.models import ModelRequest, load_model
from batchinfer.predictor import CPU_BATCH_SIZE, CUDA_ACTOR_BATCH, InferenceSettings, Predictor, cuda_problem
from batchinfer.preprocess import Preprocessor
from batchinfer.ray_compat import split_blocks
from batchinfer.report import write_report
from batchinfer.commit_tasks import commit_output, exclude_finished
from batchinfer.identity import JobIdentity, check_output, prepare_output
from batchinfer.layout import Output
from batchinfer.listing import LIST_TASK_CPUS, count_skipped, skipped_counter
from batchinfer.manifests import is_manifest
from batchinfer.source import check_input, input_dataset
from batchinfer.stalls import Stage, plan_problem, stall_watchdog
from batchinfer.staging import StagingDatasink, WriteRecord
from batchinfer.storage import Location, check_bucket, resolve, retry_storage

DECODE_BATCH = 64         # images per decode task (one object-store block each) for photos (decode_batch)
DECODE_BATCH_MAX = 256    # ... and for small objects, up to this many
DECODE_TASK_BYTES = 64 * 90 * 2**10  # object bytes a decode task takes: 64 camera photos of ~90 KiB
DECODE_SPREAD = 16        # ... and at most 1/16 of the images preflight saw: a small input still spreads
SPLIT_TASKS = 2           # split_blocks tasks at once: each cuts one listing block, in milliseconds
CPU_DECODE_SHARE = 0.5    # CPUs left beside a CPU inference actor: room for one decode task, never two
CPU_DECODE_TASK = 0.3     # CPUs per decode task beside a CPU actor
CPU_WRITE_TASK = 0.0      # a Parquet write of one block is light: asking for none keeps Ray Data's CPU budget
                          # (reserved for actor + decode on a 2-CPU node) from holding writes back to the end
CPU_IN_FLIGHT_BYTES = 256 * 2**20  # on CPU, per actor: blocks waiting for the model stay under this, whatever N
REPORT_TASK = {"num_cpus": 0.25, "max_retries": 1}  # the HTML report: one light task on a worker node
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
    limit_heap_arenas()  # Ray's threads, started here, share the driver's few heap arenas (driver_memory.py)
    address = os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, logging_level=logging.WARNING, include_dashboard=False
             if address == "local" else None, configure_logging=True)


def _node_cpus() -> list[float]:
    """CPUs of each alive node of the connected cluster."""
    return [node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")]


def _wait_for_gpu_node(gpus_per_actor: float, wait_s: float) -> float:
    """Run one task that asks for an inference actor's GPUs and checks CUDA where it lands; return the
    cluster's GPUs once it ran. On a cluster with no GPU yet (a KubeRay GPU group at 0 replicas) the
    pending task is resource demand the Ray autoscaler acts on, as the pending actors will be."""
    probe = ray.remote(num_cpus=0, num_gpus=gpus_per_actor)(cuda_problem).remote()
    if ray.cluster_resources().get("GPU", 0) < gpus_per_actor:
        print(f"--device cuda: waiting up to {wait_s:g} s for the Ray autoscaler to add a GPU node", flush=True)
    ready, _ = ray.wait([probe], timeout=wait_s)
    if not ready:
        ray.cancel(probe)
        raise UserError(f"--device cuda but no GPU node joined the Ray cluster within {wait_s:g} s: check the "
                        "GPU worker group (maxReplicas, GPU node pool, NVIDIA device plugin), raise --node-wait, "
                        "or run with --device cpu")
    problem = ray.get(probe)
    if problem:
        raise UserError(problem)
    return ray.cluster_resources().get("GPU", 0)


def _wait_for_cpu_node(cpus: float, wait_s: float) -> None:
    """Run one task that asks for an inference actor's CPUs; return once it ran. On a cluster whose
    worker group is at 0 replicas (the head runs no tasks) the pending task is the demand the Ray
    autoscaler adds a worker for, as for a GPU node (`_wait_for_gpu_node`)."""
    probe = ray.remote(num_cpus=cpus)(lambda: None).remote()
    print(f"--device cpu: waiting up to {wait_s:g} s for the Ray autoscaler to add a worker node with "
          f"{cpus:g} CPUs", flush=True)
    ready, _ = ray.wait([probe], timeout=wait_s)
    if not ready:
        ray.cancel(probe)
        raise UserError(f"no worker node with {cpus:g} CPUs joined the Ray cluster within {wait_s:g} s: check "
                        "the worker group (replicas, maxReplicas, CPU requests), --num-cpus-per-worker or --node-wait")


def inference_device(config: JobConfig, cluster_gpus: float, joined_cluster: bool) -> str:
    """The device inference runs on: `cuda` asks for GPU actors even when the cluster has no GPU yet
    (the autoscaler may add one, `_wait_for_gpu_node`), unless this is a local Ray of our own, which
    cannot grow (`joined_cluster` False: no RAY_ADDRESS); `auto` is CUDA when the cluster has GPUs now."""
    device = config.device if config.device != "auto" else ("cuda" if cluster_gpus > 0 else "cpu")
    if device == "cuda" and cluster_gpus < config.num_gpus_per_worker and not joined_cluster:
        raise UserError(f"--device cuda but the local Ray has {cluster_gpus:g} GPUs: run on a machine with a "
                        "GPU, join a cluster with one (RAY_ADDRESS), or run with --device cpu (or auto)")
    return device


def place_inference(config: JobConfig, device: str, cluster_gpus: float, node_cpus: list[float]) -> Resources:
    """Place inference on `device`, given the cluster's GPUs and each alive node's CPUs (a pure decision).

    Actors: --num-workers MIN-MAX is an autoscaling pool (Ray Data adds actors while the pool is busy
    and the cluster has room; pending actors are demand the Ray autoscaler acts on), N a fixed pool.
    Default: one actor per GPU present (per --num-gpus-per-worker), or one CPU actor. A CPU actor gets
    its largest node's cores (torch threads = CPUs asked for) less room for one decode task, so each
    CPU node holds one."""
    if device == "cuda":
        low, high = config.num_workers or (max(1, int(cluster_gpus // config.num_gpus_per_worker)),) * 2
        return Resources("cuda", low, high, config.num_cpus_per_worker or 1.0, config.num_gpus_per_worker,
                         decode_cpus=1.0, threads=None)
    largest_node = max(node_cpus, default=0)
    if largest_node < 1:
        raise UserError("the Ray cluster has no CPUs to run inference on: give worker nodes CPUs")
    cpus = config.num_cpus_per_worker or max(1.0, largest_node - CPU_DECODE_SHARE)
    low, high = config.num_workers or (1, 1)
    return Resources("cpu", low, high, cpus, 0.0, decode_cpus=CPU_DECODE_TASK,
                     threads=max(1, math.ceil(cpus)), write_cpus=CPU_WRITE_TASK)


def pipeline_stages(config: JobConfig, resources: Resources) -> list[Stage]:
    """The pipeline's stages, upstream first, with what one task (or inference actor) asks for and the
    part of Ray Data's task and actor names that tells them apart (stalls.py)."""
    return [Stage("manifest read" if is_manifest(config.input_uri) else "listing", None, LIST_TASK_CPUS),
            Stage("decode", "Preprocessor", resources.decode_cpus),
            Stage("inference", "Predictor", resources.cpus_per_actor, resources.gpus_per_actor, resources.min_actors),
            Stage("write", "Write", resources.write_cpus)]


def check_plan(config: JobConfig, resources: Resources) -> None:
    """Before heavy work: every stage must run beside the inference actors on the cluster's nodes
    (stalls.plan_problem). A UserError on a local Ray; on a joined cluster, whose autoscaler may add
    nodes, a warning line (the stall watchdog bounds the wait)."""
    nodes = [{"CPU": node["Resources"].get("CPU", 0), "GPU": node["Resources"].get("GPU", 0)}
             for node in ray.nodes() if node.get("Alive")]
    problem = plan_problem(pipeline_stages(config, resources), nodes)
    if problem and not os.environ.get("RAY_ADDRESS"):
        raise UserError(problem)
    if problem:
        print(f"batchinfer: warning: {problem}; waiting for the autoscaler to add room", file=sys.stderr, flush=True)


def plan_resources(config: JobConfig) -> Resources:
    """Place inference on the connected Ray cluster: reads its resources, waits for a GPU node when
    the device is CUDA (for a worker with CPUs on a joined cluster that has none yet, e.g. a worker
    group scaled to zero), and leaves the decision to `inference_device` and `place_inference`."""
    gpus = ray.cluster_resources().get("GPU", 0)
    device = inference_device(config, gpus, joined_cluster=bool(os.environ.get("RAY_ADDRESS")))
    if device == "cuda":
        gpus = _wait_for_gpu_node(config.num_gpus_per_worker, config.node_wait_s)
    elif os.environ.get("RAY_ADDRESS") and max(_node_cpus(), default=0) < (config.num_cpus_per_worker or 1.0):
        _wait_for_cpu_node(config.num_cpus_per_worker or 1.0, config.node_wait_s)
    return place_inference(config, device, gpus, _node_cpus())


class JobStatus(enum.Enum):
    """How a run ended (a failure raises instead)."""

    COMMITTED = "committed"                # the output holds every input's result and `_SUCCESS`
    ALREADY_COMPLETE = "already complete"  # --resume on a finished output: nothing to do


@dataclass(frozen=True)
class JobResult:
    """What `run_job` did: its status and, when it committed, the run's summary."""

    status: JobStatus
    output_uri: str
    summary: dict | None = None


@dataclass(frozen=True)
class Preflight:
    """Everything checked and loaded before the pipeline starts, while this run holds the output."""

    source: Location
    images: Location  # where the images are read from: the input, or the store a manifest names
    decode_batch: int  # images per decode task
    exclude: list[str]  # our own output and its sibling, never inputs
    output: Output
    identity: JobIdentity
    request: ModelRequest
    transform: object  # the model's EvalTransform
    resources: Resources
    started_at: datetime
    startup_s: float


@dataclass(frozen=True)
class Execution:
    """What the pipeline did: its record of what it staged (None: nothing to do) and the inputs of a
    resumed run (checked for results by the commit)."""

    record: WriteRecord | None
    resumed_inputs: ray.data.Dataset | None
    pipeline_s: float
    skipped: int  # non-images the listing passed over


def run_job(config: JobConfig) -> JobResult:
    """Run one batch job end to end: preflight, execute, commit (the summary is also written to the
    output's meta prefix)."""
    started_at = datetime.now(timezone.utc)
    clock = time.monotonic()
    config.validate()
    source = resolve(config.input_uri, config.s3)
    output = Output(resolve(config.output_uri, config.s3), config.s3)
    for place in (output.location, output.meta):
        if source.scheme == place.scheme and (place.path + "/").startswith(source.path + "/"):
            raise UserError(f"--output {config.output_uri} is inside --input {config.input_uri} (or its "
                            f"sibling {output.meta.uri()}/ is): write the predictions to a prefix outside the input")
    check_bucket(output.location, config.s3)
    with interrupts.holding(acquire(output.meta, config.s3, config.output_uri, config.wait_for_lease_s)) as lease:
        print(f"batchinfer: run {lease.run_id} writes {config.output_uri}", flush=True)
        ready = preflight(config, source, output, started_at, clock)
        if ready is None:
            return JobResult(JobStatus.ALREADY_COMPLETE, config.output_uri)
        with stall_watchdog(config.stall_timeout_s, pipeline_stages(config, ready.resources)):
            execution = execute(config, ready, lease.run_id)
        summary = commit(config, ready, execution, lease)
        return JobResult(JobStatus.COMMITTED, config.output_uri, summary)


def preflight(config: JobConfig, source: Location, output: Output, started_at: datetime,
              clock: float) -> Preflight | None:
    """Check the output and the job, check the input (its first page, or the manifest), load the model,
    join Ray, place inference and prepare the output. None: a resumed output that is already complete."""
    identity = JobIdentity.of(config)
    check_output(output, config.overwrite, config.resume, identity)
    exclude = [output.location.path, output.meta.path]  # our own output, should the input hold it
    checked = check_input(config, source, exclude)  # empty input, no images, bad manifest: one line, now
    request = ModelRequest(config.model, config.weights, config.categories, config.s3)
    transform = load_model(request).transform  # model, weight and category mistakes surface here
    connect_ray()
    resources = plan_resources(config)
    check_plan(config, resources)
    if not retry_storage(lambda: prepare_output(output, config.resume, identity),
                         f"prepare {config.output_uri}", config.storage_timeout_s):
        return None
    return Preflight(source, checked.images, decode_batch(checked.image_bytes, checked.sampled_images), exclude,
                     output, identity, request, transform, resources, started_at, time.monotonic() - clock)


def execute(config: JobConfig, ready: Preflight, run_id: str) -> Execution:
    """Classify the inputs without a staged result into this run's staging area. On --resume the
    inputs are materialized in Ray's object store (the commit checks them too) and finished ones are
    excluded with a distributed anti-join, also materialized (Ray Data's no-progress check, which
    --stall-timeout sets and stalls.stall_watchdog reports, skips an execution that holds a join)."""
    skipped = skipped_counter()  # non-images the listing tasks pass over
    inputs, resumed_inputs = input_dataset(config, ready.source, ready.exclude, skipped), None
    inputs.context.execution_no_progress_timeout_s = config.stall_timeout_s  # the datasets below copy it
    if config.resume:
        resumed_inputs = inputs.materialize()
        inputs, found = retry_storage(lambda: exclude_finished(ready.output, resumed_inputs),
                                      f"read the staged results of {config.output_uri}", config.storage_timeout_s)
        if found:
            inputs = inputs.materialize()
        else:
            resumed_inputs = None  # nothing staged earlier: every input is this run's, in its record
    clock = time.monotonic()
    staging = StagingDatasink(f"{ready.output.staging_root}/{run_id}", ready.output.fs, config.rows_per_file, run_id,
                              config.storage_timeout_s)
    preprocessor = Preprocessor(ready.images.filesystem, ready.transform, ready.images.uri(""),
                                config.label_from_path, storage_timeout_s=config.storage_timeout_s,
                                max_image_pixels=config.max_image_pixels, s3=config.s3)
    # Each write task gathers --rows-per-file rows, then writes files of at most that many rows. The
    # driver's memory stays flat however many inputs (driver_memory.py); Ray Data's write_datasink keeps
    # each write task's result to the end, about 8 KiB a task (docs/benchmarks.md).
    dataset = build_dataset(config, ready.request, ready.resources, preprocessor, inputs, ready.decode_batch)
    bound_block_stats(dataset.context)
    cap_queued_blocks(dataset.context)
    with heap_trimmed():
        dataset.write_datasink(staging, ray_remote_args={"num_cpus": ready.resources.write_cpus})
    return Execution(staging.record, resumed_inputs, time.monotonic() - clock, count_skipped(skipped))


def commit(config: JobConfig, ready: Preflight, execution: Execution, lease: Lease) -> dict:
    """Publish the staged results (commit_tasks.commit_output), write the report; return the summary."""
    processed = execution.record.rows if execution.record else 0
    pipeline_s = execution.pipeline_s
    summary = {
        "input": config.input_uri, "output": config.output_uri, "model": config.model,
        "job": ready.identity.as_dict(), "run_id": lease.run_id,
        "weights": config.weights if "://" not in config.weights else "checkpoint",
        "device": ready.resources.device, "inference_actors": ready.resources.actors,
        "started_at": ready.started_at.isoformat(), "skipped_non_images": execution.skipped,
        "processed_this_run": processed,
        "startup_s": round(ready.startup_s, 3), "pipeline_s": round(pipeline_s, 3),
        "images_per_s": round(processed / pipeline_s, 2) if processed and pipeline_s > 0 else None,
        "finished_at": datetime.now(timezone.utc).isoformat(),
    }
    with interrupts.committing(config.output_uri):  # Ctrl-C waits for the commit to finish
        print(f"batchinfer: committing {config.output_uri}", flush=True)
        summary = retry_storage(
            lambda: commit_output(ready.output, execution.record, execution.resumed_inputs, summary,
                                  lambda: lease.confirm(config.storage_timeout_s)),
            f"commit {config.output_uri}", config.storage_timeout_s)
    build_report = ray.remote(**REPORT_TASK)(write_report)  # a task: the driver never scans the output (#16)
    try:
        print(f"batchinfer: report {ray.get(build_report.remote(ready.output, summary))}")
    except Exception as exc:  # noqa: BLE001 - the output is committed: a missing page must not fail the run
        cause = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) else exc
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        print(f"batchinfer: the report was not written ({reason}); `batchinfer report {config.output_uri}` "
              "builds it again", file=sys.stderr)
    return summary


def use_gpu_decode(mode: str, device: str) -> bool:
    """--gpu-decode: 'auto' decodes JPEGs in the inference actor when it runs on CUDA."""
    return mode == "on" or (mode == "auto" and device == "cuda")


def inference_settings(config: JobConfig, resources: Resources) -> InferenceSettings:
    """What each inference actor is given."""
    return InferenceSettings(device=resources.device, precision=config.precision, top_k=config.top_k,
                             threads=resources.threads, compile=config.compile, batch_size=config.batch_size)


def decode_batch(image_bytes: int | None, sampled_images: int | None) -> int:
    """Images per decode task, from the images on the input's first listing pages (source.check_input):
    their mean size and how many (None: unknown, a manifest).

    A task costs the driver and Ray a fixed amount (scheduling, its block's metadata, about 1 KiB of the
    driver's memory: docs/benchmarks.md), so tasks of tiny objects, which decode in microseconds, take
    more of them: DECODE_TASK_BYTES of objects, from DECODE_BATCH (photos) to DECODE_BATCH_MAX. A decode
    task's block goes whole to one actor call, so a task takes at most 1/DECODE_SPREAD of the images
    seen: an input of a few thousand images still makes enough calls to spread over the actor pool as
    it grows, and to stream to the output. However many, a task reads preprocess.READ_AT_ONCE objects
    at a time (with GPU decode, the JPEGs it passes on stay in its block)."""
    if not image_bytes or not sampled_images:
        return DECODE_BATCH
    return max(DECODE_BATCH, min(DECODE_BATCH_MAX, DECODE_TASK_BYTES // image_bytes,
                                 sampled_images // DECODE_SPREAD))


def build_dataset(config: JobConfig, request: ModelRequest, resources: Resources, preprocessor: Preprocessor,
                  inputs: ray.data.Dataset, images_per_decode: int) -> ray.data.Dataset:
    """The Ray Data graph: input URIs (source.input_dataset) → decode tasks of `images_per_decode` images
    → inference actor pool.

    On CUDA an actor call takes CUDA_ACTOR_BATCH images and runs them in forward batches of
    --batch-size (default by GPU memory), staging the next forward batch while one computes; with two
    calls in flight per actor, Ray Data gathers the next call's input while the model runs."""
    if use_gpu_decode(config.gpu_decode, resources.device):
        preprocessor = preprocessor.passing_jpegs()
    settings = inference_settings(config, resources)
    actor_batch = (max(CUDA_ACTOR_BATCH, config.batch_size or 0) if resources.device == "cuda"
                   else config.batch_size or CPU_BATCH_SIZE)
    dataset = (
        split_blocks(inputs, images_per_decode, SPLIT_TASKS)
        .map_batches(preprocessor, batch_size=images_per_decode, batch_format="numpy",
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
