"""The uplink wire format: round trips, and every malformed body naming its field."""

from __future__ import annotations

import dataclasses
import gzip
import json
import threading
import zlib

import cbor2
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from uplink import (
    SAFE_NAME_PATTERN,
    Ack,
    AckStatus,
    Batch,
    BodyTooLarge,
    LocalProtocolError,
    MalformedBatch,
    MalformedReply,
    RecordBlock,
    Refusal,
    RefusalCode,
    UnsupportedEncoding,
    UplinkRecord,
    decode_ack,
    decode_batch,
    decode_refusal,
    encode_ack,
    encode_batch,
    encode_refusal,
    is_safe_name,
)

COMPRESSIONS = ("none", "gzip", "zstd")


def make_batch(base: int = 10, last: int = 14, offsets: tuple[int, ...] = (10, 11, 13)) -> Batch:
    records = tuple(
        UplinkRecord(o, b"dev-%d" % (o % 3), 1_700_000_000_000 + o, b'{"t":%d}' % o)
        for o in offsets
    )
    return Batch("edge-1", "telemetry", "gen-a1", base, last, records)


def wire(batch: Batch) -> dict:
    """The decoded CBOR map of a batch, to corrupt one field at a time."""
    body, _ = encode_batch(batch)
    return cbor2.loads(body)


def decode_map(message: object) -> Batch:
    return decode_batch(cbor2.dumps(message), "identity")


# --- round trips ------------------------------------------------------------

names = st.from_regex(SAFE_NAME_PATTERN, fullmatch=True).filter(lambda s: ".." not in s)
headers = st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=8)), max_size=3).map(tuple)


@st.composite
def batches(draw: st.DrawFn) -> Batch:
    base = draw(st.integers(0, 2**63 - 1000))
    deltas = sorted(draw(st.sets(st.integers(0, 200), max_size=30)))
    extra = draw(st.integers(0, 50))
    last = base + (deltas[-1] if deltas else 0) + extra
    records = tuple(
        UplinkRecord(
            base + d,
            draw(st.binary(max_size=16)),
            draw(st.integers(0, 2**63 - 1)),
            draw(st.binary(max_size=64)),
            draw(headers),
        )
        for d in deltas
    )
    return Batch(draw(names), draw(names), draw(names), base, last, records)


@given(batch=batches(), compression=st.sampled_from(COMPRESSIONS))
def test_batch_round_trips_in_every_compression(batch: Batch, compression: str) -> None:
    body, token = encode_batch(batch, compression)  # type: ignore[arg-type]
    assert token == {"none": "identity", "gzip": "gzip", "zstd": "zstd"}[compression]
    assert decode_batch(body, token) == batch


def test_identity_may_be_given_as_none_empty_or_any_case() -> None:
    batch = make_batch()
    body, _ = encode_batch(batch)
    assert decode_batch(body, None) == batch
    assert decode_batch(body, "") == batch
    gz, _ = encode_batch(batch, "gzip")
    assert decode_batch(gz, " GZip ") == batch


def test_wire_layout_is_the_documented_one() -> None:
    batch = Batch(
        "e1",
        "s1",
        "g1",
        100,
        105,
        (UplinkRecord(100, b"k", 7, b"v"), UplinkRecord(103, b"k2", 8, b"w", (("h", b"x"),))),
    )
    assert wire(batch) == {
        "v": 2,
        "e": "e1",
        "s": "s1",
        "g": "g1",
        "b": 100,
        "l": 105,
        "r": {"k": [b"k", b"k2"], "t": [7, 8], "x": [b"v", b"w"], "o": [0, 3],
              "hc": [0, 1], "hn": ["h"], "hi": [0], "hv": [b"x"]},
    }


def test_a_dense_batch_without_headers_sends_no_offsets_and_no_header_columns() -> None:
    records = tuple(UplinkRecord(o, b"k%d" % o, o, b"v") for o in range(100, 103))
    assert wire(Batch("e1", "s1", "g1", 100, 102, records))["r"] == {
        "k": [b"k100", b"k101", b"k102"], "t": [100, 101, 102], "x": [b"v", b"v", b"v"]}


