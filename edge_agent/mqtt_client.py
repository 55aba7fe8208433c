"""The agent's paho client: buffered reads, PUBLISH packets handed over as plain values,
and the PUBACKs of a batch written at once.

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

Reading: paho takes the socket one packet per ``loop_read`` (three buffered ``recv``
calls, its packet dict, its dispatch). ``read_publishes`` does one ``recv`` into the
``mqtt_socket`` buffer itself when paho holds no part of a packet
(``_in_packet["command"] == 0``), sets paho's keepalive clock (``_last_bytes_received``
under ``_msgtime_mutex``, as paho's read does) and takes the whole plain PUBLISH packets
from the buffer (``deliver_buffered``). It stops at the first packet that is not a plain
PUBLISH, or not complete, and leaves it to paho's ``loop_read``, as it leaves EOF and
socket errors (paho reads the socket again and meets them itself).

PUBACKs: paho's ``Client.ack`` queues one packet (and, on our event loop, one write) per
message. ``ack_many`` queues the PUBACKs of a batch as one packet through paho's
``_packet_queue(command, packet, mid, qos)``, so a batch of readings costs one ``send``;
paho writes it like any packet (partial writes, its out queue, keepalive clock).

paho internals relied on (checked against paho-mqtt 2.2.0), beside those listed in
``mqtt_socket``: ``Client._handle_publish()`` (private) is called by ``_packet_handle``
for each PUBLISH with ``self._in_packet["command"]`` (the fixed header's first byte) and
``self._in_packet["packet"]`` (the bytes after the remaining length), and returns an
``MQTTErrorCode``; ``self._protocol`` and ``self._manual_ack`` hold the constructor's
arguments. tests/edge_agent/test_mqtt_client.py checks the split against paho's
``decode_publish`` and the client against a real Mosquitto.

``Client._in_packet``, ``_msgtime_mutex`` and ``_last_bytes_received`` as above (the
last two also for ``hold_keepalive``);
``Client._packet_queue`` (private, path ``ack_batches``) as above.

The guard (``mqtt_guard``): when the paho version is not one we checked or these
attributes are missing, the path ``publish_decode`` is off and every PUBLISH goes through
paho's ``_handle_publish`` (and ``on_message``); with ``ack_batches`` off every PUBACK
goes through ``Client.ack``. An exception while reading paho's state
or decoding turns the path off for the process and that PUBLISH, too, goes to paho's
method: a shape mismatch costs CPU, never a reconnect loop. ``deliver`` itself runs
outside that fallback (it is ours: a second delivery through paho would duplicate it).
"""

from __future__ import annotations

import contextlib
import ssl
import struct
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from mqttproto import split_publish

from .mqtt_guard import ACK_BATCHES, FAST_PATHS, PUBLISH_DECODE
from .mqtt_socket import BufferedSocket, BufferingClient

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

    def read_publishes(self, budget: int) -> int | None:
        """Deliver up to ``budget`` plain PUBLISH packets: those buffered, or else those of
        one ``recv``. None when paho must read now (path off, paho holds part of a
        packet, EOF or a socket error); 0 when nothing came or the next packet is paho's."""
        sock = self.socket()
        if self.deliver is None or not FAST_PATHS.publish_decode \
                or type(sock) is not BufferedSocket:
            return None
        if not sock.buffered():
            try:
                if self._in_packet["command"] != 0:
                    return None
                got = sock.fill()
            except (BlockingIOError, ssl.SSLWantReadError):
                return 0
            except Exception:  # a socket error, SSLWantWriteError, a reshaped paho: paho's
                return None
            if not got:
                return None
            try:
                with self._msgtime_mutex:
                    self._last_bytes_received = mqtt.time_func()
            except Exception as exc:
                FAST_PATHS.disable(PUBLISH_DECODE, f"setting paho's keepalive clock raised "
                                                   f"{type(exc).__name__}: {exc}")
        return self.deliver_buffered(budget)

    def deliver_buffered(self, budget: int) -> int:
        """Deliver up to ``budget`` whole plain PUBLISH packets already buffered; how many
        (0 when the path is off, the socket is not buffered or paho holds part of a
        packet)."""
        deliver = self.deliver
        sock = self.socket()
        if deliver is None or not FAST_PATHS.publish_decode or type(sock) is not BufferedSocket:
            return 0
        taken: list[tuple[bytes, bytes, int, int]] = []
        try:
            if self._in_packet["command"] != 0 or not self._manual_ack:
                return 0
            v5 = self._protocol == mqtt.MQTTv5
            buf, pos = sock.peek()
            size = len(buf)
            while len(taken) < budget and pos + 1 < size:
                command = buf[pos]
                qos = (command & 0x06) >> 1
                if command >> 4 != 3 or qos > 1:  # not a PUBLISH, or QoS 2: paho's
                    break
                length, shift, at = 0, 0, pos + 1
                while at < size and at - pos <= 4:
                    byte = buf[at]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    at += 1
                    if byte < 0x80:
                        break
                else:
                    break  # the length is cut short (or malformed: paho says so)
                end = at + length
                if end > size:
                    break  # the rest has not arrived: paho reads it
                parsed = split_publish(buf[at:end], qos, v5)
                if parsed is None or (not parsed[0] and not v5):
                    break
                taken.append((parsed[0], parsed[2], qos, parsed[1]))
                pos = end
            sock.skip_to(pos)
        except Exception as exc:  # paho's state is not what we read: use paho from now on
            FAST_PATHS.disable(PUBLISH_DECODE, f"reading buffered PUBLISH packets raised "
                                               f"{type(exc).__name__}: {exc}")
            return 0  # nothing was consumed: paho reads these packets
        for topic, payload, qos, mid in taken:
            deliver(topic, payload, qos, mid)
        return len(taken)

    def hold_keepalive(self) -> None:
        """Set paho's keep-alive clock of bytes received to now, as a read does. For a
        session that stops reading at its Receive Maximum (``mqtt_flow``): the PINGRESP
        waits unread behind the PUBLISHes, and paho would drop a live connection as dead.
        Without the attribute (a reshaped paho) nothing is set: the connection is then
        dropped after about twice the keep-alive and the session reconnects."""
        with contextlib.suppress(AttributeError), self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()

    def ack_many(self, mids: list[int]) -> bool:
        """Queue the PUBACKs of ``mids`` as one packet; False when the path is off (the
        caller then uses ``ack`` for each)."""
        if not FAST_PATHS.ack_batches or not mids:
            return False
        packet = b"".join([_PUBACK.pack(0x40, 2, mid) for mid in mids])
        try:
            self._packet_queue(mqtt.PUBACK, packet, 0, 0)
        except TypeError as exc:  # the signature changed: nothing was queued
            FAST_PATHS.disable(ACK_BATCHES, f"queueing PUBACKs raised {exc}")
            return False
        return True


_PUBACK = struct.Struct("!BBH")
