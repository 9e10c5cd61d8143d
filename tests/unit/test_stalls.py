"""The stall message and the plan check, pure (no Ray): what a stuck stage waits for, from a sample of
the cluster taken during the stall, and whether a plan's stages can run beside its inference actors."""

from __future__ import annotations

import pytest

from batchinfer.config import JobConfig
from batchinfer.pipeline import pipeline_stages, place_inference
from batchinfer.stalls import Sample, Sampler, Stage, Work, explain, plan_problem, stage_of, stall_message

JOB = {"input_uri": "s3://b/in/", "output_uri": "s3://b/out/"}


def stages(device: str = "cpu", gpus: float = 0, node_cpus: tuple[float, ...] = (2,), input_uri: str = "s3://b/in/",
           **flags) -> list[Stage]:
    """The stages of a job placed on nodes with `node_cpus` (and `gpus` in all), as preflight plans them."""
    config = JobConfig(**{**JOB, "input_uri": input_uri}, device=device, **flags).validate()
    return pipeline_stages(config, place_inference(config, device, gpus, list(node_cpus)))


def sample(free_cpus: float, total_cpus: float, waiting: tuple[Work, ...] | None = (),
           running: tuple[Work, ...] | None = (), free_gpus: float = 0, total_gpus: float = 0) -> Sample:
    return Sample(0.0, {"CPU": free_cpus, "GPU": free_gpus}, {"CPU": total_cpus, "GPU": total_gpus}, waiting, running)


def test_the_message_is_one_line_naming_the_timeout() -> None:
    reason = explain(sample(0, 2), stages(num_cpus_per_worker=2))
    message = stall_message(600, reason)
    assert message.startswith("no progress for 600 s: listing waits for ") and "\n" not in message


def test_tasks_ray_cannot_place_name_their_stage_request_and_the_free_resources() -> None:
    waiting = (Work("decode", "task", 3, (("CPU", 0.3),)),)
    reason = explain(sample(0, 2, waiting), stages(num_cpus_per_worker=2))
    assert reason.startswith("decode waits for 3 tasks Ray cannot place, asking 0.3 CPU each; 0 of 2 CPUs free "
                             "(free CPUs for it: lower --num-cpus-per-worker or --num-workers (inference actors ask for 2 CPU each)")


def test_the_most_upstream_waiting_stage_is_named() -> None:
    waiting = (Work("inference", "actor", 1, (("CPU", 1.0), ("GPU", 1.0))), Work("decode", "task", 1, (("CPU", 1.0),)))
    assert explain(sample(0, 8, waiting), stages("cuda", 1, (8,))).startswith("decode waits for 1 task ")


def test_an_actor_ray_cannot_place_names_inference_and_its_gpu() -> None:
    waiting = (Work("inference", "actor", 2, (("CPU", 1.0), ("GPU", 1.0), ("node:__internal_head__", 0.001))),)
    reason = explain(sample(6, 8, waiting, free_gpus=0, total_gpus=1), stages("cuda", 1, (8,), num_workers=(2, 2)))
    assert reason.startswith("inference waits for 2 actors Ray cannot place, asking 1 CPU and 1 GPU each; "
                             "6 of 8 CPUs free, 0 of 1 GPUs free (lower --num-cpus-per-worker, "
                             "--num-gpus-per-worker or --num-workers")


def test_tasks_ray_data_holds_back_are_found_from_the_plan() -> None:
    """No task waits in Ray (Ray Data did not submit them): the first stage whose task does not fit."""
    reason = explain(sample(0.2, 3), stages(node_cpus=(2, 1)))
    assert reason.startswith("decode waits for 0.3 CPU per task; 0.2 of 3 CPUs free (free CPUs for it")


def test_a_manifest_input_stage_is_the_manifest_read() -> None:
    reason = explain(sample(0, 2, None, None), stages(input_uri="s3://b/list.csv", num_cpus_per_worker=2))
    assert reason.startswith("manifest read waits for 0.1 CPU per task; 0 of 2 CPUs free")


def test_running_tasks_that_never_return_name_the_most_downstream_stage() -> None:
    running = (Work("listing", "task", 4, ()), Work("inference", "task", 2, ()))
    reason = explain(sample(0.5, 2, running=running), stages())
    assert reason.startswith("inference waits for 2 running tasks that did not return (a hung storage read or "
                             "model call?")


