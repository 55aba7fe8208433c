"""The broker's ASGI app: wiring of storage, ingest, auth and metrics.

Strategy: ``Broker`` owns the long-lived parts (partition store, ingestor, token store,
metrics, background tasks); ``create_app`` exposes them over Starlette routes. Route
handlers live in small modules per concern (``http_ingest``...), each a thin adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import Route

from . import http_ingest, http_mirrors, replicate_routes
from .auth import TokenStore
from .config import BrokerConfig, TopicConfig
from .consume_routes import CONSUME_ROUTES
from .datadir import DataDirLock
from .group_service import GroupCoordinator
from .http_ops import healthz, metrics, openapi
from .ingest import Ingestor
from .metrics import BrokerMetrics
from .mirrors import LocalSource, MirrorCollector, MirrorManager
from .storage import PartitionStore, UnknownTopic
from .trust import MirrorTargets, TopicLimitReached

log = logging.getLogger(__name__)


class Broker:
    """Everything one broker process holds. Created and closed by the app's lifespan.

    The data directory is locked first (``data_lock``, else taken here): nothing in it is
    opened by two brokers at once."""

    def __init__(self, config: BrokerConfig, data_lock: DataDirLock | None = None) -> None:
        self.config = config
        self._own_lock = data_lock is None
        self.data_lock = data_lock if data_lock is not None else DataDirLock(config.data_dir)
        try:
            self._open(config)
        except BaseException:
            self._release_lock()
            raise

    def _release_lock(self) -> None:
        if self._own_lock:
            self.data_lock.release()

    def _open(self, config: BrokerConfig) -> None:
        self.store = PartitionStore(config.data_dir, config.commit_interval_ms)
        for topic in config.topics.values():
            self.store.ensure_topic(topic)
        self._reopen_auto_created()
        self.mirror_targets = MirrorTargets(self.store.root)
        self.ingestor = Ingestor(self.store, config.data_dir,
                                 config.state_checkpoint_ms / 1000)
        self.ingestor.recover(exclude_topics=frozenset(self.mirror_targets))
        self.ingestor.write_protected = self.mirror_targets
        self.tokens = TokenStore(config)
        self.metrics = BrokerMetrics(self.store)
        self.ingestor.on_written = (
            lambda topic, n: self.metrics.ingest_records.labels(topic).inc(n))
        self.mirrors = MirrorManager(
            config.data_dir, LocalSource(self.store),
            [m for m in config.mirrors.values() if m.run == "broker"])
        self.metrics.registry.register(MirrorCollector(self.mirrors))
        self.groups = GroupCoordinator(self.store, config.data_dir / "groups.db")
        self.metrics.watch_groups(self.groups)
        self._tasks: list[asyncio.Task[None]] = []

    def _reopen_auto_created(self) -> None:
        """Topics created on first ingest are not in the config: reopen them from disk."""
        if not self.config.auto_create_partitions:
            return
        for tdir in sorted(self.store.root.iterdir()) if self.store.root.exists() else []:
            if tdir.is_dir() and tdir.name not in self.config.topics:
                # Data on disk is reopened even past max_topics (a lowered limit).
                self.store.ensure_topic(
                    TopicConfig(tdir.name, self.config.auto_create_partitions))

    def ensure_topic_for_ingest(self, topic: str) -> None:
        """Open ``topic``, creating it when auto-creation is on and below ``max_topics``;
        UnknownTopic (TopicLimitReached at the cap) otherwise."""
        try:
            self.store.partitions(topic)
        except UnknownTopic:
            if not self.config.auto_create_partitions:
                raise
            if len(self.store.topics()) >= self.config.max_topics:
                raise TopicLimitReached(topic, self.config.max_topics) from None
            self.store.ensure_topic(TopicConfig(topic, self.config.auto_create_partitions))

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self.ingestor.run_checkpoints()))
        self._tasks.append(asyncio.create_task(self._retention_loop()))
        self._tasks.append(asyncio.create_task(self.groups.run_expiry()))
        await self.mirrors.start()

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.retention_check_ms / 1000)
            try:
                deleted = await asyncio.to_thread(self.store.enforce_retention)
                if deleted:
                    log.info("retention deleted %d records", deleted)
            except OSError as exc:
                log.warning("retention failed: %s", exc)

    async def stop(self) -> None:
        await self.mirrors.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        try:
            await self.ingestor.checkpoint()
        except Exception as exc:
            log.warning("final ingest checkpoint failed: %s", exc)
        self.groups.close()
        self.store.close()
        self._release_lock()

    def health(self) -> tuple[bool, dict[str, object]]:
        failed = [f"{p.topic}/{p.index}" for p in self.store if p.log.failed is not None]
        return (not failed), {"status": "ok" if not failed else "failing",
                              "failed_partitions": failed, "topics": self.store.topics()}


def create_app(config: BrokerConfig, extra_routes: list[Route] | None = None,
               data_lock: DataDirLock | None = None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        broker = Broker(config, data_lock)
        app.state.broker = broker
        await broker.start()
        try:
            yield
        finally:
            await broker.stop()

    routes = [
        Route("/v1/ingest/{topic}", http_ingest.ingest, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/v1/replicate/{topic}/{partition}", replicate_routes.replicate_position,
              methods=["GET"]),
        Route("/v1/replicate/{topic}/{partition}", replicate_routes.replicate_append,
              methods=["POST"]),
        Route("/v1/mirrors", http_mirrors.list_mirrors, methods=["GET"]),
        Route("/v1/mirrors", http_mirrors.add_mirror, methods=["POST"]),
        Route("/v1/mirrors/{name}", http_mirrors.delete_mirror, methods=["DELETE"]),
        *CONSUME_ROUTES,
        *(extra_routes or []),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
