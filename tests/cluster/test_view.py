"""The partition view's rules, pure (cloud_broker/storage/jetstream/_view.py), and a
stream holding a message that is not ours (a real node): the partition fails visibly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_broker.config import TopicConfig
from cloud_broker.storage.jetstream import Connection, JetStreamSettings, JetStreamStore
from cloud_broker.storage.jetstream._partition import _Item
from cloud_broker.storage.jetstream._view import PartitionView, Piece, ViewError, split_origin
from tests.cluster.natsd import NatsCluster
from tests.helpers import wait_for


def test_a_pending_piece_is_formatted_without_its_body() -> None:
    """An error message or log line naming a piece must not format its ~150 KB body (a
    ValueError built from that repr once cost ~1 us per ingested reading)."""
    item = _Item(b"\x00" * 150_000, 1250, 0, source=b"e/s/g/", origin=b"e/s/g/7")
    assert len(repr(item)) < 1000 and "1250" in repr(item)


def test_offsets_are_dense_and_marks_follow_the_origin_headers() -> None:
    v = PartitionView()
    v.apply(Piece(1, 0, 3, 100, 5, b"e/s/g/7"))
    v.apply(Piece(2, 3, 2, 50, 6, b"e/s/g/9"))
    v.apply(Piece(3, 5, 1, 10, 7, b"x/s/g/2"))
    assert (v.start, v.end, v.last_seq, v.size_bytes) == (0, 6, 3, 160)
    assert v.marks == {b"e/s/g/": 9, b"x/s/g/": 2}
    assert [v.locate(o) for o in (0, 2, 3, 5)] == [0, 0, 1, 2]
    with pytest.raises(ViewError):
        v.apply(Piece(4, 7, 1, 10, 8))  # a hole in the offsets
    with pytest.raises(ViewError):
        v.apply(Piece(3, 6, 1, 10, 8))  # a sequence already applied
    with pytest.raises(ViewError):
        v.apply(Piece(5, 6, 0, 0, 0))  # a rebase of a partition that holds records


def test_an_empty_partition_rebases_and_retention_keeps_the_newest() -> None:
    v = PartitionView()
    v.apply(Piece(1, 1000, 0, 0, 0))
    assert (v.start, v.end) == (1000, 1000)
    for i in range(5):
        v.apply(Piece(2 + i, 1000 + 10 * i, 10, 100, 1000 * i))
    assert v.retention_cut(250, None, 0) == 5  # keep the last 200 bytes: seqs 5, 6
    assert v.retention_cut(None, 1500, 4000) == 5  # older than 2500 ms goes
    assert v.retention_cut(0, None, 0) == 6  # never the newest message
    assert v.trim(5) == 30 and v.start == 1030 and v.size_bytes == 200


@given(st.binary(max_size=40))
def test_split_origin_never_raises(value: bytes) -> None:
    got = split_origin(value)
    assert got is None or (got[0].count(b"/") == 3 and got[1] >= 0)


def test_a_message_that_is_not_ours_fails_the_partition_visibly(
        jetstream_node: NatsCluster, tmp_path: Path) -> None:
    store = JetStreamStore(JetStreamSettings(Connection(tuple(jetstream_node.urls)),
                                             replicas=1, stream_prefix="forged",
                                             follow_interval_s=0.1))
    try:
        (part,) = store.ensure_topic(TopicConfig("t", 1))

        async def forge() -> None:
            nc = await nats.connect(jetstream_node.urls[0])
            await nc.jetstream().publish(store.subject("t", 0), b"junk",
                                         headers={"Es-Base": "nope"})
            await nc.close()
        asyncio.run(forge())
        wait_for(lambda: part.failed is not None, 10, message="the partition to fail")
        assert "Es-Base" in str(part.failed)
        with pytest.raises(Exception, match="failed"):
            part.append_framed(b"", 1, 0)
    finally:
        store.close()
