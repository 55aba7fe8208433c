"""Kafka record batches (magic 2) converted straight from the partition's stored batches.

Strategy: a Fetch answers thousands of records, so this is the one place where per-record
cost matters. Decoding the stored batches into columns (``fetch_columns``, what the HTTP
path serves) and then encoding the columns as Kafka records walked every record twice;
here one loop walks the stored record framing (docs/log-format.md: fixed-size heads, so
one ``struct`` unpack per record and per header) and joins each Kafka record from slices
of the stored bytes and varints looked up in precomputed tables. Header names are copied
as stored (utf-8), never decoded. The Kafka batch header is packed once per batch and
checksummed with CRC32C (the ``crc32c`` C extension). A value past the tables (a field or
record of 16 KiB or more) sends its batch through the same loop with computed varints.

One Kafka batch per stored batch (split every ``_TABLE_SIZE`` records so offset deltas
come from the table): offsets inside stay dense, and a range lost to corruption falls
between batches. ``baseTimestamp`` is the first record's timestamp and deltas may be
negative, as Kafka's own producer writes them.

Layout (Kafka's DefaultRecordBatch)::

    baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 = 2 | crc u32
    | attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64
    | producerId i64 = -1 | producerEpoch i16 = -1 | baseSequence i32 = -1
    | recordCount i32 | records (compressed as a whole when attributes say so)

    record: length varint | attributes i8 | timestampDelta varint | offsetDelta varint
            | keyLength varint | key | valueLength varint | value | headerCount varint
            | (headerKeyLength varint | headerKey | headerValueLength varint | value)*

Sans-IO: bytes in, bytes out. Key = device key (an empty key is sent as null), value =
the reading, timestamp = the edge's milliseconds, headers = the stored headers (``origin``
and the edge's own). A stored batch whose record framing is broken (its CRC held, so only
a faulty writer makes one) raises CorruptBatch, as ``RecordColumns.add_batch`` does.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Sequence
from typing import Any

import zstandard
from crc32c import crc32c

from shared_log import HEADER_HEAD, HEADER_SIZE, RECORD_HEAD, CorruptBatch, StoredBatch

COMPRESSION = {"none": 0, "gzip": 1, "zstd": 4}
_TABLE_SIZE = 1 << 14
_HEAD = struct.Struct(">qiib")  # baseOffset, batchLength, leaderEpoch, magic
_AFTER_CRC = struct.Struct(">hiqqqhii")  # attributes .. recordCount
_ZSTD = zstandard.ZstdCompressor(level=1)


def zigzag_varint(n: int) -> bytes:
    """Kafka's signed varint (zigzag, then 7 bits a byte, low first)."""
    z = (n << 1) ^ (n >> 63)
    z &= (1 << 64) - 1
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_VARINT = [zigzag_varint(n) for n in range(_TABLE_SIZE)]
_KEYLEN = [zigzag_varint(-1), *_VARINT[1:]]  # a key of length 0 is a null key


class _Computed:
    """The tables' stand-in for a batch with a value past them: computes each varint."""

    def __init__(self, null_zero: bool = False) -> None:
        self.null_zero = null_zero

    def __getitem__(self, n: int) -> bytes:
        return b"\x01" if self.null_zero and n == 0 else zigzag_varint(n)


_SLOW = (_Computed(), _Computed(null_zero=True))


def encode_batches(batches: Sequence[StoredBatch], compression: str = "none") -> bytes:
    """The records ``[first, stop)`` of every stored batch as Kafka record batches."""
    return b"".join(encode_batch_pieces(batches, compression))


def encode_batch_pieces(batches: Sequence[StoredBatch], compression: str = "none"
                        ) -> list[bytes]:
    """``encode_batches`` as the pieces it joins: a Fetch answer sends them as they are
    (``wire.Chunks``), since joining megabytes copies them once more into fresh pages."""
    attrs = COMPRESSION[compression]
    out: list[bytes] = []
    for sb in batches:
        try:
            _convert(out, sb, attrs)
        except struct.error as exc:
            raise CorruptBatch(f"bad record framing in batch at byte {sb.info.position}",
                               position=sb.info.position,
                               first_offset=sb.info.base_offset) from exc
    return out


