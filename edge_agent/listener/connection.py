"""One device connection: MQTT packets in, CONNACK/PUBACK/PINGRESP/DISCONNECT out.

Strategy: an ``asyncio.Protocol`` (10,000 devices are 10,000 of these, no stream reader
each) around ``mqttproto.PacketReader`` (PUBLISH as a tuple), which refuses a malformed or
oversized packet before buffering it. Any ``MqttProtocolError`` ends the connection
cleanly (DISCONNECT with its reason in MQTT 5, a plain close in 3.1.1); nothing raises out
of ``data_received``, and a read is handled 16 KiB per loop turn. States: *connecting*
(only CONNECT, within ``connect_timeout_s`` of the socket opening, TLS included),
*authenticating* (the CONNECT checked off the loop, the session recorded; reading paused,
later packets wait), *connected*. That way in, and the timers, are ``handshake.Handshake``.

A QoS 1 PUBLISH enters ``inflight`` (packet id -> PUBACK reason, None until durable) and
goes to the pipeline with this connection's number; the pipeline calls ``settle`` once
the group commit covers it. PUBACKs leave in PUBLISH order (MQTT 4.6), so one also means
every earlier reading of the connection is durable; those a commit releases leave in one
write. When every connection that has published at QoS 1 waits for a PUBACK, the commit
starts at once (``Listener.hurry``; docs/edge-agent.md "When the commit starts"). Flow
control: a v5 client is told ``receive_maximum`` (exceeding it: 0x93); a 3.1.1 client is
not read from while it has that many waiting, nor is any client while the pipeline's
inbox is over its bound. A full log thus reaches devices as withheld PUBACKs, then TCP
back-pressure.

Refusals (table in docs/edge-agent.md): QoS 2 (0x9B), topic aliases (0x94), a PUBLISH
the ACL forbids (PUBACK 0x87 in MQTT 5; 3.1.1 cannot refuse in a PUBACK, so the connection
is closed), SUBSCRIBE (SUBACK 0x87 / 0x80). Not thread-safe: the listener's loop only.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections import deque
from typing import Any

from mqttproto import (
    V5,
    Connack,
    Connect,
    Disconnect,
    MqttProtocolError,
    PacketReader,
    Pingreq,
    Puback,
    PublishFields,
    Pubrel,
    ReasonCode,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    encode,
)
from mqttproto import Property as P

from ..inbox import Inbox
from .auth import may_publish
from .handshake import AUTHENTICATING, CLOSED, CONNECTED, CONNECTING, Handshake
from .rules import session_expiry
from .stats import Host, reason_label

_PUBACK = struct.Struct("!BBH").pack  # 0x40, 2, packet id: a success PUBACK in 3.1.1 and 5
_PINGRESP = b"\xd0\x00"
_SLICE = 16 * 1024  # bytes handled per event-loop turn (about 0.5k small PUBLISHes)
_UNSEEN = object()  # a topic not in Connection._routes yet
#: DISCONNECT reasons that CONNACK may not carry, and what a CONNACK says instead
_CONNACK_INSTEAD = {ReasonCode.SESSION_TAKEN_OVER: ReasonCode.SERVER_UNAVAILABLE,
                    ReasonCode.SERVER_SHUTTING_DOWN: ReasonCode.SERVER_UNAVAILABLE}


class Connection(Handshake, asyncio.Protocol):
    def __init__(self, server: Host, number: int) -> None:
        self.server = server
        self.number = number  # the "epoch" the pipeline hands back with each PUBACK
        self.reader = PacketReader(server.cfg.max_packet_size, fields=True)
        self._rmax = server.cfg.receive_maximum
        self.state = CONNECTING
        self.version = 4
        self.client_id = ""
        self.acl: tuple[str, ...] = ()
        #: topic -> the inbox its readings go to (None: the ACL forbids it), see _route
        self._routes: dict[str, Inbox | None] = {}
        self.keepalive = self.expiry_s = 0
        self.will: Any = None
        self.inflight: dict[int, int | None] = {}
        self._order: deque[int] = deque()  # inflight's packet ids in PUBLISH order
        self.publisher = self.waiting = False  # for the commit rule: Listener.now_waiting
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.last_rx = time.monotonic()
        self.paused = False
        self._queued: list[Any] = []  # packets that came while authenticating
        self._rest = b""  # received bytes not yet handled (see _consume)
        self._timer: asyncio.TimerHandle | None = None
        self._send_will = True  # until a normal DISCONNECT
        self.attached = False  # holds its session (detached when the socket closes)

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        transport.set_write_buffer_limits(high=self.server.cfg.max_buffered_bytes)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.server.cfg.connect_timeout_s, self._connect_timeout)

    def data_received(self, data: bytes) -> None:
        if self.state == CLOSED:
            return
        self.last_rx = time.monotonic()
        if self._rest:  # still working through an earlier read (reading is paused)
            self._rest += data
        elif len(data) <= _SLICE:  # the usual case: a device's few packets
            self._process(data)
            if self.paused or self.server.congested or len(self.inflight) >= self._rmax:
                self.flow()  # else it would find nothing to do
        else:
            self._consume(data)

    def _consume(self, data: bytes | None = None) -> None:
        """Handle ``data`` (or what is left) a slice per loop turn, never ms at once."""
        if data is None:
            data = self._rest if self.state != CLOSED else b""
        self._rest = b""
        while data and self.state != CLOSED:
            chunk, data = data[:_SLICE], data[_SLICE:]
            self._process(chunk)
            if data and self.state != CLOSED:
                self._rest = data
                self._pause()
                asyncio.get_running_loop().call_soon(self._consume)
                return
        self.flow()

    def _process(self, data: bytes) -> None:
        try:
            packets = self.reader.feed(data)
        except MqttProtocolError as exc:
            self.server.stats.malformed += 1
            self.fail(exc.reason_code, exc.message)
            return
        if self.state != CONNECTED:
            self._handle_all(packets)
            return
        publish = self._publish
        for p in packets:  # the usual case: PUBLISHes, straight to _publish
            try:
                if type(p) is tuple:
                    publish(p)
                else:
                    self._handle(p)
            except MqttProtocolError as exc:
                self.fail(exc.reason_code, exc.message)
            if self.state == CLOSED:
                return

    def _handle_all(self, packets: list[Any]) -> None:
        for i, p in enumerate(packets):
            if self.state == AUTHENTICATING:
                self._queued.extend(packets[i:])
                return
            try:
                self._handle(p)
            except MqttProtocolError as exc:
                self.fail(exc.reason_code, exc.message)
            if self.state == CLOSED:
                return

    def pause_writing(self) -> None:  # the device does not read its PUBACKs
        self.fail(ReasonCode.QUOTA_EXCEEDED, "the client does not read what it is sent")

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = CLOSED
        if self._timer is not None:
            self._timer.cancel()
        self.server.forget(self)
        if self.attached:
            self.server.sessions.detach(self.client_id, self, None)
            if self.will is not None and self._send_will:
                self.server.will_later(self.client_id, self.will, self.expiry_s)

    def _handle(self, p: Any) -> None:
        if self.state == CONNECTING:
            if type(p) is not Connect:
                raise MqttProtocolError(ReasonCode.PROTOCOL_ERROR, "first packet not CONNECT")
            self.state = AUTHENTICATING
            self._pause()
            self.server.spawn(self._connect(p))
            return
        t = type(p)
        if t is tuple:  # a PUBLISH, as PublishFields
            self._publish(p)
        elif t is Pingreq:
            self._write(_PINGRESP)
        elif t is Disconnect:
            self._disconnect(p)
        elif t is Subscribe:  # devices here publish only (docs/edge-agent.md)
            code = ReasonCode.NOT_AUTHORIZED if self.version == V5 else 0x80
            self._send(Suback(p.packet_id, tuple(code for _ in p.subscriptions)))
        elif t is Unsubscribe:
            codes = tuple(ReasonCode.NO_SUBSCRIPTION_EXISTED for _ in p.topic_filters)
            self._send(Unsuback(p.packet_id, codes if self.version == V5 else ()))
        elif t is Pubrel:  # only after a QoS 2 PUBLISH, which is refused
            raise MqttProtocolError(ReasonCode.PROTOCOL_ERROR, "PUBREL without QoS 2")
        elif t is Connect:
            raise MqttProtocolError(ReasonCode.PROTOCOL_ERROR, "a second CONNECT")
        else:  # CONNACK, PUBACK, SUBACK...: server-to-client packets, or AUTH
            raise MqttProtocolError(ReasonCode.PROTOCOL_ERROR,
                                    f"unexpected {t.__name__.upper()} from a client")

    def _publish(self, p: PublishFields) -> None:
        topic, payload, qos, pid, props, _first = p
        if qos == 2:
            raise MqttProtocolError(ReasonCode.QOS_NOT_SUPPORTED, "QoS 2 is not supported")
        if props and P.TOPIC_ALIAS in props:
            raise MqttProtocolError(ReasonCode.TOPIC_ALIAS_INVALID, "topic aliases are off")
        server = self.server
        server.stats.publishes += 1
        inbox = self._routes.get(topic, _UNSEEN)
        if inbox is _UNSEEN:
            inbox = self._route(topic)
        if inbox is None:
            server.stats.acl_denied += 1
            if self.version != V5:  # no way to refuse in a 3.1.1 PUBACK: never fake one
                self.fail(ReasonCode.NOT_AUTHORIZED, f"may not publish to {topic[:200]!r}")
            elif qos:
                self._queue_ack(pid, ReasonCode.NOT_AUTHORIZED)
            return
        if qos:
            inflight = self.inflight
            if pid in inflight:
                return  # a resend of a reading still in flight: its PUBACK answers both
            if len(inflight) >= self._rmax and self.version == V5:
                raise MqttProtocolError(ReasonCode.RECEIVE_MAXIMUM_EXCEEDED,
                                        "more unacknowledged QoS 1 readings than allowed")
            inflight[pid] = None
            self._order.append(pid)
            inbox.submit((topic, payload, 1, pid, self.number))
            if not self.waiting:
                server.now_waiting(self)
            if server.waiting >= server.publishers:
                server.hurry()
        else:
            inbox.submit((topic, payload, 0, 0, self.number))
        if len(inbox.messages) > server.inbox_high:
            server.congested = True  # cleared by the listener's poll (wait_for_room)

    def _route(self, topic: str) -> Inbox | None:
        """The inbox of ``topic``'s stream, None if the ACL forbids it; asked once per
        topic (a device publishes to a few), so a reading costs one dict lookup here."""
        if len(self._routes) >= 64:
            self._routes.clear()
        inbox = self.server.inbox_for(topic) if may_publish(self.acl, topic) else None
        self._routes[topic] = inbox
        return inbox

    def _queue_ack(self, pid: int, reason: int) -> None:
        if pid not in self.inflight:
            self.inflight[pid] = reason
            self._order.append(pid)
            self.release()

    def _disconnect(self, p: Disconnect) -> None:
        if p.reason_code != ReasonCode.DISCONNECT_WITH_WILL_MESSAGE:
            self._send_will = False
        new_expiry = p.properties.get(P.SESSION_EXPIRY_INTERVAL) if p.properties else None
        if new_expiry is not None:
            if self.expiry_s == 0 and new_expiry:  # spec 3.14.2.2.2
                raise MqttProtocolError(ReasonCode.PROTOCOL_ERROR,
                                        "session expiry set on DISCONNECT after 0")
            self.expiry_s = session_expiry(new_expiry, self.server.cfg.session_expiry_max_s)
            self.server.sessions.detach(self.client_id, self, self.expiry_s)
        self.server.stats.disconnects["client"] += 1
        self._close()

    def settle(self, pid: int) -> bool:
        """The pipeline made reading ``pid`` durable; True when ``release`` is due."""
        inflight = self.inflight
        if inflight.get(pid, 0) is None:
            inflight[pid] = 0
            return self._order[0] == pid
        return False

    def release(self) -> None:
        """Send the PUBACKs whose readings, and every earlier one, are settled."""
        inflight, order = self.inflight, self._order
        out = []
        while order:
            reason = inflight[order[0]]
            if reason is None:
                break
            pid = order.popleft()
            del inflight[pid]
            out.append(_PUBACK(0x40, 2, pid) if reason == 0 or self.version != V5
                       else encode(Puback(pid, reason), V5))
        if not out:
            return
        self.server.stats.pubacks += len(out)
        self._write(b"".join(out) if len(out) > 1 else out[0])
        if self.paused and self.state == CONNECTED:
            self.flow()

    def flow(self) -> None:
        """Pause reading while this client or the pipeline has too much waiting."""
        if self.state != CONNECTED or self._rest:
            return  # _consume calls again once the rest is handled
        full = len(self.inflight) >= self._rmax
        if full or self.server.congested:
            if not full:
                self.server.wait_for_room(self)
            self._pause()
        elif self.paused:
            self.paused = False
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    def _pause(self) -> None:
        if not self.paused and self.transport is not None and not self.transport.is_closing():
            self.paused = True
            self.transport.pause_reading()

    def fail(self, reason: int, message: str) -> None:
        """End the connection for ``reason``: a refusing CONNACK while connecting, a
        DISCONNECT in MQTT 5 once connected (3.1.1 has none: a plain close)."""
        if self.state == CLOSED:
            return
        if reason != ReasonCode.SESSION_TAKEN_OVER:
            self.server.stats.disconnects[reason_label(reason)] += 1
            if message:
                self.server.note(f"{self.peer} ({self.client_id or 'no client id'}): "
                                 f"{message}")
        if self.state == AUTHENTICATING:  # taken over or stopping: no CONNACK code of its own
            self._send(Connack(False, _CONNACK_INSTEAD.get(reason, reason)))
        elif self.state == CONNECTING:
            if reason == ReasonCode.UNSUPPORTED_PROTOCOL_VERSION:  # 3.1.1's return code 1
                self._write(encode(Connack(False, reason), 4))
        elif self.version == V5:
            self._send(Disconnect(reason))
        self._close()

    def _close(self) -> None:
        self.state = CLOSED
        if self.transport is not None:
            self.transport.close()

    def _send(self, packet: Any) -> None:
        self._write(encode(packet, self.version))

    def _write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(data)

