"""A segment: one ``.log`` file of batches plus its sparse ``.index``.

Strategy: the segment owns the bytes and nothing else. It appends pre-encoded batches,
reads batches back with every CRC checked, truncates a torn tail in ``recover()``, and
skips over corrupt batches on read by re-synchronising on the next valid header. It does
not know about retention, commit policy or its neighbours; the Log tells it its
``next_offset`` when that is known from the following segment.

Damage: the last (active) segment can have a torn tail after a crash, which ``recover()``
truncates. A sealed segment was fsynced whole when it was rolled, so damage in it is
corruption: it is never truncated, and reads skip and report the bad batches.

Concurrency: one writer (the Log, under its lock). Readers in other threads only call
``read_batches`` with a ``limit`` snapshot taken under the Log's lock, so they never see a
batch that is being written; loading or rebuilding the index on first read is serialised
by the segment's own lock. The read file object stays open while any reader holds the
segment, even after ``delete()`` unlinks the files, so a concurrent delete cannot pull a
file descriptor from under a reader.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ._errors import CorruptBatch, DiskFull
from ._files import INDEX_SUFFIX, LOG_SUFFIX, segment_name
from ._index import OffsetIndex
from ._index_cache import LOADED
from ._records import HEADER_SIZE, BatchInfo, parse_header, verify_batch
from ._resync import byte_scan, resync

_READ_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class CorruptRange:
    """Offsets [first, last] lost to a bad batch at ``position`` spanning ``size`` bytes."""

    segment: int
    position: int
    size: int
    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1


class Segment:
    """File + index. Not thread-safe for writers; see module docstring for readers."""

    def __init__(
        self, directory: Path, base_offset: int, index_interval: int, *, read_only: bool = False
    ) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self.log_path = directory / segment_name(base_offset, LOG_SUFFIX)
        self.index = OffsetIndex(directory / segment_name(base_offset, INDEX_SUFFIX), base_offset)
        self.index_interval = index_interval
        self.read_only = read_only
        mode = "rb" if read_only else "a+b"
        self._file = open(self.log_path, mode, buffering=0)  # noqa: SIM115 - closed in close()
        self.size = os.fstat(self._file.fileno()).st_size
        self.next_offset = base_offset
        self.valid_size = self.size
        #: damage skipped (not truncated) by the last recover(): the Log reports it
        self.recovered_damage: list[CorruptRange] = []
        self._since_index = 0
        self._lock = threading.Lock()
        self._deleted = False
        #: no more appends: its index may leave memory when no reader uses it (_index_cache)
        self.sealed = False
        # A new segment's index is built in memory by append(); a stale file is dropped.
        self._index_loaded = self.size == 0
        if self.size == 0 and not read_only:
            self.index.delete()

    # -- writing -------------------------------------------------------------------------

    def append(self, data: bytes, base_offset: int, count: int) -> int:
        """Append one encoded batch; returns its position. Rolls back on ENOSPC."""
        position = self.size
        fd = self._file.fileno()
        try:
            written = os.write(fd, data)
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError as exc:
            self._rollback(position)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(f"no space left writing {self.log_path.name}") from exc
            raise
        self.size = position + len(data)
        self.next_offset = base_offset + count
        if self._since_index <= 0 or position == 0:
            self.index.add(base_offset, position)
            self._since_index = self.index_interval
        self._since_index -= len(data)
        return position

    def _rollback(self, position: int) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self._file.fileno(), position)

    def flush(self) -> None:
        """fdatasync the data (appends change only the size, which fdatasync covers); the
        index is derived and written without a sync."""
        os.fdatasync(self._file.fileno())

    def seal(self) -> None:
        """Flush, persist the index, drop it from memory (readers: ``ensure_index``)."""
        self.flush()
        self.index.write_pending()
        if self.index.saved:  # else (a full disk) the memory holds the only copy
            with self._lock:
                self.index = OffsetIndex(self.index.path, self.base_offset)
                self._index_loaded = False
                self.sealed = True

    def index_bytes(self) -> int:
        return len(self.index) * 8

    def drop_index(self) -> None:
        """Forget the index in memory when its file has it all (``_index_cache``); a
        reader between its ``ensure_index`` and its lookup then scans from the start of
        the file, which is slower and as correct (the index only says where to start)."""
        with self._lock:
            if self.sealed and self._index_loaded and self.index.saved:
                self.index = OffsetIndex(self.index.path, self.base_offset)
                self._index_loaded = False

    def truncate(self, position: int) -> None:
        os.ftruncate(self._file.fileno(), position)
        self.size = position
        self.index.truncate_to(position)

    # -- recovery ------------------------------------------------------------------------

    def ensure_index(self) -> None:
        """Load the index, or rebuild it by a scan when missing, inconsistent or wrong."""
        if not self._index_loaded:
            with self._lock:
                if not self._index_loaded:
                    if not self._load_index():
                        self._rebuild_index()
                        if not self.read_only and not self._deleted:
                            self.index.rewrite()
                    self._index_loaded = True
        if self.sealed:
            LOADED.touch(self)

    def _load_index(self) -> bool:
        """Load the file when it is consistent and every entry names the batch at its
        position (a header with that base offset); the CRCs are checked by the readers."""
        if not self.index.load(self.size):
            return False
        fd = self._file.fileno()
        for rel, pos in zip(self.index.offsets, self.index.positions, strict=True):
            try:
                info = parse_header(os.pread(fd, HEADER_SIZE, pos), pos)
            except CorruptBatch:
                info = None
            if info is None or info.base_offset != self.base_offset + rel:
                self.index.clear()
                return False
        return True

    def _rebuild_index(self) -> None:
        self.index.clear()
        since = 0
        for info in self._good_batches():
            if since <= 0:
                self.index.add(info.base_offset, info.position)
                since = self.index_interval
            since -= info.size

    def _good_batches(self) -> Iterator[BatchInfo]:
        """Every verifiable batch of the file in order, stepping over damage."""
        position, expected = 0, self.base_offset
        while position < self.size:
            for item in self.scan(position):
                if isinstance(item, CorruptBatch):
                    found = byte_scan(self, item.position + 1, self.size, expected, 2**64)
                    if found is None:
                        return
                    position, expected = found
                    break
                yield item
                position, expected = item.position + item.size, item.next_offset
            else:
                return

    def recover(self, *, truncate: bool = True, sealed: bool = False) -> int:
        """Verify every batch from the last index entry that is known good, truncate a
        torn or corrupt tail, rebuild the index past that point, and set ``next_offset``.

        Returns the number of bytes truncated (or, with ``truncate=False``, the number of
        bytes that would be: a read-only open leaves the files alone and reads up to
        ``valid_size``).

        ``sealed=True`` is for a segment that is not the last: it was fsynced whole when
        it was rolled, so it has no torn tail and is never truncated (damage in it is
        skipped and reported by reads); only its index is checked or rebuilt, and
        ``next_offset`` is left as the Log set it. Returns 0.
        """
        if sealed:
            self._index_loaded = False
            self.sealed = True
            self.ensure_index()
            return 0
        loaded = self._load_index()
        start_offset, position = (self.base_offset, 0)
        if loaded and len(self.index):
            # Trust only entries we can verify: start from the last one whose batch checks out.
            for i in range(len(self.index) - 1, -1, -1):
                off = self.base_offset + self.index.offsets[i]
                pos = self.index.positions[i]
                info = self._batch_at(pos)
                if info is not None and info.base_offset == off:
                    start_offset, position = off, pos
                    del self.index.offsets[i + 1 :]
                    del self.index.positions[i + 1 :]
                    break
            else:
                self.index.clear()
        else:
            self.index.clear()
        expected = start_offset
        end = position
        since = self.index_interval
        self.recovered_damage.clear()
        while True:
            bad_at = None
            for item in self.scan(position):
                if isinstance(item, CorruptBatch) or item.base_offset != expected:
                    bad_at = item.position
                    break
                if since <= 0 or not len(self.index):
                    self.index.add(item.base_offset, item.position)
                    since = self.index_interval
                since -= item.size
                expected = item.next_offset
                end = item.position + item.size
            if bad_at is None:
                break
            # Damage followed by good batches is not a torn tail: those batches may have
            # been fsynced and acknowledged. Skip the damage (its offsets stay reserved and
            # are reported) and go on; only a tail with nothing valid after it is cut.
            nxt = byte_scan(self, bad_at + 1, self.size, expected, 2**63)
            if nxt is None:
                break
            position, next_off = nxt
            if next_off > expected:
                self.recovered_damage.append(CorruptRange(
                    self.base_offset, bad_at, position - bad_at, expected, next_off - 1))
            self.index.add(next_off, position)
            since = self.index_interval
            expected = next_off
        truncated = self.size - end
        self.valid_size = end
        if not truncate:
            self.size = end
            self._index_loaded = True
            self.next_offset = expected
            return truncated
        if truncated:
            os.ftruncate(self._file.fileno(), end)
            os.fsync(self._file.fileno())
            self.size = end
        self.index.rewrite()
        self._index_loaded = True
        self._since_index = since
        self.next_offset = expected
        return truncated

    def _batch_at(self, position: int) -> BatchInfo | None:
        """The verified batch header at ``position``, or None."""
        head = os.pread(self._file.fileno(), HEADER_SIZE, position)
        try:
            info = parse_header(head, position)
        except CorruptBatch:
            return None
        if info.position + info.size > self.size:
            return None
        data = os.pread(self._file.fileno(), info.size, position)
        try:
            verify_batch(data, info)
        except CorruptBatch:
            return None
        return info

    # -- reading -------------------------------------------------------------------------

    def scan(self, position: int, limit: int | None = None) -> Iterator[BatchInfo | CorruptBatch]:
        """Yield every batch from ``position`` (a batch boundary) with its CRC checked.

        Stops after the first CorruptBatch it yields; callers decide whether to resync.
        """
        for item in self._iter_raw(position, limit):
            if isinstance(item, CorruptBatch):
                yield item
                return
            yield item[0]

    def _iter_raw(
        self, position: int, limit: int | None
    ) -> Iterator[tuple[BatchInfo, memoryview] | CorruptBatch]:
        limit = self.size if limit is None else limit
        fd = self._file.fileno()
        buf = b""
        buf_start = position
        while position < limit:
            rel = position - buf_start
            if len(buf) - rel < HEADER_SIZE:
                buf = os.pread(fd, min(_READ_CHUNK, limit - position), position)
                buf_start, rel = position, 0
                if len(buf) < HEADER_SIZE:
                    yield CorruptBatch("truncated batch header", position=position)
                    return
            try:
                info = parse_header(memoryview(buf)[rel : rel + HEADER_SIZE], position)
            except CorruptBatch as exc:
                yield exc
                return
            if position + info.size > limit:
                yield CorruptBatch(
                    "batch runs past the end of the segment",
                    position=position,
                    first_offset=info.base_offset,
                )
                return
            if len(buf) - rel < info.size:
                buf = os.pread(fd, max(info.size, min(_READ_CHUNK, limit - position)), position)
                buf_start, rel = position, 0
            view = memoryview(buf)[rel : rel + info.size]
            try:
                verify_batch(view, info)
            except CorruptBatch as exc:
                yield exc
                return
            yield info, view
            position += info.size

    def read_batches(
        self, offset: int, limit: int, end_offset: int
    ) -> Iterator[tuple[BatchInfo, memoryview] | CorruptRange]:
        """Batches holding offsets >= ``offset`` up to file position ``limit``.

        A corrupt batch is reported as a CorruptRange (the offsets it covered, found from
        the next good batch or ``end_offset``) and reading continues after it. Offsets the
        file lacks before ``end_offset`` (a sealed segment cut short) are reported as a
        range of size 0 at the end. Ranges wholly below ``offset`` are not reported.
        """
        self.ensure_index()
        expected, position = self.index.lookup(offset)
        at_start = True
        while position < limit:
            for item in self._iter_raw(position, limit):
                if isinstance(item, CorruptBatch):
                    if at_start and position:
                        # The indexed batch is damaged: start from the entry before, so
                        # the damage is met (and reported) from the good batch before it.
                        expected, position = self.index.lookup(expected - 1)
                        break
                    at_start = False
                    nxt = resync(self, item.position + 1, limit, expected, end_offset)
                    next_pos, next_off = (limit, end_offset) if nxt is None else nxt
                    if next_off > max(expected, offset):
                        yield CorruptRange(
                            self.base_offset, item.position, next_pos - item.position,
                            expected, next_off - 1,
                        )
                    position, expected = next_pos, max(expected, next_off)
                    break
                at_start = False
                info, view = item
                if info.next_offset > offset:
                    yield info, view
                expected = info.next_offset
                position = info.position + info.size
            else:
                break
        if expected < end_offset and end_offset > offset:
            # The file ends before the offsets the next segment says this one holds.
            yield CorruptRange(self.base_offset, position, 0, expected, end_offset - 1)

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def mtime(self) -> float:
        return os.fstat(self._file.fileno()).st_mtime

    def close(self) -> None:
        LOADED.forget(self)
        if not self._file.closed:
            if not self.read_only:
                self.index.write_pending()
            self._file.close()

    def delete(self) -> None:
        """Unlink both files; the read handle closes once no reader holds the segment."""
        LOADED.forget(self)
        with self._lock:  # a reader rebuilding the index must not write it back now
            self._deleted = True
            for p in (self.log_path, self.index.path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)

    def __del__(self) -> None:
        f = getattr(self, "_file", None)
        if f is not None and not f.closed:
            f.close()
