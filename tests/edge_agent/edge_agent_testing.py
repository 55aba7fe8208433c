"""Helpers for the edge agent's tests: configs, the agent as a real subprocess, QoS 1
publishers that track PUBACKs, and reading what the agent stored.

Imported by basename (``from edge_agent_testing import ...``) like the other suites'
helper modules.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt

from shared_log import Log
from tests.helpers import Server, free_port


def write_config(tmp: Path, mqtt_port: int, *, cloud_port: int | None = None,
                 status_port: int | None = None, streams: str | None = None,
                 extra: str = "", client_id: str = "agent") -> tuple[Path, int]:
    """An edge.toml in ``tmp``; returns (path, status port)."""
    status_port = status_port or free_port()
    cloud_port = cloud_port or free_port()  # nothing listens there: the cloud is down
    streams = streams if streams is not None else """
[[streams]]
name = "telemetry"
topics = ["devices/+/telemetry"]
device_key = "topic:devices/{device}/telemetry"
"""
    path = tmp / "edge.toml"
    path.write_text(f"""
edge_id = "gw-test"
data_dir = "{tmp / 'data'}"
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
client_id = "{client_id}"
keepalive_s = 5
reconnect_max_s = 0.5
[uplink]
url = "http://127.0.0.1:{cloud_port}"
retry_max_s = 0.5
[status]
listen = "127.0.0.1:{status_port}"
{extra}
{streams}
""")
    return path, status_port


# One shared client: httpx.get() builds a new client (and SSL context) per call, which
# costs enough CPU under the GIL to starve the publisher threads while a test polls.
_HTTP = httpx.Client(timeout=2)


def http_get(port: int, path: str) -> httpx.Response:
    return _HTTP.get(f"http://127.0.0.1:{port}{path}")


def get_status(port: int) -> dict[str, Any] | None:
    try:
        return http_get(port, "/status").json()
    except (httpx.HTTPError, ValueError):
        return None


def agent_ready(port: int) -> bool:
    doc = get_status(port)
    return bool(doc and doc["mqtt"] and all(m["subscribed"] for m in doc["mqtt"]))


def agent_server(config: Path, status_port: int, log_path: Path) -> Server:
    """``python -m edge_agent.cli run`` as a Server: ready once every session subscribed."""
    return Server([sys.executable, "-m", "edge_agent.cli", "run", "--config", str(config)],
                  status_port, log_path, ready=lambda: agent_ready(status_port),
                  ready_timeout=60)


def stream_status(port: int, name: str = "telemetry") -> dict[str, Any]:
    doc = get_status(port)
    assert doc is not None, "agent status not reachable"
    return next(s for s in doc["streams"] if s["name"] == name)


def read_stream(data_dir: Path, name: str = "telemetry") -> list[Any]:
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


class Publisher:
    """A device: publishes QoS 1 readings with sequence numbers, remembers PUBACKs.

    paho keeps unacknowledged QoS 1 messages and resends them after a reconnect, so a
    reading handed to ``publish`` is retried until Mosquitto acknowledges it. Like a real
    device it keeps its readings in order: no in-flight limit (with one, paho lets a new
    publish overtake readings queued behind the limit after a reconnect) and no new
    reading while disconnected. The agent's dedup is a per-device high-water mark, which
    relies on that order (MQTT's own ordering guarantee).
    """

    def __init__(self, port: int, device: str, topic: str | None = None) -> None:
        self.device = device
        self.topic = topic or f"devices/{device}/telemetry"
        self.acked: dict[int, float] = {}  # seq -> time.time() of the PUBACK
        self._mids: dict[int, int] = {}
        self._early: set[int] = set()
        self._lock = threading.Lock()
        c = self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                      client_id=f"pub-{device}", protocol=mqtt.MQTTv311,
                                      clean_session=False)
        c.max_inflight_messages_set(0)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(0.05, 0.5)
        c.on_publish = self._on_publish
        c.connect("127.0.0.1", port, keepalive=5)
        c.loop_start()

    # The lock is never held while calling into paho: paho calls on_publish with its own
    # mutex held, so holding ours around publish() would deadlock. A PUBACK can arrive
    # before publish() returns its mid, hence ``_early``.
    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        with self._lock:
            seq = self._mids.pop(mid, None)
            if seq is None:
                self._early.add(mid)
            else:
                self.acked[seq] = time.time()

    def publish(self, seq: int, payload: dict[str, Any] | None = None) -> None:
        body = json.dumps(payload if payload is not None else {"seq": seq, "v": seq * 0.5})
        deadline = time.monotonic() + 30
        while not self.client.is_connected():
            assert time.monotonic() < deadline, "the publisher did not (re)connect in 30 s"
            time.sleep(0.005)
        info = self.client.publish(self.topic, body, qos=1)
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
                self.acked[seq] = time.time()
            else:
                self._mids[info.mid] = seq

    def all_acked(self, n: int) -> bool:
        return len(self.acked) >= n

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def mosquitto_durable(tmp: Path, port: int | None = None) -> Server:
    """Mosquitto with persistence saved after every change (autosave_on_changes).

    ``user root``: started as root, Mosquitto otherwise drops to the ``mosquitto`` user
    and cannot write its database in a root-owned temp dir ("Permission denied"), which
    silently turns persistence off. As a normal user the option is ignored.
    """
    from tests.helpers import find_binary

    port = port or free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\nuser root\n"
        f"persistence_location {tmp}/\nautosave_interval 1\nautosave_on_changes true\n"
        "max_queued_messages 0\nmax_inflight_messages 0\n"
        "log_type error\nlog_type warning\n")
    return Server([find_binary("mosquitto"), "-c", str(conf)], port, tmp / "mosquitto.out")


class Feeder:
    """A thread publishing seq 0, 1, 2... for every publisher until ``stop()``;
    ``sent`` is how many sequence numbers each device has been given."""

    def __init__(self, pubs: list[Publisher], pause_s: float) -> None:
        self.pubs = pubs
        self.pause_s = pause_s
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for p in self.pubs:
                p.publish(self.sent)
            self.sent += 1
            time.sleep(self.pause_s)

    def start(self) -> Feeder:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(10)
        return self.sent



def check_every_reading_once(pubs: list[Publisher], total: int, status_port: int,
                             agent: Server, data_dir: Path, store_timeout: float = 120) -> None:
    """After a feed of ``total`` readings per publisher (through kills of ``agent``): every
    reading PUBACKed by Mosquitto and stored by the agent exactly once per device, in order;
    then the publishers and the agent are stopped."""
    from tests.helpers import wait_for

    try:
        for p in pubs:
            wait_for(lambda p=p: p.all_acked(total), 60, message=f"{p.device} PUBACKs")
        wait_for(lambda: stream_status(status_port)["end_offset"] >= len(pubs) * total,
                 store_timeout, interval=0.2, message="the agent to store every reading")
    finally:
        for p in pubs:
            p.close()
        agent.stop()
    seqs = seqs_by_device(read_stream(data_dir))
    assert sorted(seqs) == sorted(p.device for p in pubs)
    for device, got in seqs.items():
        assert got == list(range(total)), (
            f"{device}: {len(got)} readings for {total} sent; first mismatch at "
            f"{next((i for i, s in enumerate(got) if s != i), None)}")
