"""Broker nodes killed with -9 while an edge drains and a consumer group reads.

Two ``cloud-broker serve`` nodes over one 3-node JetStream cluster (replicas 3). The edge
lists both nodes (``uplink.url`` as a list) and fails over between them; two members of
one consumer group read through a round-robin balancer in front of both nodes (a member's
requests land on either node, and move when one dies). A node is killed with SIGKILL,
the edge must make progress on the other one, and the node is started again; repeated.

Verdicts from the data: every edge record is in the cluster exactly once, each device in
one partition in order (``verify_cloud`` over what a node serves); the group processed
every offset of every partition, and its committed offsets, watched in the KV bucket at
every revision whichever node stored it, never moved backwards.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import httpx
import pytest

from edge_agent.forwarder import Forwarder, StreamSender
from edge_agent.uplink_http import HttpUplink
from tests.cluster.cluster_testing import (
    PARTITIONS,
    GroupRun,
    OffsetWatch,
    cluster_broker,
    committed_json,
    group_member,
    read_cloud_http,
)
from tests.cluster.lb import RoundRobinProxy
from tests.cluster.natsd import NatsCluster
from tests.helpers_uplink import edge_config, fill, open_edge, verify_cloud

DEVICES = 40
GROUP = "readers"


async def _until(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def _kill_run(tmp_path: Path, cluster: NatsCluster, kills: int, seed: int) -> None:
    nodes = [cluster_broker(tmp_path / f"b{i}", cluster.urls) for i in (1, 2)]
    for n in nodes:
        n.start()
    lb = RoundRobinProxy([n.port for n in nodes]).start()
    urls = tuple(f"http://127.0.0.1:{n.port}" for n in nodes)
    cfg = edge_config(tmp_path / "edge", url=urls[0], urls=urls, max_batch_records=500,
                      max_in_flight=4, timeout_s=2.0)
    store = open_edge(cfg)
    rng = random.Random(seed)
    run = GroupRun()

    up = HttpUplink(cfg.uplink.endpoints, timeout_s=cfg.uplink.timeout_s)

    async def main() -> OffsetWatch:
        watch = await OffsetWatch(cluster.urls, GROUP).start()
        stop = asyncio.Event()
        lb_url = f"http://127.0.0.1:{lb.port}"
        members = [asyncio.create_task(group_member(lb_url, GROUP, run, stop))
                   for _ in range(2)]
        fwd = Forwarder([StreamSender(store, cfg.edge_id, cfg.uplink)], up, cfg.uplink)
        task = asyncio.create_task(fwd.run(persist_interval_s=0.1))
        try:
            for k in range(kills):
                fill(store, 2000, DEVICES, start=store.log.end_offset)
                fwd.notify()
                victim = nodes[rng.randrange(2)]
                await asyncio.sleep(rng.uniform(0.05, 0.5))  # mid-drain
                await asyncio.to_thread(victim.kill)
                target = store.acked_offset + 300
                await _until(lambda t=target: store.acked_offset >= t or fwd.drained(), 60,
                             f"edge progress on the surviving node after kill {k + 1}")
                assert not task.done(), task
                await asyncio.to_thread(victim.start)
            await _until(fwd.drained, 120, "the edge to drain")
            end = store.log.end_offset
            ends = await _partition_ends(urls[0])  # duplicates, if any: verify_cloud
            await _until(lambda: _committed_all(urls[1], ends), 120,
                         "the group to commit every partition's end")
        finally:
            stop.set()
            await asyncio.gather(*members)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await up.aclose()
            await watch.stop()
        view = await read_cloud_http(urls[1])
        verify_cloud(view, {(cfg.edge_id, "telemetry", store.generation): range(end)})
        return watch

    try:
        watch = asyncio.run(main())
    finally:
        lb.stop()
        for n in nodes:
            n.stop()
    assert up.endpoints.switches >= 1, "the edge never failed over"
    assert not run.errors, run.errors
    assert not watch.moved_backwards(), watch.moved_backwards()[:10]
    assert len(watch.history) >= kills, "the watch saw too few commits to judge"
    ends = {p: max(run.processed.get(p, [-1])) + 1 for p in range(PARTITIONS)}
    for p, offsets in run.processed.items():
        missing = set(range(ends[p])) - set(offsets)
        assert not missing, f"partition {p}: the group never processed {sorted(missing)[:10]}"
    store.log.close()


async def _partition_ends(url: str) -> dict[int, int]:
    async with httpx.AsyncClient() as c:
        doc = (await c.get(f"{url}/v1/topics/telemetry", timeout=10)).json()
    return {p["partition"]: p["end_offset"] for p in doc["partitions"]}


def _committed_all(url: str, ends: dict[int, int]) -> bool:
    try:
        got = committed_json(url, GROUP)
    except Exception:
        return False
    return all(got.get(p, -1) >= e for p, e in ends.items())


def test_three_broker_kills_while_draining_and_reading(tmp_path: Path,
                                                       jetstream_cluster3: NatsCluster) -> None:
    _kill_run(tmp_path, jetstream_cluster3, kills=3, seed=3)


@pytest.mark.slow
def test_ten_broker_kills_while_draining_and_reading(tmp_path: Path,
                                                     jetstream_cluster3: NatsCluster) -> None:
    _kill_run(tmp_path, jetstream_cluster3, kills=12, seed=12)
