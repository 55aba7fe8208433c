"""Edge agent MQTT ingest vs a bare paho subscriber, on the same Mosquitto feed; agent RSS.

Run from the repository root::

    .venv/bin/python bench/edge_ingest.py --repeat 3 --backlog-gb 10   # docs/benchmarks.md
    .venv/bin/python bench/edge_ingest.py --quick                      # smoke run
    .venv/bin/python bench/edge_ingest.py --qos 0 --no-backlog         # one row only

Strategy: one Mosquitto (own config, free port) and one feed: ``--devices`` C
``mosquitto_pub -l`` processes (a fast Python paho publisher when mosquitto_pub is not
installed), each publishing ``--messages`` JSON readings with a sequence number on its own
``devices/<id>/telemetry`` topic. The feed is far faster than either subscriber, so
Mosquitto queues and each subscriber runs at its own speed. The same feed goes, one
after the other, into

* a bare paho-mqtt subscriber (MQTT v5, ``loop_forever``) that only counts (QoS 1: paho
  sends each PUBACK as the message arrives);
* the edge agent (``python -m edge_agent.cli run``): every reading parsed, deduplicated,
  appended to its stream log and - at QoS 1 - PUBACKed only after the group commit.

Rate = readings / (time the subscriber had them all - time the feed started); for the
agent "had them" means appended (QoS 0) or durable and PUBACKed (QoS 1), polled on
``/status`` every 20 ms. Runs alternate bare/agent ``--repeat`` times and the best of
each is kept (interference on a shared machine only ever adds time). The uplink points
at a closed port (cloud down), so the rows measure ingest, not forwarding.

Memory: the agent's VmRSS is sampled while it ingests. The backlog rows prefill the
stream's log with 0.1 GB and with ``--backlog-gb`` of 1 KB readings (plus the dedup
checkpoint a running agent leaves) before the agent starts; the cloud stays down, so all
of it is backlog and the forwarder keeps retrying a batch of it; then the QoS 1 feed runs
again. CPU per reading (utime + stime of the subscriber process over the run) is printed
too: it is steadier than rates on a shared machine.

Not a test: nothing asserts; targets are marked met/missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from plot import plot_printed_tables  # bench/ is on sys.path (a script)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"port {port} not open")


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# -- the bare subscriber (a child process: `bench/edge_ingest.py _bare PORT QOS N`) --------

def bare_main(port: int, qos: int, total: int) -> None:
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bare-{os.getpid()}",
                    protocol=mqtt.MQTTv5)
    st = {"n": 0, "first": 0.0, "last": 0.0, "cpu0": time.process_time(), "cpu": 0.0}

    def on_message(client, userdata, msg):  # type: ignore[no-untyped-def]
        st["n"] += 1
        if st["n"] == 1:
            st["first"] = time.time()
        if st["n"] >= total:
            st["last"] = time.time()
            st["cpu"] = time.process_time() - st["cpu0"]
            client.disconnect()

    def on_subscribe(client, userdata, mid, reasons, props):  # type: ignore[no-untyped-def]
        st["cpu0"] = time.process_time()
        print("ready", flush=True)

    c.on_message = on_message
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe("devices/+/telemetry", qos)
    c.on_subscribe = on_subscribe
    c.connect("127.0.0.1", port)
    c.loop_forever()
    print(json.dumps({"first": st["first"], "last": st["last"], "n": st["n"], "cpu": st["cpu"],
                      "rss_mb": rss_mb(os.getpid())}), flush=True)


# -- the feed ------------------------------------------------------------------------------

def write_feed(path: Path, messages: int) -> None:
    with open(path, "w") as f:
        for i in range(messages):
            f.write(f'{{"seq":{i},"ts":{1_700_000_000_000 + i},"temp":21.5,"hum":40.2}}\n')


def start_feed(port: int, qos: int, devices: int, feed: Path) -> list[subprocess.Popen[bytes]]:
    pub = shutil.which("mosquitto_pub")
    procs = []
    for d in range(devices):
        topic = f"devices/dev{d}/telemetry"
        if pub:
            args = [pub, "-p", str(port), "-t", topic, "-q", str(qos), "-l"]
        else:
            args = [PY, __file__, "_pub", str(port), topic, str(qos), str(feed)]
        procs.append(subprocess.Popen(args, stdin=open(feed, "rb"),  # noqa: SIM115
                                      stdout=subprocess.DEVNULL))
    return procs


def pub_main(port: int, topic: str, qos: int, feed: str) -> None:
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.connect("127.0.0.1", port)
    c.loop_start()
    with open(feed) as f:
        infos = [c.publish(topic, line.rstrip("\n"), qos) for line in f]
    for info in infos:
        info.wait_for_publish()
    c.disconnect()
    c.loop_stop()


# -- one run of each kind ------------------------------------------------------------------

def run_bare(port: int, qos: int, devices: int, n: int, feed: Path) -> dict[str, float]:
    total = devices * n
    p = subprocess.Popen([PY, __file__, "_bare", str(port), str(qos), str(total)],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    if p.stdout.readline().strip() != "ready":
        raise RuntimeError("bare subscriber did not start")
    t0 = time.time()
    pubs = start_feed(port, qos, devices, feed)
    out = json.loads(p.stdout.readline())
    p.wait(30)
    for q in pubs:
        q.wait(30)
    return {"rate": total / (out["last"] - t0), "rss_mb": out["rss_mb"],
            "cpu_us": out["cpu"] / total * 1e6}


def agent_config(tmp: Path, port: int, run: str) -> tuple[Path, int]:
    sport = free_port()
    data = tmp / f"data-{run}"
    cfg = tmp / f"edge-{run}.toml"
    cfg.write_text(f"""
