"""Autoscaling on a real multi-node Ray cluster, and fast failure where CUDA cannot run.

How the pool grows (Ray 2.60): `--num-workers MIN-MAX` becomes `ray.data.ActorPoolStrategy(min_size=MIN,
max_size=MAX)`. Ray Data's actor autoscaler (`ray.data._internal.actor_autoscaler`,
`BacklogAwareActorAutoscaler`, the default) adds an actor while the pool's utilization is at least
`actor_pool_util_upscaling_threshold` (1.75) and the pool is under MAX; an actor that does not fit is a
pending actor, which the raylet reports as resource demand. Ray Data's cluster autoscaler
(`ray.data._internal.cluster_autoscaler.RateBasedClusterAutoscaler`) also asks for the bundles it wants
through `ray.autoscaler.sdk.request_resources`. Both are what the Ray autoscaler (KubeRay's autoscaler
sidecar) acts on; `ray status` shows them as "Pending Demands" and "From request_resources". Here no
autoscaler can start pods, so the test starts the node itself, as KubeRay would, once the demand shows.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from batchinfer.models import ModelRequest
from batchinfer.pipeline import CPU_DECODE_SHARE
from batchinfer.predictor import CudaUnavailable, InferenceSettings, Predictor
from tests.reliability.catalog import photo_crops
from tests.reliability.conftest import Driver, keys, read_output, upload
from tests.support import BIN, RAY_ENV, LocalRayCluster, start_cluster, wait_until

BUCKET = "autoscale"
INFERENCE_ACTOR = "ray::MapWorker(MapBatches(Predictor"  # the actor's process title, set by Ray
NODE_CPUS = 2
WORKER = [f"--num-cpus={NODE_CPUS}", "--object-store-memory=300000000"]
HEAD = ["--num-cpus=1", "--object-store-memory=300000000"]  # too small for a CPU inference actor
# Enough work that the run outlasts a node joining on a loaded 2-core machine (ResNet-50 on CPU).
PHOTOS = 600
JOB_ARGS = ["--model", "resnet50", "--weights", "none", "--batch-size", "16", "--top-k", "1"]


def node_env(s3) -> dict[str, str]:
    """Like KubeRay pods: the S3 settings in the environment, the job's command on PATH."""
    return {**s3.env(), "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}


def job_env(s3, cluster: LocalRayCluster) -> dict[str, str]:
    return {**os.environ, **s3.env(), **RAY_ENV, "RAY_ADDRESS": cluster.address}


def ray_status(cluster: LocalRayCluster) -> str:
    """`ray status`: the cluster as the Ray autoscaler sees it (nodes, pending demands, requests)."""
    result = subprocess.run([str(BIN / "ray"), "status", "--address", cluster.address], env=cluster.env,
                            capture_output=True, text=True, timeout=120)
    return result.stdout


def wait_while_running(driver: Driver, condition, what: str, timeout_s: float = 600):
    """Poll `condition` until it returns something truthy; fail if the job ends first."""
    return wait_until(condition, timeout_s, what, give_up=driver.ended)


@pytest.fixture(scope="module")
def photos(s3) -> str:
    upload(s3, BUCKET, {f"photos/{index:04d}.jpg": data for index, data in enumerate(photo_crops(PHOTOS, 128))})
    return f"s3://{BUCKET}/photos/"


@pytest.mark.slow
def test_pool_grows_onto_a_node_that_joins_mid_run(s3, photos, tmp_path) -> None:
    """`--num-workers 1-2` on CPU: one node can host one actor; the pool's wish for a second shows as
    demand; a node joins mid-run; the second actor runs there; every input has exactly one row."""
    cluster = start_cluster(Path(f"/tmp/bi-as-{os.getpid()}"), HEAD, [WORKER], node_env(s3))
    first = cluster.nodes[1]
    actor_bundle = f"{{'CPU': {NODE_CPUS - CPU_DECODE_SHARE}}}"  # a CPU actor asks for its node's cores less 0.5
    driver = Driver(["--input", photos, "--output", f"s3://{BUCKET}/grown/", *JOB_ARGS, "--device", "cpu",
                     "--num-workers", "1-2"], job_env(s3, cluster), tmp_path)
    try:
        wait_while_running(driver, lambda: cluster.process_ids(INFERENCE_ACTOR, first),
                           "an inference actor on the first node")
        wait_while_running(driver, lambda: actor_bundle in ray_status(cluster),
                           f"demand for a second actor ({actor_bundle}) in `ray status`")
        assert not cluster.process_ids(INFERENCE_ACTOR, cluster.nodes[0])  # the head cannot host one
        joined = cluster.join_node(WORKER, "joined")
        wait_while_running(driver, lambda: cluster.process_ids(INFERENCE_ACTOR, joined),
                           "an inference actor on the node that joined")
        assert driver.wait() == 0, driver.stderr[-4000:]
    finally:
        driver.kill()
        cluster.stop()
    table, summary, names = read_output(s3, BUCKET, "grown/")
    paths = table["path"].to_pylist()
    assert len(paths) == len(set(paths)) == PHOTOS == summary["rows"] == summary["ok"]
    assert "grown/_SUCCESS" in names and not keys(s3, BUCKET, "grown.batchinfer/staging/")
    assert summary["device"] == "cpu" and summary["inference_actors"] == 2


def torch_driver_report() -> str:
    """What this machine's torch (a CUDA build, no NVIDIA driver here) says when CUDA is initialised."""
    try:
        torch.cuda.init()
    except Exception as error:  # noqa: BLE001 - whatever torch raises is what the job must pass on
        return str(error).strip().splitlines()[0]
    pytest.skip("CUDA initialises on this machine: the no-driver path cannot be shown here")


def test_requirement_is_read_from_the_pinned_torch_build() -> None:
    """The pinned torch 2.14.1 wheel is a CUDA 13 build with kernels from sm_75: the message says it
    needs driver R580+ and compute capability 7.5+ (NVIDIA: CUDA 13.x needs driver >= 580)."""
    with pytest.raises(CudaUnavailable) as raised:
        Predictor(ModelRequest("resnet18", "none"), InferenceSettings(device="cuda"))
    line = str(raised.value)
    assert "\n" not in line
    assert f"torch {torch.__version__} is a CUDA {torch.version.cuda} build" in line
    assert "NVIDIA driver R580 or newer" in line and "compute capability 7.5 or higher" in line
    assert torch_driver_report() in line and "--device cpu" in line


@pytest.mark.slow
def test_cuda_waits_for_a_gpu_node_then_fails_fast_where_cuda_cannot_run(s3, samples, tmp_path) -> None:
    """`--device cuda` on a cluster with no GPU yet (a GPU group at 0 replicas): no CPU fallback, the
    request shows as GPU demand; a node joins that advertises a GPU (`--num-gpus=1`) but has no NVIDIA
    driver; the job exits 2 within seconds with one line naming the driver requirement, before any output."""
    cluster = start_cluster(Path(f"/tmp/bi-gpu-{os.getpid()}"), HEAD, [], node_env(s3))
    output = "s3://samples/out/no-driver/"
    driver = Driver(["--input", samples["images"], "--output", output, "--model", "resnet18", "--weights", "none",
                     "--device", "cuda"], job_env(s3, cluster), tmp_path)
    try:
        wait_while_running(driver, lambda: "{'GPU': 1.0}" in ray_status(cluster), "GPU demand in `ray status`")
        assert "waiting up to" in driver.stdout
        cluster.join_node([*WORKER, "--num-gpus=1"], "gpu")
        assert driver.wait(timeout_s=300) == 2, driver.stderr[-4000:]
    finally:
        driver.kill()
        cluster.stop()
    # Ray's autoscaler messages go to stdout; stderr has our one line (plus, on a loaded machine, what Ray
    # forwards from a node whose start crashed, or its warnings, which may come after ours).
    ours = [line for line in driver.stderr.splitlines() if line.startswith("batchinfer:")]
    assert len(ours) == 1, driver.stderr[-4000:]
    assert "Traceback" not in driver.stderr
    assert ours[0].startswith("batchinfer: error: CUDA cannot initialise on ")
    assert "NVIDIA driver R580 or newer" in ours[0] and torch_driver_report() in ours[0]
    assert not keys(s3, "samples", "out/no-driver/")
