"""Resource planning from given cluster resources (no Ray): which device, how many inference actors,
and what each asks for. plan_resources reads these from the connected cluster and passes them here."""

from __future__ import annotations

import pytest

from batchinfer.config import JobConfig, UserError
from batchinfer.pipeline import (CPU_DECODE_SHARE, CPU_DECODE_TASK, CPU_WRITE_TASK, DECODE_BATCH, DECODE_BATCH_MAX,
                                 DECODE_SPREAD, DECODE_TASK_BYTES, Resources, decode_batch, inference_device, place_inference)

JOB = {"input_uri": "s3://b/in/", "output_uri": "s3://b/out/"}


def config(**changes) -> JobConfig:
    return JobConfig(**JOB, **changes).validate()


@pytest.mark.parametrize(("device", "gpus", "joined", "expected"), [
    ("auto", 0, True, "cpu"), ("auto", 0, False, "cpu"), ("auto", 2, False, "cuda"), ("auto", 0.5, True, "cuda"),
    ("cpu", 8, True, "cpu"),
    ("cuda", 1, False, "cuda"),
    ("cuda", 0, True, "cuda"),  # a joined cluster: the autoscaler may still add a GPU node
])
def test_device(device, gpus, joined, expected) -> None:
    assert inference_device(config(device=device), gpus, joined_cluster=joined) == expected


def test_cuda_on_a_local_ray_without_enough_gpus_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"--device cuda but the local Ray has 1 GPUs: .* --device cpu"):
        inference_device(config(device="cuda", num_gpus_per_worker=2), 1, joined_cluster=False)


def test_cuda_default_is_one_actor_per_gpu() -> None:
    assert place_inference(config(), "cuda", 4, [8, 8]) == Resources(
        "cuda", min_actors=4, actors=4, cpus_per_actor=1.0, gpus_per_actor=1.0, decode_cpus=1.0, threads=None)


def test_cuda_actors_per_gpu_share() -> None:
    """Half a GPU per actor: two actors per GPU; a cluster whose GPUs have not joined yet: one."""
    assert place_inference(config(num_gpus_per_worker=0.5), "cuda", 3, [8]).actors == 6
    assert place_inference(config(), "cuda", 0, [8]).actors == 1


def test_cuda_explicit_pool_and_cpus() -> None:
    planned = place_inference(config(num_workers=(1, 8), num_cpus_per_worker=3), "cuda", 2, [16])
    assert (planned.min_actors, planned.actors, planned.cpus_per_actor) == (1, 8, 3)


def test_cpu_actor_takes_its_node_less_room_for_decoding() -> None:
    planned = place_inference(config(), "cpu", 0, [0, 4, 2])
    assert planned == Resources("cpu", 1, 1, cpus_per_actor=4 - CPU_DECODE_SHARE, gpus_per_actor=0.0,
                                decode_cpus=CPU_DECODE_TASK, threads=4, write_cpus=CPU_WRITE_TASK)


def test_cpu_actor_on_a_one_cpu_node_still_asks_for_one() -> None:
    assert place_inference(config(), "cpu", 0, [1]).cpus_per_actor == 1.0


def test_cpu_explicit_settings_win() -> None:
    planned = place_inference(config(num_workers=(2, 5), num_cpus_per_worker=1.5), "cpu", 0, [8])
    assert (planned.min_actors, planned.actors, planned.cpus_per_actor, planned.threads) == (2, 5, 1.5, 2)


@pytest.mark.parametrize("node_cpus", [[], [0, 0], [0.5]])
def test_cpu_without_a_node_that_can_hold_an_actor_is_a_user_error(node_cpus) -> None:
    with pytest.raises(UserError, match="no CPUs to run inference on: give worker nodes CPUs"):
        place_inference(config(), "cpu", 0, node_cpus)


@pytest.mark.parametrize(("image_bytes", "sampled", "expected"), [
    (None, None, DECODE_BATCH),                     # a manifest: sizes unknown
    (95_409, 4000, DECODE_BATCH),                   # camera photos (~100 KB, bench/photos.py)
    (4_000_000, 4000, DECODE_BATCH),                # large photos: never fewer
    (DECODE_TASK_BYTES // 100, 4000, 100),          # in between: DECODE_TASK_BYTES of objects
    (686, 4000, 4000 // DECODE_SPREAD),             # tiny objects (bench/scale.py), four full pages seen
    (686, 10**6, DECODE_BATCH_MAX),                 # (a local directory's page may be longer)
    (686, 900, DECODE_BATCH),                       # a small input: many tasks, many actor calls
])
def test_decode_tasks_take_more_images_when_the_objects_are_small(image_bytes, sampled, expected) -> None:
    assert decode_batch(image_bytes, sampled) == expected
