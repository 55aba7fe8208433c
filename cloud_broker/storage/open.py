"""The partition store a broker's config asks for, with the ingest that fits it.

Strategy: ``[storage] backend`` picks one of two pairs. ``local``: shared_log files under
``data_dir/topics`` and the ingest whose marks are its own (checkpointed beside them).
``jetstream``: streams in a NATS JetStream cluster and the ingest whose marks are the
streams' (cloud_broker.ingest.shared), which is what lets several stateless broker nodes
share the partitions. nats-py is imported only for the second (the ``cluster`` extra).

At start, a cluster that cannot answer yet (every node down, no quorum while a node
restarts, a stream leader being elected) is waited for, up to ``STARTUP_WAIT_S``, with a
warning per retry: a broker node restarted at the same moment as a NATS node would
otherwise exit, and under a supervisor that restarts it, loop. Past the wait it exits
with the cluster's error, as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

from shared_log import LogError

from .interface import PartitionStoreAPI
from .log_store import PartitionStore

if TYPE_CHECKING:
    from ..config import BrokerConfig, TopicConfig
    from ..ingest import Ingestor

log = logging.getLogger(__name__)
T = TypeVar("T")

#: how long a broker waits at start for a store that says "not now" (``retry_later``)
STARTUP_WAIT_S = 120.0


def open_store(config: BrokerConfig) -> tuple[PartitionStoreAPI, type[Ingestor]]:
    storage = config.storage
    if storage is None or storage.backend == "local" or storage.jetstream is None:
        from ..ingest import Ingestor
        return PartitionStore(config.data_dir, config.commit_interval_ms), Ingestor
    from ..ingest.shared import SharedIngestor
    from .jetstream import Connection, JetStreamSettings, JetStreamStore
    js = storage.jetstream
    conn = Connection(js.servers, user=js.user, password=js.password, token=js.token,
                      creds_file=str(js.creds_file) if js.creds_file else None,
                      request_timeout_s=js.request_timeout_s)
    settings = JetStreamSettings(conn, replicas=js.replicas, stream_prefix=js.stream_prefix,
                                 cache_bytes=js.cache_bytes,
                                 readahead_bytes=js.readahead_bytes,
                                 readahead_total_bytes=js.readahead_total_bytes)
    deadline = time.monotonic() + STARTUP_WAIT_S
    return until_available(lambda: JetStreamStore(settings), "connect", deadline), SharedIngestor


def until_available(fn: Callable[[], T], what: str, deadline: float,
                    sleep: Callable[[float], None] = time.sleep) -> T:
    """``fn()``, called again while it raises a ``LogError`` marked ``retry_later`` (the
    store cannot do it now) and ``deadline`` (monotonic) has not passed."""
    attempt = 0
    while True:
        try:
            return fn()
        except LogError as exc:
            if not getattr(exc, "retry_later", False) or time.monotonic() >= deadline:
                raise
            pause = startup_pause(attempt, deadline)
            log.warning("storage: %s: %s; trying again in %.1f s", what, exc, pause)
            sleep(pause)
            attempt += 1


def startup_pause(attempt: int, deadline: float) -> float:
    """Seconds to wait before asking again after ``attempt`` failed tries (from 0): from
    0.25 s doubling to 5 s, never past ``deadline`` (monotonic). The broker's groups
    bucket waits for the cluster by the same rule (``Broker._open_shared_groups``)."""
    return min(5.0, 0.25 * 2 ** attempt, max(0.0, deadline - time.monotonic()))


def open_topics(store: PartitionStoreAPI, topics: Iterable[TopicConfig],
                wait_s: float = STARTUP_WAIT_S) -> None:
    """Open (create where missing) every configured topic, waiting for the store."""
    deadline = time.monotonic() + wait_s
    for topic in topics:
        until_available(lambda topic=topic: store.ensure_topic(topic),
                        f"open topic {topic.name}", deadline)
