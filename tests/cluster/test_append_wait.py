"""A JetStream partition's append wait (``broker_partition_append_wait_seconds``) while
its stream has no leader: the figure an operator (and the soak) reads to tell a stalled
partition from a slow edge. Real nats-server processes; the leader is SIGKILLed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from cloud_broker.config import TopicConfig
from cloud_broker.storage.jetstream import Connection, JetStreamSettings, JetStreamStore
from tests.cloud_broker.store_conformance import framed, origin_rows
from tests.cluster.natsd import jetstream_cluster


def test_an_append_waiting_for_a_new_stream_leader_shows_its_wait(tmp_path: Path) -> None:
    with jetstream_cluster(tmp_path / "nats", size=3) as cluster:
        store = JetStreamStore(JetStreamSettings(
            Connection(tuple(cluster.urls)), replicas=3, stream_prefix="aw",
            follow_interval_s=0.2))
        try:
            part = store.ensure_topic(TopicConfig("t", 1))[0]
            _, last = part.append_framed(*framed(origin_rows(0, 2)))
            asyncio.run(asyncio.wait_for(part.wait_durable(last), 30))
            assert part.append_wait_s == 0.0
            cluster.kill_node(cluster.stream_leader("aw_t_0"))
            _, last = part.append_framed(*framed(origin_rows(2, 2)))
            seen, deadline = 0.0, time.monotonic() + 60
            while part.durable_offset <= last:
                assert time.monotonic() < deadline, "no new leader took the append"
                seen = max(seen, part.append_wait_s)
                time.sleep(0.05)
            # JetStream's followers wait 4-9 s for a lost leader before they elect one
            assert seen >= 1.0, f"the append waited {seen:.2f} s for a new leader"
            assert part.append_wait_s == 0.0
        finally:
            store.close()
