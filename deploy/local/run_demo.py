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
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the demo's own modules, also when loaded by file path
    sys.path.insert(0, str(HERE))

from demo_configs import EDGE_TOKEN, READ_TOKEN, mqtt_broker, write_configs  # noqa: E402
from demo_procs import BIN, CHILD_ENV, REPO, Processes, wait_until  # noqa: E402
from demo_verdict import report_table, verify  # noqa: E402
from demo_watch import (  # noqa: E402
    BacklogWatch,
    LiveConsumer,
    backlog_of,
    console,
    edge_status,
    mqtt_ready,
    outage,
)

from device_simulator.soak.stack import free_port, port_open  # noqa: E402

__all__ = ["EDGE_TOKEN", "READ_TOKEN", "main", "write_configs"]


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
