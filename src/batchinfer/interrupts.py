"""Ctrl-C ends a `batchinfer` command, always, within seconds (issue #33).

The first SIGINT raises KeyboardInterrupt in the main thread, as Python's own handler does, so the run
unwinds: Ray Data stops its tasks, the output's lease is released, cli.main prints one line and ends the
process with status 130 (`end_process`). It also starts a grace period: if the process is still alive
GRACE_S later (its unwinding hangs, or the KeyboardInterrupt never reached cli.main), it prints the line
and exits 130 anyway, first releasing the lease if it can within RELEASE_S. A second Ctrl-C exits at once.

Both are counted by a thread of ours, woken through Python's signal wakeup fd (`signal.set_wakeup_fd`),
not by the Python-level handler: that one runs only when the main thread next executes Python, which it
may not do for a long time while it waits inside Ray's C++ code.

While the output is being committed (`committing`), Ctrl-C is held back until the commit is done; the
run then exits 130 saying the output was committed. A second Ctrl-C there exits at once, leaving the
output uncommitted (`--resume` finishes it).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when needed: the handler is in place before the heavy imports (boto3, Ray)
    from batchinfer.lease import Lease

EXIT_INTERRUPTED = 130
GRACE_S = 10.0   # after the first Ctrl-C, the most the run gets to end by itself
SAME_CTRL_C_S = 0.5  # SIGINTs this close together are one Ctrl-C (see `_count`)
RELEASE_S = 5.0  # ... after which a forced exit spends at most this long removing the output's lease
RESUME = "rerun with --resume to keep what was finished"


class InterruptedAfterCommit(KeyboardInterrupt):
    """Ctrl-C came during the commit, which was finished first: the output is complete."""


class _Interrupts:
    """One command's Ctrl-C handling: how many came, the lease the run holds, the output it is
    committing or has committed."""

    def __init__(self) -> None:
        self.count = 0
        self.handled = 0  # SIGINTs Python's handler has run for (`in_main_thread`)
        self.lease: "Lease | None" = None
        self.committing: str | None = None
        self.committed: str | None = None
        self.finished = False  # the command has returned: only Ray's and Python's exit hooks are left
        self._grace: threading.Thread | None = None
        self._said = threading.Lock()
        self._line_printed = False
        self._reader, self._writer = os.pipe()
        os.set_blocking(self._writer, False)  # signal.set_wakeup_fd needs it so

    def install(self) -> int:
        """Take over SIGINT; returns the wakeup fd it replaced."""
        signal.signal(signal.SIGINT, self.in_main_thread)
        self._previous_unraisable, sys.unraisablehook = sys.unraisablehook, self._unraisable
        previous = signal.set_wakeup_fd(self._writer, warn_on_full_buffer=False)
        threading.Thread(target=self._count, name="batchinfer-ctrl-c", daemon=True).start()
        return previous

    def in_main_thread(self, signum: int, frame: FrameType | None) -> None:
        """Python's handler: KeyboardInterrupt, except during the commit and in the exit hooks (the
        grace period ends those). Its second run is a second Ctrl-C, which ends the process here: raising
        again would abort the first one's unwinding (e.g. the lease's release, waiting on a frozen store)
        and end the run as if it had finished unwinding, before `_count` has seen that second Ctrl-C."""
        self.handled += 1
        if self.handled > 1:
            self.exit_now("a second Ctrl-C", release=False)
        if self.finished:
            return
        if self.committing:
            print(f"batchinfer: Ctrl-C: finishing the commit of {self.committing} first (Ctrl-C again stops "
                  "at once and leaves it unfinished)", file=sys.stderr, flush=True)
            return
        raise KeyboardInterrupt

    def _count(self) -> None:
        """Count the Ctrl-Cs the wakeup fd reports (a byte per SIGINT, from any thread, no GIL needed).
        SIGINTs within SAME_CTRL_C_S of the last are the same Ctrl-C: the process group's SIGINT also
        reaches a child the driver is forking (Ray starts its processes so), whose inherited handler
        writes to our pipe until it execs."""
        last = -SAME_CTRL_C_S
        while numbers := os.read(self._reader, 64):  # b"": `uninstall` closed the other end
            now = time.monotonic()
            if signal.SIGINT not in numbers or now - last < SAME_CTRL_C_S:
                continue
            last = now
            self.count += 1
            if self.count > 1:
                self.exit_now("a second Ctrl-C", release=False)
            if not self.committing:
                self.start_grace()
        os.close(self._reader)

    def _unraisable(self, unraisable: "sys.UnraisableHookArgs") -> None:
        """Python drops an exception raised where it cannot propagate, e.g. a KeyboardInterrupt raised in
        a fork callback (logging's `_releaseLock`, as ray.init forks): stay quiet about it, the grace
        period ends the run."""
        if not issubclass(unraisable.exc_type, KeyboardInterrupt):
            self._previous_unraisable(unraisable)

    def uninstall(self, previous_handler: object, previous_fd: int) -> None:
        """Give SIGINT back to `previous_handler` and the wakeup fd to `previous_fd`."""
        signal.signal(signal.SIGINT, previous_handler)
        sys.unraisablehook = self._previous_unraisable
        signal.set_wakeup_fd(previous_fd)
        os.close(self._writer)

    def start_grace(self) -> None:
        if self._grace is None:
            self._grace = threading.Thread(target=self._grace_then_exit, name="batchinfer-grace", daemon=True)
            self._grace.start()

    def _grace_then_exit(self) -> None:
        time.sleep(GRACE_S)
        self.exit_now(f"still running {GRACE_S:g} s after Ctrl-C", release=True)

    def line(self, forced: str | None = None, lease_left: bool = False) -> str:
        """The one line an interrupted command ends with."""
        if self.committed:
            return (f"batchinfer: interrupted after the commit: {self.committed} is complete (its report may be "
                    f"missing: `batchinfer report {self.committed}` builds it)")
        during = f" during the commit of {self.committing}, left unfinished" if self.committing else ""
        how = f" ({forced}: stopped at once)" if forced else ""
        lease = ""
        if lease_left and self.lease is not None:
            from batchinfer.lease import LEASE_TTL_S

            lease = (f"; its lease on {self.lease.output_uri} was left behind and expires {LEASE_TTL_S:g} s "
                     f"after the run's last heartbeat: rerun after that, or add --wait-for-lease "
                     f"{2 * LEASE_TTL_S:g}")
        return f"batchinfer: interrupted{during}{how}; {RESUME}{lease}"

    def say(self, line: str) -> None:
        """Print the command's last line, once (the main thread and a forced exit may both get there)."""
        with self._said:
            if not self._line_printed:
                self._line_printed = True
                print(line, file=sys.stderr, flush=True)

    def exit_now(self, why: str, release: bool) -> None:
        """End the process now, exit status 130, skipping Ray's and Python's clean-up (a local Ray's
        processes end with it: Ray starts them with a parent-death signal)."""
        lease_left = self.lease is not None and not (release and self._release_lease())
        self.say(self.line(forced=why, lease_left=lease_left))
        os._exit(EXIT_INTERRUPTED)

    def _release_lease(self) -> bool:
        """Remove the output's lease from another thread, waiting at most RELEASE_S; True when done."""
        lease = self.lease
        if lease is None:
            return True
        releasing = threading.Thread(target=lease.release, name="batchinfer-release", daemon=True)
        releasing.start()
        releasing.join(RELEASE_S)
        return not releasing.is_alive() and lease.token is None


_STATE: _Interrupts | None = None


@contextmanager
def handled(restore: bool) -> Iterator[None]:
    """Handle Ctrl-C as above in the block (cli.main runs a command in it). With `restore`, the previous
    handler is back after the block, unless Ctrl-C came (the grace period then still runs)."""
    global _STATE
    _STATE = _Interrupts()
    previous_handler = signal.getsignal(signal.SIGINT)
    previous_fd = _STATE.install()
    try:
        yield
    finally:
        if restore and not _STATE.count:
            _STATE.uninstall(previous_handler, previous_fd)
            _STATE = None
        else:
            _STATE.finished = True


def interrupted_line() -> str:
    """The line cli.main prints for a KeyboardInterrupt."""
    return _STATE.line() if _STATE else f"batchinfer: interrupted; {RESUME}"


def say(line: str) -> None:
    """Print the command's last line, unless a forced exit already did."""
    if _STATE:
        _STATE.say(line)
    else:
        print(line, file=sys.stderr, flush=True)


def end_process(status: int) -> None:
    """End the command's process now with `status`, its output flushed. Python's and Ray's exit hooks
    are skipped: they take seconds, in which a Ctrl-C could still end a finished run otherwise (in a
    terminal Ray's core worker was seen to end the process with status 1 as it shut down, "The core
    worker has already been shutdown"; once Python finalizes, SIGINT is back to its default and kills the
    process with no line, status -2). A local Ray's processes end with ours (Ray starts them with a
    parent-death signal); a joined cluster sees the driver gone, as it does when the driver exits."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def raise_if_interrupted() -> None:
    """KeyboardInterrupt if Ctrl-C came although none reached here: a library swallowed it, or turned it
    into an error of its own (Ray Data torn down mid-call): after a Ctrl-C, that error is the interruption."""
    if _STATE and (_STATE.count or _STATE.handled):
        raise KeyboardInterrupt


@contextmanager
def holding(lease: "Lease") -> "Iterator[Lease]":
    """Hold `lease` in the block and release it when the block ends; a forced exit releases it first."""
    if _STATE:
        _STATE.lease = lease
    try:
        with lease:
            yield lease
    finally:
        if _STATE:
            _STATE.lease = None


@contextmanager
def committing(output_uri: str) -> Iterator[None]:
    """Hold Ctrl-C back while the block commits `output_uri`; once it has, raise InterruptedAfterCommit
    if Ctrl-C came meanwhile. A commit never starts after Ctrl-C. Outside `handled`, does nothing."""
    state = _STATE
    if state is None:
        yield
        return
    state.committing = output_uri  # before looking at the count: a Ctrl-C from now on is held back
    if state.count:
        state.committing = None
        raise KeyboardInterrupt
    try:
        yield
    finally:
        state.committing = None
    state.committed = output_uri
    if state.count:
        state.start_grace()
        raise InterruptedAfterCommit
