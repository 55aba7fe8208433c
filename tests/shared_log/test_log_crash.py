"""kill -9 of a real writer process: nothing it reported durable is ever lost.

crash_writer.py appends records derived from their offsets and prints each batch's last
offset once the log says it is durable. The test SIGKILLs it at a random moment after its
first report, reopens the log and checks every reported offset is there, intact and in
order, that the log continues at its end offset, and then runs the next writer on the
same directory.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from crash_writer import config
from shared_log_testing import Writer, append_batch, read_all, stored_for

from shared_log import Log


def _reopen_and_check(directory: Path, mode: str, segment_bytes: int, durable_end: int) -> int:
    """Reopen after a kill and check every record; returns the end offset."""
    with Log(directory, config(mode, segment_bytes)) as log:
        end = log.end_offset
        assert end >= durable_end, f"reported durable up to {durable_end - 1}, log ends at {end}"
        records, skipped = read_all(log)
        assert not skipped
        assert records == [stored_for(o) for o in range(end)]
        if end % 2:  # sometimes the next writer finds a log closed cleanly after a crash
            assert append_batch(log, 1) == (end, end)
            end += 1
    return end


@pytest.mark.parametrize(
    ("mode", "kills"), [("group", 24), ("every_batch", 10)], ids=["group", "every_batch"]
)
def test_kill9_loses_nothing_reported_durable(tmp_path: Path, mode: str, kills: int) -> None:
    rng = random.Random(f"kill9-{mode}")
    segment_bytes = 16 * 1024  # small enough that kills land around rolls too
    end = 0
    for round_ in range(kills):
        writer = Writer(tmp_path, mode, segment_bytes, seed=round_)
        writer.wait_for(lambda r: len(r) >= 1)
        time.sleep(rng.uniform(0, 0.25))  # the random moment of the crash
        reported = writer.kill9()
        # The writer continued from the end offset the last recovery found.
        assert min(reported) >= end
        end = _reopen_and_check(tmp_path, mode, segment_bytes, max(reported) + 1)
    with Log(tmp_path, config(mode, segment_bytes)) as log:
        assert log.segment_count > 1 and log.end_offset == end
