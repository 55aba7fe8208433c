"""Which stream a topic belongs to, and the host:port form of listen addresses.

Strategy: both ingest adapters (the Mosquitto sessions and the MQTT listener) route a
topic the same way - the first stream, in config order, with a matching filter - so the
rule lives here, cached per topic (bounded: the cache is cleared past 65,536 topics).
"""

from __future__ import annotations

from paho.mqtt.client import topic_matches_sub

_MISSING = object()


class Router:
    """topic -> the first stream (config order) with a matching filter, cached."""

    def __init__(self, filters: list[tuple[str, tuple[str, ...]]]) -> None:
        self.filters = filters
        self._cache: dict[str, str | None] = {}

    def __call__(self, topic: str) -> str | None:
        hit = self._cache.get(topic, _MISSING)
        if hit is not _MISSING:
            return hit  # type: ignore[return-value]
        owner = next((name for name, subs in self.filters
                      if any(topic_matches_sub(s, topic) for s in subs)), None)
        if len(self._cache) >= 65536:
            self._cache.clear()
        self._cache[topic] = owner
        return owner


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


__all__ = ["Router", "parse_listen"]
