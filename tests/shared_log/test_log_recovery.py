"""Opening a log reads in proportion to one segment, not to the whole log.

After kill -9 only the segments at or after the recovery point are recovered; after a
clean close only the tail of the last segment past its last index entry is scanned.
Checked by counting calls to Segment.recover and bytes read through os.pread.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from crash_writer import config
from shared_log_testing import Writer, append_batch, log_files, read_all, stored_for

from shared_log import Log, LogConfig
from shared_log._files import read_checkpoint
from shared_log._log import RECOVERY_POINT
from shared_log._segment import Segment

SEGMENT_BYTES = 8 * 1024


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Count recover() calls (by base offset and kind) and bytes read by os.pread."""
    seen: dict = {"recovered": [], "sealed": [], "pread_bytes": 0}
    real_recover = Segment.recover
    real_pread = os.pread

    def recover(self: Segment, *, truncate: bool = True, sealed: bool = False) -> int:
        seen["sealed" if sealed else "recovered"].append(self.base_offset)
        return real_recover(self, truncate=truncate, sealed=sealed)

    def pread(fd: int, n: int, offset: int) -> bytes:
        data = real_pread(fd, n, offset)
        seen["pread_bytes"] += len(data)
        return data

    monkeypatch.setattr(Segment, "recover", recover)
    monkeypatch.setattr(os, "pread", pread)
    return seen


def test_open_after_kill9_recovers_only_from_the_recovery_point(
    tmp_path: Path, counting: dict
) -> None:
    writer = Writer(tmp_path, "group", SEGMENT_BYTES, seed=7)
    # A log of at least 30 segments: about 240 KiB.
    writer.wait_for(lambda r: bool(r) and len(log_files(tmp_path)) >= 30)
    reported = writer.kill9()
    bases = [int(p.name[:20]) for p in log_files(tmp_path)]
    rp = read_checkpoint(tmp_path / RECOVERY_POINT)["offset"]
    at_rp = max(b for b in bases if b <= rp)
    total = sum(p.stat().st_size for p in log_files(tmp_path))

    counting["pread_bytes"] = 0
    log = Log(tmp_path, config("group", SEGMENT_BYTES))
    opened_with = counting["pread_bytes"]
    try:
        recovered = counting["recovered"] + counting["sealed"]
        assert recovered and all(b >= at_rp for b in recovered)
        assert counting["recovered"] == [bases[-1]]  # only the last one is verified
        assert len(recovered) <= 2
        assert opened_with <= 2 * SEGMENT_BYTES < total / 10
        assert log.end_offset > max(reported)
        # The rest is still all there, read lazily.
        records, skipped = read_all(log)
        assert not skipped and records == [stored_for(o) for o in range(log.end_offset)]
    finally:
        log.close()


def test_reopen_after_clean_close_does_not_rescan(tmp_path: Path, counting: dict) -> None:
    config = LogConfig(segment_bytes=SEGMENT_BYTES, index_interval_bytes=512)
    with Log(tmp_path, config) as log:
        while log.segment_count < 20 or log.segments_info()[-1][2] < SEGMENT_BYTES // 2:
            append_batch(log, 4)
        end = log.end_offset
    counting["recovered"].clear()
    counting["pread_bytes"] = 0
    with Log(tmp_path, config) as log:
        assert counting["recovered"] == [log.segments_info()[-1][0]]
        assert counting["sealed"] == []
        # One index interval of the last segment plus the index's header checks.
        assert counting["pread_bytes"] <= 4096
        assert log.stats.truncated_bytes_on_open == 0
        assert log.end_offset == end
