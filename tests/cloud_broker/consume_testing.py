"""Helpers for the consumer tests: put records into a broker, read partitions back.

Strategy: records go in through the real ingest endpoint as uplink batches from one edge
(``Ingester`` keeps the edge offset across calls), and every value is
``{"d": device, "seq": n}``, so a test can check completeness and per-device order from
what it reads, without keeping a copy of what it wrote.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Iterable

import httpx

from cloud_broker.client import Consumer, ConsumerRecord
from cloud_broker.ingest import partition_for
from uplink import Batch, UplinkRecord, encode_batch


def device_key(device: int) -> bytes:
    return b"dev-%04d" % device


class Ingester:
    """Ingests readings of ``devices`` devices as one edge (offsets continue across calls)."""

    def __init__(self, url: str, topic: str = "telemetry", edge: str = "gw-1",
                 token: str | None = None) -> None:
        self.url, self.topic, self.edge = url, topic, edge
        self.headers = {"Content-Type": "application/cbor"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.offset = 0
        self.seq: dict[int, int] = defaultdict(int)

    def send(self, devices: int, per_device: int, batch_size: int = 500) -> int:
        """Ingest ``per_device`` readings for each device, interleaved; returns how many."""
        pending = []
        for _ in range(per_device):
            for d in range(devices):
                pending.append((d, self.seq[d]))
                self.seq[d] += 1
        for i in range(0, len(pending), batch_size):
            self._post(pending[i:i + batch_size])
        return len(pending)

    def _post(self, readings: list[tuple[int, int]]) -> None:
        base = self.offset
        recs = tuple(UplinkRecord(base + i, device_key(d), 1_700_000_000_000 + s,
                                  json.dumps({"d": d, "seq": s}).encode())
                     for i, (d, s) in enumerate(readings))
        body, enc = encode_batch(Batch(self.edge, "telemetry", "gen1", base,
                                       base + len(recs) - 1, recs))
        resp = httpx.post(f"{self.url}/v1/ingest/{self.topic}", content=body,
                          headers={**self.headers, "Content-Encoding": enc}, timeout=30)
        assert resp.status_code == 200, resp.text
        self.offset += len(recs)


def url_of(server: object) -> str:
    return f"http://127.0.0.1:{server.port}"  # type: ignore[attr-defined]


async def read_partition(url: str, topic: str, partition: int, max_records: int = 1000
                         ) -> list[ConsumerRecord]:
    """Every record of a partition up to its current end, through the client's fetch."""
    consumer = Consumer(url, topics=[topic])
    out: list[ConsumerRecord] = []
    try:
        first = await consumer.fetch(topic, partition, 0, 1)
        offset, end = first.start_offset, first.end_offset
        while offset < end:
            res = await consumer.fetch(topic, partition, offset, max_records)
            out.extend(res.records)
            assert res.next_offset > offset
            offset = res.next_offset
    finally:
        await consumer.close()
    return out


def read_all(url: str, topic: str, partitions: int) -> dict[int, list[ConsumerRecord]]:
    async def run() -> dict[int, list[ConsumerRecord]]:
        return {p: await read_partition(url, topic, p) for p in range(partitions)}
    return asyncio.run(run())


def check_complete_and_ordered(by_partition: dict[int, list[ConsumerRecord]],
                               expected: dict[int, int]) -> None:
    """Every device's readings 0..n-1 exactly once, in order, all in the device's partition."""
    n = len(by_partition)
    seen: dict[int, list[int]] = defaultdict(list)
    for p, records in by_partition.items():
        offsets = [r.offset for r in records]
        assert offsets == sorted(offsets), f"partition {p} out of offset order"
        for r in records:
            doc = json.loads(r.value)
            assert partition_for(r.key, n) == p, f"device {doc['d']} in partition {p}"
            seen[doc["d"]].append(doc["seq"])
    for device, count in expected.items():
        assert seen[device] == list(range(count)), f"device {device}: {seen[device][:20]}..."


def values(records: Iterable[ConsumerRecord]) -> list[tuple[int, int]]:
    return [(json.loads(r.value)["d"], json.loads(r.value)["seq"]) for r in records]
