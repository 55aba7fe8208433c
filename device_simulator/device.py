"""One simulated device: takes a reading, applies its faults, publishes, keeps its manifest.

Strategy: everything a reading needs that does not change (profile, topics,
clock skew, the connection) is bound once in ``__init__``; ``emit`` is the
per-message hot path, run 50,000 times a second across the workers, so it reads
locals and skips the fault draw entirely when no fault or alarm is configured.
The seq is consumed by every reading that is taken (corrupt or dropped ones
too) and is *not* consumed when the connection is congested: the device then
skips the sample, like a sensor whose link is busy, and the runner counts it as
deferred.

``seq`` here is the device's *reading number*, which only grows: the manifest,
the fault plan and the sensor models are in reading numbers. A ``reboot`` fault
starts a new boot: the payload's ``seq`` restarts at ``seq_start`` and the payload
carries ``boot`` (1, 2, ...); the manifest records where each boot started
(``boot_starts``) so the verifier can map (boot, seq) back to the reading number.
"""

from __future__ import annotations

import time

from mqttproto import topic_field

from . import faults, payloads, sensors
from .config import RunConfig
from .manifest import DeviceRecord
from .mqtt_pub import MqttConnection

_DUPLICATE, _MALFORMED, _OVERSIZED = faults.DUPLICATE, faults.MALFORMED, faults.OVERSIZED
_DISCONNECT, _ALARM, _REBOOT = faults.DISCONNECT, faults.ALARM, faults.REBOOT
_time_ns = time.time_ns


class Device:
    __slots__ = ("_alarm_ratio", "_alarm_topic", "_boot_offset", "_decide", "_fault_cfg",
                 "_period", "_qos", "_seed", "_seq_start", "_telemetry_topic", "boot", "conn",
                 "fmt", "id", "index", "profile", "record", "seq", "skew_ms")

    def __init__(self, cfg: RunConfig, index: int, conn: MqttConnection) -> None:
        self.index = index
        self.id = cfg.device_id(index)
        self.conn = conn
        self.fmt = cfg.fmt
        self.profile = sensors.profile_for(cfg.seed, index)
        self.skew_ms = faults.clock_skew_ms(cfg.faults, cfg.seed, index)
        self.seq = cfg.seq_start
        self._seq_start = cfg.seq_start
        self.boot = 0
        self._boot_offset = 0  # reading number - payload seq in the current boot
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
        sent_seq = seq - self._boot_offset
        if flags & _ALARM:
            message = payloads.alarm(self.id, sent_seq, ts, sensors.alarm_for(profile, values),
                                     values)
            topic = self._alarm_topic
            record.alarm_seqs.append(seq)
        else:
            message = payloads.telemetry(self.id, sent_seq, ts, profile.kind, values)
            topic = self._telemetry_topic
        if self.boot:
            message[payloads.BOOT_FIELD] = self.boot
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
        if flags & _REBOOT:  # the next reading is the first of a new boot
            self.boot += 1
            self._boot_offset = self.seq - self._seq_start
            record.boot_starts.append(self.seq)
        if flags & _DISCONNECT and conn.connected:
            record.disconnects += 1
            conn.drop(faults.reconnect_delay(self._fault_cfg, self._seed, self.index,
                                             record.disconnects))
        return True
