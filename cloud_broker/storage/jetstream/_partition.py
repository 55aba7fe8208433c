"""One topic-partition as one JetStream stream (``PartitionLog``).

Strategy: every write is a piece published with ``Nats-Expected-Last-Sequence`` set to
the last sequence this node's view has applied, so the stream takes it only if nothing
else landed since: the piece's base offset (and, for the ingest, the floor its records
were filtered against) were computed from exactly the state it lands on. When another
node got there first the server refuses it (err 10071); the writer re-reads the tail
(``catch_up``) and re-decides: a plain append whose promised offsets moved fails with
``JetStreamUnavailable`` (retry later), an ingest piece whose source's mark moved raises
``StaleMark`` (the ingest re-filters its records against the new mark), anything else
is published again on the new tail. A publish whose answer was lost (timeout, leader
change) is recognised on the catch-up by its ``Es-Tag`` header, or published again:
the expected sequence lets at most one of the attempts land.

Pieces of one partition are published one at a time, in order, by the partition's
writer task on the store's client loop. Other nodes' pieces are applied when this node
catches up: on a tick another node publishes (core NATS, ``_ES.<stream>``) after each
write, on any refusal, and every ``follow_interval_s``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import nats.js.errors
from nats.js.api import Header

from shared_log import (
    BatchFetch,
    ColumnFetch,
    FetchResult,
    LogClosed,
    LogError,
    Record,
    encode_framed,
)

from ...config import TopicConfig
from .._waiters import Waiters
from ._client import (
    NATS_ERRORS,
    WRONG_LAST_SEQUENCE,
    ClientThread,
    JetStreamUnavailable,
    unavailable,
)
from ._follow import H_BASE, H_COUNT, H_MAXTS, H_ORIGIN, H_TAG, StreamFollower
from ._read import Reader, frame_records
from ._readahead import WINDOW_BYTES, Budget, ReadAhead
from ._view import PartitionView, Piece

log = logging.getLogger(__name__)
#: publishes of one piece (refusals and lost answers) before it is reported unavailable
ATTEMPTS = 12


class StaleMark(Exception):
    """The source's mark in this partition moved: filter the records again."""


@dataclass(eq=False)
class _Item:
    body: bytes = field(repr=False)  # ~150 KB: a repr of it costs more than its publish
    count: int
    max_ts: int
    expect_base: int | None = None  # a plain append: the offset promised to its caller
    source: bytes | None = None  # an ingest piece: its source and the floor it was cut at
    floor: int = -1
    origin: bytes | None = None
    last: int = -1
    done: concurrent.futures.Future[tuple[int, int]] = field(
        default_factory=concurrent.futures.Future)
    queued: float = field(default_factory=time.monotonic)


