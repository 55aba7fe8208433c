"""Where a connection's readings go: each topic is routed and checked against the ACL
once per connection (``Connection._route``), then every reading on it is one lookup.

In process, on fake transports: the inboxes are the listener's real ones, read directly.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from test_listener_fuzz import FakeTransport

from edge_agent.inbox import Inbox
from edge_agent.listener import Listener, ListenerConfig
from edge_agent.routing import Router
from mqttproto import V5, V311, Connect, Publish, encode
from tests.helpers import until


async def connected(listener: Listener, client_id: str, version: int) -> tuple[Any, FakeTransport]:
    conn = listener._protocol()
    transport = FakeTransport(conn)
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.data_received(encode(Connect(version, client_id), version))
    await until(lambda: conn.state == 2, 10, f"{client_id} connected")
    return conn, transport


def publish(topic: str, seq: int, version: int) -> bytes:
    return encode(Publish(topic, json.dumps({"seq": seq}).encode(), 1, packet_id=seq),
                  version)


def test_each_topic_reaches_its_streams_inbox_and_the_acl_still_refuses(
        tmp_path: Path) -> None:
    async def main() -> None:
        route = Router([("telemetry", ("devices/+/telemetry",)),
                        ("alarms", ("devices/+/alarm",))])
        inboxes = {"telemetry": Inbox(), "alarms": Inbox()}
        unmatched = Inbox()
        listener = Listener(ListenerConfig(allow_anonymous=True), tmp_path / "listener",
                            route, inboxes, unmatched)  # default ACL: devices/{device}/#
        listener.sessions.directory.mkdir(parents=True)
        sessions = asyncio.ensure_future(listener.sessions.run())
        try:
            conn, transport = await connected(listener, "d1", V5)
            frames = [publish("devices/d1/telemetry", 1, V5), publish("devices/d1/alarm", 2, V5),
                      publish("devices/d1/other", 3, V5), publish("devices/d1/telemetry", 4, V5),
                      publish("devices/d2/telemetry", 5, V5),  # another device's: refused
                      publish("devices/d1/alarm", 6, V5)]
            conn.data_received(b"".join(frames))
            seqs = {name: [json.loads(m[1])["seq"] for m in box.messages]
                    for name, box in (*inboxes.items(), ("", unmatched))}
            assert seqs == {"telemetry": [1, 4], "alarms": [2, 6], "": [3]}
            assert all(m[4] == conn.number and m[2] == 1
                       for box in (*inboxes.values(), unmatched) for m in box.messages)
            assert listener.stats.acl_denied == 1
            # its PUBACK is 0x87, due once the readings before it are durable (in order)
            assert conn.inflight[5] == 0x87 and list(conn.inflight) == [1, 2, 3, 4, 5, 6]
            assert transport.closing is False  # MQTT 5 refuses in the PUBACK, stays

            # 3.1.1 has no refusing PUBACK: the forbidden topic ends the connection, even
            # after allowed readings on the same connection were routed from the cache
            old, old_t = await connected(listener, "d3", V311)
            old.data_received(publish("devices/d3/telemetry", 1, V311)
                              + publish("devices/d3/telemetry", 2, V311)
                              + publish("devices/d1/telemetry", 3, V311))
            assert [json.loads(m[1])["seq"] for m in inboxes["telemetry"].messages][-2:] \
                == [1, 2]
            assert old_t.closing and listener.stats.acl_denied == 2
        finally:
            await listener.close()
            sessions.cancel()
            await asyncio.gather(sessions, return_exceptions=True)

    asyncio.run(main())
