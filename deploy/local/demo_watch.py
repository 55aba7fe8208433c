"""What the demo watches while it runs: the edge's backlog (and the drain after an
outage) and a live consumer's device → consumer latency."""

from __future__ import annotations

import base64
import contextlib
import statistics
import threading
import time
from collections import deque
from typing import Any

import httpx
from demo_configs import READ_TOKEN
from rich.console import Console

from device_simulator.soak.stack import port_open

console = Console()


def edge_status(status_port: int) -> dict[str, Any] | None:
    try:
        return httpx.get(f"http://127.0.0.1:{status_port}/status", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return None


def mqtt_ready(doc: dict[str, Any] | None, mqtt_port: int) -> bool:
    if not doc:
        return False
    if doc.get("mqtt_listener"):
        return bool(doc["mqtt_listener"]["serving"]) and port_open(mqtt_port)
    return all(m["subscribed"] for m in doc["mqtt"])


def backlog_of(doc: dict[str, Any] | None) -> int | None:
    if not doc:
        return None
    return sum(s["backlog_records"] for s in doc["streams"])


class BacklogWatch(threading.Thread):
    """Prints the edge backlog every few seconds, remembers its peak, and times the drain
    after an outage: from the moment the uplink is restored until the backlog is back to
    its level before the cut (readings keep arriving, so that level is rarely 0)."""

    def __init__(self, status_port: int, every: float = 5.0, sample: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.status_port = status_port
        self.every = every
        self.sample = sample
        self.peak = 0
        self.stop = threading.Event()
        self.recent: deque[int] = deque(maxlen=int(3 / sample))
        self.baseline: int | None = None
        self.restored_at: float | None = None
        self.drained_at: float | None = None

    def cut(self) -> None:
        self.baseline = max(self.recent, default=0)

    def restored(self) -> None:
        self.restored_at = time.monotonic()

    def drain_s(self) -> float | None:
        if self.restored_at is None or self.drained_at is None:
            return None
        return self.drained_at - self.restored_at

    def run(self) -> None:
        last_print = time.monotonic()
        while not self.stop.wait(self.sample):
            doc = edge_status(self.status_port)
            backlog = backlog_of(doc)
            if doc is None or backlog is None:
                continue
            self.peak = max(self.peak, backlog)
            self.recent.append(backlog)
            if (self.restored_at is not None and self.drained_at is None
                    and backlog <= (self.baseline or 0)):
                self.drained_at = time.monotonic()
            if time.monotonic() - last_print >= self.every:
                last_print = time.monotonic()
                state = doc["uplink"]["state"]
                console.print(f"[dim]edge backlog {backlog:>8} readings, uplink {state}[/dim]")


def outage(proxy: Any, at: float, duration: float, stop: threading.Event,
           watch: BacklogWatch) -> None:
    if stop.wait(at):
        return
    console.print(f"[bold red]uplink cut for {duration:.0f} s[/bold red]")
    watch.cut()
    proxy.down()
    stop.wait(duration)
    proxy.up()
    watch.restored()
    console.print("[bold green]uplink restored[/bold green]")


def decode(value: bytes) -> Any:
    from device_simulator.payloads import decode as decode_payload

    return decode_payload(value)


class LiveConsumer:
    """A consumer reading both topics while the demo runs, as an application would:
    one long-poll per partition, and for each reading the time from the device's
    timestamp (``ts`` in its payload) to the moment the consumer holds it."""

    def __init__(self, cloud_port: int, topics: list[str]) -> None:
        self.url = f"http://127.0.0.1:{cloud_port}"
        self.http = httpx.Client(base_url=self.url, timeout=10,
                                 headers={"Authorization": f"Bearer {READ_TOKEN}",
                                          "Accept": "application/json"})
        self.latency: dict[str, list[float]] = {t: [] for t in topics}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._tail, args=(t, p), daemon=True)
                        for t in topics for p in range(self._partitions(t))]
        for th in self.threads:
            th.start()

    def _partitions(self, topic: str) -> int:
        return len(self.http.get(f"/v1/topics/{topic}").raise_for_status().json()["partitions"])

    def _tail(self, topic: str, partition: int) -> None:
        offset = 0
        path = f"/v1/topics/{topic}/partitions/{partition}/records"
        while not self.stop.is_set():
            try:
                body = self.http.get(path, params={"offset": offset, "max_records": 5000,
                                                   "wait_ms": 500, "encoding": "base64"}).json()
            except (httpx.HTTPError, ValueError):
                self.stop.wait(0.2)
                continue
            now_ms = time.time() * 1000
            for r in body.get("records", []):
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    reading = decode(base64.b64decode(r["value"]))  # JSON or CBOR
                    self.latency[topic].append(now_ms - float(reading["ts"]))
            offset = body.get("next_offset", offset)

    def close(self) -> None:
        self.stop.set()
        for th in self.threads:
            th.join(5)
        self.http.close()

    def quantile(self, topic: str, q: float) -> float | None:
        xs = self.latency[topic]
        if len(xs) < 2:
            return xs[0] if xs else None
        return statistics.quantiles(xs, n=100, method="inclusive")[int(q * 100) - 1]


