"""paho-mqtt's own encoder and decoder, reached through its public client and properties.

``PahoPeer`` connects a real paho ``Client`` to a loopback socket whose other end the test
holds: what paho writes there is paho's encoding (read back with ``packet``), and what the
test writes there is decoded by paho's reader (``pump`` runs ``loop_read``). Properties
convert with paho's public ``Properties`` class (``to_paho``/``from_paho``).
"""

from __future__ import annotations

import select
import socket
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import mqttproto as m

DEADLINE_S = 5.0
#: our packet types -> paho's (0 is a will's properties)
PAHO_TYPES = {0: PacketTypes.WILLMESSAGE, **{t: t for t in range(1, 16)}}


def _paho_name(pid: int) -> str:
    return m.Property(pid).name.title().replace("_", "").replace("Qos", "QoS")


def to_paho(props: dict[int, Any], packet_type: int) -> Properties | None:
    if not props:
        return None
    out = Properties(PAHO_TYPES[packet_type])
    for pid, value in props.items():
        name = _paho_name(pid)
        for item in value if isinstance(value, list) else [value]:
            setattr(out, name, item)  # paho appends to the repeatable ones
    return out


def from_paho(props: Properties | None, packet_type: int) -> dict[int, Any]:
    out: dict[int, Any] = {}
    if props is None:
        return out
    for pid in sorted(int(p) for p in m.Property):
        name = _paho_name(pid)
        if hasattr(props, name):
            value = getattr(props, name)
            if pid == m.Property.SUBSCRIPTION_IDENTIFIER and packet_type != 3:
                (value,) = value  # paho keeps a list; only PUBLISH may repeat it
            elif isinstance(value, list):
                value = list(value)
            out[m.Property(pid)] = value
    return out


class PahoPeer:
    """A connected paho client and the raw server end of its socket."""

    def __init__(self, connect: m.Connect) -> None:
        v5 = connect.protocol_level == m.V5
        self.version = connect.protocol_level
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=connect.client_id,
            clean_session=None if v5 else connect.clean_start,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311, manual_ack=True)
        self.received: list[Any] = []
        self.client.on_message = lambda c, u, msg: self.received.append(msg)
        if connect.username is not None:
            self.client.username_pw_set(connect.username, connect.password)
        if connect.will is not None:
            w = connect.will
            self.client.will_set(w.topic, w.payload, w.qos, w.retain,
                                 to_paho(w.properties, 0))
        self.reader = m.PacketReader()
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.settimeout(DEADLINE_S)
            port = listener.getsockname()[1]
            kwargs: dict[str, Any] = {}
            if v5:
                kwargs = {"clean_start": connect.clean_start,
                          "properties": to_paho(connect.properties, 1)}
            self.client.connect("127.0.0.1", port, connect.keepalive, **kwargs)
            self.server, _ = listener.accept()
        self.server.settimeout(DEADLINE_S)

    def packet(self) -> tuple[bytes, Any]:
        """The next packet paho wrote: (its bytes, what mqttproto decodes them to)."""
        deadline = time.monotonic() + DEADLINE_S
        raw = b""
        while time.monotonic() < deadline:
            byte = self.server.recv(1)
            assert byte, "paho closed the connection"
            raw += byte
            got = self.reader.feed(byte)
            if got:
                return raw, got[0]
        raise AssertionError("paho wrote no complete packet in time")

    def send(self, data: bytes) -> None:
        self.server.sendall(data)

    def pump(self, until: Any) -> None:
        """Let paho read what was sent until ``until()`` is true (or fail at the deadline)."""
        deadline = time.monotonic() + DEADLINE_S
        while not until():
            assert time.monotonic() < deadline, "paho did not get there in time"
            select.select([self.client.socket()], [], [], 0.1)
            rc = self.client.loop_read()
            assert rc == mqtt.MQTT_ERR_SUCCESS, rc

    def reply(self) -> tuple[bytes, Any]:
        """Let paho read what was sent until it writes a packet; that packet."""
        self.pump(lambda: select.select([self.server], [], [], 0)[0])
        return self.packet()

    def connack(self) -> None:
        connected: list[bool] = []
        self.client.on_connect = lambda *a: connected.append(True)
        self.send(m.encode(m.Connack(), self.version))
        self.pump(lambda: connected)

    def close(self) -> None:
        self.server.close()
        self.client.socket() and self.client.socket().close()
