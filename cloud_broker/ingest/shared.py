"""Ingest for cluster mode: several broker nodes over one JetStream partition store.

Strategy (docs/cluster.md has the whole argument): the single-node ingest keeps the
per-partition marks in its own memory and a checkpoint file, which is exact only while
one process writes. Here any node may receive any edge's batch, so

1. **Marks come from the stream, checked by the stream.** A partition's mark for a
   source is its view's (``JetStreamPartition.mark``: the highest ``Es-Origin`` offset
   applied). A piece is cut above that mark and published with
   ``Nats-Expected-Last-Sequence``: JetStream stores it only if nothing landed since the
   state the mark was read from. If another node's piece landed first, the partition reads
   the tail back; if the source's mark moved, the piece is refused with ``StaleMark`` and
   cut again here above the new mark. So a record is written exactly when the partition
   does not hold it, whichever node writes, however the nodes race.

2. **No node trusts its own idea of a position it did not ack; it reads the stream's.**
   A source's records in one partition are a prefix of those the edge routes there
   (every piece is cut above the mark, and a batch is taken only from a start at or below
   a known acked offset), so every record at or below the *lowest* of the topic's marks
   is stored. That is the acked offset a node assumes for a source it has not acked
   (``_known``; -1 while a partition holds none of the source), or its own when higher.
   ``decide`` then takes a batch that starts at or below it and refuses one past it as a
   gap expecting the next offset: the edge rewinds (``RefusalMove.REWIND``: the offsets
   it freed travel as an empty range) only to there and resends what it holds past it,
   which the marks filter. A node that lost its memory (restarted, or the edge moved to
   it) so costs the edge a resend of at most the records since the quietest partition's
   last record, not of everything it holds. A stale acked offset of this node (the edge
   moved to another node and back) is only ever *lower* than the truth, so it can cost a
   rewind, never a record: DUPLICATE and PARTIAL are decided only below offsets known
   durable (this node's acks or the stream's marks).

3. **Nothing to checkpoint.** The stream is the state: a node that starts reads its
   partitions (their views) and knows every mark; ``recover`` and ``checkpoint`` do
   nothing.

An ack waits for the replicated publish acks of every piece (the partition's
``append_piece`` returns once JetStream stored the message on a quorum).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from uplink import RecordBlock, UplinkRecord

from ..storage import LogError, PartitionLog
from ..storage.jetstream import JetStreamPartition, StaleMark
from .ingestor import Ingestor, IngestUnavailable, _check_storable
from .state import Source, origin_prefix, source_key

log = logging.getLogger(__name__)
#: times a batch's pieces are cut again after marks moved, before a 503
MAX_RECUTS = 16


class SharedIngestor(Ingestor):
    """``Ingestor`` whose dedup state is the JetStream partitions' own (module docstring)."""

    def _known(self, source: Source, parts: Sequence[PartitionLog]) -> int | None:
        """This node's acked offset, or the lowest of the partitions' marks when higher
        (point 2 of the module docstring): every record of ``source`` up to it is stored."""
        own = self._acked.get(source, -1)
        prefix = origin_prefix(source)
        floor = min((p.mark(prefix) if isinstance(p, JetStreamPartition) else -1
                     for p in parts), default=-1)
        return max(own, floor)

    def recover(self, exclude_topics: frozenset[str] = frozenset()) -> None:
        """Nothing to rebuild: every partition read its marks from its stream on open."""

    async def checkpoint(self, known: dict[Source, int] | None = None) -> None:
        """Nothing to persist: the streams hold the marks."""

    async def _append(self, topic: str, parts: list[PartitionLog], source: Source,
                      records: Sequence[UplinkRecord], waits: list[tuple[PartitionLog, int]]
                      ) -> None:
        shared = [p for p in parts if isinstance(p, JetStreamPartition)]
        if len(shared) != len(parts):
            raise IngestUnavailable(f"topic {topic} is not in the JetStream store")
        if type(records) is not RecordBlock:
            _check_storable(records)
            records = RecordBlock.from_records(records)
        n, prefix = len(parts), origin_prefix(source)
        todo = set(range(n))
        written = 0
        try:
            for _ in range(MAX_RECUTS):
                floors = [shared[p].mark(prefix) for p in range(n)]
                framed, _dedup = await self._frame(records, n, floors, prefix)
                jobs = [p for p in sorted(todo) if framed[p].count]
                results = await asyncio.gather(*(
                    shared[p].append_piece(b"".join(framed[p].pieces), framed[p].count,
                                           framed[p].max_timestamp, prefix,
                                           framed[p].last_offset, floors[p])
                    for p in jobs), return_exceptions=True)
                todo, failure = set(), None
                for p, res in zip(jobs, results, strict=True):
                    if isinstance(res, StaleMark):
                        todo.add(p)
                    elif isinstance(res, BaseException):
                        failure = failure or res
                    else:
                        waits.append((parts[p], res[1]))
                        self._ingested_topics.add(topic)
                        written += framed[p].count
                        if self.on_written is not None:
                            self.on_written(topic, framed[p].count)
                if failure is not None:
                    if isinstance(failure, (LogError, OSError)):
                        self.stats.unavailable += 1
                        log.warning("ingest of %s into %s failed: %s", source_key(source),
                                    topic, failure)
                        raise IngestUnavailable(str(failure)) from failure
                    raise failure
                if not todo:
                    self.stats.records_deduplicated += len(records) - written
                    return
            self.stats.unavailable += 1
            raise IngestUnavailable(f"marks of {topic} kept moving under {source_key(source)}")
        finally:
            self.stats.records_written += written
