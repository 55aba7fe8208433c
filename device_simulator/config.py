"""The settings of one simulator run (picklable: it is sent to every worker process)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .faults import FaultConfig
from .mqtt_codec import V5, V311
from .mqtt_pub import BrokerAddress
from .payloads import FORMATS

_TOPIC_FORBIDDEN = set("/+#\x00")


class ConfigError(ValueError):
    """An option value the simulator cannot run with."""


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
            raise ConfigError(str(exc)) from exc
        if self.devices < 1:
            raise ConfigError("--devices must be at least 1")
        if self.rate <= 0 or self.duration <= 0:
            raise ConfigError("--rate and --duration must be positive")
        if self.qos not in (0, 1):
            raise ConfigError("--qos must be 0 or 1")
        if self.fmt not in FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(FORMATS)}")
        if not 0.0 <= self.alarm_ratio <= 1.0:
            raise ConfigError("--alarm-ratio must be in [0, 1]")
        if self.mqtt_version not in (V311, V5):
            raise ConfigError("--mqtt-version must be 3.1.1 or 5")
        if self.loop not in ("auto", "uvloop", "asyncio"):
            raise ConfigError("--loop must be auto, uvloop or asyncio")
        if self.workers < 0 or self.gateway < 0:
            raise ConfigError("--workers and --gateway must not be negative")
        if self.max_inflight < 1 or self.offline_buffer < 1:
            raise ConfigError("--max-inflight and --offline-buffer must be at least 1")
        if _TOPIC_FORBIDDEN & set(self.client_id_prefix):
            raise ConfigError("--client-id-prefix must not contain / + # or NUL")
        try:
            first, second = self.device_id(self.id_start), self.device_id(self.id_start + 1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"--id-pattern {self.id_pattern!r}: {exc}") from exc
        if first == second:
            raise ConfigError(f"--id-pattern {self.id_pattern!r} must use {{n}}")
        if _TOPIC_FORBIDDEN & set(first) or not first:
            raise ConfigError(f"device id {first!r} must be non-empty, without / + # or NUL")

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
