"""The forwarder's tail cache: batches from memory are the batches the log gives.

Against a real Log on tmp_path: every range the cache serves must encode to the same
bytes as the same range read back from the log (same limits, same next offset), and
every range it does not hold (evicted, below it, past a gap, after a restart) must come
from the log. Then through the forwarder into an in-process cloud: steady appends go
from memory, a backlog after an outage from the log, exactly once either way.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from cloud_broker.config import TopicConfig
from cloud_broker.ingest import Ingestor
from cloud_broker.storage import PartitionStore
from edge_agent.forwarder import Forwarder, StreamSender
from edge_agent.outgoing import Outgoing
from edge_agent.tail import TailCache, block_of, read_block
from edge_agent.uplink_http import RetryableUplinkError
from shared_log import RECORD_HEAD, Log, Record, fetch_columns
from tests.helpers_uplink import (
    edge_config,
    memory_uplink,
    open_edge,
    read_logs,
    reading,
    run_until,
    verify_cloud,
)
from uplink import Batch, encode_batch


def records(base: int, n: int) -> list[Record]:
    """Readings with a mix of header sets (none, one, several, names in other orders)."""
    out = []
    for i in range(base, base + n):
        headers: tuple[tuple[str, bytes], ...] = (
            (), (("content-type", b"application/json"),),
            (("content-type", b"application/json"), ("seq", b"%d" % i)),
            (("device-ts", b"%d" % (i * 7)), ("seq", b"%d" % i), ("épöch", b"\xff\x00")),
        )[i % 4]
        out.append(Record(b"dev-%03d" % (i % 17), b'{"seq":%d}' % i + b"x" * (i % 50),
                          1_700_000_000_000 + i, headers))
    return out


def wire(block_next: tuple[object, int], first: int) -> tuple[bytes, int]:
    """The uplink body of a block (what goes on the wire) and the next offset."""
    block, nxt = block_next
    assert len(block) > 0  # type: ignore[arg-type]
    last = first + len(block) - 1  # type: ignore[arg-type]
    batch = Batch.trusted("edge-1", "telemetry", "g1", first, last, block)  # type: ignore[arg-type]
    return encode_batch(batch, "none")[0], nxt


def from_log(log: Log, start: int, end: int, max_records: int, max_bytes: int
             ) -> tuple[object, int]:
    res = fetch_columns(log, start, max_records=max_records, max_bytes=max_bytes, end=end)
    return block_of(res.columns), res.next_offset


def test_batches_from_memory_are_byte_identical_to_the_log(tmp_path: Path) -> None:
    with Log(tmp_path / "log") as log:
        tail = TailCache(1 << 30)
        log.on_append = tail.add
        base = 0
        for n in (1, 5, 40, 3, 200, 1, 64, 17):
            log.append(records(base, n))
            base += n
        sizes = [s for _b, _n, s in log.segments_info()]
        checked = 0
        for start, end, max_records, max_bytes in itertools.product(
                (0, 1, 3, 6, 45, 46, 250, 330), (7, 46, 300, base), (1, 2, 50, 5000),
                (1, 600, 9000, sum(sizes))):
            if start >= end:
                assert tail.block(start, end, max_records, max_bytes) is None
                continue
            mem = tail.block(start, end, max_records, max_bytes)
            assert mem is not None, (start, end, max_records, max_bytes)
            assert wire(mem, start) == wire(from_log(log, start, end, max_records, max_bytes),
                                            start), (start, end, max_records, max_bytes)
            checked += 1
        assert checked > 300


def test_without_headers_the_block_has_no_header_columns(tmp_path: Path) -> None:
    with Log(tmp_path / "log") as log:
        tail = TailCache(1 << 20)
        log.on_append = tail.add
        log.append([reading(i % 3, i) for i in range(10)])
        mem = tail.block(2, 10, 100, 1 << 20)
        assert mem is not None and mem[0].header_counts is None
        assert wire(mem, 2) == wire(from_log(log, 2, 10, 100, 1 << 20), 2)


def test_what_the_cache_does_not_hold_is_read_from_the_log(tmp_path: Path) -> None:
    with Log(tmp_path / "log") as log:
        tail = TailCache(max_bytes=3000)
        log.on_append = tail.add
        for base in range(0, 100, 10):
            log.append(records(base, 10))
        # the oldest batches went for max_bytes (only whole batches are kept)
        assert tail.block(0, 100, 1000, 1 << 20) is None
        kept = 100 - len(tail)
        assert 0 < kept < 100 and kept % 10 == 0
        assert tail.block(kept, 100, 1000, 1 << 20) is not None
        got = read_block(log, tail, 0, 100, 1000, 1 << 20)
        assert got is not None and wire(got, 0) == wire(from_log(log, 0, 100, 1000, 1 << 20), 0)
        assert (tail.records_from_log, tail.records_from_memory) == (100, 0)
        assert read_block(log, tail, kept, 100, 1000, 1 << 20) is not None
        assert tail.records_from_memory == 100 - kept
        # past the end of what is appended: nothing to build from memory
        assert tail.block(95, 101, 1000, 1 << 20) is None
        # an append the cache does not see (append_framed) leaves a gap: the cache
        # starts again after it and never serves a range across it
        framed = [RECORD_HEAD.pack(1, 3, 2, 0) + b"keyv%d" % i for i in range(5)]
        assert log.append_framed(b"".join(framed), 5, 1) == (100, 104)
        log.append(records(105, 5))
        assert tail.block(95, 110, 1000, 1 << 20) is None
        assert tail.block(100, 110, 1000, 1 << 20) is None
        mem = tail.block(105, 110, 1000, 1 << 20)
        assert mem is not None and wire(mem, 105) == wire(from_log(log, 105, 110, 1000, 1 << 20),
                                                          105)
        tail.forget_below(110)
        assert len(tail) == 0 and tail.block(105, 110, 1000, 1 << 20) is None


def test_a_reopened_log_has_an_empty_cache_and_reads_the_same(tmp_path: Path) -> None:
    with Log(tmp_path / "log") as log:
        tail = TailCache(1 << 20)
        log.on_append = tail.add
        log.append(records(0, 30))
        log.append(records(30, 30))
        before = wire(tail.block(10, 60, 1000, 1 << 20), 10)  # type: ignore[arg-type]
    with Log(tmp_path / "log") as log:
        tail = TailCache(1 << 20)
        log.on_append = tail.add
        assert tail.block(10, 60, 1000, 1 << 20) is None
        got = read_block(log, tail, 10, 60, 1000, 1 << 20)
        assert got is not None and wire(got, 10) == before
        assert tail.records_from_log == 50


def test_forwarder_sends_the_tail_from_memory_and_a_backlog_from_the_log(
        tmp_path: Path) -> None:
    cfg = edge_config(tmp_path / "edge", max_batch_records=50, max_in_flight=2,
                      max_batch_bytes=4096)
    store = open_edge(cfg)
    store.log.append([reading(0, 0)])  # before the sender exists: not in its cache
    store.log.flush()
    sender = StreamSender(store, cfg.edge_id, cfg.uplink)
    pstore = PartitionStore(tmp_path / "cloud")
    pstore.ensure_topic(TopicConfig("telemetry", 4))
    ingestor = Ingestor(pstore, tmp_path / "cloud")
    ingestor.recover()
    up = memory_uplink(ingestor)
    down = [True]

    class Outage:
        async def send(self, topic: str, batch: Outgoing):  # type: ignore[no-untyped-def]
            if down[0]:
                raise RetryableUplinkError("cloud down")
            return await up.send(topic, batch)

        async def aclose(self) -> None:
            return None

    async def main() -> None:
        fwd = Forwarder([sender], Outage(), cfg.uplink)  # type: ignore[arg-type]
        # the cloud is down while 2,000 readings arrive: more than the cache keeps
        for base in range(1, 2001, 20):
            store.log.append([reading(i % 9, i) for i in range(base, base + 20)])
        await asyncio.to_thread(store.log.flush)
        await run_until(fwd, lambda: sender.stats.retries > 0)
        cached = len(sender.tail)
        assert 0 < cached < 500  # max_bytes: the newest batches only
        down[0] = False
        await run_until(fwd, fwd.drained)
        from_log = sender.tail.records_from_log
        assert from_log >= 2001 - cached  # the backlog came from the log
        # (+ the batch on the wire when the first run was cancelled, built again)
        assert from_log + sender.tail.records_from_memory in (2001, 2051)
        # steady appends once caught up: each sent from memory
        for base in range(2001, 3001, 20):
            store.log.append([reading(i % 9, i) for i in range(base, base + 20)])
            await asyncio.to_thread(store.log.flush)
            fwd.notify()
            await run_until(fwd, lambda b=base: store.acked_offset >= b + 19)
        assert sender.tail.records_from_log == from_log
        assert sender.tail.records_from_memory >= 1000
        assert len(sender.tail) == 0  # acked batches are dropped

    asyncio.run(main())
    view = read_logs({p.index: p.log for p in pstore.partitions("telemetry")})
    verify_cloud(view, {(cfg.edge_id, "telemetry", store.generation): range(3001)})
    pstore.close()
    store.log.close()
