"""Conveniences over ``Log`` for callers that open logs or wait in asyncio."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

from ._config import CommitMode, LogConfig
from ._log import Log
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
