"""Child processes of bench/log_append.py: a writer to SIGKILL, and a writer whose peak
RSS is read from ``ru_maxrss``.

Strategy: each measurement needs a process that does one thing (append until told size,
then keep appending until killed; or append to a size and report its own peak memory),
so they live here, run as ``python log_children.py _writer|_rss DIR BYTES VALUE BATCH``,
and ``measure_reopen`` / ``measure_rss`` drive them from the benchmark.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from shared_log import CommitMode, CommitPolicy, Log, LogConfig, Record


def _batch_of(n: int, value_size: int, first: int) -> list[Record]:
    v = os.urandom(value_size)
    return [Record(b"device-%05d" % (i % 1000), v, 1_700_000_000_000 + i)
            for i in range(first, first + n)]


def child_writer(directory: str, target: int, value_size: int, per_batch: int) -> None:
    """Append (OS commit mode) until the log holds ``target`` bytes, say so, keep going."""
    log = Log(directory, LogConfig(commit=CommitPolicy(CommitMode.OS)))
    said = False
    i = 0
    while True:
        log.append(_batch_of(per_batch, value_size, i))
        i += per_batch
        if not said and log.size_bytes >= target:
            print(json.dumps({"bytes": log.size_bytes, "end_offset": log.end_offset}),
                  flush=True)
            said = True


def child_rss(directory: str, target: int, value_size: int, per_batch: int) -> None:
    """Append (EVERY_BATCH) until ``target`` bytes; print peak RSS before and after."""
    log = Log(directory, LogConfig(commit=CommitPolicy(CommitMode.EVERY_BATCH)))
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    i = 0
    while log.size_bytes < target:
        log.append(_batch_of(per_batch, value_size, i))  # new records each batch, as ingest
        i += per_batch
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"baseline_kb": base_kb, "peak_kb": peak_kb, "hwm_kb": _vm_hwm_kb(),
                      "bytes": log.size_bytes, "segments": log.segment_count}))
    log.close()


def measure_reopen(work: Path, target: int, value_size: int, per_batch: int) -> dict:
    d = work / "reopen"
    proc = subprocess.Popen(
        [sys.executable, __file__, "_writer", str(d), str(target), str(value_size),
         str(per_batch)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        time.sleep(0.05)  # let it get into the middle of another append
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    if not line:
        raise RuntimeError("the writer died before reaching its target size")
    on_disk = sum(p.stat().st_size for p in d.iterdir())
    t = time.perf_counter()
    log = Log(d, LogConfig(commit=CommitPolicy(CommitMode.OS)))
    elapsed = time.perf_counter() - t
    result = {"seconds": elapsed, "bytes": on_disk, "segments": log.segment_count,
              "end_offset": log.end_offset, "truncated": log.stats.truncated_bytes_on_open}
    log.close()
    shutil.rmtree(d)
    return result


#: Linux carries ru_maxrss from parent to child across fork+exec, but a child forked by a
#: freshly exec'ed process starts from that small process's peak instead of ours.
_LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def _vm_hwm_kb() -> int | None:
    """Peak RSS from /proc (per address space, reset by exec): a cross-check."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def measure_rss(work: Path, target: int, value_size: int, per_batch: int) -> dict:
    d = work / f"rss-{target}"
    out = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, sys.executable, __file__, "_rss", str(d),
         str(target), str(value_size), str(per_batch)],
        capture_output=True, text=True, check=True,
    ).stdout
    shutil.rmtree(d)
    return json.loads(out)


if __name__ == "__main__":
    child = child_writer if sys.argv[1] == "_writer" else child_rss
    child(sys.argv[2], *map(int, sys.argv[3:6]))
