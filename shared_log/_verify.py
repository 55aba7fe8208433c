"""Offline verification of a log directory: every batch, every index entry, no writes.

Strategy: the checker re-reads each ``.log`` file through a read-only ``mmap`` and
re-checks everything the writer promises in docs/log-format.md (framing, CRC, record
framing, dense offsets inside and across segments, index entries on batch boundaries)
with its own scan, independent of Segment's read path, so a bug in recovery cannot hide
a problem from it. Only the "what would a read-write open truncate" preview opens the
log itself (``Log(dir, read_only=True)`` recovers without truncating), because the point
there is to predict exactly what that code will do. Results are plain data (a
VerifyReport); printing is cli.py's job.

Severity: the data (``.log`` files) is the truth, so anything wrong there is an error.
The index is derived and rebuilt on open, and the recovery point is a hint, so their
problems are warnings.

Never writes: files are opened ``rb``, mapped ``ACCESS_READ``, and the Log used for the
preview is opened ``read_only``.
"""

from __future__ import annotations

import enum
import mmap
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ._errors import CorruptBatch, LogError
from ._files import INDEX_SUFFIX, LOG_SUFFIX, parse_segment_name, read_checkpoint
from ._index import ENTRY_SIZE
from ._log import RECOVERY_POINT, Log
from ._records import HEADER_SIZE, BatchInfo, decode_records, parse_header, verify_batch

_ENTRY = struct.Struct(">II")
#: bytes 8..9 of every batch: magic 1, attributes 0. Used to re-synchronise after damage.
_SYNC = b"\x01\x00"


class Severity(enum.Enum):
    #: the data itself is damaged or inconsistent: ``verify`` exits 1.
    ERROR = "error"
    #: derived or advisory files are off (rebuilt on open), or a hazard worth knowing.
    WARNING = "warning"


class Kind(enum.Enum):
    #: a batch failed its CRC, framing or record framing; offsets from the next good batch.
    CORRUPT_BATCH = "corrupt_batch"
    #: unverifiable bytes at the end of the last segment (an interrupted write, usually).
    TORN_TAIL = "torn_tail"
    #: offsets missing between two good batches or between two segments.
    OFFSET_GAP = "offset_gap"
    #: a batch or segment repeats offsets already seen.
    OFFSET_OVERLAP = "offset_overlap"
    #: a read-write open would truncate batches that verify found intact.
    RECOVERY_TRUNCATES = "recovery_truncates"
    #: a non-empty segment has no index file (rebuilt on open).
    INDEX_MISSING = "index_missing"
    #: an index file the log ignores and rebuilds (bad size, unsorted, out of the file).
    INDEX_INVALID = "index_invalid"
    #: sorted index entries that do not point at a good batch with the stated offset.
    #: (Log rebuilds an index whose entry headers do not match, but not for a bad CRC.)
    INDEX_MISMATCH = "index_mismatch"
    #: an ``.index`` file without its ``.log``.
    ORPHAN_INDEX = "orphan_index"
    #: the recovery-point checkpoint is unreadable or beyond the end of the log.
    RECOVERY_POINT = "recovery_point"


