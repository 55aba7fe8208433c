"""The MQTT listener: devices publish to the agent itself, PUBACK once durable.

Strategy: a second ingest adapter in front of the same pipelines as the Mosquitto path
(``ingest.StreamIngest``): each PUBLISH is routed by topic (``agent.Router``: first
matching stream, or the unmatched pipeline that dead-letters it as ``no_stream``) and
handed to that stream's ``Inbox`` as ``(topic, payload, qos, packet id, connection
number)``. The pipeline inspects, deduplicates by per-device sequence, appends, waits
for the group commit and calls ``ack`` with the (packet id, connection number) pairs,
which ``ack`` turns into PUBACKs on that connection - if it is still there. A reading of
a connection that has gone is not acknowledged: the device resends it on its next
connection (DUP) and the sequence dedup drops it if it was stored.

Bounds: ``max_connections`` sockets (more are closed at once, before reading a byte; the
open-files limit is raised to fit, see ``raise_nofile``), ``connect_timeout_s`` to finish
TLS and CONNECT, ``max_packet_size`` per packet, ``max_buffered_bytes`` of unread output,
``receive_maximum`` unacknowledged readings per connection, and at most
``_INBOX_HIGH`` readings waiting in any stream's inbox before connections stop being
read (``congested``; resumed by a 10 ms poll once it is back under ``_INBOX_LOW``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import resource
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from mqttproto import Property as P
from mqttproto import ReasonCode
from tomlconf import parse_listen

from ..inbox import Inbox, InMessage
from .auth import Authenticator, PasswordFile
from .config import ListenerConfig, server_tls
from .connection import Connection
from .sessions import Sessions
from .stats import ListenerStats

log = logging.getLogger(__name__)

_INBOX_HIGH = 20_000
_INBOX_LOW = 5_000
_FD_MARGIN = 256  # files the agent needs beside device sockets (logs, HTTP, uplink)
_NOTE_EVERY_S = 10.0


def raise_nofile(wanted: int) -> int:
    """Raise the soft open-files limit towards ``wanted``; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
    return soft


