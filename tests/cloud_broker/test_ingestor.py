"""The Ingestor's exactly-once across partitions, its recovery from data, and durability.

A batch spreads over several partitions, so a failure can leave some partitions holding
their part and others not; the per-partition marks (rebuilt from ``origin`` headers on
start) must make every retry, rewind or replay harmless. The checkpoint is a hint, so
dropping it or making it stale must cost a replay or a rewind of the edge, never a
duplicate or a loss; and it must never claim more than is durable. Partitions are real
shared_log logs in tmp_path; no HTTP here.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Coroutine
from pathlib import Path
from typing import TypeVar

import pytest

from cloud_broker.config import TopicConfig
from cloud_broker.ingest import (
    STATE_FILE,
    Ingestor,
    IngestUnavailable,
    RejectedBatch,
    partition_for,
)
from cloud_broker.storage import PartitionStore
from edge_agent.forwarder import Forwarder, StreamSender
from shared_log import FullPolicy, Log, LogConfig
from tests.helpers_uplink import (
    edge_config,
    fill,
    memory_uplink,
    open_edge,
    read_logs,
    reading,
    run_until,
    verify_cloud,
)
from uplink import Ack, AckStatus, Batch, RecordBlock, Refusal, UplinkRecord

T = TypeVar("T")
TOPIC = "telemetry"
SOURCE = ("edge-1", "telemetry", "g1")
DEVICES = 16


def make_batch(base: int, last: int, gen: str = "g1",
               offsets: range | list[int] | None = None) -> Batch:
    records = tuple(
        UplinkRecord(o, r.key, r.timestamp, r.value)
        for o in (range(base, last + 1) if offsets is None else offsets)
        for r in (reading(o % DEVICES, o),)
    )
    return Batch("edge-1", "telemetry", gen, base, last, records)


class Cloud:
    """A PartitionStore + Ingestor on a data dir and one event loop, as in a broker
    process; ``reopen`` is a broker restart."""

    def __init__(self, root: Path, partitions: int = 4, **limits: int) -> None:
        self.root, self.limits = root, limits
        self.loop = asyncio.new_event_loop()
        self.store = PartitionStore(root, commit_interval_ms=1.0)
        self.store.ensure_topic(TopicConfig(TOPIC, partitions))
        self.ingestor = Ingestor(self.store, root, checkpoint_interval_s=3600, **limits)
        self.ingestor.recover()

    @property
    def parts(self):  # type: ignore[no-untyped-def]
        return self.store.partitions(TOPIC)

    def view(self):  # type: ignore[no-untyped-def]
        return read_logs({p.index: p.log for p in self.parts})

    def run(self, coro: Coroutine[None, None, T]) -> T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.store.close()  # fails the durability waiters of anything still pending
        pending = asyncio.all_tasks(self.loop)
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    def reopen(self) -> Cloud:
        self.close()
        return Cloud(self.root, len(self.parts), **self.limits)


def ingest(cloud: Cloud, batch: Batch) -> Ack | Refusal:
    return cloud.run(cloud.ingestor.ingest(TOPIC, batch))


def partition_order(batch: Batch, partitions: int) -> list[int]:
    """The partitions the batch touches, in the order the Ingestor appends to them
    (ascending index); the tests check that a failure really split the batch."""
    return sorted({partition_for(r.key, partitions) for r in batch.records})


def cap_partition(cloud: Cloud, index: int) -> None:
    """Swap a partition's log for one capped below any batch: its next append is LogFull."""
    part = cloud.parts[index]
    cfg = part.log.config
    part.log.close()
    part.log = Log(part.log.directory, LogConfig(segment_bytes=cfg.segment_bytes,
                                                 commit=cfg.commit, max_bytes=64,
                                                 full_policy=FullPolicy.REJECT_NEW))


def uncap_partition(cloud: Cloud, index: int) -> None:
    part = cloud.parts[index]
    part.log.close()
    part.log = Log(part.log.directory, cloud.parts[(index + 1) % len(cloud.parts)].log.config)


# -- a batch half-applied across partitions --------------------------------------------


