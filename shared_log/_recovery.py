"""Opening a log: find its segments, recover the ones a crash may have touched.

Strategy: the ``recovery-point`` checkpoint says that every offset below it was fsynced
when it was written (at every roll and at close), so only the segments from the one
holding that offset on are looked at, and a large log opens in time proportional to one
segment. Of those, only the last (the active one) is verified batch by batch and may lose
a torn tail; the others were fsynced whole when rolled and only get their index checked.
Damage found on the way is reported through ``note_corrupt`` and skipped by readers.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable
from pathlib import Path

from ._files import LOG_SUFFIX, fsync_dir, parse_segment_name, read_checkpoint
from ._results import LogStats
from ._segment import CorruptRange, Segment

RECOVERY_POINT = "recovery-point"


def open_segments(directory: Path, index_interval: int, read_only: bool, stats: LogStats,
                  note_corrupt: Callable[[CorruptRange], None]) -> list[Segment]:
    """The log's segments in offset order, recovered; a new log gets one empty segment.

    Raises FileNotFoundError for a read-only open of a directory without segments."""
    bases = sorted(
        b for name in os.listdir(directory)
        if (b := parse_segment_name(name, LOG_SUFFIX)) is not None
    ) if directory.exists() else []
    created = not bases
    if created:
        if read_only:
            raise FileNotFoundError(f"no log segments in {directory}")
        bases = [0]
    segments = [Segment(directory, b, index_interval, read_only=read_only) for b in bases]
    if created:
        fsync_dir(directory)  # the new log's first segment survives a power loss
    for seg, nxt in zip(segments, bases[1:], strict=False):
        seg.next_offset = nxt  # offsets a damaged sealed segment lost stay reserved
        seg.sealed = True  # its index is loaded on a read, and may leave memory again
    raw = read_checkpoint(directory / RECOVERY_POINT, None)
    rp = raw.get("offset") if isinstance(raw, dict) else None
    first = max(0, bisect.bisect_right(bases, rp) - 1) if isinstance(rp, int) else 0
    last = len(segments) - 1
    for i in range(first, last + 1):
        stats.truncated_bytes_on_open += segments[i].recover(
            truncate=not read_only, sealed=i < last)
        for damage in segments[i].recovered_damage:
            note_corrupt(damage)
    return segments
