"""One flusher thread for many logs (shared_log._commit.SharedFlusher)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from shared_log import CommitMode, CommitPolicy, Log, LogClosed, LogConfig, Record, SharedFlusher

DEADLINE = 10.0


def group(interval_ms: float = 2.0) -> LogConfig:
    return LogConfig(commit=CommitPolicy(CommitMode.GROUP, interval_ms=interval_ms))


def rec(i: int) -> Record:
    return Record(b"k%d" % i, b"v%d" % i, 1_700_000_000_000 + i)


def test_every_log_is_durable_after_its_own_fsync_and_passes_are_shared(
        tmp_path: Path) -> None:
    flusher = SharedFlusher(interval_ms=5)
    logs = [Log(tmp_path / str(i), group(), flusher=flusher) for i in range(6)]
    try:
        for round_ in range(20):
            lasts = [log.append([rec(round_)])[1] for log in logs]
            for log, last in zip(logs, lasts, strict=True):
                assert log.wait_durable(last, timeout=DEADLINE)
                assert log.durable_offset == last + 1
        assert all(log.stats.fsyncs >= 1 for log in logs)
    finally:
        for log in logs:
            log.close()
        flusher.stop()


def test_one_pass_fsyncs_every_log_with_pending_appends(tmp_path: Path) -> None:
    # After a first pass, the next one waits out a long interval or max_records pending:
    # the fifth append (one per other log) starts it, and one pass covers all five.
    flusher = SharedFlusher(interval_ms=60_000, max_records=5)
    logs = [Log(tmp_path / str(i), group(), flusher=flusher) for i in range(6)]
    try:
        assert logs[0].wait_durable(logs[0].append([rec(0)])[1], timeout=DEADLINE)
        assert flusher.passes == 1
        fsyncs = [log.stats.fsyncs for log in logs]
        lasts = [log.append([rec(1)])[1] for log in logs[1:]]
        for log, last in zip(logs[1:], lasts, strict=True):
            assert log.wait_durable(last, timeout=DEADLINE)
        assert flusher.passes == 2
        assert [log.stats.fsyncs - f for log, f in zip(logs, fsyncs, strict=True)] == \
            [0, 1, 1, 1, 1, 1]
    finally:
        for log in logs:
            log.close()
        flusher.stop()


def test_async_waiters_of_several_logs_resolve(tmp_path: Path) -> None:
    flusher = SharedFlusher(interval_ms=1)
    logs = [Log(tmp_path / str(i), group(), flusher=flusher) for i in range(3)]

    async def main() -> None:
        lasts = [log.append([rec(i) for i in range(50)])[1] for log in logs]
        async with asyncio.timeout(DEADLINE):
            await asyncio.gather(*(log.wait_durable_async(last)
                                   for log, last in zip(logs, lasts, strict=True)))

    try:
        asyncio.run(main())
        assert all(log.durable_offset == 50 for log in logs)
    finally:
        for log in logs:
            log.close()
        flusher.stop()


def test_a_failing_member_fails_only_its_own_log() -> None:
    flusher = SharedFlusher(interval_ms=1)
    good_flushes: list[int] = []
    errors: list[BaseException] = []

    def bad_flush() -> None:
        raise OSError(5, "EIO")

    good = flusher.register(lambda: good_flushes.append(1), errors.append)
    bad = flusher.register(bad_flush, errors.append)
    try:
        bad.appended(1)
        good.appended(1)
        deadline = time.monotonic() + DEADLINE
        while not (errors and good_flushes):
            assert time.monotonic() < deadline, "the pass never ran"
            time.sleep(0.001)
        assert [type(e) for e in errors] == [OSError]
        good.appended(1)  # the flusher goes on after the error
        while len(good_flushes) < 2:
            assert time.monotonic() < deadline, "the flusher stopped after an error"
            time.sleep(0.001)
    finally:
        flusher.stop()


def test_leaving_waits_for_the_members_fsync_in_progress_and_none_follows() -> None:
    flusher = SharedFlusher(interval_ms=1)
    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow_flush() -> None:
        calls.append(1)
        entered.set()
        assert release.wait(DEADLINE)

    member = flusher.register(slow_flush, lambda exc: None)
    left = threading.Event()
    try:
        member.appended(1)
        assert entered.wait(DEADLINE)
        leaver = threading.Thread(target=lambda: (member.stop(), left.set()))
        leaver.start()
        assert not left.wait(0.05), "stop() returned while its fsync was running"
        release.set()
        assert left.wait(DEADLINE)
        member.appended(1)  # after leaving: ignored, never flushed
        other_done = threading.Event()
        other = flusher.register(other_done.set, lambda exc: None)
        other.appended(1)
        assert other_done.wait(DEADLINE)
        assert calls == [1]
    finally:
        release.set()
        flusher.stop()


def test_stop_flushes_what_is_pending() -> None:
    flusher = SharedFlusher(interval_ms=60_000)
    flushed = threading.Event()
    first = flusher.register(lambda: None, lambda exc: None)
    first.appended(1)  # the first pass runs at once; the next waits 60 s
    second = flusher.register(flushed.set, lambda exc: None)
    deadline = time.monotonic() + DEADLINE
    while flusher.passes < 1:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    second.appended(1)
    flusher.stop()
    assert flushed.is_set()


def test_closing_a_log_leaves_the_flusher_serving_the_others(tmp_path: Path) -> None:
    flusher = SharedFlusher(interval_ms=1)
    a = Log(tmp_path / "a", group(), flusher=flusher)
    b = Log(tmp_path / "b", group(), flusher=flusher)
    try:
        a.append([rec(0)])
        a.close()
        with pytest.raises(LogClosed):
            a.append([rec(1)])
        last = b.append([rec(0)])[1]
        assert b.wait_durable(last, timeout=DEADLINE)
    finally:
        b.close()
        flusher.stop()
    with Log(tmp_path / "a") as reopened:
        assert reopened.end_offset == 1


def test_a_members_hurry_starts_the_pass_at_once(tmp_path: Path) -> None:
    flusher = SharedFlusher(interval_ms=600_000)
    logs = [Log(tmp_path / str(i), group(600_000), flusher=flusher) for i in range(2)]
    try:
        first = logs[0].append([rec(0)])[1]
        assert logs[0].wait_durable(first, timeout=DEADLINE)  # after a quiet spell: at once
        lasts = [log.append([rec(1)])[1] for log in logs]
        assert not logs[1].wait_durable(lasts[1], timeout=0.05)  # 10 minutes of spacing
        logs[1].hurry_commit()
        for log, last in zip(logs, lasts, strict=True):  # the pass covers every dirty log
            assert log.wait_durable(last, timeout=DEADLINE)
        assert flusher.hurried == 1 and logs[0].hurried_commits == 1
    finally:
        for log in logs:
            log.close()
        flusher.stop()
