"""The unit tier's guard (tests/unit/conftest.py) refuses Ray and the S3 server."""

from __future__ import annotations

import subprocess
import sys

import pytest
import ray

from tests.unit.conftest import StartsServer


def test_ray_init_is_refused() -> None:
    with pytest.raises(StartsServer, match="started Ray"):
        ray.init()
    assert not ray.is_initialized()


@pytest.mark.parametrize("program", [[f"{sys.prefix}/bin/ray", "start", "--head"], ["weed", "server"],
                                     "ray start --head"])
def test_server_programs_are_refused(program) -> None:
    with pytest.raises(StartsServer, match="move it out of tests/unit"):
        subprocess.run(program, shell=isinstance(program, str), check=False)


def test_other_programs_still_run() -> None:
    assert subprocess.run([sys.executable, "-c", "print('ok')"], capture_output=True, text=True,
                          check=True).stdout == "ok\n"
