"""The agent's paho client: buffered reads, and PUBLISH packets handed over as plain values.

Why: for every PUBLISH, paho 2.x builds an MQTT v5 ``Properties`` object (two dicts of
some thirty entries each, filled and cleared attribute by attribute), an
``MQTTMessage``, formats a debug log call, and matches the topic against the
per-filter callbacks under two locks: together more CPU than everything the agent
does with a reading (bench/edge_ingest.py). ``IngestClient._handle_publish`` decodes
the common case itself with the project's codec (``mqttproto.split_publish``) - QoS 0
or 1, no v5 properties, manual acks - and calls
``deliver(topic, payload, qos, mid)``; anything else (properties present, QoS 2, a
packet it cannot parse) goes through paho's own ``_handle_publish``, which also raises
paho's errors for malformed packets. PUBACKs stay paho's (``Client.ack``), as do
connect, subscribe, keepalive and every other packet.

paho internals relied on (checked against paho-mqtt 2.2.0), beside those listed in
``mqtt_socket``: ``Client._handle_publish()`` (private) is called by ``_packet_handle``
for each PUBLISH with ``self._in_packet["command"]`` (the fixed header's first byte) and
``self._in_packet["packet"]`` (the bytes after the remaining length), and returns an
``MQTTErrorCode``; ``self._protocol`` and ``self._manual_ack`` hold the constructor's
arguments. tests/edge_agent/test_mqtt_client.py checks the split against paho's
``decode_publish`` and the client against a real Mosquitto.

The guard (``mqtt_guard``): when the paho version is not one we checked or these
attributes are missing, the path ``publish_decode`` is off and every PUBLISH goes through
paho's ``_handle_publish`` (and ``on_message``). An exception while reading paho's state
or decoding turns the path off for the process and that PUBLISH, too, goes to paho's
method: a shape mismatch costs CPU, never a reconnect loop. ``deliver`` itself runs
outside that fallback (it is ours: a second delivery through paho would duplicate it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from mqttproto import split_publish

from .mqtt_guard import FAST_PATHS, PUBLISH_DECODE
from .mqtt_socket import BufferingClient

#: (topic bytes, payload, qos, packet id)
PublishCallback = Callable[[bytes, bytes, int, int], None]


class IngestClient(BufferingClient):
    """A ``BufferingClient`` that hands plain PUBLISH packets to ``deliver``."""

    deliver: PublishCallback | None = None

    def _handle_publish(self) -> Any:
        deliver = self.deliver
        if deliver is None or not FAST_PATHS.publish_decode:
            return super()._handle_publish()
        try:
            command = self._in_packet["command"]
            qos = (command & 0x06) >> 1
            if qos == 2 or not self._manual_ack:
                parsed = None
            else:
                v5 = self._protocol == mqtt.MQTTv5
                parsed = split_publish(bytes(self._in_packet["packet"]),  # paho's: bytearray
                                       qos, v5)
                if parsed is not None and not parsed[0] and not v5:
                    parsed = None  # an empty topic is legal only in v5: paho refuses it
        except Exception as exc:  # paho's state is not what we read: use paho from now on
            FAST_PATHS.disable(PUBLISH_DECODE, f"decoding a PUBLISH raised "
                                               f"{type(exc).__name__}: {exc}")
            parsed = None
        if parsed is None:  # properties, QoS 2, malformed: paho decides
            return super()._handle_publish()
        topic, mid, payload = parsed
        deliver(topic, payload, qos, mid)
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
