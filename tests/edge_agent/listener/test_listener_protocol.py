"""The listener's side of MQTT, from raw sockets and paho: QoS 2 and SUBSCRIBE refused
with their reason codes, wills, keep-alive, the CONNECT timeout, the packet-size and
receive-maximum limits, max_connections, and PUBACKs withheld while the log is full."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from listener_testing import agent, listener_status, readings_of, write_config

from mqttproto import V5, V311, Connect, Disconnect, PacketReader, Publish, Will, encode
from tests.helpers import Server, wait_for


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int, int]]:
    tmp = tmp_path_factory.mktemp("protocol")
    cfg, status_port, port = write_config(tmp, listener="""
allow_anonymous = true
connect_timeout_s = 1
max_packet_size = 4096
receive_maximum = 5
""")
    server = agent(cfg, status_port, port, tmp / "agent.log").start()
    try:
        yield server, status_port, port
    finally:
        server.stop()


class Raw:
    """A hand-driven client: packets encoded with mqttproto, answers read back."""

    def __init__(self, port: int, version: int = V5) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.reader = PacketReader(version=version)
        self.version = version

    def send(self, *packets: Any) -> None:
        self.sock.sendall(b"".join(encode(p, self.version) for p in packets))

    def read(self, timeout: float = 5.0) -> list[Any]:
        """Packets until the server closes the socket (or ``timeout``)."""
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                out.append("closed")
                break
            if not data:
                out.append("closed")
                break
            out.extend(self.reader.feed(data))
        return out

    def connect(self, client_id: str, **kw: Any) -> Any:
        self.send(Connect(self.version, client_id, **kw))
        return self.read(0.5)[0]

    def close(self) -> None:
        self.sock.close()


def _reading(device: str, seq: int, qos: int = 1, pid: int = 1) -> Publish:
    return Publish(f"devices/{device}/telemetry", json.dumps({"seq": seq}).encode(), qos,
                   packet_id=pid if qos else 0)


@pytest.mark.parametrize("version", [V311, V5])
def test_qos2_is_refused(served: tuple[Server, int, int], version: int) -> None:
    c = Raw(served[2], version)
    assert c.connect(f"q2-{version}").reason_code == 0
    c.send(_reading(f"q2-{version}", 1, qos=2))
    got = c.read()
    assert got[-1] == "closed"
    if version == V5:
        assert isinstance(got[0], Disconnect) and got[0].reason_code == 0x9B, got
    assert readings_of(served[1], f"q2-{version}") == []


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_subscribe_is_refused_with_a_reason_code(served: tuple[Server, int, int],
                                                 protocol: int) -> None:
    codes: list[Any] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{protocol}",
                    protocol=protocol)
    c.on_subscribe = lambda _c, _u, _m, rcs, _p: codes.extend(rcs)
    c.connect("127.0.0.1", served[2])
    c.loop_start()
    try:
        c.subscribe("devices/#", qos=1)
        wait_for(lambda: codes, 10, message="a SUBACK")
        assert codes[0].is_failure
        assert codes[0].value == (0x87 if protocol == mqtt.MQTTv5 else 0x80)
    finally:
        c.disconnect()
        c.loop_stop()


def test_a_will_is_stored_when_the_device_vanishes_and_not_when_it_says_goodbye(
        served: tuple[Server, int, int]) -> None:
    status_port, port = served[1], served[2]
    for device, goodbye in (("will-gone", False), ("will-bye", True)):
        c = Raw(port)
        will = Will(f"devices/{device}/telemetry", b'{"seq": 99, "offline": true}', qos=1)
        assert c.connect(device, will=will).reason_code == 0
        if goodbye:
            c.send(Disconnect())
        c.close()
    wait_for(lambda: readings_of(status_port, "will-gone") == [99], 10, message="the will")
    time.sleep(0.3)  # the will of the other device would have been stored with it
    assert readings_of(status_port, "will-bye") == []


def test_a_will_the_acl_forbids_refuses_the_connect(served: tuple[Server, int, int]) -> None:
    c = Raw(served[2])
    ack = c.connect("will-acl", will=Will("devices/someone-else/telemetry", b"{}"))
    assert ack.reason_code == 0x87


def test_keepalive_and_connect_timeouts_close_idle_sockets(
        served: tuple[Server, int, int]) -> None:
    status_port, port = served[1], served[2]
    silent = Raw(port)
    assert silent.connect("keepalive", keepalive=1).reason_code == 0
    got = silent.read(5)  # 1.5 x keepalive without a packet
    assert isinstance(got[0], Disconnect) and got[0].reason_code == 0x8D, got
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)
    start = time.monotonic()
    assert idle.recv(10) == b""  # no CONNECT within connect_timeout_s
    assert time.monotonic() - start < 4
    idle.close()
    assert listener_status(status_port)["disconnects"]["connect timeout"] >= 1


def test_a_packet_over_the_limit_is_refused_before_it_is_read(
        served: tuple[Server, int, int]) -> None:
    c = Raw(served[2])
    assert c.connect("big").reason_code == 0
    c.sock.sendall(b"\x32\xff\xff\x7f")  # declares a 2 MiB PUBLISH, sends none of it
    got = c.read()
    assert isinstance(got[0], Disconnect) and got[0].reason_code == 0x95, got


def test_more_unacknowledged_readings_than_receive_maximum_disconnect(
        served: tuple[Server, int, int]) -> None:
    c = Raw(served[2])
    ack = c.connect("rmax")
    assert ack.receive_maximum == 5
    c.send(*(_reading("rmax", s, pid=s) for s in range(1, 7)))  # 6 before any PUBACK
    got = c.read()
    assert any(isinstance(p, Disconnect) and p.reason_code == 0x93 for p in got), got


def test_max_connections_closes_extra_sockets(tmp_path: Path) -> None:
    cfg, status_port, port = write_config(tmp_path, listener="allow_anonymous = true\n"
                                                             "max_connections = 3")
    server = agent(cfg, status_port, port, tmp_path / "agent.log").start()
    try:
        wait_for(lambda: listener_status(status_port)["connections"] == 0, 10,
                 message="the readiness probes to go")
        held = [Raw(port) for _ in range(3)]
        for i, c in enumerate(held):
            assert c.connect(f"held-{i}").reason_code == 0
        extra = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert extra.recv(10) == b""
        extra.close()
        assert listener_status(status_port)["over_limit"] >= 1
        held[0].close()
        wait_for(lambda: listener_status(status_port)["connections"] == 2, 10,
                 message="a slot to be freed")
        again = Raw(port)
        assert again.connect("again").reason_code == 0
    finally:
        server.stop()


def test_no_puback_while_the_log_is_full(tmp_path: Path) -> None:
    """A full log (reject_new, cloud down) reaches the device as withheld PUBACKs: every
    PUBACK it got is for a stored reading, and the rest are never acknowledged."""
    cfg, status_port, port = write_config(tmp_path, streams="""
[[streams]]
name = "telemetry"
topics = ["devices/+/telemetry"]
device_key = "topic:devices/{device}/telemetry"
segment_bytes = 4096
max_bytes = 8192
full_policy = "reject_new"
""")
    server = agent(cfg, status_port, port, tmp_path / "agent.log").start()
    c = Raw(port, V311)
    try:
        assert c.connect("full").reason_code == 0
        pad = "x" * 300
        acked: list[int] = []
        for seq in range(1, 61):
            c.send(Publish("devices/full/telemetry", json.dumps(
                {"seq": seq, "pad": pad}).encode(), 1, packet_id=seq))
            acked.extend(p.packet_id for p in c.read(0.05) if hasattr(p, "packet_id"))
        acked.extend(p.packet_id for p in c.read(1.0) if hasattr(p, "packet_id"))
        assert 0 < len(acked) < 60, acked
        stored = readings_of(status_port, "full")
        assert set(acked) <= set(stored) and len(stored) < 60
        assert acked == sorted(acked)  # PUBACKs in publish order
        doc = listener_status(status_port)
        assert doc["inflight"] > 0
    finally:
        c.close()
        server.stop()
