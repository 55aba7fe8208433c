"""Damage on disk: torn tails, garbage, flipped bits, bad indexes, a bad recovery point.

Every scenario starts from a pristine log whose contents are known (values derive from
offsets), damages real files, reopens and checks three things: opening never fails, at
most the damaged batches are lost (and every loss in a sealed segment is reported with
its exact offset range), and reading makes progress past every hole.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from shared_log_testing import (
    append_batch,
    batches_in,
    flip_bit,
    index_files,
    log_files,
    offsets_of,
    read_all,
    stored_for,
)

from shared_log import Log, LogConfig
from shared_log._log import RECOVERY_POINT
from shared_log._records import BatchInfo

CONFIG = LogConfig(segment_bytes=2048, index_interval_bytes=256)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pristine")
    with Log(path, CONFIG) as log:
        for i in range(90):
            append_batch(log, 1 + (i * 7) % 5)
        assert log.segment_count >= 5
    return path


@dataclass
class Damage:
    """What a scenario did, in offsets: ``lost`` must be reported, ``torn_from`` just ends."""

    lost: set[int] = field(default_factory=set)
    torn_from: int | None = None
    garbage: int = 0


def _segments(d: Path) -> list[tuple[Path, list[BatchInfo]]]:
    return [(p, batches_in(p)) for p in log_files(d)]


def _end(segments: list[tuple[Path, list[BatchInfo]]]) -> int:
    return segments[-1][1][-1].next_offset


def _copy(pristine: Path, tmp_path: Path) -> Path:
    work = tmp_path / "log"
    shutil.copytree(pristine, work)
    return work


def _flip_in_sealed(work: Path, rng: random.Random, damage: Damage, segs) -> None:
    path, batches = segs[rng.randrange(len(segs) - 1)]
    b = rng.choice(batches)
    flip_bit(path, (b.position + rng.randrange(b.size)) * 8 + rng.randrange(8))
    damage.lost.update(range(b.base_offset, b.next_offset))


def _tear_active(work: Path, rng: random.Random, damage: Damage, segs) -> None:
    path, batches = segs[-1]
    cut = rng.randrange(batches[-1].position + batches[-1].size)
    os.truncate(path, cut)  # this also cuts off any garbage appended before
    torn = next(b for b in batches if b.position + b.size > cut)
    damage.torn_from = torn.base_offset
    damage.garbage = 0


def _garbage_after_active(work: Path, rng: random.Random, damage: Damage, segs) -> None:
    junk = rng.choice([
        os.urandom(rng.randrange(1, 200)),
        b"\x00" * rng.randrange(1, 64),
        # Something that parses as a header of a huge batch.
        b"\x00\x10\x00\x00" + os.urandom(4) + b"\x01\x00" + os.urandom(20),
    ])
    with open(segs[-1][0], "ab") as f:
        f.write(junk)
    damage.garbage = len(junk)


def _hurt_index(work: Path, rng: random.Random, damage: Damage, segs) -> None:
    p = rng.choice(index_files(work))
    data = bytearray(p.read_bytes())
    how = rng.randrange(4)
    if how == 0:
        p.unlink()
    elif how == 1 or not data:
        p.write_bytes(os.urandom(rng.randrange(1, 80)))
    elif how == 2:
        p.write_bytes(data[: rng.randrange(len(data))])
    else:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        p.write_bytes(bytes(data))


def _hurt_recovery_point(work: Path, rng: random.Random, damage: Damage, segs) -> None:
    rp = work / RECOVERY_POINT
    choice = rng.randrange(6)
    if choice == 0:
        rp.unlink(missing_ok=True)
    else:
        rp.write_bytes([b"", b"{not json", b"[1, 2]", b'{"offset": "7"}', b'{"offset": -3}',
                        b'{"offset": 99999999999}'][choice])


def _check(work: Path, written_end: int, damage: Damage) -> Log:
    log = Log(work, CONFIG)  # must not raise
    expected_end = written_end if damage.torn_from is None else damage.torn_from
    assert log.end_offset == expected_end
    records, skipped = read_all(log)
    kept = [o for o in range(expected_end) if o not in damage.lost]
    assert records == [stored_for(o) for o in kept]
    reported = {o for r in skipped for o in range(r.first, r.last + 1)}
    assert reported == {o for o in damage.lost if o < expected_end}
    assert sorted(log.stats.corrupt_ranges, key=lambda r: r.first) == sorted(
        skipped, key=lambda r: r.first)
    assert log.stats.corrupt_records == len(reported)
    # Reading again reports the same ranges but does not count them twice.
    assert read_all(log)[1] == skipped and log.stats.corrupt_records == len(reported)
    for r in skipped:
        for start in {r.first, (r.first + r.last) // 2, r.last}:
            res = log.fetch(start, max_records=3)
            assert res.next_offset > r.last
            assert all(rec.offset > r.last for rec in res.records)
            assert r in res.skipped
    # The log keeps working after whatever happened.
    assert append_batch(log, 2) == (expected_end, expected_end + 1)
    assert log.read(expected_end) == [stored_for(expected_end), stored_for(expected_end + 1)]
    return log


ACTIONS = [_flip_in_sealed, _tear_active, _garbage_after_active, _hurt_index,
           _hurt_recovery_point]


@pytest.mark.parametrize("seed", range(40))
def test_random_damage_corpus(pristine: Path, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    work = _copy(pristine, tmp_path)
    segs = _segments(work)
    damage = Damage()
    for action in rng.sample(ACTIONS, rng.randrange(1, 4)):
        if action is _garbage_after_active and damage.torn_from is not None:
            continue  # garbage after a torn batch is the same as a longer tear
        action(work, rng, damage, segs)
    if rng.random() < 0.5:
        _flip_in_sealed(work, rng, damage, segs)
    _check(work, _end(segs), damage).close()


@pytest.mark.parametrize("cut_seed", range(15))
def test_torn_active_segment_loses_only_the_torn_batches(
    pristine: Path, tmp_path: Path, cut_seed: int
) -> None:
    work = _copy(pristine, tmp_path)
    segs = _segments(work)
    damage = Damage()
    _tear_active(work, random.Random(cut_seed), damage, segs)
    log = _check(work, _end(segs), damage)
    size = segs[-1][0].stat().st_size
    assert log.stats.truncated_bytes_on_open > 0 or size == 0 or damage.torn_from == _end(segs)
    log.close()


def test_garbage_after_the_active_segment_is_cut_and_nothing_lost(
    pristine: Path, tmp_path: Path
) -> None:
    work = _copy(pristine, tmp_path)
    segs = _segments(work)
    damage = Damage()
    _garbage_after_active(work, random.Random(1), damage, segs)
    log = _check(work, _end(segs), damage)
    assert log.stats.truncated_bytes_on_open == damage.garbage
    log.close()


@pytest.mark.parametrize("which", ["first", "middle", "last"])
@pytest.mark.parametrize("rp", ["kept", "deleted"])
def test_a_flipped_bit_in_a_sealed_segment_loses_exactly_its_batch(
    pristine: Path, tmp_path: Path, which: str, rp: str
) -> None:
    work = _copy(pristine, tmp_path)
    segs = _segments(work)
    path, batches = segs[1]
    b = {"first": batches[0], "middle": batches[len(batches) // 2], "last": batches[-1]}[which]
    flip_bit(path, (b.position + b.size // 2) * 8)
    if rp == "deleted":  # every segment is checked on open now
        (work / RECOVERY_POINT).unlink()
    damage = Damage(lost=set(range(b.base_offset, b.next_offset)))
    log = _check(work, _end(segs), damage)
    assert [(r.first, r.last, r.position, r.size) for r in log.stats.corrupt_ranges] == [
        (b.base_offset, b.last_offset, b.position, b.size)
    ]
    log.close()
    assert path.stat().st_size == batches[-1].position + batches[-1].size  # never truncated


def test_missing_or_corrupt_index_files_lose_nothing(pristine: Path, tmp_path: Path) -> None:
    work = _copy(pristine, tmp_path)
    segs = _segments(work)
    idx = index_files(work)
    idx[0].unlink()
    idx[1].write_bytes(os.urandom(37))
    idx[2].write_bytes(idx[2].read_bytes()[:-3])
    idx[3].write_bytes(idx[3].read_bytes()[::-1])
    _check(work, _end(segs), Damage()).close()


@pytest.mark.parametrize(
    "content", [b"", b"{", b"[1, 2]", b"null", b'{"offset": "9"}', b'{"offset": -1}',
                b'{"offset": 1e300}', b'{"offset": 99999999999}', os.urandom(64)],
)
def test_a_corrupt_recovery_point_never_stops_the_open(
    pristine: Path, tmp_path: Path, content: bytes
) -> None:
    work = _copy(pristine, tmp_path)
    (work / RECOVERY_POINT).write_bytes(content)
    segs = _segments(work)
    _check(work, _end(segs), Damage()).close()
    # A clean close writes a good one again.
    assert json.loads((work / RECOVERY_POINT).read_bytes())["offset"] == _end(segs) + 2


def test_fetch_inside_a_corrupt_range_at_the_end_of_a_sealed_segment(
    pristine: Path, tmp_path: Path
) -> None:
    work = _copy(pristine, tmp_path)
    segs = _segments(work)
    path, batches = segs[2]
    os.truncate(path, batches[-2].position + 3)  # a sealed segment lost its last two batches
    lost = set(range(batches[-2].base_offset, batches[-1].next_offset))
    log = _check(work, _end(segs), Damage(lost=lost))
    res = log.fetch(max(lost), max_records=1)
    assert offsets_of(res.records) == [max(lost) + 1]
    log.close()


def test_a_batch_with_a_good_crc_but_bad_record_framing_is_skipped(
    pristine: Path, tmp_path: Path
) -> None:
    work = _copy(pristine, tmp_path)
    segs = _segments(work)
    path, batches = segs[1]
    b = next(x for x in batches if x.count >= 2)
    data = bytearray(path.read_bytes())
    rest = bytearray(data[b.position + 8 : b.position + b.size])
    # The first record's key length (after the 22-byte header rest and its i64 timestamp)
    # grows by one: same size, same count, a valid CRC, impossible framing.
    klen = struct.unpack_from(">I", rest, 22 + 8)[0]
    struct.pack_into(">I", rest, 22 + 8, klen + 1)
    struct.pack_into(">I", data, b.position + 4, zlib.crc32(rest))
    data[b.position + 8 : b.position + b.size] = rest
    path.write_bytes(bytes(data))
    lost = set(range(b.base_offset, b.next_offset))
    log = _check(work, _end(segs), Damage(lost=lost))
    assert [(r.first, r.last, r.position) for r in log.stats.corrupt_ranges] == [
        (b.base_offset, b.last_offset, b.position)
    ]
    log.close()
