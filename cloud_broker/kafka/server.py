"""The Kafka listener: one asyncio server, one task per connection, no threads.

Strategy: a connection reads size-prefixed frames (a declared size above
``max_request_bytes`` or below a header closes the connection before anything is
allocated), parses them with ``wire.parse_request`` and answers in order, as Kafka clients
expect. A frame we cannot read closes the connection (Kafka does the same); an unknown API
or version is answered with ``UNSUPPORTED_VERSION`` where the client can read it
(ApiVersions v0), else the connection is closed. Until SASL/PLAIN succeeds only
ApiVersions and the SASL APIs are served; the password is a broker token (``read``), and
its topic and group scopes then apply to every request. Connections are capped at
``max_connections`` (the newest is refused), and an idle one is closed after
``IDLE_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from ..auth import AuthError, Principal
from . import group_handlers as gh
from . import handlers as h
from .readahead import ReadAhead
from .service import BrokerView
from .wire import (
    API_VERSIONS,
    BadRequest,
    UnsupportedVersion,
    api_keys,
    api_versions_v0_frame,
    parse_request,
    response_frame,
)

log = logging.getLogger(__name__)
#: who a Kafka client is with ``[kafka] sasl = false``: a reader of every topic and group
#: (the listener serves reads only; produce is refused whoever asks)
KAFKA_ANONYMOUS = Principal("*", frozenset({"read"}))
IDLE_TIMEOUT_S = 600.0
#: a connection that has not authenticated by then is closed, so sockets that never log
#: in cannot hold the listener's connection slots (max_connections) for IDLE_TIMEOUT_S
AUTH_TIMEOUT_S = 10.0
UNSUPPORTED_VERSION, SASL_AUTH_FAILED, ILLEGAL_SASL_STATE = 35, 58, 34
UNSUPPORTED_SASL_MECHANISM = 33
_PRE_AUTH = {API_VERSIONS, 17, 36}


class KafkaServer:
    def __init__(self, broker: BrokerView) -> None:
        cfg = broker.config.kafka
        assert cfg is not None
        self.broker, self.cfg = broker, cfg
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        ctx = None
        bc = self.broker.config
        if bc.tls_cert is not None and bc.tls_key is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(bc.tls_cert, bc.tls_key)
        self.server = await asyncio.start_server(self._accept, self.cfg.host, self.cfg.port,
                                                 ssl=ctx, limit=1 << 16)
        log.info("kafka listener on %s:%d", self.cfg.host, self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in list(self.connections):
            t.cancel()
        for t in list(self.connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _accept(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self.connections) >= self.cfg.max_connections:
            writer.close()
            return
        self.connections.add(task)
        try:
            await Connection(self, reader, writer).run()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, BadRequest,
                ssl.SSLError) as exc:
            log.debug("kafka connection closed: %s", exc)
        except asyncio.CancelledError:
            pass  # the listener stops: the connection ends with it
        except Exception:  # one bad connection must not end the listener (G9)
            log.exception("kafka connection failed")
        finally:
            self.connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class Connection:
    def __init__(self, server: KafkaServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.broker, self.cfg = server.broker, server.cfg
        self.reader, self.writer = reader, writer
        self.principal: Principal | None = None
        if not self.broker.tokens.required:
            self.principal = self.broker.tokens.authenticate(None)
        elif not self.cfg.sasl:  # [kafka] sasl = false: consumers need no token here
            self.principal = KAFKA_ANONYMOUS
        self.mechanism: str | None = None
        self.raw_sasl = False  # SaslHandshake v0: the next frame is the bare token
        self.ahead = ReadAhead()  # the next Fetch answer, read early (see readahead)

    async def run(self) -> None:
        try:
            await self._serve()
        finally:
            self.ahead.drop()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        auth_by = loop.time() + AUTH_TIMEOUT_S
        while True:
            if self.principal is None and loop.time() >= auth_by:
                raise BadRequest(f"not authenticated within {AUTH_TIMEOUT_S:g} s")
            wait = IDLE_TIMEOUT_S if self.principal is not None else auth_by - loop.time()
            async with asyncio.timeout(wait):
                head = await self.reader.readexactly(4)
            size = int.from_bytes(head, "big", signed=True)
            if not 8 <= size <= self.cfg.max_request_bytes:
                raise BadRequest(f"declared size {size} out of range")
            async with asyncio.timeout(IDLE_TIMEOUT_S):
                frame = await self.reader.readexactly(size)
            if self.raw_sasl:
                self.raw_sasl = False
                await self._authenticate(bytes(frame))
                self.writer.write(b"\0\0\0\0")
                await self.writer.drain()
                continue
            self.writer.writelines(await self._answer(frame))
            await self.writer.drain()

    async def _answer(self, frame: bytes) -> list[bytes]:
        try:
            header, req = parse_request(frame)
        except UnsupportedVersion as exc:
            if exc.api_key == API_VERSIONS:
                return api_versions_v0_frame(exc.correlation_id, UNSUPPORTED_VERSION)
            raise BadRequest(str(exc)) from exc
        key, version = header.request_api_key, header.request_api_version
        if self.principal is None and key not in _PRE_AUTH:
            raise BadRequest(f"api {key} before SASL authentication")
        data = await self._dispatch(key, version, req, header.client_id or "")
        return response_frame(key, version, header.correlation_id, data)

    async def _dispatch(self, key: int, version: int, req: Any, client_id: str
                        ) -> dict[str, Any]:
        b, who = self.broker, self.principal
        if key == API_VERSIONS:
            return {"api_keys": api_keys()}
        if key == 17:
            self.mechanism = req.mechanism
            self.raw_sasl = version == 0 and req.mechanism == "PLAIN"
            return {"error_code": 0 if req.mechanism == "PLAIN"
                    else UNSUPPORTED_SASL_MECHANISM, "mechanisms": ["PLAIN"]}
        if key == 36:
            if self.mechanism != "PLAIN":
                return {"error_code": ILLEGAL_SASL_STATE, "error_message": "handshake first"}
            ok = await self._authenticate(bytes(req.auth_bytes))
            return {"error_code": 0 if ok else SASL_AUTH_FAILED,
                    "error_message": None if ok else "authentication failed"}
        assert who is not None
        if key == 1:
            return await h.fetch(b, who, req, self.ahead)
        if key == 3:
            return h.metadata(b, who, req)
        if key == 2:
            return await h.list_offsets(b, who, req)
        if key == 0:
            return h.produce(req)
        if key == 10:
            return gh.find_coordinator(b, who, req)
        if key == 11:
            return await gh.join_group(b, who, req, client_id)
        if key == 14:
            return await gh.sync_group(b, who, req)
        if key == 12:
            return gh.heartbeat(b, who, req)
        if key == 13:
            return gh.leave_group(b, who, req)
        if key == 8:
            return await gh.offset_commit(b, who, req)
        if key == 9:
            return gh.offset_fetch(b, who, req)
        raise BadRequest(f"api {key} is not served")

    async def _authenticate(self, auth: bytes) -> bool:
        """SASL/PLAIN: ``authzid NUL username NUL password``; the password is a token."""
        parts = auth.split(b"\0")
        if len(parts) != 3 or len(auth) > 4096:
            return False
        try:
            token = parts[2].decode()
            who = await asyncio.to_thread(self.broker.tokens.authenticate, f"Bearer {token}")
        except (AuthError, UnicodeDecodeError):
            return False
        if not who.may("read"):
            return False
        self.principal = who
        return True


__all__ = ["KafkaServer"]
