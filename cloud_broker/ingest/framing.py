"""From an uplink RecordBlock to one framed shared_log batch body per partition.

Strategy: this is the broker's ingest hot loop, so it goes from the decoded columns
straight to shared_log's record framing (``RECORD_HEAD``, ``HEADER_HEAD``; see
docs/log-format.md) with no ``Record`` object per record, and appends each record's
pieces to its partition's list in one ``+=``. Every record gains the ``origin`` header
``edge/stream/generation/offset`` (what the ingest rebuilds its per-partition marks
from after a crash) and goes to ``partition_for(key)``; records at or below their
partition's floor (the highest edge offset of this source it already holds) are
skipped, which is what makes retries and replays harmless (cloud_broker.ingest).

Pure: no I/O, no state but the partition cache the caller owns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared_log import HEADER_HEAD, RECORD_HEAD
from uplink import RecordBlock

from .partitioner import partition_for

ORIGIN_HEADER = "origin"
_ORIGIN = ORIGIN_HEADER.encode()
_ORIGIN_LEN = len(_ORIGIN)


@dataclass(slots=True)
class PartitionPart:
    """The framed records of one partition: ``b"".join(pieces)`` is the batch body."""

    pieces: list[bytes] = field(default_factory=list)
    count: int = 0
    max_timestamp: int = -1
    last_offset: int = -1  # the highest edge offset in it


def frame_block(block: RecordBlock, partitions: int, floors: list[int],
                cache: dict[bytes, int], prefix: bytes) -> tuple[list[PartitionPart], int]:
    """Frame ``block`` per partition; returns the parts (empty ones included) and how
    many records were skipped as already stored. ``prefix`` is ``b"edge/stream/gen/"``."""
    parts = [PartitionPart() for _ in range(partitions)]
    rec, hdr = RECORD_HEAD.pack, HEADER_HEAD.pack
    cached = cache.get
    dedup = 0
    counts = block.header_counts
    if counts is None:
        rows = zip(block.keys, block.values, block.timestamps, block.offsets, strict=True)
        for key, value, ts, offset in rows:
            p = cached(key)
            if p is None:
                p = cache[key] = partition_for(key, partitions)
            if offset <= floors[p]:
                dedup += 1
                continue
            origin = b"%s%d" % (prefix, offset)
            part = parts[p]
            part.pieces += (rec(ts, len(key), len(value), 1), key, value,
                            hdr(_ORIGIN_LEN, len(origin)), _ORIGIN, origin)
            part.count += 1
            if ts > part.max_timestamp:
                part.max_timestamp = ts
            part.last_offset = offset
        return parts, dedup
    names = [name.encode() for name in block.header_names]
    index, hvalues = block.header_index, block.header_values
    h = 0
    rows = zip(block.keys, block.values, block.timestamps, block.offsets, counts, strict=True)
    for key, value, ts, offset, n in rows:
        p = cached(key)
        if p is None:
            p = cache[key] = partition_for(key, partitions)
        if offset <= floors[p]:
            dedup += 1
            h += n
            continue
        part = parts[p]
        pieces = part.pieces
        pieces += (rec(ts, len(key), len(value), n + 1), key, value)
        for j in range(h, h + n):
            name, hvalue = names[index[j]], hvalues[j]
            pieces += (hdr(len(name), len(hvalue)), name, hvalue)
        h += n
        origin = b"%s%d" % (prefix, offset)
        pieces += (hdr(_ORIGIN_LEN, len(origin)), _ORIGIN, origin)
        part.count += 1
        if ts > part.max_timestamp:
            part.max_timestamp = ts
        part.last_offset = offset
    return parts, dedup