@pytest.mark.parametrize("restart", [False, True], ids=["same-process", "after-restart"])
def test_retry_after_some_partitions_failed_stores_every_record_once(
        tmp_path: Path, restart: bool) -> None:
    cloud = Cloud(tmp_path)
    assert ingest(cloud, make_batch(0, 99)).status is AckStatus.WRITTEN
    batch = make_batch(100, 199)
    order = partition_order(batch, 4)
    assert len(order) == 4
    failing = order[-1]  # every other partition gets its part first
    cap_partition(cloud, failing)
    with pytest.raises(IngestUnavailable):
        ingest(cloud, batch)
    ends = {p.index: p.log.end_offset for p in cloud.parts}
    view = cloud.view()
    got = {r.partition for r in view.records if r.edge_offset >= 100}
    assert got and got <= set(order[:-1]), "the crash must leave some partitions with a part"
    uncap_partition(cloud, failing)
    if restart:
        cloud = cloud.reopen()
        assert {p.index: p.log.end_offset for p in cloud.parts} == ends

    reply = ingest(cloud, batch)
    assert isinstance(reply, Ack) and reply.acked_offset == 199
    # and a plain duplicate and a replay of everything change nothing
    assert ingest(cloud, batch).status is AckStatus.DUPLICATE
    assert ingest(cloud, make_batch(0, 199)).status is AckStatus.DUPLICATE
    assert ingest(cloud, make_batch(200, 249)).status is AckStatus.WRITTEN
    verify_cloud(cloud.view(), {SOURCE: range(250)})
    cloud.close()


def test_retry_ack_waits_for_parts_appended_by_the_failed_attempt(tmp_path: Path) -> None:
    """G1: the retry dedups the parts the failed attempt appended, so its ack must also
    wait until those are durable, not only for what the retry itself wrote."""
    cloud = Cloud(tmp_path)
    batch = make_batch(0, 99)
    order = partition_order(batch, 4)
    held = cloud.parts[order[0]].log
    held._flush_lock.acquire()  # that partition cannot fsync until released
    try:
        cap_partition(cloud, order[-1])
        with pytest.raises(IngestUnavailable):
            ingest(cloud, batch)
        assert held.end_offset > held.durable_offset
        uncap_partition(cloud, order[-1])

        async def retry_while_held() -> bool:
            task = asyncio.create_task(cloud.ingestor.ingest(TOPIC, batch))
            done, _ = await asyncio.wait({task}, timeout=1.0)
            early = bool(done)
            held._flush_lock.release()
            reply = await asyncio.wait_for(task, 10)
            assert isinstance(reply, Ack) and reply.acked_offset == 99
            return early

        assert not cloud.run(retry_while_held()), "acked before the first part was durable"
    finally:
        if held._flush_lock.locked():
            held._flush_lock.release()
    verify_cloud(cloud.view(), {SOURCE: range(100)})
    cloud.close()


def test_records_the_log_cannot_store_are_rejected_not_retried(tmp_path: Path) -> None:
    """A header name over 64 KiB cannot be framed by shared_log: 400-style rejection,
    not IngestUnavailable (which the edge would retry forever), and nothing written."""
    cloud = Cloud(tmp_path)
    good = make_batch(0, 9)
    bad = list(good.records)
    bad[7] = UplinkRecord(7, bad[7].key, 1, b"x", (("h" * 70_000, b"v"),))
    with pytest.raises(RejectedBatch) as info:
        ingest(cloud, Batch("edge-1", "telemetry", "g1", 0, 9, tuple(bad)))
    assert info.value.field == "records[7].headers"
    assert cloud.view().records == []
    assert ingest(cloud, good).status is AckStatus.WRITTEN
    cloud.close()


def test_a_batch_that_overtook_its_predecessor_waits_for_it(tmp_path: Path) -> None:
    """With requests on several connections, batch 200..299 may reach the broker before
    100..199. Refusing it would make the edge resend everything in flight; it waits.
    (The first batch of a generation is always alone in flight, see uplink.SenderState.)"""
    cloud = Cloud(tmp_path)
    cloud.ingestor.gap_wait_s = 10.0
    assert ingest(cloud, make_batch(0, 99)).status is AckStatus.WRITTEN

    async def main() -> list[Ack | Refusal]:
        later = asyncio.create_task(cloud.ingestor.ingest(TOPIC, make_batch(200, 299)))
        await asyncio.sleep(0)  # it reached the broker first and is waiting
        assert not later.done()
        first = await cloud.ingestor.ingest(TOPIC, make_batch(100, 199))
        return [first, await asyncio.wait_for(later, 10)]

    replies = cloud.run(main())
    assert [(r.acked_offset, r.status) for r in replies if isinstance(r, Ack)] == [
        (199, AckStatus.WRITTEN), (299, AckStatus.WRITTEN)]
    assert cloud.ingestor.stats.gaps == 0

    cloud.ingestor.gap_wait_s = 0.05  # a real gap: refused once the wait is over
    reply = ingest(cloud, make_batch(400, 499))
    assert isinstance(reply, Refusal) and reply.expected_offset == 300
    verify_cloud(cloud.view(), {SOURCE: range(300)})
    cloud.close()


