"""Cluster mode under NATS faults while an edge drains: nothing lost, nothing twice.

A real ``cloud-broker serve`` with ``[storage] backend = "jetstream"`` (replicas 3) over a
real 3-node cluster, a real edge forwarder (HttpUplink) draining a filled log into it,
and in the middle of the drain: kill -9 of the NATS node that leads a partition's stream,
then its restart (3 times unmarked, 10 times slow); or one node frozen (SIGSTOP) for a
while, then resumed. The verdict reads every partition back from JetStream with a fresh
store: every edge record exactly once, per-device order (tests/helpers_uplink).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloud_broker.config import TopicConfig
from cloud_broker.storage.jetstream import Connection, JetStreamSettings, JetStreamStore
from cloud_broker.storage.open import until_available
from edge_agent.forwarder import Forwarder, StreamSender
from edge_agent.uplink_http import HttpUplink
from tests.cluster.natsd import NatsCluster, NatsNode, jetstream_cluster
from tests.helpers import Server, broker_server
from tests.helpers_uplink import edge_config, fill, open_edge, read_logs, verify_cloud

DEVICES = 50
PARTITIONS = 4
PREFIX = "faults"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with jetstream_cluster(tmp_path / "nats", size=3) as c:
        yield c


def cluster_broker(tmp: Path, cluster: NatsCluster) -> Server:
    servers = ", ".join(f'"{u}"' for u in cluster.urls)
    return broker_server(tmp, topics={"telemetry": PARTITIONS}, extra=(
        f'[storage]\nbackend = "jetstream"\n[storage.jetstream]\nservers = [{servers}]\n'
        f'replicas = 3\nstream_prefix = "{PREFIX}"\nrequest_timeout_s = 2.0\n'))


def verdict(cluster: NatsCluster, expected: dict[tuple[str, str, str], range]) -> None:
    for i in range(PARTITIONS):  # the last fault may have left an election going on
        cluster.stream_leader(f"{PREFIX}_telemetry_{i}")
    store = JetStreamStore(JetStreamSettings(Connection(tuple(cluster.urls)), replicas=3,
                                             stream_prefix=PREFIX))
    try:  # a restarted node may still be catching up: wait as a broker's start does
        parts = until_available(lambda: store.ensure_topic(TopicConfig("telemetry", PARTITIONS)),
                                "open the topic", time.monotonic() + 60)
        verify_cloud(read_logs({p.index: p for p in parts}), expected)  # type: ignore[arg-type]
    finally:
        store.close()


def drain_with_faults(tmp: Path, cluster: NatsCluster, rounds: int,
                      fault: Callable[[int], None], per_round: int = 1500) -> None:
    broker = cluster_broker(tmp / "broker", cluster).start()
    cfg = edge_config(tmp / "edge", url=f"http://127.0.0.1:{broker.port}",
                      max_batch_records=500, timeout_s=5.0)
    store = open_edge(cfg)
    fill(store, 2000, DEVICES)

    async def main() -> None:
        up = HttpUplink(cfg.uplink.url, timeout_s=cfg.uplink.timeout_s)
        fwd = Forwarder([StreamSender(store, cfg.edge_id, cfg.uplink)], up, cfg.uplink)
        task = asyncio.create_task(fwd.run(persist_interval_s=0.1))
        try:
            for i in range(rounds):
                fill(store, per_round, DEVICES, start=store.log.end_offset)
                fwd.notify()
                target = store.acked_offset + per_round // 3
                deadline = time.monotonic() + 90
                while store.acked_offset < target:  # mid-drain: part acked, part not
                    assert time.monotonic() < deadline, f"no progress in round {i}"
                    assert not task.done(), task
                    await asyncio.sleep(0.01)
                await asyncio.to_thread(fault, i)
            deadline = time.monotonic() + 120
            while not fwd.drained():
                assert time.monotonic() < deadline, "did not drain after the last fault"
                assert not task.done(), task
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await up.aclose()

    try:
        asyncio.run(main())
    finally:
        broker.stop()
    verdict(cluster, {("edge-1", "telemetry", store.generation): range(store.log.end_offset)})
    store.log.close()


def kill_stream_leaders(cluster: NatsCluster) -> Callable[[int], None]:
    def fault(i: int) -> None:
        leader = cluster.stream_leader(f"{PREFIX}_telemetry_{i % PARTITIONS}")
        cluster.kill_node(leader)
        cluster.stream_leader(f"{PREFIX}_telemetry_{i % PARTITIONS}")  # a new one elected
        cluster.restart_node(leader)
    return fault


def freeze_node(cluster: NatsCluster, seconds: float) -> Callable[[int], None]:
    def fault(i: int) -> None:
        node: NatsNode = cluster.stream_leader(f"{PREFIX}_telemetry_0")
        assert node.proc is not None
        node.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(seconds)  # the fault itself: the node is gone this long
        finally:
            node.proc.send_signal(signal.SIGCONT)
        node.wait_healthy(60)
    return fault


def test_stream_leader_killed_3_times_while_an_edge_drains(tmp_path: Path,
                                                           cluster: NatsCluster) -> None:
    drain_with_faults(tmp_path, cluster, 3, kill_stream_leaders(cluster))


@pytest.mark.slow
def test_stream_leader_killed_10_times_while_an_edge_drains(tmp_path: Path,
                                                            cluster: NatsCluster) -> None:
    drain_with_faults(tmp_path, cluster, 10, kill_stream_leaders(cluster))


def test_a_node_frozen_5_s_while_an_edge_drains(tmp_path: Path, cluster: NatsCluster) -> None:
    drain_with_faults(tmp_path, cluster, 1, freeze_node(cluster, 5))


@pytest.mark.slow
def test_a_node_stopped_30_s_while_an_edge_drains(tmp_path: Path, cluster: NatsCluster) -> None:
    drain_with_faults(tmp_path, cluster, 1, freeze_node(cluster, 30))
