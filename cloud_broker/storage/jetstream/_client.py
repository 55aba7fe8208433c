"""The store's one NATS connection, on its own event loop thread, and the error mapping.

Strategy: the partition store interface is called from the broker's event loop, from
worker threads and (in tests) from plain code with no loop at all, so the nats-py client
cannot live on any caller's loop. It lives on a daemon thread of its own; ``run`` calls a
coroutine there and blocks for it (worker threads, startup), ``call`` awaits it from any
other loop. Every nats-py exception leaves through ``unavailable``: a ``LogError`` the
broker already treats as "not now, retry" (an HTTP 503 to the edge), never a foreign type.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from shared_log import LogError

log = logging.getLogger(__name__)
T = TypeVar("T")
#: err_code of a publish refused by ``Nats-Expected-Last-Sequence``
WRONG_LAST_SEQUENCE = 10071
#: err_code of "no message found" (a get of a deleted or future sequence)
NO_MESSAGE = 10037
STREAM_NOT_FOUND = 10059


class JetStreamUnavailable(LogError):
    """The cluster cannot do it now (no quorum, no connection, a timeout): retry later."""

    retry_later = True


@dataclass(frozen=True)
class Connection:
    """How to reach the cluster: ``servers`` (any node), credentials, timeouts."""

    servers: tuple[str, ...]
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    creds_file: str | None = None
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 5.0


def unavailable(exc: BaseException, what: str) -> JetStreamUnavailable:
    return JetStreamUnavailable(f"JetStream {what}: {type(exc).__name__}: {exc}")


#: what a NATS call may raise that means "not now"
NATS_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.Error, nats.js.errors.Error, TimeoutError, asyncio.TimeoutError, OSError)


class ClientThread:
    """A connected nats-py client on a private event loop thread."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="jetstream-client",
                                        daemon=True)
        self._thread.start()
        self.nc: Client = self.run(self._connect(), conn.connect_timeout_s + 5)
        self.js: JetStreamContext = self.nc.jetstream(timeout=conn.request_timeout_s)
        self.closed = False

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _connect(self) -> Client:
        c = self.conn
        opts: dict[str, Any] = {
            "servers": list(c.servers), "connect_timeout": c.connect_timeout_s,
            "max_reconnect_attempts": -1, "reconnect_time_wait": 0.5,
            "allow_reconnect": True, "name": "cloud-broker-store",
            # a frozen server (not a closed socket) is noticed in ~10 s, not nats-py's 4 min
            "ping_interval": 5, "max_outstanding_pings": 2,
        }
        if c.user is not None:
            opts["user"], opts["password"] = c.user, c.password
        if c.token is not None:
            opts["token"] = c.token
        if c.creds_file is not None:
            opts["user_credentials"] = c.creds_file

        async def quiet(exc: Exception) -> None:  # reconnects are expected in a cluster
            log.debug("nats: %s", exc)
        opts["error_cb"] = quiet
        try:
            return await nats.connect(**opts)
        except NATS_ERRORS as exc:
            raise unavailable(exc, f"connect to {list(c.servers)}") from exc

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the client loop and wait for it (not from that loop)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("ClientThread.run called on its own loop")
        fut = self.submit(coro)
        try:
            return fut.result(timeout if timeout is not None else
                              self.conn.request_timeout_s * 4)
        except concurrent.futures.TimeoutError as exc:
            fut.cancel()
            raise unavailable(exc, "request timed out") from exc

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` run on the client loop from another event loop."""
        return await asyncio.wrap_future(self.submit(coro))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.run(self.nc.close(), 5)
        except (JetStreamUnavailable, *NATS_ERRORS) as exc:
            log.debug("closing the NATS connection: %s", exc)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()
