"""Per-device sequence marks (G5), derived from the stream's log, bounded in size.

Strategy: the log is the source of truth. Every stored reading that carried a sequence
number keeps it in its ``seq`` record header (and its boot epoch, when it had one, in an
``epoch`` header), so the marks can always be recomputed by reading the log. To open in
time proportional to the recent tail, a checkpoint ``<stream dir>/dedup.json`` holds
``{generation, offset, devices}``: the marks of every record below ``offset``. It is only
written for offsets that are already durable, so it never claims a reading that a crash
could still lose; on open the log is replayed from the checkpoint's offset (or from the
start when the checkpoint is missing, from another generation, or points outside the log)
up to the end.

The rule (``judge``) for a reading (epoch, seq) of a device whose mark is
(epoch E, seq S) and whose previous boot ended at (E', S'):

    same epoch, seq > S                    new reading: accept
    same epoch, S - window <= seq <= S     a redelivery: duplicate, dropped
    same epoch, seq < S - window           the device restarted its sequence (or S was
                                           absurd, e.g. 2**63-1): accept, a "window" reset
    epoch E', S' - window <= seq <= S'     a late redelivery from the previous boot: drop
    any other epoch                        the device rebooted: accept, an "epoch" reset

MQTT redelivers in order and holds at most ``mqtt.receive_maximum`` messages
unacknowledged, so a redelivery is never further back than that: ``window`` must be at
least that (default 1000 = receive_maximum). A device without an epoch field that
restarts before it has sent ``window`` readings is still taken for a redelivery until its
sequence passes the old mark; such devices should send an epoch (a boot counter or a
random boot id). Epochs are opaque strings: only equality matters, so an absurd epoch
costs one reset, not a stream.

After an accepted reading the mark becomes (epoch, seq); when the epoch changed, the old
mark becomes the previous boot. That transition (``advance``) needs no decision, so
replaying the appended records in log order rebuilds exactly the state the live pipeline
had: the checkpoint + replay stay consistent across kill -9.

Bound: at most ``max_devices`` marks, kept in order of the last appended reading (an
``OrderedDict``, moved to the end on every append, in log order both live and on replay);
past the bound the least recently appended device is evicted and counted. An evicted
device is new again: its next reading is accepted whatever its sequence, so a redelivery
of its readings after a crash would be stored twice. Eviction only hits a device that has
not had a reading appended while ``max_devices`` others had, far longer ago than any
redelivery, so in practice only devices that went away lose their mark.

The checkpoint also bounds segment deletion: the agent keeps segments from the
checkpoint's offset on (``StreamStore.delete_floor``), so a crash can never leave marks
that neither the checkpoint nor the remaining log remember.

Not thread-safe: used from the agent's event loop only.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from shared_log import Log, OffsetOutOfRange, read_checkpoint, write_checkpoint

log = logging.getLogger(__name__)

SEQ_HEADER = "seq"
EPOCH_HEADER = "epoch"
CHECKPOINT_FILE = "dedup.json"
DEFAULT_WINDOW = 1000
DEFAULT_MAX_DEVICES = 100_000

#: (epoch, seq, previous boot's epoch or None, previous boot's last seq)
Mark = tuple[str, int, "str | None", int]

ACCEPT, DUPLICATE, RESET_WINDOW, RESET_EPOCH = 0, 1, 2, 3
#: the ``cause`` label of edge_sequence_resets_total per verdict
RESET_CAUSES = {RESET_WINDOW: "window", RESET_EPOCH: "epoch"}


def judge(mark: Mark | None, epoch: str, seq: int, window: int) -> int:
    """ACCEPT, DUPLICATE, RESET_WINDOW or RESET_EPOCH for a reading; see the module rule."""
    if mark is None:
        return ACCEPT
    if epoch == mark[0]:
        last = mark[1]
        if seq > last:
            return ACCEPT
        return DUPLICATE if seq >= last - window else RESET_WINDOW
    if epoch == mark[2] and mark[3] - window <= seq <= mark[3]:
        return DUPLICATE
    return RESET_EPOCH


def advance(mark: Mark | None, epoch: str, seq: int) -> Mark:
    """The mark after a reading (epoch, seq) was appended."""
    if mark is None:
        return (epoch, seq, None, -1)
    if epoch == mark[0]:
        return (epoch, seq, mark[2], mark[3])
    return (epoch, seq, mark[0], mark[1])


class HighWaterMarks:
    """device -> Mark of the last reading appended, at most ``max_devices`` of them."""

    __slots__ = ("dirty", "evictions", "marks", "max_devices", "window")

    def __init__(self, marks: dict[str, Mark] | None = None, *, window: int = DEFAULT_WINDOW,
                 max_devices: int = DEFAULT_MAX_DEVICES) -> None:
        self.marks: OrderedDict[str, Mark] = OrderedDict(marks or {})
        self.window = window
        self.max_devices = max_devices
        self.evictions = 0
        self.dirty = False
        self._evict()

    def is_duplicate(self, device: str, seq: int, epoch: str = "") -> bool:
        return judge(self.marks.get(device), epoch, seq, self.window) == DUPLICATE

    def apply(self, appended: Iterable[tuple[str, str, int]]) -> None:
        """Advance the marks by readings (device, epoch, seq) appended, in log order."""
        marks = self.marks
        get, move = marks.get, marks.move_to_end
        limit = self.max_devices
        changed = False
        for device, epoch, seq in appended:  # advance(), inlined: once per stored reading
            m = get(device)
            if m is None:
                marks[device] = (epoch, seq, None, -1)  # inserted last: the newest
                # Evict per record, not per batch: the result must not depend on how the
                # records were grouped (live batches vs. replay chunks).
                if len(marks) > limit:
                    marks.popitem(last=False)
                    self.evictions += 1
            else:
                marks[device] = ((epoch, seq, m[2], m[3]) if epoch == m[0]
                                 else (epoch, seq, m[0], m[1]))
                move(device)
            changed = True
        if changed:
            self.dirty = True

    def _evict(self) -> None:
        marks = self.marks
        over = len(marks) - self.max_devices
        if over > 0:
            for _ in range(over):
                marks.popitem(last=False)
            self.evictions += over

    def __len__(self) -> int:
        return len(self.marks)

    # -- persistence ---------------------------------------------------------------------

    def replay(self, log: Log, start: int, end: int | None = None, chunk: int = 1000) -> int:
        """Advance the marks by the records in [start, end); returns records read."""
        end = log.end_offset if end is None else end
        pos = max(start, log.start_offset)
        n = 0
        while pos < end:
            try:
                res = log.fetch(pos, max_records=chunk, max_bytes=1 << 20)
            except OffsetOutOfRange:
                break
            appended: list[tuple[str, str, int]] = []
            for rec in res.records:
                if rec.offset >= end:
                    break
                n += 1
                seq: int | None = None
                epoch = ""
                for name, value in rec.headers:
                    if name == SEQ_HEADER:
                        try:
                            seq = int(value)
                        except ValueError:
                            seq = None
                    elif name == EPOCH_HEADER:
                        epoch = value.decode("utf-8", "replace")
                if seq is not None:
                    appended.append((rec.key.decode("utf-8", "replace"), epoch, seq))
            self.apply(appended)
            if res.next_offset <= pos:
                break
            pos = res.next_offset
        return n


def _parse_rows(saved: dict[str, Any]) -> OrderedDict[str, Mark] | None:
    """Marks from a checkpoint: ``devices`` rows, or the older ``marks`` {device: seq}."""
    out: OrderedDict[str, Mark] = OrderedDict()
    rows = saved.get("devices")
    if isinstance(rows, list):
        for row in rows:
            if not (isinstance(row, list) and len(row) == 5):
                return None
            device, epoch, seq, prev_epoch, prev_seq = row
            if not (isinstance(device, str) and isinstance(epoch, str)
                    and type(seq) is int and type(prev_seq) is int
                    and (prev_epoch is None or isinstance(prev_epoch, str))):
                return None
            out[device] = (epoch, seq, prev_epoch, prev_seq)
        return out
    old = saved.get("marks")
    if isinstance(old, dict):
        for k, v in old.items():
            if type(v) is int:
                out[str(k)] = ("", v, None, -1)
        return out
    return None


def load_marks(directory: Path, log: Log, generation: str, *, window: int = DEFAULT_WINDOW,
               max_devices: int = DEFAULT_MAX_DEVICES) -> tuple[HighWaterMarks, int]:
    """Marks for a stream's log: checkpoint + replay of the tail. Returns (marks, replayed)."""
    saved = read_checkpoint(directory / CHECKPOINT_FILE, {})
    marks = HighWaterMarks(window=window, max_devices=max_devices)
    start = log.start_offset
    if (isinstance(saved, dict) and saved.get("generation") == generation
            and type(saved.get("offset")) is int and saved["offset"] <= log.end_offset):
        rows = _parse_rows(saved)
        if rows is not None:
            # Below the log's start (drop_oldest deleted segments) the saved marks are still
            # facts; above its end they could claim readings the log lost, so they are unused.
            marks = HighWaterMarks(rows, window=window, max_devices=max_devices)
            marks.evictions = 0
            start = max(saved["offset"], log.start_offset)
    replayed = marks.replay(log, start)
    return marks, replayed


