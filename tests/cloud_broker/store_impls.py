"""The partition store implementations the conformance suite runs over.

One entry per store; a new backend (NATS JetStream, ...) adds a class with ``name``,
``open(data_dir)`` and ``cleanup()`` and is appended to ``IMPLEMENTATIONS``. The crash
test's writer process finds an implementation here by name, so it must be importable
without pytest fixtures.
"""

from __future__ import annotations

from pathlib import Path

from cloud_broker.storage import PartitionStore, PartitionStoreAPI


class SharedLogStore:
    """Today's store: one shared_log Log per partition under ``<data_dir>/topics``."""

    name = "shared_log"

    def open(self, data_dir: Path) -> PartitionStoreAPI:
        return PartitionStore(data_dir, commit_interval_ms=1)


IMPLEMENTATIONS = [SharedLogStore()]


def by_name(name: str) -> SharedLogStore:
    return next(i for i in IMPLEMENTATIONS if i.name == name)
