"""Kafka record batches (magic 2) built straight from the partition's columns.

Strategy: a Fetch answers thousands of records, so this is the one place where per-record
cost matters. kio's record writer builds a dataclass per record; here the columns that
``PartitionLog.fetch_columns`` returns are turned into the batch body with precomputed
varint tables and one ``b"".join`` per record, then the batch header is packed once and
checksummed with CRC32C (the ``crc32c`` C extension). One Kafka batch per run of dense
offsets (a run ends only where corruption skipped records), so offset deltas stay exact.

Layout (Kafka's DefaultRecordBatch)::

    baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 = 2 | crc u32
    | attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64
    | producerId i64 = -1 | producerEpoch i16 = -1 | baseSequence i32 = -1
    | recordCount i32 | records (compressed as a whole when attributes say so)

    record: length varint | attributes i8 | timestampDelta varint | offsetDelta varint
            | keyLength varint | key | valueLength varint | value | headerCount varint
            | (headerKeyLength varint | headerKey | headerValueLength varint | value)*

Sans-IO: bytes in, bytes out. Key = device key, value = the reading, timestamp = the
edge's milliseconds, headers = the stored headers (``origin`` and the edge's own).
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Sequence

import zstandard
from crc32c import crc32c

from shared_log import RecordColumns

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


def _v(n: int) -> bytes:
    return _VARINT[n] if 0 <= n < _TABLE_SIZE else zigzag_varint(n)


def _encode_records(cols: RecordColumns, start: int, count: int, base_ts: int,
                    h: int) -> tuple[list[bytes], int]:
    """The records ``start .. start+count`` of ``cols``; header cursor ``h`` after them."""
    keys, values, ts = cols.keys, cols.values, cols.timestamps
    hcounts, names, name_ix, hvalues = (cols.header_counts, cols.header_names,
                                        cols.header_name_index, cols.header_values)
    name_bytes = [n.encode() for n in names]
    name_enc = [_v(len(b)) + b for b in name_bytes]
    table, join = _VARINT, b"".join
    out: list[bytes] = []
    append = out.append
    for delta in range(count):
        i = start + delta
        k, val = keys[i], values[i]
        hc = hcounts[i]
        parts = [b"\x00", _v(ts[i] - base_ts), table[delta] if delta < _TABLE_SIZE
                 else zigzag_varint(delta)]
        if k:
            parts += (_v(len(k)), k)
        else:
            parts.append(b"\x01")  # -1: a null key
        parts += (_v(len(val)), val, table[hc])
        for j in range(h, h + hc):
            hv = hvalues[j]
            parts += (name_enc[name_ix[j]], _v(len(hv)), hv)
        h += hc
        body = join(parts)
        append(_v(len(body)))
        append(body)
    return out, h


def encode_batches(cols: RecordColumns, compression: str = "none") -> bytes:
    """Every record of ``cols`` as Kafka record batches, one per run of offsets."""
    if not len(cols):
        return b""
    attrs = COMPRESSION[compression]
    out: list[bytes] = []
    i = h = 0
    for first, count in cols.runs:
        stamps: Sequence[int] = cols.timestamps[i:i + count]
        base_ts, max_ts = min(stamps), max(stamps)
        recs, h = _encode_records(cols, i, count, base_ts, h)
        body = b"".join(recs)
        if attrs == 1:
            body = gzip.compress(body, compresslevel=1)
        elif attrs == 4:
            body = _ZSTD.compress(body)
        tail = _AFTER_CRC.pack(attrs, count - 1, base_ts, max_ts, -1, -1, -1, count) + body
        crc = crc32c(tail)
        out.append(_HEAD.pack(first, 9 + len(tail), 0, 2))
        out.append(crc.to_bytes(4, "big"))
        out.append(tail)
        i += count
    return b"".join(out)


__all__ = ["COMPRESSION", "encode_batches", "zigzag_varint"]
