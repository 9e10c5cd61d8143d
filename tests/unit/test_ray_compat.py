"""Canaries for ray_compat: each touch's names, fields and signatures in the installed Ray, checked
without a cluster, so that an upgrade which moves or renames one fails here before a job hangs or
grows. The effects, on a real cluster: tests/test_ray_compat.py and tests/test_driver_memory.py."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import ray
from ray.data import DataContext, Dataset, TaskPoolStrategy
from ray.data._internal.execution.backpressure_policy import (ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY,
                                                              BackpressurePolicy, get_backpressure_policies)
from ray.data._internal.execution.execution_callback import ExecutionCallback
from ray.data._internal.execution.interfaces import PhysicalOperator, TaskContext
from ray.data._internal.execution.operators.input_data_buffer import InputDataBuffer
from ray.data._internal.execution.operators.map_operator import MapOperator
from ray.data._internal.execution.streaming_executor import StreamingExecutor
from ray.data._internal.execution.streaming_executor_state import OpBufferQueue, OpState
from ray.data._internal.logical.operators import InputData, StreamingRepartition
from ray.data._internal.planner import planner
from ray.data._internal.planner.plan_udf_map_op import plan_streaming_repartition_op

from batchinfer import ray_compat


def _init_assigns(cls: type, *attributes: str) -> bool:
    """True when cls.__init__ assigns each of `attributes` on self."""
    source = inspect.getsource(cls.__init__)
    return all(f"self.{attribute} =" in source or f"self.{attribute}:" in source for attribute in attributes)


def test_the_installed_ray_is_the_tested_one() -> None:
    """Fails on a Ray upgrade: rerun these canaries, then move TESTED_RAY."""
    assert ray_compat.ray_minor(ray.__version__) == ray_compat.TESTED_RAY
    assert ray_compat.tested()


def test_ray_minor_reads_release_and_candidate_versions() -> None:
    assert ray_compat.ray_minor("2.60.0") == (2, 60)
    assert ray_compat.ray_minor("2.61.0rc1") == (2, 61)
    assert ray_compat.ray_minor("3.0.0.dev0") == (3, 0)


def test_split_blocks_touch() -> None:
    """`repartition(target_num_rows_per_block=)` makes a StreamingRepartition node, a frozen dataclass
    whose ray_remote_args and compute the planner turns into the task's resources and concurrency."""
    assert "target_num_rows_per_block" in inspect.signature(Dataset.repartition).parameters
    fields = {field.name: field for field in dataclasses.fields(StreamingRepartition)}
    assert fields["ray_remote_args"].default_factory is dict and "compute" in fields
    assert StreamingRepartition.__dataclass_params__.frozen
    assert planner.Planner._DEFAULT_PLAN_FNS[StreamingRepartition] is plan_streaming_repartition_op
    context = DataContext.get_current()
    operator = StreamingRepartition(target_num_rows_per_block=64, input_dependencies=[InputData(input_data=[])])
    operator.ray_remote_args["num_cpus"] = 0
    object.__setattr__(operator, "compute", TaskPoolStrategy(size=2))
    physical = plan_streaming_repartition_op(operator, [InputDataBuffer(context, [])], context)
    assert physical._ray_remote_args["num_cpus"] == 0
    assert physical._max_concurrency == 2


