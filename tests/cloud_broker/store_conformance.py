"""The conformance suite of the partition store interface (cloud_broker.storage).

Every store implementation must pass it: ``StoreConformance`` holds the tests and needs
one fixture, ``impl`` (an entry of store_impls.IMPLEMENTATIONS: ``impl.open(data_dir)``
gives a store); test_partition_store.py runs it over every implementation. The tests
use only the interface (``PartitionStoreAPI``, ``PartitionLog``) and its errors, never
a backend's internals, so a new backend is checked against exactly what the broker
relies on: offsets, durable appends of framed batches, fetch as records and as columns,
the origin replay, retention, rebasing an empty partition, long-poll wake-ups, not-found
and error behaviour, reopening, and a writer SIGKILLed mid-append.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_broker.config import TopicConfig
from cloud_broker.storage import (
    InvalidRecord,
    LogError,
    OffsetOutOfRange,
    PartitionLog,
    PartitionStoreAPI,
    UnknownTopic,
)
from shared_log import HEADER_HEAD, RECORD_HEAD, Record, decode_records

TOPIC = "t"
PARTITIONS = 2
Row = tuple[bytes, bytes, int, list[tuple[str, bytes]]]  # key, value, timestamp, headers


def framed(rows: list[Row]) -> tuple[bytes, int, int]:
    """(body, count, max_timestamp) of ``rows`` in the record framing append_framed takes
    (docs/log-format.md), as the ingest's framing builds it."""
    pieces: list[bytes] = []
    for key, value, ts, headers in rows:
        pieces += (RECORD_HEAD.pack(ts, len(key), len(value), len(headers)), key, value)
        for name, hvalue in headers:
            raw = name.encode()
            pieces += (HEADER_HEAD.pack(len(raw), len(hvalue)), raw, hvalue)
    return b"".join(pieces), len(rows), max(r[2] for r in rows)


