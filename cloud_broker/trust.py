"""Who may write where: topic scopes, mirror-target topics and the topic cap.

Strategy: the checks every write path shares, kept out of the HTTP adapters so each of
them is one call. Three rules:

- **Scopes.** A token may only use the topics its ``topics`` patterns match (403 naming
  the topic); consumer groups likewise (``http_groups``).
- **Mirror targets are written by their mirror alone.** A broker->broker mirror writes
  through the replication endpoint at *its* offsets, so an edge record ingested into the
  same topic would take an offset the mirror needs (and the mirror would stop on a 409).
  The first replication request for a topic (an ``admin`` token whose scope covers it)
  claims the topic: a marker file ``mirror-target`` in its directory, kept across
  restarts. From then on ingest into it is refused (403). A topic that already holds
  records ingested from edges cannot be claimed (403): a mirror needs a topic of its own.
  Ingest replay skips claimed topics (their ``origin`` headers come from the source
  broker). Removing the marker file (broker stopped) releases a topic.
- **Topic cap.** Auto-creation on first ingest (``auto_create_partitions``) stops at
  ``max_topics`` topics: every topic costs open files and memory, and any ingest token
  could otherwise create topics without end. The refusal is a 404 (the topic does not
  exist and will not be created) whose message names the topic and the limit.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

from shared_log import write_checkpoint
from uplink import is_safe_name

from .auth import Principal
from .config import BrokerConfig
from .errors import Problem
from .ingest import Ingestor
from .storage import PartitionStoreAPI, UnknownTopic

MIRROR_MARKER = "mirror-target"


class TopicLimitReached(UnknownTopic):
    """A new topic was refused: the broker holds ``max_topics`` topics already."""

    def __init__(self, topic: str, limit: int) -> None:
        super().__init__(f"topic {topic!r} does not exist and cannot be created: the broker "
                         f"already holds its limit of {limit} topics (max_topics)")
        self.topic, self.limit = topic, limit


class MirrorTargets:
    """The topics claimed by a mirror, remembered as marker files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._topics = {p.parent.name for p in root.glob(f"*/{MIRROR_MARKER}")
                        if is_safe_name(p.parent.name)} if root.exists() else set()

    def __contains__(self, topic: object) -> bool:
        return topic in self._topics

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(sorted(self._topics))

    def claim(self, topic: str) -> None:
        """Mark ``topic`` (whose directory exists) as a mirror target, durably."""
        if topic in self._topics:
            return
        write_checkpoint(self.root / topic / MIRROR_MARKER, {"claimed_at": time.time()})
        self._topics.add(topic)


class Gate(Protocol):
    """What the checks need of the broker (cloud_broker.broker.Broker)."""

    config: BrokerConfig
    store: PartitionStoreAPI
    mirror_targets: MirrorTargets
    ingestor: Ingestor

    def ensure_topic_for_ingest(self, topic: str) -> None: ...


def check_ingest(broker: Gate, principal: Principal, topic: str) -> None:
    """Raise the Problem (403 or 404) why ``principal`` may not ingest into ``topic``.

    Checked before the body is read; ``topic`` is a safe name already."""
    if not principal.may_topic(topic):
        raise Problem(403, f"this token may not use topic {topic!r} (not in its topics "
                           "scope)", "topic")
    if topic in broker.mirror_targets:
        raise Problem(403, f"topic {topic!r} is the target of a mirror: only the mirror "
                           "writes it (through replication), edges may not", "topic")
    if (topic not in broker.store.topics() and broker.config.auto_create_partitions
            and len(broker.store.topics()) >= broker.config.max_topics):
        raise Problem(404, str(TopicLimitReached(topic, broker.config.max_topics)), "topic")


def check_replication(broker: Gate, principal: Principal, topic: str) -> None:
    """The scope and mirror-target checks of a replication request by an admin token
    (Problem 400/403), claiming ``topic`` for the mirror when it is free; an unknown topic
    passes (the endpoint answers 404)."""
    if not is_safe_name(topic):
        raise Problem(400, f"topic {topic[:60]!r} is not a safe name", "topic")
    if not principal.may_topic(topic):
        raise Problem(403, f"this token may not use topic {topic!r} (not in its topics "
                           "scope)", "topic")
    if topic in broker.mirror_targets:
        return
    try:
        broker.ensure_topic_for_ingest(topic)
    except UnknownTopic:
        return  # the endpoint answers 404
    if broker.ingestor.has_ingested(topic):
        raise Problem(403, f"topic {topic!r} holds records ingested from edges: a mirror "
                           "needs a topic of its own", "topic")
    broker.mirror_targets.claim(topic)


__all__ = ["MIRROR_MARKER", "Gate", "MirrorTargets", "TopicLimitReached", "check_ingest",
           "check_replication"]
