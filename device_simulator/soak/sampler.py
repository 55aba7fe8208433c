"""Once a second: RSS, open fds, threads and CPU of every soak process, plus the agent's
dedup marks, backlog and oldest unsent reading per stream, appended to a JSON-lines file.
In cluster mode also the longest append wait of each topic's partitions on the broker
nodes (``append_wait``): how long a JetStream stream has been electing a leader.

The broker's fds are also sampled net of its segment files (``fds_net``): the
partition store holds one fd per retained segment, which grows with the data until
retention deletes segments, and is not a leak.

Strategy: a daemon thread that only reads (it never starts or stops anything). Process
figures come from psutil when installed (the ``soak`` extra), else from ``/proc``
directly; a process that is down or restarting is simply absent from that second's
sample, and the pid in each sample tells incarnations apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is in the test and soak extras
    psutil = None

_TICK = os.sysconf("SC_CLK_TCK")


def proc_figures(pid: int) -> tuple[int, int, int, float]:
    """(rss bytes, open fds, threads, cpu seconds) of ``pid``; OSError when it is gone."""
    if psutil is not None:
        try:
            p = psutil.Process(pid)
            with p.oneshot():
                t = p.cpu_times()
                return p.memory_info().rss, p.num_fds(), p.num_threads(), t.user + t.system
        except psutil.Error as exc:
            raise OSError(str(exc)) from exc
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return (rss, len(os.listdir(f"/proc/{pid}/fd")), int(fields[17]),
            (int(fields[11]) + int(fields[12])) / _TICK)


def agent_figures(status_port: int) -> dict[str, Any] | None:
    try:
        doc = httpx.get(f"http://127.0.0.1:{status_port}/status", timeout=0.8).json()
    except (httpx.HTTPError, ValueError):
        return None
    return {s["name"]: {"backlog": s["backlog_records"], "marks": s["devices"],
                        "evictions": s["dedup_evictions"], "oldest_s": s["oldest_unsent_age_s"],
                        "dead_lettered": s["dead_lettered"], "deduplicated": s["deduplicated"],
                        "drops": s["drops"]}
            for s in doc.get("streams", [])}


_APPEND_WAIT = re.compile(
    rb'^broker_partition_append_wait_seconds\{[^}]*topic="([^"]+)"[^}]*\} (\S+)$', re.M)


def append_waits(metrics_urls: list[str]) -> dict[str, float] | None:
    """topic -> the longest append wait of its partitions on any broker now (the
    ``broker_partition_append_wait_seconds`` gauge); None when no broker answered."""
    out: dict[str, float] | None = None
    for url in metrics_urls:
        try:
            text = httpx.get(url, timeout=0.5).content
        except httpx.HTTPError:
            continue
        out = out if out is not None else {}
        for topic, value in _APPEND_WAIT.findall(text):
            with contextlib.suppress(ValueError):
                name = topic.decode()
                out[name] = max(out.get(name, 0.0), float(value))
    return out


class Sampler(threading.Thread):
    def __init__(self, out: Path, pids: Callable[[], dict[str, int]], status_port: int,
                 t0: float, every: float = 1.0, segments: Path | None = None,
                 metrics_urls: list[str] | None = None) -> None:
        super().__init__(daemon=True, name="soak-sampler")
        self.out, self.pids, self.status_port = out, pids, status_port
        self.segments = segments  # the broker's topics directory
        self.metrics_urls = metrics_urls or []  # the brokers' /metrics (cluster mode)
        self.t0, self.every = t0, every
        self.stop_event = threading.Event()
        self.last_agent: dict[str, Any] | None = None
        self._cpu: dict[int, tuple[float, float]] = {}

    def sample(self) -> dict[str, Any]:
        now = time.monotonic()
        procs: dict[str, Any] = {}
        for role, pid in self.pids().items():
            with contextlib.suppress(OSError, ValueError, IndexError):
                rss, fds, threads, cpu_s = proc_figures(pid)
                prev = self._cpu.get(pid)
                self._cpu[pid] = (now, cpu_s)
                cpu = (cpu_s - prev[1]) / (now - prev[0]) * 100 if prev and now > prev[0] else None
                procs[role] = {"pid": pid, "rss": rss, "fds": fds, "threads": threads,
                               "cpu": None if cpu is None else round(cpu, 1)}
        if "broker" in procs and self.segments is not None:
            # The partition store keeps one fd per segment file, bounded by retention:
            # the fds that segments do not explain are the ones that must stay flat.
            segs = sum(1 for _ in self.segments.glob("*/*/*.log"))
            procs["broker"]["segments"] = segs
            procs["broker"]["fds_net"] = procs["broker"]["fds"] - segs
        agent = agent_figures(self.status_port)
        if agent is not None:
            self.last_agent = agent
        sample = {"t": round(now - self.t0, 2), "procs": procs, "agent": agent}
        if self.metrics_urls:
            sample["append_wait"] = append_waits(self.metrics_urls)
        return sample

    def run(self) -> None:
        with open(self.out, "a") as f:
            while not self.stop_event.wait(self.every):
                f.write(json.dumps(self.sample()) + "\n")
                f.flush()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(10)
