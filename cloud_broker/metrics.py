"""Prometheus metrics of one broker instance.

Strategy: one CollectorRegistry per app, not the global one, so several brokers (tests,
a mirror target in the same process) never collide. Partition gauges are read at scrape
time from the logs themselves instead of being kept in step by hand.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .storage import PartitionStoreAPI


class BrokerMetrics:
    def __init__(self, store: PartitionStoreAPI) -> None:
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
        self.fetch_requests = Counter(
            "broker_fetch_requests", "Consumer fetch/stream requests by HTTP status", ["status"],
            registry=r)
        self.fetch_records = Counter(
            "broker_fetch_records", "Records served to consumers", ["topic"], registry=r)
        self.fetch_bytes = Counter(
            "broker_fetch_bytes", "Response body bytes of fetches", registry=r)
        self.fetch_skipped = Counter(
            "broker_fetch_skipped_offsets", "Offsets reported to consumers as lost to corruption",
            ["topic"], registry=r)
        self.fetch_waiting = Gauge(
            "broker_fetch_waiting", "Long-polls waiting for data now", registry=r)
        self.fetch_latency = Histogram(
            "broker_fetch_seconds", "Fetch request time, long-poll waits included", registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30))
        r.register(_PartitionCollector(store))

    def watch_tasks(self, supervisor: _TaskSource) -> None:
        """Export the restarts of the broker's supervised background tasks."""
        self.registry.register(_TaskCollector(supervisor))

    def watch_positions(self, ingest: _PositionSource) -> None:
        """Export the ingest positions held against their bounds, read at scrape time: past
        ``max_positions`` every new edge stream or generation is refused (429)."""
        self.registry.register(_PositionCollector(ingest))

    def watch_groups(self, groups: _GroupSource) -> None:
        """Export consumer lag of ``groups`` (a GroupCoordinator), computed at scrape time."""
        self.registry.register(_LagCollector(groups))


class _TaskSource(Protocol):  # what _TaskCollector needs of a Supervisor
    def status(self) -> list[dict[str, Any]]: ...


class _TaskCollector(Collector):
    def __init__(self, supervisor: _TaskSource) -> None:
        self.supervisor = supervisor

    def collect(self):  # type: ignore[no-untyped-def]
        restarts = CounterMetricFamily(
            "broker_task_restarts", "Background tasks that ended unexpectedly and were "
            "restarted, by reason (the exception type, or 'returned')",
            labels=["task", "reason"])
        up = GaugeMetricFamily("broker_task_up", "1 while a background task is running",
                               labels=["task"])
        for t in self.supervisor.status():
            up.add_metric([t["name"]], 1 if t["running"] else 0)
            for reason, n in sorted(t["restarts"].items()):
                restarts.add_metric([t["name"], reason], n)
        yield restarts
        yield up


class _PositionSource(Protocol):  # what _PositionCollector needs of an Ingestor
    max_positions: int
    max_positions_per_edge: int

    def position_counts(self) -> tuple[int, int]: ...


class _PositionCollector(Collector):
    def __init__(self, ingest: _PositionSource) -> None:
        self.ingest = ingest

    def collect(self):  # type: ignore[no-untyped-def]
        held, edge_max = self.ingest.position_counts()
        for name, text, value in (
                ("broker_ingest_positions", "Ingest positions (edge, stream, generation) "
                 "held", held),
                ("broker_ingest_positions_limit", "max_positions: new positions past it "
                 "are refused (429)", self.ingest.max_positions),
                ("broker_ingest_edge_positions_max", "The most positions held by one edge",
                 edge_max),
                ("broker_ingest_edge_positions_limit", "max_positions_per_edge",
                 self.ingest.max_positions_per_edge)):
            yield GaugeMetricFamily(name, text, value=value)


class _GroupSource(Protocol):  # what _LagCollector needs of a GroupCoordinator
    def lag(self) -> Iterable[tuple[str, tuple[str, int], int, int]]: ...


class _LagCollector(Collector):
    def __init__(self, groups: _GroupSource) -> None:
        self.groups = groups

    def collect(self):  # type: ignore[no-untyped-def]
        labels = ["group", "topic", "partition"]
        lag = GaugeMetricFamily("broker_consumer_lag",
                                "End offset minus committed offset per group and partition",
                                labels=labels)
        committed = GaugeMetricFamily("broker_consumer_committed_offset",
                                      "Committed offset (next to consume)", labels=labels)
        for group, (topic, partition), offset, end in self.groups.lag():
            values = [group, topic, str(partition)]
            lag.add_metric(values, max(0, end - offset))
            committed.add_metric(values, offset)
        yield from (lag, committed)


class _PartitionCollector(Collector):
    def __init__(self, store: PartitionStoreAPI) -> None:
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
        wait = GaugeMetricFamily("broker_partition_append_wait_seconds",
                                 "How long the oldest append not yet durable has waited "
                                 "(0 when none waits)", labels=["topic", "partition"])
        for p in self.store:
            labels = [p.topic, str(p.index)]
            start.add_metric(labels, p.start_offset)
            end.add_metric(labels, p.end_offset)
            size.add_metric(labels, p.size_bytes)
            corrupt.add_metric(labels, p.corrupt_records)
            wait.add_metric(labels, round(p.append_wait_s, 3))
        yield from (start, end, size, corrupt, wait)
