"""The pure tier's guard (tests/conftest.py `no_servers`) refuses Ray, the S3 servers, Docker and a browser
to every test not marked integration, and the tiers follow what a test asks for."""

from __future__ import annotations

import subprocess
import sys

import pytest
import ray
from moto.server import ThreadedMotoServer

from tests.conftest import SERVER_FIXTURES, StartsServer


def test_ray_init_is_refused() -> None:
    with pytest.raises(StartsServer, match="started Ray"):
        ray.init()
    assert not ray.is_initialized()


def test_moto_server_is_refused() -> None:
    with pytest.raises(StartsServer, match="moto"):
        ThreadedMotoServer(ip_address="127.0.0.1", port=0).start()


@pytest.mark.parametrize("program", [[f"{sys.prefix}/bin/ray", "start", "--head"], ["weed", "server"],
                                     "ray start --head", ["docker", "run", "busybox"]])
def test_server_programs_are_refused(program) -> None:
    with pytest.raises(StartsServer, match="mark the test integration"):
        subprocess.run(program, shell=isinstance(program, str), check=False)


def test_other_programs_still_run() -> None:
    assert subprocess.run([sys.executable, "-c", "print('ok')"], capture_output=True, text=True,
                          check=True).stdout == "ok\n"


def test_tiers_follow_the_fixtures_a_test_asks_for(pytester: pytest.Pytester) -> None:
    """A test that asks for a server fixture, directly or through another fixture, is integration; one
    marked slow is too; the rest is pure."""
    pytester.makeconftest("import pytest\nfrom tests.conftest import pytest_collection_modifyitems, no_servers\n"
                          "@pytest.fixture\ndef s3():\n    return 's3'\n"
                          "@pytest.fixture\ndef bucket(s3):\n    return s3\n")
    pytester.makepyfile("import pytest\n"
                        "def test_pure():\n    pass\n"
                        "def test_direct(s3):\n    pass\n"
                        "def test_through(bucket):\n    pass\n"
                        "@pytest.mark.slow\ndef test_slow():\n    pass\n")
    pytester.makeini("[pytest]\nmarkers =\n    integration: x\n    slow: x\n    container: x\n    cluster: x\n")
    result = pytester.runpytest_inprocess("-m", "not integration", "--collect-only", "-q")
    collected = [line for line in result.outlines if "::" in line]
    assert [line.split("::")[1] for line in collected] == ["test_pure"], result.outlines
    assert "s3" in SERVER_FIXTURES
