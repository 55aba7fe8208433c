"""Where a mirror reads: the broker's own partitions, or another broker over HTTP.

Strategy: the runner needs three things of a source, whatever it is: how many partitions
a topic has, a bounded read of one partition from an offset that waits a little for new
data (long poll), and where the partition starts and ends. ``LocalSource`` (inside the
broker) reads the partition store directly, off the event loop, and never past the durable
offset, so a mirror never ships a record the broker could still lose in a crash.
``HttpSource`` (``cloud-broker mirror`` on its own) uses the consumer API, whose end
offset is already the durable high watermark.

A read below the partition's start (retention deleted records the mirror had not copied
yet) returns no records and ``next_offset`` = the start: those records are gone and the
runner counts them as lost. Ranges lost to corruption arrive in ``skipped``.

Errors: ``SourceUnavailable`` (transient, retried with backoff) and ``UnknownTopic``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared_log import CorruptBatch, CorruptRange, StoredBatch

from ..client import BrokerClient, ConsumerError, OffsetOutOfRangeError
from ..storage import LogError, OffsetOutOfRange, PartitionLog, PartitionStoreAPI, UnknownTopic
from .stored import StoredRecords, check_framing


class SourceUnavailable(Exception):
    """The source cannot be read now (broker down, timeout, closed log); retry later."""


@dataclass(frozen=True, slots=True)
class SourceBatch:
    """One read: ``records`` (objects with offset, key, value, timestamp, headers)."""

    records: Sequence[Any]
    next_offset: int
    start_offset: int
    end_offset: int  # durable high watermark: lag = end_offset - position
    skipped: list[tuple[int, int]] = field(default_factory=list)


class Source(Protocol):
    description: str

    async def partitions(self, topic: str) -> int: ...

    async def read(self, topic: str, partition: int, offset: int, max_records: int,
                   max_bytes: int, wait_s: float, *, stored: bool = False) -> SourceBatch:
        """``stored``: the target reads stored batches (``stored.StoredRecords``); a
        source that has none returns records as usual."""

    async def close(self) -> None: ...


class LocalSource:
    """The partitions of this broker process (a ``PartitionStoreAPI``)."""

    description = "local partitions"

    def __init__(self, store: PartitionStoreAPI) -> None:
        self.store = store
        # One pending waiter per partition, reused until it fires: Partition.waiter()
        # registrations are only dropped by notify(), so fresh ones per poll would pile up.
        self._events: dict[tuple[str, int], asyncio.Event] = {}

    async def partitions(self, topic: str) -> int:
        return len(self.store.partitions(topic))

    def _event(self, topic: str, partition: int) -> asyncio.Event:
        key = (topic, partition)
        ev = self._events.get(key)
        if ev is None or ev.is_set():
            ev = self._events[key] = self.store.partition(topic, partition).waiter()
        return ev

    async def read(self, topic: str, partition: int, offset: int, max_records: int,
                   max_bytes: int, wait_s: float, *, stored: bool = False) -> SourceBatch:
        part = self.store.partition(topic, partition)
        waited = False
        while True:
            ev = self._event(topic, partition)  # before reading the offsets: no lost wakeup
            start, durable = part.start_offset, part.durable_offset
            if offset < start:
                return SourceBatch([], start, start, durable)
            if offset < durable or waited:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):  # not wait_for: it can swallow a cancel
                    await ev.wait()
            waited = True
        if offset >= durable:
            return SourceBatch([], offset, start, durable)
        try:
            if stored:
                got = await asyncio.to_thread(_fetch_stored, part, offset, max_records,
                                              max_bytes, durable)
                if got is not None:
                    batches, nxt, skipped_ranges = got
                    return SourceBatch(StoredRecords(batches) if batches else [], nxt, start,
                                       durable, [(s.first, s.last) for s in skipped_ranges])
            res = await asyncio.to_thread(part.fetch, offset, max_records, max_bytes)
        except OffsetOutOfRange:  # retention moved the start meanwhile
            return SourceBatch([], max(offset, part.start_offset), part.start_offset, durable)
        except (LogError, OSError) as exc:  # closed (shutting down), unreadable file
            raise SourceUnavailable(str(exc)) from exc
        records = [r for r in res.records if r.offset < durable]
        # Stop before the first record that is not durable yet (all before it are here).
        nxt = res.next_offset if len(records) == len(res.records) else \
            res.records[len(records)].offset
        skipped = [(s.first, s.last) for s in res.skipped if s.first < nxt]
        return SourceBatch(records, nxt, start, durable, skipped)

    async def close(self) -> None:
        self._events.clear()


def _fetch_stored(part: PartitionLog, offset: int, max_records: int, max_bytes: int,
                  durable: int) -> tuple[list[StoredBatch], int, list[CorruptRange]] | None:
    """The stored batches of a read below ``durable``, their framing checked; None when
    one is broken (the caller reads again with ``fetch``, which skips and counts it)."""
    res = part.fetch_batches(offset, max_records, max_bytes, end=durable)
    try:
        for b in res.batches:
            check_framing(b)
    except CorruptBatch:
        return None
    return res.batches, res.next_offset, res.skipped


class HttpSource:
    """A broker's partitions through its consumer API (``cloud-broker mirror``)."""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 10.0) -> None:
        self.description = url
        # Short client-side retries: the runner's backoff (and its status) does the rest.
        self.client = BrokerClient(url, token, retry_for_s=timeout_s)

    async def partitions(self, topic: str) -> int:
        try:
            doc = await self.client.topic(topic)
            return len(doc["partitions"])
        except ConsumerError as exc:
            if exc.status == 404:
                raise UnknownTopic(str(exc)) from exc
            raise SourceUnavailable(f"{self.description}: {exc}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise SourceUnavailable(f"{self.description}: bad topic reply: {exc!r}") from exc

    async def read(self, topic: str, partition: int, offset: int, max_records: int,
                   max_bytes: int, wait_s: float, *, stored: bool = False) -> SourceBatch:
        try:
            res = await self.client.fetch(topic, partition, offset, max_records,
                                          int(wait_s * 1000), max_bytes)
        except OffsetOutOfRangeError as exc:
            start, end = exc.start_offset, exc.end_offset
            if offset < start:
                return SourceBatch([], start, start, end)
            # Past the source's end: the target is ahead of a source that lost data.
            await asyncio.sleep(wait_s)
            return SourceBatch([], offset, start, end)
        except ConsumerError as exc:
            if exc.status == 404:
                raise UnknownTopic(str(exc)) from exc
            raise SourceUnavailable(f"{self.description}: {exc}") from exc
        return SourceBatch(res.records, res.next_offset, res.start_offset, res.end_offset,
                           list(res.skipped))

    async def close(self) -> None:
        await self.client.close()


__all__ = ["HttpSource", "LocalSource", "Source", "SourceBatch", "SourceUnavailable",
           "UnknownTopic"]
