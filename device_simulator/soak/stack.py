"""The soak's pipeline: Mosquitto, cloud broker, edge agent (through the fault proxy),
two consumer-group members, a mirror into SQLite; started, checked and drained.

Strategy: ``Stack`` owns the ports, the configuration files, the fault proxy, the edge
disk and one ``Proc`` per role; the fault runner only calls its small verbs
(``kill``, ``start``, ``cut``...). Readiness and drain waits all have deadlines.
"""

from __future__ import annotations

import contextlib
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
from .procs import Procs, python

MEMBERS = 2


def free_port() -> int:
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
    def __init__(self, work: Path, disk_mb: int) -> None:
        self.work = work
        self.ports = Ports(*(free_port() for _ in range(5)))
        self.disk = EdgeDisk(work / "edge-disk", disk_mb)
        self.procs = Procs()
        self.proxy: FaultProxy | None = None
        self.url = f"http://127.0.0.1:{self.ports.cloud}"
        self._http = httpx.Client(timeout=3, headers={"Authorization": f"Bearer {READ_TOKEN}"})

    # -- building ------------------------------------------------------------------------

    def build(self) -> None:
        self.disk.mount()
        w, p = self.work, self.ports
        self.procs.add("mosquitto", [mosquitto_binary(), "-c",
                                     str(configs.mosquitto_conf(w, p.mqtt))], w)
        self.procs.add("broker", python("cloud_broker.cli", "serve", "--config",
                                        str(configs.cloud_toml(w, p))), w)
        self.procs.add("agent", python("edge_agent.cli", "run", "--config",
                                       str(configs.edge_toml(w, p, self.disk.data_dir))), w)
        self.procs.add("mirror", python("cloud_broker.cli", "mirror", "--config",
                                        str(configs.mirror_toml(w, p)), "--token", READ_TOKEN,
                                        "--listen", f"127.0.0.1:{p.mirror}"), w)
        for i in range(MEMBERS):
            self.procs.add(f"member-{i}", python("device_simulator.soak.member", self.url,
                                                 GROUP, str(self.member_out(i)),
                                                 "--token", READ_TOKEN), w)
        self.proxy = FaultProxy(p.uplink, "127.0.0.1", p.cloud).start()

    def member_out(self, i: int) -> Path:
        return self.work / f"member-{i}.out"

    def start_all(self) -> None:
        check = self.check_running
        self.procs["mosquitto"].start()
        wait_until(lambda: port_open(self.ports.mqtt), 20, "Mosquitto", check)
        self.procs["broker"].start()
        wait_until(self.broker_healthy, 60, "the cloud broker", check)
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
        if self.proxy is not None:
            self.proxy.stop()
        self._http.close()
        self.disk.unmount()

    # -- looking ---------------------------------------------------------------------------

    def _get(self, url: str) -> Any:
        try:
            resp = self._http.get(url)
            return resp.json() if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    def broker_healthy(self) -> bool:
        return self._get(f"{self.url}/healthz") is not None

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
