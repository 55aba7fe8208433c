"""A loopback TCP proxy for uplink fault tests: drops, cut responses, delays.

Strategy: faults are injected at the byte level between the forwarder and a real broker
process, where HTTP knows nothing about them. Per chunk, with seeded probabilities:

- **drop**: a chunk from the client is forwarded only in part (or not at all), then both
  sides are closed, so the broker never sees a whole request;
- **cut**: a chunk from the broker (the start of a response, sent only after the batch
  was made durable) is thrown away and both sides are closed: the request *was* processed
  and the client never learns it, the case exactly-once is about;
- **delay**: a chunk waits before it is passed on, in either direction, sometimes past the
  client's timeout, so a retry may overtake the original request.

It runs its own asyncio loop in a daemon thread, so a test can drive it from sync code or
from another loop. ``faults=False`` turns it into a plain pipe.
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
    drops: int = 0
    cuts: int = 0
    delays: int = 0


@dataclass
class Faults:
    drop: float = 0.0  # per client chunk
    cut: float = 0.0  # per broker chunk
    delay: float = 0.0  # per chunk, either direction
    max_delay_s: float = 0.2
    long_delay: float = 0.0  # share of delays that last ``long_delay_s`` (past a timeout)
    long_delay_s: float = 0.0


class ChaosProxy:
    def __init__(self, target_port: int, faults: Faults, *, seed: int = 0,
                 target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.faults = faults
        self.enabled = True
        self.stats = ProxyStats()
        self.port = 0
        self._rng = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="chaos-proxy")
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    def start(self) -> ChaosProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._conns):
                w.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> ChaosProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the pipe ---------------------------------------------------------------------

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter
                      ) -> None:
        self.stats.connections += 1
        try:
            sreader, swriter = await asyncio.open_connection(*self.target)
        except OSError:
            cwriter.close()
            return
        self._conns.update((cwriter, swriter))

        def close_both() -> None:
            for w in (cwriter, swriter):
                w.close()

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       upstream: bool) -> None:
            try:
                while data := await reader.read(65536):
                    if self.enabled:
                        f = self.faults
                        if upstream and self._rng.random() < f.drop:
                            self.stats.drops += 1
                            writer.write(data[: self._rng.randrange(len(data))])
                            close_both()
                            return
                        if not upstream and self._rng.random() < f.cut:
                            self.stats.cuts += 1
                            close_both()
                            return
                        if self._rng.random() < f.delay:
                            self.stats.delays += 1
                            long = self._rng.random() < f.long_delay
                            await asyncio.sleep(f.long_delay_s if long
                                                else self._rng.uniform(0, f.max_delay_s))
                    writer.write(data)
                    await writer.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                close_both()

        try:
            await asyncio.gather(pump(creader, swriter, True), pump(sreader, cwriter, False))
        finally:
            self._conns.difference_update((cwriter, swriter))