def save_marks(directory: Path, generation: str, offset: int,
               marks: HighWaterMarks | Mapping[str, Mark | int]) -> None:
    """Persist marks covering every record below ``offset`` (which must be durable).

    ``marks``: the marks, or a snapshot of their dict taken on the event loop (its order is
    the eviction order); plain ints are sequences without an epoch (the older form).
    """
    items = marks.marks.items() if isinstance(marks, HighWaterMarks) else marks.items()
    rows = [[device, "", m, None, -1] if type(m) is int else [device, *m]  # type: ignore[misc]
            for device, m in items]
    write_checkpoint(directory / CHECKPOINT_FILE,
                     {"version": 2, "generation": generation, "offset": offset,
                      "devices": rows})


def checkpoint_recovered(store: Any, marks: HighWaterMarks) -> None:
    """At start, everything recovered is durable: checkpoint the marks and let the stream
    (an ``edge_agent.streams.StreamStore``) delete segments up to its end. A full disk
    must not stop the start (G7): then every segment is kept until the dedup loop's own
    checkpoint succeeds (it retries)."""
    try:
        save_marks(store.directory, store.generation, store.log.end_offset, marks.marks)
        store.delete_floor = store.log.end_offset
    except OSError as exc:
        log.warning("stream %s: dedup checkpoint at start failed: %s", store.config.name, exc)
        marks.dirty = True
        store.delete_floor = store.log.start_offset
