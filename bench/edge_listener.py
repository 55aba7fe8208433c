"""Edge CPU per reading: the agent's MQTT listener vs Mosquitto + agent vs a Mosquitto bridge.

Run from the repository root::

    .venv/bin/python bench/edge_listener.py            # 1,000 devices x 5/s for 30 s each
    .venv/bin/python bench/edge_listener.py --quick    # 8 s each, small throughput feed
    .venv/bin/python bench/edge_listener.py --no-listener   # (b) and (c) only
    .venv/bin/python bench/edge_listener.py --repeat 2       # docs/benchmarks.md
    .venv/bin/python bench/edge_listener.py --no-cpu --no-throughput --trickle 100x1,10x10

Strategy: one run, the same fleet three times, one edge after the other (nothing else of
the bench running meanwhile): ``device-sim`` at ``--devices`` x ``--rate`` readings/s
(default 5,000/s), QoS 1, device -> edge, durable there -> cloud:

* **(a) listener**: the devices publish to the agent's own MQTT listener
  (``[mqtt_listener]``); the agent PUBACKs after its group commit and forwards to the
  cloud broker. Edge processes: the agent.
* **(b) Mosquitto + agent** (the ``[mqtt]`` path): the devices publish to Mosquitto (the
  demo's config: persistence on), the agent subscribes, stores and forwards. Edge
  processes: Mosquitto and the agent.
* **(c) Mosquitto bridge**: the devices publish to a Mosquitto that bridges ``devices/#``
  at QoS 1 to a second Mosquitto standing for the cloud. Edge process: the first
  Mosquitto. This is the floor of "a broker at the edge that forwards": no log, no fsync.

Edge CPU = utime + stime of the edge processes from the fleet's start until every
acknowledged reading is at the cloud (the cloud broker's topic for (a)/(b): the agent's
backlog is 0 and it appended them all; (c): the cloud Mosquitto's
``$SYS/broker/publish/messages/received``), divided by the readings the devices had
acknowledged. The cloud side's CPU is not counted. Targets: (a) <= 2x (c), and (a) < (b).
With ``--repeat N`` the three runs alternate N times and each edge keeps its lowest figure
(interference on a shared machine only ever adds CPU).
The table gives each process's kernel share (stime / (utime + stime)): a Mosquitto
bridge's CPU is mostly system calls, so the ratio moves with the host's kernel cost.

Then ingest throughput at QoS 1, listener vs the Mosquitto path, cloud down (the uplink
points at a closed port, as in bench/edge_ingest.py): ``--feed-devices`` ``mosquitto_pub
-l -q 1`` processes (MQTT 5 unless ``--feed-protocol 311``: each publisher keeps as many
readings in flight as the edge's CONNACK Receive Maximum allows, 3.1.1 ones
libmosquitto's 20) each publish ``--feed-messages`` readings as fast as they can; rate =
readings / (time until the agent had PUBACKed them all: to the devices (a), or to
Mosquitto after its own commit (b)).

With ``--trickle 100x1,10x10``: the listener at low rates (``device-sim``, 20 s each),
fsyncs per second of the stream's log and how many the commit rule started early: the
flash wear a quiet gateway pays.

Not a test: nothing asserts; targets are marked met/missed. Prints the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from e2e_latency import _demo, cpu_seconds, cpu_times

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
SYS_RECEIVED = "$SYS/broker/publish/messages/received"
#: seconds a part may take to start: on a 2-core machine at load 20 importing the
#: broker alone takes 10-15 s of wall time
START_S = 120.0
demo = _demo()


def has_listener() -> bool:
    """Whether this checkout's agent has the MQTT listener (``[mqtt_listener]``)."""
    return (REPO / "edge_agent" / "listener").is_dir()


# -- the stacks ----------------------------------------------------------------------------


def start_mosquitto(procs: Any, name: str, port: int, extra: str = "") -> None:
    conf = procs.workdir / f"{name}.conf"
    data = procs.workdir / name
    data.mkdir()
    conf.write_text((REPO / "deploy/local/mosquitto.conf").read_text()
                    .replace("@PORT@", str(port)).replace("@DATA@", f"{data}/")
                    + ("user root\n" if os.geteuid() == 0 else "") + extra)
    procs.start(name, [MOSQUITTO, "-c", str(conf)])
    demo.wait_until(lambda: demo.port_open(port), START_S, name)


