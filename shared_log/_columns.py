"""Columnar reads: the records of a fetch as parallel columns, with no object per record.

Strategy: ``Log.fetch`` builds one ``StoredRecord`` per record. That is the right API for
most callers, but on the broker's consumer path (whose wire format is columnar anyway,
docs/consumers.md) building those objects costs more than everything else together.
``fetch_columns`` walks the same CRC-checked batches as ``Log.fetch`` (same range check,
same corrupt-range reporting and counting, same "whole batches, at least one" rule for
``max_bytes``) and decodes each batch straight into columns. It can also stop at an
``end`` offset, so the broker never serves records above the durable high watermark.
``fetch_batches`` is the same walk handing out the verified batches themselves, for a
reader whose wire format is record-by-record (Kafka's) and that converts each batch in
one pass rather than decoding it to columns and encoding the columns again.
tests/shared_log/test_log_columns.py checks both against ``Log.fetch``.

Concurrency: as ``Log.fetch``: safe in reader threads while the one writer appends.
"""

from __future__ import annotations

import bisect
import struct
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._errors import CorruptBatch, LogClosed, OffsetOutOfRange
from ._records import HEADER_SIZE, BatchInfo, StoredRecord
from ._segment import CorruptRange

if TYPE_CHECKING:
    from ._log import Log

_REC = struct.Struct(">qIIH")
_HDR = struct.Struct(">HI")


@dataclass(slots=True)
class RecordColumns:
    """Records as columns. Record ``i`` has ``header_counts[i]`` headers, stored in order
    in ``header_name_index`` (into ``header_names``) and ``header_values``."""

    runs: list[list[int]] = field(default_factory=list)  # [first_offset, count], ascending
    timestamps: array = field(default_factory=lambda: array("q"))
    keys: list[bytes] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    header_counts: array = field(default_factory=lambda: array("H"))
    header_names: list[str] = field(default_factory=list)
    header_name_index: array = field(default_factory=lambda: array("H"))
    header_values: list[bytes] = field(default_factory=list)
    _name_ids: dict[bytes, int] = field(default_factory=dict, repr=False)
    #: False: headers are skipped, not read (every ``header_counts[i]`` is 0); for readers
    #: of payloads only, to whom decoding headers would be half the cost of a fetch
    with_headers: bool = True

    def __len__(self) -> int:
        return len(self.keys)

    def offsets(self) -> Iterator[int]:
        for first, count in self.runs:
            yield from range(first, first + count)

    def rows(self) -> Iterator[StoredRecord]:
        """The records as StoredRecord objects (for callers that want rows)."""
        names, index, hvalues = self.header_names, self.header_name_index, self.header_values
        h = 0
        for i, off in enumerate(self.offsets()):
            n = self.header_counts[i]
            headers = tuple((names[index[j]], hvalues[j]) for j in range(h, h + n))
            h += n
            yield StoredRecord(off, self.keys[i], self.values[i], self.timestamps[i], headers)

    def add_batch(self, view: memoryview | bytes, info: BatchInfo, first: int, stop: int) -> None:
        """Append the records of a verified batch whose offsets are in [first, stop)."""
        buf = bytes(view)
        pos = HEADER_SIZE
        unpack, hunpack = _REC.unpack_from, _HDR.unpack_from
        try:
            for _ in range(first - info.base_offset):  # records before ``first``: skip
                _ts, kl, vl, hc = unpack(buf, pos)
                pos += 18 + kl + vl
                for _h in range(hc):
                    nl, hl = hunpack(buf, pos)
                    pos += 6 + nl + hl
            pos = (self._decode(buf, pos, stop - first) if self.with_headers
                   else self._decode_bare(buf, pos, stop - first))
        except (struct.error, UnicodeDecodeError) as exc:
            raise CorruptBatch(f"bad record framing in batch at byte {info.position}",
                               position=info.position, first_offset=info.base_offset) from exc
        if stop == info.next_offset and pos != info.size:
            raise CorruptBatch(f"record framing does not fill batch at byte {info.position}",
                               position=info.position, first_offset=info.base_offset)
        runs = self.runs
        if runs and runs[-1][0] + runs[-1][1] == first:
            runs[-1][1] += stop - first
        else:
            runs.append([first, stop - first])

    def _decode_bare(self, buf: bytes, pos: int, n: int) -> int:
        """``_decode`` without the headers: walked over (framing still checked), not read."""
        unpack, hunpack = _REC.unpack_from, _HDR.unpack_from
        ts_add, key_add, value_add = self.timestamps.append, self.keys.append, self.values.append
        hc_add = self.header_counts.append
        for _ in range(n):
            ts, kl, vl, hc = unpack(buf, pos)
            pos += 18
            ts_add(ts)
            end = pos + kl
            key_add(buf[pos:end])
            pos = end + vl
            value_add(buf[end:pos])
            hc_add(0)
            while hc:
                nl, hl = hunpack(buf, pos)
                pos += 6 + nl + hl
                hc -= 1
        if len(buf) < pos:
            raise struct.error("record runs past the end of its batch")
        return pos

    def _decode(self, buf: bytes, pos: int, n: int) -> int:
        # The hot loop of the consumer path: locals only, one slice per field.
        unpack, hunpack = _REC.unpack_from, _HDR.unpack_from
        ts_add, key_add, value_add = self.timestamps.append, self.keys.append, self.values.append
        hc_add, hi_add = self.header_counts.append, self.header_name_index.append
        hv_add = self.header_values.append
        name_ids = self._name_ids
        for _ in range(n):
            ts, kl, vl, hc = unpack(buf, pos)
            pos += 18
            ts_add(ts)
            end = pos + kl
            key_add(buf[pos:end])
            pos = end + vl
            value_add(buf[end:pos])
            hc_add(hc)
            while hc:
                nl, hl = hunpack(buf, pos)
                pos += 6
                end = pos + nl
                name = buf[pos:end]
                idx = name_ids.get(name)
                if idx is None:
                    idx = name_ids[name] = len(self.header_names)
                    self.header_names.append(name.decode())
                hi_add(idx)
                pos = end + hl
                hv_add(buf[end:pos])
                hc -= 1
        if len(buf) < pos:
            raise struct.error("record runs past the end of its batch")
        return pos


