"""The runner reads the next batch while the current one is written: at most one batch
ahead (a stalled target still stops the loop), and a read ahead from a position the
target did not take is dropped, never written.

The source is a real ``LocalSource`` over a real partition store; it is wrapped only to
count the reads. The target is an in-memory one with the interface's contract (offset
idempotence, ``TargetConflict``), so the test can hold a write and move the position.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from mirror_testing import TOPIC, fill_source, open_source

from cloud_broker.mirrors import CheckpointStore, LocalSource, MirrorConfig
from cloud_broker.mirrors.runner import MirrorRunner
from cloud_broker.mirrors.source import SourceBatch
from cloud_broker.mirrors.target import TargetConflict
from tests.helpers import until

pytestmark = pytest.mark.timeout(60)
N = 500  # records per partition
BATCH = 50


class CountingSource(LocalSource):
    """The broker's own source, recording (partition, offset) of every read started."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.reads: list[tuple[int, int]] = []

    async def read(self, topic: str, partition: int, offset: int, max_records: int,
                   max_bytes: int, wait_s: float, *, stored: bool = False) -> SourceBatch:
        self.reads.append((partition, offset))
        return await super().read(topic, partition, offset, max_records, max_bytes, wait_s,
                                  stored=stored)


class HeldTarget:
    """Offsets per partition in memory; ``gate`` holds every write while clear; a
    ``jump`` makes the next write answer that the target continues further on."""

    description = "memory"

    def __init__(self) -> None:
        self.rows: dict[int, list[int]] = {}
        self.gate = asyncio.Event()
        self.gate.set()
        self.jump: dict[int, int] = {}
        self.writes = 0

    async def open(self, topic: str, partitions: int) -> None:
        for p in range(partitions):
            self.rows.setdefault(p, [])

    async def write(self, partition: int, records: Sequence[Any]) -> None:
        self.writes += 1
        await self.gate.wait()
        held = self.rows[partition]
        if partition in self.jump:
            raise TargetConflict("moved", self.jump.pop(partition))
        end = held[-1] + 1 if held else 0
        held.extend(r.offset for r in records if r.offset >= end)

    async def next_offset(self, partition: int) -> int | None:
        held = self.rows.get(partition, [])
        return held[-1] + 1 if held else 0

    async def close(self) -> None:
        pass


def config() -> MirrorConfig:
    return MirrorConfig(name="m", topic=TOPIC, target="memory", batch_records=BATCH,
                        wait_ms=50, max_backoff_s=0.2)


async def run(tmp: Path, target: HeldTarget, body: Any) -> CountingSource:
    store = open_source(tmp / "src", partitions=1)
    fill_source(store, N)
    source = CountingSource(store)
    runner = MirrorRunner(config(), source, target, CheckpointStore(tmp / "cp.db"))
    task = asyncio.create_task(runner.run())
    try:
        await body(source)
    finally:
        task.cancel()
        await asyncio.wait([task])
        store.close()
    return source


def test_a_held_write_reads_at_most_one_batch_ahead(tmp_path: Path) -> None:
    target = HeldTarget()
    target.gate.clear()

    async def body(source: CountingSource) -> None:
        await until(lambda: target.writes >= 1, 10, "the first write")
        # The write is held: the loop may have read one batch ahead, and no more.
        await asyncio.sleep(0.5)  # time for any further read to start (there must be none)
        assert source.reads == [(0, 0), (0, BATCH)]
        target.gate.set()
        await until(lambda: len(target.rows[0]) == N, 20, "every record")

    asyncio.run(run(tmp_path, target, body))
    assert target.rows[0] == list(range(N))


def test_a_read_ahead_from_a_position_not_taken_is_dropped(tmp_path: Path) -> None:
    target = HeldTarget()
    target.jump[0] = 3 * BATCH + 7  # the target says it holds up to here already

    async def body(source: CountingSource) -> None:
        await until(lambda: target.rows.get(0) and target.rows[0][-1] == N - 1, 20,
                    "the last record")

    source = asyncio.run(run(tmp_path, target, body))
    # First batch refused with the new position: the read ahead from BATCH was dropped
    # and the loop read again from where the target continues.
    assert source.reads[:3] == [(0, 0), (0, BATCH), (0, 3 * BATCH + 7)]
    assert target.rows[0] == list(range(3 * BATCH + 7, N))
