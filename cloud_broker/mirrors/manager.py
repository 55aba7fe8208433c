"""The mirrors of one process: build targets from config, run, add, remove, report.

Strategy: the manager is what the broker (or ``cloud-broker mirror``) holds. It turns a
MirrorConfig into a Target, runs one MirrorRunner task per mirror against one Source, and
exposes their status for GET /v1/mirrors and, through a Prometheus collector read at
scrape time, for /metrics. Mirrors added through the admin API are stored in mirrors.db
next to the checkpoints so they come back after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from tomlconf import ConfigError

from ..config import unknown_topic
from .checkpoints import DB_NAME, CheckpointStore
from .runner import MirrorRunner
from .settings import MirrorConfig, parse_mirror
from .source import Source
from .target import Target

log = logging.getLogger(__name__)


def build_target(cfg: MirrorConfig) -> Target:
    """The Target a mirror definition asks for (imports only the backend it needs)."""
    if cfg.target == "broker":
        from .broker_target import BrokerTarget
        assert cfg.url is not None
        return BrokerTarget(cfg.url, cfg.token, cfg.target_topic, cfg.timeout_s)
    if cfg.target == "nats":
        from .nats_target import NatsTarget
        return NatsTarget(cfg.servers, cfg.stream_name, cfg.subject_prefix, cfg.replicas,
                          cfg.duplicate_window_s, cfg.timeout_s)
    if cfg.target == "postgres":
        from .postgres_target import PostgresTarget
        ssl = {k: str(v) for k in ("sslmode", "sslrootcert", "sslcert", "sslkey")
               if (v := getattr(cfg, k)) is not None}
        return PostgresTarget(cfg.dsn, cfg.table, password=cfg.password,
                              password_env=cfg.password_env, connect_kwargs=ssl,
                              fields=dict(cfg.fields), hypertable=cfg.hypertable,
                              timeout_s=cfg.timeout_s, connections=cfg.connections)
    from .sql_target import SqlTarget
    assert cfg.path is not None
    return SqlTarget(cfg.path, cfg.table, cfg.json_columns, cfg.timeout_s)


class MirrorExists(ValueError):
    """A mirror of that name is already running."""


class MirrorManager:
    def __init__(self, data_dir: Path, source: Source, configs: Iterable[MirrorConfig] = (),
                 *, base_dir: Path | None = None, load_defined: bool = True,
                 topics: Callable[[], Iterable[str]] | None = None) -> None:
        """``topics``: the topics a mirror may read (None: any); a mirror of another
        topic is refused when added, and a stored one is not started."""
        self.source = source
        self._topics = topics
        self.base_dir = base_dir or Path(data_dir)
        self.checkpoints = CheckpointStore(Path(data_dir) / DB_NAME)
        self.configs: dict[str, MirrorConfig] = {c.name: c for c in configs}
        self.dynamic: set[str] = set()
        if load_defined:
            for name, raw in self.checkpoints.definitions().items():
                if name in self.configs:
                    log.warning("mirror %s is in the config and was added by API; "
                                "the config wins", name)
                    continue
                try:
                    cfg = parse_mirror(name, raw, self.base_dir, f"{name}.")
                    self._check_topic(cfg, f"{name}.topic")
                    self.configs[name] = cfg
                    self.dynamic.add(name)
                except ValueError as exc:
                    log.error("stored mirror %s is invalid, not started: %s", name, exc)
        self.runners: dict[str, MirrorRunner] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        for cfg in self.configs.values():
            self._start(cfg)

    def _start(self, cfg: MirrorConfig) -> None:
        runner = MirrorRunner(cfg, self.source, build_target(cfg), self.checkpoints)
        self.runners[cfg.name] = runner
        self._tasks[cfg.name] = asyncio.create_task(self._run(runner), name=f"mirror-{cfg.name}")
        log.info("mirror %s: %s -> %s", cfg.name, cfg.topic, runner.target.description)

    async def _run(self, runner: MirrorRunner) -> None:
        try:
            await runner.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("mirror %s stopped", runner.name)

    async def add(self, raw: dict[str, Any]) -> MirrorConfig:
        """Start a mirror defined by the admin API and remember it (ConfigError if bad)."""
        raw = dict(raw)
        name = raw.pop("name", None)
        cfg = parse_mirror(name, raw, self.base_dir, "")
        self._check_topic(cfg, "topic")
        if name in self.runners:
            raise MirrorExists(f"mirror {name!r} already exists")
        await asyncio.to_thread(self.checkpoints.put_definition, name, raw)
        self.configs[name] = cfg
        self.dynamic.add(name)
        self._start(cfg)
        return cfg

    def _check_topic(self, cfg: MirrorConfig, key: str) -> None:
        if self._topics is None:
            return
        known = list(self._topics())
        if cfg.topic not in known:
            raise ConfigError(key, unknown_topic(cfg.topic, known))

    async def remove(self, name: str) -> bool:
        """Stop a mirror added by the API and forget it with its checkpoints."""
        if name not in self.dynamic:
            return False
        await self._stop(name)
        self.dynamic.discard(name)
        self.configs.pop(name, None)
        await asyncio.to_thread(self.checkpoints.delete_definition, name)
        await asyncio.to_thread(self.checkpoints.forget, name)
        return True

    async def _stop(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        self.runners.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self) -> None:
        for name in list(self._tasks):
            await self._stop(name)
        self.checkpoints.close()

    def status(self) -> list[dict[str, Any]]:
        """Every mirror's status (masked by ``MirrorRunner.status``)."""
        return [{**r.status(), "source": "config" if n not in self.dynamic else "api"}
                for n, r in sorted(self.runners.items())]


class MirrorCollector(Collector):
    """broker_mirror_* metrics, read from the runners at scrape time."""

    def __init__(self, manager: MirrorManager) -> None:
        self.manager = manager

    def collect(self):  # type: ignore[no-untyped-def]
        labels = ["mirror", "topic", "partition"]
        lag = GaugeMetricFamily("broker_mirror_lag_records",
                                "Durable source records not yet in the target", labels=labels)
        pos = GaugeMetricFamily("broker_mirror_position",
                                "Next source offset the mirror copies", labels=labels)
        stalled = GaugeMetricFamily("broker_mirror_stalled",
                                    "1 while the target refuses the partition permanently",
                                    labels=labels)
        copied = CounterMetricFamily("broker_mirror_records", "Records written to the target",
                                     labels=labels)
        lost = CounterMetricFamily("broker_mirror_lost_records",
                                   "Records gone from the source before they were copied",
                                   labels=labels)
        retries = CounterMetricFamily("broker_mirror_retries",
                                      "Failed source reads, target writes and checkpoints",
                                      labels=labels)
        for runner in list(self.manager.runners.values()):
            for ps in list(runner.partitions.values()):
                lv = [runner.name, runner.config.topic, str(ps.partition)]
                if ps.lag is not None:
                    lag.add_metric(lv, ps.lag)
                if ps.position is not None:
                    pos.add_metric(lv, ps.position)
                stalled.add_metric(lv, 1 if ps.state == "stalled" else 0)
                copied.add_metric(lv, ps.records_copied)
                lost.add_metric(lv, ps.records_lost)
                retries.add_metric(lv, ps.retries)
        yield from (lag, pos, stalled, copied, lost, retries)


__all__ = ["MirrorCollector", "MirrorExists", "MirrorManager", "build_target"]
