"""A Python consumer: ``async for record in Consumer(url, group=..., topics=[...])``.

Strategy: one fetcher task per assigned partition long-polls the broker and hands whole
batches to a small queue, so partitions are read in parallel, each in order, while the
caller works through the previous batch. A record counts as processed once the caller
asks for the next one (or calls ``commit()``), and only processed positions are ever
committed: at-least-once. In a group (``client_group.Membership``), when the broker says
the group is rebalancing the consumer stops handing out records, commits what was
processed (auto-commit mode), drops what it had buffered, joins again and resumes its
new partitions from their committed offsets. Without a group it reads every partition of
its topics from ``start``. Transport failures are retried (tenacity, in
``client_http``). docs/consumers.md has examples.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Iterator
from typing import Any

from ..record_codec import ConsumerRecord, FetchResponse
from .fetch import PartitionFetcher
from .group import Membership
from .transport import (
    BrokerClient,
    BrokerUnavailable,
    ConsumerError,
    OffsetOutOfRangeError,
    RebalanceError,
)

__all__ = ["BrokerUnavailable", "Consumer", "ConsumerError", "ConsumerRecord",
           "FetchResponse", "OffsetOutOfRangeError", "RebalanceError"]

log = logging.getLogger(__name__)
TopicPartition = tuple[str, int]
_WAKE = object()  # queue sentinel: look at the flags
_SLICE = 1024  # records handed out between two turns of the event loop


class Consumer:
    def __init__(self, url: str, *, topics: list[str], group: str | None = None,
                 token: str | None = None, auto_commit: bool = True,
                 auto_commit_interval_ms: int = 1000, start: str | int = "earliest",
                 session_timeout_ms: int = 10_000, assignor: str | None = None,
                 member_id: str | None = None, max_records: int = 1000, wait_ms: int = 1000,
                 max_bytes: int | None = None, prefetch: int = 2,
                 retry_for_s: float = 60.0) -> None:
        if start not in ("earliest", "latest") and not (isinstance(start, int) and start >= 0):
            raise ValueError("start must be 'earliest', 'latest' or an offset >= 0")
        self.topics, self.start = list(topics), start
        self.auto_commit = auto_commit and group is not None
        self.auto_commit_interval = auto_commit_interval_ms / 1000
        self.max_records, self.wait_ms, self.max_bytes = max_records, wait_ms, max_bytes
        self.client = BrokerClient(url, token, retry_for_s)
        self.member = None if group is None else Membership(
            self.client, group, member_id or f"consumer-{uuid.uuid4().hex[:12]}", self.topics,
            session_timeout_ms, assignor, self._wake_for_rebalance)
        self.assignment: list[TopicPartition] = []
        self.skipped: list[tuple[str, int, int, int]] = []  # (topic, partition, first, last)
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=max(1, prefetch))
        self._fetchers: list[asyncio.Task[None]] = []
        self._getter: asyncio.Future[Any] | None = None
        self._batch: Iterator[ConsumerRecord] = iter(())
        self._slices: deque[list[ConsumerRecord]] = deque()  # rest of the current batch
        self._current: ConsumerRecord | None = None  # yielded, in the caller's hands
        self._done: dict[TopicPartition, int] = {}  # processed up to (next offset)
        self._committed: dict[TopicPartition, int] = {}
        self._started = self._rebalance = self._closed = False
        self._next_commit = 0.0

    @property
    def group(self) -> str | None:
        return None if self.member is None else self.member.group

    @property
    def generation(self) -> int | None:
        return None if self.member is None else self.member.generation

    @property
    def committed(self) -> dict[TopicPartition, int]:
        """Offsets committed (next to consume) for the current assignment."""
        return dict(self._committed)

    async def fetch(self, topic: str, partition: int, offset: int, max_records: int | None = None,
                    wait_ms: int = 0) -> FetchResponse:
        """One plain fetch, outside any group bookkeeping."""
        return await self.client.fetch(topic, partition, offset,
                                       max_records or self.max_records, wait_ms)

    # -- iteration -----------------------------------------------------------------------

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> ConsumerRecord:
        while True:
            m = self.member
            if not self._rebalance and (m is None or time.monotonic() < m.fence):
                for rec in self._batch:
                    self._current = rec
                    return rec
            await self._next_batch()

    async def _next_batch(self) -> None:
        self._mark_current()
        if self._closed:
            raise StopAsyncIteration
        if self._slices and not self._rebalance:
            # Hand out a batch in slices and let the loop run in between: the fetchers'
            # next requests (and their responses) progress while the caller works.
            if self.auto_commit and time.monotonic() >= self._next_commit:
                await self.commit()
            else:
                await asyncio.sleep(0)
            self._batch = iter(self._slices.popleft())
            return
        while True:
            if not self._started or self._rebalance or (
                    self.member is not None and not self.member.alive()):
                if self._started and self.auto_commit:
                    await self.commit()  # still accepted while the group rebalances
                await self._assign()
            elif self.auto_commit and time.monotonic() >= self._next_commit:
                await self.commit()
            # A getter that outlives a timeout (never wait_for + get: a batch could be lost
            # when the timeout and the get complete together).
            if self._getter is None:
                self._getter = asyncio.ensure_future(self._queue.get())
            done, _ = await asyncio.wait({self._getter}, timeout=self._idle_timeout())
            if not done:
                continue
            item, self._getter = self._getter.result(), None
            if item is _WAKE:
                continue
            if isinstance(item, BaseException):
                raise item
            self._slices.extend(item[i:i + _SLICE] for i in range(_SLICE, len(item), _SLICE))
            self._batch = iter(item[:_SLICE] if len(item) > _SLICE else item)
            return

    def _idle_timeout(self) -> float | None:
        if self.member is None:
            return None
        until = min(self.member.fence, self._next_commit if self.auto_commit else self.member.fence)
        return max(0.01, until - time.monotonic())

    def _mark_current(self) -> None:
        cur = self._current
        if cur is not None:
            self._done[(cur.topic, cur.partition)] = cur.offset + 1
            self._current = None

    # -- commits -------------------------------------------------------------------------

    async def commit(self, record: ConsumerRecord | None = None) -> bool:
        """Commit what was processed: every record handed out so far, or up to ``record``.

        False when the group moved on meanwhile (nothing stored; the consumer joins again
        and resumes from the last accepted commit). Without a group: nothing to commit.
        """
        self._next_commit = time.monotonic() + self.auto_commit_interval
        if record is not None:
            tp = (record.topic, record.partition)
            self._done[tp] = max(self._done.get(tp, 0), record.offset + 1)
        else:
            self._mark_current()
        if self.member is None or self.member.generation is None:
            return False
        owned = set(self.assignment)
        todo = [(t, p, o) for (t, p), o in self._done.items()
                if (t, p) in owned and o > self._committed.get((t, p), -1)]
        if not todo:
            return True
        if not await self.member.commit(todo):
            return False
        for t, p, o in todo:
            self._committed[(t, p)] = o
        return True

    # -- assignment ----------------------------------------------------------------------

    async def _assign(self) -> None:
        await self._stop_fetchers()
        self._batch, self._current, self._started = iter(()), None, True
        self._slices.clear()
        self._done.clear()
        self._rebalance = False
        meta = {t: (await self.client.topic(t))["partitions"] for t in self.topics}
        if self.member is None:
            self.assignment = [(t, p["partition"]) for t in self.topics for p in meta[t]]
            committed: dict[TopicPartition, int] = {}
        else:
            committed = await self.member.join()
            self.assignment = list(self.member.assignment)
        self._committed = dict(committed)
        self._next_commit = time.monotonic() + self.auto_commit_interval
        for tp in self.assignment:
            offset = committed.get(tp)
            if offset is None:
                offset = self._start_offset(meta, tp)
            fetcher = PartitionFetcher(self.client, tp, self.max_records, self.wait_ms,
                                       self.max_bytes, self.skipped)
            self._fetchers.append(asyncio.create_task(fetcher.run(offset, self._queue)))

    def _start_offset(self, meta: dict[str, list[dict[str, int]]], tp: TopicPartition) -> int:
        """Where a partition without a committed offset starts (``start``)."""
        if isinstance(self.start, int):
            return self.start
        parts = {p["partition"]: p for p in meta.get(tp[0], [])}
        info = parts.get(tp[1], {"start_offset": 0, "end_offset": 0})
        return info["start_offset"] if self.start == "earliest" else info["end_offset"]

    async def _stop_fetchers(self) -> None:
        for t in self._fetchers:
            t.cancel()
        for t in self._fetchers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._fetchers.clear()
        if self._getter is not None:
            self._getter.cancel()
            self._getter = None
        while not self._queue.empty():
            self._queue.get_nowait()

    def _wake_for_rebalance(self) -> None:
        """Called by the membership: stop handing out records, then join again."""
        self._rebalance = True
        for t in self._fetchers:
            t.cancel()
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(_WAKE)

    # -- lifecycle -----------------------------------------------------------------------

    async def close(self) -> None:
        """Commit what was processed (auto-commit), leave the group, close connections."""
        if self._closed:
            return
        self._closed = True
        await self._stop_fetchers()
        try:
            if self.member is not None:
                await self.member.stop()
                if self.auto_commit and self._started:
                    await self.commit()
                await self.member.leave()
        except ConsumerError as exc:
            log.info("on close: %s", exc)
        finally:
            await self.client.close()

    async def __aenter__(self) -> Consumer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