def test_version_1_rows_are_still_accepted() -> None:
    message = {"v": 1, "e": "e1", "s": "s1", "g": "g1", "b": 100, "l": 105,
               "r": [[0, b"k", 7, b"v", None], [3, b"k2", 8, b"w", [["h", b"x"]]]]}
    assert decode_map(message) == Batch(
        "e1", "s1", "g1", 100, 105,
        (UplinkRecord(100, b"k", 7, b"v"), UplinkRecord(103, b"k2", 8, b"w", (("h", b"x"),))))


def test_a_decoded_block_slices_and_compares_as_records() -> None:
    batch = make_batch(offsets=(10, 11, 13))
    block = decode_batch(encode_batch(batch)[0], None).records
    assert type(block) is RecordBlock
    assert block[1:] == batch.records[1:] and block[-1] == batch.records[-1]
    assert list(block) == list(batch.records) and len(block[3:]) == 0


def test_a_batch_of_only_skipped_offsets_round_trips() -> None:
    batch = make_batch(base=5, last=9, offsets=())
    body, token = encode_batch(batch, "zstd")
    assert decode_batch(body, token) == batch


def test_gzip_of_several_members_is_one_body() -> None:
    body, _ = encode_batch(make_batch())
    two_members = gzip.compress(body[:10]) + gzip.compress(body[10:])
    assert decode_batch(two_members, "gzip") == make_batch()


def test_zstd_without_a_declared_size_decodes() -> None:
    body, _ = encode_batch(make_batch())
    compressed = zstandard.ZstdCompressor(write_content_size=False).compress(body)
    assert zstandard.frame_content_size(compressed) == -1
    assert decode_batch(compressed, "zstd") == make_batch()


def test_zstd_bodies_are_a_function_of_the_batch_alone() -> None:
    # The compressor is reused per thread: an earlier, different body must not change
    # the bytes of the next one (a fresh frame each time), in this thread or another.
    plain, _ = encode_batch(make_batch())
    fresh = zstandard.ZstdCompressor(level=3).compress(plain)
    other = dataclasses.replace(make_batch(), stream="other")
    bodies = [encode_batch(b, "zstd")[0] for b in (make_batch(), other, make_batch())]
    from_thread: list[bytes] = []
    t = threading.Thread(target=lambda: from_thread.append(
        encode_batch(make_batch(), "zstd")[0]))
    t.start()
    t.join()
    assert bodies[0] == bodies[2] == from_thread[0] == fresh
    assert decode_batch(bodies[1], "zstd") == other


# --- our own misuse ---------------------------------------------------------


def test_unknown_compression_is_our_mistake() -> None:
    with pytest.raises(LocalProtocolError):
        encode_batch(make_batch(), "brotli")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"edge_id": "../etc"},
        {"stream": "a/b"},
        {"generation": ""},
        {"edge_id": "a..b"},
        {"stream": "tele\n"},
        {"base_offset": -1},
        {"base_offset": True},
        {"last_offset": 9},  # before base 10
        {"records": [UplinkRecord(10, b"k", 1, b"v")]},  # a list, not a tuple
        {"records": (UplinkRecord(9, b"k", 1, b"v"),)},  # before base
        {"records": (UplinkRecord(15, b"k", 1, b"v"),)},  # after last
        {"records": (UplinkRecord(11, b"k", 1, b"v"), UplinkRecord(11, b"k", 1, b"v"))},
        {"records": (UplinkRecord(12, b"k", 1, b"v"), UplinkRecord(11, b"k", 1, b"v"))},
        {"records": (UplinkRecord(10, "k", 1, b"v"),)},  # type: ignore[arg-type]
        {"records": (UplinkRecord(10, b"k", -1, b"v"),)},
        {"records": (UplinkRecord(10, b"k", 1, bytearray(b"v")),)},  # type: ignore[arg-type]
        {"records": (UplinkRecord(10, b"k", 1, b"v", (("h", "x"),)),)},  # type: ignore[arg-type]
        {"records": (UplinkRecord(10, b"k", 1, b"v", [("h", b"x")]),)},  # type: ignore[arg-type]
        {"records": ((10, b"k", 1, b"v", ()),)},
    ],
)
def test_invalid_batch_is_refused_when_we_build_it(kwargs: dict) -> None:
    fields = {
        "edge_id": "edge-1",
        "stream": "telemetry",
        "generation": "g1",
        "base_offset": 10,
        "last_offset": 14,
        "records": (),
    }
    fields.update(kwargs)
    with pytest.raises(LocalProtocolError):
        Batch(**fields)


