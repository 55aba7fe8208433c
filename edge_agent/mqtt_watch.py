"""The event-loop side of an MQTT session's socket, as a mixin of ``MqttSession``.

Why a module of its own: these are the hooks paho calls when it opens or closes its
socket or has bytes it could not write (``on_socket_*``), and the registrations they make
with the event loop (the reader, the writer only while a write is incomplete). They are
one concern, apart from what the session does with the packets it reads, and keeping
them here keeps ``mqtt_ingest`` within the project's module size.

The mixin uses the session's state (``_loop``, ``_loop_thread``, ``_client``,
``_writer_fd``, ``_acking``) and calls back into it (``_on_readable``, ``_lost``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from .mqtt_client import IngestClient


class SocketWatch:
    """paho's socket hooks and the event loop's reader and writer for its socket."""

    _loop: asyncio.AbstractEventLoop | None
    _loop_thread: threading.Thread | None
    _client: IngestClient | None
    _writer_fd: int | None
    _acking: bool

    def _on_readable(self) -> None:
        raise NotImplementedError

    def _lost(self, reason: str) -> None:
        raise NotImplementedError

    def _in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn`` on the event loop (paho calls some hooks from the connect thread)."""
        assert self._loop is not None
        if threading.current_thread() is self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._loop.add_reader, sock.fileno(), self._on_readable)  # type: ignore[union-attr]

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        if fd > -1:
            self._in_loop(self._remove_fd, fd)

    def _remove_fd(self, fd: int) -> None:
        assert self._loop is not None
        self._loop.remove_reader(fd)
        self._loop.remove_writer(fd)
        self._writer_fd = None if self._writer_fd == fd else self._writer_fd

    def _on_socket_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        # Deferred: ``ack`` writes at once and usually completes; a writer added and
        # removed re-registers the fd with uvloop (an epoll delete, the reader re-added).
        # ``ack`` looks after its own writes (no callback per PUBACK write).
        if not self._acking:
            self._in_loop(self._loop.call_soon, self._watch_writable, client, sock)  # type: ignore[union-attr]

    def _watch_writable(self, client: mqtt.Client, sock: Any) -> None:
        if client is self._client and client.socket() is sock and client.want_write():
            self._loop.add_writer(sock.fileno(), self._on_writable)  # type: ignore[union-attr]
            self._writer_fd = sock.fileno()

    def _on_socket_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any
                                    ) -> None:
        if self._writer_fd == sock.fileno():
            self._writer_fd = None
            self._in_loop(self._loop.remove_writer, sock.fileno())  # type: ignore[union-attr]

    def _on_writable(self) -> None:
        client = self._client
        if client is None:
            return
        try:
            client.loop_write()
        except Exception as exc:
            self._lost(f"write failed: {type(exc).__name__}: {exc}")

    def _drop(self, client: mqtt.Client) -> None:
        with contextlib.suppress(Exception):
            sock = client.socket()
            if sock is not None:
                self._remove_fd(sock.fileno())
                sock.close()
