"""edge.toml's ``[ingest]`` section: how readings become records in a stream's log.

Kept apart from ``config`` (which loads the whole file) because the section is one
subject, the pipeline's (``ingest``, ``prepare``, ``dedup``): payload fields, group
commit and batching, dead letters, dedup marks. ``config`` re-exports ``IngestConfig``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tomlconf import Section

_TOPIC_FILTER = re.compile(r"^(?:[^#+/]*|\+)(?:/(?:[^#+/]*|\+))*(?:/#)?$|^#$")


def is_filter(t: str) -> bool:
    """An MQTT topic filter (``+`` and ``#`` as whole levels, ``#`` last)."""
    return bool(t) and _TOPIC_FILTER.match(t) is not None


@dataclass(frozen=True, slots=True)
class IngestConfig:
    max_payload_bytes: int = 256 * 1024
    #: payload field holding a per-device sequence number (JSON or CBOR map); "" = none
    sequence_field: str = "seq"
    #: payload field holding the device timestamp (ms since the epoch); "" = none
    timestamp_field: str = "ts"
    commit_interval_ms: float = 10.0
    dead_letter_max_bytes: int = 16 * 1024 * 1024
    #: bytes of each refused payload kept in the dead-letter log
    dead_letter_payload_bytes: int = 4096
    batch_max_messages: int = 2000  # most messages appended as one shared_log batch
    #: extra wait for more messages before a batch is appended (0: take what has arrived)
    batch_window_ms: float = 0.0
    #: after commit_interval_ms without an append, how long a reading waits for its burst
    gather_ms: float = 2.0
    #: below trickle_rate readings/s a stream appends (and fsyncs, and PUBACKs) at most
    #: once per trickle_window_ms (0: off); priority 0 streams never wait
    trickle_window_ms: float = 250.0
    trickle_rate: float = 500.0
    #: how often a blocked stream (log full, disk full) retries its append
    backpressure_retry_ms: float = 500.0
    #: how often the per-device dedup marks are checkpointed
    dedup_checkpoint_s: float = 5.0
    #: payload field holding a device's boot epoch (int or short string); "" = none
    epoch_field: str = "boot"
    #: how far back (in sequence numbers) a redelivery can be; a sequence that falls back
    #: further counts as a device restart. Keep >= mqtt.receive_maximum.
    dedup_window: int = 1000
    #: most devices whose dedup marks are kept per stream (least recently seen evicted)
    dedup_max_devices: int = 100_000
    #: extra MQTT filters whose messages matching no stream are dead-lettered (no_stream)
    unmatched_topics: tuple[str, ...] = ()


def parse_ingest(g: Section) -> IngestConfig:
    d = IngestConfig()
    return IngestConfig(
        max_payload_bytes=g.integer("max_payload_bytes", d.max_payload_bytes, minimum=1),
        sequence_field=g.string("sequence_field", d.sequence_field),
        timestamp_field=g.string("timestamp_field", d.timestamp_field),
        commit_interval_ms=g.number("commit_interval_ms", d.commit_interval_ms, minimum=0),
        dead_letter_max_bytes=g.integer("dead_letter_max_bytes", d.dead_letter_max_bytes,
                                        minimum=1024),
        dead_letter_payload_bytes=g.integer("dead_letter_payload_bytes",
                                            d.dead_letter_payload_bytes, minimum=0),
        batch_max_messages=g.integer("batch_max_messages", d.batch_max_messages, minimum=1),
        batch_window_ms=g.number("batch_window_ms", d.batch_window_ms, minimum=0),
        gather_ms=g.number("gather_ms", d.gather_ms, minimum=0, maximum=1000),  # PUBACKs wait
        trickle_window_ms=g.number("trickle_window_ms", d.trickle_window_ms, minimum=0,
                                   maximum=5000),  # PUBACKs wait
        trickle_rate=g.number("trickle_rate", d.trickle_rate, minimum=0),
        backpressure_retry_ms=g.number("backpressure_retry_ms", d.backpressure_retry_ms,
                                       minimum=1),
        dedup_checkpoint_s=g.number("dedup_checkpoint_s", d.dedup_checkpoint_s, minimum=0.1),
        epoch_field=g.string("epoch_field", d.epoch_field),
        dedup_window=g.integer("dedup_window", d.dedup_window, minimum=1),
        dedup_max_devices=g.integer("dedup_max_devices", d.dedup_max_devices, minimum=1),
        unmatched_topics=g.strings("unmatched_topics", (), check=is_filter,
                                   form="a list of MQTT topic filters"),
    )


def trickle_spacing(ingest: IngestConfig, priority: int, receive_maximum: int,
                    through_mosquitto_v5: bool) -> tuple[float, float]:
    """(seconds, readings/s) of a stream's trickle spacing (``ingest.StreamIngest``), off
    (0, 0) where a later PUBACK would slow what arrives: priority 0 streams (alarms),
    devices publishing to the agent's own listener (a device with one reading in flight
    would wait a spacing per reading), and 3.1.1 sessions (Mosquitto's
    ``max_inflight_messages``, 20 by default, then bounds what it sends). Through an
    MQTT 5 session the rate is capped so that a spacing's readings stay within a quarter
    of the session's Receive Maximum."""
    window = ingest.trickle_window_ms / 1000
    if window <= 0 or priority == 0 or not through_mosquitto_v5:
        return 0.0, 0.0
    return window, min(ingest.trickle_rate, receive_maximum / 4 / window)