def origin_rows(first_edge: int, n: int) -> list[Row]:
    return [(b"k", b"v%d" % e, 1000 + e, [("x", b"1"), ("origin", b"e/s/g/%d" % e)])
            for e in range(first_edge, first_edge + n)]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class StoreConformance:
    """Run by a test class that provides the ``impl`` fixture."""

    @pytest.fixture
    def store(self, impl: Any, tmp_path: Path) -> Iterator[PartitionStoreAPI]:
        store = impl.open(tmp_path)
        store.ensure_topic(TopicConfig(TOPIC, PARTITIONS))
        yield store
        store.close()

    @pytest.fixture
    def part(self, store: PartitionStoreAPI) -> PartitionLog:
        return store.partition(TOPIC, 0)

    # -- topics and lookups ---------------------------------------------------------------

    def test_a_new_partition_is_empty(self, part: PartitionLog) -> None:
        assert isinstance(part, PartitionLog)
        assert (part.topic, part.index) == (TOPIC, 0)
        assert (part.start_offset, part.end_offset, part.durable_offset) == (0, 0, 0)
        assert (part.size_bytes, part.failed, part.corrupt_records) == (0, None, 0)
        assert part.append_wait_s == 0.0

    def test_unknown_topics_and_partitions_raise_unknown_topic(
            self, store: PartitionStoreAPI) -> None:
        with pytest.raises(UnknownTopic):
            store.partitions("nope")
        with pytest.raises(UnknownTopic):
            store.partition("nope", 0)
        with pytest.raises(UnknownTopic):
            store.partition(TOPIC, PARTITIONS)
        with pytest.raises(UnknownTopic):
            store.topic_config("nope")

    def test_topics_are_listed_sorted_and_iterated_by_topic_then_index(
            self, store: PartitionStoreAPI) -> None:
        store.ensure_topic(TopicConfig("a", 3, retention_bytes=1 << 20))
        assert store.topics() == ["a", TOPIC]
        assert [(p.topic, p.index) for p in store] == [
            ("a", 0), ("a", 1), ("a", 2), (TOPIC, 0), (TOPIC, 1)]
        assert store.topic_config("a").retention_bytes == 1 << 20
        assert [p.index for p in store.partitions("a")] == [0, 1, 2]

    def test_partitions_only_grow(self, store: PartitionStoreAPI) -> None:
        with pytest.raises(ValueError, match="partitions"):
            store.ensure_topic(TopicConfig(TOPIC, PARTITIONS - 1))
        assert len(store.ensure_topic(TopicConfig(TOPIC, PARTITIONS + 1))) == PARTITIONS + 1
        assert store.partition(TOPIC, PARTITIONS).end_offset == 0

    # -- append, durability, fetch -------------------------------------------------------

    def test_framed_batches_are_durable_and_read_back_as_records_and_columns(
            self, part: PartitionLog) -> None:
        async def write() -> tuple[int, int]:
            a = part.append_framed(*framed(origin_rows(0, 3)))
            b = part.append_framed(*framed(origin_rows(3, 2)))
            await part.wait_durable(b[1])
            return a[0], b[1]
        first, last = run(write())
        assert (first, last) == (0, 4)
        assert part.end_offset == 5 and part.durable_offset == 5 and part.size_bytes > 0
        assert part.append_wait_s == 0.0  # nothing waits once the appends are durable
        res = part.fetch(0, 100, 1 << 20)
        assert [r.offset for r in res.records] == [0, 1, 2, 3, 4]
        assert res.next_offset == 5 and not res.skipped
        r = res.records[3]
        assert (r.key, r.value, r.timestamp) == (b"k", b"v3", 1003)
        assert list(r.headers) == [("x", b"1"), ("origin", b"e/s/g/3")]
        cols = part.fetch_columns(1, 2, 1 << 20)
        assert len(cols.columns) == 2 and cols.next_offset == 3
        assert cols.columns.values == [b"v1", b"v2"]
        assert list(cols.columns.timestamps) == [1001, 1002]
        assert cols.columns.header_names == ["x", "origin"]
        raw = part.fetch_batches(1, 2, 1 << 20)
        assert (raw.count, raw.next_offset) == (2, 3)
        assert [r.value for b in raw.batches
                for r in decode_records(b.data, b.info)[b.first - b.info.base_offset:
                                                        b.stop - b.info.base_offset]
                ] == [b"v1", b"v2"]

    def test_record_appends_and_the_end_cap_of_columns(self, part: PartitionLog) -> None:
        first, last = part.append([Record(b"a", b"1", 5), Record(b"b", b"2", 6, (("h", b""),))])
        run(part.wait_durable(last))
        assert (first, last) == (0, 1)
        capped = part.fetch_columns(0, 100, 1 << 20, end=1)
        assert (len(capped.columns), capped.next_offset) == (1, 1)
        at_cap = part.fetch_columns(1, 100, 1 << 20, end=1)
        assert (len(at_cap.columns), at_cap.next_offset) == (0, 1)
        capped_raw = part.fetch_batches(0, 100, 1 << 20, end=1)
        assert (capped_raw.count, capped_raw.next_offset) == (1, 1)
        assert part.fetch_batches(1, 100, 1 << 20, end=1).batches == []
        assert len(part.fetch(2, 10, 1 << 20).records) == 0  # at the end: nothing, no error

    def test_a_fetch_outside_the_partition_raises_offset_out_of_range(
            self, part: PartitionLog) -> None:
        part.append([Record(b"a", b"1", 5)])
        with pytest.raises(OffsetOutOfRange) as info:
            part.fetch(5, 10, 1 << 20)
        assert (info.value.start_offset, info.value.end_offset) == (0, 1)
        with pytest.raises(OffsetOutOfRange):
            part.fetch_columns(5, 10, 1 << 20)
        with pytest.raises(OffsetOutOfRange):
            part.fetch_batches(5, 10, 1 << 20)

    def test_a_record_the_store_cannot_hold_is_invalid(self, part: PartitionLog) -> None:
        with pytest.raises(InvalidRecord):
            part.append([Record(b"k", b"v", 1, (("n" * 70_000, b""),))])
        assert part.end_offset == 0

    def test_a_closed_partition_refuses_with_a_log_error(self, part: PartitionLog) -> None:
        part.close()
        with pytest.raises(LogError):
            part.append([Record(b"k", b"v", 1)])
        with pytest.raises(LogError):
            part.append_framed(*framed(origin_rows(0, 1)))

    def test_records_survive_a_reopen(self, impl: Any, tmp_path: Path,
                                      store: PartitionStoreAPI) -> None:
        part = store.partition(TOPIC, 1)
        run(part.wait_durable(part.append_framed(*framed(origin_rows(0, 4)))[1]))
        store.close()
        again = impl.open(tmp_path)
        try:
            again.ensure_topic(TopicConfig(TOPIC, PARTITIONS))
            p = again.partition(TOPIC, 1)
            assert (p.start_offset, p.end_offset, p.durable_offset) == (0, 4, 4)
            assert [r.value for r in p.fetch(0, 10, 1 << 20).records] == [
                b"v0", b"v1", b"v2", b"v3"]
        finally:
            again.close()

    # -- replay, retention, rebase, wake-ups ----------------------------------------------

    def test_replay_visits_the_last_header_of_that_name_only(self, part: PartitionLog
                                                            ) -> None:
        part.append_framed(*framed(origin_rows(0, 3)))
        part.append_framed(*framed([
            (b"k", b"not last", 1, [("origin", b"forged"), ("y", b"")]),
            (b"k", b"none", 1, []),
            *origin_rows(3, 2)]))
        seen: list[bytes] = []
        assert part.replay_header(0, "origin", seen.append) == 7
        assert seen == [b"e/s/g/0", b"e/s/g/1", b"e/s/g/2", b"e/s/g/3", b"e/s/g/4"]
        tail: list[bytes] = []
        assert part.replay_header(5, "origin", tail.append) == 2
        assert tail == [b"e/s/g/3", b"e/s/g/4"]

    def test_retention_deletes_from_the_start(self, impl: Any, tmp_path: Path) -> None:
        store = impl.open(tmp_path / "r")
        try:
            (part,) = store.ensure_topic(TopicConfig("r", 1, retention_bytes=4096,
                                                     segment_bytes=1024))
            for e in range(0, 200, 10):
                part.append_framed(*framed(origin_rows(e, 10)))
            run(part.wait_durable(part.end_offset - 1))
            deleted = store.enforce_retention()
            assert deleted > 0 and part.start_offset == deleted
            assert part.end_offset == 200 and part.enforce_retention() == 0
            with pytest.raises(OffsetOutOfRange):
                part.fetch(0, 10, 1 << 20)
            assert part.fetch(part.start_offset, 1, 1 << 20).records[0].offset == deleted
        finally:
            store.close()

    def test_an_empty_partition_can_be_rebased_durably(self, impl: Any, tmp_path: Path,
                                                       store: PartitionStoreAPI) -> None:
        part = store.partition(TOPIC, 0)
        part.rebase_empty(1000)
        assert (part.start_offset, part.end_offset) == (1000, 1000)
        first, last = part.append([Record(b"k", b"v", 1)])
        run(part.wait_durable(last))
        assert first == 1000 and part.durable_offset == 1001
        with pytest.raises(ValueError):
            part.rebase_empty(5000)
        store.close()
        again = impl.open(tmp_path)
        try:
            again.ensure_topic(TopicConfig(TOPIC, PARTITIONS))
            p = again.partition(TOPIC, 0)
            assert (p.start_offset, p.end_offset) == (1000, 1001)
        finally:
            again.close()

    def test_notify_wakes_a_waiter_from_another_thread(self, part: PartitionLog) -> None:
        async def wait() -> tuple[bool, bool]:
            woken = part.waiter()
            forgotten = part.waiter()
            part.forget(forgotten)
            threading.Thread(target=part.notify).start()
            async with asyncio.timeout(5):
                await woken.wait()
            await asyncio.sleep(0)
            return woken.is_set(), forgotten.is_set()
        assert run(wait()) == (True, False)

    # -- crash ---------------------------------------------------------------------------

    def test_durable_records_and_marks_survive_a_sigkilled_writer(
            self, impl: Any, tmp_path: Path) -> None:
        here = Path(__file__).parent
        repo = here.parents[1]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), str(here)])}
        proc = subprocess.Popen(
            [sys.executable, str(here / "store_crash_writer.py"), impl.name, str(tmp_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        reported: list[tuple[int, int, int]] = []
        deadline = time.monotonic() + 30
        try:
            assert proc.stdout is not None
            while len(reported) < 60:
                line = proc.stdout.readline()
                assert line and time.monotonic() < deadline, proc.stderr.read() \
                    if proc.stderr else "writer ended"
                p, last, edge = map(int, line.split())
                reported.append((p, last, edge))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        store = impl.open(tmp_path)
        try:
            parts = store.ensure_topic(TopicConfig(TOPIC, PARTITIONS, segment_bytes=4096))
            for part in parts:
                mine = [(last, edge) for p, last, edge in reported if p == part.index]
                top_last, top_edge = max(mine)
                assert part.durable_offset > top_last  # every reported record is there
                rec = part.fetch(top_last, 1, 1 << 20).records[0]
                assert rec.headers[-1] == ("origin", b"e/s/g/%d" % top_edge)
                seen: list[bytes] = []
                read = part.replay_header(part.start_offset, "origin", seen.append)
                assert read == part.end_offset - part.start_offset
                marks = [int(v.rsplit(b"/", 1)[1]) for v in seen]
                assert marks == sorted(marks) and max(marks) >= top_edge
        finally:
            store.close()
