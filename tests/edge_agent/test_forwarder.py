"""The forwarder: drains every stream exactly once in per-device order, by priority.

In-process against a real Ingestor on tmp_path (MemoryUplink), and against a real broker
subprocess (HttpUplink). Order of sends is observed with a wrapping uplink; the cloud is
made slow by awaiting in that wrapper, never by sleeping in the test to hope for timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from cloud_broker.config import TopicConfig
from cloud_broker.ingest import Ingestor
from cloud_broker.storage import PartitionStore
from edge_agent.config import EdgeConfig, IngestConfig
from edge_agent.forwarder import Forwarder, StreamSender
from edge_agent.outgoing import Outgoing
from edge_agent.ratelimit import TokenBucket
from edge_agent.streams import StreamStore
from edge_agent.tail import block_of
from edge_agent.uplink_http import HttpUplink, Uplink
from shared_log import Log, Record, fetch_columns
from tests.helpers import Server, broker_server, until
from tests.helpers_uplink import (
    edge_config,
    fill,
    memory_uplink,
    open_edge,
    read_cloud,
    read_logs,
    reading,
    run_until,
    stream_config,
    verify_cloud,
)
from uplink import Ack, AckStatus, Refusal, RefusalCode


class Cloud:
    """An in-process cloud: PartitionStore + Ingestor with the given topics."""

    def __init__(self, root: Path, topics: dict[str, int] | None = None) -> None:
        self.store = PartitionStore(root)
        for name, n in (topics or {"telemetry": 4}).items():
            self.store.ensure_topic(TopicConfig(name, n))
        self.ingestor = Ingestor(self.store, root)
        self.ingestor.recover()

    def view(self, topic: str = "telemetry"):  # type: ignore[no-untyped-def]
        return read_logs({p.index: p.log for p in self.store.partitions(topic)})

    def close(self) -> None:
        self.store.close()


class Recording:
    """Wraps an uplink: records (stream, base, last) and the time of every send in start
    order, and can hold every send at a gate (a slow cloud)."""

    def __init__(self, inner: Uplink, gate: Callable[[], Awaitable[None]] | None = None
                 ) -> None:
        self.inner = inner
        self.gate = gate
        self.sends: list[tuple[str, int, int]] = []
        self.times: list[float] = []  # time.monotonic() of each send

    async def send(self, topic: str, batch: Outgoing) -> Ack | Refusal:
        self.sends.append((batch.stream, batch.base_offset, batch.last_offset))
        self.times.append(time.monotonic())
        if self.gate is not None:
            await self.gate()
        return await self.inner.send(topic, batch)

    async def aclose(self) -> None:
        await self.inner.aclose()


def senders(cfg: EdgeConfig, stores: list[StreamStore]) -> list[StreamSender]:
    return [StreamSender(s, cfg.edge_id, cfg.uplink) for s in stores]


def source(cfg: EdgeConfig, store: StreamStore) -> tuple[str, str, str]:
    return (cfg.edge_id, store.config.name, store.generation)


# -- draining ----------------------------------------------------------------------------


def test_two_streams_drain_exactly_once_in_device_order(tmp_path: Path) -> None:
    cfg = edge_config(tmp_path / "edge", [stream_config("telemetry"),
                                          stream_config("alarms", priority=0)],
                      max_batch_records=300, max_in_flight=3)
    stores = [open_edge(cfg, "telemetry"), open_edge(cfg, "alarms")]
    fill(stores[0], 6000, 40)
    fill(stores[1], 700, 7)
    cloud = Cloud(tmp_path / "cloud", {"telemetry": 4, "alarms": 2})

    async def main() -> None:
        fwd = Forwarder(senders(cfg, stores), memory_uplink(cloud.ingestor), cfg.uplink)
        await run_until(fwd, fwd.drained)
        fill(stores[0], 500, 40, start=6000)  # data arriving later, after a notify
        fwd.notify()
        await run_until(fwd, fwd.drained)

    asyncio.run(main())
    verify_cloud(cloud.view("telemetry"), {source(cfg, stores[0]): range(6500)})
    verify_cloud(cloud.view("alarms"), {source(cfg, stores[1]): range(700)})
    assert all(s.acked_offset == s.log.end_offset - 1 for s in stores)
    cloud.close()
    for s in stores:
        s.log.close()


def test_only_durable_records_leave_the_edge(tmp_path: Path) -> None:
    # A 10-minute commit interval: appends after the first fsync stay in the page cache
    # until flushed. A power loss could take them back, so they must not be sent.
    cfg = dataclasses.replace(edge_config(tmp_path / "edge"),
                              ingest=IngestConfig(commit_interval_ms=600_000))
    store = open_edge(cfg)
    fill(store, 1000, 10)
    _, last = store.log.append([reading(0, 1000)])
    assert store.log.wait_durable(last, timeout=30)  # the flusher's fsync: the next waits
    store.log.append([reading(i % 10, i) for i in range(1001, 1500)])  # not durable yet
    assert store.log.durable_offset == 1001
    cloud = Cloud(tmp_path / "cloud")

    async def main() -> None:
        fwd = Forwarder(senders(cfg, [store]), memory_uplink(cloud.ingestor), cfg.uplink)
        await run_until(fwd, lambda: store.acked_offset == 1000)
        assert fwd.senders[0].state.next_offset == 1001  # nothing claimed past durable
        assert not fwd.drained()
        await asyncio.to_thread(store.log.flush)
        fwd.notify()  # what the ingest's durability waiter does (test_ingest_pipeline)
        await run_until(fwd, fwd.drained)

    asyncio.run(main())
    verify_cloud(cloud.view(), {source(cfg, store): range(1500)})
    cloud.close()
    store.log.close()


def test_drains_into_a_broker_subprocess(broker: Server, tmp_path: Path) -> None:
    cfg = edge_config(tmp_path / "edge", url=f"http://127.0.0.1:{broker.port}",
                      max_batch_records=1000, compression="gzip")
    store = open_edge(cfg)
    fill(store, 20_000, 200)

    async def main() -> None:
        up = HttpUplink(cfg.uplink.url)
        fwd = Forwarder(senders(cfg, [store]), up, cfg.uplink)
        try:
            await run_until(fwd, fwd.drained, timeout=120)
        finally:
            await up.aclose()

    asyncio.run(main())
    broker.stop()
    verify_cloud(read_cloud(broker.log_path.parent / "data"), {source(cfg, store): range(20_000)})
    store.log.close()


def test_run_can_be_restarted_after_a_cancel_with_sends_in_flight(tmp_path: Path) -> None:
    """Cancelled sends never got a reply; a new run() must send their ranges again."""
    cfg = edge_config(tmp_path / "edge", max_batch_records=100, max_in_flight=3)
    store = open_edge(cfg)
    fill(store, 300, 10)
    cloud = Cloud(tmp_path / "cloud")

    async def main() -> None:
        opened = asyncio.Event()

        async def gate() -> None:
            await opened.wait()

        up = Recording(memory_uplink(cloud.ingestor), gate)
        fwd = Forwarder(senders(cfg, [store]), up, cfg.uplink)
        # the first batch of a generation goes alone; let it through, hold the next ones
        task = asyncio.create_task(fwd.run())
        await until(lambda: fwd.in_flight >= 1, 10, "the first send", interval=0.001)
        opened.set()
        await until(lambda: store.acked_offset >= 99, 10, "the first ack", interval=0.001)
        opened.clear()
        # the other 200 offsets are claimed and held
        await until(lambda: fwd.in_flight >= 2, 10, "two held sends", interval=0.001)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        opened.set()
        await run_until(fwd, fwd.drained, timeout=10)

    asyncio.run(asyncio.wait_for(main(), 30))
    verify_cloud(cloud.view(), {source(cfg, store): range(300)})
    cloud.close()
    store.log.close()


def test_refusal_rewinds_only_when_the_cloud_forgot_an_ack(tmp_path: Path) -> None:
    """A refusal expecting an offset below our acked offset means the cloud restarted
    from a stale checkpoint only if it was acked before the batch was sent; a refusal
    that just arrives after later acks (reordered replies) must not resend acked data."""
    cfg = edge_config(tmp_path / "edge", max_batch_records=100)
    store = open_edge(cfg)
    fill(store, 400, 4)
    s = StreamSender(store, cfg.edge_id, cfg.uplink)
    src = source(cfg, store)
    assert s.build_batch() is not None
    s.on_reply(Ack(*src, 299, AckStatus.WRITTEN), acked_when_sent=-1)
    assert (s.state.acked_offset, store.acked_offset) == (299, 299)

    s.on_reply(Refusal(RefusalCode.GAP, 120), acked_when_sent=99)  # sent before the ack
    assert (s.state.acked_offset, s.state.next_offset) == (299, 300)

    s.on_reply(Refusal(RefusalCode.GAP, 120), acked_when_sent=299)  # the cloud forgot
    assert (s.state.acked_offset, s.state.next_offset) == (119, 120)
    batch = s.build_batch()
    assert batch is not None and (batch.base_offset, batch.last_offset) == (120, 219)
    assert [r.offset for r in batch.records] == list(range(120, 220))
    assert store.acked_offset == 299  # the edge's own acked offset never goes back
    store.log.close()


# -- priority ----------------------------------------------------------------------------


def test_alarm_appended_later_overtakes_the_telemetry_backlog(tmp_path: Path) -> None:
    cfg = edge_config(tmp_path / "edge", [stream_config("telemetry", priority=5),
                                          stream_config("alarms", priority=0)],
                      max_batch_records=200, max_in_flight=2)
    telemetry, alarms = open_edge(cfg, "telemetry"), open_edge(cfg, "alarms")
    fill(telemetry, 10_000, 50)  # 50 batches of backlog
    cloud = Cloud(tmp_path / "cloud", {"telemetry": 4, "alarms": 1})

    async def slow_cloud() -> None:
        await asyncio.sleep(0.002)

    up = Recording(memory_uplink(cloud.ingestor), slow_cloud)
    marks: dict[str, int] = {}

    async def main() -> None:
        fwd = Forwarder(senders(cfg, [telemetry, alarms]), up, cfg.uplink)

        def raise_alarm() -> bool:
            if "appended" not in marks and len(up.sends) >= 5:
                fill(alarms, 3, 3)
                fwd.notify()
                marks["appended"] = len(up.sends)
            return fwd.drained()

        await run_until(fwd, raise_alarm, timeout=60)

    asyncio.run(main())
    order = [s for s, _, _ in up.sends]
    first_alarm = order.index("alarms")
    telemetry_after = order[first_alarm:].count("telemetry")
    # the alarm takes the next free slot: at most the batches already in flight go first
    assert first_alarm <= marks["appended"] + cfg.uplink.max_in_flight, (first_alarm, marks)
    assert telemetry_after >= 30, "the alarm waited for the telemetry backlog"
    verify_cloud(cloud.view("alarms"), {source(cfg, alarms): range(3)})
    verify_cloud(cloud.view("telemetry"), {source(cfg, telemetry): range(10_000)})
    cloud.close()
    telemetry.log.close()
    alarms.log.close()


def test_a_stalled_cloud_holding_telemetry_leaves_a_slot_for_an_alarm(tmp_path: Path) -> None:
    """Telemetry may fill all but one request slot: while the cloud holds every request
    (a stall), an alarm appended meanwhile is sent at once, not after the stall."""
    cfg = edge_config(tmp_path / "edge", [stream_config("telemetry", priority=5),
                                          stream_config("alarms", priority=0)],
                      max_batch_records=100, max_in_flight=4)
    telemetry, alarms = open_edge(cfg, "telemetry"), open_edge(cfg, "alarms")
    fill(telemetry, 2_000, 20)
    cloud = Cloud(tmp_path / "cloud", {"telemetry": 4, "alarms": 1})
    stall = asyncio.Event()  # set: the cloud answers again
    waiting = [0]  # requests held by the stall

    async def held() -> None:
        waiting[0] += 1
        try:
            await stall.wait()
        finally:
            waiting[0] -= 1

    up = Recording(memory_uplink(cloud.ingestor), held)

    async def main() -> None:
        fwd = Forwarder(senders(cfg, [telemetry, alarms]), up, cfg.uplink)
        task = asyncio.create_task(fwd.run())
        try:
            # the first batch of a generation goes alone; then telemetry fills its slots
            stall.set()
            await until(lambda: telemetry.acked_offset >= 99, 10, "the first ack",
                        interval=0.001)
            stall.clear()
            await until(lambda: waiting[0] == 3, 10, "telemetry held", interval=0.001)
            assert fwd.in_flight == 3  # one slot stays free
            fill(alarms, 5, 5)
            fwd.notify()
            await until(lambda: waiting[0] == 4, 10, "the alarm on the wire during the stall",
                        interval=0.001)
            assert [s for s, _, _ in up.sends].count("alarms") == 1
            stall.set()
            await until(fwd.drained, 20, "drained", interval=0.005)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(asyncio.wait_for(main(), 40))
    verify_cloud(cloud.view("alarms"), {source(cfg, alarms): range(5)})
    verify_cloud(cloud.view("telemetry"), {source(cfg, telemetry): range(2_000)})
    cloud.close()
    telemetry.log.close()
    alarms.log.close()


# -- batching a trickle ------------------------------------------------------------------


def test_a_trickle_goes_at_once_after_a_quiet_spell_then_once_per_interval(
        tmp_path: Path) -> None:
    # A request costs about as much as a dozen readings: a trickle sends at most one
    # request per min_batch_linger_ms, so a quiet gateway sends few requests, but a
    # reading after a quiet spell goes at once, and a flood never waits.
    cfg = edge_config(tmp_path / "edge", min_batch_records=16, min_batch_linger_ms=400)
    store = open_edge(cfg)
    fill(store, 3, 3)
    cloud = Cloud(tmp_path / "cloud")
    up = Recording(memory_uplink(cloud.ingestor))
    at: dict[str, float] = {}

    async def main() -> None:
        fwd = Forwarder(senders(cfg, [store]), up, cfg.uplink)
        start = time.monotonic()

        def trickle() -> bool:
            now = time.monotonic()
            if len(up.sends) == 1 and "first" not in at:
                at["first"] = now - start
                fill(store, 3, 3, start=3)  # three more right after: they wait
                fwd.notify()
            elif len(up.sends) == 2 and "second" not in at:
                at["second"] = now
                fill(store, 2000, 4, start=6)  # a flood: goes without waiting
                fwd.notify()
            elif len(up.sends) == 3 and "third" not in at:
                at["third"] = now
            return fwd.drained()

        await run_until(fwd, trickle)
        at["sent_second"] = up.times[1] - up.times[0]
        at["sent_third"] = up.times[2] - up.times[1]

    asyncio.run(main())
    assert up.sends == [("telemetry", 0, 2), ("telemetry", 3, 5), ("telemetry", 6, 2005)]
    assert at["first"] < 0.4 * 0.9, at  # after a quiet spell: at once
    assert at["sent_second"] >= 0.4 * 0.9, at  # one request per interval
    assert at["sent_third"] < 0.4 * 0.9, at  # the flood did not wait
    verify_cloud(cloud.view(), {source(cfg, store): range(2006)})
    cloud.close()
    store.log.close()


def test_the_trickle_rules_and_a_held_trickle_does_not_wake_the_forwarder(
        tmp_path: Path) -> None:
    cfg = edge_config(tmp_path / "edge", min_batch_records=16, min_batch_linger_ms=1000,
                      trickle_rate=1000, linger_ms=20)
    store = open_edge(cfg)
    cloud = Cloud(tmp_path / "cloud")

    async def main() -> None:
        fwd = Forwarder(senders(cfg, [store]), memory_uplink(cloud.ingestor), cfg.uplink)
        [s] = fwd.senders
        now = 1000.0
        s.last_sent_at = now - 0.01  # the previous request left 10 ms ago
        assert fwd._due(s, 12, now) == s.last_sent_at + 1.0  # fewer than 16
        assert fwd._due(s, 20, now) == now  # 20 in 10 ms: 2,000/s, no trickle
        s.last_sent_at = now - 0.1
        assert fwd._due(s, 20, now) == s.last_sent_at + 1.0  # 200/s: a trickle
        assert fwd._due(s, 5000, now) == now  # a full batch never waits
        s.last_sent_at = now - 1.5
        assert fwd._due(s, 1, now) == now  # after a quiet spell: at once
        # held: durable appends of a trickle do not wake the run loop, whose timer is
        # set for the batch's time already
        s.last_sent_at = time.monotonic()
        s.pending_since = time.monotonic()
        fwd._timer_at = s.last_sent_at + 1.0
        fill(store, 3, 3)
        fwd.notify()
        assert not fwd._wakeup.is_set()
        fwd._timer_at = s.last_sent_at + 2.0  # the timer would fire too late: wake
        fwd.notify()
        assert fwd._wakeup.is_set()
        fwd._wakeup.clear()
        fwd._timer_at = s.last_sent_at + 1.0
        fill(store, 100, 3, start=3)  # 103 at once: above the trickle rate
        fwd.notify()
        assert fwd._wakeup.is_set()

    asyncio.run(main())
    cloud.close()
    store.log.close()


def test_priority_0_streams_never_wait_for_a_trickle(tmp_path: Path) -> None:
    cfg = edge_config(tmp_path / "edge", [stream_config("alarms", priority=0)],
                      min_batch_records=16, min_batch_linger_ms=60_000)
    store = open_edge(cfg, "alarms")
    fill(store, 1, 1)
    cloud = Cloud(tmp_path / "cloud", {"alarms": 1})

    async def main() -> None:
        fwd = Forwarder(senders(cfg, [store]), memory_uplink(cloud.ingestor), cfg.uplink)
        await run_until(fwd, fwd.drained, timeout=30)  # not the 60 s linger

    asyncio.run(main())
    verify_cloud(cloud.view("alarms"), {source(cfg, store): range(1)})
    cloud.close()
    store.log.close()


# -- fatal errors ------------------------------------------------------------------------


def test_fatal_4xx_stops_only_that_stream(broker: Server, tmp_path: Path) -> None:
    cfg = edge_config(tmp_path / "edge", [stream_config("telemetry"),
                                          stream_config("misrouted", cloud_topic="no-such")],
                      url=f"http://127.0.0.1:{broker.port}", max_batch_records=500)
    good, bad = open_edge(cfg, "telemetry"), open_edge(cfg, "misrouted")
    fill(good, 3000, 30)
    fill(bad, 100, 3)

    async def main() -> list[StreamSender]:
        up = HttpUplink(cfg.uplink.url)
        ss = senders(cfg, [good, bad])
        fwd = Forwarder(ss, up, cfg.uplink)
        try:
            await run_until(fwd, lambda: ss[1].stopped is not None
                            and good.acked_offset == 2999, timeout=60)
        finally:
            await up.aclose()
        return ss

    ok, stopped = asyncio.run(main())
    assert ok.stopped is None and ok.stats.last_error == ""
    assert "HTTP 404" in stopped.stopped and "no-such" in stopped.stats.last_error
    assert stopped.stats.retries == 0 and bad.acked_offset == -1
    good.log.close()
    bad.log.close()


def test_batches_too_large_for_the_cloud_are_split_not_stopped(tmp_path: Path) -> None:
    """An edge whose max_batch_records is above the broker's max_records_per_request gets
    413s; it halves its batches and drains everything exactly once instead of stopping."""
    server = broker_server(tmp_path / "broker", extra="max_records_per_request = 300").start()
    cfg = edge_config(tmp_path / "edge", url=f"http://127.0.0.1:{server.port}",
                      max_batch_records=2000)
    store = open_edge(cfg)
    fill(store, 5000, 50)

    async def main() -> StreamSender:
        up = HttpUplink(cfg.uplink.url)
        [s] = senders(cfg, [store])
        fwd = Forwarder([s], up, cfg.uplink)
        try:
            await run_until(fwd, fwd.drained, timeout=60)
        finally:
            await up.aclose()
        return s

    try:
        sender = asyncio.run(main())
    finally:
        server.stop()
    assert sender.stopped is None
    assert sender.batch_records <= 300 and "HTTP 413" in sender.stats.last_error
    verify_cloud(read_cloud(server.log_path.parent / "data"),
                 {source(cfg, store): range(5000)})
    store.log.close()


# -- bandwidth cap -----------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_delay_math() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, clock=clock)  # 1000 B/s, holds one second of budget
    assert bucket.delay_for(600) == 0.0
    assert bucket.delay_for(600) == pytest.approx(0.2)  # 200 bytes short
    clock.now += 0.2  # the caller slept its deficit: the bucket is at zero
    assert bucket.delay_for(100) == pytest.approx(0.1)
    clock.now += 10  # refills to capacity, not beyond
    assert bucket.delay_for(1000) == 0.0
    assert bucket.delay_for(1) == pytest.approx(0.001)
    clock.now += 5
    # a body larger than the bucket still goes, paying its whole deficit
    assert bucket.delay_for(5000) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_http_uplink_pays_the_bucket_for_every_body(broker: Server, tmp_path: Path) -> None:
    class CountingBucket(TokenBucket):
        def __init__(self) -> None:
            super().__init__(10**12)
            self.taken: list[int] = []

        async def take(self, nbytes: int) -> None:
            self.taken.append(nbytes)
            await super().take(nbytes)

    cfg = edge_config(tmp_path / "edge", max_batch_records=250)
    store = open_edge(cfg)
    fill(store, 2000, 20, size=100)
    bucket = CountingBucket()

    async def main() -> int:
        up = HttpUplink(f"http://127.0.0.1:{broker.port}", bandwidth=bucket)
        fwd = Forwarder(senders(cfg, [store]), up, cfg.uplink)
        try:
            await run_until(fwd, fwd.drained, timeout=60)
        finally:
            await up.aclose()
        return up.bytes_sent

    sent = asyncio.run(main())
    assert len(bucket.taken) >= 8 and sum(bucket.taken) == sent
    store.log.close()


# -- full policy on the edge -----------------------------------------------------------


def test_drop_oldest_range_is_skipped_and_acked_past(tmp_path: Path) -> None:
    cfg = edge_config(tmp_path / "edge", [stream_config(
        "telemetry", segment_bytes=4096, max_bytes=64 * 1024, full_policy="drop_oldest")],
        max_batch_records=200)
    store = open_edge(cfg)
    cloud = Cloud(tmp_path / "cloud")
    fill(store, 500, 10, size=100, chunk=20)
    assert store.log.start_offset == 0

    async def drain() -> None:
        fwd = Forwarder(senders(cfg, [store]), memory_uplink(cloud.ingestor), cfg.uplink)
        await run_until(fwd, fwd.drained)

    asyncio.run(drain())
    delivered = list(range(500))
    # an outage: far more arrives than the cap holds; the oldest unsent segments go
    fill(store, 5000, 10, start=500, size=100, chunk=20)
    start = store.log.start_offset
    assert start > 500 and store.log.stats.dropped_records > 0
    asyncio.run(drain())
    assert store.acked_offset == 5499
    source_ = source(cfg, store)
    assert cloud.ingestor.acked_offset(source_) == 5499
    verify_cloud(cloud.view(), {source_: delivered + list(range(start, 5500))})
    cloud.close()
    store.log.close()


def _drop_setup(tmp_path: Path) -> tuple[EdgeConfig, StreamStore, Cloud]:
    cfg = edge_config(tmp_path / "edge", [stream_config(
        "telemetry", segment_bytes=4096, max_bytes=64 * 1024, full_policy="drop_oldest")],
        max_batch_records=100, max_in_flight=1)
    return cfg, open_edge(cfg), Cloud(tmp_path / "cloud")


async def _until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.005)


def test_drop_counter_excludes_records_of_a_batch_that_is_then_acked(tmp_path: Path) -> None:
    """Records deleted while their batch is on the wire are not lost when it is acked:
    drops.drop_oldest counts exactly the records the cloud never got."""
    cfg, store, cloud = _drop_setup(tmp_path)
    fill(store, 300, 10, size=100, chunk=20)
    release = asyncio.Event()
    [sender] = senders(cfg, [store])

    async def main() -> None:
        up = Recording(memory_uplink(cloud.ingestor), gate=release.wait)
        fwd = Forwarder([sender], up, cfg.uplink)
        task = asyncio.create_task(fwd.run(persist_interval_s=0.1))
        try:
            await _until(lambda: len(up.sends) == 1, "the first batch on the wire")
            fill(store, 3000, 10, start=300, size=100, chunk=20)  # deletes 0..99 too
            start = store.log.start_offset
            assert start > 100
            assert sender.dropped_in_flight == 100  # decided by that batch's fate
            assert sender.lost == start - 100  # never sent: lost at once
            release.set()
            await _until(fwd.drained, "the drain")
            assert sender.dropped_in_flight == 0 and sender.lost == start - 100
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(main())
    verify_cloud(cloud.view(), {source(cfg, store): list(range(100))
                                + list(range(sender.lost + 100, 3300))})
    assert len(cloud.view().records) + sender.lost == 3300
    cloud.close()
    store.log.close()


def test_drop_counter_counts_in_flight_records_given_up(tmp_path: Path) -> None:
    """The batch carrying deleted records never gets its ack (the forwarder restarts):
    the range goes again without its data, and those records count as lost then."""
    cfg, store, cloud = _drop_setup(tmp_path)
    fill(store, 300, 10, size=100, chunk=20)
    [sender] = senders(cfg, [store])
    never = asyncio.Event()

    async def main() -> None:
        up = Recording(memory_uplink(cloud.ingestor), gate=never.wait)
        fwd = Forwarder([sender], up, cfg.uplink)
        task = asyncio.create_task(fwd.run(persist_interval_s=0.1))
        await _until(lambda: len(up.sends) == 1, "the first batch on the wire")
        fill(store, 3000, 10, start=300, size=100, chunk=20)
        start = store.log.start_offset
        assert sender.dropped_in_flight == 100 and sender.lost == start - 100
        task.cancel()  # as a crash of the forwarder task: its batch never comes back
        with contextlib.suppress(asyncio.CancelledError):
            await task
        fwd = Forwarder([sender], memory_uplink(cloud.ingestor), cfg.uplink)
        await run_until(fwd, fwd.drained)
        assert sender.dropped_in_flight == 0 and sender.lost == start

    asyncio.run(main())
    verify_cloud(cloud.view(), {source(cfg, store): range(sender.lost, 3300)})
    assert len(cloud.view().records) + sender.lost == 3300
    cloud.close()
    store.log.close()


def test_block_of_gives_the_records_fetch_gives(tmp_path: Path) -> None:
    with Log(tmp_path / "log") as log:
        log.append([Record(b"d%d" % i, b"v%d" % i, 100 + i,
                           (("seq", b"%d" % i),) if i % 2 else ()) for i in range(6)])
        log.append([Record(b"x", b"y", 7, ())])
        for start in (0, 3):
            rows = log.fetch(start, max_records=100).records
            block = block_of(fetch_columns(log, start, max_records=100).columns)
            assert [(r.offset, r.key, r.timestamp, r.value, r.headers) for r in rows] == \
                [(r.offset, r.key, r.timestamp, r.value, r.headers) for r in block]
