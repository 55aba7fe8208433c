"""The MQTT adapter: one asyncio connection publishing for one device (or a gateway).

Why not paho-mqtt: the simulator must hold 10,000 connections and publish
50,000 messages/s on a 2-core machine that also runs Mosquitto.  Measured on
that machine (bench/simulator_scale.py prints the comparison in every run; see
docs/benchmarks.md), paho 2.x driven by an asyncio loop through its
external-loop callbacks costs ~27 us of CPU per QoS 0 message with a JSON
payload (an MQTTMessageInfo and a packet dict per publish, its locks, one
``send`` per packet); this adapter costs ~11 us for the same work.  The sensor
models and the rest of a reading take ~10 us more and Mosquitto ~6 us, so with
paho the 2 cores would top out near 45k msg/s with nothing else running, below
the target; with this adapter the bench reached ~59k msg/s on 10,000
connections when the shared machine was quiet.  aiomqtt adds a future per
publish on top of paho.  A publisher needs little of MQTT (CONNECT, PUBLISH,
PINGREQ, DISCONNECT out; CONNACK, PUBACK, PINGRESP in); the protocol is the
project's sans-IO codec ``mqttproto`` (its precomputed-topic ``publish_frame`` is the
hot path) and this module is only the asyncio side.

Strategy: ``MqttConnection`` is an ``asyncio.Protocol``.  Writes are corked:
``publish`` appends the frame to a list and registers the connection in a
shared ``dirty`` list; the scheduler flushes every dirty connection once per
batch, so a gateway sends many messages per ``send`` syscall.  QoS 1 keeps up to
``max_inflight`` unacknowledged frames; beyond that, while paused by the
transport, or while disconnected, messages wait in ``pending`` (bounded by
``max_pending``: the device's offline buffer).  After a lost connection it
reconnects with backoff and resends its unacknowledged frames with DUP set,
then the pending ones, in order.

Each queued message carries an opaque ``tag`` (the runner uses (device, seq));
``unconfirmed()`` returns the tags never acknowledged, for the manifest.
Not thread-safe: one event loop drives every connection of a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import mqttproto
from mqttproto import Connack, Connect, PacketReader, Puback

#: the largest packet taken from a broker: a publisher only receives small acks
MAX_RECEIVED_PACKET = 65536


class MqttError(Exception):
    """Base of the adapter's errors."""


