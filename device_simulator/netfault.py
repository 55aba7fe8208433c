"""A loopback TCP proxy that injects network faults: outages, cut responses, delays.

Strategy: the uplink's exactly-once promise is only as good as the failures it has seen.
This proxy sits between a client and a server on loopback and can, on command: refuse and
drop every connection for a while (an outage, ``down()``/``up()``), close the client side
right after the server answered but before the answer is passed on
(``cut_next_responses``: the request *was* processed, the client never learns it), and
delay traffic. With ``chaos=RandomFaults(...)`` it also does these at random, per chunk,
from a seeded generator: **drop** (a client chunk forwarded only in part, then both sides
closed), **cut** (a server chunk thrown away and both sides closed) and **delay** (a chunk
held back, sometimes past the client's timeout so a retry may overtake the original).
It runs on its own asyncio loop in a thread so synchronous tests and the demo can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from dataclasses import dataclass


@dataclass
class ProxyStats:
    connections: int = 0
    refused: int = 0
    cut_responses: int = 0  # on command and at random
    drops: int = 0
    delays: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


@dataclass
class RandomFaults:
    """Per-chunk probabilities of the random faults."""

    drop: float = 0.0  # per client chunk
    cut: float = 0.0  # per server chunk
    delay: float = 0.0  # per chunk, either direction
    max_delay_s: float = 0.2
    long_delay: float = 0.0  # share of delays that last ``long_delay_s`` (past a timeout)
    long_delay_s: float = 0.0


class FaultProxy:
    """``FaultProxy(listen_port, target_host, target_port).start()``; ``stop()`` at the end."""

    def __init__(self, listen_port: int, target_host: str, target_port: int,
                 listen_host: str = "127.0.0.1", *, chaos: RandomFaults | None = None,
                 seed: int = 0) -> None:
        self.listen = (listen_host, listen_port)  # port 0: any free port, see ``port``
        self.target = (target_host, target_port)
        self.chaos = chaos
        self._rng = random.Random(seed)
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

    @property
    def port(self) -> int:
        """The port the proxy listens on (once started)."""
        return self.listen[1]

    def cut_next_responses(self, n: int = 1) -> None:
        """Let the next ``n`` responses reach the proxy, then drop them and the connection."""
        self._cut_budget += n

    def drop_connections(self) -> None:
        self._loop.call_soon_threadsafe(self._drop_all)

    # -- the proxy -----------------------------------------------------------------------

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, *self.listen)
        self.listen = (self.listen[0], self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._drop_all()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

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
                if self.chaos is not None and await self._chaos(data, writer, upstream):
                    break
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

    async def _chaos(self, data: bytes, writer: asyncio.StreamWriter, upstream: bool) -> bool:
        """Apply the random faults to one chunk; True when the connection was closed."""
        f, rng = self.chaos, self._rng
        assert f is not None
        if upstream and rng.random() < f.drop:
            self.stats.drops += 1
            writer.write(data[: rng.randrange(len(data))])
            writer.transport.abort()
            return True
        if not upstream and rng.random() < f.cut:
            self.stats.cut_responses += 1
            writer.transport.abort()
            return True
        if rng.random() < f.delay:
            self.stats.delays += 1
            long = rng.random() < f.long_delay
            await asyncio.sleep(f.long_delay_s if long else rng.uniform(0, f.max_delay_s))
        return False
