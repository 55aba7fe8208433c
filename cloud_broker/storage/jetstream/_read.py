"""Reading a partition's records out of its stream's messages (fetch, columns, replay).

Strategy: a message body is a shared_log batch, so reads are shared_log's own decoders
(CRC checked, ``decode_records`` / ``RecordColumns.add_batch``, or the batches as they
are for ``fetch_batches``) over the bodies of the
messages the view's index names for an offset range; the rules are the local store's
(whole messages, at least one, ``max_bytes`` counted in stored bytes, a corrupt message
reported in ``skipped`` and counted). Bodies come from the view's tail cache or, when
evicted, from the stream (``load``: one blocking call for all that are missing, served
by one batched request or by what the read-ahead already fetched, ``_readahead``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from shared_log import HEADER_HEAD as _HDR
from shared_log import RECORD_HEAD as _REC
from shared_log import (
    BatchFetch,
    ColumnFetch,
    CorruptBatch,
    CorruptRange,
    FetchResult,
    OffsetOutOfRange,
    Record,
    RecordColumns,
    StoredBatch,
    StoredRecord,
    decode_records,
    parse_header,
    verify_batch,
)
from shared_log import InvalidRecord as _Invalid

from .._replay import STEP_BYTES, STEP_RECORDS, replay_last_header
from ._view import PartitionView

Loader = Callable[[Sequence[int]], dict[int, bytes]]


def frame_records(records: Sequence[Record]) -> tuple[bytes, int, int]:
    """(body, count, max_timestamp) of ``records`` in shared_log's record framing."""
    if not records:
        raise _Invalid("a batch needs at least one record")
    parts: list[bytes] = []
    max_ts = -(2**63)
    try:
        for r in records:
            max_ts = max(max_ts, r.timestamp)
            parts += (_REC.pack(r.timestamp, len(r.key), len(r.value), len(r.headers)),
                      r.key, r.value)
            for name, value in r.headers:
                raw = name.encode()
                parts += (_HDR.pack(len(raw), len(value)), raw, value)
    except (struct.error, TypeError, AttributeError) as exc:
        raise _Invalid(f"record cannot be encoded: {exc}") from exc
    return b"".join(parts), len(records), max_ts


def _plan(view: PartitionView, offset: int, stop: int, max_records: int, max_bytes: int
          ) -> list[tuple[int, int, int, int]]:
    """(seq, base, count, size) of the messages a read from ``offset`` takes."""
    with view.lock:
        i = view.locate(offset)
        out: list[tuple[int, int, int, int]] = []
        records = nbytes = 0
        while 0 <= i < len(view.seqs) and view.bases[i] < stop and records < max_records:
            size = view.sizes[i]
            if out and nbytes + size > max_bytes:
                break
            out.append((view.seqs[i], view.bases[i], view.counts[i], size))
            records += view.bases[i] + view.counts[i] - max(offset, view.bases[i])
            nbytes += size
            i += 1
        return out


def _bodies(view: PartitionView, plan: list[tuple[int, int, int, int]], load: Loader
            ) -> dict[int, bytes]:
    found = {seq: body for seq, *_ in plan if (body := view.cached(seq)) is not None}
    missing = [seq for seq, *_ in plan if seq not in found]
    if missing:
        found.update(load(missing))
    return found


def _range(view: PartitionView, offset: int, end: int) -> None:
    if offset < view.start or offset > end:
        raise OffsetOutOfRange(offset, view.start, end)


class Reader:
    """Reads of one partition; ``corrupt_records`` counts what was lost to bad messages."""

    def __init__(self, view: PartitionView, load: Loader) -> None:
        self.view = view
        self.load = load
        self.corrupt_records = 0

    def _walk(self, offset: int, end: int, stop: int, max_records: int, max_bytes: int,
              take: Callable[[bytes, object, int, int], int]) -> tuple[int, list[CorruptRange]]:
        if max_records < 1 or max_bytes < 1:
            raise ValueError("max_records and max_bytes must be >= 1")
        _range(self.view, offset, end)
        plan = _plan(self.view, offset, stop, max_records, max_bytes)
        bodies = _bodies(self.view, plan, self.load)
        pos, got, skipped = offset, 0, []
        for seq, base, count, size in plan:
            first = max(pos, base)
            last = min(base + count, stop, first + max_records - got)
            if last <= first:
                break
            body = bodies.get(seq, b"")
            try:
                info = parse_header(body)
                verify_batch(body, info)
                if info.base_offset != base or info.count != count:
                    raise CorruptBatch(f"message {seq} holds offsets {info.base_offset}+"
                                       f"{info.count}, its headers say {base}+{count}")
                got += take(body, info, first, last)
            except CorruptBatch:
                self.corrupt_records += count
                skipped.append(CorruptRange(seq, 0, size, base, base + count - 1))
                last = base + count
            pos = last
        return pos, skipped

    def fetch(self, offset: int, max_records: int, max_bytes: int, end: int,
              durable: int) -> FetchResult:
        out: list[StoredRecord] = []

        def take(body: bytes, info: object, first: int, stop: int) -> int:
            recs = decode_records(body, info)  # type: ignore[arg-type]
            base = recs[0].offset if recs else first
            out.extend(recs[first - base:stop - base])
            return stop - first
        nxt, skipped = self._walk(offset, end, durable, max_records, max_bytes, take)
        return FetchResult(out, nxt, skipped)

    def fetch_columns(self, offset: int, max_records: int, max_bytes: int, end: int,
                      stop: int) -> ColumnFetch:
        cols = RecordColumns()

        def take(body: bytes, info: object, first: int, last: int) -> int:
            cols.add_batch(body, info, first, last)  # type: ignore[arg-type]
            return last - first
        nxt, skipped = self._walk(offset, end, stop, max_records, max_bytes, take)
        return ColumnFetch(cols, nxt, skipped)

    def fetch_batches(self, offset: int, max_records: int, max_bytes: int, end: int,
                      stop: int) -> BatchFetch:
        out: list[StoredBatch] = []

        def take(body: bytes, info: object, first: int, last: int) -> int:
            out.append(StoredBatch(body, info, first, last))  # type: ignore[arg-type]
            return last - first
        nxt, skipped = self._walk(offset, end, stop, max_records, max_bytes, take)
        return BatchFetch(out, nxt, skipped)

    def replay_header(self, start: int, end: int, name: str,
                      visit: Callable[[bytes], None]) -> int:
        return replay_last_header(
            lambda o: self.fetch(o, STEP_RECORDS, STEP_BYTES, end, end), start,
            lambda: end, name, visit)
