"""The uplink over HTTP: one method, ``send(topic, batch) -> Ack | Refusal``.

The batch comes encoded (``outgoing.Outgoing``: CBOR, compressed as the uplink config
says), so the one place that chooses the compression is whoever encodes it: the
forwarder, or a test with ``Outgoing.encode``.

Strategy: a thin httpx adapter around the sans-IO ``uplink`` codec, like an httpx
transport: the forwarder never sees HTTP. Failures are sorted into two kinds at this
boundary: ``RetryableUplinkError`` (connect errors, timeouts, 5xx, 429: retried forever
with backoff, nothing is dropped) and ``FatalUplinkError`` (other 4xx: a configuration or
protocol problem that retrying cannot fix; the stream stops loudly). 409 is the protocol's
gap refusal and comes back as a ``Refusal``. A TLS failure (the cloud's certificate is not
trusted, or the handshake fails) is a ``TlsUplinkError``: still retried, since the fix
(``uplink.ca_file``, a renewed certificate) may come from either side, but never as a
transient error: the forwarder backs off to ``retry_max_s`` at once and ``/healthz``
reports it until a send succeeds. ``MemoryUplink`` is the in-process implementation for
tests.

Failover: ``HttpUplink`` may be given several broker URLs (the nodes of one cluster,
sharing one partition store). ``Endpoints`` keeps it on one node while that node answers
and moves it to the next on any retryable failure (connect error, timeout, 5xx, 429, TLS);
the forwarder's backoff paces the attempts, so a dead node costs one failed attempt per
switch, not a storm. Which offsets go, and what a reply means, stays in ``uplink``'s
``SenderState``: a batch retried on another node is a duplicate there (the nodes share the
positions), a gap is refused with the expected offset, exactly as on one node.
"""

from __future__ import annotations

import json
import logging
import ssl
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from tomlconf import mask_secrets
from uplink import (
    Ack,
    Batch,
    MalformedReply,
    Refusal,
    decode_ack,
    decode_refusal,
)

from .outgoing import Outgoing
from .ratelimit import TokenBucket
from .status import masked_url as mask_url
from .uplink_conn import ConnectionFailed, LeanClient

log = logging.getLogger(__name__)


class UplinkError(Exception):
    """Base of the uplink's failures."""


class RetryableUplinkError(UplinkError):
    """The cloud could not be reached or was not ready; try again later."""


class TlsUplinkError(RetryableUplinkError):
    """TLS with the cloud failed (untrusted certificate, wrong name, no TLS there): a
    configuration problem, reported as such, retried slowly until someone fixes it."""


