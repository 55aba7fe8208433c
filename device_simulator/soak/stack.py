"""The soak's pipeline: Mosquitto, cloud broker, edge agent (through the fault proxy),
two consumer-group members, a mirror into SQLite; started, checked and drained. In
cluster mode: a 3-node NATS JetStream cluster holds the partitions, and two broker nodes
("broker", "broker-1") serve them, each behind its own fault proxy, the agent listing
both (it fails over), the members reading one node each.

Strategy: ``Stack`` owns the ports, the configuration files, the fault proxy, the edge
disk and one ``Proc`` per role; the fault runner only calls its small verbs
(``kill``, ``start``, ``cut``...). Readiness and drain waits all have deadlines.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from ..netfault import FaultProxy
from . import configs
from .configs import GROUP, READ_TOKEN, TOPICS, Ports
from .disk import EdgeDisk
from .natscluster import NatsNode, nats_nodes, nats_server, storage_section
from .procs import Procs, python

MEMBERS = 2
#: cluster mode: each broker node's body cache per partition ([storage.jetstream])
CLUSTER_CACHE_BYTES = 1 << 20


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A loopback port free now, below the kernel's ephemeral range when there is room.

    A port from ``bind(0)`` is an ephemeral one: between the moment it is picked and the
    moment the server binds it, any outgoing connection of the run (hundreds of devices
    connecting to Mosquitto) may take it as its local port, and the server fails to
    start ("address already in use"; seen with a NATS node's monitoring port). Ports
    below the ephemeral range are never given to outgoing connections."""
    low, _ = _ephemeral_range()
    rng = random.SystemRandom()
    for _ in range(200 if low > 12000 else 0):
        port = rng.randrange(10000, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


def wait_until(cond: Callable[[], Any], timeout: float, what: str,
               check: Callable[[], None] = lambda: None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        check()
        if cond():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None)
    if found is None:
        raise RuntimeError("mosquitto is not installed (apt-get install -y mosquitto)")
    return found


class Stack:
    def __init__(self, work: Path, disk_mb: int, cluster: bool = False) -> None:
        self.work = work
        self.ports = Ports(*(free_port() for _ in range(5)))
        self.disk = EdgeDisk(work / "edge-disk", disk_mb)
        self.procs = Procs()
        self.cluster = cluster
        self.nats: list[NatsNode] = []
        #: broker role -> (its port, the port of the fault proxy in front of it)
        self.brokers = {"broker": (self.ports.cloud, self.ports.uplink)}
        if cluster:
            self.brokers["broker-1"] = (free_port(), free_port())
        self.proxies: list[FaultProxy] = []
        self.url = f"http://127.0.0.1:{self.ports.cloud}"
        self._http = httpx.Client(timeout=3, headers={"Authorization": f"Bearer {READ_TOKEN}"})

    @property
    def proxy(self) -> FaultProxy | None:
        return self.proxies[0] if self.proxies else None

    # -- building ------------------------------------------------------------------------

    def build(self) -> None:
        self.disk.mount()
        w, p = self.work, self.ports
        self.procs.add("mosquitto", [mosquitto_binary(), "-c",
                                     str(configs.mosquitto_conf(w, p.mqtt))], w)
        storage = ""
        if self.cluster:
            self.nats = nats_nodes(w, free_port, cluster_name="soak")
            for i, node in enumerate(self.nats, 1):
                self.procs.add(f"nats-{i}", [nats_server(), "-c", str(node.conf)], w)
            # Small body caches: the RSS judgement looks for leaks, and with the default
            # (32 MiB per partition, 10 partitions) a broker node's RSS rises for as long
            # as its caches fill, longer than a node lives between the soak's kills.
            storage = storage_section(self.nats) + (
                f"cache_bytes = {CLUSTER_CACHE_BYTES}\n"
                f"readahead_total_bytes = {4 * CLUSTER_CACHE_BYTES}\n")
        for i, (role, (port, _)) in enumerate(self.brokers.items()):
            toml = configs.cloud_toml(w, port, "cloud" if i == 0 else f"cloud-{i}", storage)
            self.procs.add(role, python("cloud_broker.cli", "serve", "--config", str(toml)), w)
        uplinks = tuple(up for _, up in self.brokers.values())
        self.procs.add("agent", python("edge_agent.cli", "run", "--config", str(
            configs.edge_toml(w, p, self.disk.data_dir, uplinks))), w)
        self.procs.add("mirror", python("cloud_broker.cli", "mirror", "--config",
                                        str(configs.mirror_toml(w, p)), "--token", READ_TOKEN,
                                        "--listen", f"127.0.0.1:{p.mirror}"), w)
        ports = [port for port, _ in self.brokers.values()]
        for i in range(MEMBERS):
            url = f"http://127.0.0.1:{ports[i % len(ports)]}"
            self.procs.add(f"member-{i}", python("device_simulator.soak.member", url,
                                                 GROUP, str(self.member_out(i)),
                                                 "--token", READ_TOKEN), w)
        self.proxies = [FaultProxy(up, "127.0.0.1", port).start()
                        for port, up in self.brokers.values()]

    def member_out(self, i: int) -> Path:
        return self.work / f"member-{i}.out"

    def start_all(self) -> None:
        check = self.check_running
        self.procs["mosquitto"].start()
        wait_until(lambda: port_open(self.ports.mqtt), 20, "Mosquitto", check)
        for i in range(1, len(self.nats) + 1):
            self.procs[f"nats-{i}"].start()
        for node in self.nats:
            wait_until(node.healthy, 60, f"NATS node {node.name}", check)
        for role, (port, _) in self.brokers.items():
            self.procs[role].start()
            wait_until(lambda port=port: self._get(f"http://127.0.0.1:{port}/healthz")
                       is not None, 60, f"the cloud broker ({role})", check)
        self.procs["agent"].start()
        wait_until(self.agent_subscribed, 60, "the edge agent's subscription", check)
        for name in ("mirror", *(f"member-{i}" for i in range(MEMBERS))):
            self.procs[name].start()

    def check_running(self) -> None:
        for name, proc in self.procs.items():
            if proc.starts and not proc.running:
                rc = proc.proc.returncode if proc.proc else "?"
                raise RuntimeError(f"{name} exited with {rc}:\n{proc.tail()}")

    def teardown(self) -> None:
        self.procs.stop_all()
        for proxy in self.proxies:
            proxy.stop()
        self._http.close()
        self.disk.unmount()

    # -- looking ---------------------------------------------------------------------------

    def _get(self, url: str) -> Any:
        try:
            resp = self._http.get(url)
            return resp.json() if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    def agent_status(self) -> dict[str, Any] | None:
        return self._get(f"http://127.0.0.1:{self.ports.status}/status")

    def agent_subscribed(self) -> bool:
        doc = self.agent_status()
        return bool(doc) and all(m["subscribed"] for m in doc["mqtt"])

    def agent_drained(self) -> bool:
        doc = self.agent_status()
        return bool(doc) and all(s["backlog_records"] == 0 for s in doc["streams"])

    def end_offsets(self) -> dict[tuple[str, int], int] | None:
        out = {}
        for topic in TOPICS:
            doc = self._get(f"{self.url}/v1/topics/{topic}")
            if doc is None:
                return None
            out.update({(topic, p["partition"]): p["end_offset"] for p in doc["partitions"]})
        return out

    def group_caught_up(self) -> bool:
        ends, doc = self.end_offsets(), self._get(f"{self.url}/v1/groups/{GROUP}/offsets")
        if ends is None or doc is None:
            return False
        done = {(o["topic"], o["partition"]): o["offset"] for o in doc["offsets"]}
        return all(done.get(tp, 0) >= end for tp, end in ends.items())

    def mirror_rows(self, topic: str) -> int:
        db = self.work / f"archive-{topic}.db"
        if not db.exists():
            return 0
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                return con.execute("SELECT count(*) FROM records").fetchone()[0]
            finally:
                con.close()
        except sqlite3.Error:
            return 0

    def mirror_caught_up(self) -> bool:
        ends = self.end_offsets()
        if ends is None:
            return False
        return all(self.mirror_rows(t) >= sum(e for (tt, _), e in ends.items() if tt == t)
                   for t in TOPICS)
