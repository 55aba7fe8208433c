"""RecordBlock: columns that behave as a read-only sequence of UplinkRecord."""

from __future__ import annotations

import pytest

from uplink import RecordBlock, UplinkRecord

ROWS = (
    UplinkRecord(10, b"a", 1, b"x", (("seq", b"1"), ("ct", b"j"))),
    UplinkRecord(11, b"b", 2, b"y"),
    UplinkRecord(13, b"c", 3, b"z", (("seq", b"3"),)),
)


def test_from_records_round_trips_rows() -> None:
    block = RecordBlock.from_records(ROWS)
    assert block.header_names == ["seq", "ct"] and block.header_index == [0, 1, 0]
    assert block.header_counts == [2, 0, 1]
    assert tuple(block) == ROWS and block == ROWS and len(block) == 3
    assert block[-1] == ROWS[-1] and block[0] == ROWS[0]


@pytest.mark.parametrize(("start", "stop"), [(0, 3), (1, 3), (2, 3), (0, 1), (3, 3), (1, 2)])
def test_slices_keep_their_headers(start: int, stop: int) -> None:
    block = RecordBlock.from_records(ROWS)
    assert block[start:stop] == ROWS[start:stop]
    assert type(block[start:stop]) is RecordBlock


def test_without_headers_the_header_columns_are_none() -> None:
    rows = tuple(UplinkRecord(o, b"k", o, b"v") for o in range(3))
    block = RecordBlock.from_records(rows)
    assert block.header_counts is None and block == rows and block[1:] == rows[1:]


def test_indexing_out_of_range_and_steps() -> None:
    block = RecordBlock.from_records(ROWS)
    with pytest.raises(IndexError):
        block[3]
    with pytest.raises(ValueError):
        block[::2]
    assert block != ROWS[:2]
