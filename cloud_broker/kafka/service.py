"""What the Kafka room needs of the broker: a narrow, typed view (no import of broker.py,
which starts the listener, so the two stay free of an import circle)."""

from __future__ import annotations

from typing import Protocol

from ..auth import TokenStore
from ..config import BrokerConfig
from ..groups import GroupCoordinator
from ..storage import PartitionStoreAPI


class BrokerView(Protocol):
    config: BrokerConfig
    store: PartitionStoreAPI
    groups: GroupCoordinator
    tokens: TokenStore


__all__ = ["BrokerView"]
