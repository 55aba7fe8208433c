"""Device → consumer latency through the whole pipeline, against a bare MQTT floor.

Runs Mosquitto, the cloud broker and the edge agent with their default settings (the
`make demo` configuration), the device simulator at a fixed aggregate rate (default
5,000 readings/s: 1,000 devices x 5/s, QoS 1), and two measuring processes of their own,
one per phase, so neither shares the machine with the other:

* a **consumer** following every partition of the cloud topic through its Server-Sent
  Events stream (`--consumer fetch`: long-polling `BrokerClient.fetch` instead), taking
  for each record `now - ts`, where `ts` is the device timestamp in the payload (same
  machine, same clock), split at the edge agent's receive time (the record timestamp);
* the **floor** (phase 1, before the agent and the broker start): a bare paho subscriber
  on the same Mosquitto measuring `now - ts` for the same fleet and rate, i.e. what
  device → broker → subscriber costs with no durability at all.

Each measuring process keeps the samples that arrive after the warm-up and prints them as
JSON when its stdin closes. Prints p50/p95/p99/max for both, the CPU each process spent
per reading, and the ratios; targets: consumer p99 ≤ 10 ms and ≤ 4x the floor's, the
agent's CPU per reading ≤ Mosquitto's. Every acknowledgement on the
way is durable (edge group commit, cloud group commit).

    .venv/bin/python bench/e2e_latency.py            # 1,000 devices x 5/s for 30 s
    .venv/bin/python bench/e2e_latency.py --quick    # 200 devices x 5/s for 8 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from plot import plot_printed_tables  # bench/ is on sys.path (a script)
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


def _ts_of(value: bytes | str) -> int | None:
    try:
        doc = json.loads(value)
    except ValueError:
        return None
    ts = doc.get("ts") if isinstance(doc, dict) else None
    return ts if isinstance(ts, int) else None


def _keep(samples: list[float], measure_from: float, ts: int | None) -> None:
    now = time.time() * 1000
    if ts is not None and now >= measure_from:
        samples.append(now - ts)


def _until_stdin_closes() -> threading.Event:
    done = threading.Event()

    def watch() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=watch, daemon=True).start()
    return done


def run_floor(port: int, measure_from: float) -> list[float]:
    """A bare paho subscriber: latency device → Mosquitto → subscriber."""
    samples: list[float] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="latency-floor")
    client.on_message = lambda _c, _u, msg: _keep(samples, measure_from, _ts_of(msg.payload))
    client.connect("127.0.0.1", port)
    client.subscribe("devices/+/telemetry", qos=0)
    client.loop_start()
    print("ready", flush=True)
    _until_stdin_closes().wait()
    client.loop_stop()
    return samples


class Split:
    """Latency device → consumer, split at the edge agent's receive time (the record's
    timestamp) into device → agent and agent → consumer."""

    def __init__(self, measure_from: float) -> None:
        self.measure_from = measure_from
        self.total: list[float] = []
        self.to_agent: list[float] = []
        self.from_agent: list[float] = []

    def add(self, now: float, value: bytes | str, timestamp: int) -> None:
        ts = _ts_of(value)
        if ts is not None and now >= self.measure_from:
            self.total.append(now - ts)
            self.to_agent.append(timestamp - ts)
            self.from_agent.append(now - timestamp)

    def result(self) -> dict[str, list[float]]:
        return {"total": self.total, "to_agent": self.to_agent,
                "from_agent": self.from_agent}


async def consume_fetch(url: str, token: str, topic: str, split: Split) -> None:
    """Long-poll every partition (``BrokerClient.fetch`` with ``wait_ms``)."""
    from cloud_broker.client import BrokerClient

    client = BrokerClient(url, token)
    parts = len((await client.topic(topic))["partitions"])
    stop = _until_stdin_closes()

    async def tail(p: int) -> None:
        offset = (await client.fetch(topic, p, 0, max_records=1)).end_offset
        while not stop.is_set():
            res = await client.fetch(topic, p, offset, max_records=5000, wait_ms=200)
            now = time.time() * 1000
            for r in res.records:
                split.add(now, r.value, r.timestamp)
            offset = res.next_offset

    try:
        tails = asyncio.gather(*(tail(p) for p in range(parts)))
        await asyncio.sleep(0.5)  # every tail has its first offset
        print("ready", flush=True)
        await tails
    finally:
        await client.close()


async def consume_stream(url: str, token: str, topic: str, split: Split) -> None:
    """Follow every partition's Server-Sent Events stream (``.../stream``), from the end."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    stop = _until_stdin_closes()
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=None) as http:
        parts = len((await http.get(f"/v1/topics/{topic}")).json()["partitions"])
        opened = 0

        async def follow(p: int) -> None:
            nonlocal opened
            async with http.stream("GET", f"/v1/topics/{topic}/partitions/{p}/stream",
                                   params={"encoding": "utf8", "max_records": 5000}) as resp:
                resp.raise_for_status()
                opened += 1
                async for line in resp.aiter_lines():
                    if stop.is_set():
                        return
                    if line.startswith("data: "):
                        now = time.time() * 1000
                        for r in json.loads(line[6:])["records"]:
                            split.add(now, r["value"], r["timestamp"])

        tails = asyncio.gather(*(follow(p) for p in range(parts)))
        while opened < parts:
            await asyncio.sleep(0.05)
        print("ready", flush=True)
        done = asyncio.create_task(asyncio.to_thread(stop.wait))
        await asyncio.wait([tails, done], return_when=asyncio.FIRST_COMPLETED)
        tails.cancel()
        with contextlib.suppress(asyncio.CancelledError):  # retrieved: no "never
            await tails  # retrieved" report at exit


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process (and its waited-for children) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return ((int(fields[11]) + int(fields[13])) / tick,
            (int(fields[12]) + int(fields[14])) / tick)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its waited-for children) so far."""
    return sum(cpu_times(pid))


def measurer(args: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"measuring process {args[:2]} did not start")
    return proc


def collect(proc: subprocess.Popen[str]) -> Any:
    out, _ = proc.communicate("", timeout=30)
    return json.loads(out)


def pct(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    if not s:
        return {}
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]  # noqa: E731
    return {"n": len(s), "p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99),
            "max": s[-1], "mean": statistics.fmean(s)}


def main() -> int:
    plot_printed_tables("e2e_latency")
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=5.0, help="readings/s per device")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds not measured")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--consumer", choices=("stream", "fetch"), default="stream",
                    help="stream: Server-Sent Events per partition (default); fetch: "
                         "long-poll fetches per partition")
    ap.add_argument("--role", choices=("floor", "consumer"), help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    ap.add_argument("--measure-from", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "floor":
        print(json.dumps(run_floor(int(args.target), args.measure_from)))
        return 0
    if args.role == "consumer":
        url, token = args.target.split("#", 1)
        split = Split(args.measure_from)
        run = consume_stream if args.consumer == "stream" else consume_fetch
        asyncio.run(run(url, token, "telemetry", split))
        print(json.dumps(split.result()))
        return 0
    if args.quick:
        args.devices, args.duration = 200, 8.0
    demo = _demo()
    work = Path(tempfile.mkdtemp(prefix="e2e-latency-"))
    procs = demo.Processes(work)
    measuring: list[subprocess.Popen[str]] = []

    def simulate(mqtt_port: int) -> tuple[int, float]:
        """Run the fleet; returns (readings sent, device-sim CPU seconds)."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        sim = subprocess.run(
            [str(BIN / "device-sim"), "run", "--broker", f"mqtt://127.0.0.1:{mqtt_port}",
             "--devices", str(args.devices), "--rate", str(args.rate), "--duration",
             str(args.duration), "--qos", "1", "--alarm-ratio", "0", "--quiet", "--json"],
            capture_output=True, text=True, timeout=args.duration + 120)
        if sim.returncode != 0:
            raise RuntimeError(f"device-sim failed: {sim.stderr[-2000:]}")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # only device-sim ended
        return (json.loads(sim.stdout).get("sent", 0),
                after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)

    def start_measuring(args_: list[str]) -> subprocess.Popen[str]:
        proc = measurer([*args_, "--measure-from", str((time.time() + 2 + args.warmup) * 1000)])
        measuring.append(proc)
        return proc

    try:
        mqtt_port, cloud_port, status_port = (demo.free_port() for _ in range(3))
        name, protocol = demo.mqtt_broker(procs, mqtt_port, "mosquitto")
        demo.wait_until(lambda: demo.port_open(mqtt_port), 20, "mqtt")
        rate = args.devices * args.rate
        console.print(f"{name}; {args.devices} devices x {args.rate}/s = {rate:,.0f} "
                      f"readings/s for {args.duration:.0f} s, twice: into a bare subscriber, "
                      "then through edge agent + cloud broker to a consumer")
        # Phase 1, the floor: the same fleet into a bare subscriber, nothing else running.
        floor = start_measuring(["--role", "floor", "--target", str(mqtt_port)])
        floor_sent, _ = simulate(mqtt_port)
        time.sleep(1.0)
        flo = pct(collect(floor))
        # Phase 2, the pipeline.
        cloud_toml, edge_toml = demo.write_configs(work, mqtt_port, protocol, cloud_port,
                                                   cloud_port, status_port)
        procs.start("cloud-broker", [str(BIN / "cloud-broker"), "serve", "--config",
                                     str(cloud_toml)])
        demo.wait_until(lambda: demo.port_open(cloud_port), 30, "cloud broker")
        procs.start("edge-agent", [str(BIN / "edge-agent"), "run", "--config", str(edge_toml)])
        demo.wait_until(lambda: (demo.edge_status(status_port) or {}).get("mqtt") and all(
            m["subscribed"] for m in demo.edge_status(status_port)["mqtt"]), 30, "edge agent")
        consumer = start_measuring(["--role", "consumer", "--consumer", args.consumer,
                                    "--target",
                                    f"http://127.0.0.1:{cloud_port}#{demo.READ_TOKEN}"])
        watched = {name: proc.pid for name, proc in procs.procs}
        watched.update(consumer=consumer.pid)
        cpu_before = {name: cpu_seconds(pid) for name, pid in watched.items()}
        sent, sim_cpu = simulate(mqtt_port)
        demo.wait_until(lambda: demo.backlog_of(demo.edge_status(status_port)) == 0, 60,
                        "drain")
        time.sleep(1.0)  # the consumer's last events arrive
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in watched.items()}
        cpu["device-sim"] = sim_cpu
        parts = collect(consumer)
        cons = pct(parts["total"])
        table = Table(title=f"device → consumer latency at {rate:,.0f} readings/s "
                            f"(sent {floor_sent:,} + {sent:,})")
        for col in ("path", "readings", "p50 ms", "p95 ms", "p99 ms", "max ms"):
            table.add_column(col, justify="right" if col != "path" else "left")
        for label, p in (("bare MQTT subscriber (floor, phase 1)", flo),
                         ("edge agent → cloud → consumer (durable, phase 2)", cons),
                         ("  of which device → edge agent receive", pct(parts["to_agent"])),
                         ("  of which edge agent receive → consumer",
                          pct(parts["from_agent"]))):
            table.add_row(label, f"{p.get('n', 0):,}", *(f"{p.get(k, float('nan')):.1f}"
                                                         for k in ("p50", "p95", "p99", "max")))
        console.print(table)
        console.print("phase 2 CPU µs per reading sent: " + ", ".join(
            f"{name} {sec / max(sent, 1) * 1e6:.1f}" for name, sec in cpu.items())
            + f"; load average {os.getloadavg()[0]:.1f}")
        if cons and flo:
            met = cons["p99"] <= 10.0
            ratio = cons["p99"] / max(flo["p99"], 0.1)
            console.print(f"consumer p99 {cons['p99']:.1f} ms (target ≤ 10 ms: "
                          f"{'met' if met else 'missed'}); p99 ratio to the bare MQTT floor "
                          f"{ratio:.1f}x (target ≤ 4x: {'met' if ratio <= 4 else 'missed'})")
            agent, mosq = cpu.get("edge-agent", 0.0), cpu.get("mosquitto", 0.0)
            if mosq:
                console.print(f"edge agent CPU ÷ Mosquitto's {agent / mosq:.2f} (target ≤ 1: "
                              f"{'met' if agent <= mosq else 'missed'})")
        return 0
    finally:
        for proc in measuring:
            if proc.poll() is None:
                proc.kill()
        procs.stop_all()

if __name__ == "__main__":
    sys.exit(main())
