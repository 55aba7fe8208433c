"""A quiet gateway: the edge agent's CPU at 100 readings/s, against Mosquitto's.

Runs Mosquitto, the cloud broker and the edge agent with their default settings (the
`make demo` configuration) and 10 ``mosquitto_pub -l`` devices (QoS 1), each fed one
JSON reading every 100 ms (100 readings/s in all), each device at its own phase (spread
over the 100 ms, as devices with their own clocks are; ``--lockstep``: all at once).
Measures each process's CPU from /proc over ``--duration`` seconds of traffic, then over
``--idle`` seconds with no traffic at all. Target: the agent ≤ 1 % of a core at 100
readings/s (ack after fsync, forwarding included). Prints a table and the load average;
nothing asserts.

    .venv/bin/python bench/quiet_gateway.py                 # 30 s of traffic, 10 s idle
    .venv/bin/python bench/quiet_gateway.py --duration 10   # a shorter run
    .venv/bin/python bench/quiet_gateway.py --lockstep      # every device at once
    .venv/bin/python bench/quiet_gateway.py --py-spy bench/out/quiet.txt   # + profile

Beside CPU it counts what costs CPU at this rate, per second of traffic: the agent's
log appends, fsyncs, uplink requests and PUBACKs (from its /status), and each process's
context switches (its threads' wake-ups, from /proc).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = Path(sys.executable).parent
console = Console(width=120)
TARGET_CORE = 0.01


def _demo() -> Any:
    spec = importlib.util.spec_from_file_location("run_demo", REPO / "deploy/local/run_demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpu_seconds(pid: int, kernel_only: bool = False) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[12]) if kernel_only else int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def switches(pid: int) -> int:
    """Context switches of all of ``pid``'s threads (voluntary: wake-ups after a wait)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if "ctxt_switches:" in line:
                    total += int(line.split()[1])
        except (OSError, ValueError):
            continue  # a thread that ended meanwhile
    return total


def counters(doc: dict[str, Any] | None) -> dict[str, int]:
    """The agent's per-stream counters that say where the fixed costs go."""
    out = {"received": 0, "appended": 0, "log appends": 0, "fsyncs": 0,
           "uplink requests": 0, "pubacks": 0}
    for s in (doc or {}).get("streams", []):
        out["received"] += s["received"]
        out["appended"] += s["appended"]
        out["log appends"] += s.get("log_appends", 0)
        out["fsyncs"] += s.get("log_fsyncs", 0)
        out["uplink requests"] += s["uplink"]["batches_sent"]
        out["pubacks"] += s["pubacks"]
    return out


