"""Recovery of the transform runner, in-process: what a restart finds beyond its
checkpoint is re-derived and compared, never appended twice - also when the cloud
acked those records meanwhile; the raw and derived logs keep what a restart needs; a
changed chain or a lost checkpoint starts over from the raw log."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from edge_agent_testing import read_stream
from transform_testing import open_all, run_to_end, write_raw

from edge_agent.transforms.runner import CHECKPOINT_FILE

SEG = 4096  # small segments: deletions happen


def close(raw, outs) -> None:  # type: ignore[no-untyped-def]
    raw.log.close()
    for o in outs.values():
        o.log.close()


def same_offsets(work: Path, calm: Path, name: str) -> None:
    """Every record ``work`` still holds is the reference's record at that offset, and
    both end at the same offset (nothing derived twice, nothing missing)."""
    ref = {r.offset: r for r in read_stream(calm, name)}
    got = read_stream(work, name)
    assert got and got[-1].offset == max(ref)
    assert all(r == ref[r.offset] for r in got)


def reference(tmp: Path, n: int) -> Path:
    calm = tmp / "calm"
    write_raw(calm, n, SEG)
    shutil.copytree(calm, tmp / "work")
    run_to_end(calm)
    return tmp / "work"


def test_restart_rederives_what_it_finds_beyond_the_checkpoint(tmp_path: Path) -> None:
    work = reference(tmp_path, 6000)
    _c, r, raw, outs = open_all(work, batch=500, segment_bytes=SEG)
    for _ in range(4):
        r.step()
    r.checkpoint_now()
    assert raw.keep_from == r.input_next == 2000  # the raw log keeps what a restart replays
    for _ in range(3):
        r.step()  # derived beyond the checkpoint ...
    for o in outs.values():
        o.log.flush()  # ... and durable, then a crash: no checkpoint
    beyond = {n: o.log.end_offset - o.keep_from for n, o in outs.items()}
    assert beyond["telemetry-edge"] > 0
    # the cloud acked everything derived so far: only what the checkpoint covers may go
    for o in outs.values():
        o.note_acked(o.log.end_offset - 1)
        assert o.log.start_offset <= o.keep_from
    close(raw, outs)
    status = run_to_end(work)
    assert status["rederived"] == sum(beyond.values()) and status["rederive_mismatch"] == 0
    for name in ("telemetry-edge", "alarms"):
        same_offsets(work, tmp_path / "calm", name)


def test_records_deleted_beyond_the_checkpoint_are_skipped_not_appended(
        tmp_path: Path) -> None:
    """Even if segments beyond the checkpoint were deleted (an older agent, a hand), the
    restart counts them and does not derive them again under new offsets."""
    work = reference(tmp_path, 6000)
    _c, r, raw, outs = open_all(work, batch=500, segment_bytes=SEG)
    r.step()
    r.checkpoint_now()
    for _ in range(6):
        r.step()
    edge = outs["telemetry-edge"]
    edge.log.flush()
    edge.keep_from = None
    edge.note_acked(edge.log.end_offset - 1)
    assert edge.log.start_offset > 0
    close(raw, outs)
    status = run_to_end(work)
    assert status["rederive_mismatch"] == 0
    same_offsets(work, tmp_path / "calm", "telemetry-edge")


def test_a_changed_chain_or_a_lost_checkpoint_starts_over(tmp_path: Path) -> None:
    write_raw(tmp_path, 3000)
    _c, r, raw, outs = open_all(tmp_path)
    while r.step():
        pass
    r.checkpoint_now()
    close(raw, outs)
    other = [{"type": "filter", "expr": "alarm"}]
    _c, r, raw, outs = open_all(tmp_path, transforms=other)
    assert r.input_next == 0  # another chain: from the raw log's start
    close(raw, outs)
    (tmp_path / "streams" / "telemetry" / CHECKPOINT_FILE).unlink()
    _c, r, raw, outs = open_all(tmp_path)
    assert r.input_next == 0
    before = outs["telemetry-edge"].log.end_offset
    while r.step():
        pass
    assert outs["telemetry-edge"].log.end_offset > before  # appended anew: at least once
    close(raw, outs)


def test_a_restarted_run_task_recovers_from_its_checkpoint(tmp_path: Path) -> None:
    """The supervisor restarts a failed runner task on the same runner: what it held in
    memory is dropped and it resumes from the checkpoint, deriving nothing twice."""
    import asyncio

    work = reference(tmp_path, 6000)
    _c, r, raw, outs = open_all(work, batch=200, segment_bytes=SEG)
    edge_log = outs["telemetry-edge"].log
    append = edge_log.append
    calls = {"n": 0}

    def flaky(records):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 8:  # mid-run, with records derived since the checkpoint
            raise OSError("disk trouble")
        return append(records)

    edge_log.append = flaky

    async def go() -> None:
        for _ in range(2):  # the failure, then the restart
            task = asyncio.create_task(r.run(asyncio.Event(), lambda: None, checkpoint_s=0.01))
            for _ in range(500):
                await asyncio.sleep(0.01)
                if task.done() or r.input_next == raw.log.end_offset:
                    break
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    asyncio.run(go())
    assert r.input_next == raw.log.end_offset and r.stats.rederive_mismatch == 0
    r.checkpoint_now()
    close(raw, outs)
    for name in ("telemetry-edge", "alarms"):
        same_offsets(work, tmp_path / "calm", name)


def test_a_cancelled_checkpoint_write_never_overwrites_the_last_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At shutdown the agent cancels the runner, then writes a last checkpoint. The thread
    of a cancelled ``checkpoint()`` goes on: it must finish before the last one is written,
    never after it (an older checkpoint over a newer one) nor beside it (one temp file)."""
    import asyncio
    import json
    import threading

    from edge_agent.transforms import runner as runner_mod

    work = reference(tmp_path, 3000)
    _c, r, raw, outs = open_all(work, batch=500, segment_bytes=SEG)
    r.step()
    in_thread = threading.Event()
    real_write = runner_mod.atomic_write

    def slow_write(path, data):  # type: ignore[no-untyped-def]
        if threading.current_thread() is not threading.main_thread():
            in_thread.set()
            time.sleep(0.3)  # the stale write is still going when the last one starts
        real_write(path, data)

    monkeypatch.setattr(runner_mod, "atomic_write", slow_write)

    async def go() -> None:
        task = asyncio.create_task(r.checkpoint())
        deadline = time.monotonic() + 10
        while not in_thread.is_set():
            assert time.monotonic() < deadline, "checkpoint never reached its write"
            await asyncio.sleep(0.005)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        while r.step():  # more input after the cancelled checkpoint's snapshot
            pass
        r.checkpoint_now()  # the agent's last checkpoint
    asyncio.run(go())
    saved = json.loads((raw.directory / runner_mod.CHECKPOINT_FILE).read_text())
    assert saved["input"] == r.input_next == raw.log.end_offset
    close(raw, outs)


