"""The test tiers (pure or integration, by what a test asks for) and the session-wide real parts: one
SeaweedFS S3 server, one two-node Ray cluster, sample data in S3."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import ray
from moto.server import ThreadedMotoServer

from batchinfer.config import S3Options
from devkit.samples import efficientnet_lite0_checkpoint, sample_images
from batchinfer.models import ModelRequest
from devkit.seaweed import SeaweedServer
from tests.support import BIN, RAY_ENV, SECRET, LocalRayCluster, jobs_on, moto_server, start_cluster

pytest_plugins = ("pytester",)

SAMPLES = "samples"
# Fixtures that start a real server or cluster (S3, Ray, moto, a browser); a test that asks for one, directly
# or through another fixture, is `integration`. Every other test is pure and runs under `no_servers`.
SERVER_FIXTURES = frozenset({"s3", "ray_cluster", "store", "cluster", "fault_cluster", "server", "flaky_store", "moto_options",
                             "moto_store", "silent_endpoint", "chromium"})
SERVER_PROGRAMS = frozenset({"ray", "weed", "docker", "dockerd", "chromium"})
SERVER_MARKERS = ("slow", "container", "cluster")


class StartsServer(AssertionError):
    """A test that is not marked `integration` started Ray, an S3 server or Docker."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `integration` every test that needs a real server: one that asks for a server fixture, or is
    marked slow, container or cluster. The rest is the pure tier, `pytest -m "not integration"`
    (`make test-unit`), wherever it lives."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & SERVER_FIXTURES or any(item.get_closest_marker(name) for name in SERVER_MARKERS):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def no_servers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pure test runs with `ray.init`, moto's server and the server programs refused, so one that
    starts a server without asking for its fixture fails here instead of slowing the pure tier."""
    if request.node.get_closest_marker("integration"):
        return

    def refuse(what: str) -> Callable[..., None]:
        def refused(*args: object, **kwargs: object) -> None:
            raise StartsServer(f"a test not marked integration started {what}: ask for its fixture "
                               f"(tests/conftest.py SERVER_FIXTURES) or mark the test integration")
        return refused

    popen_init = subprocess.Popen.__init__

    def guarded_popen(self: subprocess.Popen, args, *rest: object, **kwargs: object) -> None:
        program = args if isinstance(args, (str, bytes, os.PathLike)) else args[0]
        name = os.path.basename(os.fsdecode(program).split()[0])
        if name in SERVER_PROGRAMS:
            refuse(f"`{name}`")()
        popen_init(self, args, *rest, **kwargs)

    if ray.is_initialized():  # left connected by an integration test that ran before, in the same process
        ray.shutdown()
    monkeypatch.setattr(ray, "init", refuse("Ray (ray.init)"))
    monkeypatch.setattr(ThreadedMotoServer, "start", refuse("moto's S3 server"))
    monkeypatch.setattr(subprocess.Popen, "__init__", guarded_popen)


@pytest.fixture(scope="session")
def s3(tmp_path_factory) -> SeaweedServer:
    server = SeaweedServer(workdir=tmp_path_factory.mktemp("seaweedfs"), secret_key=SECRET).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_options(s3) -> S3Options:
    return S3Options(endpoint=s3.endpoint, region="us-east-1", access_key=s3.access_key,
                     secret_key=s3.secret_key)


@pytest.fixture(scope="session")
def moto_options() -> S3Options:
    """moto's S3 server, shared by the session (each test makes its own buckets)."""
    with moto_server() as options:
        yield options


@pytest.fixture(scope="session")
def ray_cluster(s3) -> LocalRayCluster:
    """A head (2 CPUs) and a second node (1 CPU); RAY_ADDRESS points every job at it. Like KubeRay pods,
    the nodes carry the S3 settings in their environment and the job's command on PATH."""
    workdir = Path(f"/tmp/bi-ray-{os.getpid()}")  # short: Ray's socket paths must stay under 108 bytes
    cluster = start_cluster(workdir, head_params=["--num-cpus=2", "--object-store-memory=800000000"],
                            worker_params=[["--num-cpus=1", "--object-store-memory=400000000"]],
                            env={**s3.env(), "PATH": f"{BIN}:{os.environ.get('PATH', '')}"})
    with jobs_on(cluster):
        yield cluster
    cluster.stop()


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
