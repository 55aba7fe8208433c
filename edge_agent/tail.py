"""What the forwarder sends: the records of a range as the uplink's columns, from memory
when the range was just appended, from the log otherwise.

Strategy: under a steady load the forwarder sends what the ingest appended a commit ago,
so reading it back from the log (a read, a CRC check and a decode per record) redoes work
whose result is still in memory: the ``Record`` objects the ingest handed to
``Log.append``. ``TailCache`` keeps the last appended batches (the log calls ``add``
through its ``on_append`` hook: ``Log.append`` only, not ``append_framed``), keyed by
offset, up to ``max_bytes`` of stored size, and ``read_block`` builds a batch's columns
from them when they cover the whole range it would read from the log, with the same
limits (``max_records``; ``max_bytes`` counted in whole batches, at least one), so the
batch is the same, byte for byte (tests/edge_agent/test_tail.py). Anything else reads
the log: a range below the cache (a backlog, a rewind after a refusal, the first send
after a restart, when the cache is empty), a gap (an append the cache did not see), a
range the full policy deleted meanwhile (the caller starts at the log's start).

The log on disk stays the only source of truth: the cache holds exactly the records
written at those offsets by this process, only durable offsets are ever asked for (the
caller bounds the range by ``durable_offset``), and a restart starts with an empty
cache. Memory: what the ingest already built, kept a little longer; chunks the cloud
acked are dropped (``forget_below``), and the oldest go when ``max_bytes`` is reached.

Concurrency: the event loop's thread only (``add`` runs inside ``Log.append``, which the
ingest calls on the loop); ``add`` must not raise: the records are in the log by then.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Sequence

from shared_log import Log, OffsetOutOfRange, Record, RecordColumns, fetch_columns
from uplink import RecordBlock

#: stored bytes of records the forwarder's cache keeps (~0.5-0.7 s at 5,000 readings/s,
#: where a request's round trip is tens of ms). Not more: during an uplink outage nothing
#: is acked and the cache fills to its bound, and its records' objects (five or so per
#: record) stay alive until the catch-up; at 4 MiB that was ~140 k objects more at
#: once, and the pymalloc arenas they took stayed in the agent's RSS (the soak's RSS
#: floor rose with each outage). What the cache misses is read from the log.
TAIL_BYTES = 512 * 1024


class TailCache:
    """The last batches appended to one log, as the records given to ``Log.append``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        #: (base offset, records, stored size in bytes), in offset order
        self._chunks: deque[tuple[int, Sequence[Record], int]] = deque()
        self._bytes = 0
        self.records_from_memory = 0
        self.records_from_log = 0

    def __len__(self) -> int:
        return sum(len(c[1]) for c in self._chunks)

    def add(self, base: int, records: Sequence[Record], nbytes: int) -> None:
        """``Log.on_append``: ``records`` were appended at ``base`` as ``nbytes`` bytes."""
        chunks = self._chunks
        if chunks:
            b, recs, _n = chunks[-1]
            if b + len(recs) != base:  # something was appended unseen: start again
                self.clear()
        chunks.append((base, records, nbytes))
        self._bytes += nbytes
        while self._bytes > self.max_bytes and len(chunks) > 1:
            self._bytes -= chunks.popleft()[2]

    def forget_below(self, offset: int) -> None:
        """Drop the batches wholly below ``offset`` (acked: never asked for again)."""
        chunks = self._chunks
        while chunks and chunks[0][0] + len(chunks[0][1]) <= offset:
            self._bytes -= chunks.popleft()[2]

    def clear(self) -> None:
        self._chunks.clear()
        self._bytes = 0

    def block(self, start: int, end: int, max_records: int, max_bytes: int
              ) -> tuple[RecordBlock, int] | None:
        """The records [start, end) within the limits, with the next offset, as
        ``fetch_columns`` would give them; None unless all of it is here."""
        chunks = self._chunks
        if not chunks or start >= end or start < chunks[0][0]:
            return None
        i = bisect.bisect_right(chunks, start, key=lambda c: c[0]) - 1
        taken: list[Sequence[Record]] = []
        pos, got, nbytes = start, 0, 0
        for j in range(i, len(chunks)):
            base, recs, size = chunks[j]
            if base >= end or (got and nbytes + size > max_bytes):
                break
            if base + len(recs) <= pos:  # ``start`` is past this chunk's end
                return None
            stop = min(base + len(recs), end, pos + max_records - got)
            taken.append(recs[pos - base:stop - base] if pos > base or stop < base + len(recs)
                         else recs)
            got += stop - pos
            nbytes += size
            pos = stop
            if got >= max_records or pos >= end:
                break
        else:
            return None  # the cache ends before ``end``: the rest is in the log only
        return block_from_records(start, taken), pos


def block_from_records(first: int, parts: list[Sequence[Record]]) -> RecordBlock:
    """Consecutive records from ``first`` as the uplink's columns, in the layout
    ``block_of`` gives for the same records read from the log (header names in order of
    first use; no header columns when no record has a header)."""
    keys: list[bytes] = []
    values: list[bytes] = []
    stamps: list[int] = []
    counts: list[int] = []
    index: list[int] = []
    hvalues: list[bytes] = []
    ids: dict[str, int] = {}
    k_add, v_add, t_add, c_add = keys.append, values.append, stamps.append, counts.append
    i_add, h_add = index.append, hvalues.append
    for recs in parts:
        for r in recs:
            k_add(r.key)
            v_add(r.value)
            t_add(r.timestamp)
            headers = r.headers
            c_add(len(headers))
            for name, value in headers:
                idx = ids.get(name)
                if idx is None:
                    idx = ids[name] = len(ids)
                i_add(idx)
                h_add(value)
    offsets = list(range(first, first + len(keys)))
    if not hvalues:
        return RecordBlock(offsets, keys, stamps, values)
    return RecordBlock(offsets, keys, stamps, values, counts, list(ids), index, hvalues)


def block_of(cols: RecordColumns) -> RecordBlock:
    """shared_log's columns as the uplink's, without an object per record."""
    runs = cols.runs
    offsets = (list(range(runs[0][0], runs[0][0] + runs[0][1])) if len(runs) == 1
               else list(cols.offsets()))
    counts = cols.header_counts
    if not cols.header_values:
        return RecordBlock(offsets, cols.keys, cols.timestamps.tolist(), cols.values)
    return RecordBlock(offsets, cols.keys, cols.timestamps.tolist(), cols.values,
                       counts.tolist(), cols.header_names, cols.header_name_index.tolist(),
                       cols.header_values)


def read_block(log: Log, tail: TailCache, start: int, end: int, max_records: int,
               max_bytes: int) -> tuple[RecordBlock, int] | None:
    """The records [start, end) of ``log`` within the limits and the next offset: from
    ``tail`` when it holds them all, else from the log; None when the log no longer
    has ``start`` (deleted meanwhile)."""
    hit = tail.block(start, end, max_records, max_bytes)
    if hit is not None:
        tail.records_from_memory += len(hit[0])
        return hit
    try:
        res = fetch_columns(log, start, max_records=max_records, max_bytes=max_bytes, end=end)
    except OffsetOutOfRange:
        return None
    tail.records_from_log += len(res.columns)
    return block_of(res.columns), res.next_offset


__all__ = ["TailCache", "block_from_records", "block_of", "read_block"]
