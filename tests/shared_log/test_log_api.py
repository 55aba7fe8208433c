"""The Log (shared_log._log): commit policies, reads, deletion, lifecycle, configuration."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from shared_log_testing import (
    append_batch,
    batch_for,
    index_files,
    log_files,
    offsets_of,
    read_all,
    stored_for,
)

from shared_log import (
    CommitMode,
    CommitPolicy,
    FullPolicy,
    Log,
    LogClosed,
    LogConfig,
    LogFull,
    OffsetOutOfRange,
    append_durable,
    open_log,
)
from shared_log._records import encode_batch

GROUP_SLOW = CommitPolicy(CommitMode.GROUP, interval_ms=600_000, max_records=1_000_000)


def cfg(mode: CommitMode = CommitMode.GROUP, **kwargs) -> LogConfig:
    commit = kwargs.pop("commit", CommitPolicy(mode, interval_ms=2))
    return LogConfig(commit=commit, **kwargs)


# -- commit policies -----------------------------------------------------------------------


def test_group_commit_shares_fsyncs_between_many_appends(tmp_path: Path) -> None:
    # A 50 ms gathering window: the bound below holds unless 500 appends take 2.5 s.
    with Log(tmp_path, cfg(commit=CommitPolicy(CommitMode.GROUP, interval_ms=50))) as log:

        async def main() -> list[tuple[int, int]]:
            return await asyncio.gather(
                *(append_durable(log, batch_for(0, 1)) for _ in range(500))
            )

        # All 500 appends are issued before the first fsync can finish, so they share.
        results = asyncio.run(main())
        assert sorted(r[0] for r in results) == list(range(500))
        assert log.durable_offset == log.end_offset == 500
        assert log.stats.appended_batches == 500
        assert 1 <= log.stats.fsyncs <= 50


def test_group_commit_from_threads_wait_durable(tmp_path: Path) -> None:
    with Log(tmp_path, cfg(commit=CommitPolicy(CommitMode.GROUP, interval_ms=10))) as log:
        lock = threading.Lock()
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                for _ in range(50):
                    with lock:  # one writer at a time, as the Log requires
                        _, last = log.append(batch_for(0, 2))
                    assert log.wait_durable(last, timeout=30)
                    assert log.durable_offset > last
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert log.end_offset == 800
        assert log.stats.fsyncs < log.stats.appended_batches


def fsync_once(log: Log) -> None:
    """Append one record and wait for its fsync: with GROUP_SLOW the next appends then
    wait the whole interval (10 minutes) for theirs, i.e. until a test flushes."""
    _, last = append_batch(log, 1)
    assert log.wait_durable(last, timeout=30)


def test_first_append_after_a_quiet_spell_is_fsynced_at_once(tmp_path: Path) -> None:
    # interval_ms is the least spacing between fsyncs, not a delay before the first one.
    with Log(tmp_path, cfg(commit=GROUP_SLOW)) as log:
        _, last = append_batch(log, 3)
        assert log.wait_durable(last, timeout=30)
        assert log.stats.fsyncs == 1


def test_flush_makes_everything_appended_durable(tmp_path: Path) -> None:
    with Log(tmp_path, cfg(commit=GROUP_SLOW)) as log:
        fsync_once(log)
        _, last = append_batch(log, 3)
        # The last fsync started just now and the interval is 10 minutes: this one waits.
        assert log.durable_offset == 1
        assert not log.wait_durable(last, timeout=0.05)
        log.flush()
        assert log.durable_offset == log.end_offset == 4
        assert log.wait_durable(last, timeout=0)
        fsyncs = log.stats.fsyncs
        log.flush()  # nothing new: no fsync
        assert log.stats.fsyncs == fsyncs


def test_hurry_commit_starts_the_fsync_without_waiting_out_the_spacing(tmp_path: Path) -> None:
    with Log(tmp_path, cfg(commit=GROUP_SLOW)) as log:
        fsync_once(log)
        _, last = append_batch(log, 3)
        # The spacing is 10 minutes: without the hurry this append is not durable soon.
        assert not log.wait_durable(last, timeout=0.05)
        log.hurry_commit()
        assert log.wait_durable(last, timeout=30)
        assert log.durable_offset == log.end_offset == 4
        assert log.stats.fsyncs == 2
        assert log.hurried_commits == 1


def test_hurry_commit_with_nothing_pending_costs_no_fsync(tmp_path: Path) -> None:
    with Log(tmp_path, cfg(commit=GROUP_SLOW)) as log:
        fsync_once(log)
        log.hurry_commit()  # nothing appended since the fsync: no effect, no stale flag
        _, last = append_batch(log, 2)
        assert not log.wait_durable(last, timeout=0.1)  # the spacing holds for this one
        assert log.stats.fsyncs == 1 and log.hurried_commits == 0
        log.hurry_commit()
        assert log.wait_durable(last, timeout=30)
        assert log.stats.fsyncs == 2


def test_group_commit_flushes_at_max_records(tmp_path: Path) -> None:
    policy = CommitPolicy(CommitMode.GROUP, interval_ms=600_000, max_records=10)
    with Log(tmp_path, cfg(commit=policy)) as log:
        fsync_once(log)
        append_batch(log, 4)
        _, last = append_batch(log, 6)
        assert log.wait_durable(last, timeout=30)


def test_wait_durable_async_resolves_and_many_waiters_share(tmp_path: Path) -> None:
    with Log(tmp_path, cfg(commit=GROUP_SLOW)) as log:
        fsync_once(log)

        async def main() -> None:
            lasts = [append_batch(log, 1)[1] for _ in range(20)]
            waiters = [asyncio.ensure_future(log.wait_durable_async(o)) for o in lasts]
            await asyncio.sleep(0)
            assert not any(w.done() for w in waiters)
            await asyncio.to_thread(log.flush)
            await asyncio.wait_for(asyncio.gather(*waiters), 30)
            await log.wait_durable_async(0)  # already durable: returns at once

        asyncio.run(main())
        assert log.stats.fsyncs == 2  # fsync_once's, then one for all 20 waiters


def test_a_cancelled_async_waiter_on_a_closed_loop_does_not_break_the_log(tmp_path: Path) -> None:
    with Log(tmp_path, cfg(commit=GROUP_SLOW)) as log:
        fsync_once(log)
        _, last = append_batch(log, 1)

        async def give_up() -> None:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(log.wait_durable_async(last), 0.01)

        asyncio.run(give_up())  # the loop is closed when this returns
        log.flush()
        assert log.failed is None
        append_batch(log, 1)
        assert log.wait_durable(log.end_offset - 1, timeout=0) is False
        log.flush()
        assert log.durable_offset == 3


def test_every_batch_is_durable_when_append_returns(tmp_path: Path) -> None:
    with Log(tmp_path, cfg(CommitMode.EVERY_BATCH)) as log:
        for i in range(5):
            _, last = append_batch(log, 2)
            assert log.durable_offset == last + 1
            assert log.stats.fsyncs == i + 1

        async def main() -> tuple[int, int]:
            return await append_durable(log, batch_for(log.end_offset, 1))

        assert asyncio.run(main()) == (10, 10)
        assert log.durable_offset == 11


def test_os_mode_never_fsyncs_on_append(tmp_path: Path) -> None:
    with Log(tmp_path, cfg(CommitMode.OS)) as log:
        for _ in range(20):
            _, last = append_batch(log, 1)
        assert log.stats.fsyncs == 0
        assert log.durable_offset == log.end_offset
        assert log.wait_durable(last, timeout=0)
        asyncio.run(log.wait_durable_async(last))
        log.flush()  # an explicit flush still fsyncs
        assert log.stats.fsyncs == 1


# -- reading -------------------------------------------------------------------------------


def test_fetch_limits_and_out_of_range(tmp_path: Path) -> None:
    with Log(tmp_path, cfg(segment_bytes=1024)) as log:
        for n in [3, 1, 4, 1, 5, 9, 2, 6]:
            append_batch(log, n)
        end = log.end_offset
        assert log.segment_count > 1
        for start in range(end):
            res = log.fetch(start, max_records=4)
            assert offsets_of(res.records) == list(range(start, min(start + 4, end)))
            assert res.next_offset == min(start + 4, end)
        # max_bytes=1 still returns the first batch whole (from the offset on).
        res = log.fetch(3, max_bytes=1)
        assert offsets_of(res.records) == [3] and res.next_offset == 4
        res = log.fetch(4, max_bytes=1)
        assert offsets_of(res.records) == [4, 5, 6, 7] and res.next_offset == 8
        at_end = log.fetch(end)
        assert (at_end.records, at_end.next_offset, at_end.skipped) == ([], end, [])
        for bad in (-1, end + 1):
            with pytest.raises(OffsetOutOfRange) as exc:
                log.read(bad)
            assert (exc.value.start_offset, exc.value.end_offset) == (0, end)
        with pytest.raises(ValueError, match="max_records"):
            log.fetch(0, max_records=0)


def test_concurrent_reader_sees_whole_valid_prefixes(tmp_path: Path) -> None:
    config = cfg(CommitMode.GROUP, segment_bytes=2048, index_interval_bytes=256)
    log = Log(tmp_path, config)
    done = threading.Event()
    problems: list[str] = []
    fetches = 0

    def reader() -> None:
        nonlocal fetches
        offset = 0
        while not (done.is_set() and offset >= log.end_offset):
            try:
                res = log.fetch(offset, max_records=50)
            except OffsetOutOfRange as exc:
                if exc.offset >= exc.start_offset:
                    problems.append(f"out of range above the start: {exc}")
                    return
                offset = exc.start_offset
                continue
            fetches += 1
            expected = [stored_for(o) for o in range(offset, res.next_offset)]
            if res.skipped or res.records != expected:
                problems.append(f"bad fetch at {offset}: {res.skipped} {offsets_of(res.records)}")
                return
            offset = res.next_offset

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(1500):
            append_batch(log, 1 + i % 5)
            if i % 200 == 199:
                log.delete_before(log.end_offset - 300)
    finally:
        done.set()
        t.join(60)
    assert not t.is_alive()
    log.close()
    assert not problems, problems
    assert fetches > 10
    # A reader racing a deletion must not leave an index behind for a deleted segment.
    assert {p.stem for p in index_files(tmp_path)} <= {p.stem for p in log_files(tmp_path)}


# -- deletion ------------------------------------------------------------------------------


def test_delete_before_keeps_the_active_segment_and_moves_the_start(tmp_path: Path) -> None:
    with Log(tmp_path, cfg(segment_bytes=1024)) as log:
        while log.segment_count < 4:
            append_batch(log, 3)
        info = log.segments_info()
        second_base = info[1][0]
        assert log.delete_before(second_base - 1) == 0  # the first segment is still needed
        assert log.delete_before(second_base) == second_base
        assert log.start_offset == second_base
        assert log.segment_count == 3
        with pytest.raises(OffsetOutOfRange):
            log.read(second_base - 1)
        assert log.read(second_base, max_records=1)[0] == stored_for(second_base)
        end = log.end_offset
        log.delete_before(end + 100)
        assert log.segment_count == 1 and log.start_offset == info[-1][0]
        log.roll()
        assert log.delete_before(end) == end - info[-1][0]
        assert (log.start_offset, log.end_offset, log.segment_count) == (end, end, 1)
        assert log.read(end) == []
    with Log(tmp_path) as log:  # an emptied log keeps its next offset
        assert (log.start_offset, log.end_offset) == (end, end)
        assert append_batch(log, 1) == (end, end)
    assert [p.name for p in log_files(tmp_path)] == [f"{end:020d}.log"]


def test_retention_bytes_deletes_oldest_sealed_segments(tmp_path: Path) -> None:
    with Log(tmp_path, cfg(segment_bytes=1024, retention_bytes=3000)) as log:
        while log.segment_count < 8:
            append_batch(log, 4)
        deleted = log.enforce_retention()
        assert deleted == log.start_offset > 0
        assert log.size_bytes <= 3000
        assert log.stats.retention_deleted_records == deleted
        assert sum(p.stat().st_size for p in log_files(tmp_path)) == log.size_bytes
        assert read_all(log)[0] == [stored_for(o) for o in range(log.start_offset, log.end_offset)]


def test_retention_ms_deletes_segments_older_than_the_limit(tmp_path: Path) -> None:
    with Log(tmp_path, cfg(segment_bytes=1024, retention_ms=60_000)) as log:
        while log.segment_count < 4:
            append_batch(log, 4)
        now = time.time()
        old = log_files(tmp_path)[:2]
        for p in old:
            os.utime(p, (now - 3600, now - 3600))
        assert log.enforce_retention(now) == log.segments_info()[0][0]
        assert log.segment_count == 2
        assert log.enforce_retention(now) == 0


# -- lifecycle and configuration -----------------------------------------------------------


def test_closed_log_refuses_everything_but_close(tmp_path: Path) -> None:
    log = open_log(tmp_path, cfg())
    _, last = append_batch(log, 2)
    log.close()
    log.close()  # idempotent
    for call in (lambda: log.read(0), lambda: log.fetch(0), lambda: log.append(batch_for(2, 1)),
                 log.roll):
        with pytest.raises(LogClosed):
            call()
    assert log.wait_durable(last, timeout=0)  # close made it durable
    with pytest.raises(LogClosed):
        log.wait_durable(last + 5, timeout=5)
    with pytest.raises(LogClosed):
        asyncio.run(log.wait_durable_async(last + 5))


def test_read_only_open_reads_and_never_writes(tmp_path: Path) -> None:
    with Log(tmp_path, cfg(segment_bytes=1024)) as log:
        while log.segment_count < 3:
            append_batch(log, 2)
        end = log.end_offset
    active = log_files(tmp_path)[-1]
    with open(active, "ab") as f:
        f.write(b"torn")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    ro = Log(tmp_path, read_only=True)
    assert read_all(ro)[0] == [stored_for(o) for o in range(end)]
    with pytest.raises(LogClosed):
        ro.append(batch_for(end, 1))
    ro.close()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    with pytest.raises(FileNotFoundError):
        Log(tmp_path / "missing", read_only=True)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: LogConfig(segment_bytes=100), "segment_bytes"),
        (lambda: LogConfig(segment_bytes=2**32), "segment_bytes"),
        (lambda: LogConfig(index_interval_bytes=0), "index_interval_bytes"),
        (lambda: LogConfig(retention_bytes=0), "retention_bytes"),
        (lambda: LogConfig(retention_ms=-1), "retention_ms"),
        (lambda: LogConfig(max_bytes=0), "max_bytes"),
        (lambda: LogConfig(full_policy="drop_newest"), "full_policy"),
        (lambda: CommitPolicy(interval_ms=-1), "interval_ms"),
        (lambda: CommitPolicy(max_records=0), "max_records"),
        (lambda: CommitPolicy(mode="sometimes"), "mode"),
    ],
)
def test_config_validation_names_the_field(make, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        make()


def test_config_accepts_enum_values_as_strings(tmp_path: Path) -> None:
    config = LogConfig(full_policy="reject_new", max_bytes=2000,
                       commit=CommitPolicy(mode="every_batch"))
    assert config.full_policy is FullPolicy.REJECT_NEW
    assert config.commit.mode is CommitMode.EVERY_BATCH
    with Log(tmp_path, config) as log:
        with pytest.raises(LogFull):
            while True:
                append_batch(log, 5)
        assert log.start_offset == 0  # rejected, never dropped


def test_fetch_max_bytes_counts_whole_batches(tmp_path: Path) -> None:
    b = [len(encode_batch(o, batch_for(o, 3))) for o in (0, 3, 6, 9)]
    with Log(tmp_path, cfg()) as log:
        for _ in range(4):
            append_batch(log, 3)
        assert log.size_bytes == sum(b)
        assert offsets_of(log.read(0, max_bytes=b[0] + b[1])) == list(range(6))
        assert offsets_of(log.read(0, max_bytes=b[0] + b[1] - 1)) == list(range(3))
        # Starting inside a batch still counts the whole batch.
        assert offsets_of(log.read(2, max_bytes=b[0] + b[1])) == list(range(2, 6))


def test_a_reader_holding_a_deleted_segment_reads_it_and_leaves_no_files(tmp_path: Path) -> None:
    config = cfg(segment_bytes=1024)
    with Log(tmp_path, config) as log:
        while log.segment_count < 3:
            append_batch(log, 3)
    with Log(tmp_path, config) as log:  # sealed segments load their index on first read
        first = log._segments[0]
        first.index.path.unlink()  # so that the read must rebuild it
        second = log.segments_info()[1][0]
        assert log.delete_before(second) == second
        assert not first.log_path.exists()
        got = [info.base_offset for info, _ in first.read_batches(0, first.size, second)]
        assert got[0] == 0 and len(got) > 1
        assert not first.index.path.exists()  # no orphan index for a deleted segment


@pytest.fixture
def failing_fsync(monkeypatch: pytest.MonkeyPatch):
    """Make every fsync of a regular file fail with EIO once armed (directories still work)."""
    armed = threading.Event()

    def failing(real):  # type: ignore[no-untyped-def]
        def sync(fd: int) -> None:
            if armed.is_set() and stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EIO, "injected fsync failure")
            real(fd)
        return sync

    monkeypatch.setattr(os, "fsync", failing(os.fsync))
    monkeypatch.setattr(os, "fdatasync", failing(os.fdatasync))
    return armed


@pytest.mark.parametrize("mode", [CommitMode.GROUP, CommitMode.EVERY_BATCH])
def test_a_failed_fsync_stops_the_log_for_good(
    tmp_path: Path, failing_fsync: threading.Event, mode: CommitMode
) -> None:
    log = Log(tmp_path, cfg(mode))
    _, ok = append_batch(log, 2)
    assert log.wait_durable(ok, timeout=30)
    failing_fsync.set()
    if mode is CommitMode.EVERY_BATCH:
        with pytest.raises(OSError, match="injected"):
            append_batch(log, 1)
    else:
        _, last = append_batch(log, 1)
        with pytest.raises(LogClosed, match="fsync"):
            log.wait_durable(last, timeout=30)
    assert isinstance(log.failed, OSError)
    failing_fsync.clear()  # a later fsync "succeeding" must not vouch for lost pages
    with pytest.raises(LogClosed, match="failed to fsync"):
        log.flush()
    with pytest.raises(LogClosed, match="failed to fsync"):
        append_batch(log, 1)
    assert log.durable_offset == ok + 1
    assert offsets_of(log.read(0)) == [0, 1, 2]  # reading still works
    log.close()


@pytest.mark.parametrize("mode", [CommitMode.GROUP, CommitMode.OS])
def test_close_with_a_failing_fsync_still_closes(
    tmp_path: Path, failing_fsync: threading.Event, mode: CommitMode
) -> None:
    policy = GROUP_SLOW if mode is CommitMode.GROUP else CommitPolicy(mode)
    log = Log(tmp_path, cfg(commit=policy))
    _, last = append_batch(log, 2)
    failing_fsync.set()
    if mode is CommitMode.GROUP:
        log.close()  # the flusher's last fsync fails: reported to waiters, not by close
    else:
        with pytest.raises(OSError, match="injected"):
            log.close()
    assert isinstance(log.failed, OSError)
    with pytest.raises(LogClosed):
        log.read(0)
    if mode is CommitMode.GROUP:
        with pytest.raises(LogClosed):
            log.wait_durable(last, timeout=5)
    log.close()  # idempotent, no second error
    failing_fsync.clear()
    with Log(tmp_path) as log:  # the data reached the page cache and is read back
        assert offsets_of(log.read(0)) == [0, 1]
