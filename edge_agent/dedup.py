"""Per-device high-water marks of sequence numbers (G5), derived from the stream's log.

Strategy: the log is the source of truth. Every stored reading that carried a sequence
number keeps it in its ``seq`` record header, so the marks can always be recomputed by
reading the log. To open in time proportional to the recent tail, a checkpoint
``<stream dir>/dedup.json`` holds ``{generation, offset, marks}``: the marks of every
record below ``offset``. It is only written for offsets that are already durable, so it
never claims a reading that a crash could still lose; on open the log is replayed from the
checkpoint's offset (or from the start when the checkpoint is missing, from another
generation, or points outside the log) up to the end.

A reading is a duplicate when its sequence is <= its device's mark. MQTT redelivers in
order, so this drops exactly the redeliveries of readings that reached the log before a
crash (with or without the DUP flag), and a device restarting its sequence at 0 has to
change its key or its stream's generation (documented in docs/edge-agent.md).

The checkpoint also bounds segment deletion: the agent keeps segments from the
checkpoint's offset on (``StreamStore.delete_floor``), so a crash can never leave marks
that neither the checkpoint nor the remaining log remember.

Not thread-safe: used from the agent's event loop only.
"""

from __future__ import annotations

from pathlib import Path

from shared_log import Log, OffsetOutOfRange, read_checkpoint, write_checkpoint

SEQ_HEADER = "seq"
CHECKPOINT_FILE = "dedup.json"


class HighWaterMarks:
    """device -> highest sequence number stored in the log."""

    __slots__ = ("dirty", "marks")

    def __init__(self, marks: dict[str, int] | None = None) -> None:
        self.marks: dict[str, int] = dict(marks or {})
        self.dirty = False

    def is_duplicate(self, device: str, seq: int) -> bool:
        return seq <= self.marks.get(device, -1)

    def update(self, changes: dict[str, int]) -> None:
        """Apply the marks of readings that were appended to the log."""
        if changes:
            self.marks.update(changes)
            self.dirty = True

    def __len__(self) -> int:
        return len(self.marks)

    # -- persistence ---------------------------------------------------------------------

    def replay(self, log: Log, start: int, end: int | None = None, chunk: int = 1000) -> int:
        """Raise marks from the ``seq`` headers of records in [start, end); returns records read."""
        end = log.end_offset if end is None else end
        pos = max(start, log.start_offset)
        n = 0
        marks = self.marks
        while pos < end:
            try:
                res = log.fetch(pos, max_records=chunk, max_bytes=1 << 20)
            except OffsetOutOfRange:
                break
            for rec in res.records:
                if rec.offset >= end:
                    break
                n += 1
                for name, value in rec.headers:
                    if name == SEQ_HEADER:
                        try:
                            seq = int(value)
                        except ValueError:
                            break
                        device = rec.key.decode("utf-8", "replace")
                        if seq > marks.get(device, -1):
                            marks[device] = seq
                        break
            if res.next_offset <= pos:
                break
            pos = res.next_offset
        return n


def load_marks(directory: Path, log: Log, generation: str) -> tuple[HighWaterMarks, int]:
    """Marks for a stream's log: checkpoint + replay of the tail. Returns (marks, replayed)."""
    saved = read_checkpoint(directory / CHECKPOINT_FILE, {})
    marks = HighWaterMarks()
    start = log.start_offset
    if (isinstance(saved, dict) and saved.get("generation") == generation
            and isinstance(saved.get("offset"), int) and isinstance(saved.get("marks"), dict)
            and saved["offset"] <= log.end_offset):
        # Below the log's start (drop_oldest deleted segments) the saved marks are still
        # facts; above its end they could claim readings the log lost, so they are unused.
        marks.marks = {str(k): int(v) for k, v in saved["marks"].items()
                       if isinstance(v, int) and not isinstance(v, bool)}
        start = max(saved["offset"], log.start_offset)
    replayed = marks.replay(log, start)
    return marks, replayed


def save_marks(directory: Path, generation: str, offset: int, marks: dict[str, int]) -> None:
    """Persist marks covering every record below ``offset`` (which must be durable)."""
    write_checkpoint(directory / CHECKPOINT_FILE,
                     {"generation": generation, "offset": offset, "marks": marks})
