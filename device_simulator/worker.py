"""One worker process: its share of the connections, the send schedule, the drain.

Strategy: a worker is one asyncio loop owning a slice of the fleet.  It goes
through three phases, reported to the parent over a multiprocessing queue:

1. *connect*: open every connection with bounded concurrency (a storm of
   thousands of SYNs overflows the broker's listen backlog and costs 1 s SYN
   retries), then report ``ready``;
2. *publish*: wait for the common start time chosen by the parent, then, in
   10 ms ticks, bring the number of readings taken up to
   ``devices x scheduled_messages(t)``, visiting devices round-robin so every
   device sends at the same rate with its slots spread evenly over the period.
   One timer for the whole worker, not one per device: 10,000 sleeping tasks
   would cost more than the messages.  When the worker falls behind it works
   in bounded batches, yielding to the loop between them so acks and
   keepalives still flow;
3. *drain*: stop taking readings, wait (bounded) for every QoS 1 ack and every
   offline buffer to empty, DISCONNECT, and send the device records home.

Messages to the parent are tuples ``(kind, worker_id, data)``; see runner.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing as mp
import os
import resource
import signal
import time
import traceback
from dataclasses import dataclass
from typing import Any

from .config import RunConfig
from .device import Device
from .faults import scheduled_messages
from .mqtt_pub import (
    BrokerAddress,
    ConnectOptions,
    MqttConnectError,
    MqttConnection,
    make_ssl_context,
)

_MAX_BATCH = 2000  # readings per loop iteration when behind
_TICK_S = 0.01
_MAX_SLEEP_S = 0.1  # bounds how late a stop request is seen at very low rates
_PROGRESS_S = 0.5
_CONNECT_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    worker_id: int
    groups: tuple[tuple[str, tuple[int, ...]], ...]  # (client id, device indices)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _loop_factory(name: str) -> Any:
    """uvloop when asked (or available, for "auto"): ~12% less CPU per message."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


def _die_with_parent() -> None:
    """A SIGKILLed ``device-sim`` cannot stop its workers (daemonic children are only
    stopped at a normal exit), and an orphaned worker would go on publishing: have the
    kernel kill this process with its parent (Linux), and exit if that already happened."""
    parent = mp.parent_process()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent is not None and os.getppid() != parent.pid:
        os._exit(1)