def _convert(out: list[bytes], sb: StoredBatch, attrs: int) -> None:
    info, buf = sb.info, sb.data
    pos = _skip(buf, HEADER_SIZE, sb.first - info.base_offset)
    first = sb.first
    while first < sb.stop:
        count = min(_TABLE_SIZE, sb.stop - first)
        try:
            body, end, base_ts = _records(buf, pos, count, _VARINT, _KEYLEN)
        except IndexError:  # a length past the tables
            body, end, base_ts = _records(buf, pos, count, *_SLOW)
        # the stored header's maximum when the Kafka batch is the whole stored batch
        whole = count == info.count
        max_ts = info.max_timestamp if whole else _max_timestamp(buf, pos, count)
        if end > info.size:
            raise struct.error("record runs past the end of its batch")
        if attrs == 1:
            body = gzip.compress(body, compresslevel=1)
        elif attrs == 4:
            body = _ZSTD.compress(body)
        after = _AFTER_CRC.pack(attrs, count - 1, base_ts, max_ts, -1, -1, -1, count)
        # the CRC runs over both parts without joining them first (one copy fewer)
        out += (_HEAD.pack(first, 9 + len(after) + len(body), 0, 2),
                crc32c(body, crc32c(after)).to_bytes(4, "big"), after, body)
        first, pos = first + count, end
    if sb.stop == info.next_offset and pos != info.size:
        raise struct.error("record framing does not fill its batch")


def _skip(buf: bytes, pos: int, n: int) -> int:
    """The position after ``n`` stored records from ``pos`` (a read from mid-batch)."""
    unpack, hunpack = RECORD_HEAD.unpack_from, HEADER_HEAD.unpack_from
    for _ in range(n):
        _ts, kl, vl, hc = unpack(buf, pos)
        pos += 18 + kl + vl
        for _h in range(hc):
            nl, hl = hunpack(buf, pos)
            pos += 6 + nl + hl
    return pos


def _max_timestamp(buf: bytes, pos: int, n: int) -> int:
    """The largest timestamp of ``n`` stored records from ``pos`` (part of a batch)."""
    unpack, hunpack = RECORD_HEAD.unpack_from, HEADER_HEAD.unpack_from
    top = -(2**63)
    for _ in range(n):
        ts, kl, vl, hc = unpack(buf, pos)
        top = max(top, ts)
        pos += 18 + kl + vl
        for _h in range(hc):
            nl, hl = hunpack(buf, pos)
            pos += 6 + nl + hl
    return top


def _records(buf: bytes, pos: int, count: int, V: Any, K: Any
             ) -> tuple[bytes, int, int]:
    """``count`` stored records from ``pos`` as Kafka records: (body, position after
    them, base timestamp). ``V``/``K`` give the varint of a length (``K`` of a key
    length, 0 being null); the tables raise IndexError past their end."""
    unpack, hunpack = RECORD_HEAD.unpack_from, HEADER_HEAD.unpack_from
    join = b"".join
    out: list[bytes] = []
    add = out.append
    size = _TABLE_SIZE
    base = unpack(buf, pos)[0]
    for i in range(count):
        ts, kl, vl, hc = unpack(buf, pos)
        k = pos + 18 + kl
        v = k + vl
        d = ts - base
        tv = V[d] if 0 <= d < size else zigzag_varint(d)
        if hc == 1:  # the usual: the origin header alone
            nl, hl = hunpack(buf, v)
            a = v + 6
            n = a + nl
            pos = n + hl
            body = join((b"\x00", tv, V[i], K[kl], buf[k - kl:k], V[vl], buf[k:v], b"\x02",
                         V[nl], buf[a:n], V[hl], buf[n:pos]))
        else:
            hs = [V[hc]]
            h = v
            for _h in range(hc):
                nl, hl = hunpack(buf, h)
                a = h + 6
                n = a + nl
                h = n + hl
                hs += (V[nl], buf[a:n], V[hl], buf[n:h])
            pos = h
            body = join((b"\x00", tv, V[i], K[kl], buf[k - kl:k], V[vl], buf[k:v], *hs))
        add(V[len(body)])
        add(body)
    return join(out), pos, base


__all__ = ["COMPRESSION", "encode_batch_pieces", "encode_batches", "zigzag_varint"]
