"""One conformance suite run against every mirror target (broker, NATS JetStream, SQLite,
PostgreSQL).

Each test asks the question G6 cares about, "does the target hold every source record
exactly once, byte for byte, at its offset?", after a different kind of trouble: none, a
mirror process SIGKILLed a dozen times (half of them exactly between a write and its
checkpoint), and the target itself going away (SIGKILL of nats-server, of the target
broker or of PostgreSQL with all its backends, an exclusive lock on the SQLite file)
while the source keeps growing.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mirror_testing import (
    KITS,
    PARTITIONS,
    Kit,
    checkpoints,
    fill_source,
    kill9,
    open_source,
    source_rows,
    start_script,
    wait_copied,
    write_script_config,
)

from cloud_broker.mirrors import LocalSource, MirrorManager

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(params=sorted(KITS))
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Kit]:
    k = KITS[request.param](tmp_path)
    try:
        yield k
    finally:
        k.close()


def expected(tmp: Path) -> dict[int, list]:
    return {p: source_rows(tmp / "source", p) for p in range(PARTITIONS)}


def assert_same(kit: Kit, want: dict[int, list]) -> None:
    for p, rows in want.items():
        got, rows = kit.read(p), kit.normalize(rows)
        assert [r[0] for r in got] == [r[0] for r in rows], f"partition {p}: offsets differ"
        assert got == rows, f"partition {p}: contents differ"


async def until_caught_up(manager: MirrorManager, timeout: float = 60.0) -> None:
    async def done() -> None:
        while True:
            st = manager.status()
            if st and all(len(m["partitions"]) == PARTITIONS and m["lag"] == 0 for m in st):
                return
            await asyncio.sleep(0.05)
    await asyncio.wait_for(done(), timeout)


def test_full_copy_then_restart_writes_nothing_twice(kit: Kit, tmp_path: Path) -> None:
    async def main() -> None:
        store = open_source(tmp_path / "source")
        fill_source(store, 1500)
        for run in range(2):  # the second run resumes with nothing left to copy
            manager = MirrorManager(tmp_path / "source", LocalSource(store),
                                    [kit.config(wait_ms=100)])
            await manager.start()
            await until_caught_up(manager)
            await asyncio.sleep(0.3 if run else 0)
            status = manager.status()[0]
            await manager.stop()
            copied = sum(p["records_copied"] for p in status["partitions"])
            assert copied == (1500 * PARTITIONS if run == 0 else 0)
            assert all(p["records_lost"] == 0 and p["lag"] == 0 for p in status["partitions"])
        store.close()

    asyncio.run(main())
    assert_same(kit, expected(tmp_path))
    assert checkpoints(tmp_path / "source") == dict.fromkeys(range(PARTITIONS), 1500)


def test_resume_after_kill9_at_random_points(kit: Kit, tmp_path: Path) -> None:
    config = write_script_config(tmp_path, kit.table(batch_records=40, wait_ms=100))
    log = tmp_path / "mirror.out"
    rng = random.Random(6)
    store = open_source(tmp_path / "source")
    fill_source(store, 200, batch=50)
    store.close()
    self_kills = 0
    for i in range(12):
        if i % 2:  # SIGKILL itself right after a write, before the checkpoint
            proc = start_script(config, log, "--crash-after-writes", str(rng.randint(1, 6)))
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
            self_kills += proc.returncode == -9
        else:  # SIGKILL from outside at a random moment (startup, mid-batch, checkpoint)
            proc = start_script(config, log)
            time.sleep(rng.uniform(0.3, 1.0))
        kill9(proc)
        # The source grows between runs, so every run finds work (the script owns the
        # source directory while it runs).
        store = open_source(tmp_path / "source")
        fill_source(store, 150, start=200 + 150 * i, batch=50)
        store.close()
    assert self_kills >= 5, log.read_text()[-3000:]
    proc = start_script(config, log, "--exit-when-done")
    assert proc.wait(90) == 0, log.read_text()[-3000:]
    want = expected(tmp_path)
    assert all(len(rows) == 200 + 150 * 12 for rows in want.values())
    assert_same(kit, want)


def test_target_down_then_back_catches_up_skipping_nothing(kit: Kit, tmp_path: Path) -> None:
    async def main() -> None:
        store = open_source(tmp_path / "source")
        fill_source(store, 300)
        manager = MirrorManager(tmp_path / "source", LocalSource(store), [
            kit.config(wait_ms=100, max_backoff_s=0.5, timeout_s=1, batch_records=50)])
        await manager.start()
        await until_caught_up(manager)
        await asyncio.to_thread(kit.down)
        for chunk in range(6):  # the source keeps growing while the target is away
            fill_source(store, 100, start=300 + chunk * 100, batch=25)
            await asyncio.sleep(0.2)

        async def retried() -> None:
            while not any(p["retries"] for p in manager.status()[0]["partitions"]):
                await asyncio.sleep(0.05)
        await asyncio.wait_for(retried(), 30)
        lagging = manager.status()[0]
        assert lagging["lag"] > 0
        await asyncio.to_thread(kit.up)
        await until_caught_up(manager)
        status = manager.status()[0]
        await manager.stop()
        store.close()
        assert all(p["records_lost"] == 0 for p in status["partitions"])
        assert all(p["state"] not in ("retrying", "stalled") for p in status["partitions"])

    asyncio.run(main())
    want = expected(tmp_path)
    assert all(len(rows) == 900 for rows in want.values())
    wait_copied(kit, want, timeout=10)
    assert_same(kit, want)
