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

``hurry`` lets a caller that knows no further append is coming (every producer it serves
is waiting for this very commit: closed-loop publishers) start the fsync of what is
pending without waiting out the spacing. It never makes anything durable sooner than an
fsync does, and with nothing pending it does nothing, so a stray call costs no fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable

from ._config import CommitMode, LogConfig


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
        _wake_all(ready, None)

    def fail(self, error: BaseException) -> None:
        """Wake every waiter with ``error`` (the log was closed or cannot fsync)."""
        with self._cond:
            self._error = error
            self._cond.notify_all()
            pending, self._futures = self._futures, []
        _wake_all(pending, error)

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


def _wake_all(
    woken: list[tuple[int, int, asyncio.AbstractEventLoop, asyncio.Future[None]]],
    error: BaseException | None,
) -> None:
    """Resolve the futures in their loops, with one ``call_soon_threadsafe`` per loop
    (each is a write to the loop's self-pipe and a wake-up): an fsync that covers a
    hundred waiting requests wakes the event loop once, not a hundred times. A waiter
    that gave up (cancelled, maybe with its loop closed since) is skipped: it must not
    turn an fsync into a failure of the log."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for _, _, loop, fut in woken:
        if not fut.done():
            by_loop.setdefault(loop, []).append(fut)
    for loop, futs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to wake
            loop.call_soon_threadsafe(_resolve, futs, error)


def _resolve(futs: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for fut in futs:
        if fut.done():
            continue
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
        self._hurry = False
        self._stopping = False
        #: fsyncs started early by ``hurry`` (also counted in the log's fsyncs)
        self.hurried = 0
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

    def next_commit_at(self) -> float:
        """Monotonic time before which no fsync starts unless hurried or ``max_records``
        are pending (the spacing after the last one; in the past after a quiet spell)."""
        return self._last_flush_at + self._interval

    def hurry(self) -> None:
        """Start the fsync of what is pending now, not at the end of the spacing (the
        caller knows nothing more will come until this commit); no-op if nothing is."""
        with self._cond:
            if self._pending and not self._hurry:
                self._hurry = True
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
                    and not self._hurry
                    and self._pending < self._max_records
                    and (remaining := deadline - time.monotonic()) > 0
                ):
                    self._cond.wait(remaining)
                if self._hurry:
                    self._hurry = False
                    if time.monotonic() < deadline:
                        self.hurried += 1
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


class SharedFlusher:
    """One flusher thread for many logs (a broker's partitions).

    A log opened with ``Log(..., flusher=shared)`` hands its group commit to this thread
    instead of starting its own. The spacing rule is ``GroupCommitter``'s (``hurry``
    included: a member's hurry starts the next pass at once), applied to the whole set:
    a pass starts at once after a quiet spell and at least ``interval_ms`` after the
    previous pass started (or when ``max_records`` are pending in all), and
    fsyncs, one after the other, every log that has appended since it was last flushed.
    Each log still advances its own waiters only after its own fsync, so "durable in
    every partition touched" holds exactly as with one flusher per log. What it saves:
    one sleeping thread per log, and per commit interval one wake-up of one thread
    instead of one per busy log (each a GIL hand-off in the serving process).
    """

    def __init__(self, interval_ms: float, max_records: int = 10_000,
                 name: str = "shared-log-flusher") -> None:
        self._interval = interval_ms / 1000.0
        self._max_records = max_records
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the flusher waits on this
        self._idle = threading.Condition(self._lock)  # leaving members wait on this
        self._dirty: dict[FlushMember, None] = {}  # insertion ordered, no duplicates
        self._pending = 0
        self._first_pending_at = 0.0
        self._last_pass_at = float("-inf")
        self._flushing: FlushMember | None = None
        self._hurry = False
        self._stopping = False
        #: passes made (each fsyncs the logs with pending appends)
        self.passes = 0
        #: passes started early by a member's ``hurry``
        self.hurried = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def register(self, flush: Callable[[], None],
                 on_error: Callable[[BaseException], None]) -> FlushMember:
        """A member for one log; it has ``GroupCommitter``'s ``appended``/``stop``."""
        return FlushMember(self, flush, on_error)

    def _appended(self, member: FlushMember, records: int) -> None:
        with self._lock:
            if member.stopped:
                return
            idle = self._pending == 0
            if idle:
                self._first_pending_at = time.monotonic()
            self._pending += records
            self._dirty[member] = None
            if idle or self._pending >= self._max_records:
                self._wake.notify()

    def next_commit_at(self) -> float:
        return self._last_pass_at + self._interval

    def _hurried(self, member: FlushMember) -> None:
        with self._lock:
            if member in self._dirty and not self._hurry:
                self._hurry = True
                self._wake.notify()

    def _leave(self, member: FlushMember) -> None:
        """After this returns the flusher never calls ``member``'s flush again."""
        with self._lock:
            member.stopped = True
            self._dirty.pop(member, None)
            while self._flushing is member:
                self._idle.wait()

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._pending == 0 and not self._stopping:
                    self._wake.wait()
                if self._pending == 0:  # stopping, nothing left to flush
                    return
                deadline = max(self._first_pending_at, self._last_pass_at + self._interval)
                while (
                    not self._stopping
                    and not self._hurry
                    and self._pending < self._max_records
                    and (remaining := deadline - time.monotonic()) > 0
                ):
                    self._wake.wait(remaining)
                if self._hurry:
                    self._hurry = False
                    if time.monotonic() < deadline:
                        self.hurried += 1
                members = list(self._dirty)
                self._dirty.clear()
                self._pending = 0
                self._last_pass_at = time.monotonic()
                self.passes += 1
            for member in members:
                with self._lock:
                    if member.stopped:
                        continue
                    self._flushing = member
                try:
                    member.flush()
                except BaseException as exc:  # reported to that log's waiters; go on
                    member.on_error(exc)
                finally:
                    with self._lock:
                        self._flushing = None
                        self._idle.notify_all()

    def stop(self) -> None:
        """Flush what is pending, then end the thread (close the logs first or after:
        a closed log's member has left)."""
        with self._lock:
            self._stopping = True
            self._wake.notify()
        self._thread.join()


class FlushMember:
    """One log's place in a ``SharedFlusher`` (the interface of ``GroupCommitter``)."""

    __slots__ = ("_owner", "flush", "on_error", "stopped")

    def __init__(self, owner: SharedFlusher, flush: Callable[[], None],
                 on_error: Callable[[BaseException], None]) -> None:
        self._owner = owner
        self.flush = flush
        self.on_error = on_error
        self.stopped = False

    def appended(self, records: int) -> None:
        self._owner._appended(self, records)

    def hurry(self) -> None:
        self._owner._hurried(self)

    def next_commit_at(self) -> float:
        return self._owner.next_commit_at()

    @property
    def hurried(self) -> int:
        return self._owner.hurried

    def stop(self) -> None:
        self._owner._leave(self)


class CommitControl:
    """The durability face of ``Log`` (a mixin): waiting for "my offset is durable", and
    the two calls that let a writer work with the commit spacing. Uses the log's
    ``config``, ``_waiters`` and ``_committer`` (None unless the mode is GROUP)."""

    config: LogConfig
    _waiters: DurabilityWaiters
    _committer: GroupCommitter | FlushMember | None

    def wait_durable(self, offset: int, timeout: float | None = None) -> bool:
        """Block until ``offset`` is durable; False on timeout."""
        if self.config.commit.mode is CommitMode.OS:
            return True
        return self._waiters.wait(offset, timeout)

    async def wait_durable_async(self, offset: int) -> None:
        """Wait in asyncio until ``offset`` is durable (many callers share one fsync)."""
        if self.config.commit.mode is CommitMode.OS:
            return
        await self._waiters.future(offset)

    def durable_future(self, offset: int) -> asyncio.Future[None]:
        """``wait_durable_async`` as a plain future of the running loop (no task per
        wait): done once ``offset`` is durable, or with the log's fsync error."""
        if self.config.commit.mode is CommitMode.OS:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut
        return self._waiters.future(offset)

    def commit_due_at(self) -> float:
        """Group commit: the ``time.monotonic()`` before which no fsync starts (unless
        hurried or ``max_records`` are pending), so an append made until then is in the
        same fsync as one made now. In the past after a quiet spell; 0.0 in other modes."""
        return self._committer.next_commit_at() if self._committer is not None else 0.0

    def hurry_commit(self) -> None:
        """Group commit: fsync what is appended as soon as the flusher can, without
        waiting out ``interval_ms`` (the caller knows no more appends are coming until
        this commit, see ``_commit``). Durability waits for the fsync as always; nothing
        pending, or another commit mode: nothing happens."""
        if self._committer is not None:
            self._committer.hurry()

    @property
    def hurried_commits(self) -> int:
        """Group commits started early by ``hurry_commit`` (shared flusher: all its logs)."""
        return self._committer.hurried if self._committer is not None else 0
