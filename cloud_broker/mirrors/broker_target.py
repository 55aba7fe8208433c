"""Broker target: a byte-for-byte copy of each partition into another cloud broker.

Strategy: the target broker's replication endpoint (cloud_broker/http/replicate.py)
appends records at their source offsets and refuses, with 409 and its end offset, any
batch that does not start where the partition ends. So the target partition holds the
same records at the same offsets, ``next_offset`` is simply the target's end offset, and
a replay after a crash is refused and turned into a TargetConflict that moves the mirror
to where the target stands. Records are grouped into runs of consecutive offsets, one
request each; a jump (records the source lost) can only be taken by an empty partition.

Status mapping: connection errors, timeouts, 5xx and 429 -> TargetUnavailable; 409 ->
TargetConflict(end_offset); 401/403/404/400/413/415 -> TargetRejected.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from shared_log import StoredRecord

from .replica_codec import CBOR, encode_records
from .target import TargetConflict, TargetRejected, TargetUnavailable


def runs(records: Sequence[StoredRecord]) -> list[list[StoredRecord]]:
    """Split a batch where offsets jump."""
    out: list[list[StoredRecord]] = []
    for r in records:
        if out and out[-1][-1].offset + 1 == r.offset:
            out[-1].append(r)
        else:
            out.append([r])
    return out


class BrokerTarget:
    """Mirror into another cloud broker over HTTP; see the module docstring."""

    def __init__(self, url: str, token: str | None = None, topic: str | None = None,
                 timeout_s: float = 10.0, transport: httpx.AsyncBaseTransport | None = None
                 ) -> None:
        self.url = url.rstrip("/")
        self.topic = topic
        self.description = f"{self.url} topic {topic or '(same)'}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(base_url=self.url, headers=headers,
                                         timeout=timeout_s, transport=transport)

    async def open(self, topic: str, partitions: int) -> None:
        self.topic = self.topic or topic
        self.description = f"{self.url} topic {self.topic}"
        # Fails early (and is retried) when the target lacks the topic or a partition.
        await self.next_offset(partitions - 1)

    def _path(self, partition: int) -> str:
        return f"/v1/replicate/{self.topic}/{partition}"

    async def _request(self, method: str, partition: int, body: bytes | None = None
                       ) -> httpx.Response:
        try:
            resp = await self._client.request(
                method, self._path(partition), content=body,
                headers={"Content-Type": CBOR} if body is not None else None)
        except httpx.HTTPError as exc:
            raise TargetUnavailable(f"{method} {self.url}{self._path(partition)}: "
                                    f"{exc!r}") from exc
        if resp.status_code == 200:
            return resp
        detail = _detail(resp)
        what = f"{method} {self._path(partition)}: {resp.status_code} {detail.get('error')}"
        if resp.status_code == 409 and isinstance(detail.get("end_offset"), int):
            raise TargetConflict(what, detail["end_offset"])
        if resp.status_code >= 500 or resp.status_code == 429:
            raise TargetUnavailable(what)
        raise TargetRejected(what)

    async def write(self, partition: int, records: Sequence[StoredRecord]) -> None:
        for run in runs(records):
            await self._request("POST", partition, encode_records(run))

    async def next_offset(self, partition: int) -> int | None:
        resp = await self._request("GET", partition)
        try:
            return int(resp.json()["end_offset"])
        except (ValueError, KeyError, TypeError) as exc:
            raise TargetUnavailable(f"bad reply from {self.url}: {resp.text[:200]}") from exc

    async def close(self) -> None:
        await self._client.aclose()


def _detail(resp: httpx.Response) -> dict:
    try:
        body = resp.json()
    except ValueError:
        return {"error": resp.text[:200]}
    return body if isinstance(body, dict) else {"error": str(body)[:200]}
