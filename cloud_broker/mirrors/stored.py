"""The records of a local read kept as the stored batches they came in.

Strategy: turning a read into one ``StoredRecord`` per record costs more than anything a
fast target does with it afterwards (~1.6 µs a record, docs/benchmarks.md), and a target
that converts records into its own wire format (the PostgreSQL target's binary COPY) can
read the stored record framing directly in one pass, as the Kafka listener does. So a
``LocalSource`` read for such a target (``Target.takes_stored``) hands over
``StoredRecords``: a ``Sequence`` of the records, whose length and offsets come from the
batch headers, holding the CRC-checked batches themselves (``batches``). Anything that
indexes or iterates it gets ``StoredRecord`` objects, decoded on first use.

The record framing is checked when the read is made (``check_framing``, in the reader
thread), so a batch whose framing is broken behind a good CRC is skipped and counted by
``Log.fetch`` exactly as for any other target, and a converter can trust the framing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

from shared_log import (
    HEADER_HEAD,
    HEADER_SIZE,
    RECORD_HEAD,
    CorruptBatch,
    StoredBatch,
    StoredRecord,
    decode_records,
)


def check_framing(batch: StoredBatch) -> None:
    """Raise CorruptBatch unless the records of ``batch`` are framed as
    ``decode_records`` reads them (fields within the batch, filling it exactly, header
    names UTF-8); reads nothing else."""
    buf, info = batch.data, batch.info
    unpack, hunpack = RECORD_HEAD.unpack_from, HEADER_HEAD.unpack_from
    pos = HEADER_SIZE
    try:
        for _ in range(info.count):
            _ts, klen, vlen, hcount = unpack(buf, pos)
            pos += 18 + klen + vlen
            while hcount:
                nlen, hlen = hunpack(buf, pos)
                pos += 6
                if not buf[pos:pos + nlen].isascii():
                    buf[pos:pos + nlen].decode()
                pos += nlen + hlen
                hcount -= 1
    except (ValueError, UnicodeDecodeError) as exc:  # struct.error is a ValueError
        raise CorruptBatch(f"bad record framing in batch at byte {info.position}",
                           position=info.position, first_offset=info.base_offset) from exc
    if pos != info.size or len(buf) < info.size:
        raise CorruptBatch(f"record framing does not fill batch at byte {info.position}",
                           position=info.position, first_offset=info.base_offset)


class StoredRecords(Sequence[StoredRecord]):
    """The records ``[first, stop)`` of each batch, in offset order; see the module doc."""

    __slots__ = ("_records", "batches", "count")

    def __init__(self, batches: list[StoredBatch]) -> None:
        self.batches = batches
        self.count = sum(b.stop - b.first for b in batches)
        self._records: list[StoredRecord] | None = None

    @property
    def first_offset(self) -> int:
        return self.batches[0].first

    @property
    def last_offset(self) -> int:
        return self.batches[-1].stop - 1

    def decoded(self) -> list[StoredRecord]:
        """The records as objects (decoded once, then kept)."""
        if self._records is None:
            out: list[StoredRecord] = []
            for b in self.batches:
                out += [r for r in decode_records(b.data, b.info) if b.first <= r.offset < b.stop]
            self._records = out
        return self._records

    def __len__(self) -> int:
        return self.count

    @overload
    def __getitem__(self, i: int) -> StoredRecord: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[StoredRecord]: ...

    def __getitem__(self, i: int | slice) -> StoredRecord | Sequence[StoredRecord]:
        return self.decoded()[i]


def span(records: Sequence[StoredRecord]) -> tuple[int, int]:
    """The first and last offset of a non-empty batch, without decoding stored ones."""
    if isinstance(records, StoredRecords):
        return records.first_offset, records.last_offset
    return records[0].offset, records[-1].offset


__all__ = ["StoredRecords", "check_framing", "span"]
