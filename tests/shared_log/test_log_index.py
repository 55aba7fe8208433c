"""The sparse offset index (shared_log._index) and its rebuild from the segment."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest
from shared_log_testing import append_batch, batches_in, index_files, read_all, stored_for

from shared_log import Log, LogConfig
from shared_log._index import ENTRY_SIZE, OffsetIndex
from shared_log._segment import Segment

BASE = 1000


@pytest.fixture
def index(tmp_path: Path) -> OffsetIndex:
    idx = OffsetIndex(tmp_path / "x.index", BASE)
    for off, pos in [(BASE, 0), (BASE + 10, 100), (BASE + 25, 300)]:
        idx.add(off, pos)
    return idx


def test_lookup_of_an_empty_index_starts_at_the_base(tmp_path: Path) -> None:
    idx = OffsetIndex(tmp_path / "x.index", BASE)
    assert idx.lookup(BASE) == (BASE, 0)
    assert idx.lookup(BASE + 10**6) == (BASE, 0)


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (BASE - 5, (BASE, 0)),  # below the segment: scan from its start
        (BASE, (BASE, 0)),
        (BASE + 9, (BASE, 0)),
        (BASE + 10, (BASE + 10, 100)),  # an exact hit
        (BASE + 24, (BASE + 10, 100)),  # greatest entry <= offset
        (BASE + 25, (BASE + 25, 300)),
        (BASE + 10**6, (BASE + 25, 300)),
    ],
)
def test_lookup_is_the_greatest_entry_at_or_below(index: OffsetIndex, offset, expected) -> None:
    assert index.lookup(offset) == expected


def test_add_ignores_entries_that_do_not_move_forward(index: OffsetIndex) -> None:
    index.add(BASE + 25, 400)  # same offset
    index.add(BASE + 30, 300)  # same position
    index.add(BASE + 20, 500)  # offset goes back
    assert len(index) == 3
    index.add(BASE + 30, 310)
    assert index.lookup(BASE + 40) == (BASE + 30, 310)


def test_written_entries_load_back(index: OffsetIndex, tmp_path: Path) -> None:
    index.write_pending()
    index.add(BASE + 40, 500)
    index.write_pending()  # appends only the new entry
    assert index.path.stat().st_size == 4 * ENTRY_SIZE
    loaded = OffsetIndex(index.path, BASE)
    assert loaded.load(file_size=501)
    assert (list(loaded.offsets), list(loaded.positions)) == ([0, 10, 25, 40], [0, 100, 300, 500])


def test_truncate_to_drops_entries_at_or_after_a_position(index: OffsetIndex) -> None:
    index.truncate_to(300)
    assert (list(index.offsets), list(index.positions)) == ([0, 10], [0, 100])
    loaded = OffsetIndex(index.path, BASE)
    assert loaded.load(file_size=301) and list(loaded.positions) == [0, 100]


def _write(path: Path, entries: list[tuple[int, int]], extra: bytes = b"") -> None:
    path.write_bytes(b"".join(struct.pack(">II", o, p) for o, p in entries) + extra)


@pytest.mark.parametrize(
    ("entries", "extra", "file_size"),
    [
        ([(0, 0), (10, 100)], b"\x00", 1000),  # odd size: a torn entry
        ([(0, 0), (10, 100), (5, 200)], b"", 1000),  # offsets unsorted
        ([(0, 0), (10, 300), (20, 200)], b"", 1000),  # positions unsorted
        ([(0, 0), (10, 100), (10, 200)], b"", 1000),  # repeated offset
        ([(0, 0), (10, 100), (20, 1000)], b"", 1000),  # past the end of the segment
        ([(0, 0)], b"", 0),  # an empty segment has no batch at 0
        ([(3, 40), (10, 100)], b"", 1000),  # does not start at byte 0
    ],
    ids=["odd-size", "offsets-unsorted", "positions-unsorted", "repeat", "past-eof",
         "empty-segment", "not-at-zero"],
)
def test_load_rejects_inconsistent_files(tmp_path: Path, entries, extra, file_size) -> None:
    path = tmp_path / "x.index"
    _write(path, entries, extra)
    idx = OffsetIndex(path, BASE)
    idx.add(BASE, 0)
    assert not idx.load(file_size)
    assert len(idx) == 0 and idx.lookup(BASE + 50) == (BASE, 0)


def test_load_of_a_missing_file_is_false(tmp_path: Path) -> None:
    assert not OffsetIndex(tmp_path / "none.index", 0).load(100)


# -- rebuild from the segment ----------------------------------------------------------------


def _filled_log(path: Path, batches: int = 60) -> Log:
    log = Log(path, LogConfig(segment_bytes=4096, index_interval_bytes=200))
    for i in range(batches):
        append_batch(log, 1 + i % 4)
    return log


def _entries(path: Path) -> list[tuple[int, int]]:
    return list(struct.iter_unpack(">II", path.read_bytes()))


def test_a_deleted_index_is_rebuilt_with_the_same_entries(tmp_path: Path) -> None:
    log = _filled_log(tmp_path)
    end = log.end_offset
    log.close()
    before = {p.name: _entries(p) for p in index_files(tmp_path)}
    assert len(before) >= 3 and all(len(e) > 1 for e in before.values())
    for p in index_files(tmp_path):
        p.unlink()
    with Log(tmp_path) as log:
        records, skipped = read_all(log)
        assert records == [stored_for(o) for o in range(end)] and not skipped
        # index_interval_bytes is the default now (4096), so the rebuilt files differ in
        # density; what matters is that every entry points at a batch with its offset.
    for p in index_files(tmp_path):
        seg = tmp_path / p.name.replace(".index", ".log")
        base = int(p.name[:20])
        starts = {b.position: b.base_offset for b in batches_in(seg)}
        assert _entries(p), p
        assert all(starts.get(pos) == base + rel for rel, pos in _entries(p))


def test_segment_rebuilds_a_missing_index_on_first_read(tmp_path: Path) -> None:
    log = _filled_log(tmp_path)
    log.close()
    first = sorted(tmp_path.glob("*.log"))[0]
    idx_path = first.with_suffix(".index")
    before = _entries(idx_path)
    idx_path.unlink()
    seg = Segment(tmp_path, 0, 200)
    try:
        batches = batches_in(first)
        got = [info.base_offset for info, _ in
               seg.read_batches(0, seg.size, batches[-1].next_offset)]
        assert got == [b.base_offset for b in batches]
        assert _entries(idx_path) == before
    finally:
        seg.close()


def test_an_index_that_looks_consistent_but_points_at_the_wrong_batches_is_not_trusted(
    tmp_path: Path,
) -> None:
    log = _filled_log(tmp_path)
    end = log.end_offset
    log.close()
    # Sorted, inside the file, starting at 0, but every entry names the wrong offset or a
    # position inside a batch: the kind of file a bit flip or a stale copy leaves behind.
    for p in index_files(tmp_path):
        entries = _entries(p)
        _write(p, [(0, 0)] + [(rel + 1, pos + 3) for rel, pos in entries[1:]])
    with Log(tmp_path) as log:
        for start in range(0, end, 7):
            records, skipped = read_all(log, start, max_records=5)
            assert records == [stored_for(o) for o in range(start, end)]
            assert not skipped
        assert log.stats.corrupt_records == 0


def test_entries_are_held_as_u32_arrays(tmp_path: Path) -> None:
    """A broker keeps the index of every retained segment in memory: an entry must cost
    8 bytes, not two Python ints in two lists (~72 bytes)."""
    index = OffsetIndex(tmp_path / "0.index", base_offset=1_000)
    n = 20_000
    for i in range(n):
        index.add(1_000 + i * 10, i * 4096)
    assert len(index) == n
    held = sys.getsizeof(index.offsets) + sys.getsizeof(index.positions)
    assert held < n * 8 * 1.2 + 1024
    assert index.lookup(1_000 + 12_345) == (1_000 + 12_340, 1_234 * 4096)
    index.clear()
    assert len(index) == 0 and index.lookup(5_000) == (1_000, 0)


def test_a_sealed_segment_lets_its_index_go_and_a_read_loads_it_again(
        tmp_path: Path) -> None:
    """Only the active segment keeps its index in memory; reading an old one still
    starts from its index (loaded from the file) and gives the same records."""
    log = Log(tmp_path, LogConfig(segment_bytes=4096, index_interval_bytes=200))
    for _ in range(60):
        append_batch(log, 5)
    sealed, active = log._segments[:-1], log._segments[-1]
    assert len(sealed) >= 3 and len(active.index) > 0
    assert all(len(s.index) == 0 for s in sealed)
    assert all(len(_entries(s.index.path)) > 1 for s in sealed)  # the file keeps them
    middle = sealed[1]
    records, _ = read_all(log, start=middle.base_offset + 7)
    assert records == [stored_for(o) for o in range(middle.base_offset + 7, 300)]
    assert len(middle.index) > 0  # loaded again from its file by the read
    assert len(sealed[0].index) == 0  # not read: not loaded
    log.close()