class Stack:
    """One edge (and its cloud) started in a fresh work directory; ``edge`` = name -> pid."""

    def __init__(self, mode: str, cloud_up: bool = True) -> None:
        self.mode = mode
        self.work = Path(tempfile.mkdtemp(prefix=f"edge-listener-{mode}-"))
        self.procs = demo.Processes(self.work)
        self.port, self.cloud_port, self.status_port = (demo.free_port() for _ in range(3))
        self.edge: dict[str, int] = {}
        self.sys_received = 0
        try:
            self._start(cloud_up)
        except BaseException:
            self.procs.stop_all()
            raise

    def _start(self, cloud_up: bool) -> None:
        if self.mode == "bridge":
            start_mosquitto(self.procs, "cloud-mosquitto", self.cloud_port, "sys_interval 1\n")
            start_mosquitto(self.procs, "mosquitto", self.port, (
                "connection cloud\n"
                f"address 127.0.0.1:{self.cloud_port}\n"
                "topic devices/# out 1\n"
                "cleansession false\n"))
            self._watch_cloud_mosquitto()
        else:
            agent_mqtt = "listener"
            if self.mode == "mosquitto":
                start_mosquitto(self.procs, "mosquitto", self.port)
                agent_mqtt = "5"
            cloud_toml, edge_toml = demo.write_configs(self.work, self.port, agent_mqtt,
                                                       self.cloud_port, self.cloud_port,
                                                       self.status_port)
            if cloud_up:
                self.procs.start("cloud-broker", [str(BIN / "cloud-broker"), "serve",
                                                  "--config", str(cloud_toml)])
                demo.wait_until(lambda: demo.port_open(self.cloud_port), START_S,
                                "cloud broker")
            self.procs.start("edge-agent", [str(BIN / "edge-agent"), "run", "--config",
                                            str(edge_toml)])
            demo.wait_until(lambda: demo.mqtt_ready(self.status(), self.port), START_S,
                            "edge agent")
        self.edge = {name: p.pid for name, p in self.procs.procs
                     if name in ("edge-agent", "mosquitto")}

    def _watch_cloud_mosquitto(self) -> None:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sys")

        def on_message(client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
            self.sys_received = int(msg.payload)

        c.on_message = on_message
        c.on_connect = lambda cl, *a: cl.subscribe(SYS_RECEIVED)
        c.connect("127.0.0.1", self.cloud_port)
        c.loop_start()
        self._sys_client = c

    def status(self) -> dict[str, Any] | None:
        return demo.edge_status(self.status_port)

    def at_cloud(self) -> int:
        """Readings the cloud has (bridge: messages the cloud Mosquitto received)."""
        if self.mode == "bridge":
            return self.sys_received
        doc = self.status()
        if not doc or demo.backlog_of(doc) != 0:
            return 0
        return sum(s["appended"] for s in doc["streams"])

    def acked(self) -> int:
        """QoS 1 readings the agent has PUBACKed after its commit (to devices or Mosquitto)."""
        doc = self.status() or {}
        if doc.get("mqtt_listener"):
            return int(doc["mqtt_listener"]["pubacks"])
        return sum(s["pubacks"] for s in doc.get("streams", []))

    def fsync_ms(self) -> float:
        """Mean time from an append to the group commit that made it durable (/metrics)."""
        total = count = 0.0
        with contextlib.suppress(httpx.HTTPError):
            text = httpx.get(f"http://127.0.0.1:{self.status_port}/metrics", timeout=5).text
            for line in text.splitlines():
                if line.startswith("edge_fsync_latency_seconds_sum"):
                    total += float(line.rsplit(" ", 1)[1])
                elif line.startswith("edge_fsync_latency_seconds_count"):
                    count += float(line.rsplit(" ", 1)[1])
        return total / count * 1000 if count else float("nan")

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.edge.items()}

    def times(self) -> dict[str, tuple[float, float]]:
        """(utime, stime) of each edge process so far: the kernel's share of the edge's
        CPU is what differs most between hosts (sockets, loopback delivery)."""
        return {name: cpu_times(pid) for name, pid in self.edge.items()}

    def stop(self) -> None:
        if self.mode == "bridge":
            self._sys_client.loop_stop()
            self._sys_client.disconnect()
        self.procs.stop_all()
        shutil.rmtree(self.work, ignore_errors=True)


# -- (1) edge CPU per reading at a fixed rate ----------------------------------------------


