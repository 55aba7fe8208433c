"""``shared-log``: inspect, verify and dump a log directory without modifying it.

Strategy: every command opens the log read-only (``Log(dir, read_only=True)``, or the
mmap-based checker in _verify.py), so it is safe to run on a live log or on evidence
after an incident. This module only parses arguments and prints; the checks live in
_verify.py and the reading in Log.

Exit codes (docs/log-format.md):
    0  clean (inspect, dump: done; verify: no errors, warnings allowed)
    1  data problems: verify found errors; dump skipped corrupt offset ranges
    2  usage error: bad arguments, missing directory, not a log, offset out of range
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from ._errors import LogError, OffsetOutOfRange
from ._files import INDEX_SUFFIX, LOG_SUFFIX, read_checkpoint, segment_name
from ._index import ENTRY_SIZE
from ._log import RECOVERY_POINT, Log
from ._records import StoredRecord
from ._verify import Kind, NotALog, Problem, VerifyReport, verify_log

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Reported as ``shared-log: error: ...`` with exit code 2."""


# -- inspect -------------------------------------------------------------------------------


def _open_read_only(directory: Path) -> Log:
    if not directory.is_dir():
        raise UsageError(f"{directory}: no such directory")
    try:
        return Log(directory, read_only=True)
    except FileNotFoundError as exc:
        raise UsageError(f"{directory}: no log segments (*{LOG_SUFFIX}) in this directory"
                         ) from exc
    except (LogError, OSError, ValueError) as exc:
        raise UsageError(f"{directory}: cannot open the log: {exc}") from exc


def inspect_log(directory: Path) -> dict[str, Any]:
    """The facts ``inspect`` prints, as a JSON-ready dict."""
    log = _open_read_only(directory)
    try:
        segments = []
        for base, nxt, _valid in log.segments_info():
            log_path = directory / segment_name(base, LOG_SUFFIX)
            index_path = directory / segment_name(base, INDEX_SUFFIX)
            try:
                entries: int | None = index_path.stat().st_size // ENTRY_SIZE
            except FileNotFoundError:
                entries = None
            segments.append({
                "file": log_path.name,
                "base_offset": base,
                "next_offset": nxt,
                "records": nxt - base,
                "bytes": log_path.stat().st_size,
                "index_entries": entries,
            })
        raw_rp = read_checkpoint(directory / RECOVERY_POINT, None)
        rp = raw_rp.get("offset") if isinstance(raw_rp, dict) else None
        return {
            "directory": str(directory),
            "start_offset": log.start_offset,
            "end_offset": log.end_offset,
            "records": log.end_offset - log.start_offset,
            "segment_count": len(segments),
            "total_bytes": sum(s["bytes"] for s in segments),
            "recovery_point": rp if isinstance(rp, int) else None,
            "torn_tail_bytes": log.stats.truncated_bytes_on_open,
            "segments": segments,
        }
    finally:
        log.close()


