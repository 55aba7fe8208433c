"""framing.frame_block: uplink columns to shared_log batch bodies, one per partition.

Checked against the obvious construction: a ``Record`` per record with the ``origin``
header, grouped by ``partition_for``, encoded by ``shared_log.encode_batch``.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_broker.ingest import frame_block, partition_for
from shared_log import Record, encode_framed
from shared_log._records import encode_batch
from uplink import RecordBlock, UplinkRecord

headers = st.lists(st.tuples(st.sampled_from(["seq", "content-type", "é"]),
                             st.binary(max_size=8)), max_size=3).map(tuple)


@st.composite
def blocks(draw: st.DrawFn) -> RecordBlock:
    offsets = sorted(draw(st.sets(st.integers(0, 400), max_size=40)))
    return RecordBlock.from_records([
        UplinkRecord(o, b"dev-%d" % draw(st.integers(0, 9)), draw(st.integers(0, 2**40)),
                     draw(st.binary(max_size=20)), draw(headers))
        for o in offsets])


def expected(block: RecordBlock, n: int, floors: list[int]) -> list[list[Record]]:
    groups: list[list[Record]] = [[] for _ in range(n)]
    for r in block:
        p = partition_for(r.key, n)
        if r.offset > floors[p]:
            groups[p].append(Record(r.key, r.value, r.timestamp,
                                    (*r.headers, ("origin", b"e/s/g/%d" % r.offset))))
    return groups


@settings(max_examples=80)
@given(block=blocks(), n=st.integers(1, 8), floor=st.integers(-1, 400))
def test_frames_what_records_would_encode_to(block: RecordBlock, n: int, floor: int) -> None:
    floors = [floor if p % 2 else -1 for p in range(n)]  # some partitions hold a prefix
    cache: dict[bytes, int] = {}
    parts, dedup = frame_block(block, n, floors, cache, b"e/s/g/")
    want = expected(block, n, floors)
    assert dedup == len(block) - sum(map(len, want))
    for part, recs in zip(parts, want, strict=True):
        assert part.count == len(recs)
        if recs:
            body = b"".join(part.pieces)
            assert encode_framed(7, part.count, part.max_timestamp, body) == \
                encode_batch(7, recs)
            assert part.last_offset == int(recs[-1].headers[-1][1].rsplit(b"/", 1)[1])
    assert all(cache[k] == partition_for(k, n) for k in cache)


def test_a_block_without_headers_gets_only_the_origin() -> None:
    block = RecordBlock([5, 9], [b"a", b"b"], [1, 2], [b"x", b"y"])
    parts, dedup = frame_block(block, 1, [-1], {}, b"e/s/g/")
    assert dedup == 0
    assert encode_framed(0, 2, 2, b"".join(parts[0].pieces)) == encode_batch(0, [
        Record(b"a", b"x", 1, (("origin", b"e/s/g/5"),)),
        Record(b"b", b"y", 2, (("origin", b"e/s/g/9"),))])
