"""The Python client carries the member secret by itself (real broker subprocess).

A consumer process that crashed and is started again under the same member id must wait
for its old session instead of taking it over at once (that takeover is what let any
reader make another member leave), then join and read; and the old incarnation's
secret no longer works once the new one joined.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from consume_testing import Ingester, url_of

from cloud_broker.client import BrokerClient, Consumer, RebalanceError
from tests.helpers import Server

pytestmark = pytest.mark.timeout(120)


def test_a_restarted_member_waits_for_its_old_session_then_reads(broker: Server) -> None:
    url = url_of(broker)
    Ingester(url).send(devices=4, per_device=5)

    async def run() -> tuple[float, int]:
        old = BrokerClient(url, retry_for_s=5)
        view = await old.join("g", "m", ["telemetry"], 1000, None)  # then: no heartbeat
        started = time.monotonic()
        async with Consumer(url, topics=["telemetry"], group="g", member_id="m",
                            session_timeout_ms=1000, wait_ms=100) as consumer:
            await asyncio.wait_for(consumer.__anext__(), 30)
            waited = time.monotonic() - started
            members = httpx.get(f"{url}/v1/groups/g", timeout=5).json()["members"]
            with pytest.raises(RebalanceError) as info:  # the old secret is void now
                await old.leave("g", "m", view["member_secret"])
            assert info.value.body["code"] == "unknown_member"
        await old.close()
        return waited, len(members)

    waited, members = asyncio.run(run())
    assert members == 1
    assert waited >= 0.5, "the new incarnation took over a live session"
    group = httpx.get(f"{url}/v1/groups/g", timeout=5).json()
    assert group["members"] == []  # it left cleanly, with its secret
