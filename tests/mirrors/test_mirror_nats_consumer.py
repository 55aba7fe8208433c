"""JetStream as a consumer sees it: every record exactly once per partition, in order.

The mirror is pushed into every kind of replay first: a batch published again inside the
duplicate window (JetStream drops it by Nats-Msg-Id), and a restart with the checkpoints
wiped after the window has passed (the mirror resumes from the subject's last message).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from mirror_testing import PARTITIONS, TOPIC, NatsKit, fill_source, open_source, source_rows
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cloud_broker.mirrors import LocalSource, MirrorManager
from cloud_broker.mirrors.nats_target import record_from_message
from shared_log import StoredRecord

pytestmark = pytest.mark.timeout(120)
N = 800


async def run_until_copied(tmp: Path, kit: NatsKit, store) -> None:  # type: ignore[no-untyped-def]
    manager = MirrorManager(tmp / "source", LocalSource(store),
                            [kit.config(wait_ms=100, duplicate_window_s=1, batch_records=64)])
    await manager.start()
    while not (manager.status()[0]["partitions"]
               and manager.status()[0]["lag"] == 0
               and len(manager.status()[0]["partitions"]) == PARTITIONS):
        await asyncio.sleep(0.05)
    await manager.stop()


async def consume(url: str, partition: int, n: int) -> list[tuple[int, StoredRecord]]:
    """A durable pull consumer on one partition's subject, acking every message."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            f"es.{TOPIC}.{partition}", durable=f"reader{partition}", stream="MIRROR",
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL,
                                  ack_policy=AckPolicy.EXPLICIT))
        out = []
        while len(out) < n:
            for m in await sub.fetch(200, timeout=5):
                out.append((m.metadata.num_delivered, record_from_message(m.headers, m.data)))
                await m.ack()
        with pytest.raises(nats.errors.TimeoutError):
            await sub.fetch(1, timeout=0.5)  # and nothing after the last record
        return out
    finally:
        await nc.close()


def test_consumer_reads_every_record_once_in_order_after_replays(tmp_path: Path) -> None:
    kit = NatsKit(tmp_path)
    try:
        async def main() -> None:
            store = open_source(tmp_path / "source")
            fill_source(store, N // 2)
            await run_until_copied(tmp_path, kit, store)
            # A replay inside the duplicate window: the whole last batch, published again.
            target = kit.target(duplicate_window_s=1)
            await target.open(TOPIC, PARTITIONS)
            batch = store.partition(TOPIC, 0).log.read(N // 2 - 64, 64)
            await target.write(0, batch)
            await target.close()
            # A restart without checkpoints, after the window: resumes from the stream.
            await asyncio.sleep(1.1)
            (tmp_path / "source" / "mirrors.db").unlink()
            fill_source(store, N // 2, start=N // 2)
            await run_until_copied(tmp_path, kit, store)
            store.close()

        asyncio.run(main())
        info = asyncio.run(stream_info(kit.url))
        assert info.config.duplicate_window == 1 and info.config.num_replicas == 1
        assert info.state.messages == N * PARTITIONS
        for p in range(PARTITIONS):
            got = asyncio.run(consume(kit.url, p, N))
            assert [d for d, _ in got] == [1] * N  # delivered once each
            records = [r for _, r in got]
            assert [r.offset for r in records] == list(range(N))
            want = source_rows(tmp_path / "source", p)
            assert [(r.offset, r.key, r.value, r.timestamp, r.headers) for r in records] == want
    finally:
        kit.close()


async def stream_info(url: str):  # type: ignore[no-untyped-def]
    nc = await nats.connect(url)
    try:
        return await nc.jetstream().stream_info("MIRROR")
    finally:
        await nc.close()
