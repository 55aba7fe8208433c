"""Prometheus metrics of one broker instance.

Strategy: one CollectorRegistry per app, not the global one, so several brokers (tests,
a mirror target in the same process) never collide. Partition gauges are read at scrape
time from the logs themselves instead of being kept in step by hand.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .storage import PartitionStore


class BrokerMetrics:
    def __init__(self, store: PartitionStore) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ingest_requests = Counter(
            "broker_ingest_requests", "Ingest requests by HTTP status", ["status"], registry=r)
        self.ingest_records = Counter(
            "broker_ingest_records", "Records written by ingest", ["topic"], registry=r)
        self.ingest_bytes = Counter(
            "broker_ingest_bytes", "Request body bytes received by ingest", registry=r)
        self.ingest_outcomes = Counter(
            "broker_ingest_batches", "Batches by position decision", ["decision"], registry=r)
        self.ingest_latency = Histogram(
            "broker_ingest_seconds", "Ingest request time, durable ack included", registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        r.register(_PartitionCollector(store))


class _PartitionCollector(Collector):
    def __init__(self, store: PartitionStore) -> None:
        self.store = store

    def collect(self):  # type: ignore[no-untyped-def]
        start = GaugeMetricFamily("broker_partition_start_offset", "Log start offset",
                                  labels=["topic", "partition"])
        end = GaugeMetricFamily("broker_partition_end_offset", "Log end offset (high watermark)",
                                labels=["topic", "partition"])
        size = GaugeMetricFamily("broker_partition_bytes", "Bytes on disk",
                                 labels=["topic", "partition"])
        corrupt = GaugeMetricFamily("broker_partition_corrupt_records",
                                    "Records lost to corrupt batches found on read",
                                    labels=["topic", "partition"])
        for p in self.store:
            labels = [p.topic, str(p.index)]
            start.add_metric(labels, p.log.start_offset)
            end.add_metric(labels, p.log.end_offset)
            size.add_metric(labels, p.log.size_bytes)
            corrupt.add_metric(labels, p.log.stats.corrupt_records)
        yield from (start, end, size, corrupt)
