"""One segment (shared_log._segment): append, read, recover, resync over damage."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from shared_log_testing import batch_for, batches_in, flip_bit

from shared_log import CorruptRange
from shared_log._records import decode_records, encode_batch
from shared_log._segment import Segment

BASE = 500


def _fill(directory: Path, sizes: list[int], interval: int = 150) -> Segment:
    seg = Segment(directory, BASE, interval)
    for n in sizes:
        seg.append(encode_batch(seg.next_offset, batch_for(seg.next_offset, n)), seg.next_offset, n)
    return seg


SIZES = [1, 3, 2, 5, 1, 4, 2, 2, 3, 1, 6, 2]


@pytest.fixture
def seg(tmp_path: Path):
    s = _fill(tmp_path, SIZES)
    yield s
    s.close()


def _read(seg: Segment, offset: int, end: int | None = None) -> list:
    """read_batches as (base, last) pairs and CorruptRanges."""
    end = seg.next_offset if end is None else end
    out = []
    for item in seg.read_batches(offset, seg.size, end):
        if isinstance(item, CorruptRange):
            out.append(item)
        else:
            info, view = item
            recs = decode_records(view, info)
            assert [r.offset for r in recs] == list(range(info.base_offset, info.next_offset))
            out.append((info.base_offset, info.last_offset))
    return out


def _spans() -> list[tuple[int, int]]:
    spans, o = [], BASE
    for n in SIZES:
        spans.append((o, o + n - 1))
        o += n
    return spans


def test_append_returns_positions_and_tracks_size(tmp_path: Path) -> None:
    seg = Segment(tmp_path, BASE, 150)
    data = [encode_batch(BASE + i, batch_for(BASE + i, 1)) for i in range(3)]
    positions = [seg.append(d, BASE + i, 1) for i, d in enumerate(data)]
    assert positions == [0, len(data[0]), len(data[0]) + len(data[1])]
    assert seg.size == sum(map(len, data)) == seg.log_path.stat().st_size
    assert seg.next_offset == BASE + 3
    assert seg.log_path.name == "00000000000000000500.log"
    seg.close()


@pytest.mark.parametrize("offset", range(BASE, BASE + sum(SIZES) + 1))
def test_read_batches_starts_at_the_batch_holding_the_offset(seg: Segment, offset: int) -> None:
    assert _read(seg, offset) == [s for s in _spans() if s[1] >= offset]


def test_read_batches_stops_at_the_limit(seg: Segment) -> None:
    cut = batches_in(seg.log_path)[4]
    got = [info.base_offset for info, _ in seg.read_batches(BASE, cut.position, cut.base_offset)]
    assert got == [s[0] for s in _spans()[:4]]


# -- recover -------------------------------------------------------------------------------


def test_recover_truncates_a_torn_tail_at_every_byte_position(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _fill(src, SIZES[:6], interval=60).close()
    name = f"{BASE:020d}.log"
    batches = batches_in(src / name)
    total = batches[-1].position + batches[-1].size
    work = tmp_path / "work"
    for cut in range(total + 1):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(src, work)
        os.truncate(work / name, cut)
        whole = [b for b in batches if b.position + b.size <= cut]
        good_end = whole[-1].position + whole[-1].size if whole else 0
        s = Segment(work, BASE, 60)
        assert s.recover() == cut - good_end, cut
        assert (s.size, (work / name).stat().st_size) == (good_end, good_end)
        assert s.next_offset == (whole[-1].next_offset if whole else BASE)
        assert all(p < max(good_end, 1) for p in s.index.positions)
        # The segment is appendable right after the cut.
        s.append(encode_batch(s.next_offset, batch_for(s.next_offset, 1)), s.next_offset, 1)
        assert [i.base_offset for i in batches_in(work / name)] == [
            b.base_offset for b in whole
        ] + [s.next_offset - 1]
        s.close()


def test_recover_truncates_garbage_after_the_last_batch(seg: Segment) -> None:
    good = seg.size
    seg.close()
    with open(seg.log_path, "ab") as f:
        f.write(b"\x00\x00\x00\x40" + os.urandom(100))
    s = Segment(seg.directory, BASE, 150)
    assert s.recover() == 104
    assert s.size == good and s.next_offset == BASE + sum(SIZES)
    s.close()


def test_recover_without_truncate_leaves_the_file_alone(seg: Segment) -> None:
    good = seg.size
    last = batches_in(seg.log_path)[-1]
    seg.close()
    os.truncate(seg.log_path, good - 5)
    s = Segment(seg.directory, BASE, 150, read_only=True)
    assert s.recover(truncate=False) == last.size - 5
    assert s.size == last.position and seg.log_path.stat().st_size == good - 5
    assert s.next_offset == last.base_offset
    s.close()


def test_recover_uses_a_verified_index_and_scans_only_after_it(seg: Segment) -> None:
    seg.close()  # writes the index
    s = Segment(seg.directory, BASE, 150)
    scanned: list[int] = []
    real_scan = s.scan

    def counting_scan(position: int, limit: int | None = None):
        scanned.append(position)
        return real_scan(position, limit)

    s.scan = counting_scan  # type: ignore[method-assign]
    assert s.recover() == 0
    assert scanned and scanned[0] == max(s.index.positions) > 0
    assert s.next_offset == BASE + sum(SIZES)
    s.close()


# -- corruption in the middle: resync -----------------------------------------------------


@pytest.mark.parametrize("interval", [1, 150, 10**6], ids=["dense", "sparse", "no-index"])
@pytest.mark.parametrize("where", ["payload", "crc", "length", "magic", "base"])
@pytest.mark.parametrize("victim", [0, 5, len(SIZES) - 1])
def test_read_skips_a_corrupt_batch_and_reports_its_exact_range(
    tmp_path: Path, interval: int, where: str, victim: int
) -> None:
    s = _fill(tmp_path, SIZES, interval)
    s.close()
    b = batches_in(s.log_path)[victim]
    bit = {"payload": b.size - 1, "crc": 5, "length": 3, "magic": 8, "base": 17}[where]
    flip_bit(s.log_path, (b.position + bit) * 8 + 7)
    s = Segment(tmp_path, BASE, interval)
    s.next_offset = BASE + sum(SIZES)  # what the Log tells a sealed segment
    spans = _spans()
    expected: list = list(spans)
    expected[victim] = CorruptRange(BASE, b.position, b.size, b.base_offset, b.last_offset)
    assert _read(s, BASE) == expected
    # Reading from inside the damaged batch reports it and continues after it.
    assert _read(s, b.base_offset + b.count - 1) == expected[victim:]
    # Reading from after it neither reports it nor goes back.
    if victim + 1 < len(spans):
        assert _read(s, spans[victim + 1][0]) == expected[victim + 1 :]
    s.close()


def test_two_adjacent_corrupt_batches_are_one_range(tmp_path: Path) -> None:
    s = _fill(tmp_path, SIZES, 10**6)
    s.close()
    b = batches_in(s.log_path)
    flip_bit(s.log_path, (b[3].position + 40) * 8)
    flip_bit(s.log_path, (b[4].position + 40) * 8)
    s = Segment(tmp_path, BASE, 10**6)
    s.next_offset = BASE + sum(SIZES)
    got = [x for x in _read(s, BASE) if isinstance(x, CorruptRange)]
    assert got == [
        CorruptRange(BASE, b[3].position, b[3].size + b[4].size, b[3].base_offset, b[4].last_offset)
    ]
    s.close()


def test_a_missing_tail_of_a_sealed_segment_is_reported(tmp_path: Path) -> None:
    s = _fill(tmp_path, SIZES, 150)
    s.close()
    b = batches_in(s.log_path)
    os.truncate(s.log_path, b[-2].position)  # the last two batches are gone
    s = Segment(tmp_path, BASE, 150)
    end = BASE + sum(SIZES)
    got = _read(s, BASE, end)
    assert got[-1] == CorruptRange(BASE, b[-2].position, 0, b[-2].base_offset, end - 1)
    assert got[:-1] == _spans()[:-2]
    s.close()
