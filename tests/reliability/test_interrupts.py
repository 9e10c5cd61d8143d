"""Ctrl-C at each phase of a real `batchinfer run` (issue #33): SIGINT to the driver's process group, as a
terminal sends it, during start-up, listing, the pipeline and the commit. The run exits 130 with one line
and no traceback, or, in the commit, finishes the commit first and says so; it leaves its lease released,
and a `--resume` completes the output (run here after the pipeline and commit tests, and in the slow tier
after every interrupted run). HANG_S only tells a hang from a slow machine: no test fails on a speed.

The start-up test and the random-moment test run the driver on a local Ray of its own (no RAY_ADDRESS),
whose processes (GCS, raylet, dashboard, agents) share the driver's process group, as in a terminal; the
other runs join the session's cluster, where only the driver is in the group."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from batchinfer.interrupts import EXIT_INTERRUPTED, GRACE_S
from batchinfer.lease import LEASE
from devkit.seaweed import SeaweedServer
from tests.reliability.catalog import photo_crops
from tests.reliability.conftest import Driver, job_env, keys, meta, read_output, upload
from tests.support import RAY_ENV, S3Forwarder, forwarding, wait_until

BUCKET = "interrupts"
PHOTOS = 48
JOB_ARGS = ["--model", "resnet18", "--weights", "none", "--batch-size", "4", "--rows-per-file", "4",
            "--top-k", "1"]
HANG_S = 120  # a run still alive this long after Ctrl-C hangs (by design it is gone GRACE_S + RELEASE_S after)
RESUME = "rerun with --resume to keep what was finished"
RUN_STARTED = "batchinfer: run "                # printed once the run holds the output's lease
DATASET_STARTED = "Starting execution of Dataset"  # Ray Data: a dataset starts executing
COMMITTING = "batchinfer: committing "
LONG_PHOTOS = 240  # the input of the mid-pipeline and frozen-store tests (`long_store`)
SUMMARY_DELAY_S = 4.0  # the commit test's store holds the summary's write this long: Ctrl-C lands mid-commit


@pytest.fixture(scope="module")
def photos(store) -> str:
    upload(store, BUCKET, {f"photos/{index:04d}.jpg": data for index, data in enumerate(photo_crops(PHOTOS, 96))})
    return f"s3://{BUCKET}/photos/"


def local_ray_env(server: SeaweedServer) -> dict[str, str]:
    """A driver that starts a local Ray of its own, as `batchinfer run` in a terminal does."""
    env = {**os.environ, **server.env(), **RAY_ENV}
    env.pop("RAY_ADDRESS", None)
    return env


def args_for(photos: str, prefix: str, *extra: str) -> list[str]:
    return ["--input", photos, "--output", f"s3://{BUCKET}/{prefix}", *JOB_ARGS, *extra]


def wait_for_line(driver: Driver, text: str, timeout_s: float = 600) -> None:
    """Block until the driver has printed `text` (stdout or stderr)."""
    wait_until(lambda: text in driver.stdout + driver.stderr, timeout_s, repr(text), give_up=driver.ended,
               interval_s=0.05)


def ctrl_c(driver: Driver) -> tuple[int, float]:
    """SIGINT to the driver's process group, as a terminal's Ctrl-C; its exit status and the seconds it
    took to exit (a hang fails here)."""
    sent = time.monotonic()
    try:
        os.killpg(driver.process.pid, signal.SIGINT)
    except ProcessLookupError:
        pass  # it had just exited
    try:
        status = driver.wait(HANG_S)
    except subprocess.TimeoutExpired:
        driver.kill()
        pytest.fail(f"the run was still alive {HANG_S} s after Ctrl-C:\n{driver.stderr[-3000:]}")
    return status, time.monotonic() - sent


def last_line(driver: Driver) -> str:
    """The run's own last line (Ray's forwarded worker logs may still arrive after it)."""
    ours = [line for line in driver.stderr.splitlines() if line.startswith("batchinfer: ")]
    assert ours, driver.stderr[-3000:]
    return ours[-1]


def assert_interrupted(driver: Driver, status: int, says: str = RESUME) -> None:
    """Exit 130, no traceback, and one `batchinfer: interrupted…` line, the run's last, that says `says`
    (whether the run unwound by itself or was stopped GRACE_S after Ctrl-C)."""
    output = driver.stdout + driver.stderr
    assert status == EXIT_INTERRUPTED, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert last_line(driver).startswith("batchinfer: interrupted") and says in last_line(driver), output[-3000:]
    assert sum(text.startswith("batchinfer: interrupted") for text in driver.stderr.splitlines()) == 1


def assert_group_gone(driver: Driver) -> None:
    """Nothing the run started is left in its process group (a local Ray's processes went with it)."""
    def gone() -> bool:
        try:
            os.killpg(driver.process.pid, 0)
            return False
        except ProcessLookupError:
            return True

    wait_until(gone, HANG_S, "the run's process group to be empty")


def assert_lease_released(server: SeaweedServer, prefix: str) -> None:
    """The run removed its lease: a `--resume` can start at once."""
    assert not keys(server, BUCKET, meta(prefix) + LEASE)


def resume_completes(server: SeaweedServer, args: list[str], env: dict[str, str], logdir: Path,
                     *extra: str, inputs: int = PHOTOS) -> dict:
    """`--resume` right away completes the output: exactly one row per input, no error rows."""
    resumed = Driver([*args, "--resume", *extra], env, logdir)
    assert resumed.wait() == 0, resumed.stderr[-3000:]
    prefix = args[args.index("--output") + 1].removeprefix(f"s3://{BUCKET}/")
    table, summary, names = read_output(server, BUCKET, prefix)
    paths = table["path"].to_pylist()
    assert len(paths) == len(set(paths)) == inputs == summary["rows"] and summary["errors"] == 0
    assert prefix + "_SUCCESS" in names and not keys(server, BUCKET, meta(prefix) + "staging/")
    return summary


def test_ctrl_c_at_start_up(store, photos, tmp_path) -> None:
    """Ctrl-C as pre-flight starts (input check, model, a local Ray starting): exit 130, the local Ray's
    processes go too, and the lease was released."""
    args = args_for(photos, "start-up/")
    driver = Driver(args, local_ray_env(store), tmp_path / "interrupted", own_group=True)
    wait_for_line(driver, RUN_STARTED)
    status, took = ctrl_c(driver)
    assert_interrupted(driver, status)
    assert_group_gone(driver)
    assert_lease_released(store, "start-up/")
    print(f"start-up: exit {status} {took:.1f} s after Ctrl-C")


@pytest.mark.slow  # the gate keeps start-up; make test-slow runs every phase
def test_ctrl_c_while_listing(store, cluster, photos, tmp_path) -> None:
    """Ctrl-C as the input is listed (a --resume run lists every input first, as a dataset of its own):
    exit 130, and the lease was released."""
    args = args_for(photos, "listing/")
    driver = Driver([*args, "--resume"], job_env(store, cluster), tmp_path / "interrupted", own_group=True)
    wait_for_line(driver, DATASET_STARTED)
    status, took = ctrl_c(driver)
    assert_interrupted(driver, status)
    assert_lease_released(store, "listing/")
    print(f"listing: exit {status} {took:.1f} s after Ctrl-C")


@pytest.mark.slow
def test_ctrl_c_mid_pipeline(long_store, cluster, tmp_path) -> None:
    """Ctrl-C with results staged and more to do: nothing is committed, and `--resume` keeps what was
    staged and classifies only the rest."""
    args = args_for(f"s3://{BUCKET}/photos/", "pipeline/")
    driver = Driver(args, job_env(long_store, cluster), tmp_path / "interrupted", own_group=True)
    driver.wait_for_staged_files(long_store, BUCKET, "pipeline/", 1)
    status, took = ctrl_c(driver)
    assert COMMITTING not in driver.stdout, "the pipeline had ended before Ctrl-C"
    assert_interrupted(driver, status)
    assert not keys(long_store, BUCKET, "pipeline/_SUCCESS")
    print(f"pipeline: exit {status} {took:.1f} s after Ctrl-C")
    summary = resume_completes(long_store, args, job_env(long_store, cluster), tmp_path / "resumed",
                               inputs=LONG_PHOTOS)
    assert 0 < summary["resumed_rows"]
    assert summary["processed_this_run"] == LONG_PHOTOS - summary["resumed_rows"]


class SlowSummary(S3Forwarder):
    """Holds each write of a run's summary.json for SUMMARY_DELAY_S, then forwards it."""

    def refusal(self, headers: dict[str, str]) -> tuple[int, bytes] | None:
        if self.command == "PUT" and urlparse(self.path).path.endswith("/summary.json"):
            time.sleep(SUMMARY_DELAY_S)
        return None


@pytest.mark.slow
def test_ctrl_c_during_commit(store, cluster, photos, s3_options, tmp_path) -> None:
    """Ctrl-C once the commit has started (the store holds the summary's write back, so it lands
    mid-commit): the run says it finishes the commit first, does, and exits 130 saying the output is
    complete; `--resume` then finds it complete."""
    args = args_for(photos, "commit/")
    with forwarding(s3_options, SlowSummary) as slow:
        env = {**job_env(store, cluster), "AWS_ENDPOINT_URL": slow.endpoint}
        driver = Driver(args, env, tmp_path / "interrupted", own_group=True)
        wait_for_line(driver, COMMITTING)
        status, took = ctrl_c(driver)
    assert "batchinfer: Ctrl-C: finishing the commit of s3://interrupts/commit/ first" in driver.stderr
    assert_interrupted(driver, status, "interrupted after the commit: s3://interrupts/commit/ is complete")
    print(f"commit: exit {status} {took:.1f} s after Ctrl-C")
    table, summary, names = read_output(store, BUCKET, "commit/")
    assert "commit/_SUCCESS" in names and table.num_rows == summary["rows"] == PHOTOS
    again = Driver([*args, "--resume"], job_env(store, cluster), tmp_path / "resumed")
    assert again.wait() == 0 and "already complete" in again.stdout, again.stderr[-3000:]


# Each an interrupted run and its --resume: about 70 s apiece on a 2-core machine. Each CI run draws new
# moments, so the moments tried grow with every run; CTRL_C_RUNS=N tries more at once.
RANDOM_RUNS = int(os.environ.get("CTRL_C_RUNS", "4"))


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason="open bug (issue #33): with seed 715071507 (2026-12-07) run 1, Ctrl-C "
                   "23.6 s into a run whose inference actor was still pending did not end with exit 130")
