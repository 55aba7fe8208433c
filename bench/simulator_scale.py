"""device-sim at scale: 10,000 MQTT connections and the aggregate publish rate.

Run from the repository root::

    .venv/bin/python bench/simulator_scale.py            # full run, ~2 minutes on 2 cores
    .venv/bin/python bench/simulator_scale.py --quick    # smoke run, ~20 seconds

Strategy: the bench starts its own Mosquitto on a free loopback port with
``max_connections -1`` and its file limit raised to the hard limit (the default
config and a 1024-fd soft limit would cap it far below 10,000 clients), then runs
the real ``device-sim run`` CLI against it, as a user would:

1. one connection per device: 10,000 devices on 10,000 connections, QoS 0,
   asked for 6 msg/s each (60k/s), so the achieved rate is the machine's
   ceiling rather than the target;
2. gateway mode (100 devices per connection), QoS 0 and QoS 1, same target.

For each run it prints what the simulator achieved *and* what Mosquitto says it
received (``$SYS/broker/publish/messages/received``, published every second),
the CPU time per message of the simulator's processes and of Mosquitto. A peer
row then measures, in the same run and on the same broker, the CPU cost per
message of a bare paho-mqtt 2.x publisher (driven by an asyncio loop through
its external-loop callbacks) against device-sim's own MQTT adapter
(``mqtt_pub``), each in a child process publishing JSON payloads on 1,000
connections as fast as it can: the ratio is why the adapter exists (see the
mqtt_pub docstring).  Absolute numbers depend on what else the 2 shared cores
are doing; ratios in one run are comparable.

Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from plot import plot_rows  # bench/ is on sys.path (a script)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SYS_TOPIC = "$SYS/broker/publish/messages/received"


# -- Mosquitto -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _raise_nofile() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start_mosquitto(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\n"
                    "persistence false\nsys_interval 1\nmax_queued_messages 0\n"
                    "log_type error\nlog_type warning\n")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with open(tmp / "mosquitto.out", "wb") as log:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=_raise_nofile)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start: " + (tmp / "mosquitto.out").read_text())


def fd_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return line.split()[3]
    return "?"


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class SysCounter:
    """Mosquitto's own count of PUBLISH packets received (its $SYS tree, every second)."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.value = 0
        self._changed = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sys")
        self.client.on_connect = lambda c, *_: c.subscribe(SYS_TOPIC)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c, _u, msg) -> None:
        with self._changed:
            self.value = int(msg.payload)
            self._changed.notify_all()

    def settled(self, timeout: float = 5.0) -> int:
        """The count once it stops moving (it is published every second)."""
        last = -1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._changed:
                self._changed.wait(1.5)
                if self.value == last:
                    break
                last = self.value
        return self.value

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# -- scenarios -----------------------------------------------------------------------------


def run_sim(port: int, counter: SysCounter, mosq_pid: int, name: str, args: list[str]
            ) -> dict[str, object]:
    before = counter.settled()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    mcpu0 = proc_cpu(mosq_pid)
    cmd = [sys.executable, "-m", "device_simulator.cli", "run", "--broker",
           f"mqtt://127.0.0.1:{port}", "--json", "--quiet", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1) or not proc.stdout:
        raise RuntimeError(f"device-sim failed ({proc.returncode}): {proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout)
    received = counter.settled() - before
    mcpu = proc_cpu(mosq_pid) - mcpu0
    sim_cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    sent = max(1, summary["sent"])
    return {
        "scenario": name,
        "connections": summary["connected_at_start"],
        "devices": summary["devices"],
        "target": summary["target_rate"],
        "achieved": summary["readings_per_s"],
        "broker_rate": received / summary["publish_seconds"] if summary["publish_seconds"] else 0,
        "received": received,
        "sent": summary["sent"],
        "connect_s": summary["connect_seconds"],
        "sim_us": sim_cpu / sent * 1e6,
        "publish_us": summary["cpu_us_per_reading"],
        "mosq_us": mcpu / sent * 1e6,
        "command": "device-sim run " + " ".join(args),
    }


# -- peer: paho vs our adapter, CPU per message ---------------------------------------------


def _peer_payloads():  # type: ignore[no-untyped-def]
    from device_simulator import payloads

    values = {"temperature": 21.53, "humidity": 45.2, "battery": 87.1, "voltage": 4.012}

    def make(i: int, seq: int) -> bytes:
        return payloads.encode(payloads.telemetry(f"peer-{i:05d}", seq, 1_700_000_000_000 + seq,
                                                  "env", values), "json")
    return make


async def _peer_ours(port: int, conns: int, seconds: float) -> tuple[int, float]:
    from device_simulator.mqtt_pub import BrokerAddress, ConnectOptions, MqttConnection
    from mqttproto import topic_field

    make = _peer_payloads()
    options = ConnectOptions(BrokerAddress("127.0.0.1", port))
    dirty: list[MqttConnection] = []
    clients = [MqttConnection(f"ours-{i}", options, dirty) for i in range(conns)]
    gate = asyncio.Semaphore(64)

    async def connect(c: MqttConnection) -> None:
        async with gate:
            await c.connect()

    await asyncio.gather(*(connect(c) for c in clients))
    topics = [topic_field(f"devices/peer-{i:05d}/telemetry") for i in range(conns)]
    sent = 0
    cpu0 = time.process_time()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for i, c in enumerate(clients):
            c.publish(topics[i], make(i, sent), 0)
            sent += 1
        for c in dirty:
            c.flush()
        dirty.clear()
        await asyncio.sleep(0)
    cpu = time.process_time() - cpu0
    await asyncio.gather(*(c.close(1.0) for c in clients))
    return sent, cpu


async def _peer_paho(port: int, conns: int, seconds: float) -> tuple[int, float]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    make = _peer_payloads()
    loop = asyncio.get_running_loop()
    connected = 0

    def on_connect(*_a: object) -> None:
        nonlocal connected
        connected += 1

    clients = []
    for i in range(conns):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"paho-{i}")
        c.on_connect = on_connect
        c.on_socket_open = lambda cl, _u, s: loop.add_reader(s, cl.loop_read)
        c.on_socket_close = lambda _cl, _u, s: loop.remove_reader(s)
        c.connect("127.0.0.1", port, keepalive=60)
        clients.append(c)
        if i % 100 == 0:
            await asyncio.sleep(0)
    while connected < conns:
        await asyncio.sleep(0.05)
    topics = [f"devices/peer-{i:05d}/telemetry" for i in range(conns)]
    sent = 0
    cpu0 = time.process_time()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for i, c in enumerate(clients):
            c.publish(topics[i], make(i, sent), 0)
            sent += 1
        await asyncio.sleep(0)
    cpu = time.process_time() - cpu0
    for c in clients:
        c.disconnect()
    return sent, cpu


