"""Run a fleet: split it over worker processes, start them together, collect the manifest.

Strategy: the parent process does no MQTT at all.  It plans which connections
(and so which devices) each worker owns, spawns the workers, waits until every
one has connected its share, then publishes one common start time so the
aggregate rate is right from the first second and connecting never counts as
publishing time.  Workers report progress snapshots over a queue; the parent
sums them for the display, and at the end assembles the device records into
the manifest.  Ctrl-C sets a stop event: workers stop taking readings, drain
and still report, so an interrupted run leaves a truthful manifest.

Workers are spawned (not forked) so they never inherit the parent's threads
(the progress display) or its event loop.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .config import RunConfig
from .manifest import DeviceRecord, Manifest
from .mqtt_pub import BrokerAddress
from .worker import WorkerPlan, worker_main

SUM_FIELDS = ("connections", "connected", "readings", "deferred", "sent", "acked", "rejected",
              "reconnects", "connection_errors", "inflight", "pending", "dropped")
ProgressCallback = Callable[[dict[str, Any]], None]


@dataclass
class RunResult:
    manifest: Manifest
    summary: dict[str, Any]

    @property
    def ok(self) -> bool:
        """Every worker finished and every connection came up."""
        s = self.summary
        return not s["worker_errors"] and s["connected_at_start"] == s["connections"]


def plan_workers(cfg: RunConfig) -> list[WorkerPlan]:
    """Group devices into connections, and connections into contiguous worker slices."""
    indices = list(range(cfg.id_start, cfg.id_start + cfg.devices))
    prefix = cfg.client_id_prefix
    if cfg.gateway:
        k = cfg.gateway
        groups = [(f"{prefix}gw-{g:05d}", tuple(indices[i:i + k]))
                  for g, i in enumerate(range(0, len(indices), k))]
    else:
        groups = [(prefix + cfg.device_id(i), (i,)) for i in indices]
    workers = cfg.worker_count()
    plans = []
    for w in range(workers):
        lo = len(groups) * w // workers
        hi = len(groups) * (w + 1) // workers
        plans.append(WorkerPlan(w, tuple(groups[lo:hi])))
    return plans


def _now_iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts if ts is not None else time.time(), UTC).isoformat()


def aggregate(snapshots: dict[int, dict[str, Any]]) -> dict[str, Any]:
    total = {name: sum(s.get(name, 0) for s in snapshots.values()) for name in SUM_FIELDS}
    total["errors"] = total["connection_errors"] + total["rejected"] + total["dropped"]
    return total


class _Parent:
    def __init__(self, cfg: RunConfig, on_progress: ProgressCallback | None) -> None:
        self.cfg = cfg
        self.on_progress = on_progress
        self.plans = plan_workers(cfg)
        ctx = mp.get_context("spawn")
        self.queue = ctx.Queue()
        self.start_event = ctx.Event()
        self.stop_event = ctx.Event()
        self.start_at = ctx.Value("d", 0.0)
        self.procs = [ctx.Process(target=worker_main, name=f"device-sim-worker-{p.worker_id}",
                                  args=(cfg, p, self.queue, self.start_event, self.stop_event,
                                        self.start_at), daemon=True)
                      for p in self.plans]
        self.latest: dict[int, dict[str, Any]] = {}
        self.ready: dict[int, dict[str, Any]] = {}
        self.done: dict[int, dict[str, Any]] = {}
        self.failed: dict[int, str] = {}
        self.phase = "connecting"
        self.started = time.time()
        self.publish_start: float | None = None
        self.interrupted = False

    def run(self) -> RunResult:
        for proc in self.procs:
            proc.start()
        try:
            while len(self.done) + len(self.failed) < len(self.procs):
                try:
                    self._step()
                except KeyboardInterrupt:
                    if self.interrupted:
                        raise
                    self.interrupted = True
                    self.stop_event.set()
        finally:
            for proc in self.procs:
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.terminate()
                    proc.join(timeout=5)
        return self._result()

    def _step(self) -> None:
        try:
            kind, wid, data = self.queue.get(timeout=0.2)
        except queue_mod.Empty:
            for wid, proc in enumerate(self.procs):
                if (not proc.is_alive() and wid not in self.done and wid not in self.failed):
                    self.failed[wid] = f"worker {wid} exited with code {proc.exitcode}"
            self._maybe_start()
            self._progress()
            return
        if kind == "ready":
            self.ready[wid] = data
            self.latest.setdefault(wid, {}).update(connected=data["connected"],
                                                   connections=data["connections"])
        elif kind == "progress":
            self.latest[wid] = data
        elif kind == "done":
            self.done[wid] = data
            self.latest[wid] = data["stats"]
        elif kind == "error":
            self.failed[wid] = data
        self._maybe_start()
        self._progress()

    def _maybe_start(self) -> None:
        if self.publish_start is None and len(self.ready) + len(self.failed) >= len(self.procs):
            self.publish_start = time.time() + 0.1
            self.start_at.value = self.publish_start
            self.start_event.set()
            self.phase = "publishing"

    def _progress(self) -> None:
        if self.on_progress is None:
            return
        total = aggregate(self.latest)
        now = time.time()
        if self.publish_start is not None:
            total["elapsed"] = max(0.0, now - self.publish_start)
            if total["elapsed"] >= self.cfg.duration or self.interrupted:
                self.phase = "draining"
        else:
            total["elapsed"] = 0.0
        total["phase"] = self.phase
        total["connect_elapsed"] = now - self.started
        self.on_progress(total)

    def _result(self) -> RunResult:
        cfg = self.cfg
        records: dict[str, DeviceRecord] = {}
        for data in self.done.values():
            for d in data["devices"]:
                records[d["device"]] = DeviceRecord.from_dict(d["device"], d)
        stats = [d["stats"] for d in self.done.values()]
        total = aggregate({i: s for i, s in enumerate(stats)})
        publish_s = max((s["publish_seconds"] for s in stats), default=0.0)
        ended = time.time()
        worker_errors = list(self.failed.values())
        connect_errors = [e for r in self.ready.values() for e in r.get("errors", [])]
        summary = {
            **total,
            "workers": len(self.procs),
            "devices": cfg.devices,
            "connected_at_start": sum(s["connected_at_start"] for s in stats),
            "connect_seconds": max((r["connect_s"] for r in self.ready.values()), default=0.0),
            "publish_seconds": publish_s,
            "behind": sum(s["behind"] for s in stats),
            # CPU of the workers while publishing (not connecting), per reading taken
            "cpu_us_per_reading": (sum(s["publish_cpu_seconds"] for s in stats)
                                   / max(1, total["readings"]) * 1e6),
            "target_rate": cfg.devices * cfg.rate,
            "readings_per_s": total["readings"] / publish_s if publish_s else 0.0,
            "messages_per_s": total["sent"] / publish_s if publish_s else 0.0,
            "interrupted": self.interrupted,
            "worker_errors": worker_errors,
            "connect_errors": connect_errors[:10],
        }
        address = BrokerAddress.parse(cfg.broker)
        run = {
            "tool": "device-sim",
            "started_at": _now_iso(self.started),
            "publish_started_at": _now_iso(self.publish_start) if self.publish_start else None,
            "ended_at": _now_iso(ended),
            "duration_s": cfg.duration,
            "publish_seconds": publish_s,
            "broker": address.redacted(),
            "devices": cfg.devices,
            "connections": cfg.connections,
            "gateway": cfg.gateway,
            "workers": len(self.procs),
            "rate_per_device": cfg.rate,
            "qos": cfg.qos,
            "format": cfg.fmt,
            "mqtt_version": "5" if cfg.mqtt_version == 5 else "3.1.1",
            "id_pattern": cfg.id_pattern,
            "id_start": cfg.id_start,
            "seq_start": cfg.seq_start,
            "topics": {"telemetry": cfg.topic("{id}", "telemetry"),
                       "alarm": cfg.topic("{id}", "alarm")},
            "alarm_ratio": cfg.alarm_ratio,
            "seed": cfg.seed,
            "faults": cfg.faults.to_dict(),
            "incomplete": bool(worker_errors) or len(records) != cfg.devices,
            "interrupted": self.interrupted,
        }
        manifest = Manifest(run=run, devices=records)
        manifest.compute_totals()
        return RunResult(manifest, summary)


def run(cfg: RunConfig, on_progress: ProgressCallback | None = None) -> RunResult:
    """Run the fleet described by ``cfg``; blocks until every worker has drained."""
    return _Parent(cfg, on_progress).run()
