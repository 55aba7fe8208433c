"""Reading records back: whole batches from an offset, corrupt ones skipped and counted.

Strategy: a reader takes the log's lock only to snapshot the segment list, their sizes
and ends, then reads without it, so fetches from reader threads never wait for an
append's write or the group commit's fsync (``_columns.fetch_columns`` does the same for
the column form). A batch whose CRC fails, or whose record framing is bad behind a good
CRC, is reported once (``Log._note_corrupt``) and skipped, never returned.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

from ._errors import CorruptBatch, OffsetOutOfRange
from ._records import StoredRecord, decode_records
from ._results import FetchResult
from ._segment import CorruptRange, Segment


def fetch_records(segments: Sequence[Segment], limits: Sequence[int], ends: Sequence[int],
                  offset: int, max_records: int, max_bytes: int,
                  note_corrupt: Callable[[CorruptRange], None]) -> FetchResult:
    """``Log.fetch`` over a snapshot of the segments with their sizes and ends."""
    start, end = segments[0].base_offset, ends[-1]
    if offset < start or offset > end:
        raise OffsetOutOfRange(offset, start, end)
    out: list[StoredRecord] = []
    skipped: list[CorruptRange] = []
    nbytes = 0
    i = bisect.bisect_right([s.base_offset for s in segments], offset) - 1
    pos = offset
    for seg, limit, seg_end in zip(segments[i:], limits[i:], ends[i:], strict=True):
        for item in seg.read_batches(pos, limit, seg_end):
            if isinstance(item, CorruptRange):
                note_corrupt(item)
                skipped.append(item)
                pos = max(pos, item.last + 1)
                continue
            info, view = item
            if out and nbytes + info.size > max_bytes:
                return FetchResult(out, pos, skipped)
            try:
                records = decode_records(view, info)
            except CorruptBatch:  # a good CRC around bad record framing
                bad = CorruptRange(seg.base_offset, info.position, info.size,
                                   info.base_offset, info.last_offset)
                note_corrupt(bad)
                skipped.append(bad)
                pos = max(pos, info.next_offset)
                continue
            for rec in records:
                if rec.offset >= pos:
                    out.append(rec)
                    if len(out) >= max_records:
                        return FetchResult(out, rec.offset + 1, skipped)
            nbytes += info.size
            pos = info.next_offset
        pos = max(pos, seg_end)
    return FetchResult(out, pos, skipped)
