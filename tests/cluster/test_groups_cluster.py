"""Consumer groups on a 3-node JetStream cluster while the bucket's leader is killed.

Two coordinators (two broker nodes) share the group bucket (replicas 3). A member commits
ever larger offsets through either node, heartbeats on the other; the NATS node leading
the bucket's stream is killed with SIGKILL and started again, repeatedly. Requests that
meet the election answer GroupStoreError (a 503 the client retries); none may be lost
once answered, and the record, watched at every revision, never moves an offset back.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from cloud_broker.config import TopicConfig
from cloud_broker.groups import GroupCoordinator, GroupStoreError
from cloud_broker.groups.kv_backend import DEFAULT_BUCKET, KvGroupBackend
from cloud_broker.storage import PartitionStore
from shared_log import Record
from tests.cluster.cluster_testing import OffsetWatch
from tests.cluster.natsd import NatsCluster


def _leader_kills(tmp_path: Path, cluster: NatsCluster, kills: int) -> None:
    parts = PartitionStore(tmp_path / "data")
    parts.ensure_topic(TopicConfig("t", 2))
    for p in parts.partitions("t"):
        p.log.append([Record(b"k", b"v", 1)] * 50_000)
    conn = SimpleNamespace(servers=tuple(cluster.urls), user=None, password=None, token=None,
                           creds_file=None, connect_timeout_s=5.0, request_timeout_s=2.0)
    rng = random.Random(kills)

    async def retrying(call):  # type: ignore[no-untyped-def]
        """What the client does with a 503: try again (another node, after a pause)."""
        for _ in range(200):
            try:
                return await call()
            except GroupStoreError:
                await asyncio.sleep(0.1)
        raise AssertionError("the group stayed unavailable for 20 s")

    async def main() -> tuple[int, OffsetWatch, list[dict[str, int]]]:
        b1, b2 = (await KvGroupBackend.connect(conn, 3), await KvGroupBackend.connect(conn, 3))
        nodes = (GroupCoordinator(parts, b1), GroupCoordinator(parts, b2))
        watch = await OffsetWatch(cluster.urls, "g").start()
        view = await retrying(lambda: nodes[0].join("g", "a", ["t"], 30_000, None))
        secret, acked = view["member_secret"], 0
        stop = asyncio.Event()

        async def killer() -> None:
            for _ in range(kills):
                await asyncio.sleep(rng.uniform(0.3, 0.8))
                leader = await asyncio.to_thread(cluster.stream_leader, f"KV_{DEFAULT_BUCKET}")
                await asyncio.to_thread(leader.kill)
                await asyncio.sleep(rng.uniform(0.2, 1.0))
                await asyncio.to_thread(cluster.restart_node, leader)
            stop.set()

        k = asyncio.create_task(killer())
        offset = 0
        while not stop.is_set():
            offset += rng.randrange(1, 50)
            node = nodes[offset % 2]
            await retrying(lambda n=node, o=offset: n.commit("g", "a", 1, [("t", 0, o)],
                                                             secret))
            acked = offset
            await retrying(lambda n=nodes[1 - offset % 2]: n.heartbeat("g", "a", 1, secret))
        await k
        final = [n.committed("g") for n in nodes]
        fresh = await retrying(lambda: b2.get("g"))
        for n in nodes:
            n.close()
        await watch.caught_up({0: acked})
        await watch.stop()
        await b1.aclose()
        await b2.aclose()
        assert fresh is not None and fresh.record["offsets"] == [["t", 0, acked]]
        return acked, watch, final

    try:
        acked, watch, _ = asyncio.run(main())
    finally:
        parts.close()
    assert acked > 0
    assert not watch.moved_backwards(), watch.moved_backwards()[:10]
    assert watch.history and watch.history[-1] == {0: acked}


def test_group_survives_three_leader_kills(tmp_path: Path,
                                           jetstream_cluster3: NatsCluster) -> None:
    _leader_kills(tmp_path, jetstream_cluster3, kills=3)


@pytest.mark.slow
def test_group_survives_ten_leader_kills(tmp_path: Path,
                                         jetstream_cluster3: NatsCluster) -> None:
    _leader_kills(tmp_path, jetstream_cluster3, kills=10)
