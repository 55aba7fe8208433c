"""Record batches v2 as an independent reader (kio's) decodes them: offsets, keys,
values, timestamps, headers, CRC32C, across runs, header counts and big deltas."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from kio.records.readers import read_batch

from cloud_broker.kafka import encode_batches
from cloud_broker.kafka.records import zigzag_varint
from shared_log import RecordColumns


def _columns(rows: list[tuple[int, bytes, bytes, int, list[tuple[str, bytes]]]]
             ) -> RecordColumns:
    cols = RecordColumns()
    for off, key, value, ts, headers in rows:
        if cols.runs and cols.runs[-1][0] + cols.runs[-1][1] == off:
            cols.runs[-1][1] += 1
        else:
            cols.runs.append([off, 1])
        cols.keys.append(key)
        cols.values.append(value)
        cols.timestamps.append(ts)
        cols.header_counts.append(len(headers))
        for name, hv in headers:
            if name not in cols.header_names:
                cols.header_names.append(name)
            cols.header_name_index.append(cols.header_names.index(name))
            cols.header_values.append(hv)
    return cols


def _decode(data: bytes) -> list[tuple[int, bytes | None, bytes | None, int, list]]:
    out, pos = [], 0
    while pos < len(data):
        batch, n = read_batch(data, pos)
        pos += n
        for r in batch.records:
            out.append((r.offset, r.key, r.value, round(r.timestamp.timestamp() * 1000),
                        [(h.key, h.value) for h in r.headers]))
    return out


def _bounds(data: bytes) -> tuple[int, int]:
    batch, _ = read_batch(data, 0)
    return batch.base_timestamp, batch.max_timestamp


def _first_run(rows: list) -> int:
    n = 1
    while n < len(rows) and rows[n][0] == rows[n - 1][0] + 1:
        n += 1
    return n


record = st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=300),
                   st.integers(1_600_000_000_000, 1_800_000_000_000),
                   st.lists(st.tuples(st.sampled_from(["origin", "seq", "x"]),
                                      st.binary(max_size=40)), max_size=3))


@given(st.integers(0, 2**40), st.lists(record, min_size=1, max_size=40),
       st.sets(st.integers(0, 39), max_size=3))
@settings(max_examples=150, deadline=None)
def test_batches_decode_to_the_columns(base: int, recs: list, gaps: set[int]) -> None:
    rows, off = [], base
    for i, (k, v, ts, hs) in enumerate(recs):
        off += 5 if i in gaps else 0  # a skipped range starts a new run (a new batch)
        rows.append((off, k, v, ts, hs))
        off += 1
    got = _decode(encode_batches(_columns(rows)))
    # kio turns a record's timestamp into a datetime through a float division that can
    # lose milliseconds: the batch fields are checked here, kcat's %T (in
    # test_kafka_clients) checks each record's exact milliseconds
    stamps = [r[3] for r in rows]
    assert _bounds(encode_batches(_columns(rows))) == (
        min(stamps[:_first_run(rows)]), max(stamps[:_first_run(rows)]))
    assert [(o, k, v, hs) for o, k, v, _, hs in got] == [
        (o, k, v, [(n.encode(), hv) for n, hv in hs]) for o, k, v, _, hs in rows]


def test_long_run_splits_into_batches_with_exact_offsets() -> None:
    rows = [(7 + i, b"d", b"v%d" % i, 1_700_000_000_000 + i, [("origin", b"o")])
            for i in range(20_000)]
    got = _decode(encode_batches(_columns(rows)))
    assert [g[0] for g in got] == list(range(7, 20_007))
    assert got[-1][2] == b"v19999"


def test_varint_is_kafkas_zigzag() -> None:
    assert zigzag_varint(0) == b"\x00" and zigzag_varint(-1) == b"\x01"
    assert zigzag_varint(1) == b"\x02" and zigzag_varint(64) == b"\x80\x01"


def test_empty_columns_are_empty_bytes_not_null() -> None:
    assert encode_batches(RecordColumns()) == b""
