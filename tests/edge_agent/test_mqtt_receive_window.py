"""The session's own Receive Maximum (edge_agent/mqtt_flow.py) against a real Mosquitto.

Mosquitto 2.0 does not hold a resumed session to the client's Receive Maximum: every
PUBACK lets up to another Receive Maximum messages out. The session must still read no
more than ``receive_maximum`` QoS 1 PUBLISHes ahead of its PUBACKs, stop reading while
at the limit (the broker's surplus stays in the socket), and resume on every ack until
the whole backlog has arrived, in order and once.
"""

from __future__ import annotations

import asyncio
import select
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge_agent.config import MqttConfig
from edge_agent.mqtt_ingest import MqttSession
from tests.helpers import Server

LIMIT = 10
BACKLOG = 300


def _publish(port: int, n: int) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    c.max_inflight_messages_set(0)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        for info in [c.publish("t/d/r", b"%d" % i, 1) for i in range(n)]:
            info.wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()


def _bytes_waiting(session: MqttSession) -> bool:
    sock = session._client.socket() if session._client is not None else None
    if sock is None:
        return False
    pending = getattr(sock, "pending", None)
    return bool(pending and pending()) or bool(select.select([sock], [], [], 0)[0])


def test_session_stops_reading_at_the_limit_and_resumes_on_ack(
        tmp_path: Path, mosquitto: Server) -> None:
    cfg = MqttConfig(port=mosquitto.port, keepalive_s=60, receive_maximum=LIMIT,
                     reconnect_max_s=0.5)
    got: list[tuple[str, bytes, int, int, int]] = []
    acked = 0
    most_unacked = 0

    def deliver(m: tuple[str, bytes, int, int, int]) -> None:
        nonlocal most_unacked
        got.append(m)
        most_unacked = max(most_unacked, len(got) - acked)

    async def wait(cond: Any, what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, f"timed out waiting for {what} ({len(got)})"
            await asyncio.sleep(0.01)

    async def ack(session: MqttSession, upto: int) -> None:
        nonlocal acked
        acks = [(m[3], m[4]) for m in got[acked:upto]]
        acked = upto
        assert session.ack(acks) == len(acks)

    async def connected(session: MqttSession, body: Any) -> None:
        task = asyncio.create_task(session.run())
        try:
            # the backlog comes before the SUBACK of the renewed subscription, and that
            # waits unread behind it while the session is at its limit
            await wait(lambda: session.subscribed or len(got) >= LIMIT, "the subscription")
            await body()
        finally:
            await session.close()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def main() -> None:
        async def nothing() -> None:
            pass
        # the session (subscription) exists on the broker; the backlog queues for it
        await connected(MqttSession(cfg, "rw", [("t/+/r", 1)], deliver), nothing)
        await asyncio.to_thread(_publish, mosquitto.port, BACKLOG)
        session = MqttSession(cfg, "rw", [("t/+/r", 1)], deliver)

        async def body() -> None:
            await wait(lambda: len(got) >= LIMIT, "the first window")
            for i in range(1, 6):  # one PUBACK at a time: Mosquitto sends more per PUBACK
                await ack(session, i)
                await wait(lambda i=i: len(got) >= LIMIT + i, f"message {LIMIT + i}")
                await asyncio.sleep(0.05)  # let Mosquitto answer the PUBACK
            await asyncio.sleep(0.3)
            assert len(got) == LIMIT + 5, "read past the limit"
            assert session._window.paused_fd is not None, "still watching the socket"
            # the surplus Mosquitto sent waits unread: the limit is the session's own
            assert _bytes_waiting(session), "the broker held to the limit: nothing tested"
            while len(got) < BACKLOG:  # every ack resumes reading, up to the limit again
                await ack(session, len(got))
                await wait(lambda b=acked: len(got) >= min(BACKLOG, b + LIMIT),
                           "the next window")
            await ack(session, len(got))
            await wait(lambda: session.subscribed, "the SUBACK behind the backlog")

        await connected(session, body)

    asyncio.run(main())
    assert [int(m[1]) for m in got] == list(range(BACKLOG))  # in order, once
    assert most_unacked == LIMIT


def test_a_long_pause_keeps_the_connection(tmp_path: Path, mosquitto: Server) -> None:
    # Paused, the session reads no PINGRESP; paho would drop the connection after about
    # twice the keep-alive, and every reconnect would hand a blocked stream another window
    # of redeliveries. Held for four keep-alive periods with no ack, it must stay up.
    keepalive = 1
    cfg = MqttConfig(port=mosquitto.port, keepalive_s=keepalive, receive_maximum=LIMIT,
                     reconnect_max_s=0.5)
    got: list[tuple[str, bytes, int, int, int]] = []

    async def main() -> None:
        async def run(session: MqttSession, body: Any) -> None:
            task = asyncio.create_task(session.run())
            try:
                deadline = time.monotonic() + 20
                while not (session.subscribed or len(got) >= LIMIT):
                    assert time.monotonic() < deadline, "no subscription"
                    await asyncio.sleep(0.01)
                await body(session)
            finally:
                await session.close()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

        async def nothing(session: MqttSession) -> None:
            pass

        async def paused(session: MqttSession) -> None:
            await asyncio.sleep(4 * keepalive)  # asserting an absence: it takes the time
            assert len(got) == LIMIT and session._window.paused_fd is not None
            assert session.connected and session.connects == 1, session.last_error
            acked = 0
            deadline = time.monotonic() + 20
            while len(got) < 50:
                assert time.monotonic() < deadline, f"stuck at {len(got)}"
                session.ack([(m[3], m[4]) for m in got[acked:]])
                acked = len(got)
                await asyncio.sleep(0.01)
            assert session.connects == 1 and {m[4] for m in got} == {session.epoch}

        await run(MqttSession(cfg, "rwk", [("t/+/r", 1)], got.append), nothing)
        await asyncio.to_thread(_publish, mosquitto.port, 50)
        await run(MqttSession(cfg, "rwk", [("t/+/r", 1)], got.append), paused)

    asyncio.run(main())
    assert [int(m[1]) for m in got] == list(range(50))
