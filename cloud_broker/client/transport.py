"""The consumer client's HTTP calls: one method per endpoint, retried with tenacity.

Strategy: httpx does the I/O and tenacity the reconnecting: a call that fails to connect,
is cut, or gets 503 is retried with exponential backoff (50 ms doubling to 2 s) for up to
``retry_for_s``; every other refusal maps at once to an exception of ours, so callers
never see httpx types. The exception tree::

    ConsumerError                 status and the broker's JSON error body
     ├── OffsetOutOfRangeError    416: start_offset / end_offset say what is valid
     ├── RebalanceError           409 stale_generation, unknown_member,
     │                            rebalance_in_progress or member_in_use: join again
     └── BrokerUnavailable        no answer (or 503) for retry_for_s
"""

from __future__ import annotations

from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from ..record_codec import FetchResponse, MalformedResponse, decode_cbor

REJOIN_CODES = ("stale_generation", "unknown_member", "rebalance_in_progress",
                "member_in_use")


class ConsumerError(Exception):
    def __init__(self, message: str, status: int | None = None,
                 body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body or {}


class OffsetOutOfRangeError(ConsumerError):
    @property
    def start_offset(self) -> int:
        return int(self.body.get("start_offset", 0))

    @property
    def end_offset(self) -> int:
        return int(self.body.get("end_offset", 0))


class RebalanceError(ConsumerError):
    """The group moved on (new generation, or this member expired): join again."""


class BrokerUnavailable(ConsumerError):
    pass


#: exit codes of the commands that talk to a broker (cloud-broker consume, device-sim
#: verify, edge-agent top): one meaning each, documented in docs/configuration.md
EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_REFUSED = 1, 2, 3, 4


def exit_code(exc: ConsumerError) -> int:
    """The exit code a command reports for ``exc``: 4 the token was refused (401/403),
    3 the broker could not be reached, 1 any other refusal (unknown topic...)."""
    if exc.status in (401, 403):
        return EXIT_REFUSED
    if isinstance(exc, BrokerUnavailable):
        return EXIT_UNREACHABLE
    return EXIT_FAILED


class _Unavailable(Exception):
    """503 from the broker: worth retrying."""


class BrokerClient:
    """Plain calls to one broker. ``await close()`` when done."""

    def __init__(self, url: str, token: str | None = None, retry_for_s: float = 60.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.retry_for_s = retry_for_s
        self._http = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers,
                                       timeout=httpx.Timeout(30.0, connect=5.0),
                                       transport=transport)

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, stream: bool = False,
                       **kwargs: Any) -> httpx.Response:
        """Send with retries; with ``stream`` the body of a 2xx answer is left unread."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type((httpx.TransportError, _Unavailable)),
            wait=wait_exponential(multiplier=0.05, max=2.0),
            stop=stop_after_delay(self.retry_for_s), reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    req = self._http.build_request(method, path, **kwargs)
                    resp = await self._http.send(req, stream=stream)
                    if resp.status_code >= 400 and stream:
                        await resp.aread()
                    if resp.status_code == 503:
                        raise _Unavailable(resp.text[:200])
        except (httpx.TransportError, _Unavailable) as exc:
            raise BrokerUnavailable(f"cannot reach the broker at {self._http.base_url} "
                                    f"({method} {path}) for {self.retry_for_s:g}s: "
                                    f"{_reason(exc)}") from exc
        if resp.status_code >= 400:
            raise _error(resp)
        return resp

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return (await self._request(method, path, **kwargs)).json()

    # -- endpoints -----------------------------------------------------------------------

    async def fetch(self, topic: str, partition: int, offset: int, max_records: int = 1000,
                    wait_ms: int = 0, max_bytes: int | None = None) -> FetchResponse:
        pending = await self.open_fetch(topic, partition, offset, max_records, wait_ms,
                                        max_bytes)
        return await pending.result()

    async def open_fetch(self, topic: str, partition: int, offset: int,
                         max_records: int = 1000, wait_ms: int = 0,
                         max_bytes: int | None = None) -> PendingFetch:
        """Send a fetch and return once its headers arrived: ``next_offset`` is known,
        the body is not read yet (``await result()``, or ``aclose()`` to drop it)."""
        params: dict[str, Any] = {"offset": offset, "max_records": max_records,
                                  "wait_ms": wait_ms}
        if max_bytes is not None:
            params["max_bytes"] = max_bytes
        resp = await self._request(
            "GET", f"/v1/topics/{topic}/partitions/{partition}/records", stream=True,
            params=params, timeout=httpx.Timeout(30.0 + wait_ms / 1000, connect=5.0))
        return PendingFetch(resp)

    async def topic(self, topic: str) -> dict[str, Any]:
        return await self._json("GET", f"/v1/topics/{topic}")

    async def join(self, group: str, member_id: str, topics: list[str],
                   session_timeout_ms: int, assignor: str | None,
                   member_secret: str | None = None) -> dict[str, Any]:
        """The answer carries ``member_secret``: send it with every later call."""
        body: dict[str, Any] = {"member_id": member_id, "topics": topics,
                                "session_timeout_ms": session_timeout_ms}
        if assignor:
            body["assignor"] = assignor
        if member_secret:
            body["member_secret"] = member_secret
        return await self._json("POST", f"/v1/groups/{group}/join", json=body,
                                timeout=httpx.Timeout(60.0, connect=5.0))  # a long-poll

    async def heartbeat(self, group: str, member_id: str, generation: int,
                        member_secret: str) -> dict[str, Any]:
        return await self._json("POST", f"/v1/groups/{group}/heartbeat",
                                json={"member_id": member_id, "generation": generation,
                                      "member_secret": member_secret})

    async def commit(self, group: str, member_id: str | None, generation: int | None,
                     offsets: list[tuple[str, int, int]],
                     member_secret: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"offsets": [{"topic": t, "partition": p, "offset": o}
                                            for t, p, o in offsets]}
        if member_id is not None:
            body.update(member_id=member_id, generation=generation,
                        member_secret=member_secret)
        return await self._json("POST", f"/v1/groups/{group}/commit", json=body)

    async def committed(self, group: str) -> dict[tuple[str, int], int]:
        doc = await self._json("GET", f"/v1/groups/{group}/offsets")
        return {(o["topic"], o["partition"]): o["offset"] for o in doc["offsets"]}

    async def leave(self, group: str, member_id: str, member_secret: str) -> None:
        await self._json("POST", f"/v1/groups/{group}/leave",
                         json={"member_id": member_id, "member_secret": member_secret})


class PendingFetch:
    """A fetch whose headers arrived and whose body is still on the wire."""

    def __init__(self, resp: httpx.Response) -> None:
        self._resp = resp
        try:
            self.next_offset = int(resp.headers["x-next-offset"])
        except (KeyError, ValueError):
            self.next_offset = -1  # an older broker: the body says

    async def result(self) -> FetchResponse:
        try:
            body = await self._resp.aread()
        except httpx.TransportError as exc:
            raise BrokerUnavailable(f"fetch cut while reading the body: {exc!r}") from exc
        finally:
            await self._resp.aclose()
        try:
            return decode_cbor(body)
        except MalformedResponse as exc:
            raise ConsumerError(str(exc), self._resp.status_code) from exc

    async def aclose(self) -> None:
        await self._resp.aclose()


def _reason(exc: Exception) -> str:
    """A transport failure in a few words (httpx's repr is noisy, its str may be empty)."""
    cause = exc.__cause__ or exc.__context__
    text = str(exc) or (str(cause) if cause else "") or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:200]


def _error(resp: httpx.Response) -> ConsumerError:
    try:
        body = resp.json()
        message = str(body.get("error", resp.text)) if isinstance(body, dict) else resp.text
    except ValueError:
        body, message = {}, resp.text[:300]
    body = body if isinstance(body, dict) else {}
    message = f"HTTP {resp.status_code}: {message}"
    if resp.status_code == 416:
        return OffsetOutOfRangeError(message, 416, body)
    if resp.status_code == 409 and body.get("code") in REJOIN_CODES:
        return RebalanceError(message, 409, body)
    return ConsumerError(message, resp.status_code, body)
