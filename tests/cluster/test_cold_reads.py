"""Reads older than the tail cache (cloud_broker/storage/jetstream/_follow.py ``_load``):
direct gets answered by any replica of a 3-node cluster, streams made without direct gets
switched on when opened, and the leader's get when no replica answers directly."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import nats
import pytest
from nats.js.api import StorageType, StreamConfig

from cloud_broker.config import TopicConfig
from cloud_broker.storage.jetstream import Connection, JetStreamSettings, JetStreamStore
from shared_log import Record
from tests.cluster.natsd import NatsCluster, jetstream_cluster
from tests.helpers import wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with jetstream_cluster(tmp_path_factory.mktemp("cold"), size=3) as c:
        yield c


def _store(cluster: NatsCluster, prefix: str, **settings: Any) -> JetStreamStore:
    """No tail cache: every read's bodies come from the streams."""
    return JetStreamStore(JetStreamSettings(Connection(tuple(cluster.urls)), replicas=3,
                                            stream_prefix=prefix, cache_bytes=0,
                                            follow_interval_s=0.2, **settings))


def _write(part: object, batches: int = 20, per: int = 50) -> list[tuple[bytes, bytes]]:
    rows = []
    for b in range(batches):
        recs = [Record(f"dev-{i % 7}".encode(), f"{b}:{i}".encode() * 10, 1_700_000_000_000 + i)
                for i in range(per)]
        part.append(recs)  # type: ignore[attr-defined]
        rows += [(r.key, r.value) for r in recs]
    # appends are acknowledged by the stream asynchronously: wait until all are replicated
    wait_for(lambda: part.durable_offset == part.end_offset == len(rows),  # type: ignore[attr-defined]
             15, message="the appends to be replicated")
    return rows


def _read_all(part: object) -> list[tuple[bytes, bytes]]:
    out, offset = [], part.start_offset  # type: ignore[attr-defined]
    while offset < part.durable_offset:  # type: ignore[attr-defined]
        res = part.fetch(offset, 120, 1 << 20)  # type: ignore[attr-defined]
        assert not res.skipped
        out += [(r.key, r.value) for r in res.records]
        assert res.next_offset > offset
        offset = res.next_offset
    return out


def _allow_direct(cluster: NatsCluster, stream: str, on: bool | None = None) -> bool:
    async def go() -> bool:
        nc = await nats.connect(cluster.urls[0])
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            if on is not None and info.config.allow_direct != on:
                info.config.allow_direct = on
                info = await js.update_stream(info.config)
            return bool(info.config.allow_direct)
        finally:
            await nc.close()
    return asyncio.run(go())


def test_cold_reads_return_every_record_in_order(cluster: NatsCluster) -> None:
    store = _store(cluster, "cold1")
    try:
        (part,) = store.ensure_topic(TopicConfig("t", 1))
        assert _allow_direct(cluster, store.stream_name("t", 0))
        written = _write(part)
        assert _read_all(part) == written
    finally:
        store.close()
    reopened = _store(cluster, "cold1")  # a node that never saw the writes
    try:
        (part,) = reopened.ensure_topic(TopicConfig("t", 1))
        assert _read_all(part) == written
    finally:
        reopened.close()


def test_a_stream_made_without_direct_gets_is_switched_on(cluster: NatsCluster) -> None:
    probe = _store(cluster, "cold2")
    name, subject = probe.stream_name("t", 0), probe.subject("t", 0)
    probe.close()

    async def make() -> None:
        nc = await nats.connect(cluster.urls[0])
        await nc.jetstream().add_stream(StreamConfig(
            name=name, subjects=[subject], storage=StorageType.FILE, num_replicas=3,
            allow_direct=False))
        await nc.close()
    asyncio.run(make())
    assert not _allow_direct(cluster, name)
    store = _store(cluster, "cold2")
    try:
        store.ensure_topic(TopicConfig("t", 1))
        assert _allow_direct(cluster, name)
    finally:
        store.close()


def test_reads_fall_back_to_the_leader_when_direct_gets_are_off(cluster: NatsCluster) -> None:
    store = _store(cluster, "cold3")
    try:
        (part,) = store.ensure_topic(TopicConfig("t", 1))
        written = _write(part, batches=8)
        # nobody answers a direct get now: only the leader's get can return the bodies
        assert not _allow_direct(cluster, store.stream_name("t", 0), on=False)
        assert _read_all(part) == written
    finally:
        store.close()
