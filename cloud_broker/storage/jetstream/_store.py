"""Every topic-partition of a broker node as JetStream streams (``PartitionStoreAPI``).

Strategy: a topic-partition is one stream, ``<prefix>_<topic>_<index>``, on one subject,
``<prefix>.<topic>.<index>`` (a ``.`` or ``_`` in a topic name is escaped, since neither
may stand in a stream name or a subject token), file storage, ``replicas`` copies, no
limits of the server's own: retention is the topic's, applied by ``enforce_retention``
by purging whole messages from the front. The broker node holds no data: a node that
opens a topic reads each stream into its view (cloud_broker.storage.jetstream._view) and
follows it from then on, so any number of nodes can serve the same topics.

Partitions only grow (G4): a stream past the configured count refuses the config.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

import nats.js.errors
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from uplink import is_safe_name

from ...config import TopicConfig
from .._topics import TopicTable
from ._client import (
    NATS_ERRORS,
    STREAM_NOT_FOUND,
    ClientThread,
    Connection,
    unavailable,
)
from ._partition import JetStreamPartition
from ._readahead import TOTAL_BYTES, WINDOW_BYTES, Budget

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class JetStreamSettings:
    """``[storage.jetstream]``: where the cluster is and how partitions are kept."""

    connection: Connection
    replicas: int = 3
    stream_prefix: str = "es"
    #: bytes of newest message bodies kept in memory per partition (live consumers)
    cache_bytes: int = 32 << 20
    follow_interval_s: float = 1.0
    #: bytes of older message bodies fetched ahead of a sequential reader, per partition
    #: (0: none) and for all partitions of the node together (see ``_readahead``)
    readahead_bytes: int = WINDOW_BYTES
    readahead_total_bytes: int = TOTAL_BYTES


def escape(name: str) -> str:
    """A topic name as a stream-name part and a single subject token."""
    return name.replace("_", "_u").replace(".", "_d")


class JetStreamStore(TopicTable[JetStreamPartition]):
    """The partitions of a broker node, kept in a JetStream cluster."""

    def __init__(self, settings: JetStreamSettings) -> None:
        if not is_safe_name(settings.stream_prefix) or "." in settings.stream_prefix:
            raise ValueError(f"unsafe stream prefix {settings.stream_prefix!r}")
        self.settings = settings
        self.node_id = os.urandom(6).hex()
        self.client = ClientThread(settings.connection)
        self.budget = Budget(settings.readahead_total_bytes)
        super().__init__()

    def stream_name(self, topic: str, index: int) -> str:
        return f"{self.settings.stream_prefix}_{escape(topic)}_{index}"

    def subject(self, topic: str, index: int) -> str:
        return f"{self.settings.stream_prefix}.{escape(topic)}.{index}"

    async def _exists(self, stream: str) -> bool:
        try:
            await self.client.js.stream_info(stream)
        except nats.js.errors.APIError as exc:
            if exc.err_code == STREAM_NOT_FOUND:
                return False
            raise unavailable(exc, f"stream info of {stream}") from exc
        except NATS_ERRORS as exc:
            raise unavailable(exc, f"stream info of {stream}") from exc
        return True

    async def _allow_direct(self, name: str) -> None:
        """Streams made before reads used direct gets are switched on (best effort: if the
        update is refused, reads fall back to the leader's get, only slower)."""
        try:
            info = await self.client.js.stream_info(name)
            if not info.config.allow_direct:
                info.config.allow_direct = True
                await self.client.js.update_stream(info.config)
        except NATS_ERRORS as exc:
            log.warning("stream %s: direct gets not enabled (%s); reads use the leader", name,
                        exc)

    async def _create(self, topic: str, index: int) -> None:
        name = self.stream_name(topic, index)
        config = StreamConfig(
            name=name, subjects=[self.subject(topic, index)], storage=StorageType.FILE,
            num_replicas=self.settings.replicas, discard=DiscardPolicy.OLD,
            deny_delete=True, allow_direct=True)
        for attempt in range(5):
            if await self._exists(name):
                await self._allow_direct(name)
                return
            try:
                await self.client.js.add_stream(config)
                return
            except NATS_ERRORS as exc:  # another node created it first, or no quorum yet
                if attempt == 4:
                    raise unavailable(exc, f"create stream {name}") from exc
                await asyncio.sleep(0.2 * (attempt + 1))

    async def _open_topic(self, cfg: TopicConfig, have: int) -> list[JetStreamPartition]:
        if await self._exists(self.stream_name(cfg.name, cfg.partitions)):
            raise ValueError(f"topic {cfg.name} has more than {cfg.partitions} partitions in "
                             "JetStream, and partitions can only be added")
        opened = []
        for i in range(have, cfg.partitions):
            await self._create(cfg.name, i)
            part = JetStreamPartition(
                self.client, cfg, i, self.stream_name(cfg.name, i), self.subject(cfg.name, i),
                self.node_id, self.settings.cache_bytes, self.settings.follow_interval_s,
                self.budget, self.settings.readahead_bytes)
            await part.open()
            opened.append(part)
        return opened

    def ensure_topic(self, cfg: TopicConfig) -> list[JetStreamPartition]:
        if not is_safe_name(cfg.name):
            raise ValueError(f"unsafe topic name {cfg.name!r}")
        parts = self._topics.get(cfg.name, [])
        if len(parts) > cfg.partitions:
            raise ValueError(f"topic {cfg.name} has {len(parts)} partitions; the config asks "
                             f"for {cfg.partitions}, and partitions can only be added")
        parts = parts + self.client.run(self._open_topic(cfg, len(parts)), 120)
        for p in parts:
            p.cfg = cfg
        self._topics[cfg.name] = parts
        self._configs[cfg.name] = cfg
        return parts

    def close(self) -> None:
        for p in self:
            p.close()
        self.client.close()