def test_one_device_clock_far_ahead_does_not_close_everyone_elses_windows(
        tmp_path: Path) -> None:
    """Event time drives the windows' close; a reading stamped years ahead of its receipt
    takes its receive time instead, so the other devices' readings are not late."""
    import json

    from shared_log import Record

    window = [{"type": "window", "size_s": 1, "fields": ["v"], "aggregates": ["count"]}]
    _cfg, runner, raw, outs = open_all(tmp_path, transforms=window)
    t0 = 1_700_000_000_000
    recs = []
    for i in range(300):  # d0 every 10 ms; at i = 50 d9's clock says year 2100
        now = t0 + i * 10
        recs.append(Record(b"d0", json.dumps({"ts": now, "v": i}).encode(), now, ()))
        if i == 50:
            recs.append(Record(b"d9", json.dumps({"ts": 4_102_444_800_000, "v": 0}).encode(),
                               now, ()))
    raw.log.append(recs)
    raw.log.flush()
    while runner.step():
        pass
    status = runner.status()
    (win,) = status["transforms"]
    assert status["clock_ahead"] == 1
    assert win["late"] == 0
    # closed: d0's first two seconds, and d9's reading in the first (its receive time);
    # d0's third second is still open. Trusting d9's clock would have closed d0's first
    # window at 51 readings and made the 249 after it late.
    assert win["windows"] == 3 and win["readings_in"] == 301
    runner.checkpoint_now()
    close(raw, outs)
