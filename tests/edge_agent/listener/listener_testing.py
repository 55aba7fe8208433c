"""Helpers for the MQTT listener's tests: an agent subprocess serving devices itself,
password files from ``mosquitto_passwd``, certificates from ``openssl``, and reading what
the agent stored.

Imported by basename (``from listener_testing import ...``) like the other suites' helpers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from shared_log import Log
from tests.helpers import Server, find_binary, free_port, port_open

STREAMS = """
[[streams]]
name = "telemetry"
topics = ["devices/+/telemetry"]
device_key = "topic:devices/{device}/telemetry"
"""

_HTTP = httpx.Client(timeout=2)


ANONYMOUS = "allow_anonymous = true\nconnect_timeout_s = 2"


def write_config(tmp: Path, *, listener: str = ANONYMOUS,
                 extra: str = "", streams: str = STREAMS,
                 mqtt_port: int | None = None) -> tuple[Path, int, int]:
    """An edge.toml with an ``[mqtt_listener]``; returns (path, status port, MQTT port).
    The cloud is down (nothing listens at the uplink): readings stay in the local log."""
    status_port, mqtt_port = free_port(), mqtt_port or free_port()
    path = tmp / "edge.toml"
    path.write_text(f"""
edge_id = "gw-test"
data_dir = "{tmp / 'data'}"
[mqtt_listener]
listen = "127.0.0.1:{mqtt_port}"
{listener}
[uplink]
url = "http://127.0.0.1:{free_port()}"
retry_max_s = 0.5
[status]
listen = "127.0.0.1:{status_port}"
{extra}
{streams}
""")
    return path, status_port, mqtt_port


def status(port: int) -> dict[str, Any] | None:
    try:
        return _HTTP.get(f"http://127.0.0.1:{port}/status").json()
    except (httpx.HTTPError, ValueError):
        return None


def listener_status(port: int) -> dict[str, Any]:
    doc = status(port)
    assert doc is not None and doc["mqtt_listener"] is not None, "no listener status"
    return doc["mqtt_listener"]


def agent(config: Path, status_port: int, mqtt_port: int, log_path: Path) -> Server:
    """``edge-agent run`` as a Server, ready once its listener accepts connections."""
    def ready() -> bool:
        doc = status(status_port)
        return bool(doc and (doc.get("mqtt_listener") or {}).get("serving")
                    and port_open(mqtt_port))

    return Server([sys.executable, "-m", "edge_agent.cli", "run", "--config", str(config)],
                  mqtt_port, log_path, ready=ready, ready_timeout=60)


def stored(data_dir: Path, name: str = "telemetry") -> list[Any]:
    """Every record of a stream's log (opened read-only)."""
    d = data_dir / "streams" / name
    if not d.exists():
        return []
    with Log(d, read_only=True) as lg:
        out, pos = [], lg.start_offset
        while pos < lg.end_offset:
            res = lg.fetch(pos, max_records=10_000, max_bytes=16 << 20)
            out.extend(res.records)
            pos = res.next_offset
        return out


def seqs_by_device(records: list[Any]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for r in records:
        seq = dict(r.headers).get("seq")
        if seq is not None:
            out.setdefault(r.key.decode(), []).append(int(seq))
    return out


def passwd_file(tmp: Path, users: dict[str, str]) -> Path:
    """A password file written by ``mosquitto_passwd`` (the format the listener reads)."""
    path = tmp / "passwd"
    tool = find_binary("mosquitto_passwd")
    for i, (user, password) in enumerate(users.items()):
        args = [tool, *(["-c"] if i == 0 else []), "-b", str(path), user, password]
        subprocess.run(args, check=True, capture_output=True)
    return path


def certificates(tmp: Path, clients: list[str]) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and one client certificate per CN
    (``openssl``). Keys: ca, server, server_key, <cn>, <cn>_key, and rogue_ca."""
    ssl_ = find_binary("openssl")
    out: dict[str, Path] = {}

    def run(*args: str) -> None:
        subprocess.run([ssl_, *args], check=True, capture_output=True)

    for ca in ("ca", "rogue_ca"):
        out[ca], key = tmp / f"{ca}.pem", tmp / f"{ca}.key"
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            f"/CN=test {ca}", "-keyout", str(key), "-out", str(out[ca]))
        out[f"{ca}_key"] = key
    ext = tmp / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, cn, ca in [("server", "localhost", "ca"), *((c, c, "ca") for c in clients),
                         ("rogue", "rogue", "rogue_ca")]:
        key, csr, crt = tmp / f"{name}.key", tmp / f"{name}.csr", tmp / f"{name}.pem"
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout",
            str(key), "-out", str(csr))
        run("x509", "-req", "-in", str(csr), "-CA", str(out[ca]), "-CAkey",
            str(out[f"{ca}_key"]), "-CAcreateserial", "-days", "2", "-out", str(crt),
            *(["-extfile", str(ext)] if name == "server" else []))
        out[name], out[f"{name}_key"] = crt, key
    return out


def durable_records(status_port: int, name: str = "telemetry") -> list[dict[str, Any]]:
    """Every durable record of a stream, through the agent's local read API."""
    out: list[dict[str, Any]] = []
    offset = 0
    while True:
        body = _HTTP.get(f"http://127.0.0.1:{status_port}/v1/streams/{name}/records",
                         params={"offset": offset, "max_records": 1000}).json()
        out.extend(body["records"])
        if body["next_offset"] >= body["durable_offset"]:
            return out
        offset = body["next_offset"]


def readings_of(status_port: int, device: str) -> list[int]:
    """The sequence numbers stored (durably) for ``device``, in log order."""
    return [int(r["headers"]["seq"]) for r in durable_records(status_port)
            if r["key"] == device and "seq" in r["headers"]]
