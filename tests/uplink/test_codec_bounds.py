"""Hostile batch bodies: every one is refused in time and memory linear in its bytes.

The reproductions of the broker's body findings at the codec level: thousands of empty
gzip members (decompression was quadratic), a few hundred bytes of zstd that declare
millions of records, huge integers in every field (Python refuses to print them), and a
census of CBOR items checked against an independent count on arbitrary documents.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import cbor2
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from uplink import (
    Batch,
    BodyTooLarge,
    MalformedBatch,
    UplinkRecord,
    decode_batch,
    encode_batch,
    load_cbor,
)
from uplink._cbor import CensusError, census
from uplink._codec import ITEMS_PER_RECORD
from uplink._compression import MAX_GZIP_MEMBERS


def good_batch(n: int = 3) -> Batch:
    return Batch("edge-a", "telemetry", "g1", 0, n - 1,
                 tuple(UplinkRecord(i, b"dev-%d" % i, 1_700_000_000_000 + i, b"{}",
                                    (("h", b"v"),) if i % 2 else ()) for i in range(n)))


def v2_map(n: int, key: bytes = b"", value: bytes = b"", ts: int = 0) -> dict[str, Any]:
    return {"v": 2, "e": "edge-a", "s": "telemetry", "g": "g1", "b": 0, "l": n - 1,
            "r": {"k": [key] * n, "t": [ts] * n, "x": [value] * n}}


# -- census ------------------------------------------------------------------------------

def count_items(value: Any) -> int:
    if type(value) is list:
        return 1 + sum(map(count_items, value))
    if type(value) is dict:
        return 1 + sum(count_items(k) + count_items(v) for k, v in value.items())
    if type(value) is int and not -2**64 <= value < 2**64:
        return 2  # a bignum: the tag and its byte string
    return 1


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats(allow_nan=False) | st.binary(max_size=300) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=40)
    | st.dictionaries(st.text(max_size=5), children, max_size=6),
    max_leaves=200)


@settings(max_examples=300, deadline=None)
@given(cbor_values)
def test_census_counts_every_item(value: Any) -> None:
    body = cbor2.dumps(value)
    assert census(body, 10**9) == count_items(value)
    with pytest.raises(CensusError):
        census(body[:-1], 10**9) if len(body) > 1 else census(b"", 10**9)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=3), min_size=8, max_size=60)
       | st.lists(st.integers(min_value=0, max_value=2**64 - 1), min_size=8, max_size=60))
def test_census_fast_paths_agree_with_the_item_walk(column: list[Any]) -> None:
    # The strided and string-only skips must count exactly what the general walk counts,
    # also when their guess is wrong half-way through a column.
    body = cbor2.dumps([column, [column, "tail"]])
    assert census(body, 10**9) == 5 + 2 * len(column)


@pytest.mark.parametrize("body", [
    cbor2.dumps(cbor2.CBORTag(258, [1, 2])),  # a set
    cbor2.dumps(cbor2.CBORTag(35, "a+")),  # a regex
    b"\x9f\x01\xff",  # indefinite array
    b"\x5f\x41a\xff",  # indefinite byte string
    b"\x1c",  # reserved
    b"\xf8\x10",  # reserved simple value
    b"\x9b" + (2**40).to_bytes(8, "big") + b"\x40",  # declares a trillion items
    b"\x5a\xff\xff\xff\xff",  # a 4 GiB string in 5 bytes
])
def test_census_refuses_what_the_protocol_never_writes(body: bytes) -> None:
    with pytest.raises(CensusError):
        census(body, 10**9)
    with pytest.raises(MalformedBatch) as caught:
        decode_batch(body, None)
    assert caught.value.field == "body"


def test_census_budget_stops_before_anything_is_built() -> None:
    body = cbor2.dumps([[]] * 1000)
    with pytest.raises(CensusError) as caught:
        census(body, 500)
    assert caught.value.too_many
    assert census(body, 1001) == 1001
    with pytest.raises(BodyTooLarge):
        load_cbor(body, 500)
    assert load_cbor(body, 1001) == [[]] * 1000


# -- records per batch -------------------------------------------------------------------


def test_a_tiny_zstd_body_of_millions_of_records_is_refused_by_count() -> None:
    # The 481-byte body: 4 M empty records pushed the broker to 3.3 GB.
    raw = cbor2.dumps(v2_map(4_000_000))
    bomb = zstandard.ZstdCompressor(level=19).compress(raw)
    assert len(bomb) < 2000
    with pytest.raises(BodyTooLarge) as caught:
        decode_batch(bomb, "zstd", max_decompressed_size=len(raw) + 1, max_records=10_000)
    assert caught.value.field == "records"


def test_records_per_batch_limit_is_exact() -> None:
    body, enc = encode_batch(good_batch(50))
    assert len(decode_batch(body, enc, max_records=50).records) == 50
    with pytest.raises(BodyTooLarge) as caught:
        decode_batch(body, enc, max_records=49)
    assert caught.value.field == "records"
    # v1 rows with offsets: the same limit
    rows = [[i, b"k", 1, b"v", None] for i in range(50)]
    v1 = cbor2.dumps({"v": 1, "e": "edge-a", "s": "telemetry", "g": "g1", "b": 0, "l": 49,
                      "r": rows})
    assert len(decode_batch(v1, None, max_records=50).records) == 50
    with pytest.raises(BodyTooLarge):
        decode_batch(v1, None, max_records=49)


def test_many_headers_per_record_fit_the_item_budget() -> None:
    # 3 + 2 per header in version 2: six headers on every record of a full batch still fit.
    n = 100
    recs = tuple(UplinkRecord(i, b"k", 1, b"v", tuple((f"h{j}", b"x") for j in range(6)))
                 for i in range(n))
    body, enc = encode_batch(Batch("edge-a", "telemetry", "g1", 0, n - 1, recs))
    assert decode_batch(body, enc, max_records=n).records == recs
    assert ITEMS_PER_RECORD >= 3 + 1 + 2 * 6


# -- gzip --------------------------------------------------------------------------------


def test_thousands_of_empty_gzip_members_are_refused() -> None:
    # The body: 419,430 empty members (8 MiB) blocked the event loop for 34 s.
    member = gzip.compress(b"", mtime=0)
    bomb = member * 419_430
    with pytest.raises(MalformedBatch) as caught:
        decode_batch(bomb, "gzip", max_decompressed_size=1 << 20)
    assert "gzip members" in caught.value.message


def test_gzip_members_up_to_the_limit_are_one_stream() -> None:
    body, _ = encode_batch(good_batch(5))
    split = [body[i:i + 7] for i in range(0, len(body), 7)]
    assert len(split) <= MAX_GZIP_MEMBERS
    multi = b"".join(gzip.compress(p, mtime=0) for p in split)
    assert decode_batch(multi, "gzip").records == good_batch(5).records
    too_many = b"".join(gzip.compress(p, mtime=0) for p in [b""] * MAX_GZIP_MEMBERS + split)
    with pytest.raises(MalformedBatch):
        decode_batch(too_many, "gzip")


@pytest.mark.parametrize("cut", [1, 5, 12])
def test_truncated_and_padded_gzip(cut: int) -> None:
    body, _ = encode_batch(good_batch(), "gzip")
    with pytest.raises(MalformedBatch):
        decode_batch(body[:-cut], "gzip")
    with pytest.raises(MalformedBatch):
        decode_batch(body + b"\x00" * cut, "gzip")
    with pytest.raises(MalformedBatch):
        decode_batch(b"", "gzip")


def test_gzip_larger_than_a_chunk_decodes() -> None:
    recs = tuple(UplinkRecord(i, b"k", 1, zlib.crc32(b"%d" % i).to_bytes(4, "big") * 64)
                 for i in range(2000))
    batch = Batch("edge-a", "telemetry", "g1", 0, 1999, recs)
    body, enc = encode_batch(batch, "gzip", level=0)  # stored blocks: > 64 KiB of input
    assert len(body) > 256 * 1024
    assert decode_batch(body, enc).records == recs
    with pytest.raises(BodyTooLarge):
        decode_batch(body, enc, max_decompressed_size=100_000)


# -- huge integers -----------------------------------------------------------------------

HUGE = 10**5000


@pytest.mark.parametrize(("overrides", "field"), [
    ({"v": HUGE}, "version"),
    ({"e": HUGE}, "edge_id"),
    ({"b": HUGE}, "base_offset"),
    ({"l": HUGE}, "last_offset"),
    ({"r": {"k": [b"k"], "t": [HUGE], "x": [b"v"]}}, "records[0].timestamp"),
    ({"r": {"k": [HUGE], "t": [1], "x": [b"v"]}}, "records[0].key"),
    ({"r": {"k": [b"k"], "t": [1], "x": [b"v"], "o": [HUGE]}}, "records[0].offset"),
    ({"r": {"k": [b"k"], "t": [1], "x": [b"v"], "o": [-HUGE]}}, "records[0].offset"),
    ({"r": {"k": [b"k"], "t": [1], "x": [b"v"], "hc": [HUGE], "hn": [], "hi": [], "hv": []}},
     "records[0].headers"),
    ({"v": 1, "r": [[HUGE, b"k", 1, b"v", None]]}, "records[0].offset"),
    ({"v": 1, "r": [[0, b"k", -HUGE, b"v", None]]}, "records[0].timestamp"),
])
def test_huge_integers_are_named_by_their_field(overrides: dict[str, Any], field: str) -> None:
    message: dict[str, Any] = {"v": 2, "e": "edge-a", "s": "telemetry", "g": "g1", "b": 0,
                               "l": 0, "r": {"k": [b"k"], "t": [1], "x": [b"v"]}}
    message.update(overrides)
    with pytest.raises(MalformedBatch) as caught:
        decode_batch(cbor2.dumps(message), None)
    assert caught.value.field == field
    assert len(str(caught.value)) < 300  # printable, and short
