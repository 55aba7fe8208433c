"""Clients nobody here wrote publish to the agent's MQTT listener: mosquitto_pub, paho-mqtt,
aiomqtt and gmqtt, MQTT 3.1.1 and 5, QoS 0 and 1. Every QoS 1 publish gets its PUBACK,
every reading is then in the agent's log (read back through its local read API), and a
redelivery is stored once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
import pytest
from gmqtt import Client as GmqttClient
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from gmqtt.storage import HeapPersistentStorage
from listener_testing import agent, listener_status, readings_of, status, write_config

from tests.helpers import Server, find_binary, wait_for


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int, int]]:
    tmp = tmp_path_factory.mktemp("listener")
    cfg, status_port, mqtt_port = write_config(tmp, listener="allow_anonymous = true")
    server = agent(cfg, status_port, mqtt_port, tmp / "agent.log").start()
    try:
        yield server, status_port, mqtt_port
    finally:
        server.stop()


def _stored(status_port: int, device: str, seqs: list[int]) -> None:
    wait_for(lambda: readings_of(status_port, device) == seqs, 10,
             message=f"{device}'s readings {seqs} in the log")


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
@pytest.mark.parametrize("qos", [0, 1])
def test_mosquitto_pub(served: tuple[Server, int, int], version: str, qos: int) -> None:
    _, status_port, port = served
    device = f"mp-{version}-q{qos}"
    for seq in (1, 2):
        res = subprocess.run(
            [find_binary("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(port), "-V", version,
             "-q", str(qos), "-i", device, "-t", f"devices/{device}/telemetry",
             "-m", json.dumps({"seq": seq, "t": 21.5}), "-d"],
            capture_output=True, text=True, timeout=20)
        assert res.returncode == 0, res.stdout + res.stderr
        assert ("received PUBACK" in res.stdout) == (qos == 1), res.stdout
    _stored(status_port, device, [1, 2])


class _PahoDevice:
    def __init__(self, port: int, device: str, protocol: int, **kw: Any) -> None:
        self.acked: dict[int, Any] = {}
        self.connected = threading.Event()
        self.disconnects: list[Any] = []
        self.session_present: bool | None = None
        c = self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device,
                                      protocol=protocol, **kw)
        c.on_publish = lambda _c, _u, mid, rc, _p: self.acked.__setitem__(mid, rc)
        c.on_connect = self._on_connect
        c.on_disconnect = lambda _c, _u, _f, rc, _p: self.disconnects.append(rc)
        self.port = port

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.session_present = bool(flags.session_present)
        self.connected.set()

    def connect(self, **kw: Any) -> _PahoDevice:
        self.client.connect("127.0.0.1", self.port, keepalive=10, **kw)
        self.client.loop_start()
        assert self.connected.wait(10), "no CONNACK"
        return self

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_paho_qos0_and_qos1(served: tuple[Server, int, int], protocol: int) -> None:
    _, status_port, port = served
    device = f"paho-{protocol}"
    d = _PahoDevice(port, device, protocol).connect()
    try:
        infos = [d.client.publish(f"devices/{device}/telemetry", json.dumps({"seq": s}),
                                  qos=s % 2) for s in range(1, 7)]
        for info in infos:
            info.wait_for_publish(10)
        qos1 = [i.mid for s, i in enumerate(infos, 1) if s % 2]
        wait_for(lambda: all(m in d.acked for m in qos1), 10, message="PUBACKs")
        assert all(not d.acked[m].is_failure for m in qos1)
        _stored(status_port, device, [1, 2, 3, 4, 5, 6])
    finally:
        d.close()


@pytest.mark.parametrize("version", [aiomqtt.ProtocolVersion.V311, aiomqtt.ProtocolVersion.V5])
def test_aiomqtt(served: tuple[Server, int, int], version: aiomqtt.ProtocolVersion) -> None:
    _, status_port, port = served
    device = f"aiomqtt-{version.value}"

    async def main() -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier=device,
                                  protocol=version) as client:
            for seq in (1, 2, 3):  # publish() at QoS 1 returns once the PUBACK is in
                await client.publish(f"devices/{device}/telemetry", json.dumps({"seq": seq}),
                                     qos=1 if seq != 2 else 0, timeout=10)

    asyncio.run(main())
    _stored(status_port, device, [1, 2, 3])


class _AckedStorage(HeapPersistentStorage):
    """gmqtt's QoS 1 store: a message leaves it when its PUBACK arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.acked: list[int] = []

    async def remove_message_by_mid(self, mid: int) -> None:
        self.acked.append(mid)
        await super().remove_message_by_mid(mid)


