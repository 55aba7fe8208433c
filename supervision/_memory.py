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
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024
ARENA_MAX = 2


def limit_malloc() -> bool:
    """Apply the settings above; False when the C library does not take them."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                    and libc.mallopt(_M_ARENA_MAX, ARENA_MAX))
    except (OSError, AttributeError):
        return False