def py_spy(pid: int, out: str) -> subprocess.Popen[bytes] | None:
    spy_bin = BIN / "py-spy" if (BIN / "py-spy").exists() else shutil.which("py-spy")
    if spy_bin is None:
        console.print("py-spy is not installed (pip install 'edgestream[bench]'): "
                      "running without the profile")
        return None
    return subprocess.Popen([str(spy_bin), "record", "-p", str(pid), "-o", out, "-f", "raw",
                             "--gil", "-r", "250"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def feed(pubs: list[subprocess.Popen[bytes]], rate_per_device: float, seconds: float,
         seq: int = 0, lockstep: bool = False) -> tuple[int, int]:
    """Write one reading per device every 1/rate s to its mosquitto_pub, sequence numbers
    from ``seq`` on; (readings sent, the next sequence number). Each device has its own
    phase, spread over the period, as devices that keep their own clocks do;
    ``lockstep``: all of them at once (one burst per period, fewer wake-ups for the
    agent)."""
    period = 1.0 / rate_per_device
    start = time.monotonic()
    sent, tick = 0, 0
    while True:
        at = start + tick * period
        if at - start >= seconds:
            return sent, seq + tick
        for d, pub in enumerate(pubs):
            time.sleep(max(0.0, at + (0 if lockstep else d * period / len(pubs))
                           - time.monotonic()))
            ts = int(time.time() * 1000)
            assert pub.stdin is not None
            pub.stdin.write(json.dumps({"device": f"quiet-{d:02d}", "seq": seq + tick,
                                        "ts": ts, "temp": 21.5, "hum": 48.0}).encode()
                            + b"\n")
            pub.stdin.flush()
            sent += 1
        tick += 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--rate", type=float, default=10.0, help="readings/s per device")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--idle", type=float, default=10.0)
    ap.add_argument("--lockstep", action="store_true",
                    help="every device publishes at the same instant (one burst per "
                         "period), not each at its own phase")
    ap.add_argument("--py-spy", help="record the agent with py-spy (--gil, raw) over the "
                                     "traffic into this file")
    args = ap.parse_args()
    if shutil.which("mosquitto_pub") is None:
        console.print("mosquitto_pub is not installed (apt-get install mosquitto-clients)")
        return 2
    demo = _demo()
    work = Path(tempfile.mkdtemp(prefix="quiet-gateway-"))
    procs = demo.Processes(work)
    pubs: list[subprocess.Popen[bytes]] = []
    spy = None
    try:
        mqtt_port, cloud_port, status_port = (demo.free_port() for _ in range(3))
        name, protocol = demo.mqtt_broker(procs, mqtt_port, "mosquitto")
        demo.wait_until(lambda: demo.port_open(mqtt_port), 20, "mqtt")
        cloud_toml, edge_toml = demo.write_configs(work, mqtt_port, protocol, cloud_port,
                                                   cloud_port, status_port)
        procs.start("cloud-broker", [str(BIN / "cloud-broker"), "serve", "--config",
                                     str(cloud_toml)])
        demo.wait_until(lambda: demo.port_open(cloud_port), 30, "cloud broker")
        procs.start("edge-agent", [str(BIN / "edge-agent"), "run", "--config", str(edge_toml)])
        demo.wait_until(lambda: (demo.edge_status(status_port) or {}).get("mqtt") and all(
            m["subscribed"] for m in demo.edge_status(status_port)["mqtt"]), 30, "edge agent")
        pubs = [subprocess.Popen(
            ["mosquitto_pub", "-p", str(mqtt_port), "-q", "1", "-l", "-i", f"quiet-{d:02d}",
             "-t", f"devices/quiet-{d:02d}/telemetry"], stdin=subprocess.PIPE)
            for d in range(args.devices)]
        watched = {n: p.pid for n, p in procs.procs}
        # warm-up: connections, first batches
        _, seq = feed(pubs, args.rate, 3.0, lockstep=args.lockstep)
        if args.py_spy:
            spy = py_spy(watched["edge-agent"], args.py_spy)
        before = {n: cpu_seconds(pid) for n, pid in watched.items()}
        sys0 = {n: cpu_seconds(pid, kernel_only=True) for n, pid in watched.items()}
        ctx0 = {n: switches(pid) for n, pid in watched.items()}
        c0 = counters(demo.edge_status(status_port))
        t0 = time.monotonic()
        sent, _ = feed(pubs, args.rate, args.duration, seq, lockstep=args.lockstep)
        busy_s = time.monotonic() - t0
        busy = {n: cpu_seconds(pid) - before[n] for n, pid in watched.items()}
        ctx = {n: switches(pid) - ctx0[n] for n, pid in watched.items()}
        kernel = {n: cpu_seconds(pid, kernel_only=True) - sys0[n] for n, pid in watched.items()}
        c1 = counters(demo.edge_status(status_port))
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
            spy = None
        load = os.getloadavg()[0]
        demo.wait_until(lambda: demo.backlog_of(demo.edge_status(status_port)) == 0, 30,
                        "drain")
        time.sleep(1.0)
        before = {n: cpu_seconds(pid) for n, pid in watched.items()}
        time.sleep(args.idle)
        idle = {n: cpu_seconds(pid) - before[n] for n, pid in watched.items()}
    finally:
        if spy is not None:
            spy.kill()
            spy.wait(10)
        for pub in pubs:
            if pub.stdin is not None:
                pub.stdin.close()
            pub.wait(10)
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    rate = sent / busy_s
    table = Table(title=f"{name}; {args.devices} mosquitto_pub devices (QoS 1), "
                        f"{'in lockstep' if args.lockstep else 'each at its own phase'}, "
                        f"{rate:,.0f} readings/s for {busy_s:.0f} s")
    for col in ("process", "% of a core at load", "µs per reading", "of which kernel",
                "context switches/s", "% of a core idle"):
        table.add_column(col, justify="right" if col != "process" else "left")
    for n in busy:
        table.add_row(n, f"{busy[n] / busy_s:.2%}", f"{busy[n] / max(sent, 1) * 1e6:.0f}",
                      f"{kernel[n] / max(busy[n], 1e-9):.0%}", f"{ctx[n] / busy_s:,.0f}",
                      f"{idle[n] / args.idle:.2%}")
    console.print(table)
    console.print("edge agent per second: " + ", ".join(
        f"{k} {(c1[k] - c0[k]) / busy_s:,.1f}" for k in c0))
    agent = busy["edge-agent"] / busy_s
    console.print(f"edge agent {agent:.2%} of a core (target ≤ {TARGET_CORE:.0%}: "
                  f"{'met' if agent <= TARGET_CORE else 'missed'}); load average {load:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
