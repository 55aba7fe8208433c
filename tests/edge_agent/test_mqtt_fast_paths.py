"""The paho guard (edge_agent/mqtt_guard.py): fast paths off when paho is not what we
checked, a fallback to paho's own method on any exception inside an override, and an
agent that keeps every guarantee with every path off.

A paho change used to raise inside ``loop_read``: the session reconnected, the broker
redelivered the same PUBLISH, and nothing was ever acknowledged. The in-process tests
break the overrides on purpose (real Mosquitto, ``MqttSession``); the subprocess test
runs ``edge-agent run`` as if an unchecked paho were installed and SIGKILLs it.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from edge_agent_testing import (
    Feeder,
    Publisher,
    agent_ready,
    check_every_reading_once,
    http_get,
    write_config,
)
from test_mqtt_socket import _check, _publish, _session

from edge_agent import mqtt_client, mqtt_socket
from edge_agent.config import MqttConfig
from edge_agent.mqtt_guard import (
    ACK_BATCHES,
    BUFFERED_READS,
    CHECKED,
    FAST_PATHS,
    PUBLISH_DECODE,
    apply_check,
    check_paho,
)
from tests.helpers import Server


@pytest.fixture(autouse=True)
def fast_paths() -> Iterator[None]:
    """Every test starts and ends with the paths as the installed paho allows."""
    FAST_PATHS.reset()
    apply_check(check_paho())
    yield
    FAST_PATHS.reset()
    apply_check(check_paho())


def test_the_installed_paho_is_a_checked_one() -> None:
    # If this fails after an upgrade: run tests/edge_agent/test_mqtt_*.py against the new
    # paho, then raise pyproject's cap and mqtt_guard.CHECKED together.
    assert check_paho() == {}
    assert FAST_PATHS.buffered_reads and FAST_PATHS.publish_decode and FAST_PATHS.ack_batches
    assert FAST_PATHS.status() == [{"path": BUFFERED_READS, "on": True, "reason": ""},
                                   {"path": PUBLISH_DECODE, "on": True, "reason": ""},
                                   {"path": ACK_BATCHES, "on": True, "reason": ""}]


def test_pyproject_caps_paho_below_the_next_unchecked_minor() -> None:
    text = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    major, minor = max(CHECKED)
    assert f'"paho-mqtt>=2.1,<{major}.{minor + 1}"' in text


@pytest.mark.parametrize("version", ["2.3.0", "3.0.0", "2.0.1", "garbage"])
def test_an_unchecked_version_turns_every_path_off(version: str) -> None:
    problems = check_paho(version)
    assert set(problems) == {BUFFERED_READS, PUBLISH_DECODE, ACK_BATCHES}
    assert all(f"paho-mqtt {version} is not a checked version" in r for r in problems.values())


def test_a_missing_or_reshaped_private_attribute_turns_its_path_off() -> None:
    class NoHandlePublish(mqtt.Client):
        _handle_publish = None  # type: ignore[assignment]

    class NoCreateSocket(mqtt.Client):
        _create_socket = None  # type: ignore[assignment]

    class OtherPacketQueue(mqtt.Client):
        def _packet_queue(self, packet: bytes) -> Any:  # type: ignore[override]
            return None

    class OtherInPacket(mqtt.Client):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._in_packet = {"header": 0, "body": b""}  # type: ignore[typeddict-unknown-key]

    assert set(check_paho(client_class=NoHandlePublish)) == {PUBLISH_DECODE}
    assert "Client._handle_publish" in check_paho(client_class=NoHandlePublish)[PUBLISH_DECODE]
    assert set(check_paho(client_class=NoCreateSocket)) == {BUFFERED_READS}
    assert "_in_packet" in check_paho(client_class=OtherInPacket)[PUBLISH_DECODE]
    assert set(check_paho(client_class=OtherPacketQueue)) == {ACK_BATCHES}
    assert "_packet_queue" in check_paho(client_class=OtherPacketQueue)[ACK_BATCHES]


@pytest.mark.parametrize("qos", [0, 1])
def test_an_exception_in_the_publish_override_falls_back_to_paho(
        mosquitto: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        qos: int) -> None:
    # As if paho had changed _in_packet's shape: reading it raises inside the override.
    def reshaped(packet: bytes, qos: int, v5: bool) -> None:
        raise KeyError("packet")

    monkeypatch.setattr(mqtt_client, "split_publish", reshaped)
    cfg = MqttConfig(port=mosquitto.port, keepalive_s=60, reconnect_max_s=0.5)
    n = 500
    got, buffered = _session(cfg, f"fallback-{qos}", lambda: _publish(mosquitto.port, n, qos),
                             n, qos)
    _check(got, n, qos)  # every reading, in order, once: through paho's on_message
    assert buffered  # the other path is untouched
    assert not FAST_PATHS.publish_decode and FAST_PATHS.buffered_reads
    assert "KeyError" in FAST_PATHS.reasons[PUBLISH_DECODE]
    off = [r for r in caplog.records if "fast path publish_decode is off" in r.getMessage()]
    assert len(off) == 1  # said once, not once per message
    if qos:  # the PUBACKs sent on paho's path reached the broker: nothing comes back
        again, _ = _session(cfg, f"fallback-{qos}", lambda: None, 0, qos)
        assert again == []


def test_an_exception_while_wrapping_the_socket_falls_back_to_paho(
        mosquitto: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    class Reshaped(mqtt_socket.BufferedSocket):  # as if paho's socket lacked a method
        def __init__(self, sock: Any) -> None:
            raise AttributeError("'FutureSocket' object has no attribute 'send'")

    monkeypatch.setattr(mqtt_socket, "BufferedSocket", Reshaped)
    cfg = MqttConfig(port=mosquitto.port, keepalive_s=60, reconnect_max_s=0.5)
    got, buffered = _session(cfg, "plain-socket", lambda: _publish(mosquitto.port, 300, 1),
                             300, 1)
    _check(got, 300, 1)
    assert not buffered and not FAST_PATHS.buffered_reads
    assert "AttributeError" in FAST_PATHS.reasons[BUFFERED_READS]


# -- reading PUBLISH packets from the buffer, writing a batch's PUBACKs at once --------------

def _publish_packet(mid: int, payload: bytes) -> bytes:
    body = b"\x00\x05t/a/r" + mid.to_bytes(2, "big") + payload
    return bytes([0x32, len(body)]) + body  # PUBLISH, QoS 1, MQTT 3.1.1


def test_read_publishes_takes_whole_packets_and_leaves_the_rest_to_paho() -> None:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    c = mqtt_client.IngestClient(mqtt.CallbackAPIVersion.VERSION2, manual_ack=True)
    got: list[tuple[bytes, bytes, int, int]] = []
    c.deliver = lambda *m: got.append(m)  # type: ignore[assignment]
    c._sock = mqtt_socket.BufferedSocket(theirs)  # as if connected
    c._last_bytes_received = 0.0
    try:
        assert c.read_publishes(10) == 0  # nothing has arrived
        # two PUBLISH packets, a PINGRESP, the first bytes of a third PUBLISH
        ours.sendall(_publish_packet(1, b"one") + _publish_packet(2, b"two") + b"\xd0\x00"
                     + _publish_packet(3, b"three")[:4])
        assert c.read_publishes(10) == 2
        assert got == [(b"t/a/r", b"one", 1, 1), (b"t/a/r", b"two", 1, 2)]
        assert c._last_bytes_received > 0  # paho's keepalive clock saw the read
        assert c.read_publishes(10) == 0  # the PINGRESP is paho's, and what follows it
        assert c._sock.buffered() == 6
        assert c.read_publishes(1) == 0 and len(got) == 2
    finally:
        ours.close()
        theirs.close()


class _Wire:
    """A connected socket as paho writes to it: every ``send`` recorded."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(bytes(data))
        return len(data)

    def close(self) -> None:
        """paho closes its socket when the client is collected."""


