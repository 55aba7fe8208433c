"""`make demo`: the whole pipeline on one machine, then a verdict.

Starts an MQTT broker (Mosquitto when installed, otherwise the embedded amqtt broker),
a cloud broker, an edge agent and the device simulator; optionally cuts the uplink for a
while (`--outage-at/--outage-for`, what `make demo-outage` does); waits for the edge
backlog to drain; runs the verifier on both cloud topics; prints a short report and
stops everything it started. Exit status 0 only when nothing was lost, duplicated or
reordered. Everything lives in a fresh work directory (default `.demo/`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BIN = Path(sys.executable).parent
console = Console()
EDGE_TOKEN = "demo-edge-token-0001"
READ_TOKEN = "demo-reader-token-0001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


def wait_until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Processes:
    """What the demo started, stopped in reverse order on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=self.workdir)
        log.close()
        self.procs.append((name, proc))
        return proc

    def kill(self, name: str) -> list[str]:
        """SIGKILL ``name`` and forget it; returns its command line to start it again."""
        for i, (n, proc) in enumerate(self.procs):
            if n == name:
                proc.kill()
                proc.wait(10)
                del self.procs[i]
                return list(proc.args)  # type: ignore[arg-type]
        raise KeyError(name)

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop_all(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def mqtt_broker(procs: Processes, port: int, prefer: str = "auto") -> tuple[str, str]:
    """Mosquitto when installed (and not ``prefer="embedded"``), else the embedded broker.
    Returns (name, MQTT protocol version to speak)."""
    mosquitto = None if prefer == "embedded" else shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None)
    if mosquitto:
        conf = procs.workdir / "mosquitto.conf"
        conf.write_text(
            (HERE / "mosquitto.conf").read_text()
            .replace("@PORT@", str(port)).replace("@DATA@", str(procs.workdir) + "/")
            + ("user root\n" if os.geteuid() == 0 else ""))
        procs.start("mosquitto", [mosquitto, "-c", str(conf)])
        return "mosquitto", "5"
    procs.start("mqtt", [sys.executable, str(HERE / "embedded_mqtt.py"), str(port)])
    return "embedded amqtt", "3.1.1"


def write_configs(workdir: Path, mqtt_port: int, mqtt_protocol: str, cloud_port: int,
                  uplink_port: int, status_port: int) -> tuple[Path, Path]:
    subst = {"@WORK@": str(workdir), "@MQTT_PORT@": str(mqtt_port),
             "@CLOUD_PORT@": str(cloud_port), "@UPLINK_PORT@": str(uplink_port),
             "@STATUS_PORT@": str(status_port), "@MQTT_PROTOCOL@": mqtt_protocol,
             "@EDGE_TOKEN@": EDGE_TOKEN, "@READ_TOKEN@": READ_TOKEN}
    out = []
    for name in ("cloud.toml", "edge.toml"):
        text = (HERE / name).read_text()
        for k, v in subst.items():
            text = text.replace(k, v)
        path = workdir / name
        path.write_text(text)
        out.append(path)
    return out[0], out[1]