def test_ctrl_c_at_random_moments(store, cluster, photos, tmp_path) -> None:
    """RANDOM_RUNS runs on a local Ray, each sent Ctrl-C at a random moment from its start to about its end:
    each exits 130 (or 0, had it finished first) with one line and no traceback, and `--resume`
    completes each output."""
    seed = int(os.environ.get("CTRL_C_SEED") or random.randrange(2**32))  # CTRL_C_SEED=N: a failed run again
    moments = random.Random(seed).sample(range(5, 600), RANDOM_RUNS)  # tenths of a second after the start
    print(f"seed {seed}")
    for index, tenths in enumerate(moments):
        args = args_for(photos, f"random-{index}/")
        driver = Driver(args, local_ray_env(store), tmp_path / f"{index}-interrupted", own_group=True)
        try:  # the moment, or the run's end if it comes first (no waiting past a finished run)
            driver.process.wait(timeout=tenths / 10)
            finished_first = True
        except subprocess.TimeoutExpired:
            finished_first = False
        status, took = (driver.process.returncode, 0.0) if finished_first else ctrl_c(driver)
        if status == 0:  # it had finished: Ctrl-C came after it, or as it exited
            assert "batchinfer summary" in driver.stdout and "Traceback" not in driver.stderr, driver.stderr[-3000:]
            ended = "finished first"
        else:
            assert_interrupted(driver, status, "batchinfer: interrupted")
            ended = last_line(driver)
        print(f"run {index}: Ctrl-C {tenths / 10:.1f} s after the start: exit {status} {took:.1f} s later; {ended}")
        assert_group_gone(driver)
        resume_completes(store, args, job_env(store, cluster), tmp_path / f"{index}-resumed",
                         "--wait-for-lease", "60")


