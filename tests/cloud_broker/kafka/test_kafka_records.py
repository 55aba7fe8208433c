"""Record batches v2 from stored batches: byte for byte what kio's own batch writer (an
independent encoder) writes for the same records, decodable by kio's reader, across
partial batches, header counts, null keys, out-of-order timestamps, values past the
varint tables, compression and broken framing."""

from __future__ import annotations

import gzip
import struct
from fractions import Fraction
from typing import Any

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.records.readers import read_batch
from kio.records.schema import NewRecordBatch, Record, RecordHeader
from kio.records.writers import write_new_batch

from cloud_broker.kafka import encode_batches
from cloud_broker.kafka.records import zigzag_varint
from shared_log import (
    HEADER_HEAD,
    RECORD_HEAD,
    CorruptBatch,
    StoredBatch,
    encode_framed,
    parse_header,
)

Row = tuple[bytes, bytes, int, list[tuple[str, bytes]]]  # key, value, timestamp, headers


def _framed(rows: list[Row]) -> bytes:
    parts: list[bytes] = []
    for key, value, ts, headers in rows:
        parts += (RECORD_HEAD.pack(ts, len(key), len(value), len(headers)), key, value)
        for name, hv in headers:
            raw = name.encode()
            parts += (HEADER_HEAD.pack(len(raw), len(hv)), raw, hv)
    return b"".join(parts)


def stored(base: int, rows: list[Row], first: int | None = None, stop: int | None = None
           ) -> StoredBatch:
    """A stored batch of ``rows`` from offset ``base``, as a read returns it."""
    data = encode_framed(base, len(rows), max(r[2] for r in rows), _framed(rows))
    first = base if first is None else first
    return StoredBatch(data, parse_header(data), first,
                       base + len(rows) if stop is None else stop)


class _Millis:
    """A timestamp kio's writer reads exactly: its float datetime loses milliseconds."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def timestamp(self) -> Fraction:
        return Fraction(self.ms, 1000)

    def __lt__(self, other: _Millis) -> bool:
        return self.ms < other.ms


def reference(first: int, rows: list[Row]) -> bytes:
    """kio's encoding of ``rows`` as one batch from offset ``first``."""
    import io
    records = tuple(Record(attributes=0, timestamp=_Millis(ts), offset=first + i,  # type: ignore[arg-type]
                           key=key or None, value=value,
                           headers=tuple(RecordHeader(key=n.encode(), value=hv)
                                         for n, hv in headers))
                    for i, (key, value, ts, headers) in enumerate(rows))
    buf = io.BytesIO()
    write_new_batch(buf, NewRecordBatch(producer_id=-1, producer_epoch=-1,  # type: ignore[arg-type]
                                        base_sequence=-1, records=records, attributes=0))  # type: ignore[arg-type]
    return buf.getvalue()


record = st.tuples(st.binary(max_size=20), st.binary(max_size=300),
                   st.integers(1_600_000_000_000, 1_600_000_100_000),
                   st.lists(st.tuples(st.sampled_from(["origin", "seq", "x", "größe"]),
                                      st.binary(max_size=40)), max_size=3))


@given(st.integers(0, 2**40), st.lists(record, min_size=1, max_size=40), st.data())
@settings(max_examples=200, deadline=None)
def test_same_bytes_as_kios_writer(base: int, rows: list[Row], data: Any) -> None:
    lo = data.draw(st.integers(0, len(rows) - 1))
    hi = data.draw(st.integers(lo + 1, len(rows)))
    got = encode_batches([stored(base, rows, base + lo, base + hi)])
    assert got == reference(base + lo, rows[lo:hi])


@given(st.lists(st.lists(record, min_size=1, max_size=5), min_size=1, max_size=4))
@settings(max_examples=50, deadline=None)
def test_each_stored_batch_is_one_kafka_batch_with_exact_offsets(groups: list) -> None:
    batches, base, want = [], 100, []
    for rows in groups:
        batches.append(stored(base, rows))
        want.extend((base + i, k or None, v) for i, (k, v, _t, _h) in enumerate(rows))
        base += len(rows) + 3  # a range lost to corruption between them
    data, pos, got = encode_batches(batches), 0, []
    while pos < len(data):
        batch, n = read_batch(data, pos)
        pos += n
        got.extend((r.offset, r.key, r.value) for r in batch.records)
    assert got == want


def test_values_past_the_tables_and_negative_timestamp_deltas() -> None:
    rows: list[Row] = [(b"k", b"v" * 20_000, 1_700_000_100_000, [("origin", b"o" * 17_000)]),
                       (b"", b"w", 1_700_000_000_000, []),  # 100 s earlier: delta < 0
                       (b"d" * 16_384, b"", 1_700_000_000_001, [("n", b"")] * 3)]
    assert encode_batches([stored(5, rows)]) == reference(5, rows)


def test_long_batch_splits_with_exact_offsets() -> None:
    rows: list[Row] = [(b"d", b"v%d" % i, 1_700_000_000_000 + i, [("origin", b"o")])
                       for i in range(20_000)]
    data = encode_batches([stored(7, rows, 9)])
    first, n = read_batch(data, 0)
    second, _ = read_batch(data, n)
    assert (len(first.records), first.base_offset) == (16_384, 9)
    assert (second.base_offset, second.records[-1].offset) == (16_393, 20_006)
    assert data == reference(9, rows[2:16_386]) + reference(16_393, rows[16_386:])


@pytest.mark.parametrize(("name", "attr", "inflate"), [
    ("gzip", 1, gzip.decompress),
    ("zstd", 4, lambda b: zstandard.ZstdDecompressor().decompress(b, max_output_size=1 << 20))])
def test_compressed_batches_hold_the_same_records(name: str, attr: int, inflate: Any) -> None:
    rows: list[Row] = [(b"k%d" % i, b"reading %d" % i, 1_700_000_000_000 + i,
                        [("origin", b"gw/%d" % i)]) for i in range(50)]
    plain = encode_batches([stored(0, rows)])
    packed = encode_batches([stored(0, rows)], name)
    assert struct.unpack_from(">h", packed, 21)[0] == attr
    assert inflate(packed[61:]) == plain[61:]  # the records, after the batch header
    assert packed[23:57] == plain[23:57]  # offsets, timestamps, producer fields, count


def test_broken_framing_under_a_good_crc_is_a_corrupt_batch() -> None:
    rows: list[Row] = [(b"k", b"value", 1, [])] * 3
    body = bytearray(_framed(rows))
    struct.pack_into(">I", body, 12, 9_999)  # the second length field: past the batch
    data = encode_framed(0, 3, 1, bytes(body))
    with pytest.raises(CorruptBatch):
        encode_batches([StoredBatch(data, parse_header(data), 0, 3)])
    short = encode_framed(0, 3, 1, _framed(rows) + b"xx")  # bytes left over
    with pytest.raises(CorruptBatch):
        encode_batches([StoredBatch(short, parse_header(short), 0, 3)])


def test_varint_is_kafkas_zigzag() -> None:
    assert zigzag_varint(0) == b"\x00" and zigzag_varint(-1) == b"\x01"
    assert zigzag_varint(1) == b"\x02" and zigzag_varint(64) == b"\x80\x01"


def test_no_batches_are_empty_bytes_not_null() -> None:
    assert encode_batches([]) == b""
