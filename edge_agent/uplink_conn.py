"""A lean HTTP/1.1 keep-alive client for the uplink's one kind of request.

Strategy: the uplink sends one kind of request (POST a CBOR body, read a small CBOR or
JSON reply) to one origin. httpx spends 0.3-1 ms of CPU on each (client, transport,
connection pool, anyio streams, event objects), which at a quiet gateway's 50 requests/s
is most of the agent's CPU. Here a request is h11 (the sans-IO HTTP/1.1 library httpx
itself is built on) over asyncio streams: the head and body go out in one write, the
reply is read through h11, and the connection goes back to a small pool when h11 says it
can be reused. The proxy case stays with httpx (``HttpUplink`` chooses).

Bounds: at most ``max_connections`` connections, each request within ``timeout_s``
(connect included), a reply body of at most ``max_reply_bytes`` and h11's own cap on the
head. Every way the server or the network can fail ends in ``ConnectionFailed`` (its
``__cause__`` is the original error, ``ssl`` errors included); nothing else escapes.

An idle connection the server has closed since (its keep-alive timeout) is seen
before it is reused (the stream is at EOF) and dropped. A request is never sent twice
here: a failure is the caller's to retry (the forwarder resends; the batch is
idempotent, G3).

A failed request ends the requests sent before it that are still waiting (``abort``):
behind a proxy or load balancer that keeps a killed node's connections open they would
each wait out ``timeout_s`` (an alarm batch among them too). Only *older* ones: a
request ended that way then ends only requests older still, never the retries sent
since, to a node that may be up again. Ending every request in flight cascaded (each
ended request ended the retries sent meanwhile), which kept an alarm stream failing over
between two nodes for seconds in the cluster soak.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

#: the largest reply body read (an ack or an error is a few hundred bytes)
MAX_REPLY_BYTES = 1 << 20
_READ = 64 * 1024


class ConnectionFailed(Exception):
    """The request got no complete reply (connect, TLS, timeout, a broken reply)."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...]

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


class _Conn:
    __slots__ = ("h11", "loop", "reader", "seq", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)
        self.loop = asyncio.get_running_loop()
        self.seq = 0  # the request on it (LeanClient._seq)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class LeanClient:
    """POSTs to one origin over at most ``max_connections`` keep-alive connections."""

    def __init__(self, url: str, headers: dict[str, str], *, timeout_s: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None, max_connections: int = 8,
                 max_reply_bytes: int = MAX_REPLY_BYTES) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"uplink url must be http:// or https://, got {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        self.ssl = (ssl_context or ssl.create_default_context()) \
            if parts.scheme == "https" else None
        authority = parts.netloc.rsplit("@", 1)[-1]
        self.headers = [(b"host", authority.encode()),
                        *((k.lower().encode(), v.encode()) for k, v in headers.items())]
        self.timeout_s = timeout_s
        self.max_reply_bytes = max_reply_bytes
        self._idle: list[_Conn] = []
        self._busy: set[_Conn] = set()  # connections with a request on them
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False
        self._seq = 0  # requests numbered in the order they were sent

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        """POST ``body`` to ``base_path + path``; the reply, or ConnectionFailed."""
        head = [*self.headers, *((k.encode(), v.encode()) for k, v in headers.items()),
                (b"content-length", b"%d" % len(body))]
        request = h11.Request(method="POST", target=(self.base_path + path).encode(),
                              headers=head)
        async with self._slots:
            if self._closed:
                raise ConnectionFailed("the uplink client is closed")
            self._seq += 1
            seq = self._seq
            try:
                async with asyncio.timeout(self.timeout_s):
                    conn = self._reusable() or await self._connect()
                    conn.seq = seq
                    return await self._exchange(conn, request, body)
            except (ConnectionFailed, OSError, TimeoutError, EOFError, h11.ProtocolError,
                    ValueError) as exc:
                self.abort(older_than=seq)  # see the module docstring
                if isinstance(exc, ConnectionFailed):
                    raise
                raise ConnectionFailed(f"{type(exc).__name__}: {exc}") from exc

    def _reusable(self) -> _Conn | None:
        """An idle connection still open (the server may have closed it meanwhile) and
        of this event loop (a client may outlive one ``asyncio.run``)."""
        loop = asyncio.get_running_loop()
        while self._idle:
            conn = self._idle.pop()
            if conn.loop is not loop:
                continue  # its loop is gone or elsewhere: its transport is not ours to use
            if conn.reader.at_eof() or conn.writer.is_closing() \
                    or conn.reader.exception() is not None:
                conn.close()
                continue
            return conn
        return None

    async def _connect(self) -> _Conn:
        reader, writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.ssl,
            server_hostname=self.host if self.ssl is not None else None)
        return _Conn(reader, writer)

    async def _exchange(self, conn: _Conn, request: h11.Request, body: bytes) -> Reply:
        self._busy.add(conn)
        try:
            reply = await self._roundtrip(conn, request, body)
        except BaseException:
            conn.close()
            raise
        finally:
            self._busy.discard(conn)
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE \
                and not self._closed:
            conn.h11.start_next_cycle()
            self._idle.append(conn)
        else:
            conn.close()
        return reply

    async def _roundtrip(self, conn: _Conn, request: h11.Request, body: bytes) -> Reply:
        c = conn.h11
        conn.writer.write(c.send(request) + c.send(h11.Data(data=body))  # type: ignore[operator]
                          + c.send(h11.EndOfMessage()))
        status, headers, chunks, size = 0, (), [], 0
        while True:
            event = c.next_event()
            if event is h11.NEED_DATA:
                c.receive_data(await conn.reader.read(_READ))
            elif isinstance(event, h11.InformationalResponse):
                continue
            elif isinstance(event, h11.Response):
                status, headers = event.status_code, tuple(event.headers)
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > self.max_reply_bytes:
                    raise ConnectionFailed(f"reply body over {self.max_reply_bytes} bytes")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return Reply(status, b"".join(chunks), headers)
            else:  # ConnectionClosed or PAUSED before the reply ended
                raise ConnectionFailed(f"connection ended before the reply: {event!r}")

    def abort(self, older_than: int | None = None) -> None:
        """Close the idle connections and those with a request on them (only requests
        sent before request number ``older_than``, when given): their requests end at
        once in ``ConnectionFailed`` instead of waiting out ``timeout_s`` on a server that
        died under them (a failed request does this, see the module docstring). The
        client stays usable."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        for conn in list(self._busy):
            if older_than is None or conn.seq < older_than:
                conn.close()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


__all__ = ["ConnectionFailed", "LeanClient", "Reply"]
