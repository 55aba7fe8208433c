"""Prometheus metrics of one agent, read from its status document at scrape time.

Strategy: one CollectorRegistry per agent (never the global one). Counters are kept as
plain integers by the parts that own them (ingest, forwarder, logs) and turned into
metric families when scraped, so the ingest hot path never takes a metrics lock and the
numbers always agree with ``GET /status``. Only the fsync latency is a real Histogram,
observed once per appended batch (time from the append to the group commit covering it).
See docs/edge-agent.md for what each metric means.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .payload import REASONS

#: label values known in advance, exported as 0 from the start so that a dashboard's
#: rate() and an alert on "> 0" see the series before the first increment
DROP_REASONS = ("full", "drop_oldest")
RESET_CAUSES = ("epoch", "window")

_STREAM_COUNTERS = (
    # (metric name, status key, help)
    ("edge_ingest_received", "received", "MQTT messages received for the stream"),
    ("edge_ingest_appended", "appended", "Readings appended to the stream's log"),
    ("edge_ingest_pubacks", "pubacks", "QoS 1 PUBACKs sent after the reading was durable"),
    ("edge_ingest_deduplicated", "deduplicated",
     "Redelivered readings dropped by the per-device sequence high-water mark"),
    ("edge_uplink_acked_records", "acked_records", "Records acknowledged by the cloud"),
    ("edge_dedup_evictions", "dedup_evictions",
     "Devices whose dedup mark was evicted (ingest.dedup_max_devices reached)"),
    ("edge_ingest_internal_errors", "internal_errors",
     "Messages dead-lettered because handling them raised (reason internal): a bug"),
)
_STREAM_GAUGES = (
    ("edge_backlog_records", "backlog_records", "Records not yet acknowledged by the cloud"),
    ("edge_backlog_bytes", "backlog_bytes", "Bytes of segments holding unacknowledged records"),
    ("edge_oldest_unsent_age_seconds", "oldest_unsent_age_s",
     "Age of the oldest record not yet acknowledged by the cloud"),
    ("edge_ingest_rate", "ingest_rate", "Readings appended per second (moving average)"),
    ("edge_drain_rate", "drain_rate", "Records acknowledged by the cloud per second"),
    ("edge_drain_eta_seconds", "drain_eta_s", "Backlog divided by the drain rate"),
    ("edge_acked_offset", "acked_offset", "Last offset acknowledged by the cloud"),
    ("edge_log_end_offset", "end_offset", "Next offset to be written to the stream's log"),
    ("edge_log_size_bytes", "log_size_bytes", "Size of the stream's log on disk"),
    ("edge_ingest_held_messages", "held",
     "QoS 1 readings held unacknowledged because the log cannot be written"),
)


class _StatusCollector(Collector):
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        doc = self._snapshot()
        streams = doc.get("streams", [])
        for name, key, text in _STREAM_COUNTERS:
            fam = CounterMetricFamily(name, text, labels=["stream"])
            for s in streams:
                fam.add_metric([s["name"]], s.get(key, 0))
            yield fam
        for name, key, text in _STREAM_GAUGES:
            fam = GaugeMetricFamily(name, text, labels=["stream"])
            for s in streams:
                if s.get(key) is not None:
                    fam.add_metric([s["name"]], s[key])
            yield fam
        dropped = CounterMetricFamily(
            "edge_ingest_dropped", "Readings dropped, by reason (full: QoS 0 while the log "
            "was full; drop_oldest: deleted by the full policy)", labels=["stream", "reason"])
        for s in streams:
            drops = dict.fromkeys(DROP_REASONS, 0) | s.get("drops", {})
            for reason, n in sorted(drops.items()):
                dropped.add_metric([s["name"], reason], n)
        yield dropped
        dead = CounterMetricFamily("edge_ingest_dead_lettered",
                                   "Messages written to the dead-letter log, by reason",
                                   labels=["stream", "reason"])
        by_stream = {s["name"]: {} for s in streams} | doc.get("dead_letter", {}).get(
            "by_stream", {})
        for stream, reasons in sorted(by_stream.items()):
            for reason, n in sorted((dict.fromkeys(REASONS, 0) | reasons).items()):
                dead.add_metric([stream, reason], n)
        yield dead
        resets = CounterMetricFamily(
            "edge_sequence_resets", "Device sequence restarts accepted, by cause (epoch: a new "
            "boot epoch; window: the sequence fell back more than ingest.dedup_window)",
            labels=["stream", "cause"])
        for s in streams:
            causes = dict.fromkeys(RESET_CAUSES, 0) | s.get("sequence_resets", {})
            for cause, n in sorted(causes.items()):
                resets.add_metric([s["name"], cause], n)
        yield resets
        writable = GaugeMetricFamily("edge_stream_writable",
                                     "1 when the stream's last append succeeded", labels=["stream"])
        retries = CounterMetricFamily("edge_uplink_retries", "Uplink send retries",
                                      labels=["stream"])
        last_err = GaugeMetricFamily("edge_uplink_last_error_info",
                                     "The last uplink error of a stream (value 1)",
                                     labels=["stream", "error"])
        for s in streams:
            writable.add_metric([s["name"]], 0 if s.get("write_error") else 1)
            up = s.get("uplink", {})
            retries.add_metric([s["name"]], up.get("retries", 0))
            if up.get("last_error"):
                last_err.add_metric([s["name"], up["last_error"][:200]], 1)
        yield writable
        yield retries
        yield last_err
        up = doc.get("uplink", {})
        state = GaugeMetricFamily("edge_uplink_up", "1 when the last uplink send succeeded")
        state.add_metric([], 0 if up.get("state") in ("retrying", "stopped") else 1)
        yield state
        conn = GaugeMetricFamily("edge_mqtt_connected", "1 when the MQTT session is connected",
                                 labels=["client_id"])
        connects = CounterMetricFamily("edge_mqtt_connects", "Successful MQTT connects",
                                       labels=["client_id"])
        for m in doc.get("mqtt", []):
            conn.add_metric([m["client_id"]], 1 if m.get("connected") else 0)
            connects.add_metric([m["client_id"]], m.get("connects", 0))
        yield conn
        yield connects
        fast = GaugeMetricFamily("edge_mqtt_fast_path", "1 while an MQTT client fast path is "
                                 "on; 0: off (unchecked paho-mqtt, or it failed), paho's own "
                                 "code is used", labels=["path"])
        for f in doc.get("mqtt_fast_paths", []):
            fast.add_metric([f["path"]], 1 if f.get("on") else 0)
        yield fast
        restarts = CounterMetricFamily(
            "edge_task_restarts", "Supervised tasks that ended unexpectedly and were "
            "restarted, by reason (the exception type, or 'returned')",
            labels=["task", "reason"])
        up_ = GaugeMetricFamily("edge_task_up", "1 while a supervised task is running",
                                labels=["task"])
        for t in doc.get("tasks", []):
            up_.add_metric([t["name"]], 1 if t.get("running") else 0)
            for reason, n in sorted(t.get("restarts", {}).items()):
                restarts.add_metric([t["name"], reason], n)
        yield restarts
        yield up_
        healthy = GaugeMetricFamily("edge_healthy", "1 when /healthz reports no problem")
        healthy.add_metric([], 0 if doc.get("problems") else 1)
        yield healthy
        yield from _transform_metrics(doc.get("transforms", []))
        if doc.get("mqtt_listener"):
            yield from _listener_metrics(doc["mqtt_listener"])


_LISTENER_COUNTERS = (
    ("edge_listener_connects", "connects", "Device connections accepted (CONNACK 0)"),
    ("edge_listener_publishes", "publishes", "PUBLISH packets received from devices"),
    ("edge_listener_pubacks", "pubacks", "PUBACKs sent to devices (each after its reading "
     "was durable, or refusing it)"),
    ("edge_listener_acl_denied", "acl_denied", "PUBLISHes the ACL refused"),
    ("edge_listener_malformed", "malformed", "Connections closed for a malformed packet"),
    ("edge_listener_takeovers", "takeovers", "Sessions taken over by a new connection"),
    ("edge_listener_over_limit", "over_limit", "Sockets closed at once: max_connections"),
    ("edge_listener_wills", "wills", "Will messages published into the pipeline"),
    ("edge_listener_hurries", "hurries", "Group commits asked for at once: every "
     "publishing device was waiting for a PUBACK"),
)


def _listener_metrics(m: dict[str, Any]) -> Iterator[Metric]:
    """The MQTT listener's counters (``GET /status`` ``mqtt_listener``)."""
    for name, key, text in _LISTENER_COUNTERS:
        fam = CounterMetricFamily(name, text)
        fam.add_metric([], m.get(key, 0))
        yield fam
    for name, key, text in (("edge_listener_connections", "connections",
                             "Device sockets open now"),
                            ("edge_listener_sessions", "sessions", "Sessions kept now"),
                            ("edge_listener_inflight", "inflight",
                             "QoS 1 readings received, not yet PUBACKed")):
        gauge = GaugeMetricFamily(name, text)
        gauge.add_metric([], m.get(key, 0))
        yield gauge
    for name, key, text in (("edge_listener_refused", "refused", "CONNECTs refused, by reason"),
                            ("edge_listener_disconnects", "disconnects",
                             "Connections ended, by reason")):
        fam = CounterMetricFamily(name, text, labels=["reason"])
        for reason, n in sorted(m.get(key, {}).items()):
            fam.add_metric([reason], n)
        yield fam


