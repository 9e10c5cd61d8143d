"""Ctrl-C handling (interrupts.py, cli.main) in a process of its own, no Ray: a second Ctrl-C while the
first one's unwinding hangs ends the process at once with the line that says so, whichever of the main
thread's handler and the counting thread sees it first; an error a library raises in place of the
KeyboardInterrupt ends the command as interrupted. The lease and the job here are stand-ins (a release
that hangs, as a real one does on a frozen store; a job that turns Ctrl-C into an error, as Ray Data
torn down mid-call can). A finished command ends its process without exit hooks, where a Ctrl-C could
still end it with no line. tests/reliability/test_interrupts.py interrupts real runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from batchinfer.interrupts import EXIT_INTERRUPTED, RESUME, SAME_CTRL_C_S

HANGING_RELEASE = """
import sys, time
from batchinfer import interrupts

class HangingLease:
    output_uri = "s3://bucket/out/"
    def __enter__(self):
        return self
    def __exit__(self, *exc_info):
        print("releasing", flush=True)
        time.sleep(60)

with interrupts.handled(restore=False):
    try:
        with interrupts.holding(HangingLease()):
            print("running", flush=True)
            time.sleep(60)
    except KeyboardInterrupt:
        interrupts.say(interrupts.interrupted_line())
        interrupts.end_process(interrupts.EXIT_INTERRUPTED)
"""


def interrupted(script: str, *args: str, second_after: str | None = None) -> tuple[int, str]:
    """Run `script` with `args`; Ctrl-C once it prints "running", and again once it prints `second_after`
    (a separate Ctrl-C, not the same one seen twice). Its exit status and stderr."""
    process = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        for expected in ("running", second_after):
            if expected is None:
                break
            line = process.stdout.readline()
            assert line.strip() == expected, (line, process.stderr.read() if process.poll() is not None else "")
            if expected == second_after:
                time.sleep(SAME_CTRL_C_S + 0.2)
            os.kill(process.pid, signal.SIGINT)
        status = process.wait(timeout=15)
    finally:
        process.kill()
    return status, process.stderr.read()


def test_a_second_ctrl_c_while_the_release_hangs_stops_at_once() -> None:
    status, stderr = interrupted(HANGING_RELEASE, second_after="releasing")
    assert status == EXIT_INTERRUPTED, stderr
    assert stderr.count("batchinfer: interrupted") == 1, stderr
    assert "(a second Ctrl-C: stopped at once)" in stderr, stderr
    assert "its lease on s3://bucket/out/ was left behind" in stderr, stderr
    assert "Traceback" not in stderr, stderr


ERROR_IN_PLACE = """
import sys, time
from batchinfer import cli, pipeline

def run_job(config):
    try:
        print("running", flush=True)
        time.sleep(60)
    except KeyboardInterrupt:
        raise RuntimeError("the actor died") from None  # what a library may make of Ctrl-C

pipeline.run_job = run_job
sys.exit(cli.main())
"""


def test_an_error_raised_in_place_of_ctrl_c_ends_the_command_as_interrupted() -> None:
    status, stderr = interrupted(ERROR_IN_PLACE, "run", "--input", "s3://bucket/in/", "--output", "s3://bucket/out/")
    assert status == EXIT_INTERRUPTED, stderr
    assert stderr.strip().splitlines()[-1] == f"batchinfer: interrupted; {RESUME}", stderr
    assert "Traceback" not in stderr and "job failed" not in stderr, stderr


FINISHED_WITH_EXIT_HOOK = """
import atexit, sys
from batchinfer import cli, pipeline

atexit.register(lambda: print("exit hook ran", flush=True))  # as Ray's own (ray.shutdown), seconds long

def run_job(config):
    return pipeline.JobResult(pipeline.JobStatus.ALREADY_COMPLETE, config.output_uri)

pipeline.run_job = run_job
sys.exit(cli.main())
"""


def test_a_finished_command_ends_its_process_before_any_exit_hook() -> None:
    """Once the command's last line is out, no exit hook runs (Ray's take seconds; a Ctrl-C in them, or
    once Python has given SIGINT back its default, ended a finished run with no line: status -2)."""
    done = subprocess.run([sys.executable, "-c", FINISHED_WITH_EXIT_HOOK, "run", "--input", "s3://bucket/in/",
                           "--output", "s3://bucket/out/"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == ["s3://bucket/out/ is already complete; nothing to resume"]
