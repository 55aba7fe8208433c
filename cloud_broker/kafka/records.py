"""Kafka record batches (magic 2) built straight from the partition's columns.

Strategy: a Fetch answers thousands of records, so this is the one place where per-record
cost matters. kio's record writer builds a dataclass per record; here the columns that
``PartitionLog.fetch_columns`` returns become the batch body with no Python loop per
record: columns of varints (looked up in a precomputed table) are zipped with the keys,
values and headers and joined by C-level ``map(b"".join, ...)``; the batch header is
packed once and checksummed with CRC32C (the ``crc32c`` C extension). One Kafka batch
per run of dense offsets (a run ends only where corruption skipped records), so offset
deltas stay exact.

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
from collections.abc import Iterable, Sequence
from itertools import chain, repeat
from operator import sub

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


def _varints(values: Iterable[int]) -> list[bytes]:
    """Varints of non-negative ints (lengths, deltas from the batch's minimum): by table
    lookup, falling back to computing them when one is past the table."""
    vals = values if isinstance(values, list) else list(values)
    try:
        return list(map(_VARINT.__getitem__, vals))
    except IndexError:
        return list(map(_v, vals))


def _headers(cols: RecordColumns, start: int, count: int, h: int
             ) -> tuple[Iterable[bytes], int]:
    """Each record's encoded header block (count varint + headers); cursor after them."""
    hcounts = cols.header_counts[start:start + count]
    total = sum(hcounts)
    names = [n.encode() for n in cols.header_names]
    name_enc = [_v(len(b)) + b for b in names]
    hvals = cols.header_values[h:h + total]
    if total == count and min(hcounts, default=1) == 1:  # one header each: the usual
        one = map(b"".join, zip(repeat(_VARINT[1], count),
                                map(name_enc.__getitem__, cols.header_name_index[h:h + total]),
                                _varints(map(len, hvals)), hvals, strict=True))
        return one, h + total
    each = list(map(b"".join, zip(map(name_enc.__getitem__,
                                      cols.header_name_index[h:h + total]),
                                  _varints(map(len, hvals)), hvals, strict=True)))
    out, j = [], 0
    for n in hcounts:
        out.append(_VARINT[n] + b"".join(each[j:j + n]))
        j += n
    return out, h + total


def _encode_records(cols: RecordColumns, start: int, count: int, base_ts: int,
                    h: int) -> tuple[bytes, int]:
    """The records ``start .. start+count`` of ``cols`` (count <= _TABLE_SIZE) as one body
    with no Python loop per record: columns of varints zipped and joined."""
    stop = start + count
    keys, values = cols.keys[start:stop], cols.values[start:stop]
    ts = _varints(map(sub, cols.timestamps[start:stop], repeat(base_ts, count)))
    # an empty key is sent as a null key (length -1)
    klen = _varints(map(len, keys)) if all(keys) else [_v(len(k)) if k else b"\x01"
                                                       for k in keys]
    hdrs, h = _headers(cols, start, count, h)
    bodies = list(map(b"".join, zip(repeat(b"\x00", count), ts, _VARINT[:count], klen, keys,
                                    _varints(map(len, values)), values, hdrs, strict=True)))
    lens = _varints(map(len, bodies))
    return b"".join(chain.from_iterable(zip(lens, bodies, strict=True))), h


def encode_batches(cols: RecordColumns, compression: str = "none") -> bytes:
    """Every record of ``cols`` as Kafka record batches: one per run of offsets, split
    every ``_TABLE_SIZE`` records so offset deltas come from the table."""
    if not len(cols):
        return b""
    attrs = COMPRESSION[compression]
    out: list[bytes] = []
    i = h = 0
    for run_first, run_count in cols.runs:
        for first in range(run_first, run_first + run_count, _TABLE_SIZE):
            count = min(_TABLE_SIZE, run_first + run_count - first)
            h = _batch(out, cols, attrs, first, i, count, h)
            i += count
    return b"".join(out)


def _batch(out: list[bytes], cols: RecordColumns, attrs: int, first: int, i: int,
           count: int, h: int) -> int:
    stamps: Sequence[int] = cols.timestamps[i:i + count]
    base_ts, max_ts = min(stamps), max(stamps)
    body, h = _encode_records(cols, i, count, base_ts, h)
    if attrs == 1:
        body = gzip.compress(body, compresslevel=1)
    elif attrs == 4:
        body = _ZSTD.compress(body)
    tail = _AFTER_CRC.pack(attrs, count - 1, base_ts, max_ts, -1, -1, -1, count) + body
    out.append(_HEAD.pack(first, 9 + len(tail), 0, 2))
    out.append(crc32c(tail).to_bytes(4, "big"))
    out.append(tail)
    return h


__all__ = ["COMPRESSION", "encode_batches", "zigzag_varint"]