def worker_main(cfg: RunConfig, plan: WorkerPlan, queue: Any, start_event: Any,
                stop_event: Any, start_at: Any) -> None:
    """Process entry point (spawned by the runner)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent turns Ctrl-C into stop_event
    _die_with_parent()
    try:
        worker = Worker(cfg, plan, queue, start_event, stop_event, start_at)
        loop_factory = _loop_factory(cfg.loop)
        if loop_factory is None:
            asyncio.run(worker.run())
        else:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                runner.run(worker.run())
    except BaseException:
        queue.put(("error", plan.worker_id, traceback.format_exc()))
        raise


class Worker:
    def __init__(self, cfg: RunConfig, plan: WorkerPlan, queue: Any, start_event: Any,
                 stop_event: Any, start_at: Any) -> None:
        self.cfg = cfg
        self.plan = plan
        self.queue = queue
        self.start_event = start_event
        self.stop_event = stop_event
        self.start_at = start_at
        self.phase = "connecting"
        self.dirty: list[MqttConnection] = []
        self.conns: list[MqttConnection] = []
        self.devices: list[Device] = []
        self.by_index: dict[int, Device] = {}
        self.readings = 0
        self.deferred = 0
        self.behind = 0
        self.errors: list[str] = []
        self.publish_seconds = 0.0
        self.publish_cpu_seconds = 0.0
        self.connected_at_start = 0

    # -- setup --------------------------------------------------------------------------

    def _build(self) -> None:
        cfg = self.cfg
        ssl_context = None
        address = BrokerAddress.parse(cfg.broker)
        if cfg.username is not None or cfg.password is not None:
            address = BrokerAddress(address.host, address.port, address.tls,
                                    cfg.username or address.username,
                                    cfg.password or address.password)
        if address.tls:
            ssl_context = make_ssl_context(cfg.ca_file, cfg.insecure)
        options = ConnectOptions(
            address=address, ssl_context=ssl_context, keepalive=cfg.keepalive,
            clean_session=cfg.clean_session, version=cfg.mqtt_version,
            max_inflight=cfg.max_inflight, max_pending=cfg.offline_buffer,
            connect_timeout=cfg.connect_timeout)
        for client_id, indices in self.plan.groups:
            conn = MqttConnection(client_id, options, self.dirty, self._rejected)
            self.conns.append(conn)
            for index in indices:
                device = Device(cfg, index, conn)
                self.devices.append(device)
                self.by_index[index] = device

    def _rejected(self, tag: Any, reason: int) -> None:
        if tag is not None:
            self.by_index[tag[0]].record.dropped_seqs.append(tag[1])

    async def _connect_all(self) -> None:
        gate = asyncio.Semaphore(self.cfg.connect_concurrency)

        async def one(conn: MqttConnection) -> None:
            async with gate:
                for attempt in range(_CONNECT_ATTEMPTS):
                    try:
                        await conn.connect()
                        return
                    except MqttConnectError as exc:
                        if attempt == _CONNECT_ATTEMPTS - 1:
                            if len(self.errors) < 10:
                                self.errors.append(str(exc))
                            conn.schedule_reconnect(1.0)  # keep trying in the background
                            return
                        await asyncio.sleep(0.2 * (attempt + 1))

        await asyncio.gather(*(one(c) for c in self.conns))

    # -- main ---------------------------------------------------------------------------

    async def run(self) -> None:
        fd_limit = raise_fd_limit()
        self._build()
        if len(self.conns) + 64 > fd_limit:
            self.errors.append(
                f"worker {self.plan.worker_id}: RLIMIT_NOFILE is {fd_limit}, too low for "
                f"{len(self.conns)} connections; raise the hard limit (ulimit -Hn, LimitNOFILE) "
                "or use more --workers")
        reporter = asyncio.create_task(self._report_loop())
        keeper = asyncio.create_task(self._keepalive_loop())
        started = time.monotonic()
        await self._connect_all()
        connected = sum(c.connected for c in self.conns)
        self.queue.put(("ready", self.plan.worker_id, {
            "connected": connected, "connections": len(self.conns),
            "connect_s": time.monotonic() - started, "fd_limit": fd_limit,
            "errors": list(self.errors)}))
        while not self.start_event.is_set() and not self.stop_event.is_set():
            await asyncio.sleep(0.005)
        if not self.stop_event.is_set():
            delay = self.start_at.value - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.phase = "publishing"
            self.connected_at_start = sum(c.connected for c in self.conns)
            await self._publish()
        self.phase = "draining"
        await self._drain()
        reporter.cancel()
        keeper.cancel()
        self.queue.put(("done", self.plan.worker_id, self._result()))

    async def _publish(self) -> None:
        cfg = self.cfg
        devices = self.devices
        n = len(devices)
        burst = cfg.faults.burst
        rate = cfg.rate
        dirty = self.dirty
        stop = self.stop_event
        monotonic = time.monotonic
        start = monotonic()
        cpu_start = time.process_time()
        issued = 0
        cursor = 0
        checks = 0
        while True:
            elapsed = monotonic() - start
            checks += 1
            if checks % 16 == 0 and stop.is_set():
                break
            last = elapsed >= cfg.duration  # one last catch-up to the exact total
            if last:
                elapsed = cfg.duration
            due = int(n * scheduled_messages(elapsed, rate, burst)) - issued
            if last and due > _MAX_BATCH:
                break  # behind schedule: report it rather than extend the run
            batch = due if due < _MAX_BATCH else _MAX_BATCH
            taken = 0
            for _ in range(batch):
                if devices[cursor].emit():
                    taken += 1
                cursor += 1
                if cursor == n:
                    cursor = 0
            issued += batch
            self.readings += taken
            self.deferred += batch - taken
            for conn in dirty:
                conn.flush()
            dirty.clear()
            if last and due <= batch:
                break
            if due > batch:
                await asyncio.sleep(0)
            else:
                # Work in ticks: readings due within one tick go out together, so the loop
                # wakes ~100 times a second however high the rate (a wake-up per reading
                # cost more CPU than the readings at a few thousand per second).
                next_due = (issued + 1) / (n * rate)
                await asyncio.sleep(min(_MAX_SLEEP_S, max(_TICK_S, next_due - elapsed)))
        self.behind = max(0, int(n * scheduled_messages(cfg.duration, rate, burst)) - issued)
        self.publish_seconds = monotonic() - start
        self.publish_cpu_seconds = time.process_time() - cpu_start

    async def _drain(self) -> None:
        for conn in self.dirty:
            conn.flush()
        self.dirty.clear()
        deadline = time.monotonic() + self.cfg.drain_timeout
        while time.monotonic() < deadline and not all(c.idle for c in self.conns):
            await asyncio.sleep(0.05)
            for conn in self.dirty:
                conn.flush()
            self.dirty.clear()
        await asyncio.gather(*(c.close(0.0) for c in self.conns))
        for conn in self.conns:
            for tag in conn.unconfirmed():
                self.by_index[tag[0]].record.unconfirmed_seqs.append(tag[1])

    # -- reporting ----------------------------------------------------------------------

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for conn in self.conns:
                conn.keepalive(now)

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(_PROGRESS_S)
            self.queue.put(("progress", self.plan.worker_id, self.snapshot()))

    def snapshot(self) -> dict[str, Any]:
        conns = self.conns
        return {
            "phase": self.phase,
            "connections": len(conns),
            "connected": sum(c.connected for c in conns),
            "readings": self.readings,
            "deferred": self.deferred,
            "sent": sum(c.sent for c in conns),
            "acked": sum(c.acked for c in conns),
            "rejected": sum(c.rejected for c in conns),
            "reconnects": sum(c.reconnects for c in conns),
            "connection_errors": sum(c.connection_errors for c in conns),
            "inflight": sum(len(c.inflight) for c in conns),
            "pending": sum(len(c.pending) for c in conns),
            "dropped": sum(len(d.record.dropped_seqs) for d in self.devices),
        }

    def _result(self) -> dict[str, Any]:
        stats = self.snapshot()
        stats.update(behind=self.behind, publish_seconds=self.publish_seconds,
                     publish_cpu_seconds=self.publish_cpu_seconds,
                     connected_at_start=self.connected_at_start)
        return {"stats": stats, "errors": self.errors,
                "devices": [d.record.to_dict() | {"device": d.id} for d in self.devices]}
