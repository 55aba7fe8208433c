"""fetch_columns and fetch_batches must find exactly what Log.fetch finds: records, next
offset, skips."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shared_log_testing import append_batch, batches_in, flip_bit, log_files, stored_for

from shared_log import (
    Log,
    LogConfig,
    OffsetOutOfRange,
    decode_records,
    fetch_batches,
    fetch_columns,
)

CONFIG = LogConfig(segment_bytes=2048, index_interval_bytes=256)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("columns")
    with Log(path, CONFIG) as log:
        for i in range(60):
            append_batch(log, 1 + (i * 7) % 5)
    return path


def _same(log: Log, offset: int, max_records: int, max_bytes: int) -> None:
    want = log.fetch(offset, max_records, max_bytes)
    got = fetch_columns(log, offset, max_records, max_bytes)
    assert list(got.columns.rows()) == want.records
    assert got.next_offset == want.next_offset
    assert [(s.first, s.last) for s in got.skipped] == [(s.first, s.last) for s in want.skipped]
    bare = fetch_columns(log, offset, max_records, max_bytes, headers=False)
    assert [(r.offset, r.key, r.value, r.timestamp, r.headers) for r in bare.columns.rows()] == [
        (r.offset, r.key, r.value, r.timestamp, ()) for r in want.records]
    assert bare.next_offset == want.next_offset
    raw = fetch_batches(log, offset, max_records, max_bytes)
    assert [r for b in raw.batches
            for r in decode_records(b.data, b.info)[b.first - b.info.base_offset:
                                                    b.stop - b.info.base_offset]
            ] == want.records
    assert raw.count == len(want.records)
    assert (raw.next_offset, raw.skipped) == (want.next_offset, got.skipped)


@settings(max_examples=150, deadline=None)
@given(offset=st.integers(0, 200), max_records=st.integers(1, 40),
       max_bytes=st.sampled_from([1, 100, 1000, 1 << 20]))
def test_matches_fetch(log_dir: Path, offset: int, max_records: int, max_bytes: int) -> None:
    with Log(log_dir, CONFIG) as log:
        offset = min(offset, log.end_offset)
        _same(log, offset, max_records, max_bytes)


def test_stops_at_end_and_checks_range(log_dir: Path) -> None:
    with Log(log_dir, CONFIG) as log:
        got = fetch_columns(log, 3, 1000, 1 << 20, end=10)
        assert [r.offset for r in got.columns.rows()] == list(range(3, 10))
        assert list(got.columns.rows()) == [stored_for(o) for o in range(3, 10)]
        assert got.next_offset == 10
        assert len(fetch_columns(log, 10, end=10).columns) == 0
        assert fetch_columns(log, 12, end=10).next_offset == 12
        with pytest.raises(OffsetOutOfRange):
            fetch_columns(log, log.end_offset + 1)
        raw = fetch_batches(log, 3, 1000, 1 << 20, end=10)
        assert (raw.batches[0].first, raw.batches[-1].stop, raw.next_offset) == (3, 10, 10)
        assert fetch_batches(log, 10, end=10).batches == []
        with pytest.raises(OffsetOutOfRange):
            fetch_batches(log, log.end_offset + 1)


def test_reports_corrupt_batches_like_fetch(tmp_path: Path) -> None:
    with Log(tmp_path, CONFIG) as log:
        for i in range(40):
            append_batch(log, 1 + i % 4)
    seg = log_files(tmp_path)[0]
    victim = batches_in(seg)[2]
    flip_bit(seg, (victim.position + 40) * 8)
    with Log(tmp_path, CONFIG) as log:
        for offset in range(0, 12):
            _same(log, offset, 1000, 1 << 20)
        got = fetch_columns(log, 0, 1000, 1 << 20)
        assert [(s.first, s.last) for s in got.skipped] == [
            (victim.base_offset, victim.last_offset)]
        assert got.columns.runs[0] == [0, victim.base_offset]
