"""Edge processing through the real agent: devices publish over Mosquitto, the agent
(a subprocess) windows and routes on its log and is SIGKILLed while windows are open;
the cloud broker (a subprocess) receives every window and every alarm exactly once, with
the values an uninterrupted run over the same raw log derives. Local consumers read the
derived streams by offset on the status listener, long polls woken by new data."""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from edge_agent_testing import (
    Publisher,
    agent_server,
    get_status,
    http_get,
    read_stream,
    stream_status,
    write_config,
)
from transform_testing import derived, run_to_end

from tests.cloud_broker.consume_testing import read_all
from tests.helpers import Server, broker_server, wait_for

DEVICES = 3
TRANSFORMS = [
    {"type": "route", "expr": "alarm", "to": "alarms", "priority": 0},
    {"type": "window", "size_s": 1, "lateness_s": 2, "fields": ["v"],
     "aggregates": ["count", "sum", "min", "max"]},
]
STREAMS = """
[[streams]]
name = "telemetry"
topics = ["devices/+/telemetry"]
device_key = "topic:devices/{device}/telemetry"
forward = false
# The check compares with an uninterrupted run over the whole raw log, so the log must
# never drop a segment: with forward = false a rolled segment is deleted once the
# transforms took it, and a long run (sixty kills under load: ~106k readings) filled
# the default 16 MiB.
segment_bytes = 268435456
[[streams.transforms]]
type = "route"
expr = "alarm"
to = "alarms"
priority = 0
[[streams.transforms]]
type = "window"
size_s = 1
lateness_s = 2
fields = ["v"]
aggregates = ["count", "sum", "min", "max"]
"""


def reading(n: int) -> dict[str, Any]:
    """Event time 20 ms per reading: windows of 1 s close every ~50 readings. Now and
    then ``v`` is not a number: the window passes that reading on unchanged (unfit)."""
    v: Any = "n/a" if n % 97 == 5 else n % 13
    return {"seq": n, "ts": 1_700_000_000_000 + n * 20, "v": v, "alarm": n % 150 == 0}


class WindowFeeder:
    def __init__(self, pubs: list[Publisher]) -> None:
        self.pubs, self.sent = pubs, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for p in self.pubs:
                p.publish(self.sent, reading(self.sent))
            self.sent += 1
            time.sleep(0.003)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(10)
        return self.sent


def caught_up(port: int, raw_end: int) -> bool:
    doc = get_status(port)
    if not doc or not doc.get("transforms"):
        return False
    ok = doc["transforms"][0]["input_offset"] >= raw_end
    return ok and all(d["acked_offset"] == d["end_offset"] - 1 for d in doc["derived_streams"])


def long_poll(port: int, path: str, out: list[Any]) -> None:
    t0 = time.monotonic()
    r = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=30)
    out.append((r, time.monotonic() - t0))


