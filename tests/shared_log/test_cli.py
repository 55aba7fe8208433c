"""The ``shared-log`` CLI run as a real subprocess on real logs written by the test.

Every test also checks that the command left the directory byte-for-byte unchanged: the
CLI must be safe on a live log and on a damaged one that a read-write open would repair.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from shared_log import CommitMode, CommitPolicy, Log, LogConfig, Record

SCRIPT = Path(sys.executable).with_name("shared-log")
CONFIG = LogConfig(
    segment_bytes=4096, index_interval_bytes=512, commit=CommitPolicy(CommitMode.OS)
)
BATCHES, PER_BATCH = 30, 10


def run(*args: object, module: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the installed console script (or ``python -m shared_log.cli``)."""
    if module or not SCRIPT.exists():
        cmd = [sys.executable, "-m", "shared_log.cli"]
    else:
        cmd = [str(SCRIPT)]
    return subprocess.run(
        [*cmd, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def snapshot(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
    }


def run_unchanged(directory: Path, *args: object) -> subprocess.CompletedProcess[str]:
    """Run the CLI and assert it did not touch ``directory``."""
    before = snapshot(directory)
    result = run(*args)
    assert snapshot(directory) == before, f"{args} modified the log directory"
    return result


def make_records(i: int) -> list[Record]:
    out = []
    for j in range(PER_BATCH):
        n = i * PER_BATCH + j
        key = f"dev-{n % 7}".encode() if n % 5 else bytes([0xFF, n % 256])
        value = f"reading {n} °C".encode() if n % 3 else bytes([0x80, 0x00, n % 256]) * 3
        headers = (("seq", str(n).encode()), ("raw", b"\xfe\xff")) if n % 4 == 0 else ()
        out.append(Record(key, value, 1_700_000_000_000 + n, headers))
    return out


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """A closed log of 300 records over several segments, indexes written."""
    d = tmp_path / "log"
    with Log(d, CONFIG) as log:
        for i in range(BATCHES):
            log.append(make_records(i))
    return d


def segment_files(d: Path) -> list[Path]:
    return sorted(d.glob("*.log"))


def batches(path: Path) -> list[tuple[int, int, int, int]]:
    """(position, size, base_offset, count) of each batch, parsed per docs/log-format.md."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos + 30 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        base, count = struct.unpack_from(">QI", data, pos + 10)
        out.append((pos, length + 4, base, count))
        pos += length + 4
    return out


def flip(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x04
    path.write_bytes(bytes(data))


def verify_json(d: Path) -> tuple[int, dict]:
    result = run_unchanged(d, "verify", "--json", d)
    return result.returncode, json.loads(result.stdout)


# -- verify -------------------------------------------------------------------------------


def test_verify_clean_log_exits_0(log_dir: Path) -> None:
    assert len(segment_files(log_dir)) >= 3
    result = run_unchanged(log_dir, "verify", log_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: 0 errors, 0 warnings" in result.stdout
    code, report = verify_json(log_dir)
    assert code == 0
    assert report["ok"] is True
    assert report["problems"] == []
    assert (report["start_offset"], report["end_offset"]) == (0, BATCHES * PER_BATCH)
    assert sum(s["records"] for s in report["segments"]) == BATCHES * PER_BATCH


def test_verify_empty_log_says_no_records(tmp_path: Path) -> None:
    Log(tmp_path / "empty", CONFIG).close()
    result = run("verify", tmp_path / "empty", module=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no records (next offset 0)" in result.stdout
    assert "0..-1" not in result.stdout


def test_python_dash_m_entry_point(log_dir: Path) -> None:
    result = run("verify", log_dir, module=True)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_bit_flip_in_sealed_segment_names_offsets_and_bytes(log_dir: Path) -> None:
    first = segment_files(log_dir)[0]
    pos, size, base, count = batches(first)[3]
    flip(first, pos + 40)  # inside the records, so only the CRC can tell
    result = run_unchanged(log_dir, "verify", log_dir)
    assert result.returncode == 1
    line = next(x for x in result.stdout.splitlines() if x.startswith("ERROR"))
    assert "corrupt_batch" in line
    assert f"{first.name} byte {pos} length {size}" in line
    assert f"offsets {base}..{base + count - 1}" in line

    code, report = verify_json(log_dir)
    assert code == 1
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    assert errors == [{
        "kind": "corrupt_batch", "severity": "error", "file": first.name,
        "position": pos, "length": size,
        "first_offset": base, "last_offset": base + count - 1,
        "message": errors[0]["message"],
    }]
    assert "checksum mismatch" in errors[0]["message"]


def test_damaged_length_field_resyncs_on_next_batch(log_dir: Path) -> None:
    first = segment_files(log_dir)[0]
    layout = batches(first)
    pos, size, base, count = layout[2]
    flip(first, pos + 1)  # the length field: the reader cannot skip to the next batch
    code, report = verify_json(log_dir)
    assert code == 1
    [problem] = report["problems"]
    assert (problem["position"], problem["length"]) == (pos, size)
    assert (problem["first_offset"], problem["last_offset"]) == (base, base + count - 1)


def test_torn_tail_is_reported_with_unknown_offsets(log_dir: Path) -> None:
    last = segment_files(log_dir)[-1]
    good_size = last.stat().st_size
    partial = last.read_bytes()[:25]  # the start of a batch header, as a crash leaves it
    with open(last, "ab") as f:
        f.write(partial)
    result = run_unchanged(log_dir, "verify", log_dir)
    assert result.returncode == 1
    assert f"torn_tail: {last.name} byte {good_size} length 25, offsets unknown" in result.stdout

    _, report = verify_json(log_dir)
    [problem] = report["problems"]
    assert problem["kind"] == "torn_tail"
    assert (problem["position"], problem["length"]) == (good_size, 25)
    assert problem["first_offset"] is None and problem["last_offset"] is None

    info = json.loads(run_unchanged(log_dir, "inspect", "--json", log_dir).stdout)
    assert info["torn_tail_bytes"] == 25
    assert info["end_offset"] == BATCHES * PER_BATCH


def test_deleted_index_is_only_a_warning(log_dir: Path) -> None:
    index = segment_files(log_dir)[1].with_suffix(".index")
    index.unlink()
    result = run_unchanged(log_dir, "verify", log_dir)
    assert result.returncode == 0, result.stdout
    assert f"WARNING index_missing: {index.name}" in result.stdout
    assert "OK: 0 errors, 1 warnings" in result.stdout
    info = json.loads(run_unchanged(log_dir, "inspect", "--json", log_dir).stdout)
    missing = [s["file"] for s in info["segments"] if s["index_entries"] is None]
    assert missing == [segment_files(log_dir)[1].name]


def test_index_pointing_between_batches_is_a_warning(log_dir: Path) -> None:
    first = segment_files(log_dir)[0]
    index = first.with_suffix(".index")
    entries = list(struct.iter_unpack(">II", index.read_bytes()))
    rel, pos = entries[1]
    entries[1] = (rel, pos + 3)
    index.write_bytes(b"".join(struct.pack(">II", *e) for e in entries))
    code, report = verify_json(log_dir)
    assert code == 0
    [problem] = report["problems"]
    assert problem["kind"] == "index_mismatch" and problem["severity"] == "warning"
    assert problem["position"] == 8


def test_missing_segment_is_an_offset_gap(log_dir: Path) -> None:
    middle = segment_files(log_dir)[1]
    layout = batches(middle)
    middle.unlink()
    middle.with_suffix(".index").unlink()
    first_missing = layout[0][2]
    last_missing = layout[-1][2] + layout[-1][3] - 1
    code, report = verify_json(log_dir)
    assert code == 1
    [problem] = report["problems"]
    assert problem["kind"] == "offset_gap"
    assert (problem["first_offset"], problem["last_offset"]) == (first_missing, last_missing)


def test_corruption_in_active_segment_is_reported_and_skipped_not_truncated(
        tmp_path: Path) -> None:
    # One segment, one index entry (byte 0): the damaged batch is followed by intact ones,
    # which may have been acknowledged, so opening must skip the damage, not cut the tail.
    d = tmp_path / "one"
    cfg = LogConfig(segment_bytes=1 << 20, index_interval_bytes=1 << 20,
                    commit=CommitPolicy(CommitMode.OS))
    with Log(d, cfg) as log:
        for i in range(10):
            log.append(make_records(i))
    [seg] = segment_files(d)
    pos, size, base, count = batches(seg)[3]
    flip(seg, pos + size - 1)
    code, report = verify_json(d)
    assert code == 1
    kinds = {p["kind"]: p for p in report["problems"]}
    assert set(kinds) == {"corrupt_batch"}
    lost = kinds["corrupt_batch"]
    assert (lost["first_offset"], lost["last_offset"]) == (base, base + count - 1)
    with Log(d, cfg) as log:
        assert log.end_offset == 10 * PER_BATCH
        assert log.stats.truncated_bytes_on_open == 0
        assert [(r.first, r.last) for r in log.stats.corrupt_ranges] == [
            (base, base + count - 1)]
        res = log.fetch(0, max_records=10 * PER_BATCH, max_bytes=1 << 30)
        offsets = [r.offset for r in res.records]
        assert offsets == [o for o in range(10 * PER_BATCH) if not base <= o < base + count]


# -- inspect ------------------------------------------------------------------------------


def test_inspect_json_fields(log_dir: Path) -> None:
    result = run_unchanged(log_dir, "inspect", "--json", log_dir)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    files = segment_files(log_dir)
    assert info["start_offset"] == 0
    assert info["end_offset"] == BATCHES * PER_BATCH
    assert info["records"] == BATCHES * PER_BATCH
    assert info["segment_count"] == len(files)
    assert info["total_bytes"] == sum(f.stat().st_size for f in files)
    assert info["recovery_point"] == BATCHES * PER_BATCH  # written by close()
    assert info["torn_tail_bytes"] == 0
    segs = info["segments"]
    assert [s["file"] for s in segs] == [f.name for f in files]
    for s, f in zip(segs, files, strict=True):
        assert s["base_offset"] == int(f.stem)
        assert s["bytes"] == f.stat().st_size
        assert s["records"] == s["next_offset"] - s["base_offset"]
        assert s["index_entries"] == f.with_suffix(".index").stat().st_size // 8
    assert all(a["next_offset"] == b["base_offset"] for a, b in itertools.pairwise(segs))


def test_inspect_human_output(log_dir: Path) -> None:
    result = run_unchanged(log_dir, "inspect", log_dir)
    assert result.returncode == 0
    assert f"end offset     {BATCHES * PER_BATCH}" in result.stdout
    for f in segment_files(log_dir):
        assert f.name in result.stdout


# -- dump ---------------------------------------------------------------------------------


def decoded(obj: dict, field: str) -> bytes:
    text = obj[field]
    return base64.b64decode(text) if obj[f"{field}_b64"] else text.encode()


def parse_dump(stdout: str) -> list[tuple[int, bytes, bytes, int, tuple]]:
    out = []
    for line in stdout.splitlines():
        obj = json.loads(line)
        headers = tuple((h["name"], decoded(h, "value")) for h in obj["headers"])
        out.append((obj["offset"], decoded(obj, "key"), decoded(obj, "value"),
                    obj["timestamp"], headers))
    return out


def expected_records() -> list[tuple[int, bytes, bytes, int, tuple]]:
    recs = [r for i in range(BATCHES) for r in make_records(i)]
    return [(n, r.key, r.value, r.timestamp, r.headers) for n, r in enumerate(recs)]


def test_dump_round_trips_every_record(log_dir: Path) -> None:
    result = run_unchanged(log_dir, "dump", log_dir)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    got = parse_dump(result.stdout)
    assert got == expected_records()
    first = json.loads(result.stdout.splitlines()[0])
    assert first["key_b64"] is True and first["value_b64"] is True  # n=0: binary
    second = json.loads(result.stdout.splitlines()[1])
    assert second["value"] == "reading 1 °C" and second["value_b64"] is False


def test_dump_from_and_limit(log_dir: Path) -> None:
    result = run_unchanged(log_dir, "dump", log_dir, "--from", 117, "--limit", 9)
    assert result.returncode == 0, result.stderr
    assert parse_dump(result.stdout) == expected_records()[117:126]
    end = BATCHES * PER_BATCH
    at_end = run_unchanged(log_dir, "dump", log_dir, "--from", end)
    assert (at_end.returncode, at_end.stdout) == (0, "")


def test_dump_out_of_range_is_a_usage_error(log_dir: Path) -> None:
    end = BATCHES * PER_BATCH
    result = run_unchanged(log_dir, "dump", log_dir, "--from", end + 1)
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"--from {end + 1}" in result.stderr and "out of range" in result.stderr


def test_dump_skips_corrupt_range_and_reports_it(log_dir: Path) -> None:
    first = segment_files(log_dir)[0]
    pos, size, base, count = batches(first)[4]
    flip(first, pos + 50)
    result = run_unchanged(log_dir, "dump", log_dir)
    assert result.returncode == 1
    lost = set(range(base, base + count))
    assert parse_dump(result.stdout) == [r for r in expected_records() if r[0] not in lost]
    assert (f"skipped offsets {base}..{base + count - 1}: corrupt data in {first.name} "
            f"at byte {pos} ({size} bytes)") in result.stderr


# -- usage errors -------------------------------------------------------------------------


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    for cmd in ("inspect", "verify", "dump"):
        result = run(cmd, missing)
        assert result.returncode == 2, cmd
        assert "no such directory" in result.stderr
        assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    for cmd in ("inspect", "verify", "dump"):
        result = run_unchanged(empty, cmd, empty)
        assert result.returncode == 2, cmd
        assert "no log segments" in result.stderr
    assert run().returncode == 2
    assert run("dump", empty, "--from", "-1").returncode == 2


def test_live_log_is_readable_while_open(tmp_path: Path) -> None:
    """A writer holding the log open (active index not yet written) is not disturbed."""
    d = tmp_path / "live"
    log = Log(d, CONFIG)
    try:
        for i in range(5):
            log.append(make_records(i))
        log.flush()
        result = run_unchanged(d, "dump", d)
        assert result.returncode == 0
        assert len(result.stdout.splitlines()) == 5 * PER_BATCH
        assert run_unchanged(d, "verify", d).returncode == 0
        log.append(make_records(5))  # the writer is unaffected
    finally:
        log.close()
    assert run_unchanged(d, "verify", d).returncode == 0