def test_safe_names() -> None:
    for good in ("a", "edge-01", "Gen_7.b", "x" * 128):
        assert is_safe_name(good), good
    for bad in ("", ".hidden", "-x", "a/b", "a..b", "..", "x" * 129, "é", "ab\n", None, 5):
        assert not is_safe_name(bad), bad


# --- malformed bodies, each naming its field --------------------------------


def mutated(**changes: object) -> dict:
    message = wire(make_batch())
    if "r" in changes and isinstance(changes["r"], list):  # rows: a version 1 body
        message["v"] = 1
    for key, value in changes.items():
        if value is KeyError:
            del message[key]
        else:
            message[key] = value
    return message


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ([1, 2, 3], "body"),
        (mutated(v=KeyError), "version"),
        (mutated(v=3), "version"),
        (mutated(v=True), "version"),
        (mutated(e=KeyError), "edge_id"),
        (mutated(e="../x"), "edge_id"),
        (mutated(e=b"edge"), "edge_id"),
        (mutated(s="a/b"), "stream"),
        (mutated(g="a..b"), "generation"),
        (mutated(g=7), "generation"),
        (mutated(b=KeyError), "base_offset"),
        (mutated(b=-1), "base_offset"),
        (mutated(b=1.5), "base_offset"),
        (mutated(b=2**64), "base_offset"),
        (mutated(l=KeyError), "last_offset"),
        (mutated(l=-3), "last_offset"),
        (mutated(l=9), "last_offset"),  # before base 10
        (mutated(l="14"), "last_offset"),
        (mutated(r=KeyError), "records"),
        (mutated(r={"0": 1}), "records.key"),  # a map of columns without the keys
        (mutated(r="rows"), "records"),
        (mutated(r=[[0, b"k", 1, b"v"]]), "records[0]"),
        (mutated(r=[(0, b"k", 1, b"v", None), "x"]), "records[1]"),
        (mutated(r=[[-1, b"k", 1, b"v", None]]), "records[0].offset"),
        (mutated(r=[[0, b"k", 1, b"v", None], [0, b"k", 1, b"v", None]]), "records[1].offset"),
        (mutated(r=[[2, b"k", 1, b"v", None], [1, b"k", 1, b"v", None]]), "records[1].offset"),
        (mutated(r=[[5, b"k", 1, b"v", None]]), "records[0].offset"),  # base+5 > last 14
        (mutated(r=[[False, b"k", 1, b"v", None]]), "records[0].offset"),
        (mutated(r=[[0, "k", 1, b"v", None]]), "records[0].key"),
        (mutated(r=[[0, None, 1, b"v", None]]), "records[0].key"),
        (mutated(r=[[0, b"k", -5, b"v", None]]), "records[0].timestamp"),
        (mutated(r=[[0, b"k", 1.0, b"v", None]]), "records[0].timestamp"),
        (mutated(r=[[0, b"k", 1, "v", None]]), "records[0].value"),
        (mutated(r=[[0, b"k", 1, b"v", {"h": b"x"}]]), "records[0].headers"),
        (mutated(r=[[0, b"k", 1, b"v", [["h"]]]]), "records[0].headers"),
        (mutated(r=[[0, b"k", 1, b"v", [["h", "x"]]]]), "records[0].headers"),
    ],
)
def test_malformed_batch_names_the_field(message: object, field: str) -> None:
    with pytest.raises(MalformedBatch) as caught:
        decode_map(message)
    assert caught.value.field == field
    assert caught.value.to_dict() == {"error": caught.value.message, "field": field}