class FatalUplinkError(UplinkError):
    """The cloud refused the request for a reason retrying cannot fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Uplink(Protocol):
    async def send(self, topic: str, batch: Outgoing) -> Ack | Refusal: ...

    async def aclose(self) -> None: ...


class Endpoints:
    """The broker URLs and the one in use: sticky while it answers, the next one after a
    retryable failure. Only a failure seen on the URL in use moves it, so the replies of
    several batches that were in flight to a dead node move it once, not once each."""

    def __init__(self, urls: Sequence[str]) -> None:
        if not urls:
            raise ValueError("at least one uplink URL is needed")
        self.urls = tuple(u.rstrip("/") for u in urls)
        self.index = 0
        self.switches = 0  # how many times the uplink moved to another URL

    @property
    def current(self) -> str:
        return self.urls[self.index]

    def failed(self, url: str) -> None:
        """A send to ``url`` failed retryably: move on if it is still the one in use."""
        if len(self.urls) > 1 and url == self.current:
            self.index = (self.index + 1) % len(self.urls)
            self.switches += 1
            log.warning("uplink: %s failed, switching to %s", mask_secrets(url),
                        mask_secrets(self.current))


class HttpUplink:
    """POST /v1/ingest/{topic} with keep-alive; see docs/protocol.md for the bytes.

    ``url`` is one broker URL or the list of a cluster's nodes (``Endpoints``).
    Requests go through ``uplink_conn.LeanClient`` (h11 on asyncio streams, a tenth of
    httpx's CPU per request; one per node, made when first used) unless the environment
    names an HTTP proxy for the cloud's host (``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``
    without a matching ``NO_PROXY``): then httpx, which speaks to proxies, sends them.
    ``client`` forces one ("lean", "httpx")."""

    def __init__(self, url: str | Sequence[str], token: str | None = None, *,
                 timeout_s: float = 10.0,
                 ca_file: Path | None = None, max_connections: int = 8,
                 bandwidth: TokenBucket | None = None, client: str | None = None) -> None:
        self.endpoints = Endpoints([url] if isinstance(url, str) else url)
        self.bandwidth = bandwidth
        headers = {"content-type": "application/cbor", "accept": "application/cbor"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        verify: ssl.SSLContext | bool = True
        if ca_file is not None:
            verify = ssl.create_default_context(cafile=str(ca_file))
        proxied = any(_proxied(u) for u in self.endpoints.urls)
        self.client = client or ("httpx" if proxied else "lean")
        self._headers, self._verify = headers, verify
        self._timeout_s, self._max_connections = timeout_s, max_connections
        self._lean: dict[str, LeanClient] = {}
        self._client = httpx.AsyncClient(
            headers=headers, timeout=timeout_s, verify=verify,
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
        )
        self.bytes_sent = 0

    @property
    def url(self) -> str:
        """The broker URL in use."""
        return self.endpoints.current

    async def send(self, topic: str, batch: Outgoing) -> Ack | Refusal:
        data, encoding = batch.body, batch.encoding  # encoded once, by whoever built it
        if self.bandwidth is not None:
            await self.bandwidth.take(len(data))
        url = self.endpoints.current
        try:
            if self.client == "lean":
                return await self._send_lean(url, topic, data, encoding)
            return await self._post(url, topic, data, encoding)
        except RetryableUplinkError:
            self.endpoints.failed(url)
            raise

    def _lean_for(self, url: str) -> LeanClient:
        lean = self._lean.get(url)
        if lean is None:
            # without a ca_file, the CAs httpx would trust (certifi, SSL_CERT_FILE)
            verify = self._verify
            context = verify if isinstance(verify, ssl.SSLContext) else (
                httpx.create_ssl_context() if url.startswith("https:") else None)
            lean = self._lean[url] = LeanClient(
                url, self._headers, timeout_s=self._timeout_s,
                max_connections=self._max_connections, ssl_context=context)
        return lean

    async def _post(self, url: str, topic: str, data: bytes, encoding: str) -> Ack | Refusal:
        try:
            resp = await self._client.post(f"{url}/v1/ingest/{topic}", content=data,
                                           headers={"content-encoding": encoding})
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            tls = _tls_failure(exc)
            if tls is not None:
                raise TlsUplinkError(tls) from exc
            raise RetryableUplinkError(f"{type(exc).__name__}: {exc}") from exc
        self.bytes_sent += len(data)
        return _outcome(resp.status_code, resp.content, lambda: _error_text(resp))

    async def _send_lean(self, url: str, topic: str, data: bytes, encoding: str
                         ) -> Ack | Refusal:
        try:
            reply = await self._lean_for(url).post(f"/v1/ingest/{topic}", data,
                                                   {"content-encoding": encoding})
        except ConnectionFailed as exc:
            # (the client ended the older requests to that node: uplink_conn)
            tls = _tls_failure(exc)
            if tls is not None:
                raise TlsUplinkError(tls) from exc
            raise RetryableUplinkError(str(exc)) from exc
        self.bytes_sent += len(data)
        return _outcome(reply.status, reply.body, lambda: _error_body_text(reply.body))

    async def aclose(self) -> None:
        for lean in self._lean.values():
            await lean.aclose()
        await self._client.aclose()

    async def probe(self) -> str | None:
        """Why the cloud cannot be reached (``GET /healthz``), or None when it answers."""
        try:
            await self._client.get(f"{self.url}/healthz", timeout=5.0)
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            return _tls_failure(exc) or f"{type(exc).__name__}: {exc}"
        return None


async def announce(uplink: Uplink, cfg: Any) -> None:
    """At start, warn about an uplink that cannot work: no token (a broker with auth
    refuses every batch), or a cloud that does not answer. Readings are kept either way;
    this only makes the problem visible before the first batch is due."""
    if not cfg.token:
        log.warning("uplink.token is not set: a cloud broker with auth (the default) "
                    "refuses every batch with 401; set it, or EDGE_AGENT__UPLINK__TOKEN")
    probe = getattr(uplink, "probe", None)
    reason = await probe() if probe is not None else None
    if reason is not None:
        log.warning("uplink %s does not answer (%s): readings are kept in the local log "
                    "until it does; check uplink.url", mask_url(cfg.url), reason)
    elif probe is not None:
        log.info("uplink %s answers", mask_url(cfg.url))


def _outcome(status: int, body: bytes, message: Callable[[], str]) -> Ack | Refusal:
    """The reply of one request: an ack (200), a refusal (409), else the error."""
    try:
        if status == 200:
            return decode_ack(body)
        if status == 409:
            return decode_refusal(body)
    except MalformedReply as exc:
        raise RetryableUplinkError(f"unreadable reply ({status}): {exc}") from exc
    if status == 429 or status >= 500:
        raise RetryableUplinkError(f"HTTP {status}: {message()}")
    raise FatalUplinkError(status, message())


def _proxied(url: str) -> bool:
    """Whether the environment sends requests to ``url`` through a proxy."""
    proxies = urllib.request.getproxies_environment()
    scheme = urlsplit(url).scheme
    if not (proxies.get(scheme) or proxies.get("all")):
        return False
    host = urlsplit(url).hostname or ""
    return not urllib.request.proxy_bypass_environment(host, proxies)


_TRANSIENT_SSL = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


def _tls_failure(exc: BaseException) -> str | None:
    """The TLS error behind an httpx error (it wraps the ssl module's), or None."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (f"TLS certificate verification failed: {cause} "
                    "(is uplink.ca_file the CA that signed the cloud's certificate?)")
        if isinstance(cause, _TRANSIENT_SSL):
            return None  # a connection cut mid-stream, not a TLS setup problem
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake failed: {cause}"
        cause = cause.__cause__ or cause.__context__
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return f"TLS certificate verification failed: {text}"
    return None


def _error_text(resp: httpx.Response) -> str:
    return _error_body_text(resp.content)


def _error_body_text(content: bytes) -> str:
    """The message of an error body (the broker's ``{"error", "field"}`` JSON)."""
    try:
        body = json.loads(content)
        if isinstance(body, dict) and "error" in body:
            field = body.get("field")
            return f"{body['error']}" + (f" (field {field})" if field else "")
    except (ValueError, RecursionError):
        pass
    return content[:200].decode("utf-8", "replace")


class MemoryUplink:
    """An Uplink calling a coroutine in-process (tests link it to a cloud-side handler)."""

    def __init__(self, handler: Callable[[str, Batch], Awaitable[Ack | Refusal]]) -> None:
        self._handler = handler

    async def send(self, topic: str, batch: Outgoing) -> Ack | Refusal:
        return await self._handler(topic, batch.decode())

    async def aclose(self) -> None:
        return None
