"""User mistakes found against real storage and models end before any heavy work with exit status 2 and
one line that says what to fix. Bad flags and values, without a server: tests/unit/test_cli.py."""

from __future__ import annotations

from tests.support import run_cli


def assert_one_line_error(result, *needles: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0]


def test_wrong_secret(s3, samples, cli_env) -> None:
    env = {**cli_env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    result = run_cli(["run", "--input", samples["images"], "--output", "s3://samples/out/x/"], env)
    assert_one_line_error(result, "denied", "AWS_SECRET_ACCESS_KEY")


def test_unknown_model(s3, samples, cli_env) -> None:
    result = run_cli(["run", "--input", samples["images"], "--output", "s3://samples/out/x/",
                      "--model", "resnet9000"], cli_env)
    assert_one_line_error(result, "unknown model 'resnet9000'")