def run_with_kills(tmp_path: Path, mosquitto: Server, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    broker = broker_server(tmp_path / "broker", topics={"telemetry-edge": 2, "alarms": 1})
    broker.start()
    cfg, port = write_config(tmp_path, mosquitto.port, cloud_port=broker.port, streams=STREAMS,
                             extra="[ingest]\ncommit_interval_ms = 5.0\n")
    agent = agent_server(cfg, port, tmp_path / "agent.out").start()
    pubs = [Publisher(mosquitto.port, f"dev{i}") for i in range(DEVICES)]
    try:
        feeder = WindowFeeder(pubs)
        try:
            for _ in range(kills):
                time.sleep(rng.uniform(0.2, 0.6))
                agent.kill()  # SIGKILL with windows open: nothing flushed or checkpointed
                agent.start()
            time.sleep(0.3)
        finally:
            total = feeder.stop()
        for p in pubs:
            wait_for(lambda p=p: p.all_acked(total), 60, message=f"{p.device} PUBACKs")
        raw_end = DEVICES * total
        wait_for(lambda: stream_status(port)["end_offset"] >= raw_end, 60, interval=0.2,
                 message="the agent to store every reading")
        wait_for(lambda: caught_up(port, raw_end), 60, interval=0.2,
                 message="the transforms and the uplink to catch up")
        check_local_consumers(port, pubs[0], total)
        doc = get_status(port)
        assert doc is not None
        assert doc["transforms"][0]["rederive_mismatch"] == 0
        assert doc["transforms"][0]["ratio"] > 1
        window = doc["transforms"][0]["transforms"][1]  # counters since this start
        assert window["name"] == "1:window" and window["readings_in"] > 0
        metrics = http_get(port, "/metrics").text
        assert 'edge_transform_windows_total{stream="telemetry",transform="1:window"}' in metrics
        assert 'edge_transform_internal_errors_total{stream="telemetry"} 0.0' in metrics
    finally:
        for p in pubs:
            p.close()
        agent.stop()
    cloud = {t: [r for recs in read_all(f"http://127.0.0.1:{broker.port}", t, n).values()
                 for r in recs] for t, n in (("telemetry-edge", 2), ("alarms", 1))}
    broker.stop()
    # the uninterrupted run: the same transforms over a copy of the raw log the agent kept
    ref = tmp_path / "ref"
    shutil.copytree(tmp_path / "data" / "streams" / "telemetry", ref / "streams" / "telemetry",
                    ignore=shutil.ignore_patterns("transforms.json"))
    run_to_end(ref, TRANSFORMS)
    for topic in ("telemetry-edge", "alarms"):
        want = sorted((r[0], r[1]) for r in derived(ref, topic))
        got = sorted((r.key, r.value) for r in cloud[topic])
        assert len(got) == len(want), f"{topic}: {len(got)} in the cloud, {len(want)} derived"
        assert got == want, f"{topic}: the cloud's records differ from an uninterrupted run"
    alarms = [json.loads(r.value) for r in cloud["alarms"]]
    published = DEVICES * len([n for n in range(total) if reading(n)["alarm"]])
    assert len(alarms) == published + 1  # and the one the local consumer waited for
    out = [json.loads(r[1]) for r in derived(ref, "telemetry-edge")]
    assert len([w for w in out if "end" in w]) >= DEVICES * (total // 50 - 4)
    unfit = [w for w in out if "end" not in w]  # passed on as they came, in the cloud too
    # every non-number the raw log still holds (its oldest segments may be gone once
    # transformed and sent), except alarms, which the route took first
    raw = [json.loads(r.value) for r in read_stream(ref, "telemetry")]
    want_unfit = [r for r in raw if r["v"] == "n/a" and not r["alarm"]]
    assert want_unfit and {w["v"] for w in unfit} == {"n/a"}
    assert sorted(w["seq"] for w in unfit) == sorted(r["seq"] for r in want_unfit)
    assert "Traceback" not in (tmp_path / "agent.out").read_text()


def check_local_consumers(port: int, pub: Publisher, total: int) -> None:
    r = http_get(port, "/v1/streams/alarms/records?offset=0&max_records=1000")
    assert r.status_code == 200
    body = r.json()
    assert [json.loads(x["value"])["seq"] for x in body["records"]][:3] == [0, 0, 0]
    assert all(x["headers"]["src"] for x in body["records"])
    end = body["durable_offset"]
    got: list[Any] = []
    t = threading.Thread(target=long_poll,
                         args=(port, f"/v1/streams/alarms/records?offset={end}&wait_ms=20000",
                               got))
    t.start()
    time.sleep(0.2)  # the poll is waiting (no data at `end`); the alarm below wakes it
    n = (total // 150 + 1) * 150
    pub.publish(n, reading(n))
    t.join(25)
    resp, took = got[0]
    assert resp.status_code == 200 and took < 15
    assert [json.loads(x["value"])["seq"] for x in resp.json()["records"]] == [n]
    assert http_get(port, "/v1/streams/nope/records?offset=0").status_code == 404
    assert http_get(port, "/v1/streams/alarms/records?offset=-1").status_code == 400
    r = http_get(port, "/v1/streams/telemetry/records?offset=0&max_records=5")
    assert r.status_code == 200, f"the raw log lost its start (see STREAMS): {r.text}"
    raw = r.json()
    assert [json.loads(x["value"])["seq"] for x in raw["records"]] == [0, 0, 0, 1, 1]


def test_agent_killed_twenty_times_delivers_every_window_once(
        tmp_path: Path, mosquitto: Server) -> None:
    run_with_kills(tmp_path, mosquitto, kills=20, seed=20)


@pytest.mark.slow
def test_agent_killed_sixty_times_delivers_every_window_once(
        tmp_path: Path, mosquitto: Server) -> None:
    run_with_kills(tmp_path, mosquitto, kills=60, seed=60)