@pytest.fixture
def long_store(tmp_path) -> SeaweedServer:
    """A SeaweedFS server of the test's own with LONG_PHOTOS photos: enough that the pipeline is still
    running when the first staged file is seen (the 48 of `photos` can all be classified within a second
    of it); the frozen-store tests freeze it."""
    server = SeaweedServer(workdir=tmp_path / "s3").start()
    upload(server, BUCKET, {f"photos/{index:04d}.jpg": data
                            for index, data in enumerate(photo_crops(LONG_PHOTOS, 96))})
    yield server
    server.stop()


def interrupted_while_frozen(server: SeaweedServer, cluster, prefix: str, logdir: Path,
                             second_after_s: float | None) -> tuple[Driver, list[str], int]:
    """A run sent Ctrl-C mid-pipeline while `server` is frozen (its lease cannot be released then), and
    a second one `second_after_s` later (None: none); the driver, its args and its exit status."""
    args = args_for(f"s3://{BUCKET}/photos/", prefix)
    driver = Driver(args, job_env(server, cluster), logdir, own_group=True)
    driver.wait_for_staged_files(server, BUCKET, prefix, 1)
    server.pause()
    try:
        assert COMMITTING not in driver.stdout, "the pipeline had ended before the store was frozen"
        if second_after_s is not None:
            os.killpg(driver.process.pid, signal.SIGINT)
            time.sleep(second_after_s)
        status, took = ctrl_c(driver)
    finally:
        server.resume()
    print(f"{prefix} exit {status} {took:.1f} s after the last Ctrl-C")
    return driver, args, status


