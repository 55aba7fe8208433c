"""Exactly once derived from offsets: a transform runner SIGKILLed at random moments while
windows are open (>= 20 times) leaves derived logs identical, record for record and byte
for byte, to an uninterrupted run over the same raw log; every restart re-derived what
it found beyond its checkpoint and found it identical (docs/edge-processing.md)."""

from __future__ import annotations

import contextlib
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from transform_testing import derived, run_to_end, write_raw

from edge_agent.transforms.runner import CHECKPOINT_FILE
from shared_log import read_checkpoint

CHILD = Path(__file__).with_name("transform_child.py")


def kill_loop(data: Path, kills: int, seed: int) -> list[int]:
    """Start, SIGKILL, repeat; the checkpointed input offset seen after each kill."""
    rng = random.Random(seed)
    seen = []
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, str(CHILD), str(data), "10"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line == b"started\n", proc.stderr.read() if proc.stderr else line
            # a wait bounded by the process itself: killed while transforming
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=rng.uniform(0.02, 0.25))
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else "exited"
        finally:
            proc.kill()  # SIGKILL: no last checkpoint, no flush
            proc.wait()
            if proc.stdout:
                proc.stdout.close()
            if proc.stderr:
                proc.stderr.close()
        ck = read_checkpoint(data / "streams" / "telemetry" / CHECKPOINT_FILE, {})
        seen.append(ck.get("input", -1))
    return seen


def check_exactly_once(tmp_path: Path, readings: int, kills: int, seed: int) -> None:
    killed, calm = tmp_path / "killed", tmp_path / "calm"
    write_raw(killed, readings)
    shutil.copytree(killed, calm)
    seen = kill_loop(killed, kills, seed)
    assert seen[kills // 2] < readings, f"the input ran out before half the kills: {seen}"
    assert len(set(seen)) >= kills // 2, f"few kills landed mid-run: {seen}"
    after = run_to_end(killed)
    ref = run_to_end(calm)
    assert after["rederive_mismatch"] == 0
    assert after["input_offset"] == ref["input_offset"] == readings
    for name in ("telemetry-edge", "alarms"):
        want, got = derived(calm, name), derived(killed, name)
        assert want, f"{name}: the reference run derived nothing"
        assert len(got) == len(want), f"{name}: {len(got)} records, {len(want)} expected"
        diff = next((i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b), None)
        assert got == want, f"{name}: first difference at record {diff}"
    windows = [r for r in derived(killed, "telemetry-edge") if b'"end":' in r[1]]
    assert len(windows) > 50


def test_kill_9_twenty_times_derives_every_window_once(tmp_path: Path) -> None:
    check_exactly_once(tmp_path, readings=40_000, kills=20, seed=20)


@pytest.mark.slow
def test_kill_9_many_times_derives_every_window_once(tmp_path: Path) -> None:
    check_exactly_once(tmp_path, readings=150_000, kills=80, seed=80)
