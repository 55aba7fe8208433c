"""A device connection's way in: the connection states, CONNECT to CONNACK, the timers.

Why a module of its own: ``connection.Connection`` is the per-packet path (PUBLISH,
PUBACK order, flow control), tuned for CPU; what happens once per connection (the CONNECT
checked off the loop, the session recorded before the CONNACK, the connect and keep-alive
timers) is a separate concern and lives here, as ``Handshake``, a base class of
``Connection``. A mixin rather than functions, so the calls stay ``self._connect`` and the
hot path is untouched. The states are defined here because both modules need them and
this one must not import ``connection`` (no import circle).
"""

from __future__ import annotations

import asyncio
import logging
import time

from mqttproto import V5, Connack, Connect, ReasonCode

from .rules import connect_verdict
from .stats import reason_label

#: the connection's logger, named as before this module was split out of it
log = logging.getLogger(f"{__package__}.connection")

CONNECTING, AUTHENTICATING, CONNECTED, CLOSED = range(4)


class Handshake:
    """CONNECT handling of ``connection.Connection``; uses its attributes and methods."""

    async def _connect(self, c: Connect) -> None:
        server = self.server
        self.version = c.protocol_level
        ssl_obj = self.transport.get_extra_info("ssl_object") if self.transport else None
        cert = ssl_obj.getpeercert() if ssl_obj is not None else None
        try:
            verdict = await connect_verdict(c, cert, server.auth, server.cfg)
        except Exception as exc:  # a bug or an unreadable password file: refuse, log
            log.exception("mqtt listener: checking a CONNECT from %s failed", self.peer)
            verdict = None
            server.stats.refused[f"error: {type(exc).__name__}"] += 1
        if self.state == CLOSED:
            return
        if verdict is None or verdict.reason:
            reason = verdict.reason if verdict else ReasonCode.UNSPECIFIED_ERROR
            server.stats.refused[reason_label(reason)] += 1
            self._send(Connack(False, reason))
            self._close()
            return
        self.client_id, self.will = verdict.client_id, c.will
        self.acl, self.keepalive, self.expiry_s = verdict.acl, c.keepalive, verdict.expiry_s
        present, old, wait = server.sessions.attach(self.client_id, c.clean_start,
                                                    self.expiry_s, self)
        self.attached = True
        if old is not None and old is not self:
            server.stats.takeovers += 1
            old.fail(ReasonCode.SESSION_TAKEN_OVER, "another connection took the session")
        server.session_started(self.client_id, c.clean_start)
        if wait:  # the session set must be on disk before a device is told about it
            try:
                async with asyncio.timeout(server.cfg.connect_timeout_s):
                    await server.sessions.durable()
            except TimeoutError:
                server.sessions.detach(self.client_id, self, 0)
                self.attached = False
                self.fail(ReasonCode.SERVER_UNAVAILABLE, "the session could not be recorded")
                return
        if self.state == CLOSED or server.sessions.live.get(self.client_id) is None or \
                server.sessions.live[self.client_id].conn is not self:
            self._close()  # gone, or taken over while the session was written
            return
        props = verdict.connack_properties(server.cfg) if self.version == V5 else {}
        self._send(Connack(present, 0, props))
        self.state = CONNECTED
        server.stats.connects += 1
        if self._timer is not None:
            self._timer.cancel()
        if self.keepalive:
            self._timer = asyncio.get_running_loop().call_later(self.keepalive * 1.5,
                                                                self._keepalive_check)
        queued, self._queued = self._queued, []
        self._handle_all(queued)
        self.flow()

    def _connect_timeout(self) -> None:
        if self.state in (CONNECTING, AUTHENTICATING):
            self.server.stats.disconnects["connect timeout"] += 1
            self._close()

    def _keepalive_check(self) -> None:
        limit = self.keepalive * 1.5
        idle = time.monotonic() - self.last_rx
        if idle >= limit:
            self.fail(ReasonCode.KEEP_ALIVE_TIMEOUT, f"silent for {idle:.1f}s")
        elif self.state == CONNECTED:
            self._timer = asyncio.get_running_loop().call_later(limit - idle,
                                                                self._keepalive_check)
