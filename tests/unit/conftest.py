"""The unit tier (`make test-unit`): no S3 server, no Ray cluster, by construction.

Every test here runs with `ray.init` refused and with no `ray` or `weed` (SeaweedFS) program allowed to
start, and may not ask for the session fixtures that start them (tests/conftest.py): a test that needs
a real server or cluster belongs outside tests/unit, where it is marked `integration`."""

from __future__ import annotations

import os
import subprocess

import pytest
import ray

SERVER_FIXTURES = frozenset({"s3", "s3_options", "samples", "cli_env", "ray_cluster"})
SERVER_PROGRAMS = frozenset({"ray", "weed"})


class StartsServer(AssertionError):
    """A unit test tried to start Ray or the S3 server."""


@pytest.fixture(autouse=True)
def no_servers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    used = SERVER_FIXTURES.intersection(request.fixturenames)
    if used:
        pytest.fail(f"unit tests run without an S3 server or Ray cluster, but this one asks for "
                    f"{', '.join(sorted(used))}: move it out of tests/unit", pytrace=False)

    def refuse_ray_init(*args: object, **kwargs: object) -> None:
        raise StartsServer("a unit test started Ray (ray.init): move it out of tests/unit")

    popen_init = subprocess.Popen.__init__

    def guarded_popen(self: subprocess.Popen, args, *rest: object, **kwargs: object) -> None:
        program = args if isinstance(args, (str, bytes, os.PathLike)) else args[0]
        name = os.path.basename(os.fsdecode(program).split()[0])
        if name in SERVER_PROGRAMS:
            raise StartsServer(f"a unit test started `{name}`: move it out of tests/unit")
        popen_init(self, args, *rest, **kwargs)

    if ray.is_initialized():  # left connected by an integration test that ran before, in the same process
        ray.shutdown()
    monkeypatch.setattr(ray, "init", refuse_ray_init)
    monkeypatch.setattr(subprocess.Popen, "__init__", guarded_popen)