def test_ack_many_writes_in_one_send_what_paho_writes_ack_by_ack() -> None:
    def connected() -> tuple[mqtt_client.IngestClient, _Wire]:
        c = mqtt_client.IngestClient(mqtt.CallbackAPIVersion.VERSION2, manual_ack=True)
        c._sock = wire = _Wire()  # type: ignore[assignment]
        return c, wire

    ours, wire = connected()
    assert ours.ack_many([1, 300, 65535])
    paho, paho_wire = connected()
    for mid in (1, 300, 65535):
        paho.ack(mid, 1)
    assert len(wire.sent) == 1 and len(paho_wire.sent) == 3
    assert wire.sent[0] == b"".join(paho_wire.sent)


def test_a_reshaped_packet_queue_turns_ack_batches_off(monkeypatch: pytest.MonkeyPatch) -> None:
    def reshaped(self: Any, command: int, packet: bytes, mid: int, qos: int, *,
                 priority: int) -> None:  # as if paho added a required argument
        raise AssertionError("not reached")

    monkeypatch.setattr(mqtt_client.IngestClient, "_packet_queue", reshaped)
    c = mqtt_client.IngestClient(mqtt.CallbackAPIVersion.VERSION2, manual_ack=True)
    assert not c.ack_many([1, 2])  # MqttSession.ack then uses paho's ack for each
    assert not FAST_PATHS.ack_batches
    assert "queueing PUBACKs" in FAST_PATHS.reasons[ACK_BATCHES]