_TRANSFORM_COUNTERS = (
    ("edge_transform_readings_in", "readings_in", "Items a transform received"),
    ("edge_transform_readings_out", "readings_out", "Items a transform passed on or emitted"),
    ("edge_transform_dropped", "dropped",
     "Items a transform dropped: filtered out, thinned, or absorbed into a window"),
    ("edge_transform_windows", "windows", "Windows emitted (window, downsample last/mean)"),
    ("edge_transform_late", "late", "Readings for a window already closed (dropped)"),
    ("edge_transform_unfit", "unfit",
     "Readings a transform could not apply to (passed or dropped per on_unfit)"),
    ("edge_transform_routed", "routed", "Readings a route sent to its stream"),
)
_RUNNER_COUNTERS = (
    ("edge_transform_input_bytes", "bytes_in", "Payload bytes the transforms read"),
    ("edge_transform_output_bytes", "bytes_out", "Payload bytes written to derived streams"),
    ("edge_transform_rederived", "rederived",
     "Derived records re-derived after a restart and found already stored"),
    ("edge_transform_rederive_mismatch", "rederive_mismatch",
     "Re-derived records that differ from the stored ones (must stay 0)"),
    ("edge_transform_lost", "lost",
     "Raw readings deleted by the full policy before they were transformed"),
    ("edge_transform_internal_errors", "internal_errors",
     "Readings a transform failed on with a bug of ours (dead-lettered as internal)"),
    ("edge_transform_clock_ahead", "clock_ahead",
     "Readings whose device time was over 5 min ahead of receipt (receive time used)"),
)


def _transform_metrics(runners: list[dict[str, Any]]) -> Iterator[Metric]:
    for name, key, text in _TRANSFORM_COUNTERS:
        fam = CounterMetricFamily(name, text, labels=["stream", "transform"])
        for r in runners:
            for t in r.get("transforms", []):
                fam.add_metric([r["stream"], t["name"]], t.get(key, 0))
        yield fam
    for name, key, text in _RUNNER_COUNTERS:
        fam = CounterMetricFamily(name, text, labels=["stream"])
        for r in runners:
            fam.add_metric([r["stream"]], r.get(key, 0))
        yield fam
    lag = GaugeMetricFamily("edge_transform_lag_records",
                            "Raw readings not yet transformed", labels=["stream"])
    for r in runners:
        lag.add_metric([r["stream"]], r.get("lag", 0))
    yield lag


class AgentMetrics:
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        self.fsync_latency = Histogram(
            "edge_fsync_latency_seconds",
            "Time from appending a batch to the group commit (fsync) that made it durable",
            ["stream"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.registry.register(_StatusCollector(snapshot))

    def observer(self, stream: str) -> Callable[[float], None]:
        return self.fsync_latency.labels(stream).observe

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
