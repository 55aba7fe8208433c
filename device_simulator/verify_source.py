"""Where the verifier reads records from: the cloud broker's consumer API (or, later, a mirror).

Strategy: a source is two calls, ``partitions()`` and ``fetch(partition,
offset)``, behind the ``RecordSource`` protocol; ``read_all`` is the one loop
that walks every partition from its start to its current end, batch by batch,
so a new source (a mirror target) only implements the two calls.  The broker
source uses the broker's own consumer client (``cloud_broker.client``:
CBOR columns, retries on 503 and lost connections) and maps its errors to
``SourceError`` here, so the CLI never sees httpx or client types.

Records are yielded as the client returns them (``ConsumerRecord``: partition,
offset, timestamp, key, value, headers), which is what ``verify.Analyzer``
reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit


class SourceError(Exception):
    """The records could not be read (unreachable, refused, unknown topic...);
    ``exit_code`` is what ``device-sim verify`` exits with (docs/configuration.md)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    partition: int
    start_offset: int
    end_offset: int  # next offset to be written (the high watermark)


@dataclass(slots=True)
class Page:
    records: Sequence[Any]
    next_offset: int
    end_offset: int
    skipped: list[tuple[int, int]] = field(default_factory=list)


class RecordSource(Protocol):
    """Read-only access to one topic's partitions.

    ``partitions`` raises SourceError for an unknown topic; ``fetch`` returns an
    empty page at the end and raises SourceError for an offset out of range.
    """

    async def partitions(self) -> list[PartitionInfo]: ...

    async def fetch(self, partition: int, offset: int, max_records: int) -> Page: ...

    async def close(self) -> None: ...


class BrokerSource:
    """The cloud broker's consumer API (``GET /v1/topics/...``)."""

    def __init__(self, url: str, topic: str, token: str | None = None,
                 retry_for_s: float = 15.0) -> None:
        try:
            from cloud_broker.client import BrokerClient, ConsumerError, exit_code
        except ImportError as exc:  # pragma: no cover - the broker package is part of the repo
            raise SourceError(f"the cloud broker client is not available: {exc}") from exc
        self.topic = topic
        self._client = BrokerClient(url, token=token, retry_for_s=retry_for_s)
        self._error_type = ConsumerError
        self._exit_code = exit_code

    async def partitions(self) -> list[PartitionInfo]:
        try:
            doc = await self._client.topic(self.topic)
        except self._error_type as exc:
            raise SourceError(f"topic {self.topic!r}: {exc}", self._exit_code(exc)) from exc
        try:
            return [PartitionInfo(int(p["partition"]), int(p["start_offset"]),
                                  int(p["end_offset"])) for p in doc["partitions"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise SourceError(f"topic {self.topic!r}: unexpected metadata {doc!r}") from exc

    async def fetch(self, partition: int, offset: int, max_records: int) -> Page:
        try:
            resp = await self._client.fetch(self.topic, partition, offset, max_records)
        except self._error_type as exc:
            raise SourceError(f"{self.topic}/{partition} at {offset}: {exc}",
                              self._exit_code(exc)) from exc
        return Page(resp.records, resp.next_offset, resp.end_offset, list(resp.skipped))

    async def close(self) -> None:
        await self._client.close()


def open_source(url: str, topic: str, token: str | None = None,
                retry_for_s: float = 15.0) -> RecordSource:
    """The source for ``url``: http(s):// is a cloud broker."""
    scheme = urlsplit(url).scheme
    if scheme in ("http", "https"):
        return BrokerSource(url, topic, token, retry_for_s)
    raise SourceError(f"unsupported source {url!r}: expected an http(s):// broker URL")


@dataclass
class ReadState:
    """Where reading stands in each partition (kept across re-reads while settling)."""

    next_offsets: dict[int, int] = field(default_factory=dict)
    skipped: list[tuple[int, int, int]] = field(default_factory=list)  # partition, first, last


async def read_all(source: RecordSource, state: ReadState,
                   max_records: int = 5000) -> AsyncIterator[Sequence[Any]]:
    """Yield batches of records from every partition, from ``state`` up to the current end."""
    for info in await source.partitions():
        offset = state.next_offsets.get(info.partition, info.start_offset)
        offset = max(offset, info.start_offset)
        while True:
            page = await source.fetch(info.partition, offset, max_records)
            state.skipped.extend((info.partition, a, b) for a, b in page.skipped)
            if page.records:
                yield page.records
            if page.next_offset <= offset or page.next_offset >= page.end_offset:
                offset = max(offset, page.next_offset)
                break
            offset = page.next_offset
        state.next_offsets[info.partition] = offset
