"""The log's space (a mixin of ``Log``): the full policy, deletion and retention.

Strategy: all three free space the same way, by deleting whole segments from the start
(``_delete_first``), under the log's lock, from the writer. The full policy acts when
an append would pass ``max_bytes`` (``_make_room``) or when the file system itself says
ENOSPC (``_drop_for_disk``): ``reject_new`` refuses the batch and touches nothing,
``drop_oldest`` deletes its own oldest segments, counting each range it drops and
telling ``on_drop``. A deleted segment's space comes back when its file is closed, which
waits for the last holder of the segment: a reader, or the group commit's fsync, which
runs outside the lock (``_flush_idle`` says when none runs).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from ._config import FullPolicy, LogConfig
from ._errors import LogFull
from ._results import LogStats
from ._segment import Segment

#: most an append on a full disk waits for a flush to let go of a deleted segment's file
FLUSH_WAIT_S = 5.0


class SpaceControl:
    """Uses the log's ``config``, ``stats``, lock, segment list, size and ``_roll``."""

    directory: Path
    config: LogConfig
    stats: LogStats
    on_drop: Callable[[int, int], None] | None
    _lock: threading.RLock
    _segments: list[Segment]
    _bases: list[int]
    _size: int
    _flush_idle: threading.Event
    _roll: Callable[[], None]

    def _drop_for_disk(self) -> bool:
        """The file system is full (ENOSPC): under drop_oldest, this log gives up its own
        oldest segment, as it would for its size cap, and the append is tried again. A
        log that fills a shared disk must not block the drop_oldest logs beside it.
        False when there is nothing left to give (reject_new, or an empty log)."""
        if self.config.full_policy is not FullPolicy.DROP_OLDEST:
            return False
        if len(self._segments) == 1:
            if not self._segments[0].size:
                # Everything is deleted, but a flush running outside the lock may still
                # hold the file of a deleted segment open, so its space is not back yet:
                # wait for that flush (it needs no lock to end) and try once more.
                return not self._flush_idle.is_set() and self._flush_idle.wait(FLUSH_WAIT_S)
            self._roll()
        self._drop_first()
        return True

    def _make_room(self, nbytes: int, nrecords: int) -> None:
        cap = self.config.max_bytes
        if cap is None or self._size + nbytes <= cap:
            return
        if nbytes > cap:
            raise LogFull(f"a batch of {nbytes} bytes is larger than the log cap of {cap} bytes")
        if self.config.full_policy is FullPolicy.REJECT_NEW:
            raise LogFull(
                f"log {self.directory.name} is full ({self._size} of {cap} bytes); "
                "the batch was rejected and nothing existing was touched"
            )
        while self._size + nbytes > cap:
            if len(self._segments) == 1:
                if not self._segments[0].size:
                    break
                self._roll()
            self._drop_first()

    def _drop_first(self) -> None:
        """Delete the oldest segment for the full policy, counting it and telling
        ``on_drop`` which offsets went."""
        seg = self._segments[0]
        self.stats.dropped_records += seg.next_offset - seg.base_offset
        self.stats.dropped_bytes += seg.size
        self._delete_first()
        if self.on_drop is not None:
            self.on_drop(seg.base_offset, seg.next_offset)

    def _delete_first(self) -> None:
        seg = self._segments.pop(0)
        self._bases.pop(0)
        self._size -= seg.size
        seg.delete()

    # -- deletion and retention ----------------------------------------------------------

    def delete_before(self, offset: int) -> int:
        """Delete whole sealed segments whose records are all below ``offset``.

        The edge calls this with the offset the cloud acknowledged. Returns the number of
        records deleted. The active segment is never deleted.
        """
        deleted = 0
        with self._lock:
            while len(self._segments) > 1 and self._segments[0].next_offset <= offset:
                seg = self._segments[0]
                deleted += seg.next_offset - seg.base_offset
                self._delete_first()
        return deleted

    def enforce_retention(self, now: float | None = None) -> int:
        """Apply retention_bytes and retention_ms to sealed segments; returns records deleted."""
        now = time.time() if now is None else now
        cfg = self.config
        deleted = 0
        with self._lock:
            while len(self._segments) > 1:
                seg = self._segments[0]
                too_big = cfg.retention_bytes is not None and self._size > cfg.retention_bytes
                too_old = cfg.retention_ms is not None and (
                    (now - seg.mtime) * 1000 > cfg.retention_ms
                )
                if not (too_big or too_old):
                    break
                deleted += seg.next_offset - seg.base_offset
                self._delete_first()
            self.stats.retention_deleted_records += deleted
        return deleted