class JetStreamPartition(StreamFollower, Waiters):
    """A ``PartitionLog`` over stream ``stream`` (subject ``subject``)."""

    def __init__(self, client: ClientThread, cfg: TopicConfig, index: int, stream: str,
                 subject: str, node_id: str, cache_bytes: int = 32 << 20,
                 follow_interval_s: float = 1.0, budget: Budget | None = None,
                 readahead_bytes: int = WINDOW_BYTES) -> None:
        super().__init__()
        self.topic, self.index, self.cfg = cfg.name, index, cfg
        self.client, self.stream, self.subject = client, stream, subject
        self.tick_subject = f"_ES.{stream}"
        self.node_id = node_id
        self.follow_interval_s = follow_interval_s
        self.view = PartitionView(cache_bytes)
        self.reader = Reader(self.view, self._load)
        self.readahead = ReadAhead(self.view, self._batch, self._body,
                                budget if budget is not None else Budget(), readahead_bytes)
        self._lock = threading.Lock()
        self._next = 0  # the next offset promised by a plain append
        self._pending: deque[_Item] = deque()
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._apply_lock = asyncio.Lock()
        self._hint = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._failed: BaseException | None = None
        self._head: _Item | None = None  # the item being published (the oldest waiting)
        self.closed = False

    # -- lifecycle (on the client loop) ----------------------------------------------------

    async def open(self) -> None:
        """Read the stream into the view, then start the writer and the follower."""
        await self.catch_up()
        self._next = self.view.end
        self._tasks = [asyncio.create_task(self._writer()), asyncio.create_task(self._follow())]
        await self.client.nc.subscribe(self.tick_subject, cb=self._on_tick)

    async def _on_tick(self, msg: object) -> None:
        if getattr(msg, "data", b"") != self.node_id.encode():
            self._hint.set()

    async def _shutdown(self) -> None:
        self.readahead.drop()
        for t in self._tasks:
            t.cancel()
        for item in list(self._pending):
            if not item.done.done():
                item.done.set_exception(LogClosed(f"partition {self.stream} closed"))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.client.closed:
            with contextlib.suppress(LogError, RuntimeError, concurrent.futures.TimeoutError):
                self.client.run(self._shutdown(), 5)

    def _check_open(self) -> None:
        if self.closed:
            raise LogClosed(f"partition {self.topic}/{self.index} is closed")

    # -- state -----------------------------------------------------------------------------

    @property
    def start_offset(self) -> int:
        return self.view.start

    @property
    def end_offset(self) -> int:
        return max(self._next, self.view.end)

    @property
    def durable_offset(self) -> int:
        return self.view.end

    @property
    def size_bytes(self) -> int:
        return self.view.size_bytes

    @property
    def failed(self) -> BaseException | None:
        return self._failed

    @property
    def corrupt_records(self) -> int:
        return self.reader.corrupt_records

    @property
    def append_wait_s(self) -> float:
        head = self._head  # publishes go one at a time, in order: the head waited longest
        return 0.0 if head is None else time.monotonic() - head.queued

    def mark(self, source: bytes) -> int:
        """The highest edge offset of ``source`` (b"edge/stream/gen/") held here, or -1."""
        return self.view.marks.get(source, -1)

    # -- writes ----------------------------------------------------------------------------

    def append_framed(self, body: bytes, count: int, max_timestamp: int) -> tuple[int, int]:
        self._check_open()
        if self._failed is not None:
            raise JetStreamUnavailable(f"partition failed: {self._failed}")
        with self._lock:
            base = max(self._next, self.view.end)
            item = _Item(body, count, max_timestamp, expect_base=base, last=base + count - 1)
            self._next = base + count
            self._pending.append(item)
        self.client.loop.call_soon_threadsafe(self._queue.put_nowait, item)
        return base, base + count - 1

    def append(self, records: Sequence[Record]) -> tuple[int, int]:
        return self.append_framed(*frame_records(records))

    async def append_piece(self, body: bytes, count: int, max_timestamp: int, source: bytes,
                           last_edge_offset: int, floor: int) -> tuple[int, int]:
        """Append an ingest piece of ``source`` cut above ``floor``; (first, last) once the
        stream holds it (replicated). StaleMark when the source's mark is no longer
        ``floor``; JetStreamUnavailable when the cluster cannot take it now."""
        self._check_open()
        if self._failed is not None:
            raise JetStreamUnavailable(f"partition failed: {self._failed}")
        item = _Item(body, count, max_timestamp, source=source, floor=floor,
                     origin=source + str(last_edge_offset).encode())
        self.client.loop.call_soon_threadsafe(self._queue.put_nowait, item)
        return await asyncio.wrap_future(item.done)

    async def wait_durable(self, offset: int) -> None:
        if offset < self.view.end:
            return
        with self._lock:
            item = next((i for i in self._pending if i.last >= offset), None)
        if item is None:
            raise JetStreamUnavailable(f"offset {offset} of {self.stream} will not be written")
        await asyncio.wrap_future(item.done)

    async def _writer(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            self._head = item
            try:
                result = await self._publish(item)
            except BaseException as exc:  # every error goes to the waiting caller
                self._head = None
                if item.expect_base is not None:
                    with self._lock:
                        self._next = self.view.end
                if not item.done.done():
                    item.done.set_exception(exc if isinstance(exc, Exception) else
                                            LogClosed("partition closed"))
                if isinstance(exc, asyncio.CancelledError):
                    raise
            else:
                self._head = None  # before the caller wakes: it may read append_wait_s
                item.done.set_result(result)
                self.notify()
            finally:
                # only plain appends are pending; removing an absent item would raise a
                # ValueError whose message is built from the item's repr, at every piece
                if item.expect_base is not None:
                    with self._lock, contextlib.suppress(ValueError):
                        self._pending.remove(item)

    async def _publish(self, item: _Item) -> tuple[int, int]:
        tag = os.urandom(8).hex()
        for attempt in range(ATTEMPTS):
            view = self.view
            if item.expect_base is not None and view.end != item.expect_base:
                raise JetStreamUnavailable(
                    f"{self.stream} moved to offset {view.end} (another writer); the append "
                    f"promised offset {item.expect_base}")
            if item.source is not None and view.marks.get(item.source, -1) != item.floor:
                raise StaleMark(item.source)
            base, last_seq = view.end, view.last_seq
            body = encode_framed(base, item.count, item.max_ts, item.body)
            headers = {H_BASE: str(base), H_COUNT: str(item.count), H_MAXTS: str(item.max_ts),
                       H_TAG: tag, Header.EXPECTED_LAST_SEQUENCE: str(last_seq)}
            if item.origin is not None:
                headers[H_ORIGIN] = item.origin.decode()
            try:
                ack = await self.client.js.publish(self.subject, body, headers=headers)
            except nats.js.errors.APIError as exc:
                if exc.err_code != WRONG_LAST_SEQUENCE:
                    await self._pause(attempt, exc)
                found = await self._recover(tag, attempt)
                if found is not None:
                    return found
                continue
            except NATS_ERRORS as exc:  # the answer was lost: it may have landed
                await self._pause(attempt, exc)
                found = await self._recover(tag, attempt)
                if found is not None:
                    return found
                continue
            async with self._apply_lock:
                if ack.seq > self.view.last_seq:  # else a catch-up applied it already
                    self._apply(Piece(ack.seq, base, item.count, len(body), item.max_ts,
                                      item.origin, tag.encode()), body)
            with contextlib.suppress(*NATS_ERRORS):
                await self.client.nc.publish(self.tick_subject, self.node_id.encode())
            return base, base + item.count - 1
        raise JetStreamUnavailable(f"{self.stream}: no publish landed in {ATTEMPTS} attempts")

    async def _pause(self, attempt: int, exc: BaseException) -> None:
        log.debug("publish to %s failed (%s), attempt %d", self.stream, exc, attempt)
        await asyncio.sleep(min(2.0, 0.05 * 2 ** attempt))

    async def _recover(self, tag: str, attempt: int) -> tuple[int, int] | None:
        """Catch up; the (first, last) of our own piece if it landed after all."""
        try:
            mine = await self.catch_up(tag.encode())
        except JetStreamUnavailable as exc:
            await self._pause(attempt, exc)
            return None
        return None if mine is None else (mine.base, mine.base + mine.count - 1)

    # -- reads -----------------------------------------------------------------------------

    def fetch(self, offset: int, max_records: int, max_bytes: int) -> FetchResult:
        self._check_open()
        return self.reader.fetch(offset, max_records, max_bytes, self.end_offset,
                                 self.view.end)

    def fetch_columns(self, offset: int, max_records: int, max_bytes: int,
                      end: int | None = None) -> ColumnFetch:
        self._check_open()
        stop = self.view.end if end is None else min(end, self.view.end)
        return self.reader.fetch_columns(offset, max_records, max_bytes, self.end_offset,
                                         stop)

    def fetch_batches(self, offset: int, max_records: int, max_bytes: int,
                      end: int | None = None) -> BatchFetch:
        self._check_open()
        stop = self.view.end if end is None else min(end, self.view.end)
        return self.reader.fetch_batches(offset, max_records, max_bytes, self.end_offset,
                                         stop)

    def replay_header(self, start: int, name: str, visit: Callable[[bytes], None]) -> int:
        """As the interface says, up to the end offset: appends still being published are
        waited for first (a worker thread or startup calls this, never the loop)."""
        self._check_open()
        with self._lock:
            pending = list(self._pending)
        for item in pending:
            with contextlib.suppress(Exception):
                item.done.result(self.client.conn.request_timeout_s * ATTEMPTS)
        return self.reader.replay_header(start, self.view.end, name, visit)

    # -- retention and rebase (worker threads) ----------------------------------------------

    def enforce_retention(self) -> int:
        self._check_open()
        cut = self.view.retention_cut(self.cfg.retention_bytes, self.cfg.retention_ms,
                                      int(time.time() * 1000))
        if cut is None:
            return 0

        async def purge() -> None:
            try:
                await self.client.js.purge_stream(self.stream, seq=cut)
            except NATS_ERRORS as exc:
                raise unavailable(exc, f"purge of {self.stream}") from exc
        self.client.run(purge())
        return self.view.trim(cut)

    def rebase_empty(self, base: int) -> None:
        self._check_open()
        if self.view.held_records or self.view.end != self.view.start or self._pending:
            raise ValueError(f"partition {self.topic}/{self.index} holds or held records")

        async def publish() -> None:
            headers = {H_BASE: str(base), H_COUNT: "0",
                       Header.EXPECTED_LAST_SEQUENCE: str(self.view.last_seq)}
            try:
                ack = await self.client.js.publish(self.subject, b"", headers=headers)
            except NATS_ERRORS as exc:
                raise unavailable(exc, f"rebase of {self.stream}") from exc
            async with self._apply_lock:
                self._apply(Piece(ack.seq, base, 0, 0, 0), None)
        self.client.run(publish())
        with self._lock:
            self._next = base
