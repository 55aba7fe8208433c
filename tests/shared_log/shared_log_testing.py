"""Helpers shared by the shared_log tests (imported by name: pytest puts this directory
on sys.path). Record contents are a pure function of the offset, so any test can check
what it reads without keeping a copy of what it wrote.
"""

from __future__ import annotations

import hashlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from shared_log import Log, Record, StoredRecord
from shared_log._files import INDEX_SUFFIX, LOG_SUFFIX
from shared_log._records import HEADER_SIZE, BatchInfo, parse_header


def value_for(offset: int) -> bytes:
    """A value of 0..90 bytes derived from the offset."""
    digest = hashlib.sha256(offset.to_bytes(8, "big")).digest()
    return (digest * 3)[: digest[0] % 91]


def record_for(offset: int) -> Record:
    return Record(
        key=b"k%d" % offset,
        value=value_for(offset),
        timestamp=1_700_000_000_000 + offset,
        headers=(("o", str(offset).encode()),) if offset % 3 == 0 else (),
    )


def stored_for(offset: int) -> StoredRecord:
    r = record_for(offset)
    return StoredRecord(offset, r.key, r.value, r.timestamp, r.headers)


def batch_for(base: int, count: int) -> list[Record]:
    return [record_for(base + i) for i in range(count)]


def append_batch(log: Log, count: int) -> tuple[int, int]:
    """Append ``count`` derived records at the log's end offset."""
    first, last = log.append(batch_for(log.end_offset, count))
    assert last == first + count - 1
    return first, last


def read_all(log: Log, start: int | None = None, **kwargs: int) -> tuple[list[StoredRecord], list]:
    """Every record from ``start`` (default: the start offset) to the end, and the skips."""
    offset = log.start_offset if start is None else start
    records: list[StoredRecord] = []
    skipped = []
    while offset < log.end_offset:
        res = log.fetch(offset, **kwargs)
        assert res.next_offset > offset, f"fetch at {offset} made no progress"
        records.extend(res.records)
        skipped.extend(res.skipped)
        offset = res.next_offset
    return records, skipped


def log_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(LOG_SUFFIX))


def index_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(INDEX_SUFFIX))


def batches_in(path: Path) -> list[BatchInfo]:
    """The batches of an undamaged segment file, parsed independently of Segment."""
    data = path.read_bytes()
    out = []
    pos = 0
    while pos < len(data):
        info = parse_header(data[pos : pos + HEADER_SIZE], pos)
        out.append(info)
        pos += info.size
    assert pos == len(data), f"{path} does not end on a batch boundary"
    return out


def flip_bit(path: Path, bit: int) -> None:
    """Flip one bit of a file in place (bit 0 is the high bit of byte 0)."""
    with open(path, "r+b") as f:
        f.seek(bit // 8)
        b = f.read(1)[0]
        f.seek(bit // 8)
        f.write(bytes([b ^ (0x80 >> (bit % 8))]))
        f.flush()
        os.fsync(f.fileno())


def offsets_of(records: Sequence[StoredRecord]) -> list[int]:
    return [r.offset for r in records]


# -- the kill -9 writer ----------------------------------------------------------------------

WRITER = Path(__file__).resolve().parent / "crash_writer.py"
REPO = Path(__file__).resolve().parents[2]


class Writer:
    """crash_writer.py as a subprocess whose reported offsets are read by a thread."""

    def __init__(self, directory: Path, mode: str, segment_bytes: int, seed: int) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(directory), mode, str(segment_bytes), str(seed)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        self.reported: list[int] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _take(self, line: bytes | None) -> bool:
        if line is None:
            return False
        if line.endswith(b"\n"):  # a line cut by the kill was never reported
            self.reported.append(int(line))
        return True

    def wait_for(self, predicate, timeout: float = 60.0) -> None:
        """Block until ``predicate(self.reported)`` holds (the writer is alive and well)."""
        deadline = time.monotonic() + timeout
        while not predicate(self.reported):
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(remaining, 0))
            except queue.Empty:
                line = b""
            if remaining <= 0 or not self._take(line):
                self.proc.kill()
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"writer stopped or stalled: {err[-2000:]}")

    def kill9(self) -> list[int]:
        """SIGKILL the writer; every offset it reported before dying."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._thread.join(timeout=30)
        while self._take(self.lines.get(timeout=30)):
            pass
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.reported
