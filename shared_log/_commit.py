"""Group commit: one fsync for many appends, and a way to wait for "my offset is durable".

Strategy: appends only write to the page cache; a single flusher thread turns them into
durable data. It sleeps until something is pending, then fsyncs at once if the last fsync
started at least ``interval_ms`` ago, and otherwise lets appends gather until then (or
until ``max_records`` are pending). So ``interval_ms`` is the least spacing between
fsyncs, not a delay: a lone append after a quiet spell is durable after one fsync, while a
steady stream still gets at most one fsync per interval, as with a fixed window. While an
fsync runs, new appends gather for the next one, so under load the fsync rate adapts to
the disk. Waiters are a heap of (offset, wakeup) so that one fsync wakes everyone it
covers, threads through a Condition and asyncio tasks through their loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable


class DurabilityWaiters:
    """Threads and asyncio futures waiting for ``durable_end > offset``."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._durable_end = 0
        self._futures: list[tuple[int, int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._error: BaseException | None = None

    @property
    def durable_end(self) -> int:
        return self._durable_end

    def advance(self, durable_end: int) -> None:
        with self._cond:
            if durable_end <= self._durable_end:
                return
            self._durable_end = durable_end
            self._cond.notify_all()
            ready = []
            while self._futures and self._futures[0][0] < durable_end:
                ready.append(heapq.heappop(self._futures))
        for _, _, loop, fut in ready:
            _wake(loop, fut, None)

    def fail(self, error: BaseException) -> None:
        """Wake every waiter with ``error`` (the log was closed or cannot fsync)."""
        with self._cond:
            self._error = error
            self._cond.notify_all()
            pending, self._futures = self._futures, []
        for _, _, loop, fut in pending:
            _wake(loop, fut, error)

    def wait(self, offset: int, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._durable_end <= offset:
                if self._error is not None:
                    raise self._error
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def future(self, offset: int) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._cond:
            if self._error is not None:
                fut.set_exception(self._error)
            elif self._durable_end > offset:
                fut.set_result(None)
            else:
                heapq.heappush(self._futures, (offset, next(self._seq), loop, fut))
        return fut


def _wake(
    loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None], error: BaseException | None
) -> None:
    """Resolve ``fut`` in its loop. A waiter that gave up (cancelled, maybe with its loop
    closed since) is skipped: it must not turn an fsync into a failure of the log."""
    if fut.done():
        return
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to wake
        loop.call_soon_threadsafe(_resolve, fut, error)


def _resolve(fut: asyncio.Future[None], error: BaseException | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)


class GroupCommitter:
    """The flusher thread. ``flush`` is the log's "fsync what is appended" callable."""

    def __init__(
        self,
        flush: Callable[[], None],
        interval_ms: float,
        max_records: int,
        on_error: Callable[[BaseException], None],
    ) -> None:
        self._flush = flush
        self._interval = interval_ms / 1000.0
        self._max_records = max_records
        self._on_error = on_error
        self._cond = threading.Condition()
        self._pending = 0
        self._first_pending_at = 0.0
        self._last_flush_at = float("-inf")  # monotonic start of the last fsync
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="shared-log-flusher", daemon=True)
        self._thread.start()

    def appended(self, records: int) -> None:
        with self._cond:
            idle = self._pending == 0
            if idle:
                self._first_pending_at = time.monotonic()
            self._pending += records
            # The flusher waits for the first pending record, then for its deadline or
            # max_records: waking it for anything else would only make it sleep again
            # (a thread switch per append).
            if idle or self._pending >= self._max_records:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending == 0 and not self._stopping:
                    self._cond.wait()
                if self._stopping and self._pending == 0:
                    return
                deadline = max(self._first_pending_at, self._last_flush_at + self._interval)
                while (
                    not self._stopping
                    and self._pending < self._max_records
                    and (remaining := deadline - time.monotonic()) > 0
                ):
                    self._cond.wait(remaining)
                self._pending = 0
                self._last_flush_at = time.monotonic()
            try:
                self._flush()
            except BaseException as exc:  # reported to waiters; the thread goes on
                self._on_error(exc)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()
