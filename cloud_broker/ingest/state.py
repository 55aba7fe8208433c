"""What the ingest knows, and how it survives a crash: acked offsets, marks, checkpoint.

Strategy (cloud_broker.ingest.ingestor has the whole story): the broker keeps, per
source (edge, stream, generation), the acked offset, and per partition the highest edge
offset it holds from each source (the *marks*). Only durable facts are checkpointed
(``STATE_FILE``), lazily; on start ``recover`` reads the checkpoint and rebuilds the
marks by replaying each partition's ``origin`` headers from the checkpointed end (or
from the start when the checkpoint does not fit the data). A position found in the data
but not in the checkpoint restarts at acked offset -1, so its next batch is a gap the
edge rewinds to. Replay reads only a record's *last* header: the broker appends its own
``origin`` last (``framing``), so a header an edge sent cannot claim another's positions.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from shared_log import read_checkpoint, write_checkpoint

from ..storage import LogError, PartitionLog, PartitionStoreAPI
from .framing import ORIGIN_HEADER

log = logging.getLogger(__name__)

STATE_FILE = "ingest-state.json"
Source = tuple[str, str, str]  # (edge_id, stream, generation)


def parse_origin(value: bytes) -> tuple[Source, int] | None:
    try:
        edge, stream, gen, off = value.decode().split("/")
        return (edge, stream, gen), int(off)
    except (UnicodeDecodeError, ValueError):
        return None


def source_key(source: Source) -> str:
    return "/".join(source)


def origin_prefix(source: Source) -> bytes:
    """``b"edge/stream/generation/"``: how an ``origin`` header (and a JetStream mark)
    names ``source``, before the edge offset (safe names: ASCII)."""
    return f"{source[0]}/{source[1]}/{source[2]}/".encode()


def parse_source_key(text: str) -> Source | None:
    parts = text.split("/")
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


@dataclass
class IngestStats:
    batches: int = 0
    records_written: int = 0
    records_deduplicated: int = 0
    duplicates: int = 0
    partials: int = 0
    gaps: int = 0
    new_generations: int = 0
    unavailable: int = 0
    #: batches refused because they would open a position past a bound
    position_limited: int = 0


class IngestState:
    """The ingest's positions and marks, their checkpoint and their recovery.

    Runs on one asyncio event loop. ``Ingestor`` builds on it."""

    def __init__(self, store: PartitionStoreAPI, state_dir: Path,
                 checkpoint_interval_s: float = 1.0) -> None:
        self.store = store
        self.state_path = Path(state_dir) / STATE_FILE
        self.checkpoint_interval_s = checkpoint_interval_s
        # Optimistic: highest offset appended with the whole batch appended (used by decide).
        self._acked: dict[Source, int] = {}
        # Acked to the edge: durable. Checkpointed.
        self._durable: dict[Source, int] = {}
        self._marks: dict[tuple[str, int], dict[Source, int]] = defaultdict(dict)
        self._checkpoint_lock = asyncio.Lock()
        # One writer of the file at a time: a cancelled round's thread goes on writing
        # (the broker's stop cancels the periodic round, then checkpoints once more).
        self._write_lock = threading.Lock()
        # Checkpoint rounds (``checkpoint``): new positions waiting for the next round,
        # and how many rounds have started / completed (numbered from 1).
        self._known_pending: dict[Source, int] = {}
        self._rounds_started = 0
        self._rounds_done = 0
        # Topics ingest has written (checkpointed; a hint): a mirror may not claim them.
        self._ingested_topics: set[str] = set()
        #: positions (``_acked`` keys) per edge id: what ``max_positions_per_edge`` counts
        self._per_edge: Counter[str] = Counter()

    # -- recovery ------------------------------------------------------------------------

    def recover(self, exclude_topics: frozenset[str] = frozenset()) -> None:
        """Rebuild dedup state from the checkpoint and the partitions' tails.

        ``exclude_topics`` (mirror targets) are not replayed: their ``origin`` headers were
        written by another broker and say nothing about positions ingested here."""
        state = read_checkpoint(self.state_path, {})
        if not isinstance(state, dict):
            state = {}
        topics = state.get("ingest_topics")
        if isinstance(topics, list):  # those that still hold (or held) records
            known = set(self.store.topics())
            self._ingested_topics.update(
                t for t in topics if isinstance(t, str) and t in known
                and any(p.end_offset > 0 for p in self.store.partitions(t)))
        for text, off in (state.get("acked") or {}).items():
            src = parse_source_key(text)
            if src is not None and isinstance(off, int):
                self._acked[src] = self._durable[src] = off
        parts_state = state.get("partitions") or {}
        replayed = 0
        for part in self.store:
            if part.topic in exclude_topics:
                continue
            key = f"{part.topic}/{part.index}"
            saved = parts_state.get(key) if isinstance(parts_state, dict) else None
            marks: dict[Source, int] = {}
            start = part.start_offset
            if (isinstance(saved, dict) and isinstance(saved.get("end"), int)
                    and start <= saved["end"] <= part.end_offset):
                for text, off in (saved.get("sources") or {}).items():
                    src = parse_source_key(text)
                    if src is not None and isinstance(off, int):
                        marks[src] = off
                start = saved["end"]
            replayed += self._replay(part, start, marks)
            self._marks[(part.topic, part.index)] = marks
        # A position in the data but not in the checkpoint (lost or replaced): its edge may
        # hold acks, so it must not start over as a new position. -1 makes its next batch
        # a gap the edge rewinds to; the marks filter what is already stored.
        for marks in self._marks.values():
            for src in marks:
                self._acked.setdefault(src, -1)
        self._per_edge = Counter(src[0] for src in self._acked)
        if replayed:
            log.info("ingest state: replayed %d records from partition tails", replayed)

    @staticmethod
    def _replay(part: PartitionLog, start: int, marks: dict[Source, int]) -> int:
        def visit(value: bytes) -> None:
            if (o := parse_origin(value)) is not None:
                src, eoff = o
                if eoff > marks.get(src, -1):
                    marks[src] = eoff
        # Only the last header counts: the broker's own (see the module docstring).
        return part.replay_header(start, ORIGIN_HEADER, visit)

    # -- state ---------------------------------------------------------------------------

    def has_ingested(self, topic: str) -> bool:
        """True if ingest wrote ``topic`` (a mirror may not claim it). Known from this
        process and the checkpoint, not from the data: records a mirror copied carry
        ``origin`` headers too, and must not make a mirror's own topic look like one
        edges write."""
        return topic in self._ingested_topics

    def position_counts(self) -> tuple[int, int]:
        """(positions held, the most held by one edge): what ``max_positions`` and
        ``max_positions_per_edge`` bound, for the metrics (one pass over the edges)."""
        return len(self._acked), max(self._per_edge.values(), default=0)

    def positions(self, edge: str | None = None, stream: str | None = None,
                  generation: str | None = None) -> list[tuple[Source, int]]:
        """The positions held (of ``edge``, ``stream``, ``generation`` when given), each
        with its durable acked offset (-1: known from the data only), for
        ``cloud-broker positions``."""
        return [(src, self._durable.get(src, -1)) for src in self._acked
                if edge in (None, src[0]) and stream in (None, src[1])
                and generation in (None, src[2])]

    def forget(self, edge: str, stream: str | None = None, generation: str | None = None
               ) -> list[tuple[Source, int]]:
        """Drop the positions of ``edge`` (of one stream, one generation if given) with
        their marks; what was dropped. Offline only (``cloud-broker positions forget``):
        a forgotten position that sends again is taken as new. The next checkpoint, at
        the partitions' ends, keeps a restart from rebuilding them out of the records."""
        gone = self.positions(edge, stream, generation)
        for src, _ in gone:
            del self._acked[src]
            self._durable.pop(src, None)
            for marks in self._marks.values():
                marks.pop(src, None)
        self._per_edge = Counter(src[0] for src in self._acked)
        return gone

    def acked_offset(self, source: Source) -> int | None:
        return self._durable.get(source)

    async def checkpoint(self, known: dict[Source, int] | None = None) -> None:
        """Persist durable facts: acked offsets and per-partition marks at a durable end.

        ``known`` adds durable acked offsets not yet in ``_durable`` (a new position before
        its first ack); they count as durable once written. Returns once a checkpoint
        that started after this call has been written, so it holds everything known now.

        Calls are grouped, as a log's commit groups appends: one round runs at a time,
        and the callers waiting meanwhile are all served by the next round, which takes
        every pending ``known`` at once. One round per new position made admitting a
        fleet quadratic (each round writes every position): 1,000 new edges took 2.6 s
        of CPU, 3,000 took 21.7 s, and the first acks waited for all the rounds before.
        """
        for src, off in (known or {}).items():
            self._known_pending[src] = max(off, self._known_pending.get(src, -1))
        need = self._rounds_started + 1  # the first round to start from now on
        async with self._checkpoint_lock:
            if self._rounds_done >= need:
                return  # a round that started after this call has written it all
            self._rounds_started += 1
            this_round = self._rounds_started
            taken, self._known_pending = self._known_pending, {}
            try:
                await self._write_round(taken)
            except BaseException:
                for src, off in taken.items():  # the next round writes them instead
                    self._known_pending[src] = max(off, self._known_pending.get(src, -1))
                raise
            self._rounds_done = this_round

    async def _write_round(self, known: dict[Source, int]) -> None:
        # On the loop only copies of the maps (C speed); naming every position and the
        # JSON are the thread's: at max_positions (100,000) x 8 partitions that was
        # a third of a second of the event loop's time, every checkpoint.
        snap_parts: dict[str, tuple[int, dict[Source, int]]] = {}
        waits = []
        for part in self.store:
            if part.failed is not None:
                continue  # its marks may cover records that never became durable
            end = part.end_offset
            marks = self._marks.get((part.topic, part.index), {})
            snap_parts[f"{part.topic}/{part.index}"] = (end, dict(marks))
            if end > part.start_offset:
                waits.append(part.wait_durable(end - 1))
        durable = dict(self._durable)
        for src, off in known.items():
            durable[src] = max(off, durable.get(src, -1))
        topics = sorted(self._ingested_topics)
        await asyncio.gather(*waits)
        await asyncio.to_thread(_write_state, self._write_lock, self.state_path, durable,
                                topics, snap_parts)
        for src, off in known.items():
            if off > self._durable.get(src, -1):
                self._durable[src] = off

    async def run_checkpoints(self) -> None:
        """Background task: checkpoint periodically (cancel it to stop)."""
        while True:
            await asyncio.sleep(self.checkpoint_interval_s)
            try:
                await self.checkpoint()
            except (LogError, OSError) as exc:
                log.warning("ingest state checkpoint failed: %s", exc)


def _write_state(lock: threading.Lock, path: Path, durable: dict[Source, int],
                 topics: list[str], parts: dict[str, tuple[int, dict[Source, int]]]) -> None:
    """The checkpoint document (``IngestState.checkpoint``), built and written off the
    event loop, under ``lock``: never two writers of the temp file at once, and a
    round's thread, already running when a later round starts, writes first."""
    with lock:
        write_checkpoint(path, {
            "version": 1, "written_at": time.time(),
            "acked": {source_key(s): o for s, o in durable.items()},
            "ingest_topics": topics,
            "partitions": {key: {"end": end, "sources": {source_key(s): o
                                                         for s, o in marks.items()}}
                           for key, (end, marks) in parts.items()}})