def columns(**changes: object) -> dict:
    """The wire map of a batch with headers, its record columns changed."""
    batch = make_batch(offsets=(10, 11, 13))
    batch = dataclasses.replace(batch, records=tuple(
        dataclasses.replace(r, headers=(("seq", b"1"), ("ct", b"x"))) for r in batch.records))
    message = wire(batch)
    for key, value in changes.items():
        if value is KeyError:
            del message["r"][key]
        else:
            message["r"][key] = value
    return message


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (columns(k=KeyError), "records.key"),
        (columns(k={"a": b"a"}), "records.key"),
        (columns(k=[b"a", b"b"]), "records.timestamp"),  # 2 keys, 3 timestamps
        (columns(k=[b"a", "b", b"c"]), "records[1].key"),
        (columns(t=[1, 2]), "records.timestamp"),
        (columns(t=[1, -2, 3]), "records[1].timestamp"),
        (columns(t=[1, 2, True]), "records[2].timestamp"),
        (columns(t=[1, 2, 2**63]), "records[2].timestamp"),
        (columns(x=[b"a", b"b", None]), "records[2].value"),
        (columns(x=KeyError), "records.value"),
        (columns(o=[0, 1]), "records.offset"),
        (columns(o=[0, 1, 1]), "records[2].offset"),
        (columns(o=[-1, 1, 2]), "records[0].offset"),
        (columns(o=[0, 1, 5]), "records[2].offset"),  # base + 5 > last 14
        (columns(o=[0, 1.0, 2]), "records[1].offset"),
        (columns(o=KeyError), "records.offset"),  # 3 records for 5 offsets
        (columns(hc=KeyError), "records.headers"),
        (columns(hc=[2, 2]), "records.headers"),
        (columns(hc=[2, 2, -1]), "records[2].headers"),
        (columns(hc=[2, 2, 1]), "records.headers"),  # counts add up to 5, 6 headers
        (columns(hn=["seq", 7]), "records.headers.name"),
        (columns(hn=["x" * 70_000, "ct"]), "records.headers.name"),
        (columns(hi=[0, 1, 0, 1, 0, 2]), "records.headers.name"),
        (columns(hi=[0, 1, 0, 1, 0, -1]), "records.headers.name"),
        (columns(hv=[b"1", b"x", b"1", "x", b"1", b"x"]), "records.headers.value[3]"),
    ],
)
def test_malformed_columns_name_the_field(message: object, field: str) -> None:
    with pytest.raises(MalformedBatch) as caught:
        decode_map(message)
    assert caught.value.field == field


def test_unknown_columns_are_ignored() -> None:
    assert decode_map(columns(zz=[1, 2, 3])) == decode_map(columns())


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        (b"", "identity"),
        (b"\xff", "identity"),  # a lone break code
        (b"\xa1", "identity"),  # a map cut short
        (cbor2.dumps({"v": 1}) + b"\x00", "identity"),  # trailing bytes
        (b"\xa2\x61v\x01\x61v\x01", "identity"),  # duplicate key
        (b"\x81" * 50 + b"\x00", "identity"),  # absurd nesting
        (b"\xa1\x01\x02", "identity"),  # non-string map key
        (b"not gzip at all", "gzip"),
        (gzip.compress(cbor2.dumps({"v": 1}))[:-6], "gzip"),  # truncated
        (gzip.compress(b"x") + b"junk", "gzip"),
        (b"not zstd", "zstd"),
        (b"", "zstd"),
        (zstandard.ZstdCompressor().compress(b"\xa0" * 100)[:-3], "zstd"),  # truncated
        (zstandard.ZstdCompressor().compress(b"\xa0") + b"junk", "zstd"),
    ],
)
def test_undecodable_body_is_malformed_body(body: bytes, encoding: str) -> None:
    with pytest.raises(MalformedBatch) as caught:
        decode_batch(body, encoding)
    assert caught.value.field == "body"
    assert type(caught.value) is MalformedBatch


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=2), inner),
    max_leaves=30,
)


@given(garbage=st.binary(max_size=200), encoding=st.sampled_from(["identity", "gzip", "zstd"]))
def test_random_bytes_only_ever_raise_malformed_batch(garbage: bytes, encoding: str) -> None:
    with pytest.raises(MalformedBatch):
        decode_batch(garbage, encoding)


