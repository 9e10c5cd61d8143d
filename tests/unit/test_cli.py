"""The command line, in process: a bad flag or value ends with exit status 2 and one line on stderr
that names it, before Ray or storage is touched (the unit tier's guard would fail the test otherwise).
Mistakes found against real storage and models: tests/test_cli.py."""

from __future__ import annotations

import pytest

from batchinfer.cli import EXIT_USER_ERROR, failure_reason, main

RUN = ["run", "--input", "s3://b/in/", "--output", "s3://b/out/"]


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize(("argv", "needles"), [
    ([*RUN, "--batch-size", "0"], ["--batch-size", "must be at least 1, got 0"]),
    ([*RUN, "--top-k", "many"], ["--top-k", "expected a whole number, got 'many'"]),
    ([*RUN, "--device", "tpu"], ["--device", "invalid choice: 'tpu'"]),
    ([*RUN, "--precision", "fp8"], ["--precision", "invalid choice: 'fp8'"]),
    ([*RUN, "--num-workers", "4-2"], ["--num-workers", "expected 1 <= MIN <= MAX, got '4-2'"]),
    ([*RUN, "--num-workers", "lots"], ["--num-workers", "expected N or MIN-MAX"]),
    ([*RUN, "--num-workers", "0"], ["--num-workers", "expected 1 <= MIN <= MAX, got '0'"]),
    ([*RUN, "--storage-timeout", "0"], ["--storage-timeout", "must be greater than 0, got 0"]),
    ([*RUN, "--stall-timeout", "-1"], ["--stall-timeout", "must be greater than 0, got -1"]),
    ([*RUN, "--num-gpus-per-worker", "-1"], ["--num-gpus-per-worker", "must be greater than 0"]),
    ([*RUN, "--wait-for-lease", "soon"], ["--wait-for-lease", "expected a number, got 'soon'"]),
    ([*RUN, "--no-such-flag"], ["unrecognized arguments: --no-such-flag"]),
    (["run", "--output", "s3://b/out/"], ["the following arguments are required: --input"]),
    (["frobnicate"], ["invalid choice: 'frobnicate'"]),
    ([], ["the following arguments are required: command"]),
])
def test_bad_flags_are_one_line_exit_2(argv, needles, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == EXIT_USER_ERROR
    line = one_line(capsys.readouterr().err)
    assert line.startswith("batchinfer") and line.endswith("--help)")
    for needle in needles:
        assert needle in line


@pytest.mark.parametrize(("flags", "needle"), [
    (["--resume", "--overwrite"], "--resume and --overwrite contradict each other"),
    (["--label-from-path", "([^/]+/"], "--label-from-path is not a valid regular expression"),
    (["--wait-for-lease", "-5"], "--wait-for-lease must be 0 or more seconds"),
    (["--weights", ""], "--weights must be 'default', 'none' or a checkpoint URI"),
])
def test_bad_values_are_one_line_exit_2(flags, needle, capsys) -> None:
    assert main([*RUN, *flags]) == EXIT_USER_ERROR
    line = one_line(capsys.readouterr().err)
    assert line.startswith("batchinfer: error: ") and needle in line


def test_failure_reason_prefers_our_own_error_in_a_wrapped_traceback() -> None:
    """Ray passes a task's error on as text: the line naming a batchinfer error is the reason."""
    try:
        try:
            raise ValueError("inner detail")
        except ValueError as inner:
            raise RuntimeError("Ray task failed:\nbatchinfer.storage.StorageUnavailable: store down for 5 s") from inner
    except RuntimeError as wrapped:
        assert failure_reason(wrapped) == "store down for 5 s"


def test_failure_reason_falls_back_to_the_innermost_cause() -> None:
    try:
        try:
            raise OSError("disk full\nwhile writing part-00000.parquet")
        except OSError as inner:
            raise RuntimeError("write failed") from inner
    except RuntimeError as outer:
        assert failure_reason(outer) == "while writing part-00000.parquet"
