"""The next Fetch answer read ahead (``kafka.readahead``): a consumer reading on gets
every record once and in order from answers read early, and one that seeks elsewhere gets
the records of where it seeks, not the answer read ahead for where it was."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka_testing import config, running_broker

from cloud_broker.kafka.readahead import ReadAhead


def _read(consumer: KafkaConsumer, n: int) -> list[tuple[int, bytes]]:
    got: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + 30
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {len(got)} of {n} records arrived"
        for msgs in consumer.poll(timeout_ms=500, max_records=n - len(got)).values():
            got += [(m.offset, m.value) for m in msgs]
    return got


def test_reads_ahead_serve_every_record_once_in_order_and_a_seek_drops_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[int] = []
    take = ReadAhead.take

    def counting(self: ReadAhead, part, offset: int, max_bytes: int):  # type: ignore[no-untyped-def]
        task = take(self, part, offset, max_bytes)
        if task is not None:
            served.append(offset)
        return task

    monkeypatch.setattr(ReadAhead, "take", counting)
    n = 20_000
    with running_broker(config(tmp_path)) as rb:
        rb.append(0, n)
        consumer = KafkaConsumer(bootstrap_servers=rb.bootstrap, enable_auto_commit=False,
                                 max_partition_fetch_bytes=64 << 10, fetch_max_wait_ms=100)
        tp = TopicPartition("telemetry", 0)
        try:
            consumer.assign([tp])
            consumer.seek(tp, 0)
            first = _read(consumer, 6_000)
            assert served, "no Fetch was answered from a read ahead"
            consumer.seek(tp, 1_234)  # not where the read ahead is
            rest = _read(consumer, n - 1_234)
        finally:
            consumer.close()
    expect = [(i, b'{"v": %d}' % i) for i in range(n)]
    assert first == expect[:6_000]
    assert rest == expect[1_234:]
    # stored in batches of 5 000, which a Fetch answers whole: after the seek, the reads
    # from 5 000 on (of 5 000, 10 000 and 15 000) are the ones read ahead
    assert {5_000, 10_000, 15_000} <= set(served[1:])