# -- the agent with every path off, under kill -9 ------------------------------------------

#: ``edge-agent run`` in a process where paho reports a version nobody has checked
_UNCHECKED_PAHO = (
    "import sys, paho.mqtt; paho.mqtt.__version__ = '2.3.0'\n"
    "from edge_agent.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n")
DEVICES = 3
KILLS = 3


def test_the_agent_with_fast_paths_off_acks_only_what_is_durable(
        tmp_path: Path, mosquitto: Server) -> None:
    cfg, status_port = write_config(tmp_path, mosquitto.port,
                                    extra="[ingest]\ncommit_interval_ms = 5.0\n")
    agent = Server([sys.executable, "-c", _UNCHECKED_PAHO, "run", "--config", str(cfg)],
                   status_port, tmp_path / "agent.out", ready=lambda: agent_ready(status_port),
                   ready_timeout=60).start()
    doc = http_get(status_port, "/status").json()
    assert [f["on"] for f in doc["mqtt_fast_paths"]] == [False, False, False]
    assert "paho-mqtt 2.3.0 is not a checked version" in doc["mqtt_fast_paths"][0]["reason"]
    metrics = http_get(status_port, "/metrics").text
    for path in (BUFFERED_READS, PUBLISH_DECODE, ACK_BATCHES):
        assert f'edge_mqtt_fast_path{{path="{path}"}} 0.0' in metrics
    pubs = [Publisher(mosquitto.port, f"dev{i}") for i in range(DEVICES)]
    feeder = Feeder(pubs, pause_s=0.002).start()
    try:
        for pause in (0.4, 0.7, 0.3)[:KILLS]:
            time.sleep(pause)
            agent.kill()  # SIGKILL: what was PUBACKed must already be on disk
            agent.start()
        time.sleep(0.3)
    finally:
        total = feeder.stop()
    assert total > 50, "the feed was too slow to exercise anything"
    # Every reading once, in order, across the kills: nothing PUBACKed was lost (acked
    # only once durable), nothing redelivered was stored twice.
    check_every_reading_once(pubs, total, status_port, agent, tmp_path / "data", 60)
    text = (tmp_path / "agent.out").read_text()
    assert "Traceback" not in text
    assert "mqtt fast path publish_decode is off" in text
