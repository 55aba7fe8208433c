"""A segment: one ``.log`` file of batches plus its sparse ``.index``.

Strategy: the segment owns the bytes and nothing else. It appends pre-encoded batches,
reads batches back with every CRC checked, truncates a torn tail in ``recover()``, and
skips over corrupt batches on read by re-synchronising on the next valid header. It does
not know about retention, commit policy or its neighbours; the Log tells it its
``next_offset`` when that is known from the following segment.

Concurrency: one writer (the Log, under its lock). Readers in other threads only call
``read_batches`` with a ``limit`` snapshot taken under the Log's lock, so they never see a
batch that is being written. The read file object stays open while any reader holds the
segment, even after ``delete()`` unlinks the files, so a concurrent delete cannot pull a
file descriptor from under a reader.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ._errors import CorruptBatch, DiskFull
from ._files import INDEX_SUFFIX, LOG_SUFFIX, segment_name
from ._index import OffsetIndex
from ._records import HEADER_SIZE, BatchInfo, parse_header, verify_batch

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
        self._since_index = 0
        self._index_loaded = False

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
        try:
            os.ftruncate(self._file.fileno(), position)
        except OSError:
            pass

    def flush(self) -> None:
        """fsync the data; the index is derived and written without fsync."""
        os.fsync(self._file.fileno())

    def seal(self) -> None:
        """Called when the segment stops being active: flush and persist the index."""
        self.flush()
        self.index.write_pending()

    def truncate(self, position: int) -> None:
        os.ftruncate(self._file.fileno(), position)
        self.size = position
        self.index.truncate_to(position)

    # -- recovery ------------------------------------------------------------------------

    def ensure_index(self) -> None:
        """Load the index, or rebuild it by a scan when missing or inconsistent."""
        if self._index_loaded:
            return
        if not self.index.load(self.size):
            self._rebuild_index()
            if not self.read_only:
                self.index.rewrite()
        self._index_loaded = True

    def _rebuild_index(self) -> None:
        self.index.offsets.clear()
        self.index.positions.clear()
        since = 0
        for item in self.scan(0):
            if isinstance(item, CorruptBatch):
                break
            if since <= 0:
                self.index.add(item.base_offset, item.position)
                since = self.index_interval
            since -= item.size

    def recover(self, *, truncate: bool = True) -> int:
        """Verify every batch from the last index entry that is known good, truncate a
        torn or corrupt tail, rebuild the index past that point, and set ``next_offset``.

        Returns the number of bytes truncated (or, with ``truncate=False``, the number of
        bytes that would be: a read-only open leaves the files alone and reads up to
        ``valid_size``).
        """
        loaded = self.index.load(self.size)
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
                self.index.offsets.clear()
                self.index.positions.clear()
        else:
            self.index.offsets.clear()
            self.index.positions.clear()
        expected = start_offset
        end = position
        since = self.index_interval
        for item in self.scan(position):
            if isinstance(item, CorruptBatch) or item.base_offset != expected:
                break
            if since <= 0 or not len(self.index):
                self.index.add(item.base_offset, item.position)
                since = self.index_interval
            since -= item.size
            expected = item.next_offset
            end = item.position + item.size
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
        the next good batch or ``end_offset``) and reading continues after it.
        """
        self.ensure_index()
        expected, position = self.index.lookup(offset)
        while position < limit:
            for item in self._iter_raw(position, limit):
                if isinstance(item, CorruptBatch):
                    nxt = self._resync(item.position + 1, limit, expected, end_offset)
                    next_pos, next_off = (limit, end_offset) if nxt is None else nxt
                    if next_off > expected:
                        yield CorruptRange(
                            self.base_offset, item.position, next_pos - item.position,
                            expected, next_off - 1,
                        )
                    position, expected = next_pos, max(expected, next_off)
                    break
                info, view = item
                if info.next_offset > offset:
                    yield info, view
                expected = info.next_offset
                position = info.position + info.size
            else:
                return

    def _resync(
        self, position: int, limit: int, min_offset: int, end_offset: int
    ) -> tuple[int, int] | None:
        """Find the next verifiable batch at or after ``position``: (position, base_offset)."""
        self.ensure_index()
        for pos, rel in zip(self.index.positions, self.index.offsets, strict=True):
            off = self.base_offset + rel
            if pos >= position and pos < limit and off >= min_offset:
                info = self._batch_at(pos)
                if info is not None and info.base_offset == off:
                    # There may be good batches before this index entry; look there first.
                    found = self._byte_scan(position, pos, min_offset, end_offset)
                    return found or (pos, off)
        return self._byte_scan(position, limit, min_offset, end_offset)

    def _byte_scan(
        self, position: int, limit: int, min_offset: int, end_offset: int
    ) -> tuple[int, int] | None:
        fd = self._file.fileno()
        data = os.pread(fd, limit - position, position)
        i = data.find(b"\x01\x00", 8)
        while i != -1:
            cand = position + i - 8
            info = self._batch_at(cand)
            if (
                info is not None
                and min_offset <= info.base_offset < end_offset
                and info.position + info.size <= limit
            ):
                return cand, info.base_offset
            i = data.find(b"\x01\x00", i + 1)
        return None

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def mtime(self) -> float:
        return os.fstat(self._file.fileno()).st_mtime

    def close(self) -> None:
        if not self._file.closed:
            if not self.read_only:
                self.index.write_pending()
            self._file.close()

    def delete(self) -> None:
        """Unlink both files; the read handle closes once no reader holds the segment."""
        for p in (self.log_path, self.index.path):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    def __del__(self) -> None:
        f = getattr(self, "_file", None)
        if f is not None and not f.closed:
            f.close()
