"""Conveniences over ``Log`` for callers that open logs or wait in asyncio."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

from ._config import CommitMode, LogConfig
from ._files import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    fsync_dir,
    parse_segment_name,
    segment_name,
    write_checkpoint,
)
from ._log import RECOVERY_POINT, Log
from ._records import Record


def open_log(directory: str | os.PathLike[str], config: LogConfig | None = None) -> Log:
    """Open (creating when missing) the log in ``directory``, recovering after a crash."""
    return Log(directory, config)


async def append_durable(log: Log, records: Sequence[Record]) -> tuple[int, int]:
    """Append and wait until durable, without blocking the event loop on an fsync."""
    if log.config.commit.mode is CommitMode.EVERY_BATCH:
        return await asyncio.to_thread(log.append, records)
    first, last = log.append(records)
    await log.wait_durable_async(last)
    return first, last


def reopen_empty_at(log: Log, base: int) -> Log:
    """Close the empty ``log`` and reopen it so that its next offset is ``base``.

    For a copy that must keep another log's offsets (a mirror whose source's retention
    already deleted the beginning). An empty log records its next offset on disk as the
    name of its only segment, so the segment files are replaced by an empty one named
    after ``base`` and the recovery point moved there. A crash half-way leaves a directory
    without segments, which reopens empty at 0, as before. Raises ``ValueError`` when the
    log holds (or held) records, ``OSError`` from the file system; the old ``log`` is
    closed either way once the check passed."""
    if base < 0:
        raise ValueError(f"base offset must be >= 0, got {base}")
    if log.size_bytes or log.start_offset != log.end_offset or log.segment_count != 1:
        raise ValueError("only an empty log can be reopened at another offset")
    directory, config = log.directory, log.config
    log.close()
    for name in os.listdir(directory):
        if (parse_segment_name(name, LOG_SUFFIX) is not None
                or parse_segment_name(name, INDEX_SUFFIX) is not None):
            os.unlink(directory / name)
    (directory / segment_name(base, LOG_SUFFIX)).touch()
    write_checkpoint(directory / RECOVERY_POINT, {"offset": base})
    fsync_dir(directory)
    return Log(directory, config, flusher=log.flusher)
