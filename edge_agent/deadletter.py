"""The dead-letter log: a small, bounded shared_log for input the agent refuses.

Strategy: bad input (see ``payload.REASONS``) must never stop the pipeline (G7), must be
visible, and must not fill the disk. So it goes to one more shared_log ``Log`` in
``<data_dir>/dead-letter/`` with a hard ``max_bytes`` cap and ``drop_oldest``: the newest
refusals are kept, the oldest fall off. Each entry keeps at most
``ingest.dead_letter_payload_bytes`` of the payload (an oversized payload is the problem,
not something to keep) and says why in its headers:

    key      the device key when known, else empty
    value    the first dead_letter_payload_bytes of the payload
    headers  reason, detail, stream, topic, size (original payload bytes), qos

Appends use the same group commit as the streams; a QoS 1 message is PUBACKed only after
its entry is durable, so a refusal is never lost and never redelivered forever. If even
the dead-letter log cannot be written (a real ENOSPC) the message is counted as
``dead_letter_failed`` and still acknowledged: bad input is not worth stalling for.

Read it with ``shared-log dump <data_dir>/dead-letter``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from shared_log import CommitMode, CommitPolicy, FullPolicy, Log, LogConfig, LogError, Record

log = logging.getLogger(__name__)

DIRECTORY = "dead-letter"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    stream: str  # "" when the topic matched no stream
    topic: str
    reason: str
    detail: str
    device: str
    payload: bytes
    qos: int


class DeadLetterLog:
    """Appends refusals in batches; counts them by (stream, reason)."""

    def __init__(self, data_dir: Path, max_bytes: int, payload_bytes: int,
                 commit_interval_ms: float) -> None:
        segment = max(1024, min(1 << 20, max_bytes // 4))
        # A single entry must always fit a segment, or drop_oldest could not make room.
        self.payload_bytes = min(payload_bytes, max(64, segment // 4))
        self.log = Log(data_dir / DIRECTORY, LogConfig(
            segment_bytes=segment,
            commit=CommitPolicy(CommitMode.GROUP, interval_ms=commit_interval_ms),
            max_bytes=max_bytes,
            full_policy=FullPolicy.DROP_OLDEST,
        ))
        self.counts: Counter[tuple[str, str]] = Counter()
        self.failed = 0
        self.last_error = ""

    def _record(self, d: DeadLetter, now_ms: int) -> Record:
        return Record(
            d.device.encode(), d.payload[: self.payload_bytes], now_ms,
            (("reason", d.reason.encode()), ("detail", d.detail.encode("utf-8", "replace")),
             ("stream", d.stream.encode()), ("topic", d.topic.encode("utf-8", "replace")),
             ("size", str(len(d.payload)).encode()), ("qos", str(d.qos).encode())),
        )

    def append(self, entries: list[DeadLetter]) -> int | None:
        """Write ``entries``; returns the offset to wait for, None when nothing was written."""
        if not entries:
            return None
        for d in entries:
            self.counts[(d.stream, d.reason)] += 1
        now_ms = int(time.time() * 1000)
        records = [self._record(d, now_ms) for d in entries]
        # Keep each batch well under the cap so drop_oldest can always make room.
        limit = max(1, self.log.config.segment_bytes // 2)
        last = None
        batch: list[Record] = []
        size = 0
        try:
            for r in records:
                rsize = len(r.value) + 256
                if batch and size + rsize > limit:
                    last = self.log.append(batch)[1]
                    batch, size = [], 0
                batch.append(r)
                size += rsize
            if batch:
                last = self.log.append(batch)[1]
        except (LogError, OSError) as exc:
            self.failed += len(entries)
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("dead-letter log cannot be written: %s", exc)
        return last

    async def wait_durable(self, offset: int | None) -> None:
        if offset is None:
            return
        try:
            await self.log.wait_durable_async(offset)
        except LogError as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"

    def hurry_commit(self) -> None:
        """Commit pending entries now (their readings' PUBACKs wait for them too)."""
        self.log.hurry_commit()

    def by_reason(self, stream: str | None = None) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (s, reason), n in self.counts.items():
            if stream is None or s == stream:
                out[reason] += n
        return dict(out)

    def close(self) -> None:
        self.log.close()