def _print_inspect(info: dict[str, Any], out: TextIO) -> None:
    rp = info["recovery_point"]
    w = out.write
    w(f"log            {info['directory']}\n")
    w(f"start offset   {info['start_offset']}\n")
    w(f"end offset     {info['end_offset']}  (next offset to be written)\n")
    w(f"records        {info['records']}\n")
    w(f"segments       {info['segment_count']}\n")
    w(f"total bytes    {info['total_bytes']}\n")
    w(f"recovery point {'none' if rp is None else rp}\n")
    w(f"torn tail      {info['torn_tail_bytes']} bytes"
      f"{'  (a read-write open truncates them)' if info['torn_tail_bytes'] else ''}\n")
    cols = ("file", "base offset", "next offset", "records", "bytes", "index entries")
    rows = [cols] + [
        (s["file"], str(s["base_offset"]), str(s["next_offset"]), str(s["records"]),
         str(s["bytes"]), "missing" if s["index_entries"] is None else str(s["index_entries"]))
        for s in info["segments"]
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    w("\n")
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [c.rjust(wd) for c, wd in zip(row[1:], widths[1:],
                                                                             strict=True)]
        w("  ".join(cells).rstrip() + "\n")


# -- verify --------------------------------------------------------------------------------


def _describe(p: Problem) -> str:
    """``file byte P length L, offsets A..B``: the part of a finding a script would grep."""
    text = p.file
    if p.position is not None:
        text += f" byte {p.position}"
        if p.length:
            text += f" length {p.length}"
    if p.first_offset is not None:
        if p.first_offset == p.last_offset:
            text += f", offset {p.first_offset}"
        else:
            text += f", offsets {p.first_offset}..{p.last_offset}"
    elif p.kind in (Kind.TORN_TAIL, Kind.CORRUPT_BATCH):
        text += ", offsets unknown"
    return text


def _print_verify(report: VerifyReport, out: TextIO) -> None:
    w = out.write
    nrec = sum(s.records for s in report.segments)
    nbytes = sum(s.bytes for s in report.segments)
    span = (f"offsets {report.start_offset}..{report.end_offset - 1}"
            if report.end_offset > report.start_offset
            else f"no records (next offset {report.end_offset})")
    w(f"verify {report.directory}: {len(report.segments)} segments, {span}, {nrec} good "
      f"records, {nbytes} bytes\n")
    for p in report.problems:
        w(f"{p.severity.value.upper()} {p.kind.value}: {_describe(p)}: {p.message}\n")
    verdict = "OK" if report.ok else "FAILED"
    w(f"{verdict}: {len(report.errors)} errors, {len(report.warnings)} warnings\n")


# -- dump ----------------------------------------------------------------------------------


def _text(data: bytes) -> tuple[str, bool]:
    """(text, is_base64): UTF-8 when it decodes, else base64."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), True


def record_to_json(rec: StoredRecord) -> dict[str, Any]:
    key, key_b64 = _text(rec.key)
    value, value_b64 = _text(rec.value)
    headers = []
    for name, hvalue in rec.headers:
        text, b64 = _text(hvalue)
        headers.append({"name": name, "value": text, "value_b64": b64})
    return {
        "offset": rec.offset,
        "timestamp": rec.timestamp,
        "key": key,
        "key_b64": key_b64,
        "value": value,
        "value_b64": value_b64,
        "headers": headers,
    }


def dump(directory: Path, start: int | None, limit: int | None, out: TextIO,
         err: TextIO) -> int:
    log = _open_read_only(directory)
    try:
        offset = log.start_offset if start is None else start
        first = offset
        written = 0
        while limit is None or written < limit:
            want = 1000 if limit is None else min(1000, limit - written)
            try:
                result = log.fetch(offset, max_records=want)
            except OffsetOutOfRange as exc:
                raise UsageError(f"--from {offset}: {exc}") from exc
            for rec in result.records:
                out.write(json.dumps(record_to_json(rec)) + "\n")
            written += len(result.records)
            done = result.next_offset <= offset or result.next_offset >= log.end_offset
            offset = max(offset, result.next_offset)
            if done:
                break
        # Ranges found while reading and those found on open (a sealed segment that lost
        # batches), limited to what this dump covered.
        skipped = [r for r in log.stats.corrupt_ranges if r.last >= first and r.first < offset]
        for r in sorted(skipped, key=lambda r: r.first):
            err.write(f"shared-log: skipped offsets {r.first}..{r.last}: corrupt data in "
                      f"{segment_name(r.segment, LOG_SUFFIX)} at byte {r.position} "
                      f"({r.size} bytes)\n")
        torn = log.stats.truncated_bytes_on_open
        if torn and offset >= log.end_offset:
            err.write(f"shared-log: note: {torn} bytes past the last valid batch were ignored "
                      "(torn tail)\n")
        return EXIT_PROBLEMS if skipped else EXIT_OK
    finally:
        log.close()


# -- entry point ---------------------------------------------------------------------------


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shared-log",
        description="Inspect, verify and dump a shared_log directory (never modifies it).",
        epilog="exit codes: 0 clean, 1 data problems found, 2 usage error",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("inspect", help="segments, offsets, sizes, recovery point, torn tail")
    p.add_argument("directory", metavar="DIR", type=Path)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser("verify", help="check every batch, offset and index; exit 1 on errors")
    p.add_argument("directory", metavar="DIR", type=Path)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser("dump", help="records as JSON lines")
    p.add_argument("directory", metavar="DIR", type=Path)
    p.add_argument("--from", dest="start", type=_non_negative, default=None, metavar="N",
                   help="first offset (default: the log start offset)")
    p.add_argument("--limit", type=_non_negative, default=None, metavar="K",
                   help="at most K records (default: all)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out, err = sys.stdout, sys.stderr
    try:
        if args.command == "inspect":
            info = inspect_log(args.directory)
            if args.json:
                out.write(json.dumps(info, indent=2) + "\n")
            else:
                _print_inspect(info, out)
            return EXIT_OK
        if args.command == "verify":
            try:
                report = verify_log(args.directory)
            except NotALog as exc:
                raise UsageError(str(exc)) from exc
            if args.json:
                out.write(json.dumps(report.to_dict(), indent=2) + "\n")
            else:
                _print_verify(report, out)
            return EXIT_OK if report.ok else EXIT_PROBLEMS
        return dump(args.directory, args.start, args.limit, out, err)
    except UsageError as exc:
        err.write(f"shared-log: error: {exc}\n")
        return EXIT_USAGE
    except BrokenPipeError:
        # `shared-log dump DIR | head`: the reader is gone; say nothing more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
