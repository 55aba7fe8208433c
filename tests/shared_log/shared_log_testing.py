"""Helpers shared by the shared_log tests (imported by name: pytest puts this directory
on sys.path). Record contents are a pure function of the offset, so any test can check
what it reads without keeping a copy of what it wrote.
"""

from __future__ import annotations

import hashlib
import os
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
