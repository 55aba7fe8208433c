"""Device → consumer latency through the whole pipeline, against a bare MQTT floor.

Runs Mosquitto, the cloud broker and the edge agent with their default settings (the
`make demo` configuration), the device simulator at a fixed aggregate rate (default
5,000 readings/s: 1,000 devices x 5/s, QoS 1), and in this process:

* a **consumer** long-polling every partition of the cloud topic (the Python client's
  `BrokerClient.fetch` with `wait_ms`), taking for each record `now - ts`, where `ts` is
  the device timestamp in the payload (same machine, same clock);
* the **floor**: a bare paho subscriber on the same Mosquitto measuring `now - ts` for the
  same readings, i.e. what device → broker → subscriber costs with no durability at all.

Prints p50/p95/p99/max for both and the ratio; target: consumer p99 ≤ 50 ms. Every
acknowledgement on the way is durable (edge group commit, cloud group commit).

    .venv/bin/python bench/e2e_latency.py            # 1,000 devices x 5/s for 30 s
    .venv/bin/python bench/e2e_latency.py --quick    # 200 devices x 5/s for 8 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = Path(sys.executable).parent
console = Console()


def _demo() -> Any:
    spec = importlib.util.spec_from_file_location("run_demo", REPO / "deploy/local/run_demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ts_of(value: bytes) -> int | None:
    try:
        doc = json.loads(value)
    except ValueError:
        return None
    ts = doc.get("ts") if isinstance(doc, dict) else None
    return ts if isinstance(ts, int) else None


class Floor:
    """A bare paho subscriber: latency device → Mosquitto → subscriber."""

    def __init__(self, port: int) -> None:
        self.samples: list[float] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="latency-floor")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("devices/+/telemetry", qos=0)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        ts = _ts_of(msg.payload)
        if ts is not None:
            self.samples.append(time.time() * 1000 - ts)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def consume(url: str, token: str, topic: str, stop: threading.Event,
                  samples: list[float]) -> None:
    from cloud_broker.client_http import BrokerClient

    client = BrokerClient(url, token)
    meta = await client.topic(topic)
    parts = len(meta["partitions"])

    async def tail(p: int) -> None:
        offset = (await client.fetch(topic, p, 0, max_records=1)).end_offset
        while not stop.is_set():
            res = await client.fetch(topic, p, offset, max_records=5000, wait_ms=500)
            now = time.time() * 1000
            for r in res.records:
                ts = _ts_of(r.value)
                if ts is not None:
                    samples.append(now - ts)
            offset = res.next_offset

    try:
        await asyncio.gather(*(tail(p) for p in range(parts)))
    finally:
        await client.close()


def pct(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    if not s:
        return {}
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]  # noqa: E731
    return {"n": len(s), "p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99),
            "max": s[-1], "mean": statistics.fmean(s)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=5.0, help="readings/s per device")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds not measured")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.devices, args.duration = 200, 8.0
    demo = _demo()
    work = Path(tempfile.mkdtemp(prefix="e2e-latency-"))
    procs = demo.Processes(work)
    stop = threading.Event()
    floor: Floor | None = None
    try:
        mqtt_port, cloud_port, status_port = (demo.free_port() for _ in range(3))
        name, protocol = demo.mqtt_broker(procs, mqtt_port)
        cloud_toml, edge_toml = demo.write_configs(work, mqtt_port, protocol, cloud_port,
                                                   cloud_port, status_port)
        demo.wait_until(lambda: demo.port_open(mqtt_port), 20, "mqtt")
        procs.start("cloud-broker", [str(BIN / "cloud-broker"), "serve", "--config",
                                     str(cloud_toml)])
        demo.wait_until(lambda: demo.port_open(cloud_port), 30, "cloud broker")
        procs.start("edge-agent", [str(BIN / "edge-agent"), "run", "--config", str(edge_toml)])
        demo.wait_until(lambda: (demo.edge_status(status_port) or {}).get("mqtt") and all(
            m["subscribed"] for m in demo.edge_status(status_port)["mqtt"]), 30, "edge agent")
        floor = Floor(mqtt_port)
        samples: list[float] = []
        loop_thread = threading.Thread(target=lambda: asyncio.run(consume(
            f"http://127.0.0.1:{cloud_port}", demo.READ_TOKEN, "telemetry", stop, samples)),
            daemon=True)
        loop_thread.start()
        rate = args.devices * args.rate
        console.print(f"{name} + edge agent + cloud broker; {args.devices} devices x "
                      f"{args.rate}/s = {rate:,.0f} readings/s for {args.duration:.0f} s")
        sim = subprocess.Popen(
            [str(BIN / "device-sim"), "run", "--broker", f"mqtt://127.0.0.1:{mqtt_port}",
             "--devices", str(args.devices), "--rate", str(args.rate), "--duration",
             str(args.duration), "--qos", "1", "--alarm-ratio", "0", "--quiet", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(args.warmup)
        del samples[:], floor.samples[:]  # measure the steady state only
        out, err = sim.communicate(timeout=args.duration + 120)
        if sim.returncode != 0:
            raise RuntimeError(f"device-sim failed: {err[-2000:]}")
        demo.wait_until(lambda: demo.backlog_of(demo.edge_status(status_port)) == 0, 60,
                        "drain")
        time.sleep(1.0)  # the consumers' last long-polls return
        stop.set()
        loop_thread.join(5)
        sent = json.loads(out).get("sent", 0)
        cons, flo = pct(samples), pct(floor.samples)
        table = Table(title=f"device → consumer latency at {rate:,.0f} readings/s "
                            f"(sent {sent:,})")
        for col in ("path", "readings", "p50 ms", "p95 ms", "p99 ms", "max ms"):
            table.add_column(col, justify="right" if col != "path" else "left")
        for label, p in (("bare MQTT subscriber (floor)", flo),
                         ("edge agent → cloud → consumer (durable)", cons)):
            table.add_row(label, f"{p.get('n', 0):,}", *(f"{p.get(k, float('nan')):.1f}"
                                                         for k in ("p50", "p95", "p99", "max")))
        console.print(table)
        if cons and flo:
            met = cons["p99"] <= 50.0
            console.print(f"consumer p99 {cons['p99']:.1f} ms (target ≤ 50 ms: "
                          f"{'met' if met else 'missed'}); p99 ratio to the bare MQTT floor "
                          f"{cons['p99'] / max(flo['p99'], 0.1):.1f}x")
        return 0
    finally:
        stop.set()
        if floor is not None:
            with contextlib.suppress(Exception):
                floor.stop()
        procs.stop_all()


if __name__ == "__main__":
    sys.exit(main())
