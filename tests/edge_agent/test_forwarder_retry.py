"""The forwarder's retry loop: retryable failures are retried with a bounded, jittered
wait until the batch goes through, exactly once; the wait is what the docstring says."""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path

import pytest

from edge_agent import forwarder
from edge_agent.forwarder import retry_wait
from edge_agent.outgoing import Outgoing
from edge_agent.uplink_http import RetryableUplinkError, TlsUplinkError
from tests.edge_agent.backlog import Backlog
from uplink import Ack, Refusal


def test_retry_wait_is_full_jitter_under_an_exponential_ceiling() -> None:
    exc = RetryableUplinkError("down")
    for failures, ceiling in ((1, 0.05), (2, 0.1), (3, 0.2), (6, 1.0), (40, 1.0), (10**6, 1.0)):
        waits = [retry_wait(failures, exc, 1.0) for _ in range(300)]
        assert all(0 <= w <= ceiling for w in waits), (failures, max(waits))
        assert max(waits) > ceiling / 2  # jittered over the whole range, not a constant
    assert retry_wait(1, TlsUplinkError("bad certificate"), 1.5) == 1.5


class Flaky:
    """Fails every other send retryably (a cloud restarting), else forwards."""

    def __init__(self, inner: object) -> None:
        self.inner, self.calls, self.failed = inner, 0, 0

    async def send(self, topic: str, batch: Outgoing) -> Ack | Refusal:
        self.calls += 1
        if self.calls % 2:
            self.failed += 1
            raise RetryableUplinkError("connection refused")
        return await self.inner.send(topic, batch)  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        await self.inner.aclose()  # type: ignore[attr-defined]


def test_retried_sends_deliver_exactly_once_and_leave_no_cyclic_garbage(
        tmp_path: Path) -> None:
    edge = Backlog(tmp_path, {"telemetry": 3000}, max_batch_records=100, max_in_flight=2)
    flaky = Flaky(edge.uplink())
    collected: list[int] = []

    async def main() -> None:
        gc.collect()
        gc.disable()
        try:
            await edge.forward(flaky)
        finally:
            collected.append(gc.collect())
            gc.enable()

    asyncio.run(main())
    edge.verify_and_close()
    assert flaky.failed >= 30 and edge.senders[0].stats.retries == flaky.failed
    # tenacity's retry objects were cycles (~19 objects per attempt: 560 for these 60),
    # freed only by the full collection, which a busy agent runs rarely.
    assert collected[0] < flaky.calls, (collected, flaky.calls)


class DownFor:
    """Refuses each stream's first send retryably (the uplink is down), then forwards."""

    def __init__(self, inner: object) -> None:
        self.inner, self.failed = inner, set[str]()
        self.delivered: dict[str, float] = {}

    async def send(self, topic: str, batch: Outgoing) -> Ack | Refusal:
        if batch.stream not in self.failed:
            self.failed.add(batch.stream)
            raise RetryableUplinkError(f"down for {batch.stream}")
        reply = await self.inner.send(topic, batch)  # type: ignore[attr-defined]
        self.delivered.setdefault(batch.stream, time.monotonic())
        return reply

    async def aclose(self) -> None:
        await self.inner.aclose()  # type: ignore[attr-defined]


def test_a_request_that_goes_through_ends_the_other_retries_waits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each request backs off on its own; once telemetry's retry goes through, the
    alarm batch's retry must not sit out the rest of its (here 30 s) backoff."""
    waits = {"alarms": 30.0, "telemetry": 0.01}
    monkeypatch.setattr(forwarder, "retry_wait",
                        lambda failures, exc, top: waits[str(exc).rsplit(" ", 1)[1]])
    edge = Backlog(tmp_path, {"telemetry": 300, "alarms": 20}, devices=10,
                   priorities={"alarms": 0}, max_batch_records=100, max_in_flight=4)
    uplink = DownFor(edge.uplink())

    async def main() -> float:
        start = time.monotonic()
        await edge.forward(uplink, timeout=20)  # the alarm's backoff: 30 s
        return time.monotonic() - start

    took = asyncio.run(main())
    edge.verify_and_close()
    assert uplink.failed == {"alarms", "telemetry"}
    assert uplink.delivered["alarms"] - uplink.delivered["telemetry"] < 2.0, took