class Listener:
    def __init__(self, cfg: ListenerConfig, directory: Path, route: Callable[[str], str | None],
                 inboxes: dict[str, Inbox], unmatched: Inbox) -> None:
        self.cfg = cfg
        self.route = route
        self.inboxes = inboxes
        self.unmatched = unmatched
        self.sessions = Sessions(directory, cfg.max_sessions)
        passwords = PasswordFile(cfg.password_file) if cfg.password_file else None
        self.auth = Authenticator(passwords, cfg.allow_anonymous, cfg.acl)
        self.tls = server_tls(cfg)
        self.stats = ListenerStats()
        self.conns: dict[int, Connection] = {}
        self.max_connections = cfg.max_connections
        self.address: tuple[str, int] | None = None
        #: some stream's inbox went over _INBOX_HIGH: connections stop being read from
        self.congested = False
        self.inbox_high = _INBOX_HIGH
        #: connections that have published at QoS 1, and those of them with readings
        #: waiting for PUBACKs (the commit rule, see connection.py)
        self.publishers = 0
        self.waiting = 0
        self._numbers = itertools.count(-1, -1)  # never a Mosquitto session's epoch (> 0)
        self._open = 0  # sockets open (connections before and after CONNECT)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._waiting: set[Connection] = set()
        self._poll: asyncio.TimerHandle | None = None
        self._wills: dict[str, tuple[asyncio.TimerHandle, Any]] = {}
        self._noted_at = 0.0
        self._server: asyncio.Server | None = None

    # -- serving ---------------------------------------------------------------------------

    def open(self) -> None:
        """Load the sessions of the previous run and size the open-files limit."""
        n = self.sessions.load()
        limit = raise_nofile(self.cfg.max_connections + _FD_MARGIN)
        if limit < self.cfg.max_connections + _FD_MARGIN:
            self.max_connections = max(1, limit - _FD_MARGIN)
            log.warning("mqtt listener: the open-files limit is %d (ulimit -n): at most %d "
                        "device connections instead of max_connections = %d", limit,
                        self.max_connections, self.cfg.max_connections)
        log.info("mqtt listener: %d persistent sessions from the previous run", n)

    async def run(self) -> None:
        """Listen until cancelled (supervised: a failure is restarted with a new socket)."""
        host, port = parse_listen(self.cfg.listen, "mqtt_listener.listen")
        loop = asyncio.get_running_loop()
        tls: dict[str, Any] = {} if self.tls is None else {
            "ssl": self.tls, "ssl_handshake_timeout": self.cfg.connect_timeout_s}
        self._server = await loop.create_server(self._protocol, host or None, port,
                                                backlog=1024, reuse_address=True, **tls)
        sock = self._server.sockets[0].getsockname()
        self.address = (sock[0], sock[1])
        log.info("mqtt listener: serving on %s:%d%s", sock[0], sock[1],
                 " (TLS)" if self.tls else "")
        try:
            await self._server.serve_forever()
        finally:
            self._server.close()

    def _protocol(self) -> asyncio.Protocol:
        if self._open >= self.max_connections:
            self.stats.over_limit += 1
            self.note(f"max_connections ({self.max_connections}) reached: socket closed")
            return _Refuse()
        conn = Connection(self, next(self._numbers))
        self._open += 1
        self.conns[conn.number] = conn
        if self.tls is not None:  # a failed handshake never reaches the connection
            asyncio.get_running_loop().call_later(self.cfg.connect_timeout_s + 1.0,
                                                  self._unmade, conn)
        return conn

    def _unmade(self, conn: Connection) -> None:
        if conn.transport is None:
            self.forget(conn)

    def forget(self, conn: Connection) -> None:
        if self.conns.pop(conn.number, None) is not None:
            self._open -= 1
            if conn.publisher:
                conn.publisher = False
                self.publishers -= 1
                if conn.waiting:
                    conn.waiting = False
                    self.waiting -= 1
                if self.publishers and self.waiting >= self.publishers:
                    self.hurry()  # the one that left was all the others waited for
        self._waiting.discard(conn)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # a bug: said, not lost
            log.error("mqtt listener: a connection task failed", exc_info=task.exception())

    async def close(self) -> None:
        """Stop accepting, tell connected MQTT 5 devices the server is going (0x8B), and
        write the sessions."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.conns.values()):
            conn.fail(ReasonCode.SERVER_SHUTTING_DOWN, "")
        for h, _will in self._wills.values():
            h.cancel()
        for t in list(self._tasks):
            t.cancel()
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self.sessions.flush)

    def drop_unacknowledged(self, reason: str) -> int:
        """Close every connection with readings in flight (their pipeline failed): the
        devices resend them on their next connection."""
        n = 0
        for conn in list(self.conns.values()):
            if conn.inflight:
                conn.fail(ReasonCode.UNSPECIFIED_ERROR, reason)
                n += 1
        return n

    # -- readings in, PUBACKs out ----------------------------------------------------------

    def inbox_for(self, topic: str) -> Inbox:
        """The inbox of the stream ``topic`` belongs to (the unmatched one if none)."""
        owner = self.route(topic)
        return self.inboxes.get(owner, self.unmatched) if owner is not None else self.unmatched

    def submit(self, msg: InMessage) -> None:
        """Hand a reading to its stream's pipeline (wills; connections route per topic
        once and submit to the inbox themselves, see ``Connection._route``)."""
        inbox = self.inbox_for(msg[0])
        inbox.submit(msg)
        if len(inbox.messages) > _INBOX_HIGH:
            self.congested = True  # cleared by _resume_waiting

    def ack(self, acks: list[tuple[int, int]]) -> None:
        """The pipelines' ``AckFn``: PUBACK (packet id, connection number) pairs."""
        conns = self.conns
        due = []
        for pid, number in acks:
            conn = conns.get(number)
            if conn is not None and conn.settle(pid):
                due.append(conn)
        for conn in due:
            conn.release()
            if conn.waiting and not conn.inflight:
                conn.waiting = False  # now_waiting(conn, False), inlined: once per reading
                self.waiting -= 1

    def now_waiting(self, conn: Connection, waiting: bool = True) -> None:
        """``conn`` has QoS 1 readings waiting for PUBACKs (False: no longer)."""
        if waiting and not conn.publisher:
            conn.publisher = True
            self.publishers += 1
        conn.waiting = waiting
        self.waiting += 1 if waiting else -1

    def hurry(self) -> None:
        """Every publishing connection waits for a PUBACK: commit what is appended now."""
        fresh = False
        for inbox in (*self.inboxes.values(), self.unmatched):
            if not inbox.urgent:  # else asked already, and its pipeline has not run since
                inbox.hurry()
                fresh = True
        self.stats.hurries += fresh

    def wait_for_room(self, conn: Connection) -> None:
        self._waiting.add(conn)
        if self._poll is None:
            self._poll = asyncio.get_running_loop().call_later(0.01, self._resume_waiting)

    def _resume_waiting(self) -> None:
        self._poll = None
        if any(len(i) > _INBOX_LOW for i in (*self.inboxes.values(), self.unmatched)):
            self._poll = asyncio.get_running_loop().call_later(0.01, self._resume_waiting)
            return
        self.congested = False
        waiting, self._waiting = self._waiting, set()
        for conn in waiting:
            conn.flow()

    # -- wills -----------------------------------------------------------------------------

    def will_later(self, client_id: str, will: Any, expiry_s: int) -> None:
        """Publish a will after its delay (MQTT 5), unless the session resumes first."""
        delay = min(int(will.properties.get(P.WILL_DELAY_INTERVAL, 0)), expiry_s)
        old = self._wills.pop(client_id, None)
        if old is not None:
            old[0].cancel()
        if delay <= 0:
            self._publish_will(client_id, will)
        else:
            handle = asyncio.get_running_loop().call_later(delay, self._publish_will,
                                                           client_id, will)
            self._wills[client_id] = (handle, will)

    def session_started(self, client_id: str, clean_start: bool) -> None:
        """A connection took ``client_id``'s session: a pending will is dropped (the
        session resumed) or published now (a clean start ended the old session)."""
        pending = self._wills.pop(client_id, None)
        if pending is not None:
            pending[0].cancel()
            if clean_start:
                self._publish_will(client_id, pending[1])

    def _publish_will(self, client_id: str, will: Any) -> None:
        self._wills.pop(client_id, None)
        self.stats.wills += 1
        self.submit((will.topic, will.payload, will.qos, 0, 0))  # connection 0: no PUBACK

    # -- status ----------------------------------------------------------------------------

    def note(self, message: str) -> None:
        """Record (and log, at most every 10 s) why a device was refused or dropped."""
        self.stats.last_error = message
        now = time.monotonic()
        if now - self._noted_at >= _NOTE_EVERY_S:
            self._noted_at = now
            log.warning("mqtt listener: %s", message)

    def status(self) -> dict[str, Any]:
        st = self.stats
        return {
            "listen": self.cfg.listen, "address": list(self.address) if self.address else None,
            "tls": self.tls is not None, "serving": self.address is not None,
            "connections": len(self.conns), "max_connections": self.max_connections,
            "sessions": len(self.sessions.live), "connects": st.connects,
            "publishes": st.publishes, "pubacks": st.pubacks, "acl_denied": st.acl_denied,
            "malformed": st.malformed, "takeovers": st.takeovers, "wills": st.wills,
            "over_limit": st.over_limit, "hurries": st.hurries, "refused": dict(st.refused),
            "disconnects": dict(st.disconnects), "last_error": st.last_error,
            "inflight": sum(len(c.inflight) for c in self.conns.values()),
        }


class _Refuse(asyncio.Protocol):
    """A socket over ``max_connections``: closed before anything is read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


__all__ = ["Listener", "ListenerStats", "raise_nofile"]
