"""A whole pipeline on loopback for the operators' views: Mosquitto (the ``mosquitto``
fixture), ``cloud-broker serve``, ``edge-agent run`` behind a fault proxy on the uplink,
and ``device-sim run`` publishing, with the ``make demo`` configuration (tokens on)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from device_simulator.netfault import FaultProxy
from tests.helpers import Server, free_port, load_demo_module
from tests.helpers_uplink import subprocess_env


def agent_status(port: int) -> dict[str, Any] | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/status", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return None


@dataclass
class Pipeline:
    cloud: Server
    agent: Server
    proxy: FaultProxy
    sim: subprocess.Popen[bytes]
    read_token: str

    @property
    def cloud_url(self) -> str:
        return f"http://127.0.0.1:{self.cloud.port}"

    @property
    def agent_url(self) -> str:
        return f"http://127.0.0.1:{self.agent.port}"


@contextlib.contextmanager
def pipeline(tmp: Path, mqtt_port: int, devices: int = 50, rate: float = 5,
             duration: float = 60, cloud_extra: str = "",
             sim_args: tuple[str, ...] = ()) -> Iterator[Pipeline]:
    """Everything running and the agent subscribed; all of it stopped at the end.
    ``cloud_extra`` is appended to cloud.toml, ``sim_args`` to ``device-sim run``."""
    demo = load_demo_module()
    tmp.mkdir(parents=True, exist_ok=True)
    cloud_port, uplink_port, status_port = free_port(), free_port(), free_port()
    cloud_toml, edge_toml = demo.write_configs(tmp, mqtt_port, "5", cloud_port, uplink_port,
                                               status_port)
    if cloud_extra:
        cloud_toml.write_text(cloud_toml.read_text() + "\n" + cloud_extra)
    env = subprocess_env()
    cloud = Server([sys.executable, "-m", "cloud_broker.cli", "serve", "--config",
                    str(cloud_toml)], cloud_port, tmp / "cloud.out", env=env)

    def subscribed() -> bool:
        doc = agent_status(status_port)
        return bool(doc) and all(m["subscribed"] for m in doc["mqtt"])

    agent = Server([sys.executable, "-m", "edge_agent.cli", "run", "--config", str(edge_toml)],
                   status_port, tmp / "agent.out", env=env, ready=subscribed, ready_timeout=60)
    proxy = FaultProxy(uplink_port, "127.0.0.1", cloud_port).start()
    sim: subprocess.Popen[bytes] | None = None
    try:
        cloud.start()
        agent.start()
        with open(tmp / "sim.out", "wb") as out:
            sim = subprocess.Popen(
                [sys.executable, "-m", "device_simulator.cli", "run", "--broker",
                 f"mqtt://127.0.0.1:{mqtt_port}", "--devices", str(devices), "--rate",
                 str(rate), "--duration", str(duration), "--qos", "1", "--quiet",
                 *sim_args],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        yield Pipeline(cloud, agent, proxy, sim, demo.READ_TOKEN)
    finally:
        if sim is not None and sim.poll() is None:
            sim.kill()
            sim.wait(10)
        agent.kill()
        cloud.kill()
        proxy.stop()