def edge_status(status_port: int) -> dict[str, Any] | None:
    try:
        return httpx.get(f"http://127.0.0.1:{status_port}/status", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return None


def backlog_of(doc: dict[str, Any] | None) -> int | None:
    if not doc:
        return None
    return sum(s["backlog_records"] for s in doc["streams"])


class BacklogWatch(threading.Thread):
    """Prints the edge backlog every few seconds and remembers its peak."""

    def __init__(self, status_port: int, every: float = 5.0, sample: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.status_port = status_port
        self.every = every
        self.sample = sample
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        last_print = time.monotonic()
        while not self.stop.wait(self.sample):
            doc = edge_status(self.status_port)
            backlog = backlog_of(doc)
            if doc is None or backlog is None:
                continue
            self.peak = max(self.peak, backlog)
            if time.monotonic() - last_print >= self.every:
                last_print = time.monotonic()
                state = doc["uplink"]["state"]
                console.print(f"[dim]edge backlog {backlog:>8} readings, uplink {state}[/dim]")


def outage(proxy: Any, at: float, duration: float, stop: threading.Event) -> None:
    if stop.wait(at):
        return
    console.print(f"[bold red]uplink cut for {duration:.0f} s[/bold red]")
    proxy.down()
    stop.wait(duration)
    proxy.up()
    console.print("[bold green]uplink restored[/bold green]")


def verify(cloud_port: int, topic: str, kind: str, manifest: Path) -> dict[str, Any]:
    res = subprocess.run(
        [str(BIN / "device-sim"), "verify", "--from", f"http://127.0.0.1:{cloud_port}",
         "--topic", topic, "--kind", kind, "--manifest", str(manifest), "--token", READ_TOKEN,
         "--settle", "20", "--json"], capture_output=True, text=True, timeout=300)
    if res.returncode not in (0, 1):
        raise RuntimeError(f"verify {topic} failed ({res.returncode}): {res.stderr[-2000:]}")
    report = json.loads(res.stdout)
    report["exit_code"] = res.returncode
    return report


def report_table(reports: dict[str, dict[str, Any]], sent: int, elapsed: float,
                 drained_s: float, peak_backlog: int, mqtt: str) -> Table:
    table = Table(title=f"demo result (MQTT: {mqtt})", show_header=True)
    table.add_column("")
    for topic in reports:
        table.add_column(topic, justify="right")
    rows = [("expected readings", "expected"), ("delivered", "delivered"),
            ("lost", "missing"), ("duplicated", "duplicates"), ("reordered", "out_of_order"),
            ("sent malformed on purpose", "malformed_received")]
    for label, key in rows:
        table.add_row(label, *(str(r["totals"].get(key, 0)) for r in reports.values()))
    for q in ("p50", "p99"):
        table.add_row(f"latency {q} (ms)", *(
            f"{r['latency_ms'][q]:.1f}" if r.get("latency_ms") else "-" for r in reports.values()))
    table.add_section()
    table.add_row("readings published", str(sent), *([""] * (len(reports) - 1)))
    table.add_row("throughput (readings/s)", f"{sent / elapsed:,.0f}" if elapsed else "-",
                  *([""] * (len(reports) - 1)))
    table.add_row("peak edge backlog", str(peak_backlog), *([""] * (len(reports) - 1)))
    table.add_row("backlog drained after (s)", f"{drained_s:.1f}", *([""] * (len(reports) - 1)))
    return table


def start_cluster(procs: Processes, args: argparse.Namespace, edge_toml: Path,
                  stop: threading.Event) -> int:
    """NATS cluster, two broker nodes, the edge pointed at both, the kill plan started.
    Returns the port of the broker node the verdict is read from."""
    import cluster_demo as cd

    nodes = cd.nats_nodes(procs.workdir, free_port)
    for n in nodes:
        procs.start(f"nats-{n.name}", [cd.nats_server(), "-c", str(n.conf)])
    wait_until(lambda: (procs.check(), all(n.healthy() for n in nodes))[1], 60,
               "the NATS cluster")
    ports = [free_port(), free_port()]
    subst = {"@WORK@": str(procs.workdir), "@EDGE_TOKEN@": EDGE_TOKEN,
             "@READ_TOKEN@": READ_TOKEN}
    template = (HERE / "cloud.toml").read_text()
    for i, port in enumerate(ports, 1):
        toml = cd.broker_config(template, subst, procs.workdir, f"broker-{i}", port, nodes)
        procs.start(f"broker-{i}", [str(BIN / "cloud-broker"), "serve", "--config", str(toml)])
        wait_until(lambda p=port: (procs.check(), port_open(p))[1], 60, f"broker node {i}")
    cd.edge_urls(edge_toml, ports)
    commands: dict[str, list[str]] = {}

    def kill(name: str) -> None:
        commands[name] = procs.kill(name)

    def restart(name: str) -> None:
        procs.start(name, commands.pop(name))

    third = args.duration / 3
    plan = [(third, f"nats-{nodes[0].name}", min(15.0, third / 2)),
            (2 * third, "broker-1", min(5.0, third / 2))]
    threading.Thread(target=cd.chaos, args=(kill, restart, console.print, plan, stop),
                     daemon=True).start()
    console.print(f"[bold]cluster up[/bold]: NATS {', '.join(n.url for n in nodes)}; broker "
                  f"nodes :{ports[0]} and :{ports[1]}")
    return ports[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=500)
    p.add_argument("--rate", type=float, default=2.0, help="readings/s per device")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of publishing")
    p.add_argument("--outage-at", type=float, default=None, help="cut the uplink at T s")
    p.add_argument("--outage-for", type=float, default=20.0)
    p.add_argument("--workdir", type=Path, default=REPO / ".demo")
    p.add_argument("--cluster", action="store_true",
                   help="3 NATS JetStream nodes and 2 broker nodes, one of each killed mid-run")
    p.add_argument("--mqtt", choices=("auto", "embedded"), default="auto",
                   help="auto: Mosquitto when installed, else the embedded broker")
    args = p.parse_args(argv)

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    procs = Processes(args.workdir)
    stop = threading.Event()
    proxy = None
    watch = None
    try:
        mqtt_port, cloud_port, status_port = free_port(), free_port(), free_port()
        uplink_port = cloud_port
        if args.outage_at is not None:
            from device_simulator.netfault import FaultProxy

            uplink_port = free_port()
            proxy = FaultProxy(uplink_port, "127.0.0.1", cloud_port).start()
        mqtt_name, protocol = mqtt_broker(procs, mqtt_port, args.mqtt)
        cloud_toml, edge_toml = write_configs(args.workdir, mqtt_port, protocol, cloud_port,
                                              uplink_port, status_port)
        wait_until(lambda: port_open(mqtt_port), 20, "the MQTT broker")
        if args.cluster:
            cloud_port = start_cluster(procs, args, edge_toml, stop)
        else:
            procs.start("cloud-broker", [str(BIN / "cloud-broker"), "serve", "--config",
                                         str(cloud_toml)])
        wait_until(lambda: (procs.check(), port_open(cloud_port))[1], 30, "the cloud broker")
        procs.start("edge-agent", [str(BIN / "edge-agent"), "run", "--config", str(edge_toml)])
        wait_until(lambda: (procs.check(), edge_status(status_port) is not None)[1], 30,
                   "the edge agent")
        wait_until(lambda: all(m["subscribed"] for m in edge_status(status_port)["mqtt"]), 30,
                   "the edge agent's MQTT subscription")
        console.print(f"[bold]pipeline up[/bold]: {mqtt_name} :{mqtt_port} → edge agent → "
                      f"cloud broker :{cloud_port}; {args.devices} devices x {args.rate}/s "
                      f"for {args.duration:.0f} s")
        watch = BacklogWatch(status_port)
        watch.start()
        if proxy is not None:
            threading.Thread(target=outage, args=(proxy, args.outage_at, args.outage_for, stop),
                             daemon=True).start()
        manifest = args.workdir / "run.json"
        started = time.monotonic()
        sim = subprocess.run(
            [str(BIN / "device-sim"), "run", "--broker", f"mqtt://127.0.0.1:{mqtt_port}",
             "--devices", str(args.devices), "--rate", str(args.rate),
             "--duration", str(args.duration), "--qos", "1", "--alarm-ratio", "0.01",
             "--mqtt-version", "3.1.1" if protocol == "3.1.1" else "5",
             "--manifest", str(manifest), "--json"],
            capture_output=True, text=True, timeout=args.duration + 300)
        elapsed = time.monotonic() - started
        if sim.returncode != 0:
            raise RuntimeError(f"device-sim run failed: {sim.stderr[-2000:]}")
        summary = json.loads(sim.stdout)
        sent = int(summary.get("sent", summary.get("published", 0)))
        console.print(f"simulator done: {sent} readings published in {elapsed:.1f} s")
        drain_started = time.monotonic()
        wait_until(lambda: (procs.check(), backlog_of(edge_status(status_port)) == 0)[1],
                   300, "the edge backlog to drain")
        drained_s = time.monotonic() - drain_started
        reports = {topic: verify(cloud_port, topic, kind, manifest)
                   for topic, kind in (("telemetry", "telemetry"), ("alarms", "alarm"))}
        watch.stop.set()
        console.print(report_table(reports, sent, elapsed, drained_s, watch.peak, mqtt_name))
        ok = all(r["exit_code"] == 0 for r in reports.values())
        console.print("[bold green]OK: nothing lost, duplicated or reordered[/bold green]" if ok
                      else "[bold red]FAILED: see the table and .demo/*.log[/bold red]")
        return 0 if ok else 1
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        console.print(f"[bold red]demo failed:[/bold red] {exc}")
        return 1
    finally:
        stop.set()
        if watch is not None:
            watch.stop.set()
        procs.stop_all()
        if proxy is not None:
            proxy.stop()


if __name__ == "__main__":
    sys.exit(main())
