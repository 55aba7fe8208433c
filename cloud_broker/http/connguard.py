"""Connection limits the HTTP server lacks: a header timeout and a cap that admits new clients.

Strategy: uvicorn times out a keep-alive connection only *after* a response
(``timeout_keep_alive``); a connection that never completes its first request header
(an idle socket, a slowloris dribbling a byte a minute) is never closed, and
``limit_concurrency`` answers 503 to *new* requests once idle sockets fill the table, so
1,000 idle sockets lock everybody out. ``GuardedConnection`` wraps each connection's
protocol (any asyncio protocol: it sees only bytes and the transport) and adds:

- a header deadline: from the moment a connection opens, and again from the first byte of
  each later request, the request line and headers must be complete within
  ``header_timeout_s``, else the connection is closed. Request boundaries come from a
  second httptools parser fed the same bytes with only the message-begin / headers-complete
  callbacks (no body copies); httptools is what uvicorn itself parses with.
- a header size cap (``max_header_bytes``): 431 and close.
- a connection cap (``max_connections``): a new connection beyond it closes the oldest
  connection that is still waiting for its request headers (that one has nothing in
  progress to lose); when every connection is busy, the new one gets a 503 with
  ``Retry-After`` and is closed. Long-poll and SSE consumers are busy (their request
  headers are complete) and are never closed by the guard.

Between requests uvicorn's own keep-alive timeout applies (``keep_alive_s``); such a
connection counts as busy for the cap until then (the guard does not see where a response
ends). TLS
handshakes are bounded by asyncio's ``ssl_handshake_timeout`` before the guard sees them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httptools
from prometheus_client import CollectorRegistry, Counter, Gauge

from ..config import ConnectionLimits


def _response(status: str, body: bytes, extra: bytes = b"") -> bytes:
    """A complete close-delimited HTTP response in the broker's JSON error shape."""
    return (b"HTTP/1.1 " + status.encode() + b"\r\nConnection: close\r\n" + extra
            + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body)


_REFUSE = _response("503 Service Unavailable",
                    b'{"error": "too many connections, retry later", "field": null}',
                    b"Retry-After: 1\r\n")
_TOO_LARGE = _response("431 Request Header Fields Too Large",
                       b'{"error": "request line and headers too large", "field": "headers"}')


class ConnectionGuard:
    """The limits and the live connections of one server (oldest first)."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.live: dict[GuardedConnection, None] = {}  # insertion order = age
        self.registry = CollectorRegistry()
        self.open = Gauge("broker_http_connections", "Open HTTP connections",
                          registry=self.registry)
        self.open.set_function(lambda: len(self.live))
        self.closed = Counter("broker_http_connections_closed",
                              "HTTP connections closed by the connection limits, by reason "
                              "(header_timeout, evicted_idle, refused_full, header_too_large)",
                              ["reason"], registry=self.registry)
        for reason in ("header_timeout", "evicted_idle", "refused_full", "header_too_large"):
            self.closed.labels(reason)

    def protocol(self, inner: Callable[..., asyncio.Protocol]) -> Callable[..., asyncio.Protocol]:
        """A protocol factory for uvicorn's ``http=``: ``inner``'s protocol, guarded."""
        def factory(**kwargs: Any) -> asyncio.Protocol:
            return GuardedConnection(self, inner(**kwargs))
        return factory

    def admit(self, conn: GuardedConnection) -> bool:
        """Make room for ``conn``: False when every other connection is busy."""
        if len(self.live) >= self.limits.max_connections:
            victim = next((c for c in self.live if c.awaiting_headers), None)
            if victim is None:
                return False
            self.closed.labels("evicted_idle").inc()
            victim.abort()
        self.live[conn] = None
        return True


class GuardedConnection(asyncio.Protocol):
    """One connection: forwards everything to ``inner`` and enforces the guard's limits."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: Any = None
        self.awaiting_headers = True
        self._connected = False  # the inner protocol saw connection_made
        self._header_bytes = 0  # request line and headers of the current request
        self._partial_bytes = 0  # bytes received while its headers are incomplete
        self._deadline: asyncio.TimerHandle | None = None
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:  # asyncio's or uvloop's transport
        self.transport = transport
        if not self.guard.admit(self):
            self.guard.closed.labels("refused_full").inc()
            self.awaiting_headers = False
            transport.write(_REFUSE)
            transport.close()
            return
        self._arm()
        self._connected = True
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self not in self.guard.live:
            return  # refused, evicted or timed out: the transport is closing
        if self._parser is not None:
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                self._parser = None  # the inner protocol owns upgraded connections
            except httptools.HttpParserError:
                self._parser = None  # the inner protocol answers 400 on the same bytes
            if self.awaiting_headers:  # counted whole: a header still being dribbled is too
                self._partial_bytes += len(data)
            limit = self.guard.limits.max_header_bytes
            if self._header_bytes > limit or (self.awaiting_headers
                                              and self._partial_bytes > limit):
                self.guard.closed.labels("header_too_large").inc()
                self._disarm()
                self.guard.live.pop(self, None)
                self.transport.write(_TOO_LARGE)
                self.transport.close()
                return
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self._connected else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard.live.pop(self, None)
        if self._connected:
            self._connected = False
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._connected:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self._connected:
            self.inner.resume_writing()

    # -- httptools callbacks (request boundaries only) ------------------------------------

    def on_message_begin(self) -> None:
        self._header_bytes = self._partial_bytes = 0
        if not self.awaiting_headers:
            self.awaiting_headers = True
            self._arm()

    def on_url(self, url: bytes) -> None:
        self._header_bytes += len(url) + 16

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        self.awaiting_headers = False
        self._disarm()

    # -- limits ---------------------------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.guard.limits.header_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.awaiting_headers and self in self.guard.live:
            self.guard.closed.labels("header_timeout").inc()
            self.abort()

    def abort(self) -> None:
        """Close now, without waiting for buffered writes (the peer sent no full request)."""
        self._disarm()
        self.awaiting_headers = False
        self.guard.live.pop(self, None)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()


__all__ = ["ConnectionGuard", "GuardedConnection"]
