"""The MQTT adapter over real sockets against a scripted broker that we control.

Mosquitto is used everywhere else; here the peer is a small asyncio server so a test can
hold back PUBACKs, cut the connection at a chosen moment and read every packet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import mqttproto as mp
from device_simulator.mqtt_pub import (
    BrokerAddress,
    ConnectOptions,
    MqttConnectError,
    MqttConnection,
)

TOPIC = mp.topic_field("devices/d1/telemetry")


def run_async(fn: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test body in a fresh event loop (no pytest-asyncio here)."""

    def test() -> None:
        asyncio.run(asyncio.wait_for(fn(), 30))

    test.__name__, test.__doc__ = fn.__name__, fn.__doc__
    return test


class ScriptedBroker:
    """Accepts connections, answers CONNACK as told, records packets, acks on demand."""

    def __init__(self, connack: bytes = b"\x20\x02\x00\x00", auto_ack: bool = False) -> None:
        self.connack = connack
        self.auto_ack = auto_ack
        self.packets: list[mp.Packet] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.arrived = asyncio.Condition()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> ScriptedBroker:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        parser = mp.PacketReader()  # the server's side: CONNECT first
        while data := await reader.read(65536):
            for packet in parser.feed(data):
                async with self.arrived:
                    self.packets.append(packet)
                    self.arrived.notify_all()
                if isinstance(packet, mp.Connect):
                    writer.write(self.connack)
                elif isinstance(packet, mp.Publish) and self.auto_ack and packet.qos:
                    self.ack(packet.packet_id)
                elif isinstance(packet, mp.Pingreq):
                    writer.write(b"\xd0\x00")
                elif isinstance(packet, mp.Disconnect):
                    writer.close()

    def ack(self, pid: int) -> None:
        self.writers[-1].write(b"\x40\x02" + pid.to_bytes(2, "big"))

    def publishes(self) -> list[tuple[bool, bytes]]:
        """(dup, payload) of every PUBLISH received, in order."""
        return [(p.dup, p.payload) for p in self.packets if isinstance(p, mp.Publish)]

    async def wait_publishes(self, n: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout), self.arrived:
            await self.arrived.wait_for(lambda: len(self.publishes()) >= n)

    async def close(self) -> None:
        for w in self.writers:
            w.close()
        assert self.server is not None
        self.server.close()


def _conn(port: int, **options: object) -> tuple[MqttConnection, list[MqttConnection]]:
    dirty: list[MqttConnection] = []
    opts = ConnectOptions(BrokerAddress("127.0.0.1", port), **options)  # type: ignore[arg-type]
    return MqttConnection("d1", opts, dirty), dirty


def _flush(dirty: list[MqttConnection]) -> None:
    for c in dirty:
        c.flush()
    dirty.clear()


@run_async
async def test_the_window_never_exceeds_the_mqtt5_receive_maximum():
    # CONNACK v5 with properties: receive maximum 2.
    broker = await ScriptedBroker(connack=b"\x20\x06\x00\x00\x03\x21\x00\x02").start()
    conn, dirty = _conn(broker.port, version=mp.V5, max_inflight=100)
    await conn.connect()
    for i in range(5):
        assert conn.publish(TOPIC, b"m%d" % i, 1, ("d1", i))
    _flush(dirty)
    await broker.wait_publishes(2)
    await asyncio.sleep(0.1)
    assert len(broker.publishes()) == 2 and len(conn.pending) == 3
    broker.ack(1)
    await broker.wait_publishes(3)
    assert len(conn.inflight) == 2 and conn.acked == 1
    await broker.close()


@run_async
async def test_after_a_cut_unacked_messages_are_resent_with_dup_then_the_buffered_ones():
    broker = await ScriptedBroker().start()
    conn, dirty = _conn(broker.port, max_inflight=10)
    await conn.connect()
    for i in range(3):
        conn.publish(TOPIC, b"m%d" % i, 1, ("d1", i))
    _flush(dirty)
    await broker.wait_publishes(3)
    broker.ack(1)  # only m0 is acknowledged
    await asyncio.sleep(0.1)
    conn.drop(offline_s=0.2)
    assert not conn.connected
    conn.publish(TOPIC, b"m3", 1, ("d1", 3))  # taken while offline: buffered
    assert conn.unconfirmed() == [("d1", 1), ("d1", 2), ("d1", 3)]
    broker.auto_ack = True
    await broker.wait_publishes(6)
    dups, payloads = zip(*broker.publishes(), strict=True)
    assert payloads == (b"m0", b"m1", b"m2", b"m1", b"m2", b"m3")
    assert dups == (False, False, False, True, True, False)
    await asyncio.sleep(0.1)
    assert conn.reconnects == 1 and conn.idle and conn.unconfirmed() == []
    await conn.close(1.0)
    await broker.close()


@run_async
async def test_the_offline_buffer_is_bounded_and_congestion_is_reported():
    broker = await ScriptedBroker().start()
    conn, dirty = _conn(broker.port, max_inflight=1, max_pending=2)
    await conn.connect()
    assert conn.publish(TOPIC, b"a", 1, 1)  # in flight
    assert conn.publish(TOPIC, b"b", 1, 2) and conn.publish(TOPIC, b"c", 1, 3)  # queued
    assert conn.congested
    assert not conn.publish(TOPIC, b"d", 1, 4)  # buffer full: the caller drops it
    _flush(dirty)
    await conn.close(0.1)
    assert sorted(conn.unconfirmed()) == [1, 2, 3]
    await broker.close()


@run_async
async def test_a_refused_connection_raises_with_the_reason():
    broker = await ScriptedBroker(connack=b"\x20\x02\x00\x04").start()
    conn, _ = _conn(broker.port)
    with pytest.raises(MqttConnectError, match="bad user name or password"):
        await conn.connect()
    assert conn.connection_errors == 1 and not conn.connected
    await broker.close()


@run_async
async def test_an_idle_connection_sends_pingreq_and_disconnects_cleanly():
    broker = await ScriptedBroker().start()
    conn, _ = _conn(broker.port, keepalive=2)
    await conn.connect()
    conn.keepalive(conn.last_write + 0.5)
    assert not any(isinstance(p, mp.Pingreq) for p in broker.packets)
    conn.keepalive(conn.last_write + 1.5)
    await asyncio.sleep(0.1)
    assert any(isinstance(p, mp.Pingreq) for p in broker.packets)
    await conn.close(1.0)
    await asyncio.sleep(0.05)
    assert isinstance(broker.packets[-1], mp.Disconnect)
    await broker.close()


def test_broker_urls_parse_with_defaults_and_credentials():
    a = BrokerAddress.parse("mqtts://user:p%40ss@host.example")
    assert (a.host, a.port, a.tls, a.username, a.password) == ("host.example", 8883, True,
                                                               "user", "p@ss")
    assert a.redacted() == "mqtts://user:***@host.example:8883"
    assert BrokerAddress.parse("127.0.0.1:1884") == BrokerAddress("127.0.0.1", 1884)
    for bad in ("http://x", "mqtt://", "mqtt://h:99999"):
        with pytest.raises(ValueError):
            BrokerAddress.parse(bad)
