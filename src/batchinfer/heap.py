"""The driver's heap: hand freed memory back to the operating system while the pipeline runs.

The driver's live heap stays flat over a run (glibc `mallinfo2`: in-use bytes do not grow with the number
of inputs), but the scheduling loop's short-lived allocations, made from several threads, leave free
chunks scattered through glibc's arenas; glibc returns only the top of an arena by itself, so the driver's
RSS crept up with N. `malloc_trim(0)` releases every whole free page in every arena (as Dask's workers
do). On a libc without it (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Iterator
from contextlib import contextmanager

TRIM_INTERVAL_S = 5.0  # a trim walks the arenas in milliseconds


def _malloc_trim() -> ctypes._CFuncPtr | None:
    """glibc's malloc_trim, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim") if name else None
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim()


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
