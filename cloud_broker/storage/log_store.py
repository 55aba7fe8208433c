"""The shared_log partition store: one shared_log Log per topic-partition.

The first implementation of ``storage.interface`` (``PartitionLog``,
``PartitionStoreAPI``). Strategy: the broker's durable data is nothing but these logs, laid out as
``<data_dir>/topics/<topic>/<partition>/``. Everything else the broker keeps (ingest
dedup state, consumer offsets) is either derived from them or stored beside them. Topics
come from the config; the partition count of an existing topic is recorded in
``topic.json`` and may only grow, because shrinking would re-map device keys (G4).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from shared_log import (
    BatchFetch,
    ColumnFetch,
    CommitMode,
    CommitPolicy,
    FetchResult,
    Log,
    LogConfig,
    Record,
    SharedFlusher,
    fetch_batches,
    fetch_columns,
    read_checkpoint,
    reopen_empty_at,
    write_checkpoint,
)
from uplink import is_safe_name

from ..config import TopicConfig
from ._replay import STEP_BYTES, STEP_RECORDS, replay_last_header
from ._topics import TopicTable
from ._waiters import Waiters


class Partition(Waiters):
    """A topic-partition (``PartitionLog``): its shared_log ``Log`` and a notifier for
    long-polling readers (``Waiters``). Thin: each operation is one call of the log."""

    def __init__(self, topic: str, index: int, log: Log) -> None:
        super().__init__()
        self.topic = topic
        self.index = index
        self.log = log
        self._waiting_since = time.monotonic()

    @property
    def start_offset(self) -> int:
        return self.log.start_offset

    @property
    def end_offset(self) -> int:
        return self.log.end_offset

    @property
    def durable_offset(self) -> int:
        return self.log.durable_offset

    @property
    def size_bytes(self) -> int:
        return self.log.size_bytes

    @property
    def failed(self) -> BaseException | None:
        return self.log.failed

    @property
    def corrupt_records(self) -> int:
        return self.log.stats.corrupt_records

    @property
    def append_wait_s(self) -> float:
        log = self.log
        if log.durable_offset >= log.end_offset:
            return 0.0
        return time.monotonic() - self._waiting_since

    def _appending(self) -> None:
        # The start of a run of appends not yet durable (the oldest one waiting).
        if self.log.durable_offset >= self.log.end_offset:
            self._waiting_since = time.monotonic()

    def append_framed(self, body: bytes, count: int, max_timestamp: int) -> tuple[int, int]:
        self._appending()
        return self.log.append_framed(body, count, max_timestamp)

    def append(self, records: Sequence[Record]) -> tuple[int, int]:
        self._appending()
        return self.log.append(records)

    async def wait_durable(self, offset: int) -> None:
        await self.log.wait_durable_async(offset)

    def fetch(self, offset: int, max_records: int, max_bytes: int) -> FetchResult:
        return self.log.fetch(offset, max_records, max_bytes)

    def fetch_columns(self, offset: int, max_records: int, max_bytes: int,
                      end: int | None = None) -> ColumnFetch:
        return fetch_columns(self.log, offset, max_records, max_bytes, end=end)

    def fetch_batches(self, offset: int, max_records: int, max_bytes: int,
                      end: int | None = None) -> BatchFetch:
        return fetch_batches(self.log, offset, max_records, max_bytes, end=end)

    def replay_header(self, start: int, name: str, visit: Callable[[bytes], None]) -> int:
        log = self.log
        return replay_last_header(
            lambda o: log.fetch(o, max_records=STEP_RECORDS, max_bytes=STEP_BYTES), start,
            lambda: log.end_offset, name, visit)

    def enforce_retention(self) -> int:
        return self.log.enforce_retention()

    def close(self) -> None:
        self.log.close()

    def rebase_empty(self, base: int) -> None:
        """Make an empty partition's next offset ``base`` (a mirror's first record);
        ValueError when it holds or held records (shared_log.reopen_empty_at)."""
        self.log = reopen_empty_at(self.log, base)


class PartitionStore(TopicTable[Partition]):
    """All topic-partitions of one broker. Single event loop writes; reads may be threads.

    One flusher thread serves every partition (``shared_log.SharedFlusher``): per commit
    interval one pass fsyncs the partitions with pending appends, and each partition's
    waiters (the acks) are woken only by its own fsync."""

    def __init__(self, data_dir: Path, commit_interval_ms: float = 1.0) -> None:
        self.root = Path(data_dir) / "topics"
        self.root.mkdir(parents=True, exist_ok=True)
        self.commit_interval_ms = commit_interval_ms
        self.flusher = SharedFlusher(commit_interval_ms, name="partition-flusher")
        super().__init__()

    def ensure_topic(self, cfg: TopicConfig) -> list[Partition]:
        """Open (creating when new) every partition of a topic."""
        if not is_safe_name(cfg.name):
            raise ValueError(f"unsafe topic name {cfg.name!r}")
        tdir = self.root / cfg.name
        tdir.mkdir(parents=True, exist_ok=True)
        meta = read_checkpoint(tdir / "topic.json", {})
        existing = meta.get("partitions", 0) if isinstance(meta, dict) else 0
        if isinstance(existing, int) and existing > cfg.partitions:
            raise ValueError(
                f"topic {cfg.name} has {existing} partitions on disk; the config asks for "
                f"{cfg.partitions}, and partitions can only be added"
            )
        if existing != cfg.partitions:
            write_checkpoint(tdir / "topic.json", {"partitions": cfg.partitions})
        parts = self._topics.get(cfg.name, [])
        log_cfg = LogConfig(
            segment_bytes=cfg.segment_bytes,
            commit=CommitPolicy(CommitMode.GROUP, interval_ms=self.commit_interval_ms),
            retention_bytes=cfg.retention_bytes,
            retention_ms=cfg.retention_ms,
        )
        for i in range(len(parts), cfg.partitions):
            parts.append(Partition(cfg.name, i, Log(tdir / str(i), log_cfg,
                                                    flusher=self.flusher)))
        self._topics[cfg.name] = parts
        self._configs[cfg.name] = cfg
        return parts

    def close(self) -> None:
        try:
            for p in self:
                p.close()
        finally:
            self.flusher.stop()
