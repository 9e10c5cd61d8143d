"""The driver's heap trimming and arena cap (batchinfer.driver_memory) against real glibc: this process's heap
and RSS, and a fresh interpreter's arenas."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from batchinfer import driver_memory as heap

pytestmark = pytest.mark.skipif(heap._MALLOC_TRIM is None, reason="the C library has no malloc_trim (not glibc)")

CHUNK = 1024          # above pymalloc's 512-byte limit: each object is a glibc malloc chunk
CHUNKS = 96 * 1024    # about 100 MiB in all
KEEP_EVERY = 64       # one chunk kept per 64 KiB: whole free pages between them, none at the arena's top


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) / 1024


def _allocate_chunks() -> list[bytes]:
    """CHUNKS live glibc malloc chunks of CHUNK bytes."""
    return [bytes(CHUNK) + bytes([index % 251]) for index in range(CHUNKS)]


def _keep_few(chunks: list[bytes]) -> list[bytes]:
    """Every KEEP_EVERY-th chunk and the last: once the caller drops `chunks`, the freed memory lies
    between live chunks, where glibc's free() never returns it to the OS by itself."""
    return [chunk for index, chunk in enumerate(chunks) if index % KEEP_EVERY == 0 or index == CHUNKS - 1]


def _fragmented_heap() -> list[bytes]:
    """Allocate CHUNKS chunks and free all but every KEEP_EVERY-th one (and the last)."""
    return _keep_few(_allocate_chunks())


def _poll(condition, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_trim_hands_freed_pages_back() -> None:
    heap.trim_heap()
    kept = _fragmented_heap()
    before = _rss_mib()
    assert heap.trim_heap() is True
    released = before - _rss_mib()
    assert released > 50, f"malloc_trim released {released:.0f} MiB of about 100 MiB freed"
    assert len(kept) == CHUNKS // KEEP_EVERY + 1


def test_heap_trimmed_trims_while_the_block_runs_and_stops_after() -> None:
    heap.trim_heap()
    with heap.heap_trimmed(interval_s=0.05):
        chunks = _allocate_chunks()
        high = _rss_mib()  # read before the frees: the thread may trim as soon as they happen
        kept = _keep_few(chunks)
        del chunks
        assert _poll(lambda: high - _rss_mib() > 50), "the trimming thread never released the freed pages"
        assert any(thread.name == "batchinfer-heap-trim" for thread in threading.enumerate())
    assert not any(thread.name == "batchinfer-heap-trim" for thread in threading.enumerate())
    assert kept


ARENA_THREADS = 8
_THREADS_MALLOC = f"""
import ctypes, sys, threading
from batchinfer import driver_memory
if sys.argv[1] == "limited":
    assert driver_memory.limit_heap_arenas(2)
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
all_allocated = threading.Barrier({ARENA_THREADS})
def allocate():  # each thread's first malloc takes an arena: a new one while glibc's cap allows
    pointer = libc.malloc(1 << 16)
    all_allocated.wait()
    libc.free(ctypes.c_void_p(pointer))
threads = [threading.Thread(target=allocate) for _ in range({ARENA_THREADS})]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc.malloc_stats()  # glibc prints one "Arena N:" section per arena to stderr
"""


def _arenas(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _THREADS_MALLOC, mode], capture_output=True, text=True,
                          timeout=120, check=True)
    return sum(line.startswith("Arena ") for line in done.stderr.splitlines())


def test_limit_heap_arenas_makes_new_threads_share_arenas() -> None:
    """Real glibc in a fresh interpreter: threads started after the cap share 2 arenas."""
    assert _arenas("default") > 2
    assert _arenas("limited") == 2
