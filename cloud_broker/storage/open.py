"""The partition store a broker's config asks for, with the ingest that fits it.

Strategy: ``[storage] backend`` picks one of two pairs. ``local``: shared_log files under
``data_dir/topics`` and the ingest whose marks are its own (checkpointed beside them).
``jetstream``: streams in a NATS JetStream cluster and the ingest whose marks are the
streams' (cloud_broker.ingest.shared), which is what lets several stateless broker nodes
share the partitions. nats-py is imported only for the second (the ``cluster`` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .interface import PartitionStoreAPI
from .log_store import PartitionStore

if TYPE_CHECKING:
    from ..config import BrokerConfig
    from ..ingest import Ingestor


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
    return JetStreamStore(settings), SharedIngestor
