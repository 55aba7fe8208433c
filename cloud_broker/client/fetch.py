"""One partition fetched in order, forever, with two requests overlapping.

Strategy: the next fetch is sent as soon as the current one's headers say where it ends
(``X-Next-Offset``), so the broker reads and encodes the next batch while this one is
still read and decoded here; whole batches go to the consumer's queue, whose bound is
the backpressure. 416 moves the position to the valid range (logged and recorded in
``skipped``, like corrupt ranges the broker reports); a response cut mid-body is asked
for again. Any other error is put into the queue for the iterating caller to raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from .transport import BrokerClient, BrokerUnavailable, OffsetOutOfRangeError, PendingFetch

log = logging.getLogger(__name__)


async def _drop(task: asyncio.Task[PendingFetch] | None) -> None:
    """Cancel a fetch in flight and close its response if it already had one."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(BaseException):
        await (await task).aclose()


class PartitionFetcher:
    def __init__(self, client: BrokerClient, tp: tuple[str, int], max_records: int,
                 wait_ms: int, max_bytes: int | None,
                 skipped: list[tuple[str, int, int, int]]) -> None:
        self.client, self.tp = client, tp
        self.max_records, self.wait_ms, self.max_bytes = max_records, wait_ms, max_bytes
        self.skipped = skipped

    async def _open(self, offset: int) -> PendingFetch:
        return await self.client.open_fetch(self.tp[0], self.tp[1], offset, self.max_records,
                                            self.wait_ms, self.max_bytes)

    def _reset(self, offset: int, exc: OffsetOutOfRangeError) -> int:
        """416: below the start (retention passed us) go to the start; above the end
        (the broker lost data) go to the end."""
        target = exc.start_offset if offset < exc.start_offset else exc.end_offset
        log.warning("%s/%s: offset %d out of range (%d..%d), continuing at %d",
                    *self.tp, offset, exc.start_offset, exc.end_offset, target)
        if target > offset:
            self.skipped.append((*self.tp, offset, target - 1))
        return target

    async def run(self, offset: int, queue: asyncio.Queue[Any]) -> None:
        pending: PendingFetch | None = None
        following: asyncio.Task[PendingFetch] | None = None
        try:
            while True:
                if pending is None:
                    try:
                        pending = await self._open(offset)
                    except OffsetOutOfRangeError as exc:
                        offset = self._reset(offset, exc)
                        continue
                if pending.next_offset >= 0:
                    following = asyncio.create_task(self._open(pending.next_offset))
                try:
                    res = await pending.result()
                except BrokerUnavailable:  # cut mid-body: ask again from the same offset
                    pending = None
                    await _drop(following)
                    following = None
                    continue
                pending = None
                if res.skipped:
                    self.skipped.extend((*self.tp, f, last) for f, last in res.skipped)
                    log.warning("%s/%s: offsets %s lost to corruption", *self.tp, res.skipped)
                if res.records:
                    await queue.put(res.records)
                offset = res.next_offset
                if following is not None:
                    task, following = following, None
                    try:
                        pending = await task
                    except OffsetOutOfRangeError as exc:
                        offset = self._reset(offset, exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # hand it to the iterating caller
            await queue.put(exc)
        finally:
            await _drop(following)
            if pending is not None:
                await pending.aclose()
