"""One simulated device: takes a reading, applies its faults, publishes, keeps its manifest.

Strategy: everything a reading needs that does not change (profile, topics,
clock skew, the connection) is bound once in ``__init__``; ``emit`` is the
per-message hot path, run 50,000 times a second across the workers, so it reads
locals and skips the fault draw entirely when no fault or alarm is configured.
The seq is consumed by every reading that is taken (corrupt or dropped ones
too) and is *not* consumed when the connection is congested: the device then
skips the sample, like a sensor whose link is busy, and the runner counts it as
deferred.
"""

from __future__ import annotations

import time

from . import faults, payloads, sensors
from .config import RunConfig
from .manifest import DeviceRecord
from .mqtt_codec import topic_field
from .mqtt_pub import MqttConnection

_DUPLICATE, _MALFORMED, _OVERSIZED = faults.DUPLICATE, faults.MALFORMED, faults.OVERSIZED
_DISCONNECT, _ALARM = faults.DISCONNECT, faults.ALARM
_time_ns = time.time_ns


class Device:
    __slots__ = ("_alarm_ratio", "_alarm_topic", "_decide", "_fault_cfg", "_period", "_qos",
                 "_seed", "_telemetry_topic", "conn", "fmt", "id", "index", "profile", "record",
                 "seq", "skew_ms")

    def __init__(self, cfg: RunConfig, index: int, conn: MqttConnection) -> None:
        self.index = index
        self.id = cfg.device_id(index)
        self.conn = conn
        self.fmt = cfg.fmt
        self.profile = sensors.profile_for(cfg.seed, index)
        self.skew_ms = faults.clock_skew_ms(cfg.faults, cfg.seed, index)
        self.seq = cfg.seq_start
        self.record = DeviceRecord(self.id, index, self.profile.kind, self.skew_ms)
        self._telemetry_topic = topic_field(cfg.topic(self.id, "telemetry"))
        self._alarm_topic = topic_field(cfg.topic(self.id, "alarm"))
        self._qos = cfg.qos
        self._period = 1.0 / cfg.rate
        self._seed = cfg.seed
        self._fault_cfg = cfg.faults
        self._decide = cfg.faults.per_message or cfg.alarm_ratio > 0
        self._alarm_ratio = cfg.alarm_ratio if self._decide else 0.0

    def emit(self) -> bool:
        """Take and publish one reading; False when skipped because the link is congested."""
        conn = self.conn
        if conn.congested:
            return False
        seq = self.seq
        self.seq = seq + 1
        record = self.record
        if record.first_seq is None:
            record.first_seq = seq
        record.last_seq = seq
        record.sent += 1
        flags = (faults.decide(self._fault_cfg, self._alarm_ratio, self._seed, self.index, seq)
                 if self._decide else 0)
        profile = self.profile
        values = sensors.reading(profile, (seq - 1) * self._period, seq)
        ts = _time_ns() // 1_000_000 + self.skew_ms
        if flags & _ALARM:
            message = payloads.alarm(self.id, seq, ts, sensors.alarm_for(profile, values), values)
            topic = self._alarm_topic
            record.alarm_seqs.append(seq)
        else:
            message = payloads.telemetry(self.id, seq, ts, profile.kind, values)
            topic = self._telemetry_topic
        if flags & _MALFORMED:
            payload = payloads.malformed(payloads.encode(message, self.fmt), seq)
            record.malformed_seqs.append(seq)
        elif flags & _OVERSIZED:
            payload = payloads.oversized(message, self.fmt, self._fault_cfg.oversized_bytes)
            record.oversized_seqs.append(seq)
        else:
            payload = payloads.encode(message, self.fmt)
        tag = (self.index, seq)
        if not conn.publish(topic, payload, self._qos, tag):
            record.dropped_seqs.append(seq)
        elif flags & _DUPLICATE:
            conn.publish(topic, payload, self._qos, None)
            record.duplicates += 1
        if flags & _DISCONNECT and conn.connected:
            record.disconnects += 1
            conn.drop(faults.reconnect_delay(self._fault_cfg, self._seed, self.index,
                                             record.disconnects))
        return True