@pytest.mark.slow
def test_ctrl_c_while_the_store_is_frozen(long_store, cluster, tmp_path) -> None:
    """Ctrl-C mid-pipeline with the object store frozen: unwinding waits on the store, so the run stops
    GRACE_S after Ctrl-C, exit 130, saying the lease was left behind; once the store is back,
    `--resume --wait-for-lease` completes the output."""
    driver, args, status = interrupted_while_frozen(long_store, cluster, "frozen/", tmp_path / "first", None)
    assert_interrupted(driver, status)
    assert f"(still running {GRACE_S:g} s after Ctrl-C: stopped at once)" in last_line(driver)
    assert "was left behind" in last_line(driver) and "--wait-for-lease 60" in last_line(driver)
    resume_completes(long_store, args, job_env(long_store, cluster), tmp_path / "resumed",
                     "--wait-for-lease", "60", inputs=LONG_PHOTOS)


@pytest.mark.slow
def test_second_ctrl_c_stops_at_once(long_store, cluster, tmp_path) -> None:
    """A second Ctrl-C while the first one's unwinding waits (on a frozen store): exit 130 at once, the
    line says so and that the lease was left behind. The output is left as the test above leaves it (staged
    files, the lease, nothing committed), which `--resume --wait-for-lease` completes there."""
    driver, _, status = interrupted_while_frozen(long_store, cluster, "twice/", tmp_path / "first", 1.0)
    assert_interrupted(driver, status)
    assert "(a second Ctrl-C: stopped at once)" in last_line(driver)
    assert "was left behind" in last_line(driver) and "--wait-for-lease 60" in last_line(driver)
    assert keys(long_store, BUCKET, meta("twice/") + LEASE)
    assert keys(long_store, BUCKET, meta("twice/") + "staging/")
    assert not keys(long_store, BUCKET, "twice/_SUCCESS")
