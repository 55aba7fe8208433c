"""The broker service: everything one broker process holds, typed, in one object.

Strategy: ``Broker`` owns the long-lived parts (partition store, ingestor, token store,
metrics, mirrors, group coordinator, background tasks) and is what every HTTP handler is
given (``http.errors.endpoint``). It knows nothing of HTTP: ``http.app.create_app``
serves it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

from supervision import Supervisor, task_problems

from .auth import TokenStore
from .config import BrokerConfig, TopicConfig
from .datadir import DataDirLock
from .edges import EdgeActivity
from .groups import GroupCoordinator
from .kafka import KafkaServer
from .metrics import BrokerMetrics
from .mirrors import LocalSource, MirrorCollector, MirrorManager
from .storage import UnknownTopic
from .storage.open import STARTUP_WAIT_S, open_store, open_topics, startup_pause
from .storage.settings import JetStreamConfig
from .trust import MirrorTargets, TopicLimitReached

log = logging.getLogger(__name__)

#: health stays failing this long after a background task failed (a crash loop shows
#: even when it is caught between restarts)
TASK_FAILURE_WINDOW_S = 60.0


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
        #: the local store's directory; mirror-target markers live here in either mode
        self.topics_root = config.data_dir / "topics"
        self.store, ingestor_type = open_store(config)
        open_topics(self.store, config.topics.values())
        self._reopen_auto_created()
        self.mirror_targets = MirrorTargets(self.topics_root)
        self.ingestor = ingestor_type(self.store, config.data_dir,
                                      config.state_checkpoint_ms / 1000,
                                      max_positions_per_edge=config.max_positions_per_edge,
                                      max_positions=config.max_positions)
        self.ingestor.recover(exclude_topics=frozenset(self.mirror_targets))
        self.ingestor.write_protected = self.mirror_targets
        self.tokens = TokenStore(config)
        self.edges = EdgeActivity()  # what the dashboard shows of each edge stream
        self.metrics = BrokerMetrics(self.store)
        self.metrics.watch_positions(self.ingestor)
        self.ingestor.on_written = (
            lambda topic, n: self.metrics.ingest_records.labels(topic).inc(n))
        self.mirrors = MirrorManager(
            config.data_dir, LocalSource(self.store),
            [m for m in config.mirrors.values() if m.run == "broker"],
            topics=None if config.auto_create_partitions else self.store.topics)
        self.metrics.registry.register(MirrorCollector(self.mirrors))
        if self._cluster_storage() is None:
            self.groups = GroupCoordinator(self.store, config.data_dir / "groups.db")
            self.metrics.watch_groups(self.groups)
        self.supervisor = Supervisor()
        self.metrics.watch_tasks(self.supervisor)
        self.kafka = KafkaServer(self) if config.kafka is not None else None

    def _reopen_auto_created(self) -> None:
        """Topics created on first ingest are not in the config: reopen them from disk."""
        if not self.config.auto_create_partitions:
            return
        root = self.topics_root
        for tdir in sorted(root.iterdir()) if root.exists() else []:
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

    def _cluster_storage(self) -> JetStreamConfig | None:
        """``[storage.jetstream]`` in cluster mode, else None."""
        storage = self.config.storage
        return storage.jetstream if storage is not None and storage.backend == "jetstream" \
            else None

    async def _open_shared_groups(self, js: JetStreamConfig) -> None:
        """Cluster mode: groups and committed offsets in the JetStream KV bucket every
        broker node shares (docs/cluster.md); needs the event loop, hence here."""
        from .groups.kv_backend import GroupStoreError, KvGroupBackend, bucket_for

        deadline = time.monotonic() + STARTUP_WAIT_S
        for attempt in itertools.count():  # as the partitions at start (storage.open)
            try:
                backend = await KvGroupBackend.connect(js, js.replicas,
                                                       bucket_for(js.stream_prefix))
                break
            except GroupStoreError as exc:
                if time.monotonic() >= deadline:
                    raise
                pause = startup_pause(attempt, deadline)
                log.warning("groups: %s; trying again in %.1f s", exc, pause)
                await asyncio.sleep(pause)
        self.groups = GroupCoordinator(self.store, backend)
        self.metrics.watch_groups(self.groups)

    async def start(self) -> None:
        settings = self._cluster_storage()
        if settings is not None:
            await self._open_shared_groups(settings)
        sup = self.supervisor
        sup.spawn("ingest-checkpoints", self.ingestor.run_checkpoints)
        sup.spawn("retention", self._retention_loop)
        sup.spawn("group-expiry", self.groups.run_expiry)
        await self.mirrors.start()
        if self.kafka is not None:
            await self.kafka.start()

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
        if self.kafka is not None:
            await self.kafka.stop()
        await self.mirrors.stop()
        self.supervisor.cancel()
        await self.supervisor.wait()
        try:
            await self.ingestor.checkpoint()
        except Exception as exc:
            log.warning("final ingest checkpoint failed: %s", exc)
        aclose = getattr(self.groups.backend, "aclose", None)
        if aclose is not None:
            await aclose()
        self.groups.close()
        self.store.close()
        self._release_lock()

    def health(self) -> tuple[bool, dict[str, object]]:
        failed = [f"{p.topic}/{p.index}" for p in self.store if p.failed is not None]
        tasks = self.supervisor.status()
        problems = task_problems(tasks, time.time(), TASK_FAILURE_WINDOW_S)
        ok = not failed and not problems
        return ok, {"status": "ok" if ok else "failing", "failed_partitions": failed,
                    "task_problems": problems, "tasks": tasks, "topics": self.store.topics()}


__all__ = ["Broker"]
