"""The MQTT adapter: one persistent MQTT v5 session on paho-mqtt 2.x, driven by asyncio.

Strategy: paho's client does the protocol; this module only drives its socket from the
event loop (paho's ``on_socket_*`` hooks, as in paho's asyncio example and aiomqtt), hands
every PUBLISH to a callback, and sends PUBACKs when told to. Nothing else lives here.

Why paho directly and not aiomqtt (as of aiomqtt 2.5.1 on paho-mqtt 2.2.0): aiomqtt does
not expose manual acknowledgement (``manual_ack=True`` / ``Client.ack``; empicano/aiomqtt
issue #345, PR #346 open; its workaround reaches into the private ``client._client``),
and ack-after-durable is the one thing this adapter must do. Its ``Message`` drops the
DUP flag, a bounded queue *discards* messages (a discarded QoS 1 message stays in flight
until a reconnect), and it reads one packet per readable event (bench/edge_ingest.py).

The client is ``mqtt_client.IngestClient``, a paho ``Client`` with speed-ups resting on
private paho methods (listed, with why, in ``mqtt_socket`` and ``mqtt_client``) and
guarded (``mqtt_guard``: off, with a log line and ``edge_mqtt_fast_path{path} 0``, when
paho is not a checked version or has changed): reads through ``BufferedSocket`` (one
``recv`` per burst), plain PUBLISH packets decoded without paho's per-message objects
(others come through paho's ``on_message``), a batch's PUBACKs as one write. Bytes the
socket has buffered raise no readable event, so a drain that stops with bytes still
buffered (after ``_DRAIN_PACKETS``, or at a packet left to paho) schedules the next one.
The socket is watched for writability only when a write did not complete.

The session: fixed client id, clean start off and a session expiry interval, so Mosquitto
keeps the subscriptions and queues QoS 1 readings while the agent is down or restarting;
``Receive Maximum`` bounds how many unacknowledged messages it sends at once (the
back-pressure window); Mosquitto does not hold a resumed session to it, so the session
enforces it itself (``mqtt_flow``: no more QoS 1 PUBLISHes read than that ahead of the
PUBACKs; the socket is not read meanwhile). Subscriptions are renewed after every
connect because a broker that lost its own state (Mosquitto killed between autosaves)
answers session_present=0 (the SUBACK may wait behind a resumed session's backlog).

PUBACKs are only sent on the connection that received the message: after a reconnect the
broker redelivers unacknowledged messages (same packet id, DUP set) and may reuse packet
ids, so an old id must never be acknowledged on the new connection (``epoch``).

Reconnects use exponential backoff with full jitter up to ``mqtt.reconnect_max_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from .config import MqttConfig
from .mqtt_client import IngestClient
from .mqtt_flow import ReceiveWindow
from .mqtt_guard import FAST_PATHS
from .mqtt_watch import SocketWatch

log = logging.getLogger(__name__)

#: (topic, payload, qos, mid, epoch)
Deliver = Callable[[tuple[str, bytes, int, int, int]], None]

#: the topic delivered for a PUBLISH whose topic is not UTF-8 (dead-lettered downstream)
_BAD_TOPIC = "\ufffd(invalid utf-8 topic)"
_DRAIN_PACKETS = 512  # packets read per drain (readable event) before yielding to other tasks


class MqttSession(SocketWatch):
    """One MQTT client session subscribed to ``subscriptions`` [(filter, qos)]."""

    def __init__(self, cfg: MqttConfig, client_id: str, subscriptions: list[tuple[str, int]],
                 deliver: Deliver) -> None:
        self.cfg = cfg
        self.client_id = client_id
        self.subscriptions = subscriptions
        self.deliver = deliver
        self.connected = False
        self.subscribed = False
        self.session_present = False
        self.epoch = 0
        self.connects = 0
        self.last_error = ""
        #: why the broker (or its TLS) refused the last connect; "" once connected. Not
        #: transient like a lost connection: /healthz reports it at once.
        self.refused = ""
        self.connect_failures = 0  # consecutive failed connects
        self.disconnected_since: float | None = time.time()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._client: IngestClient | None = None
        self._connack: asyncio.Future[bool] | None = None
        self._closed: asyncio.Event | None = None
        self._misc: asyncio.Task[None] | None = None
        self._stopping, self._received = False, 0
        self._drain_again: asyncio.Handle | None = None  # a drain of buffered bytes
        self._writer_fd: int | None = None  # the fd watched for writability, if any
        self._acking = False  # within ``ack``: it watches for writability itself
        self._window = ReceiveWindow(cfg.receive_maximum)  # read, not yet PUBACKed

    # -- paho client and its callbacks ---------------------------------------------------

    def _new_client(self) -> IngestClient:
        if self.cfg.protocol == "3.1.1":
            c = IngestClient(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv311, clean_session=False, manual_ack=True,
                             reconnect_on_failure=False)
        else:
            c = IngestClient(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv5, manual_ack=True, reconnect_on_failure=False)
        if self.cfg.username is not None:
            c.username_pw_set(self.cfg.username, self.cfg.password)
        if self.cfg.tls_ca is not None:
            c.tls_set_context(ssl.create_default_context(cafile=str(self.cfg.tls_ca)))
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message  # PUBLISH packets paho decodes (v5 properties)
        c.deliver = self._on_publish  # the others
        c.on_socket_open = self._on_socket_open
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_socket_register_write
        c.on_socket_unregister_write = self._on_socket_unregister_write
        return c

    def _on_readable(self) -> None:
        if self._drain_again is None:  # else that drain reads these bytes too
            self._drain(self._client)

    def _drain(self, client: IngestClient | None) -> None:
        self._drain_again = None
        if client is None or client is not self._client:
            return  # a drain scheduled for a connection that has been replaced
        try:
            sock = client.socket()
            buffered = getattr(sock, "buffered", None)  # plain sockets have none
            budget = min(_DRAIN_PACKETS, self._window.room())  # never read past the limit
            while budget > 0:  # plain PUBLISHes ours, the rest (and EOF) paho's loop_read
                taken = client.read_publishes(budget)
                if taken:
                    budget -= taken
                    if getattr(sock, "drained", False) and not buffered():
                        break  # a short read took all there was (the fd stays readable
                        # if more came since: epoll is level-triggered), no EAGAIN read
                    continue
                if taken == 0 and not (buffered and buffered()):
                    break  # nothing more has arrived
                before = self._received
                if client.loop_read() != mqtt.MQTT_ERR_SUCCESS:
                    break
                if self._received == before and not (buffered and buffered()):
                    break  # no complete packet arrived: nothing more for now
                budget -= 1
            if self._window.room() <= 0:  # resumed by ``ack`` (buffered bytes included)
                self._window.pause(self._loop, sock)
                return
            # Bytes already read from the kernel raise no readable event: drain them in the
            # next loop iteration (one drain per iteration, readable event or not, so the
            # ingest task sees at most _DRAIN_PACKETS new messages per iteration).
            pending = getattr(sock, "pending", None)
            if pending is not None and pending():
                self._drain_again = self._loop.call_soon(  # type: ignore[union-attr]
                    self._drain, client)
        except Exception as exc:  # a broken socket ends this connection
            self._lost(f"read failed: {type(exc).__name__}: {exc}")

    def _resume(self, client: IngestClient) -> None:
        sock = client.socket()
        if self._window.resume(self._loop, sock, self._on_readable) \
                and self._drain_again is None:  # buffered bytes raise no readable event
            self._drain_again = self._loop.call_soon(  # type: ignore[union-attr]
                self._drain, client)

    def _lost(self, reason: str) -> None:
        self.last_error = reason
        client = self._client
        if client is not None:
            with contextlib.suppress(Exception):
                sock = client.socket()
                if sock is not None:
                    self._remove_fd(sock.fileno())
                    sock.close()
        self._set_disconnected()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        ok = not reason.is_failure
        if ok:
            self.epoch += 1
            self._window.reset()
            self.connects += 1
            self.connected = True
            self.disconnected_since = None
            self.refused = ""
            self.connect_failures = 0
            self.session_present = bool(flags.session_present)
            if self.cfg.protocol == "3.1.1":
                client.subscribe([(f, q) for f, q in self.subscriptions])
            else:
                client.subscribe([(f, SubscribeOptions(qos=q)) for f, q in self.subscriptions])
        else:
            self.last_error = self.refused = f"connection refused by the broker: {reason}"
        if self._connack is not None and not self._connack.done():
            self._in_loop(_set_result, self._connack, ok)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            self.last_error = f"subscription refused: {', '.join(failed)}"
            log.error("mqtt %s: %s", self.client_id, self.last_error)
        self.subscribed = not failed

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        if reason is not None and getattr(reason, "is_failure", False):
            self.last_error = f"disconnected: {reason}"
        self._in_loop(self._set_disconnected)

    def _set_disconnected(self) -> None:
        if self.connected or self.disconnected_since is None:
            self.disconnected_since = time.time()
        self.connected = False
        self.subscribed = False
        if self._closed is not None:
            self._closed.set()
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(False)

    def _on_publish(self, topic: bytes, payload: bytes, qos: int, mid: int) -> None:
        """A plain PUBLISH, decoded by ``IngestClient``."""
        try:
            text = topic.decode()
        except UnicodeDecodeError:
            text = _BAD_TOPIC
        self._received += 1
        if qos:
            self._window.unacked += 1
        self.deliver((text, payload, qos, mid, self.epoch))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        """A PUBLISH paho decoded itself (MQTT v5 properties present)."""
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = _BAD_TOPIC
        self._received += 1
        if msg.qos:
            self._window.unacked += 1
        self.deliver((topic, msg.payload, msg.qos, msg.mid, self.epoch))

    # -- acknowledgements ----------------------------------------------------------------

    def ack(self, acks: list[tuple[int, int]]) -> int:
        """PUBACK the QoS 1 messages [(mid, epoch)] that arrived on the current connection."""
        client = self._client
        if client is None or not self.connected:
            return 0
        mids = [mid for mid, ep in acks if ep == self.epoch]
        self._acking = True
        try:
            if not client.ack_many(mids):  # the fast path is off: paho's own, one by one
                for mid in mids:
                    client.ack(mid, 1)
        finally:
            self._acking = False
        if mids:  # written now, one send (paho keeps what the socket does not take)
            self._on_writable()
            sock = client.socket()
            if sock is not None and client is self._client:
                self._watch_writable(client, sock)  # the rest when the socket takes it
            if self._window.acked(len(mids)) and client is self._client:
                self._resume(client)
        return len(mids)

    # -- the connection loop -------------------------------------------------------------

    def _connect_blocking(self, client: mqtt.Client) -> None:
        if self.cfg.protocol == "3.1.1":  # the session: clean_session=False on the client
            client.connect(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
            return
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        props.ReceiveMaximum = self.cfg.receive_maximum
        client.connect(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s,
                       clean_start=False, properties=props)

    def reconnect(self, reason: str) -> None:
        """Drop the current connection; ``run`` reconnects and the broker redelivers every
        unacknowledged message of the session."""
        if self.connected:
            log.warning("mqtt %s: reconnecting: %s", self.client_id, reason)
            self._lost(f"reconnect: {reason}")

    async def run(self) -> None:
        """Connect, stay connected, reconnect with backoff; until cancelled or ``close``.

        Whatever ends it (a cancel, or a failure its supervisor restarts it after), the
        connection it holds is dropped: a restarted run starts from a clean slate."""
        try:
            await self._run()
        finally:
            client = self._client
            if client is not None and not self._stopping:
                self._drop(client)
                self._set_disconnected()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.current_thread()
        FAST_PATHS.log_state()  # a fast path found off at import: said once, now that logs go out
        attempt = 0
        while not self._stopping:
            client = self._client = self._new_client()
            self._window.reset()  # a pause of the old connection ends with it
            self._connack = self._loop.create_future()
            self._closed = asyncio.Event()
            try:
                await self._loop.run_in_executor(None, self._connect_blocking, client)
                async with asyncio.timeout(15):  # not wait_for: it can swallow a cancel
                    ok = await asyncio.shield(self._connack)
            except (OSError, TimeoutError, mqtt.WebsocketConnectionError, ValueError) as exc:
                ok = False
                self.last_error = f"connect failed: {type(exc).__name__}: {exc}"
                # a certificate problem does not pass; any other failure clears an older
                # refusal (the disconnected-for rule takes over)
                self.refused = "" if not isinstance(exc, ssl.SSLError) else (
                    f"TLS handshake with {self.cfg.host}:{self.cfg.port} failed: {exc} "
                    "(check mqtt.tls_ca)")
            if not ok:
                self.connect_failures += 1
            if ok:
                attempt = 0
                log.info("mqtt %s: connected to %s:%d (session present: %s)",
                         self.client_id, self.cfg.host, self.cfg.port, self.session_present)
                self._misc = asyncio.create_task(self._keepalive(client))
                try:
                    await self._closed.wait()
                finally:
                    self._misc.cancel()
                if self._stopping:
                    break
                log.warning("mqtt %s: connection lost: %s", self.client_id, self.last_error)
            else:
                self._drop(client)
                self._set_disconnected()
            if self._stopping:
                break
            attempt += 1
            delay = random.uniform(0, min(self.cfg.reconnect_max_s, 0.1 * 2 ** min(attempt, 16)))
            log.info("mqtt %s: reconnecting in %.2fs (%s)", self.client_id, delay,
                     self.last_error)
            await asyncio.sleep(delay)

    async def _keepalive(self, client: IngestClient) -> None:
        # paho's clock: a PINGREQ after keepalive_s without a packet out, a lost
        # connection after another keepalive_s without the PINGRESP. Checked every tenth
        # of it (at least every second): the ping leaves at most 10 % late, well within
        # the broker's 1.5x grace, and an idle session wakes 0.3 times a second, not once.
        # While the session is paused at its Receive Maximum it reads nothing, the
        # PINGRESP included: paho's clock is held (``mqtt_flow``); PINGREQs still go out.
        every = max(1.0, self.cfg.keepalive_s / 10)
        while True:
            if self._window.paused_fd is not None:
                client.hold_keepalive()
            if client.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
                break
            await asyncio.sleep(every)
        self._lost(self.last_error or "keepalive failed")

    async def close(self, timeout: float = 2.0) -> None:
        """Disconnect cleanly (the session and its unacknowledged messages stay on the broker)."""
        self._stopping = True
        client = self._client
        if client is not None and self.connected:
            client.disconnect()
            if self._closed is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._closed.wait()
        if client is not None:
            self._drop(client)
        self._set_disconnected()


def _set_result(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)
