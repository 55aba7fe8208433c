"""One connection's next Fetch answer, read while the client handles the last one.

Strategy: a consumer of one partition (librdkafka, kafka-python, aiokafka) asks for the
next records only once it has the previous answer, so without this the broker builds an
answer (~0.9 us a record) while the client waits, then the client parses it while the
broker idles. After a large single-partition answer (more than ``INLINE_READ_RECORDS``
left past it) the connection starts reading the next one on a worker thread, keyed by
(partition, offset, byte budget); the next Fetch takes it when it asks exactly that,
else it is dropped. What it read is still what a fresh read gives: the records below the
durable offset are immutable, and the Fetch's own range check (``start_offset``, which
retention moves) runs first. At most one answer ahead per connection: its memory is one
more answer (``MAX_FETCH_BYTES`` at most), released when the connection closes.
The read starts as soon as the answer is read, not once it is written: the client's
turn alone is shorter than a read, and started after the write it measured slower.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..storage import PartitionLog


class ReadAhead:
    def __init__(self) -> None:
        self._key: tuple[PartitionLog, int, int] | None = None
        self._task: asyncio.Future[Any] | None = None

    def start(self, part: PartitionLog, offset: int, max_bytes: int,
              read: Callable[[], Any]) -> None:
        """Read ``read()`` on a worker thread as the answer for ``(part, offset,
        max_bytes)``, dropping any other read ahead."""
        self.drop()
        self._key = (part, offset, max_bytes)
        self._task = asyncio.ensure_future(asyncio.to_thread(read))

    def take(self, part: PartitionLog, offset: int, max_bytes: int
             ) -> asyncio.Future[Any] | None:
        """The read started for exactly this ask, or None (and any other is dropped)."""
        task = self._task
        if task is not None and self._key == (part, offset, max_bytes):
            self._key = self._task = None
            return task
        self.drop()
        return None

    def drop(self) -> None:
        task, self._key, self._task = self._task, None, None
        if task is not None:
            task.cancel()  # the thread runs on; its result (or error) is discarded
            task.add_done_callback(_quiet)


def _quiet(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log a dropped read's error


__all__ = ["ReadAhead"]
