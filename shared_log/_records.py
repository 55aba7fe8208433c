"""Records and the on-disk batch format.

Strategy: a batch is the unit of writing, checksumming and recovery, as in Kafka's
record batches. One header carries the length (so a reader can skip it), a CRC-32 over
everything after the CRC field (so a torn or flipped batch is always detected) and the
base offset and count (so offsets need not be stored per record). Records inside are
framed with fixed-size length prefixes; ``struct`` with precompiled formats keeps the
per-record cost low because append sits on the ingest hot path.

Batch layout, all integers big-endian (see docs/log-format.md)::

    offset  size  field
    0       4     length      u32: bytes after this field (header rest + records)
    4       4     crc         u32: zlib CRC-32 of every byte after this field
    8       1     magic       u8: format version, 1
    9       1     attributes  u8: reserved, 0
    10      8     base_offset u64: offset of the first record
    18      4     count       u32: number of records, >= 1
    22      8     max_ts      i64: largest record timestamp (ms)
    30      ...   records

    record: timestamp i64 | key_len u32 | value_len u32 | header_count u16 | key | value
            | header_count x (name_len u16 | value_len u32 | name utf-8 | value)
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._errors import CorruptBatch, InvalidRecord

MAGIC = 1
HEADER = struct.Struct(">IIBBQIq")
HEADER_SIZE = HEADER.size  # 30
LENGTH_CRC_SIZE = 8
_REC = struct.Struct(">qIIH")
_HDR = struct.Struct(">HI")
#: The fixed part of a framed record: timestamp, key length, value length, header count.
RECORD_HEAD = _REC
#: The fixed part of a framed header: name length, value length.
HEADER_HEAD = _HDR
#: Upper bound on one batch, so a corrupt length field cannot make a reader allocate GBs.
MAX_BATCH_BYTES = 64 * 1024 * 1024

Headers = tuple[tuple[str, bytes], ...]


@dataclass(slots=True)
class Record:
    """A record to append: the offset is assigned by the log.

    Not frozen, like StoredRecord: construction sits on the broker's ingest hot path and
    a frozen dataclass costs an ``object.__setattr__`` per field. Treat it as read-only.
    """

    key: bytes
    value: bytes
    timestamp: int
    headers: Headers = ()


@dataclass(slots=True)
class StoredRecord:
    """A record read back from the log, with its offset.

    Not frozen on purpose: a frozen dataclass pays an ``object.__setattr__`` per field on
    construction, which doubled the cost of a sequential read. Treat it as read-only.
    """

    offset: int
    key: bytes
    value: bytes
    timestamp: int
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """The header of a batch found at ``position`` in a segment file."""

    position: int
    size: int  # total bytes on disk, header included
    base_offset: int
    count: int
    max_timestamp: int

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.count - 1

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.count


def encode_batch(base_offset: int, records: Sequence[Record]) -> bytes:
    """Frame ``records`` as one batch starting at ``base_offset``."""
    if not records:
        raise InvalidRecord("a batch needs at least one record")
    parts: list[bytes] = []
    append = parts.append
    rec_pack = _REC.pack
    max_ts = -(2**63)
    try:
        for r in records:
            ts = r.timestamp
            if ts > max_ts:
                max_ts = ts
            headers = r.headers
            append(rec_pack(ts, len(r.key), len(r.value), len(headers)))
            append(r.key)
            append(r.value)
            for name, hvalue in headers:
                bname = name.encode()
                append(_HDR.pack(len(bname), len(hvalue)))
                append(bname)
                append(hvalue)
        body = b"".join(parts)
    except (struct.error, TypeError, AttributeError) as exc:
        raise InvalidRecord(f"record cannot be encoded: {exc}") from exc
    return encode_framed(base_offset, len(records), max_ts, body)


def encode_framed(base_offset: int, count: int, max_timestamp: int, body: bytes) -> bytes:
    """A batch around ``body``: ``count`` records already framed as the layout above says
    (``RECORD_HEAD`` and ``HEADER_HEAD`` pack the fixed parts), in offset order.

    For writers that frame records from columns without building ``Record`` objects (the
    broker's ingest). The framing is the caller's promise: a reader that finds it broken
    reports the batch as corrupt (tests/shared_log/test_records.py checks a round trip).
    """
    if count < 1:
        raise InvalidRecord("a batch needs at least one record")
    # one copy of the body, not two: bodies are ~150 KB ingest pieces (the CRC is chained)
    head = struct.pack(">BBQIq", MAGIC, 0, base_offset, count, max_timestamp)
    size = len(head) + len(body)
    if size + LENGTH_CRC_SIZE > MAX_BATCH_BYTES:
        raise InvalidRecord(f"batch of {size} bytes exceeds {MAX_BATCH_BYTES}")
    crc = zlib.crc32(body, zlib.crc32(head))
    return b"".join((struct.pack(">II", size + 4, crc), head, body))


def parse_header(buf: bytes | memoryview, position: int = 0) -> BatchInfo:
    """Parse and sanity-check a header without verifying the CRC.

    Raises CorruptBatch when the framing is impossible (bad magic, bad length).
    """
    if len(buf) < HEADER_SIZE:
        raise CorruptBatch("truncated batch header", position=position)
    length, _crc, magic, _attrs, base, count, max_ts = HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise CorruptBatch(f"bad magic {magic}", position=position)
    if length < HEADER_SIZE - 4 or length + 4 > MAX_BATCH_BYTES or count == 0:
        raise CorruptBatch(f"impossible batch length {length} / count {count}", position=position)
    return BatchInfo(position, length + 4, base, count, max_ts)


def verify_batch(buf: bytes | memoryview, info: BatchInfo) -> None:
    """Check the CRC of a whole batch held in ``buf`` (starting at the batch)."""
    if len(buf) < info.size:
        raise CorruptBatch("truncated batch", position=info.position, first_offset=info.base_offset)
    (stored,) = struct.unpack_from(">I", buf, 4)
    if zlib.crc32(memoryview(buf)[LENGTH_CRC_SIZE : info.size]) != stored:
        raise CorruptBatch(
            f"checksum mismatch in batch at byte {info.position}",
            position=info.position,
            first_offset=info.base_offset,
        )


def decode_records(buf: bytes | memoryview, info: BatchInfo) -> list[StoredRecord]:
    """Decode the records of a verified batch."""
    # One copy of the batch, then plain bytes slices: slicing a memoryview and copying
    # each slice again cost twice as much per record.
    mv = bytes(buf[: info.size]) if not isinstance(buf, bytes) or len(buf) != info.size else buf
    pos = HEADER_SIZE
    out: list[StoredRecord] = []
    append = out.append
    rec_unpack = _REC.unpack_from
    offset = info.base_offset
    try:
        for _ in range(info.count):
            ts, klen, vlen, hcount = rec_unpack(mv, pos)
            pos += 18
            kend = pos + klen
            vend = kend + vlen
            if len(mv) < vend:
                raise struct.error("record runs past the batch")
            headers: Headers = ()
            if hcount:
                hs = []
                hpos = vend
                for _h in range(hcount):
                    nlen, hlen = _HDR.unpack_from(mv, hpos)
                    hpos += 6
                    name = mv[hpos : hpos + nlen].decode()
                    hpos += nlen
                    if len(mv) < hpos + hlen:
                        raise struct.error("header runs past the batch")
                    hs.append((name, mv[hpos : hpos + hlen]))
                    hpos += hlen
                headers = tuple(hs)
                append(StoredRecord(offset, mv[pos:kend], mv[kend:vend], ts, headers))
                pos = hpos
            else:
                append(StoredRecord(offset, mv[pos:kend], mv[kend:vend], ts, headers))
                pos = vend
            offset += 1
    except (struct.error, UnicodeDecodeError) as exc:
        raise CorruptBatch(
            f"bad record framing in batch at byte {info.position}",
            position=info.position,
            first_offset=info.base_offset,
        ) from exc
    if pos != info.size:
        raise CorruptBatch(
            f"record framing does not fill batch at byte {info.position}",
            position=info.position,
            first_offset=info.base_offset,
        )
    return out


def batch_size_estimate(records: Iterable[Record]) -> int:
    """Bytes the records will take on disk (used by the size cap before encoding)."""
    total = HEADER_SIZE
    for r in records:
        total += 18 + len(r.key) + len(r.value)
        for name, value in r.headers:
            total += 6 + len(name.encode()) + len(value)
    return total