@given(
    message=cbor_values,
    base=st.fixed_dictionaries(
        {}, optional={k: st.just(v) | cbor_values for k, v in wire(make_batch()).items()}
    ),
)
def test_random_cbor_only_ever_raises_malformed_batch(message: object, base: dict) -> None:
    # random values, and the real map with random fields removed or replaced
    columns_of = {k: [message] for k in ("k", "t", "x", "o", "hc", "hn", "hi", "hv")}
    for candidate in (message, {**base, "r": message}, {**base, "r": [message]},
                      {**base, "v": 1, "r": [message]}, {**base, "r": columns_of}):
        try:
            batch = decode_map(candidate)
        except MalformedBatch:
            continue
        # whatever does decode, the checked constructor accepts too
        assert dataclasses.replace(batch) == batch


def test_unknown_content_encoding() -> None:
    body, _ = encode_batch(make_batch())
    for token in ("br", "deflate", "gzip, identity", "x-unknown"):
        with pytest.raises(UnsupportedEncoding) as caught:
            decode_batch(body, token)
        assert caught.value.field == "content_encoding"


# --- size limits --------------------------------------------------------------

LIMIT = 1 << 20
BOMB = b"\0" * (LIMIT * 8)


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        (BOMB[: LIMIT + 1], "identity"),
        (gzip.compress(BOMB), "gzip"),
        (gzip.compress(b"\0" * LIMIT) + gzip.compress(b"\0"), "gzip"),  # second member tips it
        (zstandard.ZstdCompressor().compress(BOMB), "zstd"),
        (zstandard.ZstdCompressor(write_content_size=False).compress(BOMB), "zstd"),
    ],
)
def test_oversized_body_is_body_too_large(body: bytes, encoding: str) -> None:
    assert len(body) < LIMIT or encoding == "identity"
    with pytest.raises(BodyTooLarge) as caught:
        decode_batch(body, encoding, max_decompressed_size=LIMIT)
    assert caught.value.field == "body"


def test_body_at_the_limit_is_accepted() -> None:
    body, _ = encode_batch(make_batch())
    for compression in COMPRESSIONS:
        compressed, token = encode_batch(make_batch(), compression)  # type: ignore[arg-type]
        assert decode_batch(compressed, token, max_decompressed_size=len(body)) == make_batch()
        with pytest.raises(BodyTooLarge):
            decode_batch(compressed, token, max_decompressed_size=len(body) - 1)


def test_truncated_zstd_without_size_is_malformed_not_too_large() -> None:
    compressor = zstandard.ZstdCompressor(write_content_size=False)
    truncated = compressor.compress(b"\xa0" * 1000)[:-3]
    with pytest.raises(MalformedBatch) as caught:
        decode_batch(truncated, "zstd", max_decompressed_size=LIMIT)
    assert type(caught.value) is MalformedBatch


def test_gzip_uses_standard_framing() -> None:
    body, token = encode_batch(make_batch(), "gzip")
    assert token == "gzip"
    assert gzip.decompress(body) == encode_batch(make_batch())[0]
    assert zlib.decompress(body, 31)  # plain zlib agrees


# --- acks and refusals ----------------------------------------------------------


acks = st.builds(
    Ack,
    edge_id=names,
    stream=names,
    generation=names,
    acked_offset=st.integers(-1, 2**63 - 1),
    status=st.sampled_from(AckStatus),
)
refusals = st.builds(
    Refusal,
    code=st.sampled_from(RefusalCode),
    expected_offset=st.integers(0, 2**63 - 1),
    message=st.text(max_size=40),
)


@given(ack=acks)
def test_ack_round_trips_as_cbor_and_json(ack: Ack) -> None:
    assert decode_ack(encode_ack(ack)) == ack
    assert Ack.from_dict(json.loads(json.dumps(ack.to_dict()))) == ack


@given(refusal=refusals)
def test_refusal_round_trips_as_cbor_and_json(refusal: Refusal) -> None:
    assert decode_refusal(encode_refusal(refusal)) == refusal
    assert Refusal.from_dict(json.loads(json.dumps(refusal.to_dict()))) == refusal


