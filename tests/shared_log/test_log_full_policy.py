"""The size cap (max_bytes with drop_oldest / reject_new) and a real full file system."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import threading
import weakref
from pathlib import Path

import pytest
from shared_log_testing import append_batch, batch_for, batches_in, log_files, read_all, stored_for

from shared_log import DiskFull, FullPolicy, Log, LogConfig, LogFull
from shared_log._records import encode_batch
from shared_log._segment import Segment


def _disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in log_files(directory))


@pytest.mark.parametrize("segment_bytes", [1024, 64 * 1024], ids=["many-segments", "one-segment"])
def test_drop_oldest_keeps_the_cap_and_counts_exactly(tmp_path: Path, segment_bytes: int) -> None:
    cap = 5000
    config = LogConfig(segment_bytes=segment_bytes, max_bytes=cap,
                       full_policy=FullPolicy.DROP_OLDEST)
    sizes: dict[int, int] = {}  # base offset -> batch bytes
    counts: dict[int, int] = {}
    with Log(tmp_path, config) as log:
        for i in range(300):
            n = 1 + i % 7
            sizes[log.end_offset] = len(encode_batch(log.end_offset, batch_for(log.end_offset, n)))
            counts[log.end_offset] = n
            append_batch(log, n)
            assert log.size_bytes <= cap
            assert _disk_bytes(tmp_path) == log.size_bytes
            start = log.start_offset
            assert log.stats.dropped_records == start
            assert log.stats.dropped_bytes == sum(s for b, s in sizes.items() if b < start)
        assert log.start_offset > 0 and log.stats.rejected_records == 0
        assert read_all(log)[0] == [stored_for(o) for o in range(log.start_offset, log.end_offset)]


def test_reject_new_touches_nothing_and_recovers_after_delete_before(tmp_path: Path) -> None:
    cap = 5000
    config = LogConfig(segment_bytes=1024, max_bytes=cap, full_policy=FullPolicy.REJECT_NEW)
    with Log(tmp_path, config) as log:
        with pytest.raises(LogFull):
            while True:
                append_batch(log, 3)
        assert log.stats.rejected_records == 3 and log.stats.rejected_batches == 1
        end = log.end_offset
        before = {p.name: p.read_bytes() for p in log_files(tmp_path)}
        for n in range(3, 8):  # the batch that did not fit, and bigger ones
            with pytest.raises(LogFull, match="full"):
                log.append(batch_for(end, n))
        assert log.stats.rejected_records == 3 + 25 and log.stats.rejected_batches == 6
        assert {p.name: p.read_bytes() for p in log_files(tmp_path)} == before
        assert (log.start_offset, log.end_offset) == (0, end)
        assert log.size_bytes <= cap
        # The consumer acknowledged the first segment: its space comes back.
        freed_to = log.segments_info()[1][0]
        assert log.delete_before(freed_to) == freed_to
        assert append_batch(log, 3) == (end, end + 2)
        assert read_all(log)[0] == [stored_for(o) for o in range(freed_to, end + 3)]


@pytest.mark.parametrize("policy", list(FullPolicy))
def test_a_batch_larger_than_the_cap_is_rejected(tmp_path: Path, policy: FullPolicy) -> None:
    with Log(tmp_path, LogConfig(max_bytes=2000, full_policy=policy)) as log:
        append_batch(log, 2)
        before = log_files(tmp_path)[0].read_bytes()
        with pytest.raises(LogFull, match="larger than the log cap"):
            log.append(batch_for(2, 100))
        assert log.stats.rejected_records == 100 and log.stats.dropped_records == 0
        assert log_files(tmp_path)[0].read_bytes() == before
        assert log.end_offset == 2


# -- a real full file system ----------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path):
    """A 1 MiB tmpfs; skipped where mounting is not permitted."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount binary: cannot create a small file system for ENOSPC")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a 1 MiB tmpfs for ENOSPC: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path, leave: int) -> Path:
    """Fill the file system leaving about ``leave`` bytes free."""
    filler = mnt / "filler"
    st = os.statvfs(mnt)
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


