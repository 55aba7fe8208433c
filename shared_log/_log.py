"""The log: an ordered set of segments with one writer, many readers.

Strategy: the Log decides *which* segment (roll, retention, full policy, recovery point)
and *when* data is durable (commit policy); the Segment does the bytes. Offsets are dense,
start at the first segment's base offset and are never reused: deleting segments moves
the start forward, and an empty log after deletions keeps its next offset in the name of
its empty active segment.

Recovery on open reads the ``recovery-point`` checkpoint (all offsets below it were
fsynced when it was written: at every roll and at close) and only looks at segments from
the one holding that offset, so a large log opens in time proportional to one segment.
Of those, only the last is verified batch by batch and may lose a torn tail; the others
were fsynced whole when rolled and only get their index checked.

Concurrency: one writer thread/task calls append, flush, delete_before and the retention
methods. Readers in other threads may call read/fetch concurrently: they take the lock
only to snapshot the segment list and sizes. The group-commit flusher is a thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from ._commit import (
    CommitControl,
    DurabilityWaiters,
    FlushMember,
    GroupCommitter,
    SharedFlusher,
)
from ._config import CommitMode, LogConfig
from ._errors import DiskFull, LogClosed, LogFull
from ._fetch import fetch_records
from ._files import (
    fsync_dir,
    write_checkpoint,
)
from ._records import Record, StoredRecord, encode_batch, encode_framed
from ._recovery import RECOVERY_POINT, open_segments
from ._results import FetchResult, LogStats
from ._segment import CorruptRange, Segment
from ._space import SpaceControl


class Log(CommitControl, SpaceControl):
    """A segmented, checksummed, append-only log in one directory."""

    def __init__(self, directory: str | os.PathLike[str], config: LogConfig | None = None,
                 *, read_only: bool = False, flusher: SharedFlusher | None = None) -> None:
        self.directory, self.flusher = Path(directory), flusher
        self.config = config or LogConfig()
        self.read_only = read_only
        self.stats = LogStats()
        self._lock = threading.RLock()
        self._flush_lock = threading.Lock()
        #: clear while a flush holds a segment outside ``_lock`` (see ``_drop_for_disk``)
        self._flush_idle = threading.Event()
        self._flush_idle.set()
        self._closed = False
        self._failed: BaseException | None = None
        #: called as ``on_drop(base, next)`` for every segment the full policy deletes
        #: (offsets base..next-1), under the log's lock, from the appending thread: an
        #: owner that knows which offsets were delivered elsewhere counts the real losses.
        self.on_drop: Callable[[int, int], None] | None = None
        #: called as ``on_append(base, records, nbytes)`` after each ``append`` (not
        #: ``append_framed``), from the appending thread; it must not raise (it is done)
        self.on_append: Callable[[int, Sequence[Record], int], None] | None = None
        self._seen_corrupt: set[tuple[int, int]] = set()
        if not read_only:
            self.directory.mkdir(parents=True, exist_ok=True)
        self._segments: list[Segment] = open_segments(
            self.directory, self.config.index_interval_bytes, self.read_only, self.stats,
            self._note_corrupt)
        self._bases: list[int] = [seg.base_offset for seg in self._segments]
        self._size = sum(s.size for s in self._segments)
        self._waiters = DurabilityWaiters()
        self._waiters.advance(self.end_offset)  # everything recovered is on disk
        self._committer: GroupCommitter | FlushMember | None = None
        if not read_only and self.config.commit.mode is CommitMode.GROUP:
            c = self.config.commit  # a shared flusher has its own interval
            self._committer = flusher.register(self.flush, self._flush_failed) if flusher \
                else GroupCommitter(self.flush, c.interval_ms, c.max_records, self._flush_failed)

    # -- properties ----------------------------------------------------------------------

    @property
    def start_offset(self) -> int:
        return self._segments[0].base_offset

    @property
    def end_offset(self) -> int:
        """The next offset to be written (Kafka's log end offset)."""
        return self._segments[-1].next_offset

    @property
    def durable_offset(self) -> int:
        """Every offset below this is on disk under the commit policy."""
        if self.config.commit.mode is CommitMode.OS:
            return self.end_offset
        return self._waiters.durable_end

    @property
    def size_bytes(self) -> int:
        return self._size

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def failed(self) -> BaseException | None:
        """The fsync error that stopped durability, if any (the log refuses appends)."""
        return self._failed

    def segments_info(self) -> list[tuple[int, int, int]]:
        """(base_offset, next_offset, size_bytes) of every segment, oldest first."""
        with self._lock:
            return [(s.base_offset, s.next_offset, s.size) for s in self._segments]

    # -- writing -------------------------------------------------------------------------

    def append(self, records: Sequence[Record]) -> tuple[int, int]:
        """Append one batch; returns (first_offset, last_offset).

        With the EVERY_BATCH policy the batch is durable on return; with GROUP, await
        ``wait_durable_async(last_offset)`` (or ``wait_durable``) before acknowledging it.
        Raises LogFull (reject_new, or a batch larger than the cap) and DiskFull (ENOSPC;
        under drop_oldest only once the log has no segment of its own left to delete), in
        both cases with nothing written.
        """
        return self._append(len(records), lambda base: encode_batch(base, records), records)

    def append_framed(self, body: bytes, count: int, max_timestamp: int) -> tuple[int, int]:
        """``append`` for ``count`` records already framed in ``body`` (see
        ``encode_framed``); same durability, limits and errors."""
        return self._append(count, lambda base: encode_framed(base, count, max_timestamp, body))

    def _append(self, n: int, encode: Callable[[int], bytes],
                records: Sequence[Record] = ()) -> tuple[int, int]:
        with self._lock:
            self._check_writable()
            base = self.end_offset
            data = encode(base)
            try:
                while True:
                    try:
                        self._put(data, base, n)
                        break
                    except DiskFull:
                        if not self._drop_for_disk():
                            raise
            except LogFull:  # and DiskFull: nothing was appended
                self.stats.rejected_batches += 1
                self.stats.rejected_records += n
                raise
            self._size += len(data)
            self.stats.appended_records += n
            self.stats.appended_batches += 1
        if records and self.on_append is not None:  # before the commit can cover them
            self.on_append(base, records, len(data))
        mode = self.config.commit.mode
        if mode is CommitMode.EVERY_BATCH:
            self.flush()
        elif self._committer is not None:
            self._committer.appended(n)
        return base, base + n - 1

    def _put(self, data: bytes, base: int, n: int) -> None:
        try:
            self._make_room(len(data), n)
            active = self._segments[-1]
            if active.size and active.size + len(data) > self.config.segment_bytes:
                self._roll()
                active = self._segments[-1]
            active.append(data, base, n)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # Rolling needs space too (index, recovery point): nothing was appended.
            raise DiskFull(f"no space left in {self.directory}: {exc}") from exc

    def _check_writable(self) -> None:
        if self._closed:
            raise LogClosed(f"log {self.directory} is closed")
        if self.read_only:
            raise LogClosed(f"log {self.directory} is open read-only")
        if self._failed is not None:
            raise LogClosed(f"log {self.directory} failed to fsync: {self._failed}")

    def _roll(self) -> None:
        """Seal the active segment (fsync) and start a new one at the end offset."""
        old = self._segments[-1]
        try:
            old.seal()
        except OSError as exc:
            self._flush_failed(exc)
            raise
        self.stats.fsyncs += 1
        base = old.next_offset
        seg = Segment(self.directory, base, self.config.index_interval_bytes)
        seg.next_offset = base
        self._segments.append(seg)
        self._bases.append(base)
        self._waiters.advance(base)
        try:
            write_checkpoint(self.directory / RECOVERY_POINT, {"offset": base})
        except OSError:
            # The recovery point is a hint (a stale one only makes the next open look at
            # more segments), but the new segment's directory entry must be durable.
            fsync_dir(self.directory)

    def roll(self) -> None:
        """Seal the active segment now if it holds anything (tests, tools, retention)."""
        with self._lock:
            self._check_writable()
            if self._segments[-1].size:
                self._roll()

    def flush(self) -> None:
        """Return once everything appended before the call is on disk."""
        with self._flush_lock:
            with self._lock:
                if self._closed:
                    return
                if self._failed is not None:
                    raise LogClosed(f"log {self.directory} failed to fsync: {self._failed}")
                seg = self._segments[-1]
                end = seg.next_offset
                if end <= self._waiters.durable_end:
                    return
                self._flush_idle.clear()
            try:
                seg.flush()
            except OSError as exc:
                self._flush_failed(exc)
                raise
            finally:
                # Let go of the segment before waiting for the lock again: if a disk-full
                # append deleted it meanwhile, its file (and its space) goes now.
                del seg
                self._flush_idle.set()
            with self._lock:
                self.stats.fsyncs += 1
            self._waiters.advance(end)

    def _flush_failed(self, exc: BaseException) -> None:
        """Stop for good: after a failed fsync the kernel may have dropped the dirty pages,
        so no later fsync can vouch for them (PostgreSQL's "fsyncgate")."""
        if self._failed is None:
            self._failed = exc
        self._waiters.fail(LogClosed(f"log {self.directory} failed to fsync: {exc}"))

    # -- reading -------------------------------------------------------------------------

    def fetch(self, offset: int, max_records: int = 1000, max_bytes: int = 1 << 20) -> FetchResult:
        """Records from ``offset`` on, whole batches, at least one batch if any exists.

        Raises OffsetOutOfRange below the start or above the end; at the end returns no
        records. Corrupt batches are skipped, reported in ``skipped`` and counted.
        Safe from reader threads (``_fetch``)."""
        if max_records < 1 or max_bytes < 1:
            raise ValueError("max_records and max_bytes must be >= 1")
        with self._lock:
            if self._closed:
                raise LogClosed(f"log {self.directory} is closed")
            segments = list(self._segments)
            limits = [s.size for s in segments]
            ends = [s.next_offset for s in segments]
        return fetch_records(segments, limits, ends, offset, max_records, max_bytes,
                             self._note_corrupt)

    def read(self, offset: int, max_records: int = 1000, max_bytes: int = 1 << 20
             ) -> list[StoredRecord]:
        """The records of ``fetch``."""
        return self.fetch(offset, max_records, max_bytes).records

    def _note_corrupt(self, item: CorruptRange) -> None:
        key = (item.segment, item.position)
        with self._lock:
            if key in self._seen_corrupt:
                return
            self._seen_corrupt.add(key)
            self.stats.corrupt_batches += 1
            self.stats.corrupt_records += item.count
            self.stats.corrupt_ranges.append(item)

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Flush, persist the recovery point and close. Idempotent.

        The log is closed even when the final fsync fails; that error is then raised.
        """
        if self._closed:
            return
        if self._committer is not None:
            self._committer.stop()
        error: OSError | None = None
        with self._lock:
            if not self.read_only and self._failed is None:
                try:
                    self._segments[-1].seal()
                except OSError as exc:
                    self._flush_failed(exc)
                    error = exc
                else:
                    # A hint: if it cannot be written, the next open looks at more segments.
                    with contextlib.suppress(OSError):
                        write_checkpoint(self.directory / RECOVERY_POINT,
                                         {"offset": self.end_offset})
                    self._waiters.advance(self.end_offset)
            self._closed = True
            for s in self._segments:
                s.close()
        self._waiters.fail(LogClosed(f"log {self.directory} is closed"))
        if error is not None:
            raise error

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Log({str(self.directory)!r}, start={self.start_offset}, "
                f"end={self.end_offset}, segments={len(self._segments)})")

