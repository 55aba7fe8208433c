"""The batch format (shared_log._records): round trip, checksum coverage, framing."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared_log import (
    HEADER_HEAD,
    RECORD_HEAD,
    CorruptBatch,
    InvalidRecord,
    Log,
    Record,
    StoredRecord,
    encode_framed,
)
from shared_log._records import (
    HEADER_SIZE,
    MAX_BATCH_BYTES,
    batch_size_estimate,
    decode_records,
    encode_batch,
    parse_header,
    verify_batch,
)

I64 = st.integers(-(2**63), 2**63 - 1)
headers = st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=16)), max_size=3).map(tuple)
records = st.builds(
    Record, key=st.binary(max_size=24), value=st.binary(max_size=64), timestamp=I64,
    headers=headers,
)
batches = st.lists(records, min_size=1, max_size=8)
base_offsets = st.integers(0, 2**63)


def check(buf: bytes) -> list[StoredRecord]:
    """What a reader does with bytes it found: every step may raise CorruptBatch."""
    info = parse_header(buf, 0)
    verify_batch(buf, info)
    return decode_records(buf, info)


@given(base=base_offsets, recs=batches)
def test_round_trip(base: int, recs: list[Record]) -> None:
    data = encode_batch(base, recs)
    info = parse_header(data)
    assert (info.position, info.size) == (0, len(data))
    assert (info.base_offset, info.count) == (base, len(recs))
    assert info.max_timestamp == max(r.timestamp for r in recs)
    assert info.last_offset == base + len(recs) - 1
    assert batch_size_estimate(recs) == len(data)
    assert check(data) == [
        StoredRecord(base + i, r.key, r.value, r.timestamp, r.headers) for i, r in enumerate(recs)
    ]


@given(recs=batches)
def test_decode_ignores_bytes_after_the_batch(recs: list[Record]) -> None:
    data = encode_batch(7, recs)
    # A reader hands over a buffer that also holds the next batch.
    assert check(data + encode_batch(7 + len(recs), recs)) == check(data)


@settings(max_examples=40, deadline=None)
@given(base=base_offsets, recs=st.lists(records, min_size=1, max_size=3))
def test_every_flipped_bit_is_detected(base: int, recs: list[Record]) -> None:
    data = encode_batch(base, recs)
    for bit in range(len(data) * 8):
        damaged = bytearray(data)
        damaged[bit // 8] ^= 0x80 >> (bit % 8)
        with pytest.raises(CorruptBatch):
            check(bytes(damaged))


@settings(max_examples=40)
@given(recs=st.lists(records, min_size=1, max_size=3))
def test_every_truncation_is_detected(recs: list[Record]) -> None:
    data = encode_batch(3, recs)
    for cut in range(len(data)):
        with pytest.raises(CorruptBatch) as exc:
            check(data[:cut])
        assert exc.value.position == 0


def test_header_layout_is_the_documented_one() -> None:
    data = encode_batch(0x0102030405060708, [Record(b"k", b"v", 5)])
    length, crc, magic, attrs, base, count, max_ts = struct.unpack_from(">IIBBQIq", data)
    assert HEADER_SIZE == 30
    assert length == len(data) - 4
    assert crc == zlib.crc32(data[8:])
    assert (magic, attrs, base, count, max_ts) == (1, 0, 0x0102030405060708, 1, 5)


def _reframe(rest: bytes) -> bytes:
    """A batch with a valid CRC around ``rest`` (everything after the CRC field)."""
    return struct.pack(">II", len(rest) + 4, zlib.crc32(rest)) + rest


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda rest: rest[:10] + struct.pack(">I", 2) + rest[14:], "count says 2, one record"),
        (lambda rest: rest + b"\x00", "a stray byte after the records"),
        (lambda rest: rest[:-1], "the last record is cut short"),
    ],
)
def test_record_framing_is_checked_even_with_a_good_crc(change, why: str) -> None:
    data = encode_batch(0, [Record(b"key", b"value", 1)])
    bad = _reframe(change(data[8:]))
    info = parse_header(bad)
    verify_batch(bad, info)  # the CRC is fine: only the framing can catch it
    with pytest.raises(CorruptBatch):
        decode_records(bad, info)


@pytest.mark.parametrize(
    ("at", "patch", "message"),
    [(0, b"\x02", "bad magic"), (10, b"\x00\x00\x00\x00", "impossible")],
    ids=["magic", "count-zero"],
)
def test_parse_header_rejects_impossible_headers(at: int, patch: bytes, message: str) -> None:
    # ``at`` indexes the bytes after the CRC: magic at 0, count at 10..13.
    rest = bytearray(encode_batch(0, [Record(b"", b"", 0)])[8:])
    rest[at : at + len(patch)] = patch
    with pytest.raises(CorruptBatch, match=message):
        parse_header(_reframe(bytes(rest)))


def test_parse_header_rejects_a_huge_length_without_reading_it() -> None:
    data = bytearray(encode_batch(0, [Record(b"", b"", 0)]))
    data[0:4] = struct.pack(">I", MAX_BATCH_BYTES)
    with pytest.raises(CorruptBatch, match="impossible batch length"):
        parse_header(bytes(data))


@pytest.mark.parametrize(
    "bad",
    [
        [],
        [Record("str key", b"v", 0)],  # type: ignore[arg-type]
        [Record(b"k", None, 0)],  # type: ignore[arg-type]
        [Record(b"k", b"v", 2**63)],
        [Record(b"k", b"v", 0, headers=(("h", b"x"),) * 65536)],
        [Record(b"k", b"v", 0, headers=((1, b"x"),))],  # type: ignore[arg-type]
        ["not a record"],
    ],
)
def test_unencodable_records_raise_invalid_record(bad: list) -> None:
    with pytest.raises(InvalidRecord):
        encode_batch(0, bad)


def _framed(recs: list[Record]) -> bytes:
    """Records framed by hand with the exported heads, as the broker's ingest does."""
    out = []
    for r in recs:
        out.append(RECORD_HEAD.pack(r.timestamp, len(r.key), len(r.value), len(r.headers)))
        out += [r.key, r.value]
        for name, value in r.headers:
            out += [HEADER_HEAD.pack(len(name.encode()), len(value)), name.encode(), value]
    return b"".join(out)


@given(base=base_offsets, recs=batches)
@settings(max_examples=50)
def test_encode_framed_is_encode_batch_for_records_framed_elsewhere(
        base: int, recs: list[Record]) -> None:
    max_ts = max(r.timestamp for r in recs)
    assert encode_framed(base, len(recs), max_ts, _framed(recs)) == encode_batch(base, recs)


def test_append_framed_reads_back_like_append(tmp_path: Path) -> None:
    recs = [Record(b"k%d" % i, b"v" * i, 1000 + i, (("h", b"%d" % i),)) for i in range(5)]
    with Log(tmp_path) as log:
        assert log.append_framed(_framed(recs), len(recs), 1004) == (0, 4)
        assert log.append(recs) == (5, 9)
        got = log.fetch(0, max_records=10).records
    assert [(r.key, r.value, r.timestamp, r.headers) for r in got] == \
        [(r.key, r.value, r.timestamp, r.headers) for r in recs + recs]


def test_a_framed_body_that_lies_about_its_count_reads_back_as_corrupt() -> None:
    recs = [Record(b"k", b"v", 1, ())] * 3
    buf = encode_framed(0, 2, 1, _framed(recs))  # 3 records framed, 2 declared
    with pytest.raises(CorruptBatch):
        check(buf)
    with pytest.raises(InvalidRecord):
        encode_framed(0, 0, 1, b"")
