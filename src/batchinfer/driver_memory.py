"""What keeps the driver's memory flat over a run, however many inputs it has (issue #16).

Three things grew with the number of inputs although nothing the job needs did:

- **Ray Data's per-block stats.** Every operator keeps a `BlockStats` record (row count, size, timings,
  node) for every block it outputs, in the driver, for the dataset's stats summary (Ray 2.60:
  `MapOperator._get_next_inner` appends to `_output_blocks_stats`). With 64-image blocks (photos) that is
  three records per 64 images: about 50 MiB at 1 M images, 5 GiB at 100 M. `BoundedBlockStats` keeps the
  newest STATS_KEPT per operator; the summary then describes those blocks only.
- **Queued blocks of paths.** The listing runs far ahead of decode, and the split cuts its output into
  blocks of 64–256 paths (pipeline.decode_batch), a few KiB each. Ray Data's backpressure counts
  bytes, so thousands of them queued ahead of decode, each costing the driver about 10 KiB of
  bookkeeping (its ObjectRef, metadata and schema): about 45 MiB at 1 M images on CPU, where the
  object-store limit finally stopped them, and nothing stopped them on GPU. `QueuedBlocksCap`, a backpressure policy added to Ray Data's own,
  holds an operator back while QUEUED_BLOCKS of its blocks wait for its consumers.
- **The heap's freed pages.** The scheduling loop's short-lived allocations, made from several
  threads, leave free chunks scattered through glibc's arenas, which glibc does not return to the OS
  by itself: RSS crept up while the live heap (`mallinfo2` in-use bytes) stayed flat. `heap_trimmed`
  calls `malloc_trim(0)`, which releases every whole free page of every arena, every few seconds (as
  Dask's workers do). Free chunks smaller than a page stay, in every arena: glibc gives each new
  thread an arena of its own, up to 8 per core, and the driver's threads (Ray's core worker and gRPC,
  Ray Data's executor, the commit's copy pool) each fragment theirs. `limit_heap_arenas` makes them
  share HEAP_ARENAS (glibc's M_ARENA_MAX, the `MALLOC_ARENA_MAX` variable). On a C library without
  these (musl, macOS) both do nothing.

The first two reach into Ray Data's internals (`ray_compat`: on an untested Ray they are left out, and
the driver grows as Ray Data lets it). A fourth, the write tasks' results, which Ray Data's
`write_datasink` keeps to the end, costs about 8 KiB a write task: under 1 MiB at 1 M images of the
default 10,000-row files (docs/benchmarks.md, "The write at the default --rows-per-file").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ray.data import DataContext

from batchinfer import ray_compat

TRIM_INTERVAL_S = 5.0  # a trim walks the arenas in milliseconds
HEAP_ARENAS = 2        # glibc malloc arenas the driver's threads share (glibc's default: 8 per core)
M_ARENA_MAX = -8       # mallopt's parameter for the arena cap (glibc's malloc.h)
STATS_KEPT = 100       # BlockStats kept per operator (the newest)
QUEUED_BLOCKS = 1000   # blocks an operator may have waiting for its consumers: 64,000–256,000 paths ahead of decode


def cap_queued_blocks(context: DataContext) -> None:
    """Hold an operator back while QUEUED_BLOCKS of its blocks wait for its consumers (ray_compat.QueuedBlocksCap)."""
    ray_compat.cap_queued_blocks(context, QUEUED_BLOCKS)


def bound_block_stats(context: DataContext) -> None:
    """Keep Ray Data's newest STATS_KEPT block stats records per operator (ray_compat.BoundedBlockStats)."""
    ray_compat.bound_block_stats(context, STATS_KEPT)


def _libc_function(name: str) -> ctypes._CFuncPtr | None:
    """A glibc malloc function, or None where the C library has none of that name."""
    library = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(library), name) if library else None
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _libc_function("malloc_trim")
_MALLOPT = _libc_function("mallopt")


def limit_heap_arenas(arenas: int = HEAP_ARENAS) -> bool:
    """Have threads that start from now on share `arenas` glibc arenas (arenas that exist stay); True
    when the C library took the setting. Called before the driver joins Ray, whose threads start then."""
    return bool(_MALLOPT(M_ARENA_MAX, arenas)) if _MALLOPT is not None else False


def trim_heap() -> bool:
    """Release the heap's free pages to the OS now; True when some were released."""
    return bool(_MALLOC_TRIM(0)) if _MALLOC_TRIM is not None else False


@contextmanager
def heap_trimmed(interval_s: float = TRIM_INTERVAL_S) -> Iterator[None]:
    """Trim the heap every `interval_s` seconds, from a daemon thread, while the block runs."""
    if _MALLOC_TRIM is None:
        yield
        return
    stop = threading.Event()

    def trim_until_stopped() -> None:
        while not stop.wait(interval_s):
            trim_heap()

    thread = threading.Thread(target=trim_until_stopped, name="batchinfer-heap-trim", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        trim_heap()
