"""glibc malloc settings for the long-running servers (the edge agent, the broker).

Strategy: two ``mallopt`` calls at start, before any worker thread allocates. Both
processes handle large, short-lived buffers (uplink batches, compressed bodies, decoded
blocks) from the event loop and from worker threads (fsync, compression). By default
glibc raises its mmap threshold each time a large mmapped block is freed, after which
such buffers come from the heap and fragment it, and each worker thread gets an arena of
its own (up to 8 per core) whose free space is rarely returned: RSS then creeps up with
every burst and never comes down. A fixed threshold keeps large buffers mmapped (returned
to the system on free) and two arenas bound the per-thread heaps. A no-op where glibc is
not the allocator. Measured in docs/reliability.md (the soak's leak runs).

``start_heap_trimmer`` handles what the two settings cannot: after a burst (a backlog
poured in at once when a stalled process catches up) the heap holds many MB of free
chunks below live ones, which glibc only gives back from the top of the heap. The RSS
then stays at the burst's high water for the rest of the process's life (a 5 MB step
per burst in the agent, docs/reliability.md). Every ``every_s`` a daemon thread reads
the free space inside the heap and, when it exceeds ``min_free``, calls
``malloc_trim(0)``, which returns the free pages inside the heap, not only its top. The
call holds the arena locks for about a millisecond per 100 MB of heap; it runs only
after a burst, never on a steady heap.

``FullCollections`` makes up for the collector settings both servers take at start
(``tune_gc``: start-up objects frozen, young generation collected every 20,000 net
allocations): with them a full collection comes so rarely that cyclic garbage which
reached the old generation stays for hours. A closed HTTP connection is such a cycle
(uvicorn's protocol, its transport and the request cycle): 300 short connections to a
broker left 300 of each alive until a full collection freed them all, which is the slow
RSS growth of the broker in the soak's leak runs (docs/reliability.md). One full
collection a minute, on the event loop, scans only what is not frozen: a few ms.

``start_memory_log`` is the diagnostic those runs used: cheap figures from inside the
process (tracemalloc slows a process at 5,000 readings/s so much that the run measures
its own backlog instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import gc
import json
import os
import sys
import threading
import time

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024
ARENA_MAX = 2


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")  # runs ldconfig: once
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def limit_malloc() -> bool:
    """Apply the settings above; False when the C library does not take them."""
    libc = _libc()
    if libc is None:
        return False
    try:
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                    and libc.mallopt(_M_ARENA_MAX, ARENA_MAX))
    except AttributeError:
        return False


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def memory_figures() -> dict[str, object]:
    """RSS, glibc's heap (in use, free inside it, mmapped), Python's allocated blocks and
    the collector's generation counts.

    Which of these grows tells a leak of Python objects (blocks) from allocator retention
    (glibc free space) from neither (native code, pymalloc fragmentation). No census of
    objects by type: ``gc.get_objects`` from another thread can catch a tuple being built
    and make its owner fail (``SystemError``), so a live process only gets counters."""
    out: dict[str, object] = {"t": round(time.time(), 1), "pid": os.getpid()}
    with contextlib.suppress(OSError, ValueError), open("/proc/self/statm") as f:
        out["rss"] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    mi = _mallinfo()
    if mi is not None:
        out.update(heap_in_use=mi.uordblks, heap_free=mi.fordblks, heap_mmapped=mi.hblkhd)
    out["py_blocks"] = sys.getallocatedblocks()
    out["gc_counts"] = gc.get_count()
    return out


def _mallinfo() -> _MallInfo2 | None:
    libc = _libc()
    try:
        libc.mallinfo2.restype = _MallInfo2  # type: ignore[union-attr]
        return libc.mallinfo2()  # type: ignore[union-attr,no-any-return]
    except (AttributeError, TypeError):  # not glibc, or glibc < 2.33
        return None


def heap_free() -> int | None:
    """Free bytes inside glibc's heap (not returned to the system); None elsewhere."""
    mi = _mallinfo()
    return None if mi is None else int(mi.fordblks)


def trim_heap(min_free: int = 0) -> bool:
    """``malloc_trim(0)`` when the heap holds more than ``min_free`` free bytes; True
    when it ran and gave memory back."""
    free = heap_free()
    if free is None or free <= min_free:
        return False
    try:
        return bool(_libc().malloc_trim(0))  # type: ignore[union-attr]
    except AttributeError:
        return False


HEAP_TRIM_EVERY_S = 30.0
HEAP_TRIM_MIN_FREE = 1024 * 1024  # a 12 MB heap is trimmed in well under 1 ms


def start_heap_trimmer(every_s: float = HEAP_TRIM_EVERY_S, min_free: int = HEAP_TRIM_MIN_FREE,
                       stop: threading.Event | None = None) -> threading.Thread | None:
    """Run ``trim_heap(min_free)`` every ``every_s`` seconds from a daemon thread until
    ``stop`` is set (see the module docstring); None where the C library has no heap
    figures."""
    if heap_free() is None:
        return None
    stopped = stop or threading.Event()

    def loop() -> None:
        while not stopped.wait(every_s):
            trim_heap(min_free)

    thread = threading.Thread(target=loop, name="heap-trim", daemon=True)
    thread.start()
    return thread


FULL_COLLECT_EVERY_S = 60.0


class FullCollections:
    """``gc.collect()`` every ``every_s`` seconds on ``loop`` until ``cancel`` (see the
    module docstring); on the loop, so finalizers run where the objects lived."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 every_s: float = FULL_COLLECT_EVERY_S) -> None:
        self.loop, self.every_s, self.runs = loop, every_s, 0
        self._handle: asyncio.TimerHandle | None = loop.call_later(every_s, self._run)

    def _run(self) -> None:
        gc.collect()
        self.runs += 1
        if self._handle is not None:
            self._handle = self.loop.call_later(self.every_s, self._run)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def start_memory_log(role: str) -> threading.Thread | None:
    """With ``MEMORY_LOG_DIR`` set: append ``memory_figures`` to
    ``<dir>/memory-<role>-<pid>.jsonl`` every ``MEMORY_LOG_EVERY_S`` (default 30) seconds
    from a daemon thread. A diagnostic for leak runs (``python -m device_simulator.soak
    --memory-log``), off by default."""
    directory = os.environ.get("MEMORY_LOG_DIR")
    if not directory:
        return None
    every = float(os.environ.get("MEMORY_LOG_EVERY_S", "30"))
    path = os.path.join(directory, f"memory-{role}-{os.getpid()}.jsonl")

    def loop() -> None:
        while True:
            time.sleep(every)
            with contextlib.suppress(OSError), open(path, "a") as f:
                f.write(json.dumps(memory_figures()) + "\n")

    os.makedirs(directory, exist_ok=True)
    thread = threading.Thread(target=loop, name="memory-log", daemon=True)
    thread.start()
    return thread