def _peer_child(impl: str, port: int, conns: int, seconds: float) -> None:
    _raise_nofile()
    run = _peer_ours if impl == "ours" else _peer_paho
    sent, cpu = asyncio.run(run(port, conns, seconds))
    print(json.dumps({"sent": sent, "cpu": cpu}))


def peer(impl: str, port: int, conns: int, seconds: float) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "_peer", impl, str(port), str(conns),
                          str(seconds)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    data = json.loads(out.stdout)
    return {"sent": data["sent"], "us": data["cpu"] / max(1, data["sent"]) * 1e6,
            "rate": data["sent"] / seconds}


# -- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--duration", type=float, default=None, help="seconds per scenario")
    args = parser.parse_args()
    _raise_nofile()
    devices = 1000 if args.quick else 10_000
    duration = args.duration or (3.0 if args.quick else 20.0)
    gw_duration = args.duration or (3.0 if args.quick else 12.0)
    peer_s = 2.0 if args.quick else 5.0
    rate = "6"
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}, RLIMIT_NOFILE soft/hard "
          f"{resource.getrlimit(resource.RLIMIT_NOFILE)}")
    with tempfile.TemporaryDirectory(prefix="simulator-scale-") as tmp_name:
        mosq, port = start_mosquitto(Path(tmp_name))
        counter = SysCounter(port)
        try:
            print(f"mosquitto pid {mosq.pid} on port {port}, max open files "
                  f"{fd_limit(mosq.pid)}, max_connections -1")
            rows = [
                run_sim(port, counter, mosq.pid, "1 connection per device, QoS 0",
                        ["--devices", str(devices), "--rate", rate, "--duration", str(duration),
                         "--qos", "0", "--workers", "2"]),
                run_sim(port, counter, mosq.pid, "gateway x100, QoS 0",
                        ["--devices", str(devices), "--gateway", "100", "--rate", rate,
                         "--duration", str(gw_duration), "--qos", "0", "--workers", "2"]),
                run_sim(port, counter, mosq.pid, "gateway x100, QoS 1",
                        ["--devices", str(devices), "--gateway", "100", "--rate", rate,
                         "--duration", str(gw_duration), "--qos", "1", "--workers", "2"]),
            ]
            conns = 1000 if not args.quick else 200
            paho = peer("paho", port, conns, peer_s)
            ours = peer("ours", port, conns, peer_s)
        finally:
            counter.close()
            mosq.terminate()
            mosq.wait(10)
    head = (f"{'scenario':34} {'conns':>6} {'target/s':>9} {'achieved/s':>11} "
            f"{'mosquitto rx/s':>15} {'sim us/msg':>11} {'publishing':>11} {'mosq us/msg':>12}")
    print()
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['scenario']:34} {r['connections']:>6,} {r['target']:>9,.0f} "
              f"{r['achieved']:>11,.0f} {r['broker_rate']:>15,.0f} {r['sim_us']:>11.1f} "
              f"{r['publish_us']:>11.1f} {r['mosq_us']:>12.1f}")
    plot_rows("simulator_scale", ("scenario", "connections", "achieved msg/s",
                                  "mosquitto rx msg/s", "sim CPU us/msg", "mosq CPU us/msg"),
              [(r["scenario"], r["connections"], r["achieved"], r["broker_rate"], r["sim_us"],
                r["mosq_us"]) for r in rows])
    print("sim us/msg: CPU of every device-sim process over the whole run (start-up and "
          "connecting included);\npublishing: worker CPU per reading while publishing; "
          "mosq us/msg: Mosquitto's CPU per message received.")
    print()
    print(f"peer, CPU per QoS 0 JSON message on {conns:,} connections, one process, "
          f"{peer_s:g} s each:")
    print(f"  paho-mqtt 2.x (asyncio external loop): {paho['us']:6.1f} us/msg "
          f"({paho['rate']:,.0f} msg/s)")
    print(f"  device-sim mqtt_pub:                    {ours['us']:6.1f} us/msg "
          f"({ours['rate']:,.0f} msg/s)")
    print(f"  paho / mqtt_pub CPU ratio: {paho['us'] / ours['us']:.2f}x")
    print()
    for r in rows:
        print(f"{r['scenario']}: {r['command']}  (connect {r['connect_s']:.1f} s, "
              f"sent {r['sent']:,}, mosquitto received {r['received']:,})")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_peer":
        _peer_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    else:
        main()