@pytest.mark.parametrize("leave", [40_000, 90_000, 150_000])
@pytest.mark.parametrize("segment_bytes", [4096, 256 * 1024])
def test_enospc_raises_disk_full_and_the_log_carries_on(
    tiny_fs: Path, leave: int, segment_bytes: int
) -> None:
    logdir = tiny_fs / "log"
    config = LogConfig(segment_bytes=segment_bytes, index_interval_bytes=512)
    log = Log(logdir, config)
    filler = _fill(tiny_fs, leave)
    with pytest.raises(DiskFull):
        for i in range(100_000):
            append_batch(log, 1 + i % 20)
    end = log.end_offset
    assert end > 0 and log.stats.rejected_batches == 1
    for p in log_files(logdir):
        batches_in(p)  # every file ends on a batch boundary: the partial write was undone
    assert not list(logdir.glob("*.tmp"))  # nor is a half-written checkpoint left behind
    assert read_all(log)[0] == [stored_for(o) for o in range(end)]
    filler.unlink()
    append_batch(log, 5)
    assert read_all(log)[0] == [stored_for(o) for o in range(end + 5)]
    log.close()
    with Log(logdir, config) as log:
        assert log.stats.truncated_bytes_on_open == 0
        assert read_all(log)[0] == [stored_for(o) for o in range(end + 5)]
        append_batch(log, 1)


@pytest.mark.parametrize("segment_bytes", [1024, 256 * 1024], ids=["many-segments",
                                                                  "one-segment"])
def test_enospc_makes_drop_oldest_drop_its_own_oldest(tiny_fs: Path, segment_bytes: int) -> None:
    """Another log fills the disk: a drop_oldest log beside it keeps accepting appends by
    deleting its own oldest segments (reporting each range to ``on_drop``), where a
    reject_new log would refuse them with DiskFull."""
    hog = Log(tiny_fs / "hog", LogConfig(segment_bytes=64 * 1024))
    victim = Log(tiny_fs / "victim", LogConfig(segment_bytes=segment_bytes,
                                                full_policy=FullPolicy.DROP_OLDEST))
    drops: list[tuple[int, int]] = []
    victim.on_drop = lambda base, nxt: drops.append((base, nxt))
    try:
        for _ in range(60):
            append_batch(victim, 5)
        victim.flush()
        with pytest.raises(DiskFull):
            while True:
                hog.append(batch_for(hog.end_offset, 50))
        for _ in range(200):  # many times what the disk has left
            append_batch(victim, 5)
        end = victim.end_offset
        assert end == 1300 and victim.start_offset > 0
        assert victim.stats.rejected_records == 0
        assert drops and drops[0][0] == 0 and drops[-1][1] == victim.start_offset
        assert all(a[1] == b[0] for a, b in itertools.pairwise(drops))
        assert victim.stats.dropped_records == victim.start_offset
        assert read_all(victim)[0] == [stored_for(o) for o in range(victim.start_offset, end)]
    finally:
        hog.close()
        victim.close()
    with Log(tiny_fs / "victim", LogConfig(segment_bytes=segment_bytes)) as reopened:
        assert reopened.stats.truncated_bytes_on_open == 0
        assert reopened.end_offset == 1300


def test_a_flush_holding_the_dropped_segment_delays_the_append_instead_of_failing_it(
        tiny_fs: Path) -> None:
    """The group commit fsyncs a segment outside the log's lock. When a disk-full append
    deletes that very segment meanwhile, its file stays open (its space not back) until
    the fsync ends: the append waits for it instead of raising DiskFull with nothing of
    its own left to drop."""
    hog = Log(tiny_fs / "hog", LogConfig(segment_bytes=64 * 1024))
    victim = Log(tiny_fs / "victim", LogConfig(segment_bytes=64 * 1024,
                                                full_policy=FullPolicy.DROP_OLDEST))
    drops: list[tuple[int, int]] = []
    victim.on_drop = lambda base, nxt: drops.append((base, nxt))
    entered, release = threading.Event(), threading.Event()
    try:
        for _ in range(60):
            append_batch(victim, 5)
        seg = victim._segments[-1]
        held = weakref.ref(seg)  # the test must not keep the segment's file open itself

        def slow_flush() -> None:
            if threading.current_thread() is not threading.main_thread():
                entered.set()  # the group commit's thread, or the one started below
                assert release.wait(10)
            Segment.flush(held())  # type: ignore[arg-type]

        seg.flush = slow_flush  # type: ignore[method-assign]
        del seg
        append_batch(victim, 5)  # something to flush
        flusher = threading.Thread(target=victim.flush)
        flusher.start()
        assert entered.wait(10)
        with pytest.raises(DiskFull):
            while True:
                hog.append(batch_for(hog.end_offset, 50))
        timer = threading.Timer(0.3, release.set)
        timer.start()
        while not drops:  # until the held segment is dropped, and some more
            append_batch(victim, 5)
        for _ in range(20):
            append_batch(victim, 5)
        assert release.is_set()  # the append went through only once the flush let go
        assert held() is None  # and the segment's file is closed
        flusher.join(10)
        assert not flusher.is_alive()
        assert drops[0][0] == 0 and victim.stats.rejected_records == 0
        end = victim.end_offset
        assert read_all(victim)[0] == [stored_for(o) for o in range(victim.start_offset, end)]
    finally:
        release.set()
        hog.close()
        victim.close()
