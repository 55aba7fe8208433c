"""The soak's configuration files: Mosquitto, the cloud broker, the mirror, the edge agent.

Strategy: one function per file, each returning the path it wrote, from the ports and
directories of one run; nothing here starts anything. The agent reaches the broker
through the fault proxy (``uplink_port``), everyone else directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

EDGE_ID = "soak-gw"
EDGE_TOKEN = "soak-edge-token-0001"
READ_TOKEN = "soak-reader-token-0001"
GROUP = "soak"
TOPICS = {"telemetry": 8, "alarms": 2}
#: the device-sim kind each cloud topic holds
KIND_OF = {"telemetry": "telemetry", "alarms": "alarm"}


@dataclass(frozen=True, slots=True)
class Ports:
    mqtt: int
    cloud: int
    uplink: int
    status: int
    mirror: int


def mosquitto_conf(work: Path, port: int) -> Path:
    """Persistent, unlimited queues: Mosquitto holds readings while the agent is down.
    Restarted with SIGTERM, which saves its database (a SIGKILL could lose messages it
    acknowledged since its last autosave: Mosquitto's own window, not the pipeline's)."""
    data = work / "mosquitto"
    data.mkdir(parents=True, exist_ok=True)
    path = work / "mosquitto.conf"
    path.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {data}/\nmax_queued_messages 0\nmax_inflight_messages 1000\n"
        "max_connections -1\nlog_type error\nlog_type warning\n"
        + ("user root\n" if os.geteuid() == 0 else ""))
    return path


def _tokens() -> str:
    return (f'[[tokens]]\ntoken = "{EDGE_TOKEN}"\nedge_id = "{EDGE_ID}"\n'
            'permissions = ["ingest"]\n\n'
            f'[[tokens]]\ntoken = "{READ_TOKEN}"\nedge_id = "*"\npermissions = ["read"]\n')


def _topics() -> str:
    return "".join(f"[topics.{t}]\npartitions = {n}\n\n" for t, n in TOPICS.items())


def cloud_toml(work: Path, port: int, name: str = "cloud", storage: str = "") -> Path:
    """One broker node's file: ``name`` is its data directory and file stem; ``storage``
    the ``[storage]`` section of cluster mode (empty: the local partition store)."""
    path = work / f"{name}.toml"
    path.write_text(f'data_dir = "{work / name}"\nlisten = "127.0.0.1:{port}"\n\n'
                    + _topics() + _tokens() + storage)
    return path


def mirror_toml(work: Path, ports: Ports) -> Path:
    """Both topics into SQLite (one file each), run by ``cloud-broker mirror``."""
    mirrors = "".join(
        f'[mirrors.{t}]\ntopic = "{t}"\ntarget = "sql"\npath = "archive-{t}.db"\n'
        f'table = "records"\njson_columns = false\nrun = "standalone"\n'
        "batch_records = 2000\nmax_backoff_s = 2\n\n" for t in TOPICS)
    path = work / "mirror.toml"
    path.write_text(f'data_dir = "{work / "mirror"}"\nlisten = "127.0.0.1:{ports.cloud}"\n\n'
                    + _topics() + mirrors + _tokens())
    return path


def edge_toml(work: Path, ports: Ports, data_dir: Path,
              uplink_ports: tuple[int, ...] = ()) -> Path:
    """Both streams require the sequence field, so a malformed reading is dead-lettered
    (without it the agent would keep it as opaque bytes and forward it). In cluster mode
    ``uplink_ports`` lists a fault proxy per broker node (the agent fails over)."""
    urls = ", ".join(f'"http://127.0.0.1:{p}"' for p in uplink_ports or (ports.uplink,))
    path = work / "edge.toml"
    streams = "".join(
        f'[[streams]]\nname = "{name}"\ntopics = ["devices/+/{sub}"]\npriority = {prio}\n'
        f'cloud_topic = "{name}"\ndevice_key = "topic:devices/{{device}}/{sub}"\n'
        "require_sequence = true\nsegment_bytes = 4194304\n\n"
        for name, sub, prio in (("alarms", "alarm", 0), ("telemetry", "telemetry", 5)))
    path.write_text(
        f'edge_id = "{EDGE_ID}"\ndata_dir = "{data_dir}"\n\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {ports.mqtt}\nprotocol = "5"\n\n'
        f'[uplink]\nurl = [{urls}]\ntoken = "{EDGE_TOKEN}"\n'
        "retry_max_s = 1.0\n\n"
        f'[status]\nlisten = "127.0.0.1:{ports.status}"\nstuck_after_s = 120\n\n' + streams)
    return path
