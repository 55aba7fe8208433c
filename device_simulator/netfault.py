"""A loopback TCP proxy that injects network faults: outages, cut responses, delays.

Strategy: the uplink's exactly-once promise is only as good as the failures it has seen.
This proxy sits between a client and a server on loopback and can: refuse and drop every
connection for a while (an outage, ``down()``/``up()``), close the client side right
after the server answered but before the answer is passed on (``cut_next_responses``:
the request *was* processed, the client never learns it), and delay traffic. It runs on
its own asyncio loop in a thread so synchronous tests and the demo can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass


@dataclass
class ProxyStats:
    connections: int = 0
    refused: int = 0
    cut_responses: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


class FaultProxy:
    """``FaultProxy(listen_port, target_host, target_port).start()``; ``stop()`` at the end."""

    def __init__(self, listen_port: int, target_host: str, target_port: int,
                 listen_host: str = "127.0.0.1") -> None:
        self.listen = (listen_host, listen_port)
        self.target = (target_host, target_port)
        self.stats = ProxyStats()
        self.delay_s = 0.0
        self._down = False
        self._cut_budget = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="fault-proxy")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # -- control (thread-safe) -----------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def down(self) -> None:
        """Start an outage: drop every open connection and refuse new ones."""
        self._down = True
        self._loop.call_soon_threadsafe(self._drop_all)

    def up(self) -> None:
        self._down = False

    @property
    def is_down(self) -> bool:
        return self._down

    def cut_next_responses(self, n: int = 1) -> None:
        """Let the next ``n`` responses reach the proxy, then drop them and the connection."""
        self._cut_budget += n

    def drop_connections(self) -> None:
        self._loop.call_soon_threadsafe(self._drop_all)

    # -- the proxy -----------------------------------------------------------------------

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, *self.listen)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._drop_all()

    def _drop_all(self) -> None:
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._down:
            self.stats.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self.stats.refused += 1
            writer.transport.abort()
            return
        self.stats.connections += 1
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer, upstream=True),
                                 self._pipe(up_reader, writer, upstream=False))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                with contextlib.suppress(Exception):
                    w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    upstream: bool) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                if not upstream and self._cut_budget > 0:
                    # The server processed the request and answered; the client never hears.
                    self._cut_budget -= 1
                    self.stats.cut_responses += 1
                    writer.transport.abort()
                    break
                if self._down:
                    writer.transport.abort()
                    break
                writer.write(data)
                await writer.drain()
                if upstream:
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.transport.abort()