# -- recovery from data ----------------------------------------------------------------


def test_dropped_checkpoint_duplicates_still_filtered(tmp_path: Path) -> None:
    cloud = Cloud(tmp_path)
    for base in range(0, 300, 100):
        ingest(cloud, make_batch(base, base + 99))
    cloud.run(cloud.ingestor.checkpoint())
    cloud.close()
    (tmp_path / STATE_FILE).unlink()
    cloud = Cloud(tmp_path)
    # Every replay below is answered without writing a record twice; the edge may resend
    # anything (it restarted without its own acked offset, or it rewound).
    for batch in (make_batch(100, 199), make_batch(0, 299), make_batch(250, 349)):
        reply = ingest(cloud, batch)
        if isinstance(reply, Refusal):  # the cloud lost its acked offset: the edge rewinds
            reply = ingest(cloud, make_batch(reply.expected_offset, batch.last_offset))
        assert isinstance(reply, Ack) and reply.acked_offset == batch.last_offset
    verify_cloud(cloud.view(), {SOURCE: range(350)})
    cloud.close()


def test_stale_checkpoint_costs_a_rewind_not_a_duplicate(tmp_path: Path) -> None:
    cloud = Cloud(tmp_path)
    ingest(cloud, make_batch(0, 99))
    cloud.run(cloud.ingestor.checkpoint())  # knows 0..99
    ingest(cloud, make_batch(100, 199))
    ingest(cloud, make_batch(200, 299))
    cloud = cloud.reopen()  # the checkpoint is now stale: 100..299 are only in the data
    assert cloud.ingestor.acked_offset(SOURCE) == 99
    reply = ingest(cloud, make_batch(300, 399))
    assert isinstance(reply, Refusal) and reply.expected_offset == 100
    for batch in (make_batch(100, 199), make_batch(200, 299), make_batch(300, 399)):
        assert isinstance(ingest(cloud, batch), Ack)
    verify_cloud(cloud.view(), {SOURCE: range(400)})
    cloud.close()


def test_checkpoint_that_does_not_fit_the_data_is_ignored(tmp_path: Path) -> None:
    cloud = Cloud(tmp_path)
    ingest(cloud, make_batch(0, 99))
    cloud.run(cloud.ingestor.checkpoint())
    cloud.close()
    state = json.loads((tmp_path / STATE_FILE).read_text())
    for part in state["partitions"].values():  # claims data the partitions do not have
        part["end"] += 1000
        part["sources"] = {}
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    cloud = Cloud(tmp_path)
    assert ingest(cloud, make_batch(50, 149)).status is AckStatus.PARTIAL
    verify_cloud(cloud.view(), {SOURCE: range(150)})
    cloud.close()


def test_reordered_batches_after_restart_lose_nothing(tmp_path: Path) -> None:
    """The edge had 100..199 and 200..299 in flight when the broker died before any
    checkpoint; the later batch arrives first. It must not start the position over."""
    cloud = Cloud(tmp_path)
    assert ingest(cloud, make_batch(0, 99)).status is AckStatus.WRITTEN
    cloud = cloud.reopen()
    second, first = make_batch(200, 299), make_batch(100, 199)
    replies = [ingest(cloud, second), ingest(cloud, first)]
    if isinstance(replies[0], Refusal):
        replies.append(ingest(cloud, second))
    assert isinstance(replies[-1], Ack) and replies[-1].acked_offset == 299
    verify_cloud(cloud.view(), {SOURCE: range(300)})
    cloud.close()


def test_new_position_is_checkpointed_before_its_first_ack(tmp_path: Path) -> None:
    cloud = Cloud(tmp_path)
    ingest(cloud, make_batch(10, 19))
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["acked"] == {"edge-1/telemetry/g1": 19}
    cloud.close()


