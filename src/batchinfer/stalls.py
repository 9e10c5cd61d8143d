"""Nothing waits forever (issue #33): the plan check before the pipeline starts and the stall watchdog
while it runs.

**Before** (`plan_problem`): every stage must be able to run one task beside the inference actors on
some node, or the pipeline cannot run at all (an actor asking for all of a node's CPUs leaves none for
decode). Pure: given the stages' requests and the nodes' CPUs and GPUs.

**While it runs** (`stall_watchdog`): progress is Ray Data's own measure. Its executor compares each
operator's outputs taken and queued blocks at the end of every scheduling step and raises
`ExecutionTimeoutError` once none moved for `DataContext.execution_no_progress_timeout_s` (public in
Ray 2.60; `pipeline.execute` sets it to --stall-timeout): a few integers per step, nothing per image or
per batch. What the stuck stage waits for is read while it waits, since Ray Data stops the actors
before the error reaches us: a sampler thread records every `sample_interval` (at most SAMPLE_S) the
cluster's free resources (`ray.available_resources`) and this job's tasks that wait for a node or run
(`ray.util.state`; an actor is its creation task: waiting for a node, or running its constructor,
which loads the model); the newest record taken well before the error explains the stall
(`explain`), as one line (`Stalled`, exit 1).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import ray
from ray.data.exceptions import ExecutionTimeoutError
from ray.util.state import list_tasks

from batchinfer.config import Stalled

SAMPLE_S = 30.0          # at most this long between two samples of what the pipeline waits for
STATE_TIMEOUT_S = 10.0   # one ray.util.state query
STATE_LIMIT = 1000       # tasks or actors a sample reads, at most
WAITING = "PENDING_NODE_ASSIGNMENT"  # a task (an actor's: its creation task) Ray has found no node with room for
ACTOR_CREATION = "ACTOR_CREATION_TASK"  # a task that starts an actor: running while its constructor runs
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """A stage of the pipeline, upstream first: its name in messages, a part of the name Ray Data gives
    its tasks or actors (None: the input stage, every other Ray Data task), what one task or actor asks
    for, and for an actor pool how many actors it starts with."""

    name: str
    marker: str | None
    cpus: float
    gpus: float = 0.0
    actors: int = 0

    def asks(self) -> dict[str, float]:
        return {"CPU": self.cpus, "GPU": self.gpus}


@dataclass(frozen=True)
class Work:
    """`count` tasks of one stage, each asking for `asks`; for kind "actor", tasks that start an actor."""

    stage: str
    kind: str  # "task" or "actor"
    count: int
    asks: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Sample:
    """What the cluster looked like at `at` (time.monotonic): free and total resources, the job's work
    waiting for resources and its running tasks (both None where ray.util.state could not be read)."""

    at: float
    free: Mapping[str, float]
    total: Mapping[str, float]
    waiting: tuple[Work, ...] | None
    running: tuple[Work, ...] | None


def stage_of(name: str, stages: Sequence[Stage]) -> Stage:
    """The stage a Ray task or actor belongs to, by its name (Ray Data names them after the operator,
    e.g. `MapBatches(Preprocessor)`; fused operators after each, upstream first: the last marker wins)."""
    found = [stage for stage in stages if stage.marker and stage.marker in name]
    if found:
        return max(found, key=lambda stage: name.rfind(stage.marker or ""))
    return next(stage for stage in stages if stage.marker is None)


def _amount(name: str, value: float) -> str:
    """`0.3` (CPUs, GPUs), `1.5 GiB` (memory, in bytes)."""
    if name in ("memory", "object_store_memory"):
        return f"{value / 2**30:.1f} GiB"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _named(asks: Mapping[str, float]) -> list[str]:
    """The resources in a request that are asked for (not Ray's per-node markers such as `node:IP`)."""
    return [name for name, amount in asks.items() if amount > 0 and ":" not in name]


def _resources(asks: Mapping[str, float]) -> str:
    """`{"CPU": 0.3, "GPU": 0}` → `0.3 CPU`."""
    return " and ".join(f"{_amount(name, asks[name])} {name}" for name in _named(asks)) or "no resources"


def _free(names: Sequence[str], sample: Sample) -> str:
    """`0.2 of 3 CPUs free`, for each resource named."""
    return ", ".join(f"{_amount(name, sample.free.get(name, 0))} of {_amount(name, sample.total.get(name, 0))} "
                     f"{name}{'s' if name in ('CPU', 'GPU') else ''} free" for name in names)


def _fits(asks: Mapping[str, float], free: Mapping[str, float]) -> bool:
    return all(free.get(name, 0) + 1e-9 >= amount for name, amount in asks.items() if amount > 0)


def _room_hint(pool: Stage) -> str:
    """How to give a task stage room beside the actor pool."""
    return (f"free CPUs for it: lower --num-cpus-per-worker or --num-workers (inference actors ask for "
            f"{_resources(pool.asks())} each), or add nodes to the Ray cluster")


def explain(sample: Sample, stages: Sequence[Stage]) -> str:
    """`<stage> waits for <what> (<how to fix it>)`, from what the cluster looked like during a stall.

    In this order: the most upstream stage with tasks or actors Ray cannot place (their request against
    the free resources); else the most upstream task stage one task of which does not fit the free
    resources (Ray Data holds its tasks back); else the most downstream stage with actors still starting
    or running tasks that never return (a hung call)."""
    order = {stage.name: index for index, stage in enumerate(stages)}
    pool = next(stage for stage in stages if stage.actors)
    for work in sorted(sample.waiting or (), key=lambda work: order[work.stage]):
        asks = dict(work.asks)
        what = f"{work.count} {work.kind}{'s' if work.count > 1 else ''} Ray cannot place"
        hint = ("lower --num-cpus-per-worker, --num-gpus-per-worker or --num-workers, or add nodes with "
                "these resources to the Ray cluster (with an autoscaler: check its worker groups)"
                if work.kind == "actor" else _room_hint(pool))
        each = " each" if work.count > 1 else ""
        return (f"{work.stage} waits for {what}, asking {_resources(asks)}{each}; {_free(_named(asks), sample)} "
                f"({hint})")
    for stage in stages:
        if not stage.actors and not _fits(stage.asks(), sample.free):
            return (f"{stage.name} waits for {_resources(stage.asks())} per task; "
                    f"{_free(_named(stage.asks()), sample)} ({_room_hint(pool)})")
    for work in sorted(sample.running or (), key=lambda work: (-order[work.stage], work.kind != "actor")):
        plural = "s" if work.count > 1 else ""
        if work.kind == "actor":
            return (f"{work.stage} waits for {work.count} actor{plural} still starting (loading the model; a large "
                    "model's first load, or its download, needs a larger --stall-timeout)")
        return (f"{work.stage} waits for {work.count} running task{plural} that did not return (a hung storage "
                "read or model call? see the Ray worker logs; a stage this slow on purpose needs a larger "
                "--stall-timeout)")
    what = "nothing it waits for was seen" if sample.waiting is not None else "ray.util.state could not be read"
    return (f"no stage waits for resources ({_free(['CPU'], sample)}) and {what} (see the Ray logs; a "
            "stage this slow on purpose needs a larger --stall-timeout)")


def stall_message(timeout_s: float, reason: str) -> str:
    return f"no progress for {timeout_s:g} s: {reason}"


def _tally(tasks: list, stages: Sequence[Stage]) -> tuple[Work, ...]:
    """Work per stage, kind and request, from ray.util.state's TaskState entries."""
    counts = Counter((stage_of(task.name, stages).name, "actor" if task.type == ACTOR_CREATION else "task",
                      tuple(sorted((task.required_resources or {}).items()))) for task in tasks)
    return tuple(Work(stage, kind, count, asks) for (stage, kind, asks), count in counts.items())


def take_sample(stages: Sequence[Stage]) -> Sample:
    """The cluster's free and total resources, and this job's work that waits for resources or runs."""
    at = time.monotonic()
    free, total = ray.available_resources(), ray.cluster_resources()
    context = ray.get_runtime_context()
    job = ("job_id", "=", context.get_job_id())
    query = {"address": context.gcs_address, "limit": STATE_LIMIT, "timeout": STATE_TIMEOUT_S,
             "raise_on_missing_output": False}  # this cluster's, where several run on one machine
    try:
        waiting = list_tasks(filters=[job, ("state", "=", WAITING)], detail=True, **query)  # with their requests
        running = list_tasks(filters=[job, ("state", "=", "RUNNING")], **query)
    except Exception as exc:  # noqa: BLE001 - no state API (a local Ray without its dashboard): resources only
        _log.debug("ray.util.state unavailable: %s", exc)
        return Sample(at, free, total, None, None)
    return Sample(at, free, total, _tally(waiting, stages), _tally(running, stages))


def sample_interval(timeout_s: float) -> float:
    """How often to sample: four times per stall timeout, at most every SAMPLE_S, at least every 0.5 s."""
    return min(SAMPLE_S, max(0.5, timeout_s / 4))


class Sampler(threading.Thread):
    """Takes a Sample every `interval_s` until stopped, keeping the newest few."""

    def __init__(self, interval_s: float, stages: Sequence[Stage]) -> None:
        super().__init__(name="batchinfer-stall-sampler", daemon=True)
        self.interval_s = interval_s
        self.stages = stages
        self.samples: deque[Sample] = deque(maxlen=4)
        self._stop = threading.Event()

    def run(self) -> None:
        while True:
            try:
                self.samples.append(take_sample(self.stages))
            except Exception as exc:  # noqa: BLE001 - a lost sample must not end the run
                _log.debug("stall sample failed: %s", exc)
            if self._stop.wait(self.interval_s):
                return

    def before(self, moment: float) -> Sample | None:
        """The newest sample taken at least one interval before `moment` (before Ray Data stopped the
        pipeline's tasks and actors), else the oldest kept."""
        samples = list(self.samples)
        earlier = [sample for sample in samples if sample.at <= moment - self.interval_s]
        return earlier[-1] if earlier else (samples[0] if samples else None)

    def stop(self) -> None:
        self._stop.set()


@contextmanager
def stall_watchdog(timeout_s: float, stages: Sequence[Stage]) -> Iterator[None]:
    """Within: a Ray Data execution that stops on `ExecutionTimeoutError` (its context's
    execution_no_progress_timeout_s set to `timeout_s`) raises Stalled, one line naming the stuck stage
    and what it waits for, sampled while it waited."""
    sampler = Sampler(sample_interval(timeout_s), stages)
    sampler.start()
    try:
        yield
    except ExecutionTimeoutError:
        sample = sampler.before(time.monotonic())
        reason = explain(sample, stages) if sample else "nothing was sampled (see the Ray logs)"
        raise Stalled(stall_message(timeout_s, reason)) from None
    finally:
        sampler.stop()


def plan_problem(stages: Sequence[Stage], nodes: Sequence[Mapping[str, float]]) -> str | None:
    """Whether the pipeline can run on `nodes` (each node's CPU and GPU): None when the actor pool's
    first actors fit (each on the fullest node that holds it) and every other stage can then run one
    task beside them on some node; else one line saying which stage cannot and why."""
    room = [dict(node) for node in nodes]
    pool = next(stage for stage in stages if stage.actors)
    for placed in range(pool.actors):
        fitting = [node for node in room if _fits(pool.asks(), node)]
        if not fitting:
            roomiest = max(room, key=lambda node: (node.get("GPU", 0), node.get("CPU", 0)), default={})
            fit = f"only {placed} of {pool.actors}" if placed else "none"
            return (f"{pool.name} cannot start: an actor asks for {_resources(pool.asks())} and {fit} fit on the "
                    f"Ray cluster's nodes (the roomiest has {_resources(roomiest)} left): lower "
                    "--num-cpus-per-worker, --num-gpus-per-worker or --num-workers, or add nodes")
        node = min(fitting, key=lambda node: (node.get("GPU", 0), node.get("CPU", 0)))
        for name, amount in pool.asks().items():
            node[name] = node.get(name, 0) - amount
    for stage in stages:
        if stage is not pool and not any(_fits(stage.asks(), node) for node in room):
            left = max((node.get("CPU", 0) for node in room), default=0)
            return (f"{stage.name} cannot run beside the inference actors: a task asks for "
                    f"{_resources(stage.asks())} and the roomiest node has {_amount('CPU', left)} CPU left once "
                    f"they hold {_resources(pool.asks())} each: lower --num-cpus-per-worker or --num-workers, "
                    "or add nodes")
    return None
