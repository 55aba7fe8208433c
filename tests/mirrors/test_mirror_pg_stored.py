"""COPY data built from stored batches must be byte for byte what ``copy_data`` builds from
the decoded records, whatever the records hold; stored reads must hold what ``fetch``
holds, and a batch with broken framing must never reach a target unchecked."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_broker.config import TopicConfig
from cloud_broker.mirrors import LocalSource
from cloud_broker.mirrors.pg_copy import copy_data
from cloud_broker.mirrors.pg_stored import stored_chunks
from cloud_broker.mirrors.stored import StoredRecords, check_framing, span
from cloud_broker.storage import PartitionStore
from shared_log import CorruptBatch, Log, LogConfig, Record, StoredRecord, fetch_batches

TOPIC = "telemetry"


def plain(i: int, pad: int = 0) -> Record:
    value = json.dumps({"seq": i, "temp": 20.5}).encode() + b" " * pad
    return Record(b"dev-%d" % (i % 3), value, 1_700_000_000_000 + i,
                  (("origin", b"gw/telemetry/%d" % i),))


ODD = [  # each breaks one condition of the stored path's usual shape
    Record(b"d\xc3\xa9v", b'{"a": 1}', 5, (("origin", b"x"),)),          # non-ASCII key
    Record(b"dev", b'{"a": "\xc3\xa9"}', 5, (("origin", b"x"),)),         # non-ASCII value
    Record(b"dev", b"", 5, (("origin", b"x"),)),                          # empty value
    Record(b"dev", b"12.5", 5, (("origin", b"x"),)),                      # not a container
    Record(b"dev", b'{"a": 1}', 5, ()),                                   # no header
    Record(b"dev", b'{"a": 1}', 5, (("origin", b"x"), ("n", b"y"))),     # two headers
    Record(b"dev", b'{"a": 1}', 5, (("other", b"x"),)),                   # another name
    Record(b"dev", b'{"a": 1}', 5, (("origin", b'q"uote'),)),            # needs escaping
    Record(b"d\x00v", b'{"a": 1}', 5, (("origin", b"x"),)),               # NUL in key
    Record(b"dev", b'[1, 2]', -10**15, (("origin", b"x"),)),              # time clamped
    Record(b"dev", b"\xff\xfe", 5, (("origin", b"\xff"),)),               # bytes
]


def _log(path: Path, batches: list[list[Record]]) -> Log:
    log = Log(path, LogConfig())
    for b in batches:
        log.append(b)
    return log


def _same(log: Log, first: int) -> None:
    res = fetch_batches(log, 0, 10_000, 64 << 20)
    recs = log.fetch(0, 10_000, 64 << 20).records
    for b in res.batches:
        check_framing(b)
    want = copy_data(TOPIC, 3, recs, first, {})
    assert b"".join(stored_chunks(TOPIC, 3, res.batches, first, size=7)) == want
    stored = StoredRecords(res.batches)
    assert len(stored) == len(recs) and list(stored) == recs
    assert span(stored) == (recs[0].offset, recs[-1].offset) == span(recs)


def test_plain_and_padded_batches_match_copy_data(tmp_path: Path) -> None:
    log = _log(tmp_path, [[plain(i + 10 * b, pad=b % 2 * 20) for i in range(10)]
                          for b in range(4)])
    try:
        for first in (0, 3, 10, 17, 39):
            _same(log, first)
    finally:
        log.close()


@pytest.mark.parametrize("odd", range(len(ODD)))
def test_a_batch_of_another_shape_matches_copy_data(tmp_path: Path, odd: int) -> None:
    batch = [plain(i) for i in range(5)]
    batch.insert(2, ODD[odd])
    log = _log(tmp_path, [[plain(i) for i in range(3)], batch, [plain(9)]])
    try:
        for first in (0, 4, 5, 9):
            _same(log, first)
    finally:
        log.close()


record = st.builds(
    Record,
    st.sampled_from([b"dev-1", b"", b"d\xc3\xa9", b"k\x00"]),
    st.one_of(st.sampled_from([b'{"a": 1}', b"[1]  ", b"{}", b"", b"{\x00}", b"nul"]),
              st.binary(max_size=12)),
    st.integers(-(2**62), 2**62),
    st.lists(st.tuples(st.sampled_from(["origin", "o2", "\u00e9"]),
                       st.sampled_from([b"gw/1", b"", b'"', b"\xff", b"\\"])),
             max_size=2).map(tuple))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(record, min_size=1, max_size=6), min_size=1, max_size=4),
       st.integers(0, 30))
def test_any_records_match_copy_data(tmp_path_factory: pytest.TempPathFactory,
                                     batches: list[list[Record]], first: int) -> None:
    log = _log(tmp_path_factory.mktemp("log"), batches)
    try:
        _same(log, min(first, sum(map(len, batches)) - 1))
    finally:
        log.close()


def test_broken_framing_is_refused(tmp_path: Path) -> None:
    log = _log(tmp_path, [[plain(i) for i in range(3)]])
    try:
        (b,) = fetch_batches(log, 0, 100, 1 << 20).batches
        check_framing(b)
        # The first record's key length one too large: fields run past the batch's end.
        at = 30 + 8
        klen = struct.unpack_from(">I", b.data, at)[0]
        bad = b.data[:at] + struct.pack(">I", klen + 1) + b.data[at + 4:]
        with pytest.raises(CorruptBatch):
            check_framing(dataclasses.replace(b, data=bad))
        with pytest.raises(CorruptBatch):
            check_framing(dataclasses.replace(b, data=b.data[:-1]))  # cut short
    finally:
        log.close()


def test_local_source_reads_stored_batches_as_fetch_does(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path)
    store.ensure_topic(TopicConfig(TOPIC, 1))
    part = store.partition(TOPIC, 0)
    for b in range(3):
        part.log.append([plain(i + 10 * b) for i in range(10)])
    part.log.flush()

    async def go() -> None:
        src = LocalSource(store)
        got = await src.read(TOPIC, 0, 5, 12, 1 << 20, 0.01, stored=True)
        want = await src.read(TOPIC, 0, 5, 12, 1 << 20, 0.01)
        assert isinstance(got.records, StoredRecords)
        assert list(got.records) == list(want.records)
        assert [r.offset for r in want.records] == list(range(5, 17))
        assert (got.next_offset, got.start_offset, got.end_offset) == (
            want.next_offset, want.start_offset, want.end_offset)
    try:
        asyncio.run(go())
    finally:
        store.close()


def test_records_of_a_stored_read_are_stored_records(tmp_path: Path) -> None:
    log = _log(tmp_path, [[plain(i) for i in range(4)]])
    try:
        stored = StoredRecords(fetch_batches(log, 1, 2, 1 << 20).batches)
        assert len(stored) == 2
        assert isinstance(stored[0], StoredRecord) and stored[-1].offset == 2
    finally:
        log.close()