class MqttConnectError(MqttError):
    """The broker could not be reached or refused the connection."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where to connect: parsed from ``mqtt://[user:pass@]host[:port]`` or ``mqtts://``."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
        tls = parts.scheme in ("mqtts", "ssl")
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError as exc:
            raise ValueError(f"broker URL {url!r}: {exc}") from exc
        if not parts.hostname:
            raise ValueError(f"broker URL {url!r} has no host")
        return cls(parts.hostname, port, tls,
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None)

    def redacted(self) -> str:
        """The URL without the password (for manifests and logs)."""
        user = f"{self.username}:***@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    address: BrokerAddress
    ssl_context: ssl.SSLContext | None = None
    keepalive: int = 60
    clean_session: bool = True
    version: int = mqttproto.V311
    max_inflight: int = 100
    max_pending: int = 1000
    connect_timeout: float = 15.0
    reconnect_max_s: float = 10.0


def make_ssl_context(ca_file: str | None, insecure: bool = False) -> ssl.SSLContext:
    """A client TLS context trusting ``ca_file`` (or the system store)."""
    ctx = ssl.create_default_context(cafile=ca_file)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class MqttConnection(asyncio.Protocol):
    """One MQTT client connection that publishes; see the module docstring."""

    def __init__(self, client_id: str, options: ConnectOptions, dirty: list[MqttConnection],
                 on_rejected: Callable[[Any, int], None] | None = None) -> None:
        self.client_id = client_id
        self.options = options
        self._dirty = dirty
        self._on_rejected = on_rejected
        password = options.address.password
        self._connect_packet = mqttproto.encode(Connect(
            options.version, client_id, options.clean_session, options.keepalive,
            options.address.username, password.encode() if password is not None else None),
            options.version)
        self._transport: asyncio.Transport | None = None
        self._reader = PacketReader(MAX_RECEIVED_PACKET, options.version)
        self._connack: asyncio.Future[Connack] | None = None
        self._lost: asyncio.Future[None] | None = None
        self._out: list[bytes] = []
        self._paused = False
        self._next_id = 0
        self._max_inflight = options.max_inflight
        self._keepalive = options.keepalive
        self.inflight: dict[int, tuple[bytes, Any]] = {}
        self.pending: deque[tuple[bytes, int, Any]] = deque()
        self.connected = False
        self.closing = False
        self.last_write = 0.0
        self._reconnect_task: asyncio.Task[None] | None = None
        # counters read by the runner
        self.sent = 0
        self.acked = 0
        self.rejected = 0
        self.reconnects = 0
        self.connection_errors = 0
        self.last_error = ""

    # -- connecting ---------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection and wait for CONNACK; raises MqttConnectError."""
        loop = asyncio.get_running_loop()
        addr = self.options.address
        self._connack = loop.create_future()
        self._lost = loop.create_future()
        try:
            async with asyncio.timeout(self.options.connect_timeout):
                await loop.create_connection(
                    lambda: self, addr.host, addr.port, ssl=self.options.ssl_context,
                    server_hostname=addr.host if self.options.ssl_context else None)
                connack = await self._connack
        except (OSError, TimeoutError, ssl.SSLError, mqttproto.MqttProtocolError) as exc:
            self._abort_transport()
            self.connection_errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise MqttConnectError(f"{self.client_id}: {self.last_error}") from exc
        if not connack.accepted:
            self._abort_transport()
            self.connection_errors += 1
            self.last_error = f"refused: {connack.reason_text}"
            raise MqttConnectError(f"{self.client_id}: connection {self.last_error}")
        # MQTT 5: never exceed the broker's receive maximum (Mosquitto's default is 20)
        # and ping at the keepalive it imposes.
        self._max_inflight = min(self.options.max_inflight,
                                 connack.receive_maximum or self.options.max_inflight)
        if connack.server_keepalive is not None:
            self._keepalive = connack.server_keepalive or 0
        self.connected = True
        self.last_write = time.monotonic()
        # Resend what the broker never acknowledged, in order, flagged DUP.
        for pid in sorted(self.inflight):
            frame, _tag = self.inflight[pid]
            self._write(mqttproto.with_dup(frame))
        self._fill_inflight()
        self.flush()

    def _abort_transport(self) -> None:
        if self._transport is not None:
            self._transport.abort()
            self._transport = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        # no bytes of an old connection
        self._reader = PacketReader(MAX_RECEIVED_PACKET, self.options.version)
        self._paused = False
        transport.write(self._connect_packet)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        was_connected = self.connected
        self.connected = False
        self._transport = None
        self._out.clear()
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(ConnectionError("connection closed before CONNACK"))
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        if was_connected and not self.closing:
            self.last_error = f"connection lost: {exc}" if exc else "connection closed by broker"
            self.schedule_reconnect(0.1)

    def drop(self, offline_s: float) -> None:
        """Fault injection: cut the TCP connection (no DISCONNECT), come back later."""
        if not self.connected or self._transport is None:
            return
        self.connected = False
        self._transport.abort()
        self.schedule_reconnect(offline_s)

    def schedule_reconnect(self, delay: float) -> None:
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect(delay))

    async def _reconnect(self, delay: float) -> None:
        backoff = 0.5
        while not self.closing:
            await asyncio.sleep(delay)
            if self.closing:
                return
            try:
                await self.connect()
            except MqttConnectError:
                delay = backoff
                backoff = min(backoff * 2, self.options.reconnect_max_s)
                continue
            self.reconnects += 1
            return

    # -- receiving ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        try:
            self._handle(self._reader.feed(data))
        except mqttproto.MqttProtocolError as exc:
            # A broker speaking nonsense: drop the connection (and reconnect if we were up).
            self.last_error = f"protocol error: {exc}"
            if self._connack is not None and not self._connack.done():
                self._connack.set_exception(exc)
            if self._transport is not None:
                self._transport.abort()
            return
        if self.pending and self.connected:
            self._fill_inflight()
        self.flush()

    def _handle(self, packets: list[mqttproto.Packet]) -> None:
        for packet in packets:
            if type(packet) is Puback:
                entry = self.inflight.pop(packet.packet_id, None)
                if entry is None:
                    continue
                reason = packet.reason_code
                if reason >= 0x80:
                    self.rejected += 1
                    if self._on_rejected is not None:
                        self._on_rejected(entry[1], reason)
                else:
                    self.acked += 1
            elif (type(packet) is Connack and self._connack is not None
                  and not self._connack.done()):
                self._connack.set_result(packet)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self.connected:
            self._fill_inflight()
            self.flush()

    # -- sending ------------------------------------------------------------------------

    @property
    def congested(self) -> bool:
        """Connected but unable to take more: the device should skip this reading."""
        return self.connected and len(self.pending) >= self.options.max_pending

    def publish(self, topic: bytes, payload: bytes, qos: int, tag: Any = None) -> bool:
        """Queue one message; False when the offline buffer is full (the message is dropped)."""
        if (self.connected and not self._paused and not self.pending
                and (qos == 0 or len(self.inflight) < self._max_inflight)):
            self._send_publish(topic, payload, qos, tag)
            return True
        if len(self.pending) >= self.options.max_pending:
            return False
        self.pending.append((topic, qos, (payload, tag)))
        return True

    def _send_publish(self, topic: bytes, payload: bytes, qos: int, tag: Any) -> None:
        if qos:
            pid = self._next_packet_id()
            frame = mqttproto.publish_frame(topic, payload, qos, pid, self.options.version)
            self.inflight[pid] = (frame, tag)
        else:
            frame = mqttproto.publish_frame(topic, payload, 0, 0, self.options.version)
        self._write(frame)
        self.sent += 1

    def _next_packet_id(self) -> int:
        pid = self._next_id
        inflight = self.inflight
        while True:
            pid = pid % 65535 + 1
            if pid not in inflight:
                self._next_id = pid
                return pid

    def _fill_inflight(self) -> None:
        pending = self.pending
        limit = self._max_inflight
        while pending and not self._paused:
            topic, qos, (payload, tag) = pending[0]
            if qos and len(self.inflight) >= limit:
                return
            pending.popleft()
            self._send_publish(topic, payload, qos, tag)

    def _write(self, frame: bytes) -> None:
        if not self._out:
            self._dirty.append(self)
        self._out.append(frame)

    def flush(self) -> None:
        """Write the corked frames (one syscall for all of them)."""
        if not self._out:
            return
        transport = self._transport
        if transport is not None and not transport.is_closing():
            out = self._out
            transport.write(out[0] if len(out) == 1 else b"".join(out))
            self.last_write = time.monotonic()
        self._out = []

    def keepalive(self, now: float) -> None:
        """Send PINGREQ when nothing was written for half the keepalive interval."""
        if self.connected and self._keepalive and now - self.last_write > self._keepalive / 2:
            self._write(mqttproto.PINGREQ_PACKET)
            self.flush()

    # -- closing ------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """Nothing waits for the broker: no pending messages, no unacknowledged ones."""
        if self.pending or self.inflight or self._out:
            return False
        transport = self._transport
        return transport is None or transport.get_write_buffer_size() == 0

    async def close(self, drain_timeout: float) -> None:
        """Wait up to ``drain_timeout`` for acks, then DISCONNECT and close."""
        deadline = time.monotonic() + drain_timeout
        while not self.idle and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.closing = True
        if self._reconnect_task is not None and not self._reconnect_task.done():
            self._reconnect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect_task
        transport = self._transport
        if transport is None:
            return
        if self.connected:
            self.connected = False
            self._write(mqttproto.DISCONNECT_PACKET)
            self.flush()
        # Let the broker close first so TIME_WAIT lands on its side, not on our ports.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await asyncio.shield(self._lost)  # type: ignore[arg-type]
        if self._transport is not None:
            self._transport.close()

    def unconfirmed(self) -> list[Any]:
        """Tags of messages never acknowledged (QoS 1) or never written (pending)."""
        tags = [tag for _frame, tag in self.inflight.values()]
        tags.extend(tag for _t, _q, (_p, tag) in self.pending)
        return [t for t in tags if t is not None]
