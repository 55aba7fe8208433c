"""The partition store interface: what the broker needs of a topic-partition.

Strategy (litestream's replica client is the model): everything above storage (ingest,
consume, groups' lag, the mirrors' local source, the retention loop, metrics, health)
talks to a partition through ``PartitionLog`` and to the set of them through
``PartitionStoreAPI``, never to a shared_log ``Log``. The operations are few and work on
framed batches and columns, not single records, so a backend adds no per-record cost.
``log_store`` (one shared_log ``Log`` per partition) is the first implementation;
tests/cloud_broker/store_conformance.py is the suite every implementation must pass,
crash and replay included.

Offsets: ``start_offset`` <= ``durable_offset`` <= ``end_offset``. ``end_offset`` is the
next offset to be written; ``durable_offset`` (the high watermark) the end of what
survives a crash: readers that serve consumers never pass it.

Errors every implementation raises (the names are shared_log's, re-exported here):

- ``UnknownTopic``: no such topic or partition (store lookups).
- ``OffsetOutOfRange`` (``start_offset``, ``end_offset``): a fetch below the start or
  above the end.
- ``InvalidRecord``: a record the store cannot hold (a retry cannot help).
- ``LogError`` (``LogFull``, ``LogClosed``, ...) and ``OSError``: the store cannot do it
  now (full disk, failed fsync, closed): retry later. After a failed fsync ``failed`` is
  set and the partition refuses writes until it is reopened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, runtime_checkable

from shared_log import (
    BatchFetch,
    ColumnFetch,
    FetchResult,
    InvalidRecord,
    LogError,
    OffsetOutOfRange,
    Record,
)

from ..config import TopicConfig


class UnknownTopic(LookupError):
    """The topic (or partition) does not exist."""


@runtime_checkable
class PartitionLog(Protocol):
    """One topic-partition. Appends come from one event loop; reads may be threads."""

    topic: str
    index: int

    @property
    def start_offset(self) -> int:
        """The first offset still held (retention moves it up)."""

    @property
    def end_offset(self) -> int:
        """The next offset to be written."""

    @property
    def durable_offset(self) -> int:
        """Every offset below it survives a crash (the high watermark)."""

    @property
    def size_bytes(self) -> int:
        """Bytes held (0 for an empty partition)."""

    @property
    def failed(self) -> BaseException | None:
        """The error that made the partition unwritable (a failed fsync), else None."""

    @property
    def corrupt_records(self) -> int:
        """Records found lost to corruption on reads so far (a metric)."""

    @property
    def append_wait_s(self) -> float:
        """How long the oldest append not yet durable has waited, 0.0 when none waits (a
        metric: a partition that stopped taking writes, such as a JetStream stream
        electing a leader, shows here before anywhere else)."""

    def append_framed(self, body: bytes, count: int, max_timestamp: int) -> tuple[int, int]:
        """Append ``count`` records already framed in shared_log's record format
        (docs/log-format.md) as one all-or-nothing batch; (first, last) offset. Returns
        before they are durable: ``wait_durable(last)``. LogError/OSError: not now."""

    def append(self, records: Sequence[Record]) -> tuple[int, int]:
        """Append ``records`` as one all-or-nothing batch; (first, last) offset.
        InvalidRecord when one cannot be stored, LogError/OSError: not now."""

    async def wait_durable(self, offset: int) -> None:
        """Return once ``offset`` is durable; LogError/OSError when it never will be."""

    def fetch(self, offset: int, max_records: int, max_bytes: int) -> FetchResult:
        """Records from ``offset`` (at least one if any is there, whatever its size);
        ``skipped`` lists ranges lost to corruption. Not capped at ``durable_offset``.
        OffsetOutOfRange outside [start, end]; LogError when unreadable or closed."""

    def fetch_columns(self, offset: int, max_records: int, max_bytes: int,
                      end: int | None = None) -> ColumnFetch:
        """``fetch`` as columns (what consumers are served), not reading at or above
        ``end`` (default the end offset): from ``end`` on it returns nothing with
        ``next_offset == offset``. Errors as ``fetch``."""

    def fetch_batches(self, offset: int, max_records: int, max_bytes: int,
                      end: int | None = None) -> BatchFetch:
        """``fetch_columns`` as the stored batches (CRC checked, record framing not yet),
        each with the offsets of it that are returned: for the Kafka listener, which
        converts a batch to its wire format in one pass. Rules and errors as
        ``fetch_columns``."""

    def replay_header(self, start: int, name: str, visit: Callable[[bytes], None]) -> int:
        """Call ``visit(value)`` for every record from ``start`` to the end whose *last*
        header is named ``name``, in offset order; the number of records read. This is
        how the ingest rebuilds its marks from the ``origin`` headers after a crash."""

    def enforce_retention(self) -> int:
        """Delete what the topic's retention no longer keeps; records deleted."""

    def rebase_empty(self, base: int) -> None:
        """Make an empty partition's next offset ``base`` (a mirror whose source lost its
        beginning), durably. ValueError when it holds or held records."""

    def waiter(self) -> asyncio.Event:
        """An event set by the next ``notify`` (call on the event loop)."""

    def forget(self, ev: asyncio.Event) -> None:
        """Drop a waiter that stopped waiting (a long-poll that timed out)."""

    def notify(self) -> None:
        """Wake every waiter (after records became durable; any thread)."""

    def close(self) -> None:
        """Release the partition's files; later calls raise LogError."""


class PartitionStoreAPI(Protocol):
    """Every topic-partition of one broker."""

    def ensure_topic(self, cfg: TopicConfig) -> Sequence[PartitionLog]:
        """Open (creating when new) every partition of a topic. ValueError when the
        config asks for fewer partitions than it has (partitions only grow, G4)."""

    def partitions(self, topic: str) -> Sequence[PartitionLog]:
        """The partitions of ``topic`` in index order; UnknownTopic."""

    def partition(self, topic: str, index: int) -> PartitionLog:
        """One partition; UnknownTopic for an unknown topic or index."""

    def topic_config(self, topic: str) -> TopicConfig:
        """The config the topic was opened with; UnknownTopic."""

    def topics(self) -> list[str]:
        """The open topics, sorted."""

    def __iter__(self) -> Iterator[PartitionLog]:
        """Every partition, by topic then index."""

    def enforce_retention(self) -> int:
        """Retention over every partition (a worker thread calls it); records deleted."""

    def close(self) -> None:
        """Close every partition."""


__all__ = ["InvalidRecord", "LogError", "OffsetOutOfRange", "PartitionLog",
           "PartitionStoreAPI", "UnknownTopic"]
