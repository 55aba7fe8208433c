"""A read-buffering socket for paho-mqtt: one ``recv`` syscall per burst, not per byte.

Why it exists: paho's ``Client._packet_read`` reads a packet with one ``sock.recv(1)``
for the fixed header byte, one ``recv(1)`` per remaining-length byte and one ``recv`` for
the body: three syscalls for every small PUBLISH. ``BufferedSocket`` serves those
``recv(n)`` calls from a userspace buffer that it fills with one ``recv(65536)`` from the
real socket, so a burst of readings costs one syscall (bench/edge_ingest.py, QoS 0: about
4-5 us less agent CPU per reading).

Semantics kept exactly: ``recv(n)`` returns at most ``n`` bytes; bytes already buffered
are returned first (possibly fewer than ``n``, as any stream socket may); only when the
buffer is empty is the real socket read, so ``BlockingIOError``, ``ssl.SSLWantReadError``
/ ``SSLWantWriteError``, other ``OSError`` and EOF (``b""``) reach paho exactly as they
would from the real socket. Everything else (``send``, ``fileno``, ``close``,
``setblocking``, ``settimeout``, ``getpeername``, TLS methods, ...) is delegated.
``pending()`` counts the buffered bytes (plus an SSL socket's own pending bytes).

The catch: epoll/select only report bytes in the *kernel*; bytes already in this buffer
raise no readable event. Whoever drives the socket must keep reading while ``pending()``
is non-zero (``MqttSession`` reschedules its drain with ``loop.call_soon``). paho's own
``loop()`` already does this for SSL sockets (it checks ``pending()``) and so also works
with this wrapper; paho's ``loop_forever``/``loop_start`` use ``loop()``.

paho internals relied on (paho-mqtt 2.x; checked against 2.2.0):

* ``Client._create_socket()`` (private) creates the connected socket (TCP or
  unix, TLS-wrapped and handshaken when TLS is configured, or the websocket wrapper) and
  ``reconnect()`` stores its result as the client socket, calls ``setblocking(False)``
  on it and passes it to ``on_socket_open``. ``BufferingClient`` overrides it to wrap
  the result. If a future paho stops calling it, nothing breaks: the client just reads
  the plain socket (``is_buffered`` tells; tests/edge_agent/test_mqtt_socket.py checks).
* paho reads the socket only through ``sock.recv(n)`` (``Client._sock_recv``) and never
  type-checks the socket object: any object with the socket methods it calls works
  (paho itself documents ``SocketLike`` and ships ``_WebsocketWrapper`` this way).

The guard (``mqtt_guard``): with an unchecked paho version or a missing method the path
``buffered_reads`` is off and ``_create_socket`` returns paho's socket as it is; an
exception while wrapping turns the path off and also returns paho's socket. Exceptions of
paho's own ``_create_socket`` (connection refused, TLS) propagate unchanged.
"""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as mqtt

from .mqtt_guard import BUFFERED_READS, FAST_PATHS

#: one read from the real socket; larger than a TLS record (16 KiB), so a TLS read takes
#: a whole record (``pending()`` also counts what the SSL object may still hold)
RECV_BYTES = 65536


class BufferedSocket:
    """Wraps a non-blocking (TLS) socket: ``recv`` from a buffer, all else delegated."""

    __slots__ = ("_buf", "_pos", "drained", "fileno", "send", "sock")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self._buf = b""
        self._pos = 0
        #: the last ``fill`` read less than it asked for: the kernel's queue was empty
        #: then, so another read would most likely find nothing (EAGAIN)
        self.drained = False
        # the calls made per message or per event, bound once (no __getattr__ per call)
        self.send = sock.send
        self.fileno = sock.fileno

    def recv(self, n: int) -> bytes:
        buf = self._buf
        pos = self._pos
        end = pos + n
        if end <= len(buf):  # the common case: served from the buffer
            self._pos = end
            return buf[pos:end]
        if pos < len(buf):  # fewer than n buffered: return them (a short read)
            self._buf = b""
            self._pos = 0
            return buf[pos:]
        # Empty: read the real socket; its exceptions and EOF (b"") propagate unchanged.
        data = self.sock.recv(n if n > RECV_BYTES else RECV_BYTES)
        if len(data) <= n:
            return data
        self._buf = data
        self._pos = n
        return data[:n]

    def buffered(self) -> int:
        """Bytes received from the socket and not yet returned by ``recv``."""
        return len(self._buf) - self._pos

    def fill(self) -> int:
        """One read from the socket into the (empty) buffer; how many bytes (0: EOF).
        The socket's exceptions propagate unchanged, as from ``recv``."""
        data = self.sock.recv(RECV_BYTES)
        self._buf = data
        self._pos = 0
        self.drained = len(data) < RECV_BYTES
        return len(data)

    def peek(self) -> tuple[bytes, int]:
        """The buffer and the position of its first byte not yet returned by ``recv``
        (for a parser that takes whole packets from it, then calls ``skip_to``)."""
        return self._buf, self._pos

    def skip_to(self, pos: int) -> None:
        """The buffered bytes before ``pos`` were consumed without ``recv``."""
        self._pos = pos

    def pending(self) -> int:
        """Bytes readable without a readable event: buffered, plus SSL's decrypted ones."""
        n = len(self._buf) - self._pos
        ssl_pending = getattr(self.sock, "pending", None)
        return n + ssl_pending() if ssl_pending is not None else n

    def close(self) -> None:
        self._buf = b""
        self._pos = 0
        self.sock.close()

    def __getattr__(self, name: str) -> Any:
        if name == "sock":  # not yet set (never delegate to ourselves)
            raise AttributeError(name)
        return getattr(self.sock, name)

    def __repr__(self) -> str:
        return f"<BufferedSocket {self.buffered()} bytes buffered, {self.sock!r}>"


class BufferingClient(mqtt.Client):
    """``paho.mqtt.client.Client`` whose connections read through a ``BufferedSocket``."""

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        if not FAST_PATHS.buffered_reads:
            return sock
        try:
            return BufferedSocket(sock)
        except Exception as exc:  # paho's socket is not what the wrapper expects
            FAST_PATHS.disable(BUFFERED_READS, f"wrapping the socket raised "
                                               f"{type(exc).__name__}: {exc}")
            return sock


def is_buffered(client: mqtt.Client) -> bool:
    """Whether ``client``'s current socket is a ``BufferedSocket``."""
    return isinstance(client.socket(), BufferedSocket)
