"""What the Log reports: its counters and the result of a fetch.

Strategy: plain dataclasses with no behaviour, apart from the Log so that callers
(metrics exporters, the CLI, the broker) can name them without the Log's machinery.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._records import StoredRecord
from ._segment import CorruptRange


@dataclass
class LogStats:
    """Counters a caller exports as metrics. Monotonic for the life of the Log object."""

    appended_records: int = 0
    appended_batches: int = 0
    fsyncs: int = 0
    dropped_records: int = 0  # full policy drop_oldest
    dropped_bytes: int = 0
    rejected_records: int = 0  # full policy reject_new (and disk full)
    rejected_batches: int = 0
    retention_deleted_records: int = 0
    corrupt_batches: int = 0
    corrupt_records: int = 0
    truncated_bytes_on_open: int = 0
    corrupt_ranges: list[CorruptRange] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What a read found: records, where to continue, and offsets lost to corruption."""

    records: list[StoredRecord]
    next_offset: int
    skipped: list[CorruptRange]