def test_queued_blocks_cap_touch() -> None:
    """Ray Data builds its backpressure policies from a DataContext config key, each with the context,
    the topology and the resource manager; the cap reads an operator's queues in the topology."""
    assert issubclass(ray_compat.QueuedBlocksCap, BackpressurePolicy)
    assert list(inspect.signature(BackpressurePolicy.__init__).parameters) == [
        "self", "data_context", "topology", "resource_manager"]
    assert _init_assigns(BackpressurePolicy, "_data_context", "_topology")
    for method in ("can_add_input", "max_task_output_bytes_to_read"):
        assert list(inspect.signature(getattr(BackpressurePolicy, method)).parameters) == ["self", "op"]
    context = DataContext()
    ray_compat.cap_queued_blocks(context, 7)
    ray_compat.cap_queued_blocks(context, 7)
    assert context.get_config(ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY).count(ray_compat.QueuedBlocksCap) == 1
    topology: dict = {}
    policies = get_backpressure_policies(context, topology, None)
    cap = next(policy for policy in policies if isinstance(policy, ray_compat.QueuedBlocksCap))
    assert cap._topology is topology and cap._data_context.get_config(ray_compat.QUEUED_BLOCKS_KEY) == 7
    assert isinstance(PhysicalOperator.output_dependencies, property)
    assert callable(OpState.total_enqueued_output_blocks) and _init_assigns(OpState, "input_queues")
    assert isinstance(OpBufferQueue.num_blocks, property)


def test_bounded_block_stats_touch() -> None:
    """Ray Data instantiates each custom execution callback class with no argument and calls
    on_execution_step(executor) every step; the executor holds its context and topology, and a map
    operator its per-block stats list."""
    assert issubclass(ray_compat.BoundedBlockStats, ExecutionCallback)
    assert list(inspect.signature(ExecutionCallback.on_execution_step).parameters) == ["self", "executor"]
    assert "cls() for cls in logical_plan.context.execution_callback_classes" in inspect.getsource(planner.Planner.plan)
    context = DataContext()
    ray_compat.bound_block_stats(context, 5)
    ray_compat.bound_block_stats(context, 5)
    assert context.custom_execution_callback_classes == [ray_compat.BoundedBlockStats]
    assert ray_compat.BoundedBlockStats in context.execution_callback_classes
    executor = StreamingExecutor(context)
    assert executor._data_context is context and executor._topology is None
    assert _init_assigns(MapOperator, "_output_blocks_stats")


def test_write_task_context() -> None:
    """staging.StagingDatasink names its files by the write task's index."""
    assert "task_idx" in {field.name for field in dataclasses.fields(TaskContext)}


def test_an_untested_ray_gets_the_public_paths(monkeypatch) -> None:
    monkeypatch.setattr(ray_compat, "tested", lambda: False)
    context = DataContext()
    ray_compat.cap_queued_blocks(context, 7)
    ray_compat.bound_block_stats(context, 5)
    assert context.get_config(ENABLED_BACKPRESSURE_POLICIES_CONFIG_KEY) is None
    assert context.custom_execution_callback_classes == []


def test_an_untested_ray_warns_once(monkeypatch, capsys) -> None:
    monkeypatch.setattr(ray, "__version__", "2.61.0")
    ray_compat.tested.cache_clear()
    try:
        assert not ray_compat.tested() and not ray_compat.tested()
    finally:
        ray_compat.tested.cache_clear()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("batchinfer: Ray 2.61.0 is not the tested 2.60"), lines


PRIVATE_NAMES = ("._internal", "._private", "._raylet")  # Ray's private modules
PRIVATE_ATTRIBUTES = ("._logical_plan", "._topology", "._data_context", "._output_blocks_stats")


def test_only_ray_compat_reaches_into_ray() -> None:
    """The package and the benchmarks import Ray's public API only, and touch none of the private
    attributes ray_compat relies on; ray_compat is the one place that does."""
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for path in [*(root / "src" / "batchinfer").glob("*.py"), *(root / "bench").glob("*.py")]:
        if path.name == "ray_compat.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            modules = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                       else [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{path.name}: import {module}" for module in modules
                          if module.startswith("ray") and any(name in module for name in PRIVATE_NAMES)]
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ray"):
                offenders += [f"{path.name}: {alias.name}" for alias in node.names if alias.name.startswith("_")]
            if isinstance(node, ast.Attribute) and f".{node.attr}" in PRIVATE_ATTRIBUTES:
                offenders.append(f"{path.name}:{node.lineno}: .{node.attr}")
    assert offenders == []
