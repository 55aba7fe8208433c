"""The partition store implementations the conformance suite runs over.

One entry per store; a new backend adds a class with ``name``, ``open(data_dir)`` and
``cleanup()`` and is appended to ``IMPLEMENTATIONS``. The crash test's writer process
finds an implementation here by name, so it must be importable without pytest fixtures:
the JetStream stores find their servers in ``JETSTREAM_URLS_ENV`` (set by the test that
starts them, inherited by the writer process) and are listed in ``CLUSTER_IMPLEMENTATIONS``,
run by tests/cluster/test_jetstream_conformance.py over a real node and a real cluster.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cloud_broker.storage import PartitionStore, PartitionStoreAPI

JETSTREAM_URLS_ENV = "EDGESTREAM_TEST_JETSTREAM_URLS"


class SharedLogStore:
    """Today's store: one shared_log Log per partition under ``<data_dir>/topics``."""

    name = "shared_log"

    def open(self, data_dir: Path) -> PartitionStoreAPI:
        return PartitionStore(data_dir, commit_interval_ms=1)


class JetStreamStoreImpl:
    """Streams in the JetStream servers of ``JETSTREAM_URLS_ENV``; the stream prefix is
    derived from ``data_dir`` so a reopen finds the same streams and tests do not meet."""

    def __init__(self, name: str, replicas: int) -> None:
        self.name = name
        self.replicas = replicas

    def open(self, data_dir: Path) -> PartitionStoreAPI:
        from cloud_broker.storage.jetstream import Connection, JetStreamSettings, JetStreamStore
        urls = os.environ[JETSTREAM_URLS_ENV].split(",")
        prefix = "t" + hashlib.sha1(str(data_dir).encode()).hexdigest()[:12]
        return JetStreamStore(JetStreamSettings(
            Connection(tuple(urls)), replicas=self.replicas, stream_prefix=prefix,
            follow_interval_s=0.2))


IMPLEMENTATIONS = [SharedLogStore()]
CLUSTER_IMPLEMENTATIONS = [JetStreamStoreImpl("jetstream_r1", 1),
                           JetStreamStoreImpl("jetstream_r3", 3)]


def by_name(name: str) -> SharedLogStore | JetStreamStoreImpl:
    return next(i for i in [*IMPLEMENTATIONS, *CLUSTER_IMPLEMENTATIONS] if i.name == name)
