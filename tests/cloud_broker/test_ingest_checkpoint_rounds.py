"""Ingest checkpoints are grouped into rounds: callers waiting while one is written are all
served by the next, which takes every new position at once. A new position is checkpointed
before its first ack (G3 across a crash), so one round per position made admitting a
fleet quadratic. What must hold: every ack of a new position comes after a written
checkpoint holding it, a call returns only after a round that started after it, and a
failed round leaves its positions to the next. Real partitions in tmp_path.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

import cloud_broker.ingest.state as state_mod
from cloud_broker.ingest import STATE_FILE
from tests.cloud_broker.test_ingestor import TOPIC, Cloud
from uplink import Ack, Batch, UplinkRecord


def first_batch(i: int) -> Batch:
    records = tuple(UplinkRecord(o, b"dev-%d-%d" % (i, o), 1000 + o, b'{"v":%d}' % o)
                    for o in range(3))
    return Batch(f"edge-{i:04d}", "telemetry", f"g{i:04d}", 0, 2, records)


def source(i: int) -> tuple[str, str, str]:
    return (f"edge-{i:04d}", "telemetry", f"g{i:04d}")


class Writes:
    """The real checkpoint writes, recorded (which positions each one held)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = state_mod.write_checkpoint
        self.held: list[dict[str, int]] = []
        self.lock = threading.Lock()
        self.gate: threading.Event | None = None
        self.fail_next = False
        self.entered = threading.Event()  # a round is writing: its snapshot is taken
        self.inside = self.most_inside = 0  # writers in the file at once
        monkeypatch.setattr(state_mod, "write_checkpoint", self)

    def __call__(self, path: Path, doc: dict[str, Any]) -> None:
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            self.entered.set()
            if self.gate is not None:
                assert self.gate.wait(10), "the test never opened the gate"
            if self.fail_next:
                self.fail_next = False
                raise OSError(28, "No space left on device")
            self.real(path, doc)
            with self.lock:
                self.held.append(dict(doc["acked"]))
        finally:
            with self.lock:
                self.inside -= 1

    async def round_started(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 10), "no round started"

    async def behind_a_held_round(self, first: Coroutine[Any, Any, None],
                                  *later: Coroutine[Any, Any, None]) -> list[Any]:
        """Run ``first`` (a checkpoint call) until its round is writing, held at the gate;
        start ``later``, which queue behind it, then open the gate; every outcome (None or
        the exception), in order."""
        self.gate = threading.Event()
        tasks = [asyncio.create_task(first)]
        await self.round_started()
        tasks += [asyncio.create_task(c) for c in later]
        await asyncio.sleep(0)  # each later call runs to the lock: its position is queued
        self.gate.set()
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)

    def ever_held(self, key: str) -> bool:
        with self.lock:
            return any(key in h for h in self.held)


def test_a_fleet_of_new_positions_shares_a_few_rounds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cloud = Cloud(tmp_path, 4)
    writes = Writes(monkeypatch)
    edges = 400

    async def one(i: int) -> None:
        reply = await cloud.ingestor.ingest(TOPIC, first_batch(i))
        assert isinstance(reply, Ack) and reply.acked_offset == 2
        # acked only once a written checkpoint holds the new position
        assert writes.ever_held("/".join(source(i))), i

    async def main() -> None:
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(edges))), 60)

    cloud.run(main())
    # one round per position would be 400 writes; grouped they are a handful
    assert 1 <= len(writes.held) <= edges // 10, len(writes.held)
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["acked"] == {"/".join(source(i)): 2 for i in range(edges)}
    cloud.close()


def test_a_call_waits_for_a_round_that_started_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cloud = Cloud(tmp_path, 2)
    writes = Writes(monkeypatch)
    ingestor = cloud.ingestor
    outcomes = cloud.run(writes.behind_a_held_round(
        ingestor.checkpoint(known={source(1): 4}), ingestor.checkpoint(known={source(2): 9})))
    assert outcomes == [None, None]
    # the first round could not hold source 2 (it started before the call): a second did
    assert len(writes.held) == 2
    assert writes.held[0] == {"/".join(source(1)): 4}
    assert writes.held[1] == {"/".join(source(1)): 4, "/".join(source(2)): 9}
    cloud.close()


def test_callers_waiting_together_are_served_by_one_round(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cloud = Cloud(tmp_path, 2)
    writes = Writes(monkeypatch)
    ingestor = cloud.ingestor
    cloud.run(writes.behind_a_held_round(
        ingestor.checkpoint(), *(ingestor.checkpoint(known={source(i): i}) for i in range(20))))
    assert len(writes.held) == 2  # the running round, then one for all twenty
    assert writes.held[1] == {"/".join(source(i)): i for i in range(20)}
    cloud.close()


def test_a_failed_round_leaves_its_positions_to_the_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cloud = Cloud(tmp_path, 2)
    writes = Writes(monkeypatch)
    writes.fail_next = True
    ingestor = cloud.ingestor
    err_a, err_b = cloud.run(writes.behind_a_held_round(
        ingestor.checkpoint(known={source(1): 5}), ingestor.checkpoint(known={source(2): 6})))
    assert isinstance(err_a, OSError)  # the round it ran failed: it must not ack
    assert err_b is None
    # the next round wrote both: the failed round's position was not dropped
    assert writes.held == [{"/".join(source(1)): 5, "/".join(source(2)): 6}]
    assert cloud.ingestor.acked_offset(source(1)) == 5
    cloud.close()


def test_a_cancelled_round_and_the_next_never_write_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The broker's stop cancels the periodic round and checkpoints once more; the
    cancelled round's thread goes on. The two must not share the temp file, and the
    last one's state is what stays."""
    cloud = Cloud(tmp_path, 2)
    writes = Writes(monkeypatch)
    writes.gate = threading.Event()

    async def main() -> None:
        periodic = asyncio.create_task(cloud.ingestor.checkpoint())
        await writes.round_started()
        periodic.cancel()
        final = asyncio.create_task(cloud.ingestor.checkpoint(known={source(3): 7}))
        await asyncio.sleep(0)
        writes.gate.set()
        await asyncio.wait_for(final, 10)
        assert periodic.cancelled()

    cloud.run(main())
    assert writes.most_inside == 1
    assert len(writes.held) == 2 and writes.held[-1] == {"/".join(source(3)): 7}
    assert json.loads((tmp_path / STATE_FILE).read_text())["acked"] == {
        "/".join(source(3)): 7}
    cloud.close()
