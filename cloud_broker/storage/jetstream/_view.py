"""What one broker node knows of a partition's stream: the offset index, the origin
marks, a tail cache of message bodies.

Strategy: a partition is one JetStream stream and every message of it is one piece, a
shared_log batch (docs/log-format.md) of ``count`` records whose offsets are
``base .. base + count - 1``. The view is built by applying the stream's messages in
sequence order (``apply``), whether this node published them (their ack gives the
sequence) or another node did (read back on a catch-up). Applying is pure bookkeeping:
no I/O, so the rules that make offsets dense and marks exact are tested directly.

- Offsets are dense: a piece must start where the previous one ended (``base == end``).
  The writer guarantees it (it publishes with ``Nats-Expected-Last-Sequence``, so the
  piece lands right after the message it computed ``base`` from); a message that breaks
  it is refused here (``ViewError``) rather than served with wrong offsets. A piece of
  no records (``count == 0``) only moves an empty partition's base (``rebase_empty``).
- Marks: the ``Es-Origin`` header of a piece names its source and its last edge offset
  (``edge/stream/generation/offset``); ``marks[source]`` is the highest one applied, the
  ingest's per-partition floor (cloud_broker.ingest).
- Retention deletes whole messages from the front (``trim``).
- The cache keeps the newest bodies up to ``cache_bytes``, so live consumers are served
  from memory; older bodies are read from the stream.

Concurrency: one writer (the store's client loop); readers in other threads read the
lists, which only grow at the end or lose entries at the front under ``lock``.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass


class ViewError(Exception):
    """A message that cannot continue the partition (a broken offset chain)."""


@dataclass(frozen=True, slots=True)
class Piece:
    """One stream message as the view needs it."""

    seq: int
    base: int
    count: int
    size: int
    max_timestamp: int
    origin: bytes | None = None  # b"edge/stream/generation/offset" of its last record
    tag: bytes | None = None  # the writer's id for this publish (recognised after a timeout)


def split_origin(value: bytes) -> tuple[bytes, int] | None:
    """(b"edge/stream/generation/", offset) of an origin value, None when malformed."""
    head, sep, tail = value.rpartition(b"/")
    if not sep or not tail.isdigit() or head.count(b"/") != 2:
        return None
    return head + b"/", int(tail)


class PartitionView:
    """The offset index, marks and tail cache of one stream (see the module docstring)."""

    def __init__(self, cache_bytes: int = 32 << 20) -> None:
        self.lock = threading.Lock()
        self.seqs: list[int] = []
        self.bases: list[int] = []
        self.counts: list[int] = []
        self.sizes: list[int] = []
        self.times: list[int] = []
        self.last_seq = 0  # the highest sequence applied (0: none)
        self.start = 0
        self.end = 0
        self.size_bytes = 0
        self.held_records = False  # a piece with records was ever applied
        self.marks: dict[bytes, int] = {}
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cached = 0

    def apply(self, piece: Piece, body: bytes | None = None) -> None:
        """Add the next message of the stream (sequence order)."""
        if piece.seq <= self.last_seq:
            raise ViewError(f"sequence {piece.seq} applied after {self.last_seq}")
        empty = not self.seqs
        if piece.count == 0:
            if self.held_records or not empty:
                raise ViewError(f"a rebase at sequence {piece.seq} of a partition that "
                                "holds records")
            with self.lock:
                self.last_seq = piece.seq
                self.start = self.end = piece.base
            return
        if piece.base != self.end and not (empty and not self.held_records):
            raise ViewError(f"message {piece.seq} starts at offset {piece.base}, the "
                            f"partition ends at {self.end}")
        with self.lock:
            if empty:
                self.start = piece.base
            self.seqs.append(piece.seq)
            self.bases.append(piece.base)
            self.counts.append(piece.count)
            self.sizes.append(piece.size)
            self.times.append(piece.max_timestamp)
            self.last_seq = piece.seq
            self.end = piece.base + piece.count
            self.size_bytes += piece.size
            self.held_records = True
        if piece.origin is not None and (o := split_origin(piece.origin)) is not None:
            source, offset = o
            if offset > self.marks.get(source, -1):
                self.marks[source] = offset
        if body is not None:
            self.remember(piece.seq, body)

    def skip_to(self, seq: int) -> None:
        """Messages below ``seq`` were deleted before this node read them (retention)."""
        with self.lock:
            self.last_seq = max(self.last_seq, seq - 1)

    def remember(self, seq: int, body: bytes) -> None:
        if len(body) > self.cache_bytes:
            return
        with self.lock:
            if seq in self._cache:
                return
            self._cache[seq] = body
            self._cached += len(body)
            while self._cached > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached -= len(old)

    def cached(self, seq: int) -> bytes | None:
        return self._cache.get(seq)

    def following(self, seq: int, nbytes: int) -> tuple[list[int], int]:
        """The sequences after ``seq`` whose bodies add up to at most ``nbytes`` (at least
        one when there is any), up to the first body the cache holds; and their bytes."""
        with self.lock:
            i = bisect.bisect_right(self.seqs, seq)
            out: list[int] = []
            total = 0
            while i < len(self.seqs) and (not out or total + self.sizes[i] <= nbytes):
                if self.seqs[i] in self._cache:
                    break
                out.append(self.seqs[i])
                total += self.sizes[i]
                i += 1
            return out, total

    def bytes_of(self, seqs: Sequence[int]) -> int:
        """The stored bytes of the messages ``seqs`` (0 for one the view no longer has)."""
        with self.lock:
            total = 0
            for seq in seqs:
                i = bisect.bisect_left(self.seqs, seq)
                if i < len(self.seqs) and self.seqs[i] == seq:
                    total += self.sizes[i]
            return total

    def locate(self, offset: int) -> int:
        """Index of the entry holding ``offset`` (start <= offset < end)."""
        return bisect.bisect_right(self.bases, offset) - 1

    def trim(self, first_seq: int) -> int:
        """Forget the entries below sequence ``first_seq``; records forgotten."""
        with self.lock:
            n = bisect.bisect_left(self.seqs, first_seq)
            if n == 0:
                return 0
            if n >= len(self.seqs):  # the last message is never deleted by us
                n = len(self.seqs) - 1
                if n <= 0:
                    return 0
            gone = sum(self.counts[:n])
            self.size_bytes -= sum(self.sizes[:n])
            for seq in self.seqs[:n]:
                body = self._cache.pop(seq, None)
                if body is not None:
                    self._cached -= len(body)
            del self.seqs[:n], self.bases[:n], self.counts[:n], self.sizes[:n]
            del self.times[:n]
            self.start = self.bases[0]
            return gone

    def retention_cut(self, retention_bytes: int | None, retention_ms: int | None,
                      now_ms: int) -> int | None:
        """The first sequence retention keeps, None when nothing is to go. The newest
        message always stays (it carries the end offset across a restart)."""
        n = len(self.seqs)
        keep_from = 0
        if retention_bytes is not None:
            total = 0
            for i in range(n - 1, -1, -1):
                total += self.sizes[i]
                if total > retention_bytes:
                    keep_from = i + 1
                    break
        if retention_ms is not None:
            limit = now_ms - retention_ms
            # as Kafka's segments: from the front, up to the first message new enough
            old = next((i for i, t in enumerate(self.times) if t >= limit), n)
            keep_from = max(keep_from, old)
        keep_from = min(keep_from, n - 1)
        return self.seqs[keep_from] if keep_from > 0 else None
