"""A loopback TCP load balancer for cluster tests: one address in front of broker nodes.

Strategy: what a Kubernetes Service or a round-robin balancer does, and no more. Each new
client connection goes to the next backend in turn; a backend that refuses the connect
is skipped for that connection (the next one is tried), so a killed node costs a client
one reconnect, not an error, as long as another node lives. Bytes are piped both ways
until either side closes; a connection to a node that dies is cut, and the client's
retry opens a new one. Runs its own asyncio loop in a thread so synchronous tests can
use it; ``stop()`` closes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading


class RoundRobinProxy:
    def __init__(self, backends: list[int], host: str = "127.0.0.1") -> None:
        self.backends = list(backends)
        self.host = host
        self.port = 0
        self.connections = [0] * len(backends)  # per backend, connections made
        self._next = itertools.cycle(range(len(backends)))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> RoundRobinProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in range(len(self.backends)):
            i = next(self._next)
            with contextlib.suppress(OSError):
                pair = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.backends[i]), 2.0)
                self.connections[i] += 1
                return pair
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        upstream = None
        try:
            upstream = await self._connect()
            if upstream is None:
                return  # every backend refused: the client sees a closed connection
            self._writers.add(upstream[1])
            await asyncio.gather(self._pipe(reader, upstream[1]),
                                 self._pipe(upstream[0], writer))
        finally:
            for w in (writer, upstream[1] if upstream else None):
                if w is not None:
                    self._writers.discard(w)
                    w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
