"""`make demo`: the whole pipeline on one machine, then a verdict.

Starts a cloud broker, an edge agent whose MQTT listener the simulated devices publish
to (``--mqtt mosquitto``: a Mosquitto broker in front of the agent instead), and the
device simulator; optionally cuts the uplink for a
while (`--outage-at/--outage-for`, what `make demo-outage` does); waits for the edge
backlog to drain; runs the verifier on both cloud topics; prints a short report and
stops everything it started. Exit status 0 only when nothing was lost, duplicated or
reordered. Everything lives in a fresh work directory (default `.demo/`).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
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
# The parts run the code of this checkout, whatever the environment has installed.
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}


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
                                start_new_session=True, cwd=self.workdir, env=CHILD_ENV)
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


def mqtt_broker(procs: Processes, port: int, mode: str = "listener") -> tuple[str, str]:
    """What the devices publish to: the agent's own MQTT listener (no broker process), or
    Mosquitto (``mode="mosquitto"``). Returns (name, the agent's MQTT mode: "listener" or
    the protocol version its Mosquitto sessions speak)."""
    if mode == "listener":
        return "edge agent's MQTT listener", "listener"
    mosquitto = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None)
    if mosquitto is None:
        raise RuntimeError("--mqtt mosquitto: mosquitto is not installed")
    conf = procs.workdir / "mosquitto.conf"
    conf.write_text(
        (HERE / "mosquitto.conf").read_text()
        .replace("@PORT@", str(port)).replace("@DATA@", str(procs.workdir) + "/")
        + ("user root\n" if os.geteuid() == 0 else ""))
    procs.start("mosquitto", [mosquitto, "-c", str(conf)])
    return "mosquitto", "5"


def mqtt_section(mode: str, port: int) -> str:
    """edge.toml's MQTT table: the listener, or the sessions to Mosquitto (``mode`` is
    their protocol version)."""
    if mode == "listener":
        return f'[mqtt_listener]\nlisten = "127.0.0.1:{port}"\nallow_anonymous = true\n'
    return f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nprotocol = "{mode}"\n'


def write_configs(workdir: Path, mqtt_port: int, mqtt_protocol: str, cloud_port: int,
                  uplink_port: int, status_port: int) -> tuple[Path, Path]:
    subst = {"@WORK@": str(workdir), "@MQTT@": mqtt_section(mqtt_protocol, mqtt_port),
             "@CLOUD_PORT@": str(cloud_port), "@UPLINK_PORT@": str(uplink_port),
             "@STATUS_PORT@": str(status_port),
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


def verify(cloud_port: int, topic: str, kind: str, manifest: Path) -> dict[str, Any]:
    res = subprocess.run(
        [str(BIN / "device-sim"), "verify", "--from", f"http://127.0.0.1:{cloud_port}",
         "--topic", topic, "--kind", kind, "--manifest", str(manifest), "--token", READ_TOKEN,
         "--settle", "20", "--json"], capture_output=True, text=True, timeout=300,
        env=CHILD_ENV)
    if res.returncode not in (0, 1):
        raise RuntimeError(f"verify {topic} failed ({res.returncode}): {res.stderr[-2000:]}")
    report = json.loads(res.stdout)
    report["exit_code"] = res.returncode
    return report


def report_table(reports: dict[str, dict[str, Any]], sent: int, elapsed: float,
                 drain: tuple[str, float | None], peak_backlog: int, mqtt: str,
                 consumer: LiveConsumer) -> Table:
    table = Table(title=f"demo result (MQTT: {mqtt})", show_header=True)
    table.add_column("")
    for topic in reports:
        table.add_column(topic, justify="right")
    rows = [("expected readings", "expected"), ("delivered", "delivered"),
            ("lost", "missing"), ("duplicated", "duplicates"), ("reordered", "out_of_order"),
            ("sent malformed on purpose", "malformed_received")]
    for label, key in rows:
        table.add_row(label, *(str(r["totals"].get(key, 0)) for r in reports.values()))
    for q in (0.5, 0.99):
        table.add_row(f"device → consumer p{q * 100:.0f} (ms)", *(
            f"{v:.1f}" if (v := consumer.quantile(t, q)) is not None else "-"
            for t in reports))
    table.add_section()
    table.add_row("readings published", str(sent), *([""] * (len(reports) - 1)))
    table.add_row("throughput (readings/s)", f"{sent / elapsed:,.0f}" if elapsed else "-",
                  *([""] * (len(reports) - 1)))
    table.add_row("peak edge backlog", str(peak_backlog), *([""] * (len(reports) - 1)))
    table.add_row(drain[0], "-" if drain[1] is None else f"{drain[1]:.1f}",
                  *([""] * (len(reports) - 1)))
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
    p.add_argument("--mqtt", choices=("listener", "mosquitto"), default="listener",
                   help="devices publish to the agent's listener, or through Mosquitto")
    p.add_argument("--cluster", action="store_true",
                   help="3 NATS JetStream nodes and 2 broker nodes, one of each killed mid-run")
    args = p.parse_args(argv)

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    procs = Processes(args.workdir)
    stop = threading.Event()
    proxy = None
    watch = None
    consumer = None
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
        if protocol != "listener":
            wait_until(lambda: port_open(mqtt_port), 20, "the MQTT broker")
        if args.cluster:
            cloud_port = start_cluster(procs, args, edge_toml, stop)
        else:
            procs.start("cloud-broker", [str(BIN / "cloud-broker"), "serve", "--config",
                                         str(cloud_toml)])
        wait_until(lambda: (procs.check(), port_open(cloud_port))[1], 30, "the cloud broker")
        consumer = LiveConsumer(cloud_port, ["telemetry", "alarms"])
        procs.start("edge-agent", [str(BIN / "edge-agent"), "run", "--config", str(edge_toml)])
        wait_until(lambda: (procs.check(), edge_status(status_port) is not None)[1], 30,
                   "the edge agent")
        wait_until(lambda: mqtt_ready(edge_status(status_port), mqtt_port), 30,
                   "the edge agent's MQTT listener or subscription")
        console.print(f"[bold]pipeline up[/bold]: {mqtt_name} :{mqtt_port} → edge agent → "
                      f"cloud broker :{cloud_port}; {args.devices} devices x {args.rate}/s "
                      f"for {args.duration:.0f} s")
        watch = BacklogWatch(status_port)
        watch.start()
        if proxy is not None:
            threading.Thread(target=outage, daemon=True,
                             args=(proxy, args.outage_at, args.outage_for, stop, watch)).start()
        manifest = args.workdir / "run.json"
        started = time.monotonic()
        sim = subprocess.run(
            [str(BIN / "device-sim"), "run", "--broker", f"mqtt://127.0.0.1:{mqtt_port}",
             "--devices", str(args.devices), "--rate", str(args.rate),
             "--duration", str(args.duration), "--qos", "1", "--alarm-ratio", "0.01",
             "--mqtt-version", "5",
             "--manifest", str(manifest), "--json"],
            capture_output=True, text=True, timeout=args.duration + 300, env=CHILD_ENV)
        elapsed = time.monotonic() - started
        if sim.returncode != 0:
            raise RuntimeError(f"device-sim run failed: {sim.stderr[-2000:]}")
        summary = json.loads(sim.stdout)
        sent = int(summary.get("sent", summary.get("published", 0)))
        console.print(f"simulator done: {sent} readings published in {elapsed:.1f} s")
        drain_started = time.monotonic()
        wait_until(lambda: (procs.check(), backlog_of(edge_status(status_port)) == 0)[1],
                   300, "the edge backlog to drain")
        if proxy is not None:
            wait_until(lambda: watch.drain_s() is not None, 60, "the drain to be timed")
            drain = ("backlog drained, s after the uplink came back", watch.drain_s())
        else:
            drain = ("backlog drained, s after the last reading", time.monotonic()
                     - drain_started)
        reports = {topic: verify(cloud_port, topic, kind, manifest)
                   for topic, kind in (("telemetry", "telemetry"), ("alarms", "alarm"))}
        watch.stop.set()
        consumer.close()
        console.print(report_table(reports, sent, elapsed, drain, watch.peak, mqtt_name,
                                   consumer))
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
        if consumer is not None:
            consumer.close()
        procs.stop_all()
        if proxy is not None:
            proxy.stop()


if __name__ == "__main__":
    sys.exit(main())
