"""Sparse offset index: relative offset -> file position.

Strategy: the index is derived data, exactly as in Kafka. It is kept in memory as two
parallel arrays of u32 (8 bytes an entry; Python lists of ints cost about 72, and a
broker holds the index of every retained segment: at 5,000 readings/s that was ~20 MB an
hour of growth; a sealed segment also drops its in-memory copy once the file has it,
``Segment.seal``, and a reader loads it again) and appended to the ``.index`` file
without fsync; on open it is loaded only if it is consistent with the segment file
(sorted, inside the file, first entry at position 0), and otherwise rebuilt by scanning
the segment. It is never trusted for correctness: a lookup gives a place to *start
scanning* and the scan checks every batch.

File layout: a sequence of 8-byte entries ``relative_offset u32 | position u32``
(big-endian), relative to the segment's base offset.

Not thread-safe on its own: the owning Segment serialises writers. Readers in other
threads use the arrays while the writer appends: ``add`` grows ``positions`` before
``offsets`` so a reader that finds an offset always finds its position.

Writing the file never fails an operation: the index is derived, so when a write fails
(a full disk) the file is removed rather than left torn, and it is rebuilt when needed.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import struct
from array import array
from pathlib import Path

_ENTRY = struct.Struct(">II")
ENTRY_SIZE = _ENTRY.size
#: an unsigned C type of at least 32 bits (``I`` is 4 bytes on every platform we run on)
_U32 = "I" if array("I").itemsize >= 4 else "L"


class OffsetIndex:
    """In-memory sparse index with an append-only file behind it."""

    def __init__(self, path: Path, base_offset: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self.offsets = array(_U32)  # relative offsets, ascending
        self.positions = array(_U32)  # file positions, ascending
        self._pending = bytearray()
        self._lost = False

    def __len__(self) -> int:
        return len(self.offsets)

    def add(self, offset: int, position: int) -> None:
        rel = offset - self.base_offset
        if self.offsets and (rel <= self.offsets[-1] or position <= self.positions[-1]):
            return
        self.positions.append(position)
        self.offsets.append(rel)
        self._pending += _ENTRY.pack(rel, position)

    @property
    def saved(self) -> bool:
        """Every entry in memory is in the file (nothing pending, no failed write)."""
        return not self._pending and not self._lost

    def clear(self) -> None:
        """Forget every entry in memory (the file is left alone)."""
        del self.offsets[:]
        del self.positions[:]

    def lookup(self, offset: int) -> tuple[int, int]:
        """The greatest indexed (offset, position) with offset <= ``offset``, or (base, 0)."""
        i = bisect.bisect_right(self.offsets, offset - self.base_offset) - 1
        if i < 0:
            return self.base_offset, 0
        return self.base_offset + self.offsets[i], self.positions[i]

    def write_pending(self) -> None:
        """Append unsaved entries to the file (no fsync: the index is rebuilt if lost)."""
        if self._lost:
            self.rewrite()
        elif self._pending:
            self._save("ab", bytes(self._pending))

    def truncate_to(self, position: int) -> None:
        """Drop entries at or after ``position`` and rewrite the file."""
        i = bisect.bisect_left(self.positions, position)
        del self.offsets[i:]
        del self.positions[i:]
        self.rewrite()

    def rewrite(self) -> None:
        """Replace the file with every entry in memory."""
        n = len(self.offsets)
        self._save("wb", b"".join(_ENTRY.pack(o, p) for o, p in
                                  zip(self.offsets[:n], self.positions[:n], strict=True)))

    def _save(self, mode: str, data: bytes) -> None:
        try:
            with open(self.path, mode) as f:
                f.write(data)
        except OSError:
            # A torn entry would make the file inconsistent; no file is simply rebuilt.
            self.delete()
            self._lost = True  # the next write_pending rewrites the whole file
            return
        self._lost = False
        self._pending.clear()

    def load(self, file_size: int) -> bool:
        """Load the file; False (and empty) when missing or inconsistent with the segment."""
        self.clear()
        self._pending.clear()
        try:
            data = self.path.read_bytes()
        except OSError:  # missing or unreadable: rebuilt from the segment
            return False
        if len(data) % ENTRY_SIZE:
            return False
        last_o, last_p = -1, -1
        for rel, pos in _ENTRY.iter_unpack(data):
            if rel <= last_o or pos <= last_p or pos >= file_size:
                self.clear()
                return False
            self.positions.append(pos)
            self.offsets.append(rel)
            last_o, last_p = rel, pos
        if self.offsets and self.positions[0] != 0:
            self.clear()
            return False
        return True

    def delete(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)
