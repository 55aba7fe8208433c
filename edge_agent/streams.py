"""Per-stream local storage: the log, its generation and the acked-offset checkpoint.

Strategy: each stream lives in ``<data_dir>/streams/<name>/``: the shared_log segments,
``generation`` (a random id created together with the log) and ``acked`` (the last offset
the cloud acknowledged). They sit in one directory on purpose: a wiped or replaced
directory loses all three together, so the log starts over under a *new* generation and
offsets are never reused under an old one (litestream's idea; G3). A generation file
without segments, or segments without a generation file, also mean "continuity cannot be
verified" and start a new generation.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from shared_log import (
    CommitMode,
    CommitPolicy,
    FullPolicy,
    Log,
    LogConfig,
    atomic_write,
    read_checkpoint,
    write_checkpoint,
)

from .config import EdgeConfig, StreamConfig

GENERATION_FILE = "generation"
ACKED_FILE = "acked"


def new_generation() -> str:
    return secrets.token_hex(8)


@dataclass
class StreamStore:
    """The local side of one stream. Single-threaded use from the agent's event loop."""

    config: StreamConfig
    directory: Path
    log: Log
    generation: str
    acked_offset: int  # last offset the cloud acknowledged (start_offset - 1 if none)
    new_generation: bool

    _persisted: int = -2
    #: segments holding offsets >= this are kept even when acked (None: no floor). The
    #: ingest sets it to the offset its dedup checkpoint covers (see edge_agent.dedup).
    delete_floor: int | None = None
    #: segments holding offsets >= this are kept for the transforms, which resume from
    #: their checkpoint's input offset after a crash (edge_agent.transforms.runner)
    keep_from: int | None = None

    def note_acked(self, offset: int) -> None:
        """Record a cloud ack and free whole segments below it.

        Freeing before the checkpoint is persisted is safe: after a crash the stale
        checkpoint is raised to the log's start, and the cloud deduplicates the rest.
        """
        if offset <= self.acked_offset:
            return
        self.acked_offset = offset
        self.free_acked()

    def free_acked(self) -> int:
        """Delete whole segments below the acked offset and the delete floor."""
        limit = self.acked_offset + 1
        if self.delete_floor is not None:
            limit = min(limit, self.delete_floor)
        if self.keep_from is not None:
            limit = min(limit, self.keep_from)
        return self.log.delete_before(limit)

    @property
    def persist_due(self) -> bool:
        """Whether the acked offset moved since its checkpoint was last written."""
        return self.acked_offset != self._persisted

    def persist_acked(self) -> None:
        """Write the acked checkpoint when it moved (temp file + fsync + rename)."""
        # Read the offset once: this runs in a worker thread while the event loop moves
        # acked_offset on, and recording a later value than the one written would make
        # the next persist skip it.
        offset = self.acked_offset
        if offset != self._persisted:
            write_checkpoint(self.directory / ACKED_FILE,
                             {"generation": self.generation, "offset": offset})
            self._persisted = offset

    @property
    def backlog_records(self) -> int:
        return max(0, self.log.end_offset - max(self.acked_offset + 1, self.log.start_offset))

    @property
    def backlog_bytes(self) -> int:
        """Bytes of segments holding unacknowledged records (whole segments, an upper bound)."""
        first = self.acked_offset + 1
        return sum(size for _base, nxt, size in self.log.segments_info() if nxt > first)


def _has_segments(directory: Path) -> bool:
    return directory.exists() and any(n.endswith(".log") for n in os.listdir(directory))


def log_config_for(stream: StreamConfig, commit_interval_ms: float) -> LogConfig:
    return LogConfig(
        segment_bytes=stream.segment_bytes,
        commit=CommitPolicy(CommitMode.GROUP, interval_ms=commit_interval_ms),
        max_bytes=stream.max_bytes,
        full_policy=FullPolicy(stream.full_policy),
    )


def open_stream(config: EdgeConfig, stream: StreamConfig) -> StreamStore:
    """Open (or create) a stream's local storage, choosing its generation."""
    directory = config.data_dir / "streams" / stream.name
    existed = _has_segments(directory)
    log = Log(directory, log_config_for(stream, config.ingest.commit_interval_ms))
    gen_path = directory / GENERATION_FILE
    generation = None
    if existed and gen_path.exists():
        text = gen_path.read_text().strip()
        generation = text if text.isalnum() and 0 < len(text) <= 64 else None
    fresh = generation is None
    if fresh:
        generation = new_generation()
        atomic_write(gen_path, generation.encode())
    acked = log.start_offset - 1
    saved = read_checkpoint(directory / ACKED_FILE, {})
    if (not fresh and isinstance(saved, dict) and saved.get("generation") == generation
            and isinstance(saved.get("offset"), int)):
        acked = max(acked, min(saved["offset"], log.end_offset - 1))
    return StreamStore(stream, directory, log, generation, acked, fresh)