_SEVERITY = {
    Kind.CORRUPT_BATCH: Severity.ERROR,
    Kind.TORN_TAIL: Severity.ERROR,
    Kind.OFFSET_GAP: Severity.ERROR,
    Kind.OFFSET_OVERLAP: Severity.ERROR,
    Kind.RECOVERY_TRUNCATES: Severity.WARNING,
    Kind.INDEX_MISSING: Severity.WARNING,
    Kind.INDEX_INVALID: Severity.WARNING,
    Kind.INDEX_MISMATCH: Severity.WARNING,
    Kind.ORPHAN_INDEX: Severity.WARNING,
    Kind.RECOVERY_POINT: Severity.WARNING,
}


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding. ``position``/``length`` are bytes in ``file``; offsets None = unknown."""

    kind: Kind
    file: str
    message: str
    position: int | None = None
    length: int | None = None
    first_offset: int | None = None
    last_offset: int | None = None

    @property
    def severity(self) -> Severity:
        return _SEVERITY[self.kind]

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["kind"] = self.kind.value
        d["severity"] = self.severity.value
        return d


@dataclass(slots=True)
class SegmentReport:
    """What the scan found in one segment."""

    file: str
    base_offset: int
    next_offset: int  # one past the last offset accounted for (good or reported lost)
    batches: int = 0  # good batches
    records: int = 0  # records in good batches
    bytes: int = 0  # file size
    valid_bytes: int = 0  # end of the last good batch
    index_entries: int | None = None  # entries in the .index file, None when missing


@dataclass(slots=True)
class VerifyReport:
    directory: str
    segments: list[SegmentReport] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    recovery_point: int | None = None

    @property
    def start_offset(self) -> int:
        return self.segments[0].base_offset if self.segments else 0

    @property
    def end_offset(self) -> int:
        return self.segments[-1].next_offset if self.segments else 0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, object]:
        return {
            "directory": self.directory,
            "ok": self.ok,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "start_offset": self.start_offset,
            "end_offset": self.end_offset,
            "recovery_point": self.recovery_point,
            "segments": [asdict(s) for s in self.segments],
            "problems": [p.to_dict() for p in self.problems],
        }


class NotALog(Exception):
    """The directory does not exist or holds no segment files (a usage error)."""


def verify_log(directory: str | os.PathLike[str]) -> VerifyReport:
    """Check every segment, index and the recovery point of the log in ``directory``."""
    path = Path(directory)
    if not path.is_dir():
        raise NotALog(f"{path}: no such directory")
    names = os.listdir(path)
    bases = sorted(b for n in names if (b := parse_segment_name(n, LOG_SUFFIX)) is not None)
    if not bases:
        raise NotALog(f"{path}: no log segments (*{LOG_SUFFIX}) in this directory")
    report = VerifyReport(str(path))
    expected = bases[0]
    for i, base in enumerate(bases):
        next_base = bases[i + 1] if i + 1 < len(bases) else None
        name = f"{base:020d}{LOG_SUFFIX}"
        if i:
            _check_boundary(report, report.segments[-1], expected, base)
        seg, boundaries = _scan_segment(path / name, base, next_base, report.problems)
        report.segments.append(seg)
        _check_index(path, seg, boundaries, report.problems)
        expected = seg.next_offset
    for n in sorted(names):
        b = parse_segment_name(n, INDEX_SUFFIX)
        if b is not None and b not in bases:
            report.problems.append(Problem(
                Kind.ORPHAN_INDEX, n, f"index file {n} has no {b:020d}{LOG_SUFFIX}"))
    _check_recovery(path, report)
    return report


# -- segments ------------------------------------------------------------------------------


def _scan_segment(
    path: Path, base: int, next_base: int | None, problems: list[Problem]
) -> tuple[SegmentReport, dict[int, int]]:
    """Scan one segment file; returns its report and {position: base_offset} of good batches."""
    seg = SegmentReport(path.name, base, base)
    boundaries: dict[int, int] = {}
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        seg.bytes = size
        if size == 0:
            return seg, boundaries
        with mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as data:
            expected = base
            pos = 0
            while pos < size:
                info, error = _check_batch(data, pos, size)
                if info is None:
                    nxt = _resync(data, pos + 1, size, expected, next_base)
                    expected = _report_damage(
                        problems, data, path.name, pos, size, expected, next_base, nxt, error
                    )
                    if nxt is None:
                        break
                    pos = nxt
                    continue
                if info.base_offset > expected:
                    problems.append(Problem(
                        Kind.OFFSET_GAP, path.name,
                        f"offsets {expected}..{info.base_offset - 1} are missing before the "
                        f"batch at byte {pos}",
                        pos, 0, expected, info.base_offset - 1))
                elif info.base_offset < expected:
                    last = min(info.last_offset, expected - 1)
                    problems.append(Problem(
                        Kind.OFFSET_OVERLAP, path.name,
                        f"batch at byte {pos} starts at offset {info.base_offset}, "
                        f"expected {expected}: offsets {info.base_offset}..{last} repeat",
                        pos, info.size, info.base_offset, last))
                boundaries[pos] = info.base_offset
                seg.batches += 1
                seg.records += info.count
                expected = max(expected, info.next_offset)
                pos += info.size
                seg.valid_bytes = pos
            seg.next_offset = expected
    return seg, boundaries


def _check_batch(data: mmap.mmap, pos: int, size: int) -> tuple[BatchInfo | None, str]:
    """The batch at ``pos`` fully checked (header, CRC, records), or (None, why not)."""
    if size - pos < HEADER_SIZE:
        return None, f"truncated batch header ({size - pos} bytes, a header is {HEADER_SIZE})"
    try:
        info = parse_header(data[pos : pos + HEADER_SIZE], pos)
    except CorruptBatch as exc:
        return None, str(exc)
    if pos + info.size > size:
        return None, (f"batch of {info.size} bytes runs past the end of the file "
                      f"({size - pos} bytes left)")
    buf = data[pos : pos + info.size]
    try:
        verify_batch(buf, info)
        records = decode_records(buf, info)
    except CorruptBatch as exc:
        return None, str(exc)
    max_ts = max(r.timestamp for r in records)
    if max_ts != info.max_timestamp:
        return None, (f"header max_timestamp {info.max_timestamp} differs from the records' "
                      f"{max_ts}")
    return info, ""


def _resync(
    data: mmap.mmap, start: int, size: int, min_offset: int, next_base: int | None
) -> int | None:
    """Position of the next good batch at or after ``start`` with a plausible offset."""
    i = data.find(_SYNC, start + 8)
    while i != -1:
        cand = i - 8
        info, _ = _check_batch(data, cand, size)
        if (
            info is not None
            and info.base_offset >= min_offset
            and (next_base is None or info.base_offset < next_base)
        ):
            return cand
        i = data.find(_SYNC, i + 1)
    return None


def _report_damage(
    problems: list[Problem], data: mmap.mmap, name: str, pos: int, size: int,
    expected: int, next_base: int | None, nxt: int | None, error: str,
) -> int:
    """Record the damage from ``pos`` to the next good batch at ``nxt`` (None: to the end
    of the file); returns the next expected offset."""
    if nxt is None and next_base is None:
        problems.append(Problem(
            Kind.TORN_TAIL, name,
            f"{error}; the bytes after the last good batch cannot be verified and a "
            "read-write open truncates them",
            pos, size - pos))
        return expected
    end_pos = size if nxt is None else nxt
    if nxt is None:
        assert next_base is not None
        next_off = next_base
    else:
        next_off = parse_header(data[nxt : nxt + HEADER_SIZE], nxt).base_offset
    if next_off > expected:
        problems.append(Problem(
            Kind.CORRUPT_BATCH, name,
            f"{error}; these offsets are lost (bytes {pos}..{end_pos - 1})",
            pos, end_pos - pos, expected, next_off - 1))
    else:
        problems.append(Problem(
            Kind.CORRUPT_BATCH, name,
            f"{error}; bytes {pos}..{end_pos - 1} are damaged but hold no offsets",
            pos, end_pos - pos))
    return max(expected, next_off)


def _check_boundary(
    report: VerifyReport, prev: SegmentReport, expected: int, base: int
) -> None:
    """Offsets must continue from one segment into the next."""
    if base > expected:
        report.problems.append(Problem(
            Kind.OFFSET_GAP, prev.file,
            f"offsets {expected}..{base - 1} are missing between {prev.file} and the next "
            f"segment (base offset {base})",
            prev.bytes, 0, expected, base - 1))
    elif base < expected:
        report.problems.append(Problem(
            Kind.OFFSET_OVERLAP, f"{base:020d}{LOG_SUFFIX}",
            f"segment starts at offset {base} but {prev.file} already holds offsets up to "
            f"{expected - 1}",
            0, 0, base, expected - 1))


# -- index and recovery point --------------------------------------------------------------


def _check_index(
    directory: Path, seg: SegmentReport, boundaries: dict[int, int], problems: list[Problem]
) -> None:
    name = f"{seg.base_offset:020d}{INDEX_SUFFIX}"
    try:
        data = (directory / name).read_bytes()
    except FileNotFoundError:
        if seg.bytes:
            problems.append(Problem(
                Kind.INDEX_MISSING, name,
                f"index of a {seg.bytes}-byte segment is missing; rebuilt by a scan on open"))
        return
    if len(data) % ENTRY_SIZE:
        problems.append(Problem(
            Kind.INDEX_INVALID, name,
            f"index size {len(data)} is not a multiple of {ENTRY_SIZE}; ignored and rebuilt "
            "on open", 0, len(data)))
        return
    entries = list(_ENTRY.iter_unpack(data))
    seg.index_entries = len(entries)
    last_rel, last_pos = -1, -1
    for n, (rel, pos) in enumerate(entries):
        if rel <= last_rel or pos <= last_pos or pos >= seg.bytes or (n == 0 and pos != 0):
            problems.append(Problem(
                Kind.INDEX_INVALID, name,
                f"entry {n} (offset {seg.base_offset + rel}, byte {pos}) is out of order, "
                "outside the segment or not at byte 0; the index is ignored and rebuilt on open",
                n * ENTRY_SIZE, ENTRY_SIZE, seg.base_offset + rel, seg.base_offset + rel))
            return
        last_rel, last_pos = rel, pos
    # An entry inside damaged bytes is not the index's fault: that damage is reported once.
    damaged = [(p.position, p.position + (p.length or 0)) for p in problems
               if p.file == seg.file and p.kind in (Kind.CORRUPT_BATCH, Kind.TORN_TAIL)
               and p.position is not None]
    bad = [(n, rel, pos) for n, (rel, pos) in enumerate(entries)
           if boundaries.get(pos) != seg.base_offset + rel
           and not any(start <= pos < end for start, end in damaged)]
    if bad:
        n, rel, pos = bad[0]
        problems.append(Problem(
            Kind.INDEX_MISMATCH, name,
            f"{len(bad)} of {len(entries)} entries do not point at a good batch with their "
            f"offset, first: entry {n} (offset {seg.base_offset + rel}, byte {pos}); the log "
            "rebuilds an index whose entries do not name their batch",
            n * ENTRY_SIZE, ENTRY_SIZE, seg.base_offset + rel, seg.base_offset + rel))


def _check_recovery(path: Path, report: VerifyReport) -> None:
    """Check the recovery point, and preview what a read-write open would truncate."""
    rp_path = path / RECOVERY_POINT
    raw = read_checkpoint(rp_path, None)
    rp = raw.get("offset") if isinstance(raw, dict) else None
    if isinstance(rp, int) and not isinstance(rp, bool) and rp >= 0:
        report.recovery_point = rp
        if rp > report.end_offset:
            report.problems.append(Problem(
                Kind.RECOVERY_POINT, RECOVERY_POINT,
                f"recovery point {rp} is beyond the end offset {report.end_offset}: offsets "
                "that were fsynced are no longer in the log"))
    elif rp_path.exists():
        report.problems.append(Problem(
            Kind.RECOVERY_POINT, RECOVERY_POINT,
            "recovery-point is unreadable or has no integer 'offset'; an open verifies "
            "every segment instead"))
    # A read-only open runs the same recovery without truncating: the sizes it reports
    # are where a read-write open would cut each segment.
    try:
        log = Log(path, read_only=True)
    except (LogError, OSError, ValueError):
        return
    try:
        kept = {base: (nxt, size) for base, nxt, size in log.segments_info()}
    finally:
        log.close()
    for seg in report.segments:
        nxt, cut_at = kept.get(seg.base_offset, (seg.next_offset, seg.bytes))
        cut = seg.bytes - cut_at
        if cut > 0 and cut_at < seg.valid_bytes:
            report.problems.append(Problem(
                Kind.RECOVERY_TRUNCATES, seg.file,
                f"a read-write open truncates this segment at byte {cut_at}, discarding "
                f"{cut} bytes including batches that are intact up to offset "
                f"{seg.next_offset - 1}",
                cut_at, cut, nxt, seg.next_offset - 1))
