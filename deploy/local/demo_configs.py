"""The demo's configuration: cloud.toml and edge.toml rendered from this folder's
templates, and what the devices publish to (the agent's listener or Mosquitto)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from demo_procs import HERE, Processes

EDGE_TOKEN = "demo-edge-token-0001"
READ_TOKEN = "demo-reader-token-0001"


def mqtt_broker(procs: Processes, port: int, mode: str = "listener") -> tuple[str, str]:
    """What the devices publish to: the agent's own MQTT listener (no broker process), or
    Mosquitto (``mode="mosquitto"``). Returns (name, the agent's MQTT mode: "listener" or
    the protocol version its Mosquitto sessions speak)."""
    if mode == "listener":
        return "edge agent's MQTT listener", "listener"
    mosquitto = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None)
    if mosquitto is None:
        raise RuntimeError("--mqtt mosquitto: mosquitto is not installed")
    conf = procs.workdir / "mosquitto.conf"
    conf.write_text(
        (HERE / "mosquitto.conf").read_text()
        .replace("@PORT@", str(port)).replace("@DATA@", str(procs.workdir) + "/")
        + ("user root\n" if os.geteuid() == 0 else ""))
    procs.start("mosquitto", [mosquitto, "-c", str(conf)])
    return "mosquitto", "5"


def mqtt_section(mode: str, port: int) -> str:
    """edge.toml's MQTT table: the listener, or the sessions to Mosquitto (``mode`` is
    their protocol version)."""
    if mode == "listener":
        return f'[mqtt_listener]\nlisten = "127.0.0.1:{port}"\nallow_anonymous = true\n'
    return f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nprotocol = "{mode}"\n'


def write_configs(workdir: Path, mqtt_port: int, mqtt_protocol: str, cloud_port: int,
                  uplink_port: int, status_port: int) -> tuple[Path, Path]:
    subst = {"@WORK@": str(workdir), "@MQTT@": mqtt_section(mqtt_protocol, mqtt_port),
             "@CLOUD_PORT@": str(cloud_port), "@UPLINK_PORT@": str(uplink_port),
             "@STATUS_PORT@": str(status_port),
             "@EDGE_TOKEN@": EDGE_TOKEN, "@READ_TOKEN@": READ_TOKEN}
    out = []
    for name in ("cloud.toml", "edge.toml"):
        text = (HERE / name).read_text()
        for k, v in subst.items():
            text = text.replace(k, v)
        path = workdir / name
        path.write_text(text)
        out.append(path)
    return out[0], out[1]


