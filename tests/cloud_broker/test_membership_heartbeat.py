"""The heartbeat task outlives refusals that are not rebalances (G9: nothing dies silently).

The broker's answers are scripted through httpx's MockTransport: a 500 or a 403 on a
heartbeat cannot be provoked from a healthy broker on demand.
"""

from __future__ import annotations

import asyncio
import json

import httpx

from cloud_broker.client.group import Membership
from cloud_broker.client.transport import BrokerClient


def _script(statuses: list[int]) -> tuple[httpx.MockTransport, list[int]]:
    beats: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/join"):
            return httpx.Response(200, json={
                "generation": 1, "member_secret": "s", "heartbeat_interval_ms": 10,
                "assignment": [{"topic": "t", "partition": 0}]})
        if path.endswith("/offsets"):
            return httpx.Response(200, json={"offsets": []})
        if path.endswith("/heartbeat"):
            beats.append(json.loads(request.content)["generation"])
            status = statuses[len(beats) - 1] if len(beats) <= len(statuses) else 200
            return httpx.Response(status, json={"error": "scripted", "code": "scripted"})
        return httpx.Response(404, json={"error": "not here"})

    return httpx.MockTransport(handle), beats


async def _run(statuses: list[int]) -> tuple[list[int], bool]:
    transport, beats = _script(statuses)
    client = BrokerClient("http://broker", transport=transport, retry_for_s=0.1)
    rebalances: list[int] = []
    member = Membership(client, "g", "m1", ["t"], 6000, None, lambda: rebalances.append(1))
    try:
        await member.join()
        deadline = asyncio.get_running_loop().time() + 10
        while len(beats) < len(statuses) + 3:
            assert asyncio.get_running_loop().time() < deadline, f"heartbeats stopped: {beats}"
            await asyncio.sleep(0.01)
        alive = member._heartbeat is not None and not member._heartbeat.done()
    finally:
        await member.stop()
        await client.close()
    return beats, alive and not rebalances


def test_heartbeats_go_on_after_a_500_and_a_403() -> None:
    beats, alive = asyncio.run(_run([500, 403, 500]))
    assert len(beats) >= 6
    assert alive, "the heartbeat task ended or asked for a rebalance on a non-rebalance refusal"


def test_a_recovered_broker_renews_the_fence() -> None:
    async def main() -> float:
        transport, _ = _script([500, 500])
        client = BrokerClient("http://broker", transport=transport, retry_for_s=0.1)
        member = Membership(client, "g", "m1", ["t"], 6000, None, lambda: None)
        try:
            await member.join()
            first = member.fence
            deadline = asyncio.get_running_loop().time() + 10
            while member.fence == first:
                assert asyncio.get_running_loop().time() < deadline, "fence never renewed"
                await asyncio.sleep(0.01)
            return member.fence - first
        finally:
            await member.stop()
            await client.close()

    assert asyncio.run(main()) > 0