def test_forwarder_drains_against_a_cloud_that_restarted_from_a_stale_checkpoint(
        tmp_path: Path) -> None:
    """The edge holds acks the restarted cloud no longer knows of (and freed the segments
    they covered): it must rewind to the cloud's expected offset, not refuse forever."""
    cfg = edge_config(tmp_path / "edge", max_batch_records=100, max_in_flight=2)
    store = open_edge(cfg)
    fill(store, 3000, DEVICES, chunk=100)
    cloud = Cloud(tmp_path / "cloud")

    async def first_run() -> None:
        fwd = Forwarder([StreamSender(store, "edge-1", cfg.uplink)],
                        memory_uplink(cloud.ingestor), cfg.uplink)
        await run_until(fwd, lambda: store.acked_offset >= 500)
        await cloud.ingestor.checkpoint()
        await run_until(fwd, fwd.drained)

    cloud.run(first_run())
    cloud = cloud.reopen()
    source = ("edge-1", "telemetry", store.generation)
    assert cloud.ingestor.acked_offset(source) < store.acked_offset
    fill(store, 1000, DEVICES, start=3000, chunk=100)

    async def second_run() -> None:
        fwd = Forwarder([StreamSender(store, "edge-1", cfg.uplink)],
                        memory_uplink(cloud.ingestor), cfg.uplink)
        await run_until(fwd, fwd.drained, timeout=20)

    cloud.run(second_run())
    verify_cloud(cloud.view(), {source: range(4000)})
    cloud.close()
    store.log.close()


# -- the checkpoint never runs ahead of the data ---------------------------------------


def test_checkpoint_and_ack_wait_for_durability(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cloud = Cloud(tmp_path)
    ingest(cloud, make_batch(0, 99))
    written: list[dict] = []
    import cloud_broker.ingest.state as ingest_mod

    real_write = ingest_mod.write_checkpoint

    def checked_write(path: Path, state: dict) -> None:
        # every partition end and every acked offset in the state must be durable now
        for part in cloud.parts:
            saved = state["partitions"][f"{TOPIC}/{part.index}"]
            assert saved["end"] <= part.log.durable_offset, (part.index, saved)
        written.append(state)
        real_write(path, state)

    monkeypatch.setattr(ingest_mod, "write_checkpoint", checked_write)
    batch = make_batch(100, 199)
    held = cloud.parts[partition_order(batch, 4)[0]].log

    async def main() -> None:
        held._flush_lock.acquire()
        try:
            write = asyncio.create_task(cloud.ingestor.ingest(TOPIC, batch))
            ckpt = asyncio.create_task(cloud.ingestor.checkpoint())
            done, _ = await asyncio.wait({write, ckpt}, timeout=1.0)
            assert not done, "ack or checkpoint went ahead of an un-fsynced partition"
            assert held.end_offset > held.durable_offset
        finally:
            held._flush_lock.release()
        reply = await asyncio.wait_for(write, 10)
        await asyncio.wait_for(ckpt, 10)
        assert isinstance(reply, Ack) and reply.acked_offset == 199
        await cloud.ingestor.checkpoint()

    cloud.run(main())
    assert written and written[-1]["acked"]["edge-1/telemetry/g1"] == 199
    cloud = cloud.reopen()
    assert cloud.ingestor.acked_offset(SOURCE) == 199
    assert ingest(cloud, make_batch(200, 200)).status is AckStatus.WRITTEN
    cloud.close()


class _Column(list):  # a list a test can hold a weak reference to
    pass


def test_a_batch_is_let_go_of_once_appended_not_held_until_durable(tmp_path: Path) -> None:
    """A catch-up sends several large batches at once, all waiting for their fsync; the
    decoded records (an object per record) must not live through that wait: the ingestor
    lets go of the batch once it is appended (the broker's memory high water)."""
    cloud = Cloud(tmp_path)
    block = RecordBlock.from_records(make_batch(0, 199).records)
    block.values = _Column(block.values)
    alive = weakref.ref(block.values)
    parts = {partition_for(k, 4) for k in block.keys}
    held = [cloud.parts[i].log for i in sorted(parts)]

    async def main() -> None:
        for log in held:
            log._flush_lock.acquire()
        try:
            write = asyncio.create_task(cloud.ingestor.ingest(TOPIC, handed.pop()))
            async with asyncio.timeout(10):
                while sum(log.end_offset for log in held) < 200:
                    await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)
            assert not write.done() and all(log.end_offset > log.durable_offset for log in held)
            assert alive() is None, "the records outlived their append"
        finally:
            for log in held:
                log._flush_lock.release()
        reply = await asyncio.wait_for(write, 10)
        assert isinstance(reply, Ack) and reply.acked_offset == 199

    handed = [Batch("edge-1", "telemetry", "g1", 0, 199, block)]  # handed over, not kept
    del block
    cloud.run(main())
    assert sorted(r.edge_offset for r in cloud.view().records) == list(range(200))
    cloud.close()


