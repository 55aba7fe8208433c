"""What the broker has seen of each edge stream lately: for the operators' dashboard.

Strategy: the ingest endpoint reports every decoded batch's outcome here (acked, refused,
failed) keyed by (edge, stream); the dashboard (http.dashboard) lists them. Nothing here
is durable or used for a decision: it is a view, rebuilt from traffic after a restart.
Bounded: at most ``max_edges`` entries, the least recently seen dropped first (an edge
id is chosen by whoever holds an ingest token, so the table must not grow with them), and
an error text is cut to ``MAX_ERROR_CHARS``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, fields

MAX_ERROR_CHARS = 200


@dataclass(slots=True)
class EdgeSeen:
    edge_id: str
    stream: str
    topic: str
    generation: str
    first_seen: float
    last_seen: float
    acked_offset: int = -1  # the last offset acked to it (-1: none yet)
    batches: int = 0
    records: int = 0
    errors: int = 0
    last_error: str = ""
    last_error_at: float | None = None

    def to_dict(self) -> dict[str, object]:
        # by hand: dataclasses.asdict deep-copies every value (40 us an entry)
        return {name: getattr(self, name) for name in _FIELDS}


_FIELDS = tuple(f.name for f in fields(EdgeSeen))


class EdgeActivity:
    """A bounded table of edge streams by last contact. Runs on one event loop."""

    def __init__(self, max_edges: int = 10_000,
                 clock: Callable[[], float] = time.time) -> None:
        self.max_edges = max_edges
        self.clock = clock
        self._seen: OrderedDict[tuple[str, str], EdgeSeen] = OrderedDict()

    def _entry(self, edge_id: str, stream: str, topic: str, generation: str) -> EdgeSeen:
        now = self.clock()
        key = (edge_id, stream)
        entry = self._seen.get(key)
        if entry is None:
            entry = self._seen[key] = EdgeSeen(edge_id, stream, topic, generation, now, now)
            while len(self._seen) > self.max_edges:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(key)
            entry.last_seen = now
            entry.topic = topic
            if entry.generation != generation:
                entry.generation, entry.acked_offset = generation, -1
        return entry

    def acked(self, edge_id: str, stream: str, topic: str, generation: str,
              acked_offset: int, records: int) -> None:
        entry = self._entry(edge_id, stream, topic, generation)
        entry.batches += 1
        entry.records += records
        entry.acked_offset = max(entry.acked_offset, acked_offset)

    def failed(self, edge_id: str, stream: str, topic: str, generation: str,
               error: str) -> None:
        entry = self._entry(edge_id, stream, topic, generation)
        entry.errors += 1
        entry.last_error = error[:MAX_ERROR_CHARS]
        entry.last_error_at = entry.last_seen

    def __len__(self) -> int:
        return len(self._seen)

    def recent(self, limit: int, topic_ok: Callable[[str], bool]) -> list[dict[str, object]]:
        """Up to ``limit`` entries whose topic passes ``topic_ok``, most recent first."""
        out: list[dict[str, object]] = []
        for entry in reversed(self._seen.values()):
            if len(out) >= limit:
                break
            if topic_ok(entry.topic):
                out.append(entry.to_dict())
        return out


__all__ = ["MAX_ERROR_CHARS", "EdgeActivity", "EdgeSeen"]
