"""Exactly-once with two broker nodes over one JetStream cluster (cloud_broker.ingest.shared).

Two nodes here are two ``JetStreamStore`` + ``SharedIngestor`` pairs, each with its own
NATS connection, over a real 3-node cluster; the edge is ``uplink.SenderState`` (the
protocol's own sender rules) driving batches at them: the same batch to both nodes at
once, an answer lost and the batch retried on the other node, batches alternating between
nodes. The verdict reads the partitions back: every edge record exactly once, one
partition per device, per-device order (tests/helpers_uplink.verify_cloud).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_broker.config import TopicConfig
from cloud_broker.ingest import IngestUnavailable
from cloud_broker.ingest.partitioner import partition_for
from cloud_broker.ingest.shared import SharedIngestor
from cloud_broker.storage.jetstream import Connection, JetStreamSettings, JetStreamStore
from tests.cluster.natsd import NatsCluster, jetstream_cluster
from tests.helpers_uplink import read_logs, verify_cloud
from uplink import Ack, Batch, Refusal, SenderState, UplinkRecord

TOPIC = "telemetry"
PARTITIONS = 4
SOURCE = ("edge-1", "telemetry", "gen-a")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with jetstream_cluster(tmp_path_factory.mktemp("race"), size=3) as c:
        yield c


class Node:
    """One stateless broker node: its own connection, view and ingest."""

    def __init__(self, cluster: NatsCluster, prefix: str, tmp: Path) -> None:
        self.store = JetStreamStore(JetStreamSettings(
            Connection(tuple(cluster.urls)), replicas=3, stream_prefix=prefix,
            follow_interval_s=0.2))
        self.store.ensure_topic(TopicConfig(TOPIC, PARTITIONS))
        tmp.mkdir(parents=True, exist_ok=True)
        self.ingestor = SharedIngestor(self.store, tmp)

    async def ingest(self, batch: Batch) -> Ack | Refusal:
        """As the edge does on a 503: the same batch again (a busy cluster may leave a
        piece unplaced after every attempt; what did land makes the retry a partial)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while True:
            try:
                return await self.ingestor.ingest(TOPIC, batch)
            except IngestUnavailable:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.1)

    def close(self) -> None:
        self.store.close()


def edge_records(n: int, devices: int = 13) -> list[UplinkRecord]:
    return [UplinkRecord(i, b"dev-%03d" % (i % devices), 1_700_000_000_000 + i,
                         b'{"d":%d,"seq":%d}' % (i % devices, i)) for i in range(n)]


def batch_of(records: list[UplinkRecord], base: int, last: int) -> Batch:
    return Batch(*SOURCE, base, last, tuple(records[base:last + 1]))


async def drive(nodes: list[Node], records: list[UplinkRecord], seed: int,
                batch_records: int = 40) -> dict[str, int]:
    """The edge: send until everything is acked; returns what happened, by kind."""
    rng = random.Random(seed)
    sender = SenderState(*SOURCE, acked_offset=-1, max_in_flight=batch_records * 4,
                         batch_records=batch_records)
    seen = {"both": 0, "lost": 0, "refused": 0}
    for _ in range(10_000):
        if sender.acked_offset == len(records) - 1:
            return seen
        claimed = sender.next_range(len(records))
        if claimed is None:
            sender.rewind()
            continue
        acked_when_sent = sender.acked_offset
        batch = batch_of(records, *claimed)
        a, b = rng.sample(nodes, 2)
        mode = rng.random()
        if mode < 0.4:  # the same batch on both nodes at once
            seen["both"] += 1
            replies = await asyncio.gather(a.ingest(batch), b.ingest(batch))
        elif mode < 0.7:  # the answer is lost: the edge retries on the other node
            seen["lost"] += 1
            await a.ingest(batch)
            replies = [await b.ingest(batch)]
        else:
            replies = [await a.ingest(batch)]
        for reply in replies:
            if isinstance(reply, Ack):
                sender.on_ack(reply)
            else:
                seen["refused"] += 1
                sender.on_refusal(reply, acked_when_sent)
                break
    raise AssertionError(f"the edge never finished: acked {sender.acked_offset}")


def verdict(node: Node, n: int) -> None:
    parts = {p.index: p for p in node.store.partitions(TOPIC)}
    for p in parts.values():  # the node may not have seen the other's last pieces yet
        node.store.client.run(p.catch_up())
    verify_cloud(read_logs(parts), {SOURCE: range(n)})  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [1, 2])