edge_id = "bench"
data_dir = "{data}"
[mqtt]
port = {port}
client_id = "bench-{run}"
[uplink]
url = "http://127.0.0.1:{free_port()}"
[status]
listen = "127.0.0.1:{sport}"
[[streams]]
name = "telemetry"
topics = ["devices/+/telemetry"]
device_key = "topic:devices/{{device}}/telemetry"
""")
    return cfg, sport


class AgentProc:
    def __init__(self, cfg: Path, sport: int, log: Path, profile: Path | None = None) -> None:
        args = [PY, "-m", "edge_agent.cli", "run", "--config", str(cfg)]
        if profile is not None:
            args = [PY, "-m", "cProfile", "-o", str(profile), "-m", "edge_agent.cli", "run",
                    "--config", str(cfg)]
        self.url = f"http://127.0.0.1:{sport}/status"
        self.started = time.time()
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=open(log, "ab"),  # noqa: SIM115
                                     stderr=subprocess.STDOUT)
        self.client = httpx.Client(timeout=5)
        deadline = time.monotonic() + 600
        while True:
            doc = self.status()
            if doc and doc["mqtt"] and all(m["subscribed"] for m in doc["mqtt"]):
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("agent did not start: " + log.read_text()[-2000:])
            time.sleep(0.05)
        self.ready_s = time.time() - self.started

    def status(self) -> dict | None:  # type: ignore[type-arg]
        try:
            return self.client.get(self.url).json()
        except (httpx.HTTPError, ValueError):
            return None

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.client.close()


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_agent(agent: AgentProc, port: int, qos: int, devices: int, n: int,
              feed: Path, base: int = 0) -> dict[str, float]:
    """Feed the agent; poll /status rarely until 90 % is in, then every 10 ms."""
    total = devices * n
    key = "pubacks" if qos else "appended"
    cpu0 = cpu_s(agent.proc.pid)
    t0 = time.time()
    pubs = start_feed(port, qos, devices, feed)
    peak = 0.0
    while True:
        doc = agent.status()
        peak = max(peak, rss_mb(agent.proc.pid))
        done = doc["streams"][0][key] - base if doc else 0
        if done >= total:
            t1 = time.time()
            break
        if agent.proc.poll() is not None:
            raise RuntimeError("agent exited")
        time.sleep(0.01 if done >= 0.9 * total else 0.2)
    cpu = cpu_s(agent.proc.pid) - cpu0
    for q in pubs:
        q.wait(30)
    return {"rate": total / (t1 - t0), "rss_mb": peak, "cpu_us": cpu / total * 1e6,
            "dedup": doc["streams"][0]["deduplicated"]}


def prefill(data_dir: Path, gigabytes: float) -> tuple[int, float]:
    """Append ~gigabytes of 1 KB readings to the stream's log, as the agent stores them."""
    from shared_log import Log, LogConfig, Record

    d = data_dir / "streams" / "telemetry"
    payload = b'{"seq":0,"ts":1700000000000,"blob":"' + b"x" * 960 + b'"}'
    target = int(gigabytes * 1e9)
    t = time.perf_counter()
    n = 0
    with Log(d, LogConfig(segment_bytes=16 * 1024 * 1024)) as lg:
        while lg.size_bytes < target:
            batch = [Record(f"old{(n + i) % 1000}".encode(), payload, 1_700_000_000_000,
                            (("content-type", b"application/json"),
                             ("seq", str((n + i) // 1000).encode())))
                     for i in range(2000)]
            lg.append(batch)
            n += len(batch)
        end = lg.end_offset
    # What a running agent leaves behind: its generation and a dedup checkpoint at the end
    # (without one the agent would first re-derive the marks from the whole backlog).
    from edge_agent.dedup import save_marks
    (d / "generation").write_text("benchbacklog01")
    save_marks(d, "benchbacklog01", end, {f"old{i}": (n - 1) // 1000 for i in range(1000)})
    return n, time.perf_counter() - t


# -- main ----------------------------------------------------------------------------------

def main() -> int:
    plot_printed_tables("edge_ingest")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=25_000, help="per device")
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--backlog-gb", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--profile", action="store_true", help="cProfile the agent runs")
    ap.add_argument("--qos", type=int, choices=(0, 1), action="append",
                    help="only these QoS rows (default both)")
    ap.add_argument("--no-backlog", action="store_true", help="skip the backlog row")
    ap.add_argument("--dir", type=Path, default=REPO / "bench" / "out")
    args = ap.parse_args()
    if args.quick:
        args.messages, args.repeat, args.backlog_gb = 5000, 1, 0.2
    args.dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="edge_ingest-", dir=args.dir))
    port = free_port()
    (tmp / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 0\nmax_inflight_messages 0\nmax_queued_bytes 0\n")
    mosq = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c",
                             str(tmp / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    backlogs: list[dict[str, float]] = []
    try:
        wait_port(port)
        feed = tmp / "feed.txt"
        write_feed(feed, args.messages)
        total = args.messages * args.devices
        print(f"feed: {args.devices} x {args.messages} readings "
              f"({'mosquitto_pub -l' if shutil.which('mosquitto_pub') else 'paho publisher'}),"
              f" {feed.stat().st_size // args.messages} B per line", flush=True)
        run_no = 0
        for qos in args.qos or (0, 1):
            for _ in range(args.repeat):
                r = run_bare(port, qos, args.devices, args.messages, feed)
                results.setdefault(("bare", qos), []).append(r)
                print(f"  bare  qos{qos}: {r['rate']:8.0f}/s  cpu {r['cpu_us']:.1f} us/reading",
                      flush=True)
                run_no += 1
                cfg, sport = agent_config(tmp, port, str(run_no))
                prof = tmp / f"agent-qos{qos}.prof" if args.profile else None
                agent = AgentProc(cfg, sport, tmp / "agent.out", prof)
                try:
                    r = run_agent(agent, port, qos, args.devices, args.messages, feed)
                finally:
                    agent.stop()
                results.setdefault(("agent", qos), []).append(r)
                print(f"  agent qos{qos}: {r['rate']:8.0f}/s  cpu {r['cpu_us']:.1f} us/reading  "
                      f"rss {r['rss_mb']:.1f} MB", flush=True)
                if prof is not None and prof.exists():
                    import pstats
                    ps = pstats.Stats(str(prof)).sort_stats("tottime")
                    ps.print_stats(int(os.environ.get("BENCH_PROFILE_LINES", "25")))
                    ps.print_callers("decode_records|read_batches|fetch")
        # the backlog rows: the same QoS 1 feed with a small and a large backlog
        sizes = [] if args.no_backlog else sorted({min(0.1, args.backlog_gb), args.backlog_gb})
        for gb in sizes:
            run_no += 1
            cfg, sport = agent_config(tmp, port, f"backlog{run_no}")
            n_old, secs = prefill(tmp / f"data-backlog{run_no}", gb)
            size = sum(f.stat().st_size for f in (tmp / f"data-backlog{run_no}").rglob("*")
                       if f.is_file())
            print(f"prefilled {n_old} readings, {size / 1e9:.2f} GB in {secs:.1f}s", flush=True)
            agent = AgentProc(cfg, sport, tmp / "agent.out")
            try:
                idle = rss_mb(agent.proc.pid)
                r = run_agent(agent, port, 1, args.devices, args.messages, feed)
                doc = agent.status() or {}
                r.update(backlog_gb=size / 1e9, idle_rss=idle, start_s=agent.ready_s,
                         backlog_records=doc["streams"][0]["backlog_records"])
            finally:
                agent.stop()
            shutil.rmtree(tmp / f"data-backlog{run_no}", ignore_errors=True)
            backlogs.append(r)
            print(f"  agent qos1 + {size / 1e9:.2f} GB backlog: {r['rate']:8.0f}/s  "
                  f"rss idle {idle:.1f} MB, peak {r['rss_mb']:.1f} MB", flush=True)
    finally:
        mosq.send_signal(signal.SIGTERM)
        mosq.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, backlogs, total)
    return 0


def report(results: dict[tuple[str, int], list[dict[str, float]]],
           backlogs: list[dict[str, float]], total: int) -> None:
    def best(kind: str, qos: int) -> dict[str, float]:
        return max(results[(kind, qos)], key=lambda r: r["rate"])

    print()
    print("| row | readings | bare paho sub/s | edge agent/s | ratio | target | | "
          "CPU us/reading bare / agent |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for qos, target in ((0, 0.90), (1, 0.80)):
        if ("bare", qos) not in results:
            continue
        b, a = best("bare", qos), best("agent", qos)
        ratio = a["rate"] / b["rate"]
        cb = min(r["cpu_us"] for r in results[("bare", qos)])
        ca = min(r["cpu_us"] for r in results[("agent", qos)])
        print(f"| QoS {qos}{' (ack after fsync)' if qos else ''} | {total} | {b['rate']:.0f} | "
              f"{a['rate']:.0f} | {ratio:.2f} | >= {target:.2f} | "
              f"{'met' if ratio >= target else 'missed'} | {cb:.1f} / {ca:.1f} |")
    steady = max(r["rss_mb"] for k, rs in results.items() if k[0] == "agent" for r in rs)
    print()
    print("| memory (agent VmRSS) | idle | peak while ingesting | target | |")
    print("|---|---:|---:|---:|---|")
    print(f"| no backlog | - | {steady:.1f} MB | <= 64 MB | "
          f"{'met' if steady <= 64 else 'missed'} |")
    for bl in backlogs:
        print(f"| {bl['backlog_gb']:.2f} GB / {bl['backlog_records']:.0f} records of backlog "
              f"(cloud down), ready in {bl['start_s']:.1f}s | {bl['idle_rss']:.1f} MB | "
              f"{bl['rss_mb']:.1f} MB | <= 64 MB, not growing with the backlog | "
              f"{'met' if bl['rss_mb'] <= 64 else 'missed'} |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_bare":
        bare_main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_pub":
        pub_main(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        sys.exit(main())