@pytest.mark.parametrize("version", [MQTTv311, MQTTv50])
def test_gmqtt(served: tuple[Server, int, int], version: int) -> None:
    _, status_port, port = served
    device = f"gmqtt-{version}"
    storage = _AckedStorage()

    async def main() -> None:
        client = GmqttClient(device, persistent_storage=storage)
        await client.connect("127.0.0.1", port, version=version, keepalive=10)
        for seq in (1, 2, 3, 4):
            client.publish(f"devices/{device}/telemetry", json.dumps({"seq": seq}),
                           qos=seq % 2)
        for _ in range(500):
            if len(storage.acked) == 2:
                break
            await asyncio.sleep(0.02)
        await client.disconnect()

    asyncio.run(main())
    assert len(storage.acked) == 2, "gmqtt got a PUBACK for each QoS 1 publish"
    _stored(status_port, device, [1, 2, 3, 4])


def test_a_redelivered_reading_is_stored_once_and_acknowledged(
        served: tuple[Server, int, int]) -> None:
    _, status_port, port = served
    device = "redeliver"
    d = _PahoDevice(port, device, mqtt.MQTTv311).connect()
    try:
        for seq in (1, 2, 2, 1, 3):  # a device resending after a lost PUBACK, say
            d.client.publish(f"devices/{device}/telemetry", json.dumps({"seq": seq}),
                             qos=1).wait_for_publish(10)
        wait_for(lambda: len(d.acked) == 5, 10, message="five PUBACKs")
        _stored(status_port, device, [1, 2, 3])
    finally:
        d.close()


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_a_persistent_session_resumes(served: tuple[Server, int, int], protocol: int) -> None:
    _, _, port = served
    device = f"resume-{protocol}"
    v5 = protocol == mqtt.MQTTv5
    kw: dict[str, Any] = {} if v5 else {"clean_session": False}
    props = None
    if v5:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
    connect_kw: dict[str, Any] = {"clean_start": False, "properties": props} if v5 else {}
    first = _PahoDevice(port, device, protocol, **kw).connect(**connect_kw)
    assert first.session_present is False
    first.close()
    again = _PahoDevice(port, device, protocol, **kw).connect(**connect_kw)
    try:
        assert again.session_present is True
    finally:
        again.close()
    clean_kw = {"clean_start": True} if v5 else {}
    clean = _PahoDevice(port, device, protocol,
                        **({} if v5 else {"clean_session": True})).connect(**clean_kw)
    clean.close()
    assert clean.session_present is False


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_a_second_connection_takes_the_session_over(served: tuple[Server, int, int],
                                                    protocol: int) -> None:
    _, status_port, port = served
    device = f"takeover-{protocol}"
    before = listener_status(status_port)["takeovers"]
    old = _PahoDevice(port, device, protocol)
    old.client.reconnect_delay_set(30, 60)  # it must not take the session back at once
    old.connect()
    new = _PahoDevice(port, device, protocol).connect()
    try:
        wait_for(lambda: old.disconnects, 10, message="the old connection to be closed")
        if protocol == mqtt.MQTTv5:
            assert old.disconnects[0].value == 0x8E, old.disconnects  # session taken over
        assert listener_status(status_port)["takeovers"] == before + 1
        new.client.publish(f"devices/{device}/telemetry", json.dumps({"seq": 7}),
                           qos=1).wait_for_publish(10)
        wait_for(lambda: new.acked, 10, message="the new connection's PUBACK")
        _stored(status_port, device, [7])
    finally:
        old.client.loop_stop()
        new.close()


def test_status_and_metrics_show_the_listener(served: tuple[Server, int, int]) -> None:
    import httpx

    _, status_port, port = served
    d = _PahoDevice(port, "metrics-dev", mqtt.MQTTv5).connect()
    try:
        d.client.publish("devices/metrics-dev/telemetry", '{"seq": 1}', qos=1).wait_for_publish(10)
        doc = listener_status(status_port)
        assert doc["serving"] and doc["connections"] >= 1 and doc["pubacks"] >= 1
        text = httpx.get(f"http://127.0.0.1:{status_port}/metrics", timeout=5).text
        line = next(ln for ln in text.splitlines() if ln.startswith("edge_listener_pubacks_total"))
        assert float(line.split()[-1]) >= 1
        assert "edge_listener_connections" in text
        health = httpx.get(f"http://127.0.0.1:{status_port}/healthz", timeout=5)
        assert health.status_code == 200, health.text
        view = subprocess.run([sys.executable, "-m", "edge_agent.cli", "status", "--config",
                               served[0].args[-1]], capture_output=True, text=True, timeout=30)
        assert "mqtt listener 127.0.0.1:" in view.stdout, view.stdout + view.stderr
    finally:
        d.close()


def test_a_topic_of_no_stream_is_dead_lettered_then_acknowledged(
        served: tuple[Server, int, int]) -> None:
    _, status_port, port = served
    d = _PahoDevice(port, "nostream", mqtt.MQTTv5).connect()
    try:
        info = d.client.publish("devices/nostream/unknown-kind", '{"seq": 1}', qos=1)
        info.wait_for_publish(10)
        wait_for(lambda: info.mid in d.acked, 10, message="the PUBACK")
        assert not d.acked[info.mid].is_failure  # durable in the dead-letter log
        doc = status(status_port)
        assert doc is not None and doc["dead_letter"]["by_stream"][""]["no_stream"] >= 1
    finally:
        d.close()