def test_an_actor_still_loading_its_model_names_inference_and_the_timeout() -> None:
    running = (Work("listing", "task", 4, ()), Work("inference", "task", 1, ()), Work("inference", "actor", 1, ()))
    reason = explain(sample(0.5, 2, running=running), stages())
    assert reason.startswith("inference waits for 1 actor still starting (loading the model; a large model's "
                             "first load, or its download, needs a larger --stall-timeout)")


def test_nothing_seen_still_says_so_in_one_line() -> None:
    reason = explain(sample(0.5, 2, None, None), stages())
    assert reason.startswith("no stage waits for resources (0.5 of 2 CPUs free) and ray.util.state could not be read")


@pytest.mark.parametrize(("name", "stage"), [
    ("MapBatches(Preprocessor)", "decode"), ("MapWorker(MapBatches(Predictor))", "inference"),
    ("MapBatches(Preprocessor)->MapBatches(Predictor)", "inference"), ("Write", "write"),
    ("ReadCSV->SplitBlocks(4)", "listing"), ("MapBatches(_list_units)", "listing"),
])
def test_ray_data_names_map_to_stages(name: str, stage: str) -> None:
    assert stage_of(name, stages()).name == stage


def test_the_sample_explaining_a_stall_was_taken_an_interval_before_the_error() -> None:
    """Ray Data stops the pipeline's actors as it raises: a sample taken since may show them gone."""
    sampler = Sampler(5.0, stages())
    sampler.samples.extend(Sample(at, {}, {}, (), ()) for at in (0.0, 5.0, 10.0, 15.0))
    assert sampler.before(16.0).at == 10.0
    assert sampler.before(3.0).at == 0.0  # none that early: the oldest


def test_a_cpu_plan_fits_a_two_cpu_node() -> None:
    """The default CPU actor leaves 0.5 CPU: a listing (0.1) or a decode (0.3) task fits beside it."""
    assert plan_problem(stages(node_cpus=(2,)), [{"CPU": 2, "GPU": 0}]) is None


def test_an_actor_holding_every_cpu_of_a_two_cpu_node_leaves_the_listing_none() -> None:
    problem = plan_problem(stages(node_cpus=(2,), num_cpus_per_worker=2), [{"CPU": 2, "GPU": 0}])
    assert problem == ("listing cannot run beside the inference actors: a task asks for 0.1 CPU and the roomiest "
                       "node has 0 CPU left once they hold 2 CPU each: lower --num-cpus-per-worker or "
                       "--num-workers, or add nodes")


def test_a_cuda_plan_fits_a_gpu_node() -> None:
    """8 CPUs and 1 GPU: the actor (1 CPU, 1 GPU), then a listing, a decode and a write task of 1 CPU each."""
    assert plan_problem(stages("cuda", 1, (8,)), [{"CPU": 8, "GPU": 1}]) is None


def test_a_cuda_actor_with_every_cpu_of_the_gpu_node_starves_decode() -> None:
    problem = plan_problem(stages("cuda", 1, (8,), num_cpus_per_worker=8), [{"CPU": 8, "GPU": 1}, {"CPU": 0, "GPU": 0}])
    assert problem is not None and problem.startswith("listing cannot run beside the inference actors")


def test_two_gpu_actors_on_a_one_gpu_node_cannot_start() -> None:
    problem = plan_problem(stages("cuda", 1, (8,), num_workers=(2, 2)), [{"CPU": 8, "GPU": 1}])
    assert problem is not None and problem.startswith(
        "inference cannot start: an actor asks for 1 CPU and 1 GPU and only 1 of 2 fit on the Ray cluster's nodes "
        "(the roomiest has 7 CPU left)")


def test_a_stage_fits_on_another_node_than_the_actors() -> None:
    """The actor fills the 2-CPU head; the listing, decode and write tasks run on a 1-CPU worker."""
    assert plan_problem(stages(node_cpus=(2, 1), num_cpus_per_worker=2), [{"CPU": 2, "GPU": 0}, {"CPU": 1, "GPU": 0}]) is None
