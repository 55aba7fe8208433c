"""Ingest: apply uplink batches to partitions exactly once (G3), durably (G1), in order (G4).

Strategy: the position rules live in ``uplink.decide``; this module (with ``state.py``,
which keeps, checkpoints and recovers the positions and marks) adds what a
multi-partition store needs on top of them.

1. **A per-partition filter.** A batch's records spread over several partitions, and a
   crash can leave some partitions holding their part and others not. So besides the
   per-source acked offset, we keep for every partition the highest edge offset it holds
   from each source (edge, stream, generation). A record is appended only if its edge
   offset is above that mark. Because one source's records reach a partition in edge-offset
   order (one source is processed at a time) and a shared_log batch is all-or-nothing on
   disk, "above the mark" is exactly "not yet stored". This makes any retry, rewind or
   replay harmless, so the per-source acked offset only has to be *conservative*.

2. **State derived from the data.** Every stored record carries an ``origin`` header
   ``edge/stream/generation/offset``, appended by the broker as the record's *last*
   header. On start the per-partition marks are rebuilt by replaying each partition from
   the last state checkpoint (or from its start when the checkpoint does not fit the
   data), so after kill -9 the dedup state matches the partitions exactly. Replay reads
   only that last header: an ``origin`` an edge sent itself (refused since, see
   ``reserved``, but possibly stored by an older broker) would otherwise let one edge
   claim another edge's positions and have its next records skipped as stored. The
   checkpoint holds only durable facts and is written lazily;
   a stale one costs a replay or a rewind of the edge, never a duplicate or a loss.

3. **Known positions stay known.** The acked offset of a position the broker has never
   acknowledged may start anywhere (``decide``'s NEW_GENERATION), which is only safe while
   the edge has a single batch in flight, i.e. before its first ack. So a position is
   written to the checkpoint *before* its first ack, and a position found in the data but
   not in the checkpoint (the checkpoint was lost) restarts at acked offset -1. Either
   way, after a restart a known position has an acked offset at or *below* the edge's:
   a batch from the edge's acked offset is then refused as a gap with an expected offset
   the edge already has acked, and the edge rewinds to it (edge_agent.forwarder); what it
   still holds of that range is filtered by the marks, what it freed was durable here.

Acks wait for durability of the batch's own appends *and* of every earlier batch of the
same source (a chain of futures), including parts appended by an attempt that failed
half-way, so an ack never covers data still in the page cache. Records shared_log cannot
frame (a header name over 64 KiB) are a ``RejectedBatch`` (400), checked before anything
is appended, rather than an ``IngestUnavailable`` (503) the edge would retry forever. A
batch that overtook its predecessor (requests on several connections) waits up to
``gap_wait_s`` for it before it is refused as a gap, because a refusal makes the edge
resend everything it has in flight.

Positions are bounded (``max_positions_per_edge``, ``max_positions``): each is kept for
good (forgetting one could let a resend of it through as new records), and one edge
could otherwise open any number of them, a new stream name or generation per request,
and grow the broker's memory and every checkpoint without end. A batch that would open
a position past a bound is refused with ``PositionLimit`` (429: the edge retries
later) before anything is appended; known positions go on as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Container, Coroutine, Sequence
from pathlib import Path

from uplink import (
    MAX_HEADER_NAME_BYTES,
    MAX_HEADERS,
    Ack,
    Batch,
    DecisionKind,
    RecordBlock,
    Refusal,
    UplinkRecord,
    decide,
    reply_for,
)

from ..config import DEFAULT_MAX_POSITIONS, DEFAULT_MAX_POSITIONS_PER_EDGE
from ..storage import InvalidRecord, LogError, PartitionLog, PartitionStoreAPI
from .framing import PartitionPart, frame_block
from .reserved import RESERVED_HEADERS, RESERVED_PREFIX, first_reserved
from .state import IngestState, IngestStats, Source, origin_prefix, source_key

log = logging.getLogger(__name__)
#: records framed between two yields to the event loop (about 1.4 ms of framing)
FRAME_SLICE = 2000


class IngestUnavailable(Exception):
    """The batch could not be made durable now (full disk, fsync error); retry later."""


class PositionLimit(Exception):
    """A batch would open a position (edge, stream, generation) past a bound (429)."""


class RejectedBatch(Exception):
    """The batch holds a record the partitions cannot store; retrying cannot help (400)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Ingestor(IngestState):
    """Applies batches to a partition store. Runs on one asyncio event loop.

    Recovery and the checkpoint are ``IngestState``'s (state.py)."""

    def __init__(self, store: PartitionStoreAPI, state_dir: Path,
                 checkpoint_interval_s: float = 1.0, gap_wait_s: float = 0.5, *,
                 max_positions_per_edge: int = DEFAULT_MAX_POSITIONS_PER_EDGE,
                 max_positions: int = DEFAULT_MAX_POSITIONS) -> None:
        super().__init__(store, state_dir, checkpoint_interval_s)
        self.max_positions_per_edge, self.max_positions = max_positions_per_edge, max_positions
        #: how long a batch that overtook its predecessor waits for it before a 409
        self.gap_wait_s = gap_wait_s
        #: called with (topic, records) after each append to a partition (metrics)
        self.on_written: Callable[[str, int], None] | None = None
        #: topics ingest may not write (mirror targets: the mirror alone writes them)
        self.write_protected: Container[str] = ()
        self.stats = IngestStats()
        self._locks: dict[Source, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._tails: dict[Source, asyncio.Future[None]] = {}
        # Set (and replaced) whenever a source's acked offset moves: wakes gap waiters.
        self._moved: dict[Source, asyncio.Event] = {}
        # partition count -> device key -> partition (partition_for is pure Python murmur2)
        self._pcache: dict[int, dict[bytes, int]] = {}

    # -- ingest --------------------------------------------------------------------------

    def _partition_cache(self, n: int) -> dict[bytes, int]:
        cache = self._pcache.setdefault(n, {})
        if len(cache) > 200_000:  # bounded: device keys are many but not unbounded
            cache.clear()
        return cache

    async def ingest(self, topic: str, batch: Batch) -> Ack | Refusal:
        """Apply ``batch`` to ``topic``; returns the reply once it is durable. The batch
        is let go of once appended: a caller that keeps no reference of its own frees
        the records before the wait on durability.

        Raises UnknownTopic, and IngestUnavailable when the partitions cannot take it now.
        """
        parts = self.store.partitions(topic)
        if topic in self.write_protected:  # the HTTP layer refuses first (403); a claim
            # made while the request's body was being read still ends here
            raise RejectedBatch("topic", f"topic {topic!r} is the target of a mirror: only "
                                "the mirror writes it")
        source: Source = (batch.edge_id, batch.stream, batch.generation)
        self.stats.batches += 1
        if source not in self._acked:
            self._admit(source)
        _check_reserved(batch.records)
        waits: list[tuple[PartitionLog, int]] = []
        if decide(self._known(source, parts), batch).kind is DecisionKind.GAP:
            refusal = await self._wait_for_predecessor(source, parts, batch)
            if refusal is not None:
                return refusal
        async with self._locks[source]:
            decision = decide(self._known(source, parts), batch)
            kind = decision.kind
            if kind is DecisionKind.GAP:
                self.stats.gaps += 1
                return reply_for(batch, decision)
            if kind is DecisionKind.DUPLICATE:
                self.stats.duplicates += 1
                tail = self._tails.get(source)
            else:
                if kind is DecisionKind.PARTIAL:
                    self.stats.partials += 1
                elif kind is DecisionKind.NEW_GENERATION:
                    self.stats.new_generations += 1
                try:
                    await self._append(topic, parts, source, decision.records_to_write,
                                       waits)
                finally:
                    # Parts appended before a failure are deduplicated on retry, so the
                    # retry's ack must wait for them too: chain them into the tail.
                    if waits:
                        self._tails[source] = _chain(self._tails.get(source), waits)
                if not waits:  # everything was already stored: wait for earlier appends
                    self._tails[source] = _chain(self._tails.get(source), waits)
                tail = self._tails[source]
                if kind is DecisionKind.NEW_GENERATION:
                    tail = self._tails[source] = _track(self._remember(
                        tail, source, decision.new_acked_offset))
                if source not in self._acked:
                    self._per_edge[source[0]] += 1
                self._acked[source] = decision.new_acked_offset
                if (moved := self._moved.pop(source, None)) is not None:
                    moved.set()
            # The records are in the page cache now: let go of the decoded batch for the
            # wait on durability (a catch-up has several batches of thousands of records
            # waiting for their fsync; a Python object per record each). The caller hands
            # the batch over the same way (http/ingest.py).
            reply, acked = reply_for(batch, decision), decision.new_acked_offset
            del batch, decision
        if tail is not None:
            try:
                await asyncio.shield(tail)
            except (LogError, OSError) as exc:
                self._reset(source)
                self.stats.unavailable += 1
                raise IngestUnavailable(f"not durable: {exc}") from exc
        if acked > self._durable.get(source, -1):
            self._durable[source] = acked
        if kind is not DecisionKind.DUPLICATE:
            for p in {p for p, _ in waits}:
                p.notify()
        return reply

    def _admit(self, source: Source) -> None:
        """Raise PositionLimit when ``source``, a position this broker does not hold yet,
        would pass a bound (module docstring)."""
        edge = source[0]
        if self._per_edge[edge] >= self.max_positions_per_edge:
            self.stats.position_limited += 1
            raise PositionLimit(
                f"edge {edge!r} already has {self._per_edge[edge]} positions (stream and "
                f"generation pairs), the most max_positions_per_edge allows; a new stream "
                f"or generation of it is refused (this one: stream {source[1]!r}, "
                f"generation {source[2]!r})")
        if len(self._acked) >= self.max_positions:
            self.stats.position_limited += 1
            raise PositionLimit(f"the broker already holds {len(self._acked)} positions, "
                                "the most max_positions allows; new ones are refused")

    def _known(self, source: Source, parts: Sequence[PartitionLog]) -> int | None:
        """The acked offset ``decide`` starts from; None: a position never seen."""
        return self._acked.get(source)

    async def _wait_for_predecessor(self, source: Source, parts: Sequence[PartitionLog],
                                    batch: Batch) -> Refusal | None:
        """With several requests in flight, a batch can overtake its predecessor on
        another connection. Refusing it would make the edge resend everything it has in
        flight, so wait up to ``gap_wait_s`` for the acked offset to reach it; the refusal
        if it does not (the predecessor was lost), else None."""
        deadline = time.monotonic() + self.gap_wait_s
        while True:
            async with self._locks[source]:
                decision = decide(self._known(source, parts), batch)
                if decision.kind is not DecisionKind.GAP:
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.stats.gaps += 1
                    reply = reply_for(batch, decision)
                    assert isinstance(reply, Refusal)
                    return reply
                moved = self._moved.setdefault(source, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await moved.wait()

    async def _remember(self, durable: asyncio.Future[None], source: Source,
                        acked: int) -> None:
        """A new position: checkpoint it once its records are durable, before its ack."""
        await durable
        await self.checkpoint(known={source: acked})

    async def _append(self, topic: str, parts: list[PartitionLog], source: Source,
                      records: Sequence[UplinkRecord], waits: list[tuple[PartitionLog, int]]
                      ) -> None:
        """Append the records not yet in their partitions; ``waits`` gets (partition, last
        offset) for each append made, also when a later one fails.

        Framing costs about 0.7 us per record on the event loop, so a large batch is
        framed in slices of ``FRAME_SLICE`` records with a yield between them: other
        requests (and /healthz) wait at most one slice. The caller holds the source's
        lock, so this source's marks cannot move meanwhile; every slice is framed against
        the same floors and the parts are appended once per partition at the end."""
        n = len(parts)
        marks = [self._marks[(topic, p)] for p in range(n)]
        if type(records) is not RecordBlock:  # the decoder's columns are checked already
            _check_storable(records)
            records = RecordBlock.from_records(records)
        prefix = origin_prefix(source)
        framed, dedup = await self._frame(records, n, [m.get(source, -1) for m in marks],
                                          prefix)
        written = 0
        try:
            for p, fp in enumerate(framed):
                if not fp.count:
                    continue
                part = parts[p]
                _first, last = part.append_framed(b"".join(fp.pieces), fp.count,
                                                  fp.max_timestamp)
                marks[p][source] = fp.last_offset
                waits.append((part, last))
                self._ingested_topics.add(topic)
                written += fp.count
                if self.on_written is not None:
                    self.on_written(topic, fp.count)
        except InvalidRecord as exc:  # not caught by _check_storable: no retry can help
            raise RejectedBatch("records", str(exc)) from exc
        except (LogError, OSError) as exc:
            # Appended parts stay (their marks filter them on retry); the source's acked
            # offset is not advanced, so the edge resends and only missing parts are written.
            self.stats.unavailable += 1
            log.warning("ingest of %s into %s failed: %s", source_key(source), topic, exc)
            raise IngestUnavailable(str(exc)) from exc
        finally:
            self.stats.records_written += written
            self.stats.records_deduplicated += dedup

    async def _frame(self, records: RecordBlock, n: int, floors: list[int], prefix: bytes
                     ) -> tuple[list[PartitionPart], int]:
        """``frame_block`` over ``records`` in slices of ``FRAME_SLICE`` with a yield to
        the loop between them (see ``_append``); the parts per partition, records skipped."""
        if len(records) <= FRAME_SLICE:
            return frame_block(records, n, floors, self._partition_cache(n), prefix)
        framed, dedup = [PartitionPart() for _ in range(n)], 0
        for lo in range(0, len(records), FRAME_SLICE):
            if lo:
                await asyncio.sleep(0)
            more, d = frame_block(records[lo:lo + FRAME_SLICE], n, floors,
                                  self._partition_cache(n), prefix)
            dedup += d
            for into, part in zip(framed, more, strict=True):
                if part.count:
                    # one bytes per slice: a large batch's pieces (three objects per
                    # record) do not all live at once
                    into.pieces.append(b"".join(part.pieces))
                    into.count += part.count
                    into.max_timestamp = max(into.max_timestamp, part.max_timestamp)
                    into.last_offset = part.last_offset
        return framed, dedup

    def _reset(self, source: Source) -> None:
        """After a durability failure fall back to what was acked durable."""
        if source in self._durable:
            self._acked[source] = self._durable[source]
        elif source in self._acked:
            del self._acked[source]
            self._per_edge[source[0]] -= 1
        self._tails.pop(source, None)

def _check_storable(records: Sequence[UplinkRecord]) -> None:
    """Refuse, before any append, records shared_log cannot frame (only headers can fail)."""
    limit = MAX_HEADER_NAME_BYTES
    for i, r in enumerate(records):
        headers = r.headers
        if headers and (len(headers) > MAX_HEADERS or any(
                len(name) > limit // 4 and len(name.encode()) > limit for name, _ in headers)):
            raise RejectedBatch(f"records[{i}].headers",
                                f"at most {MAX_HEADERS} headers with names of at most "
                                f"{MAX_HEADER_NAME_BYTES} UTF-8 bytes")


def _check_reserved(records: Sequence[UplinkRecord]) -> None:
    """Refuse a batch that sends a header name the broker keeps for itself (reserved)."""
    found = first_reserved(records)
    if found is not None:
        index, name = found
        shown = name if len(name) <= 60 else name[:60] + "..."
        raise RejectedBatch(f"records[{index}].headers",
                            f"header name {shown!r} is reserved for the broker (reserved: "
                            f"{sorted(RESERVED_HEADERS)} and names starting with "
                            f"{RESERVED_PREFIX!r}, in any letter case)")


async def _durable_after(prev: asyncio.Future[None] | None,
                         waits: list[tuple[PartitionLog, int]]) -> None:
    if prev is not None:
        await prev
    if len(waits) == 1:  # the common case of a small batch: no gather, no extra task
        part, last = waits[0]
        await part.wait_durable(last)
    elif waits:
        await asyncio.gather(*(p.wait_durable(last) for p, last in waits))


def _chain(prev: asyncio.Future[None] | None,
           waits: list[tuple[PartitionLog, int]]) -> asyncio.Future[None]:
    return _track(_durable_after(prev, list(waits)))


def _track(coro: Coroutine[None, None, None]) -> asyncio.Future[None]:
    # A tail whose batch failed may never be awaited again: retrieve its error so
    # asyncio does not log "exception was never retrieved" for it.
    fut = asyncio.ensure_future(coro)
    fut.add_done_callback(lambda f: f.cancelled() or f.exception())
    return fut

