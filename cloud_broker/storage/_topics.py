"""The topic table both partition stores keep: topic -> its partitions and its config.

Strategy: the lookups and their not-found behaviour (``UnknownTopic``, docs of
``interface.PartitionStoreAPI``) are the same whatever holds the partitions, so they live
here once; a store fills ``_topics`` and ``_configs`` in its own ``ensure_topic``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from ..config import TopicConfig
from .interface import UnknownTopic


class _Retained(Protocol):
    def enforce_retention(self) -> int: ...


P = TypeVar("P", bound=_Retained)


class TopicTable(Generic[P]):
    """Topic lookups over ``_topics`` (name -> partitions) and ``_configs``."""

    def __init__(self) -> None:
        self._topics: dict[str, list[P]] = {}
        self._configs: dict[str, TopicConfig] = {}

    def partitions(self, topic: str) -> list[P]:
        try:
            return self._topics[topic]
        except KeyError:
            raise UnknownTopic(f"unknown topic {topic!r}") from None

    def partition(self, topic: str, index: int) -> P:
        parts = self.partitions(topic)
        if not 0 <= index < len(parts):
            raise UnknownTopic(f"topic {topic!r} has partitions 0..{len(parts) - 1}, not {index}")
        return parts[index]

    def topic_config(self, topic: str) -> TopicConfig:
        self.partitions(topic)
        return self._configs[topic]

    def topics(self) -> list[str]:
        return sorted(self._topics)

    def __iter__(self) -> Iterator[P]:
        for name in sorted(self._topics):
            yield from self._topics[name]

    def enforce_retention(self) -> int:
        return sum(p.enforce_retention() for p in self)
