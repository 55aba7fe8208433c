"""The shared_log partition store beyond the conformance suite: what only a local log
can show (an fsync held back), here the append wait an operator reads in the metrics."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from cloud_broker.config import TopicConfig
from cloud_broker.storage import PartitionStore
from tests.cloud_broker.store_conformance import framed, origin_rows


def test_the_append_wait_counts_from_the_oldest_append_not_yet_durable(
        tmp_path: Path) -> None:
    store = PartitionStore(tmp_path, commit_interval_ms=1)
    try:
        part = store.ensure_topic(TopicConfig("t", 1))[0]
        part.log._flush_lock.acquire()  # the fsync is held back
        try:
            part.append_framed(*framed(origin_rows(0, 2)))
            started = time.monotonic()
            deadline = started + 10
            while part.append_wait_s < 0.2:
                assert time.monotonic() < deadline, "the wait did not grow"
                time.sleep(0.01)
            later = part.append_framed(*framed(origin_rows(2, 2)))
            # a later append does not restart the count: the oldest one still waits
            assert part.append_wait_s >= 0.2
            assert part.append_wait_s <= time.monotonic() - started + 0.05
            assert part.durable_offset < part.end_offset
        finally:
            part.log._flush_lock.release()
        asyncio.run(asyncio.wait_for(part.wait_durable(later[1]), 10))
        assert part.append_wait_s == 0.0
    finally:
        store.close()
