"""Which sealed segments keep their index in memory: those a reader used lately.

Strategy: a sealed segment drops its index from memory when it is sealed
(``Segment.seal``), and a reader that needs it loads it again from its file
(``Segment.ensure_index``). Without this module it then stayed loaded for the rest of the
segment's life: a consumer that read through the history of a partition (or only across
a segment roll, as every consumer at the tail does) left every index it passed in
memory, so a process's memory grew with the data it retained (the soak's leak runs:
docs/reliability.md). Each sealed segment whose index was loaded is recorded here, least
recently used first; on each use the ones idle for ``IDLE_S`` and any beyond
``MAX_BYTES`` in all are dropped (loaded again on their next read, from the file: a
reader that scans on never notices). The active segment's index is never dropped.

One registry per process, shared by every log in it, so the bound holds however many
partitions a broker serves. Segments are dropped outside the registry's lock (a drop
takes the segment's own lock; ``ensure_index`` never calls in here holding it).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Protocol

#: a sealed segment's index not used for this long is dropped from memory
IDLE_S = 60.0
#: at most this many bytes of sealed segments' indexes in memory, per process
MAX_BYTES = 32 * 1024 * 1024


class _Droppable(Protocol):
    def index_bytes(self) -> int: ...

    def drop_index(self) -> None: ...


class LoadedIndexes:
    def __init__(self, idle_s: float = IDLE_S, max_bytes: int = MAX_BYTES) -> None:
        self.idle_s, self.max_bytes = idle_s, max_bytes
        self._lru: OrderedDict[int, tuple[_Droppable, float, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def bytes(self) -> int:
        return self._bytes

    def touch(self, seg: _Droppable, now: float | None = None) -> None:
        """``seg`` (sealed, index loaded) was just used; drop what is past the bounds."""
        now = time.monotonic() if now is None else now
        victims = []
        with self._lock:
            key = id(seg)
            old = self._lru.pop(key, None)
            size = old[2] if old is not None else seg.index_bytes()
            if old is None:
                self._bytes += size
            self._lru[key] = (seg, now, size)
            while self._lru:
                k, (s, used, n) = next(iter(self._lru.items()))
                if k == key or (now - used < self.idle_s and self._bytes <= self.max_bytes):
                    break
                del self._lru[k]
                self._bytes -= n
                victims.append(s)
        for s in victims:
            s.drop_index()

    def forget(self, seg: _Droppable) -> None:
        """``seg`` dropped its index, or is closed or deleted."""
        with self._lock:
            old = self._lru.pop(id(seg), None)
            if old is not None:
                self._bytes -= old[2]


#: the process's registry
LOADED = LoadedIndexes()
