"""The fetch response codec: columnar CBOR round trip, JSON rows, malformed bodies."""

from __future__ import annotations

import base64
import json

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_broker import record_codec as codec
from shared_log import ColumnFetch, CorruptRange, RecordColumns, StoredRecord

header = st.tuples(st.sampled_from(["origin", "trace", "é"]), st.binary(max_size=8))
stored = st.builds(StoredRecord, offset=st.just(0), key=st.binary(max_size=12),
                   value=st.binary(max_size=40), timestamp=st.integers(-(2**63), 2**63 - 1),
                   headers=st.lists(header, max_size=3).map(tuple))


def columns_of(records: list[StoredRecord], first: int = 5) -> RecordColumns:
    cols = RecordColumns()
    for i, r in enumerate(records):
        cols.timestamps.append(r.timestamp)
        cols.keys.append(r.key)
        cols.values.append(r.value)
        cols.header_counts.append(len(r.headers))
        for name, v in r.headers:
            idx = cols._name_ids.setdefault(name.encode(), len(cols.header_names))
            if idx == len(cols.header_names):
                cols.header_names.append(name)
            cols.header_name_index.append(idx)
            cols.header_values.append(v)
        if i == 0 or i == 3:  # a hole at record 3: two runs
            cols.runs.append([first + i + (i == 3), 0])
        cols.runs[-1][1] += 1
    return cols


def body_of(cols: RecordColumns) -> bytes:
    skipped = [CorruptRange(0, 0, 0, 8, 8)]
    head = codec.meta("t", 2, ColumnFetch(cols, 99, skipped), 1, 120)
    return codec.encode_cbor(head, cols)


@given(st.lists(stored, max_size=30))
def test_cbor_round_trip(records: list[StoredRecord]) -> None:
    cols = columns_of(records)
    got = codec.decode_cbor(body_of(cols))
    assert (got.topic, got.partition, got.start_offset, got.end_offset, got.next_offset,
            got.skipped) == ("t", 2, 1, 120, 99, [(8, 8)])
    want = list(cols.offsets())
    assert [r.offset for r in got.records] == want
    assert [(r.key, r.value, r.timestamp, r.headers) for r in got.records] == [
        (r.key, r.value, r.timestamp, r.headers) for r in records]


def test_uniform_header_fast_path_matches_general_path() -> None:
    records = [StoredRecord(0, b"k", b"v%d" % i, i, (("origin", b"o%d" % i),))
               for i in range(5)]
    got = codec.decode_cbor(body_of(columns_of(records)))
    assert [r.headers for r in got.records] == [(("origin", b"o%d" % i),) for i in range(5)]


@pytest.mark.parametrize("body", [
    b"", b"\xff", cbor2.dumps([1, 2]), cbor2.dumps({"topic": "t"}),
    cbor2.dumps({"topic": "t", "partition": 0, "records": {"count": 1, "offsets": [[0, 1]],
                                                           "timestamps": b"x", "keys": [],
                                                           "values": [], "headers": {}}})])
def test_malformed_bodies_raise_malformed_response(body: bytes) -> None:
    with pytest.raises(codec.MalformedResponse):
        codec.decode_cbor(body)


def test_json_utf8_falls_back_to_base64_per_record() -> None:
    cols = columns_of([StoredRecord(0, b"dev", b'{"x":1}', 7, (("h", b"v"),)),
                       StoredRecord(0, b"dev", b"\xff\xfe", 8, ())])
    body = json.loads(codec.encode_json(codec.meta("t", 0, ColumnFetch(cols, 7, []), 0, 7),
                                        cols, "utf8"))
    first, second = body["records"]
    assert first == {"offset": 5, "timestamp": 7, "key": "dev", "value": '{"x":1}',
                     "headers": [["h", "v"]], "encoding": "utf8"}
    assert second["encoding"] == "base64"
    assert base64.b64decode(second["value"]) == b"\xff\xfe"
    assert codec.decode_json_record("t", 0, second).value == b"\xff\xfe"
    assert codec.decode_json_record("t", 0, first).headers == (("h", b"v"),)