def simulate(port: int, devices: int, rate: float, duration: float) -> tuple[dict[str, Any],
                                                                            float]:
    """Run the fleet (QoS 1); returns (its JSON summary, its CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    sim = subprocess.run(
        [str(BIN / "device-sim"), "run", "--broker", f"mqtt://127.0.0.1:{port}",
         "--devices", str(devices), "--rate", str(rate), "--duration", str(duration),
         "--qos", "1", "--alarm-ratio", "0", "--id-pattern", "dev-{n:05d}", "--quiet",
         "--json"], capture_output=True, text=True, timeout=duration + 180)
    if sim.returncode != 0:
        raise RuntimeError(f"device-sim failed: {sim.stdout[-1000:]} {sim.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (json.loads(sim.stdout),
            after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)


def cpu_run(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    stack = Stack(mode)
    try:
        time.sleep(1.0)  # start-up settles before the CPU window opens
        times0 = stack.times()
        t0 = time.monotonic()
        summary, sim_cpu = simulate(stack.port, args.devices, args.rate, args.duration)
        acked = summary["acked"]
        deadline = time.monotonic() + 120
        while stack.at_cloud() < acked and time.monotonic() < deadline:
            stack.procs.check()
            time.sleep(0.05)
        at_cloud = stack.at_cloud()
        elapsed = time.monotonic() - t0
        spent = {name: (u - times0[name][0], k - times0[name][1])
                 for name, (u, k) in stack.times().items()}
    finally:
        stack.stop()
    per = {name: (u + k) / max(acked, 1) * 1e6 for name, (u, k) in spent.items()}
    share = {name: k / (u + k) if u + k else 0.0 for name, (u, k) in spent.items()}
    return {"mode": mode, "sent": summary["sent"], "acked": acked, "at_cloud": at_cloud,
            "elapsed": elapsed, "per_process_us": per, "kernel_share": share,
            "edge_us": sum(per.values()),
            "sim_us": sim_cpu / max(acked, 1) * 1e6}


# -- (2) ingest throughput at QoS 1 --------------------------------------------------------


def write_feed(path: Path, messages: int) -> None:
    with open(path, "w") as f:
        for i in range(messages):
            f.write(f'{{"seq":{i},"ts":{1_700_000_000_000 + i},"temp":21.5,"hum":40.2}}\n')


def throughput_run(mode: str, devices: int, feed: Path, total: int,
                   protocol: str) -> dict[str, Any]:
    stack = Stack(mode, cloud_up=False)
    pubs: list[subprocess.Popen[bytes]] = []
    try:
        time.sleep(1.0)
        feed0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu0 = stack.cpu()
        t0 = time.monotonic()
        for d in range(devices):
            with open(feed, "rb") as lines:
                pubs.append(subprocess.Popen(
                    ["mosquitto_pub", "-V", protocol, "-p", str(stack.port),
                     "-i", f"feed-{d:03d}",
                     "-t", f"devices/feed-{d:03d}/telemetry", "-q", "1", "-l"],
                    stdin=lines, stdout=subprocess.DEVNULL))
        deadline = time.monotonic() + 300
        while (done := stack.acked()) < total and time.monotonic() < deadline:
            stack.procs.check()
            time.sleep(0.01 if done >= 0.9 * total else 0.1)
        elapsed = time.monotonic() - t0
        cpu = {name: sec - cpu0[name] for name, sec in stack.cpu().items()}
        fsync_ms = stack.fsync_ms()
        for p in pubs:
            p.wait(60)
        feed1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # only the publishers ended
    finally:
        for p in pubs:
            if p.poll() is None:
                p.kill()
        stack.stop()
    feed_cpu = feed1.ru_utime + feed1.ru_stime - feed0.ru_utime - feed0.ru_stime
    return {"mode": mode, "acked": done, "rate": done / elapsed,
            "edge_us": sum(cpu.values()) / max(done, 1) * 1e6,
            "busy": sum(cpu.values()) / elapsed, "feed_busy": feed_cpu / elapsed,
            "fsync_ms": fsync_ms}


# -- (3) fsyncs at trickle rates -----------------------------------------------------------


def trickle_run(devices: int, rate: float, duration: float) -> dict[str, Any]:
    """The listener at a low rate: fsyncs/s of the stream's log (flash wear) and how many
    of them the commit rule started early (``hurried``)."""
    stack = Stack("listener")
    try:
        time.sleep(1.0)

        def counts() -> tuple[int, int, int]:
            doc = stack.status() or {}
            s = next(x for x in doc.get("streams", []) if x["name"] == "telemetry")
            return s.get("log_fsyncs", -1), s.get("hurried_commits", -1), s["appended"]

        f0, h0, a0 = counts()
        t0 = time.monotonic()
        summary, _ = simulate(stack.port, devices, rate, duration)
        elapsed = time.monotonic() - t0
        f1, h1, a1 = counts()
    finally:
        stack.stop()
    return {"devices": devices, "rate": rate, "readings_s": (a1 - a0) / elapsed,
            "fsyncs_s": (f1 - f0) / elapsed if f0 >= 0 else float("nan"),
            "hurried_s": (h1 - h0) / elapsed if h0 >= 0 else float("nan"),
            "acked": summary["acked"]}


def print_trickle(rows: list[dict[str, Any]]) -> None:
    print("\nfsyncs at trickle rates (listener, device-sim QoS 1):")
    print("| devices x rate | readings/s | fsyncs/s | of them hurried/s |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['devices']} x {r['rate']:g}/s | {r['readings_s']:.0f} | "
              f"{r['fsyncs_s']:.1f} | {r['hurried_s']:.1f} |")


# -- main ----------------------------------------------------------------------------------

LABELS = {"listener": "(a) agent's MQTT listener", "mosquitto": "(b) Mosquitto + agent",
          "bridge": "(c) Mosquitto bridge"}


def print_cpu_table(rows: list[dict[str, Any]]) -> dict[str, float]:
    by_mode = {r["mode"]: r["edge_us"] for r in rows}
    bridge = by_mode.get("bridge")
    print("\n| edge | readings acked | at the cloud | edge CPU us/reading | per process "
          "| vs bridge | device-sim us/reading |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for r in rows:
        per = ", ".join(f"{k} {v:.1f} ({r['kernel_share'][k]:.0%} kernel)"
                        for k, v in r["per_process_us"].items())
        ratio = f"{r['edge_us'] / bridge:.2f}x" if bridge else "-"
        print(f"| {LABELS[r['mode']]} | {r['acked']:,} | {r['at_cloud']:,} | "
              f"{r['edge_us']:.1f} | {per} | {ratio} | {r['sim_us']:.1f} |")
    return by_mode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=5.0, help="readings/s per device")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of each fleet run")
    ap.add_argument("--feed-devices", type=int, default=20)
    ap.add_argument("--feed-messages", type=int, default=5000, help="per feed device")
    ap.add_argument("--feed-protocol", choices=("5", "311"), default="5")
    ap.add_argument("--repeat", type=int, default=1, help="alternate the runs; keep the best")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-listener", action="store_true",
                    help="skip (a): for an agent without [mqtt_listener]")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--no-cpu", action="store_true", help="only the throughput runs")
    ap.add_argument("--trickle", default="",
                    help="also count fsyncs at low rates, e.g. 100x1,10x10 (devices x "
                         "readings/s each), 20 s each")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.feed_messages = 8.0, 2000
    listener = has_listener() and not args.no_listener
    modes = (["listener"] if listener else []) + ["mosquitto", "bridge"]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}; fleet {args.devices} x {args.rate}/s = "
          f"{args.devices * args.rate:,.0f} readings/s, QoS 1, {args.duration:.0f} s per edge"
          + ("" if listener else "; (a) skipped: this agent has no [mqtt_listener]"))
    best: dict[str, dict[str, Any]] = {}
    for _ in range(0 if args.no_cpu else args.repeat):
        for mode in modes:
            row = cpu_run(mode, args)
            print(f"  {LABELS[mode]}: {row['edge_us']:.1f} us/reading "
                  f"({row['at_cloud']:,}/{row['acked']:,} at the cloud)", flush=True)
            if mode not in best or row["edge_us"] < best[mode]["edge_us"]:
                best[mode] = row
    by_mode = print_cpu_table([best[m] for m in modes]) if best else {}
    if listener and by_mode:
        a, b, c = by_mode["listener"], by_mode["mosquitto"], by_mode["bridge"]
        print(f"\ntarget (a) <= 2x (c): {a / c:.2f}x, {'met' if a <= 2 * c else 'MISSED'}; "
              f"target (a) < (b): {a:.1f} vs {b:.1f} us, {'met' if a < b else 'MISSED'}")
    if not args.no_throughput:
        feed = Path(tempfile.mkdtemp(prefix="edge-listener-feed-")) / "feed.txt"
        write_feed(feed, args.feed_messages)
        total = args.feed_devices * args.feed_messages
        thr: dict[str, dict[str, Any]] = {}
        for _ in range(args.repeat):
            for m in modes[:-1]:  # not the bridge
                r = throughput_run(m, args.feed_devices, feed, total, args.feed_protocol)
                if m not in thr or r["rate"] > thr[m]["rate"]:
                    thr[m] = r
        shutil.rmtree(feed.parent, ignore_errors=True)
        print(f"\ningest throughput at QoS 1, {args.feed_devices} x mosquitto_pub -V "
              f"{args.feed_protocol} -l -q 1 x {args.feed_messages:,} readings, cloud down:")
        print("| edge | PUBACKed after commit | readings/s | edge CPU us/reading "
              "| edge busy (cores) | publishers busy (cores) | append to fsync, mean ms |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in thr.values():
            print(f"| {LABELS[r['mode']]} | {r['acked']:,} | {r['rate']:,.0f} | "
                  f"{r['edge_us']:.1f} | {r['busy']:.2f} | {r['feed_busy']:.2f} | "
                  f"{r['fsync_ms']:.1f} |")
        if listener:
            lr, mr = thr["listener"]["rate"], thr["mosquitto"]["rate"]
            print(f"target listener >= Mosquitto path: {lr / mr:.2f}x, "
                  f"{'met' if lr >= mr else 'MISSED'}")
    if args.trickle and listener:
        print_trickle([trickle_run(int(d), float(r), 20.0)
                       for d, r in (spec.split("x") for spec in args.trickle.split(","))])
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