def test_ack_dict_form() -> None:
    ack = Ack("e1", "s1", "g1", 41, AckStatus.PARTIAL)
    assert ack.to_dict() == {
        "edge_id": "e1",
        "stream": "s1",
        "generation": "g1",
        "acked_offset": 41,
        "status": "partial",
    }
    refusal = Refusal(RefusalCode.GAP, 42, "expected 42")
    assert refusal.to_dict() == {"code": "gap", "expected_offset": 42, "message": "expected 42"}


GOOD_ACK = {
    "edge_id": "e",
    "stream": "s",
    "generation": "g",
    "acked_offset": 3,
    "status": "written",
}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"edge_id": "a/b"}, "edge_id"),
        ({"stream": None}, "stream"),
        ({"generation": ".."}, "generation"),
        ({"acked_offset": -2}, "acked_offset"),
        ({"acked_offset": "3"}, "acked_offset"),
        ({"acked_offset": True}, "acked_offset"),
        ({"status": "lost"}, "status"),
        ({"status": ["written"]}, "status"),
    ],
)
def test_malformed_ack_names_the_field(change: dict, field: str) -> None:
    with pytest.raises(MalformedReply) as caught:
        decode_ack(cbor2.dumps({**GOOD_ACK, **change}))
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"code": "nope", "expected_offset": 1}, "code"),
        ({"code": "gap", "expected_offset": -1}, "expected_offset"),
        ({"code": "gap"}, "expected_offset"),
        ({"code": "gap", "expected_offset": 1, "message": 5}, "message"),
    ],
)
def test_malformed_refusal_names_the_field(data: dict, field: str) -> None:
    with pytest.raises(MalformedReply) as caught:
        decode_refusal(cbor2.dumps(data))
    assert caught.value.field == field


@pytest.mark.parametrize("body", [b"", b"\xff", cbor2.dumps([1]), cbor2.dumps(GOOD_ACK) + b"x"])
def test_undecodable_reply_is_malformed_reply(body: bytes) -> None:
    with pytest.raises(MalformedReply):
        decode_ack(body)
    with pytest.raises(MalformedReply):
        decode_refusal(body)


def test_refusal_message_defaults_to_empty() -> None:
    assert Refusal.from_dict({"code": "gap", "expected_offset": 4}).message == ""


@pytest.mark.parametrize(
    "build",
    [
        lambda: Ack("e", "s", "g", -2, AckStatus.WRITTEN),
        lambda: Ack("e", "s", "a/b", 1, AckStatus.WRITTEN),
        lambda: Ack("e", "s", "g", 1, "written"),
        lambda: Refusal("gap", 1),
        lambda: Refusal(RefusalCode.GAP, -1),
    ],
)
def test_invalid_replies_are_refused_when_we_build_them(build) -> None:
    with pytest.raises(LocalProtocolError):
        build()


def test_trusted_batch_of_log_shaped_records_encodes_like_a_checked_one() -> None:
    from shared_log import StoredRecord

    stored = (StoredRecord(5, b"k", b"v", 7, (("h", b"x"),)), StoredRecord(7, b"k2", b"w", 8))
    fast = Batch.trusted("e1", "s", "g1", 5, 8, stored)
    checked = Batch("e1", "s", "g1", 5, 8, tuple(
        UplinkRecord(r.offset, r.key, r.timestamp, r.value, r.headers) for r in stored))
    assert encode_batch(fast) == encode_batch(checked)
    assert decode_batch(encode_batch(fast)[0], "identity") == checked


def test_trusted_batch_still_checks_its_position() -> None:
    with pytest.raises(LocalProtocolError):
        Batch.trusted("../x", "s", "g1", 0, 1, ())
    with pytest.raises(LocalProtocolError):
        Batch.trusted("e1", "s", "g1", 5, 4, ())
    with pytest.raises(LocalProtocolError):
        Batch.trusted("e1", "s", "g1", 5, 6, (UplinkRecord(9, b"", 0, b""),))
