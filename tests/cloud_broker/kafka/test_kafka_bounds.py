"""Bounds of the Kafka listener found in review: a fetch waiting for ``min_bytes`` must
wait, not spin on the event loop; a connection that never authenticates is closed; a
group cannot be jammed by a join without protocols, and a client's rebalance timeout is
capped."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka_testing import config, running_broker

from cloud_broker.groups import KafkaGroupError, KafkaGroups
from cloud_broker.groups.state import MAX_SESSION_MS
from cloud_broker.kafka import server as kafka_server


def test_a_fetch_below_min_bytes_waits_without_blocking_the_loop(tmp_path: Path) -> None:
    with running_broker(config(tmp_path)) as rb:
        rb.append(0, 20)  # far less than the consumer's fetch_min_bytes
        gaps: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        task = asyncio.run_coroutine_threadsafe(ticker(), rb.loop)
        consumer = KafkaConsumer(bootstrap_servers=rb.bootstrap, fetch_min_bytes=10_000_000,
                                 fetch_max_wait_ms=1000, auto_offset_reset="earliest",
                                 enable_auto_commit=False)
        try:
            consumer.assign([TopicPartition("telemetry", 0)])
            consumer.seek_to_beginning()
            got = 0
            deadline = time.monotonic() + 20
            while got < 20:
                assert time.monotonic() < deadline, "the 20 records never arrived"
                got += sum(len(v) for v in consumer.poll(timeout_ms=500).values())
            for _ in range(4):  # fetches held for max_wait with nothing new
                consumer.poll(timeout_ms=500)
        finally:
            consumer.close()
            rb.loop.call_soon_threadsafe(stop.set)
            task.result(10)
        # the loop kept turning while fetches waited their max_wait (1 s each)
        assert max(gaps) < 0.5, f"the event loop stalled for {max(gaps):.2f} s"


def test_a_connection_that_never_authenticates_is_closed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_server, "AUTH_TIMEOUT_S", 0.5)
    with running_broker(config(tmp_path, sasl=True)) as rb:
        host, port = rb.bootstrap.split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            started = time.monotonic()
            assert s.recv(1) == b""  # closed by the listener, not by our timeout
            assert time.monotonic() - started < 5


def test_a_join_without_protocols_is_refused_and_rebalance_timeouts_are_capped() -> None:
    async def main() -> None:
        groups = KafkaGroups()
        with pytest.raises(KafkaGroupError):
            await groups.join("g", "", "c", 10_000, 10_000, "consumer", [])
        assert "g" not in groups.groups or not groups.groups["g"].members
        task = asyncio.ensure_future(groups.join("g", "", "c", 10_000, 10**12, "consumer",
                                                 [("range", b"")]))
        deadline = time.monotonic() + 5
        while not (groups.groups.get("g") and groups.groups["g"].members):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        [member] = groups.groups["g"].members.values()
        assert member.rebalance_ms == MAX_SESSION_MS
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
