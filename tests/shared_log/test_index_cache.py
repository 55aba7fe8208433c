"""Sealed segments' indexes leave memory when no reader uses them (shared_log._index_cache):
the memory of a process no longer grows with the data it retains and reads once."""

from __future__ import annotations

from pathlib import Path

import pytest
from shared_log_testing import append_batch, read_all, stored_for

from shared_log import Log, LogConfig
from shared_log import _segment as segment_module
from shared_log._index_cache import LoadedIndexes


class FakeSegment:
    def __init__(self, nbytes: int) -> None:
        self.nbytes, self.dropped = nbytes, 0

    def index_bytes(self) -> int:
        return self.nbytes

    def drop_index(self) -> None:
        self.dropped += 1


def test_an_index_idle_past_the_limit_is_dropped_on_the_next_use_of_another() -> None:
    reg = LoadedIndexes(idle_s=60, max_bytes=10**9)
    a, b = FakeSegment(800), FakeSegment(800)
    reg.touch(a, now=0.0)
    reg.touch(b, now=30.0)
    assert (a.dropped, b.dropped, len(reg), reg.bytes) == (0, 0, 2, 1600)
    reg.touch(b, now=61.0)  # a idle 61 s
    assert (a.dropped, b.dropped, len(reg), reg.bytes) == (1, 0, 1, 800)
    reg.touch(b, now=1000.0)  # the one in use is never dropped, however idle before
    assert b.dropped == 0 and len(reg) == 1


def test_past_the_byte_bound_the_least_recently_used_go_first() -> None:
    reg = LoadedIndexes(idle_s=3600, max_bytes=2000)
    segs = [FakeSegment(800) for _ in range(4)]
    for t, s in enumerate(segs[:2]):
        reg.touch(s, now=float(t))
    reg.touch(segs[0], now=2.0)  # segs[1] is now the least recently used
    reg.touch(segs[2], now=3.0)  # 2400 bytes > 2000: segs[1] goes
    assert [s.dropped for s in segs] == [0, 1, 0, 0] and reg.bytes == 1600
    reg.forget(segs[0])
    assert reg.bytes == 800 and len(reg) == 1


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> LoadedIndexes:
    reg = LoadedIndexes(idle_s=0.0, max_bytes=10**9)  # everything not in use is idle
    monkeypatch.setattr(segment_module, "LOADED", reg)
    return reg


def test_reading_through_a_log_leaves_only_the_segment_in_use_loaded(
        tmp_path: Path, registry: LoadedIndexes) -> None:
    log = Log(tmp_path / "log", LogConfig(segment_bytes=4096, index_interval_bytes=256))
    for _ in range(60):
        append_batch(log, 5)
    log.flush()
    sealed = [s for s in log._segments if s.sealed]
    assert len(sealed) >= 5 and not log._segments[-1].sealed
    records, skipped = read_all(log)
    assert records == [stored_for(i) for i in range(300)] and not skipped
    loaded = [s for s in sealed if s._index_loaded]
    assert len(loaded) <= 1 and len(registry) <= 1  # the last sealed one read, at most
    # read again from the middle: the dropped indexes load again, the records are the same
    middle = sealed[len(sealed) // 2].base_offset + 1
    assert read_all(log, middle)[0] == [stored_for(i) for i in range(middle, 300)]
    log.close()
    assert len(registry) == 0  # closed segments are forgotten


def test_a_reopened_log_does_not_keep_every_sealed_index_it_checked(
        tmp_path: Path, registry: LoadedIndexes) -> None:
    config = LogConfig(segment_bytes=4096, index_interval_bytes=256)
    with Log(tmp_path / "log", config) as log:
        for _ in range(60):
            append_batch(log, 5)
    with Log(tmp_path / "log", config) as log:
        sealed = [s for s in log._segments if s.sealed]
        assert len(sealed) >= 5
        assert sum(s._index_loaded for s in sealed) <= 1
        assert read_all(log)[0] == [stored_for(i) for i in range(300)]
