"""Finding the next good batch in a segment after damage: the readers' and the
recovery's resynchronisation, apart from ``Segment`` (whose file and index they read).

Strategy: first the sparse index (an entry whose batch verifies is a safe restart point,
but good batches may lie before it), then a byte scan for the batch header's magic
(at offset 8 of a header), each candidate verified by ``_batch_at``. ``seg`` is a
``_segment.Segment``, not imported here (that would be an import circle).
"""

from __future__ import annotations

import os
from typing import Any

Segment = Any  # _segment.Segment


def resync(seg: Segment, position: int, limit: int, min_offset: int, end_offset: int
           ) -> tuple[int, int] | None:
    """Find the next verifiable batch at or after ``position``: (position, base_offset)."""
    seg.ensure_index()
    # Not strict: the writer may be adding an entry (positions grow first).
    for pos, rel in zip(seg.index.positions, seg.index.offsets, strict=False):
        off = seg.base_offset + rel
        if pos >= position and pos < limit and off >= min_offset:
            info = seg._batch_at(pos)
            if info is not None and info.base_offset == off:
                # There may be good batches before this index entry; look there first.
                found = byte_scan(seg, position, pos, min_offset, end_offset)
                return found or (pos, off)
    return byte_scan(seg, position, limit, min_offset, end_offset)


def byte_scan(seg: Segment, position: int, limit: int, min_offset: int, end_offset: int
              ) -> tuple[int, int] | None:
    data = os.pread(seg._file.fileno(), limit - position, position)
    i = data.find(b"\x01\x00", 8)
    while i != -1:
        cand = position + i - 8
        info = seg._batch_at(cand)
        if (
            info is not None
            and min_offset <= info.base_offset < end_offset
            and info.position + info.size <= limit
        ):
            return cand, info.base_offset
        i = data.find(b"\x01\x00", i + 1)
    return None