def test_two_nodes_racing_on_one_edge_store_every_record_once(
        cluster: NatsCluster, tmp_path: Path, seed: int) -> None:
    records = edge_records(600)
    nodes = [Node(cluster, f"race{seed}", tmp_path / f"n{i}") for i in range(2)]
    try:
        seen = asyncio.run(drive(nodes, records, seed))
        # every race happened (a refusal needs a node whose view lags the stream: the
        # marks tell a node what the other stored, so it may not happen at all)
        assert seen["both"] and seen["lost"]
        verdict(nodes[0], len(records))
        verdict(nodes[1], len(records))
    finally:
        for node in nodes:
            node.close()


def lowest_mark(records: list[UplinkRecord]) -> int:
    """What every partition holds of ``records`` at least: the lowest, over the
    partitions, of the last edge offset routed there (-1 if one got none)."""
    last = [-1] * PARTITIONS
    for r in records:
        p = partition_for(r.key, PARTITIONS)
        last[p] = max(last[p], r.offset)
    return min(last)


def test_a_node_new_to_a_source_takes_its_position_from_the_marks(
        cluster: NatsCluster, tmp_path: Path) -> None:
    """Node B never acked the source: it assumes the lowest of the partitions' marks
    (every record up to it is stored), takes a batch from there on, refuses one past it
    as a gap expecting the offset after it (not 0), and writes nothing twice."""
    records = edge_records(100)
    floor = lowest_mark(records[:50])
    assert 0 <= floor < 49  # the quietest partition's last record is behind the batch end
    a, b = (Node(cluster, "marks", tmp_path / n) for n in ("a", "b"))

    async def main() -> tuple[Ack | Refusal, Ack | Refusal, Ack | Refusal, Ack | Refusal]:
        first = await a.ingest(batch_of(records, 0, 49))
        for p in b.store.partitions(TOPIC):  # B's view reads what A wrote
            await asyncio.wrap_future(b.store.client.submit(p.catch_up()))
        old = await b.ingest(batch_of(records, 0, floor))
        gap = await b.ingest(batch_of(records, 50, 99))
        again = await b.ingest(batch_of(records, floor + 1, 99))
        return first, old, gap, again
    try:
        first, old, gap, again = asyncio.run(main())
        assert isinstance(first, Ack) and first.acked_offset == 49
        assert isinstance(old, Ack) and old.acked_offset == floor  # stored: a duplicate
        assert isinstance(gap, Refusal) and gap.expected_offset == floor + 1
        assert isinstance(again, Ack) and again.acked_offset == 99
        assert b.ingestor.stats.records_written == 50
        assert b.ingestor.stats.records_deduplicated == 49 - floor
        verdict(b, 100)
    finally:
        a.close()
        b.close()


def test_a_node_new_to_a_source_missing_from_a_partition_makes_the_edge_rewind_to_0(
        cluster: NatsCluster, tmp_path: Path) -> None:
    """With a partition that holds none of the source, no offset is known stored: B
    refuses a batch past 0 (expects 0); the resend from 0 writes nothing twice."""
    records = edge_records(100, devices=1)
    assert lowest_mark(records) == -1
    a, b = (Node(cluster, "rewind", tmp_path / n) for n in ("a", "b"))

    async def main() -> tuple[Ack | Refusal, Ack | Refusal, Ack | Refusal]:
        first = await a.ingest(batch_of(records, 0, 49))
        for p in b.store.partitions(TOPIC):
            await asyncio.wrap_future(b.store.client.submit(p.catch_up()))
        gap = await b.ingest(batch_of(records, 50, 99))
        again = await b.ingest(batch_of(records, 0, 99))
        return first, gap, again
    try:
        first, gap, again = asyncio.run(main())
        assert isinstance(first, Ack) and first.acked_offset == 49
        assert isinstance(gap, Refusal) and gap.expected_offset == 0
        assert isinstance(again, Ack) and again.acked_offset == 99
        assert b.ingestor.stats.records_written == 50
        assert b.ingestor.stats.records_deduplicated == 50
        verdict(b, 100)
    finally:
        a.close()
        b.close()


def test_a_node_restarted_reads_its_marks_back_from_the_stream(
        cluster: NatsCluster, tmp_path: Path) -> None:
    records = edge_records(80)
    a = Node(cluster, "restart", tmp_path / "a")
    try:
        assert isinstance(asyncio.run(a.ingest(batch_of(records, 0, 79))), Ack)
    finally:
        a.close()
    again = Node(cluster, "restart", tmp_path / "a2")
    try:
        reply = asyncio.run(again.ingest(batch_of(records, 0, 79)))
        assert isinstance(reply, Ack) and again.ingestor.stats.records_written == 0
        verdict(again, 80)
    finally:
        again.close()
