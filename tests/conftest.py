"""Session-wide real parts: one SeaweedFS S3 server, one two-node Ray cluster, sample data in S3."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from batchinfer.config import S3Options
from devkit.samples import efficientnet_lite0_checkpoint, sample_images
from batchinfer.models import ModelRequest
from devkit.seaweed import SeaweedServer
from tests.support import BIN, RAY_ENV, LocalRayCluster, start_cluster

SAMPLES = "samples"
UNIT_TIER = Path(__file__).resolve().parent / "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything outside tests/unit needs real servers, a Ray cluster, Docker or a long run: mark it
    `integration`, so `pytest -m "not integration"` is the unit tier."""
    for item in items:
        if UNIT_TIER not in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def s3(tmp_path_factory) -> SeaweedServer:
    server = SeaweedServer(workdir=tmp_path_factory.mktemp("seaweedfs")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_options(s3) -> S3Options:
    return S3Options(endpoint=s3.endpoint, region="us-east-1", access_key=s3.access_key,
                     secret_key=s3.secret_key)


@pytest.fixture(scope="session")
def ray_cluster(s3) -> LocalRayCluster:
    """A head (2 CPUs) and a second node (1 CPU); RAY_ADDRESS points every job at it. Like KubeRay pods,
    the nodes carry the S3 settings in their environment and the job's command on PATH."""
    workdir = Path(f"/tmp/bi-ray-{os.getpid()}")  # short: Ray's socket paths must stay under 108 bytes
    cluster = start_cluster(workdir, head_params=["--num-cpus=2", "--object-store-memory=800000000"],
                            worker_params=[["--num-cpus=1", "--object-store-memory=400000000"]],
                            env={**s3.env(), "PATH": f"{BIN}:{os.environ.get('PATH', '')}"})
    previous = {key: os.environ.get(key) for key in ("RAY_ADDRESS", *RAY_ENV)}
    os.environ.update(RAY_ENV, RAY_ADDRESS=cluster.address)
    yield cluster
    cluster.stop()
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def samples(s3) -> dict[str, str]:
    """Sample photos (+ generated and one truncated JPEG) and the EfficientNet-Lite0 checkpoint in S3."""
    client = s3.client()
    client.create_bucket(Bucket=SAMPLES)
    images = sample_images()
    for key, data in images.items():
        client.put_object(Bucket=SAMPLES, Key=f"images/{key}", Body=data)
    client.put_object(Bucket=SAMPLES, Key="models/efficientnet_lite0.pth", Body=efficientnet_lite0_checkpoint())
    return {"images": f"s3://{SAMPLES}/images/", "checkpoint": f"s3://{SAMPLES}/models/efficientnet_lite0.pth",
            "count": str(len(images))}


@pytest.fixture
def cli_env(s3) -> dict[str, str]:
    """Environment for a `batchinfer` subprocess: the AWS variables of the local server, Ray settings."""
    return {**os.environ, **s3.env(), **RAY_ENV}


@pytest.fixture(scope="session")
def lite0(tmp_path_factory) -> ModelRequest:
    """Pretrained EfficientNet-Lite0 (real ImageNet weights) from a local checkpoint file."""
    path = tmp_path_factory.mktemp("lite0") / "efficientnet_lite0.pth"
    path.write_bytes(efficientnet_lite0_checkpoint())
    return ModelRequest("timm:efficientnet_lite0", str(path))
