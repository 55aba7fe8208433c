"""The settings of one simulator run (picklable: it is sent to every worker process).

Options come from the command line, already typed by argparse; ``RunConfig`` checks the
combinations and raises the shared ``tomlconf.ConfigError`` keyed by the option
(``--devices: must be at least 1, got 0``), like the agent's and the broker's files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from mqttproto import V5, V311
from tomlconf import ConfigError

from .faults import FaultConfig
from .mqtt_pub import BrokerAddress
from .payloads import FORMATS

_TOPIC_FORBIDDEN = set("/+#\x00")


@dataclass(frozen=True)
class RunConfig:
    broker: str = "mqtt://127.0.0.1:1883"
    devices: int = 10
    rate: float = 1.0  # messages per second per device
    duration: float = 10.0  # seconds of publishing (connecting is not counted)
    qos: int = 1
    fmt: str = "json"
    id_pattern: str = "dev-{n:05d}"
    id_start: int = 1
    seq_start: int = 1
    topic_prefix: str = "devices"  # topics: {prefix}/{id}/telemetry and {prefix}/{id}/alarm
    alarm_ratio: float = 0.0
    seed: int = 1
    workers: int = 0  # 0 = automatic
    gateway: int = 0  # devices per MQTT connection; 0 = one connection per device
    client_id_prefix: str = ""
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    mqtt_version: int = V311
    keepalive: int = 60
    clean_session: bool = True
    max_inflight: int = 100
    offline_buffer: int = 1000  # messages a connection holds while offline
    drain_timeout: float = 10.0
    connect_concurrency: int = 64  # connection attempts in flight per worker
    connect_timeout: float = 30.0
    loop: str = "auto"  # event loop of the workers: auto (uvloop if installed), uvloop, asyncio
    faults: FaultConfig = field(default_factory=FaultConfig)

    def __post_init__(self) -> None:
        try:
            BrokerAddress.parse(self.broker)
        except ValueError as exc:
            raise ConfigError("--broker", str(exc)) from exc
        for option, value, ok, want in (
                ("--devices", self.devices, self.devices >= 1, "must be at least 1"),
                ("--rate", self.rate, self.rate > 0, "must be positive"),
                ("--duration", self.duration, self.duration > 0, "must be positive"),
                ("--qos", self.qos, self.qos in (0, 1), "must be 0 or 1"),
                ("--format", self.fmt, self.fmt in FORMATS,
                 f"must be one of {', '.join(FORMATS)}"),
                ("--alarm-ratio", self.alarm_ratio, 0.0 <= self.alarm_ratio <= 1.0,
                 "must be in [0, 1]"),
                ("--mqtt-version", self.mqtt_version, self.mqtt_version in (V311, V5),
                 "must be 3.1.1 or 5"),
                ("--loop", self.loop, self.loop in ("auto", "uvloop", "asyncio"),
                 "must be auto, uvloop or asyncio"),
                ("--workers", self.workers, self.workers >= 0, "must not be negative"),
                ("--gateway", self.gateway, self.gateway >= 0, "must not be negative"),
                ("--max-inflight", self.max_inflight, self.max_inflight >= 1,
                 "must be at least 1"),
                ("--offline-buffer", self.offline_buffer, self.offline_buffer >= 1,
                 "must be at least 1"),
                ("--client-id-prefix", self.client_id_prefix,
                 not _TOPIC_FORBIDDEN & set(self.client_id_prefix),
                 "must not contain / + # or NUL")):
            if not ok:
                raise ConfigError(option, f"{want}, got {value!r}")
        try:
            first, second = self.device_id(self.id_start), self.device_id(self.id_start + 1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError("--id-pattern", f"{self.id_pattern!r}: {exc}") from exc
        if first == second:
            raise ConfigError("--id-pattern", f"{self.id_pattern!r} must use {{n}}")
        if _TOPIC_FORBIDDEN & set(first) or not first:
            raise ConfigError("--id-pattern", f"device id {first!r} must be non-empty, "
                                              "without / + # or NUL")

    def device_id(self, n: int) -> str:
        return self.id_pattern.format(n=n)

    @property
    def connections(self) -> int:
        if not self.gateway:
            return self.devices
        return -(-self.devices // self.gateway)

    def worker_count(self) -> int:
        """Worker processes: as asked, else one per CPU once there are many connections."""
        if self.workers:
            return min(self.workers, self.connections)
        cpus = os.cpu_count() or 1
        return max(1, min(cpus, self.connections // 500))

    def topic(self, device_id: str, kind: str) -> str:
        return f"{self.topic_prefix}/{device_id}/{kind}"