# -- reserved headers: one edge must not speak for another (issue: forged origin) -------


@pytest.mark.parametrize("name", ["origin", "Origin", "ORIGIN", "edgestream-anything"])
@pytest.mark.parametrize("columns", [False, True], ids=["records", "decoded-columns"])
def test_reserved_header_names_are_refused_before_anything_is_written(
        tmp_path: Path, name: str, columns: bool) -> None:
    from uplink import decode_batch, encode_batch

    cloud = Cloud(tmp_path)
    recs = list(make_batch(0, 9).records)
    recs[6] = UplinkRecord(6, recs[6].key, 1, b"x", (("seq", b"6"), (name, b"edge-b/t/g/9")))
    bad = Batch("edge-1", "telemetry", "g1", 0, 9, tuple(recs))
    if columns:  # as the HTTP endpoint gets it: a RecordBlock from the decoder
        bad = decode_batch(*encode_batch(bad, "none"))
    with pytest.raises(RejectedBatch) as info:
        ingest(cloud, bad)
    assert info.value.field == "records[6].headers"
    assert "reserved" in info.value.message and name[:6] in info.value.message
    assert cloud.view().records == []
    cloud.close()


def test_replay_trusts_only_the_origin_the_broker_appended(tmp_path: Path) -> None:
    """Data an older broker stored with an edge-supplied ``origin`` header (before the
    reserved check) must not move another edge's marks after a restart: edge-2's next
    records would be acked as written and silently skipped."""
    from shared_log import Record

    cloud = Cloud(tmp_path)
    victim = ("edge-2", "telemetry", "g2")
    first = Batch(*victim, 0, 9, tuple(UplinkRecord(o, b"dev-b", 1, b"v%d" % o)
                                       for o in range(10)))
    assert ingest(cloud, first).status is AckStatus.WRITTEN
    part = cloud.parts[partition_for(b"dev-b", len(cloud.parts))]
    forged = (("origin", b"edge-2/telemetry/g2/1000000"), ("origin", b"edge-1/telemetry/g1/0"))
    _first, last = part.log.append([Record(b"dev-b", b"forged", 1, forged)])
    cloud.run(part.log.wait_durable_async(last))
    (tmp_path / STATE_FILE).unlink(missing_ok=True)  # replay from the start of the data
    cloud = cloud.reopen()
    nxt = Batch(*victim, 10, 19, tuple(UplinkRecord(o, b"dev-b", 1, b"v%d" % o)
                                       for o in range(10, 20)))
    reply = ingest(cloud, nxt)
    if isinstance(reply, Refusal):  # the position restarted at -1: the edge rewinds
        reply = ingest(cloud, Batch(*victim, 0, 19, first.records + nxt.records))
    assert isinstance(reply, Ack) and reply.acked_offset == 19
    stored = [r.edge_offset for r in cloud.view().records if r.source == victim]
    assert stored == list(range(20))
    cloud.close()


@pytest.mark.parametrize("frame_slice", [7, 2000])
def test_batches_framed_in_slices_store_what_one_slice_stores(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, frame_slice: int) -> None:
    """A large batch is framed in slices with yields between them (the event loop stays
    free): a partial retry straddling slice boundaries, a replay and new records still
    store every record once, in order, in the same layout as framing in one go."""
    from cloud_broker.ingest import ingestor as ingest_mod
    monkeypatch.setattr(ingest_mod, "FRAME_SLICE", frame_slice)
    cloud = Cloud(tmp_path)
    assert ingest(cloud, make_batch(0, 29)).status is AckStatus.WRITTEN
    assert ingest(cloud, make_batch(0, 99)).status is AckStatus.PARTIAL  # writes 30..99
    assert ingest(cloud, make_batch(0, 99)).status is AckStatus.DUPLICATE
    assert ingest(cloud, make_batch(100, 160)).status is AckStatus.WRITTEN
    view = cloud.view()
    verify_cloud(view, {SOURCE: range(161)})
    layout = sorted((r.partition, r.position, r.edge_offset) for r in view.records)
    cloud.close()
    # the same batches framed without slicing give the same partitions
    monkeypatch.setattr(ingest_mod, "FRAME_SLICE", 10**9)
    other = Cloud(tmp_path / "unsliced")
    for b in (make_batch(0, 29), make_batch(0, 99), make_batch(100, 160)):
        ingest(other, b)
    assert sorted((r.partition, r.position, r.edge_offset) for r in other.view().records) == layout
    other.close()
