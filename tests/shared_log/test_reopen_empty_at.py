"""``reopen_empty_at``: an empty log continues at a given offset, durably; a log that
holds or held records is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared_log import Log, LogConfig, Record, reopen_empty_at


def test_an_empty_log_reopens_at_the_base_and_stays_there(tmp_path: Path) -> None:
    log = reopen_empty_at(Log(tmp_path, LogConfig()), 1234)
    assert (log.start_offset, log.end_offset) == (1234, 1234)
    first, last = log.append([Record(b"k", b"v", 1)])
    assert (first, last) == (1234, 1234)
    log.flush()
    log.close()
    with Log(tmp_path, LogConfig()) as again:
        assert (again.start_offset, again.end_offset) == (1234, 1235)
        assert [r.value for r in again.fetch(1234).records] == [b"v"]


def test_a_log_with_records_is_refused_and_left_open(tmp_path: Path) -> None:
    log = Log(tmp_path, LogConfig())
    log.append([Record(b"k", b"v", 1)])
    with pytest.raises(ValueError, match="only an empty log"):
        reopen_empty_at(log, 10)
    assert log.end_offset == 1 and log.append([Record(b"k", b"w", 2)]) == (1, 1)
    log.close()


def test_a_negative_base_is_refused(tmp_path: Path) -> None:
    with Log(tmp_path, LogConfig()) as log, pytest.raises(ValueError, match=">= 0"):
        reopen_empty_at(log, -1)
