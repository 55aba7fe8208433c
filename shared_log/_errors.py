"""Errors raised by shared_log.

Strategy: callers need to tell apart "you asked for something that is not there"
(OffsetOutOfRange), "there is no room" (LogFull) and "the bytes on disk are bad"
(CorruptBatch). Foreign exceptions (OSError from the file system) are mapped to these
at the boundary where that is meaningful (ENOSPC -> DiskFull), otherwise they propagate.

    LogError
     ├── OffsetOutOfRange      read below the start or above the end
     ├── LogFull               the size cap with reject_new, or a batch bigger than the cap
     │    └── DiskFull         the file system itself said ENOSPC
     ├── CorruptBatch          a batch failed its checksum or framing
     ├── LogClosed             use after close()
     └── InvalidRecord         a record that cannot be stored (bad types, too large)
"""

from __future__ import annotations


class LogError(Exception):
    """Base class of every shared_log error."""


class OffsetOutOfRange(LogError):
    """The requested offset is outside [start_offset, end_offset]."""

    def __init__(self, offset: int, start_offset: int, end_offset: int) -> None:
        super().__init__(
            f"offset {offset} is out of range: valid offsets are {start_offset}..{end_offset} "
            f"({end_offset} is the next offset to be written)"
        )
        self.offset = offset
        self.start_offset = start_offset
        self.end_offset = end_offset


class LogFull(LogError):
    """The log cannot accept the batch without breaking its size cap."""


class DiskFull(LogFull):
    """The file system returned ENOSPC; the partial write was rolled back."""


class CorruptBatch(LogError):
    """A batch failed its checksum or framing check."""

    def __init__(self, message: str, *, position: int, first_offset: int | None = None) -> None:
        super().__init__(message)
        self.position = position
        self.first_offset = first_offset


class LogClosed(LogError):
    """The log was closed."""


class InvalidRecord(LogError):
    """A record cannot be stored (wrong types or too large for the format)."""
