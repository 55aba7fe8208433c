"""ListOffsets by timestamp: the first offset whose timestamp is at or after the asked one,
or offset and timestamp -1 when there is none (Kafka's answer since v1, KIP-79). Batches
whose newest record is older are passed over by their header, so the answer is checked
against a scan of every record, with timestamps out of order inside and across batches;
and through a real client (kafka-python's ``offsets_for_times``)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_broker.config import TopicConfig
from cloud_broker.kafka.handlers import _offset_for_time
from cloud_broker.storage import PartitionStore
from shared_log import Record
from tests.cloud_broker.kafka.kafka_testing import config, running_broker

T0 = 1_700_000_000_000


def brute(stamps: list[int], ts: int) -> tuple[int, int]:
    for off, t in enumerate(stamps):
        if t >= ts:
            return off, t
    return -1, -1


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(st.integers(0, 500), min_size=1, max_size=30),
                        min_size=1, max_size=12),
       asks=st.lists(st.integers(-10, 520), min_size=1, max_size=10))
def test_the_answer_is_the_first_record_at_or_after(tmp_path_factory, batches, asks) -> None:  # type: ignore[no-untyped-def]
    store = PartitionStore(tmp_path_factory.mktemp("p"))
    store.ensure_topic(TopicConfig("t", 1))
    part = store.partition("t", 0)
    stamps: list[int] = []
    for b in batches:
        part.append([Record(b"k", b"v", T0 + t, ()) for t in b])
        stamps += [T0 + t for t in b]
    part.log.flush()
    try:
        for a in asks:
            assert _offset_for_time(part, T0 + a) == brute(stamps, T0 + a)
    finally:
        store.close()


def test_kafka_python_offsets_for_times(tmp_path: Path) -> None:
    from kafka import KafkaConsumer, TopicPartition

    with running_broker(config(tmp_path)) as rb:
        rb.append(0, 300)  # timestamps start_ts + offset
        k = KafkaConsumer(bootstrap_servers=rb.bootstrap, consumer_timeout_ms=5000)
        tp = TopicPartition("telemetry", 0)
        got = k.offsets_for_times({tp: 1_700_000_000_000 + 123})[tp]
        assert (got.offset, got.timestamp) == (123, 1_700_000_000_000 + 123)
        assert k.offsets_for_times({tp: 1_700_000_000_000 + 10_000})[tp] is None
        k.close()