@dataclass(frozen=True, slots=True)
class ColumnFetch:
    """What ``fetch_columns`` found: columns, where to continue, offsets lost to corruption."""

    columns: RecordColumns
    next_offset: int
    skipped: list[CorruptRange]


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """A CRC-checked batch as stored (``data``: header and records, docs/log-format.md)
    and the offsets ``[first, stop)`` of it that a read returns. For readers that turn
    batches into their own wire format in one pass (the broker's Kafka listener) instead
    of building columns first. Its record framing is not checked yet: the reader that
    walks it must raise CorruptBatch where it is broken, as ``add_batch`` does."""

    data: bytes
    info: BatchInfo
    first: int
    stop: int


@dataclass(frozen=True, slots=True)
class BatchFetch:
    """What ``fetch_batches`` found: batches, where to continue, offsets lost to corruption."""

    batches: list[StoredBatch]
    next_offset: int
    skipped: list[CorruptRange]

    @property
    def count(self) -> int:
        return sum(b.stop - b.first for b in self.batches)


def fetch_columns(log: Log, offset: int, max_records: int = 1000, max_bytes: int = 1 << 20,
                  end: int | None = None, *, headers: bool = True) -> ColumnFetch:
    """``Log.fetch`` as columns, not reading at or above ``end`` (default: the log end);
    ``headers=False`` skips the record headers (``RecordColumns.with_headers``).

    Raises OffsetOutOfRange below the start or above the log end; from ``end`` up to the
    log end it returns no records and ``next_offset == offset``.
    """
    cols = RecordColumns(with_headers=headers)
    nxt, skipped = _walk(log, offset, max_records, max_bytes, end, cols.add_batch)
    return ColumnFetch(cols, nxt, skipped)


def fetch_batches(log: Log, offset: int, max_records: int = 1000, max_bytes: int = 1 << 20,
                  end: int | None = None) -> BatchFetch:
    """``fetch_columns`` (same range check, limits, ``end`` and corrupt-range rules) as
    the stored batches themselves, each with the offsets of it that are returned."""
    out: list[StoredBatch] = []

    def take(view: memoryview | bytes, info: BatchInfo, first: int, stop: int) -> None:
        out.append(StoredBatch(bytes(view), info, first, stop))
    nxt, skipped = _walk(log, offset, max_records, max_bytes, end, take)
    return BatchFetch(out, nxt, skipped)


def _walk(log: Log, offset: int, max_records: int, max_bytes: int, end: int | None,
          take: Callable[[memoryview, BatchInfo, int, int], None]
          ) -> tuple[int, list[CorruptRange]]:
    """The verified batches of a read, handed to ``take(view, info, first, stop)``; the
    next offset and the corrupt ranges met."""
    if max_records < 1 or max_bytes < 1:
        raise ValueError("max_records and max_bytes must be >= 1")
    with log._lock:
        if log._closed:
            raise LogClosed(f"log {log.directory} is closed")
        segments = list(log._segments)
        limits = [s.size for s in segments]
        ends = [s.next_offset for s in segments]
    start, log_end = segments[0].base_offset, ends[-1]
    if offset < start or offset > log_end:
        raise OffsetOutOfRange(offset, start, log_end)
    stop_at = log_end if end is None else min(end, log_end)
    skipped: list[CorruptRange] = []
    pos, nbytes, got = offset, 0, 0
    if pos >= stop_at:
        return pos, skipped
    i = bisect.bisect_right([s.base_offset for s in segments], offset) - 1
    for seg, limit, seg_end in zip(segments[i:], limits[i:], ends[i:], strict=True):
        for item in seg.read_batches(pos, limit, seg_end):
            if isinstance(item, CorruptRange):
                if item.first >= stop_at:
                    return pos, skipped
                log._note_corrupt(item)
                skipped.append(item)
                pos = item.last + 1
                continue
            info, view = item
            if info.base_offset >= stop_at or (got and nbytes + info.size > max_bytes):
                return pos, skipped
            first = max(pos, info.base_offset)
            stop = min(info.next_offset, stop_at, first + max_records - got)
            take(view, info, first, stop)
            got += stop - first
            nbytes += info.size
            pos = stop
            if got >= max_records or pos >= stop_at:
                return pos, skipped
        pos = min(max(pos, seg_end), stop_at)
    return pos, skipped
