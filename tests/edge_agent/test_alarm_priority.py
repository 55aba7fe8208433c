"""Priority: with 500 k telemetry readings buffered and a slow cloud, an alarm published
over MQTT reaches the cloud within one batch round, long before the backlog drains.

The agent runs in-process (so the uplink can be wrapped to be slow and to record the
order of sends) against a real cloud broker subprocess and a real Mosquitto. "One batch
round" is asserted by counts: after the alarm was appended to its log, at most
``uplink.max_in_flight`` telemetry batches were started before the alarm's batch.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest

from edge_agent.agent import Agent
from edge_agent.config import load_config
from edge_agent.outgoing import Outgoing
from edge_agent.streams import open_stream
from edge_agent.uplink_http import HttpUplink
from shared_log import Log, Record
from tests.helpers import Server, broker_server, find_binary, until
from uplink import Ack, Refusal

BACKLOG = 500_000
IN_FLIGHT = 2


class SlowRecordingUplink:
    """Delays every send (a slow, metered link) and records the order of send starts."""

    def __init__(self, inner: HttpUplink, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.starts: list[str] = []

    async def send(self, topic: str, batch: Outgoing) -> Ack | Refusal:
        self.starts.append(topic)
        await asyncio.sleep(self.delay_s)
        return await self.inner.send(topic, batch)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.slow
def test_alarm_overtakes_a_large_telemetry_backlog(tmp_path: Path, mosquitto: Server) -> None:
    broker = broker_server(tmp_path / "broker", topics={"telemetry": 2, "alarms": 1}).start()
    try:
        cfg_path = tmp_path / "edge.toml"
        cfg_path.write_text(f"""
edge_id = "gw-prio"
data_dir = "{tmp_path / 'data'}"
[mqtt]
port = {mosquitto.port}
reconnect_max_s = 0.5
[uplink]
url = "http://127.0.0.1:{broker.port}"
max_in_flight = {IN_FLIGHT}
max_batch_records = 2000
compression = "none"
[status]
listen = "127.0.0.1:0"
[[streams]]
name = "alarms"
topics = ["devices/+/alarm"]
priority = 0
device_key = "topic:devices/{{device}}/alarm"
[[streams]]
name = "telemetry"
topics = ["devices/+/telemetry"]
priority = 5
device_key = "topic:devices/{{device}}/telemetry"
""")
        cfg = load_config(cfg_path)
        store = open_stream(cfg, cfg.stream("telemetry"))  # buffer the backlog directly
        payload = b'{"seq":0,"temp":21.5}'
        for base in range(0, BACKLOG, 10_000):
            store.log.append([Record(b"dev%d" % (i % 100), payload, 1_700_000_000_000)
                              for i in range(base, base + 10_000)])
        store.log.close()
        asyncio.run(_run(cfg, broker, mosquitto.port))
        with Log(tmp_path / "broker" / "data" / "topics" / "alarms" / "0", read_only=True) as lg:
            recs = lg.read(0)
        assert [r.value for r in recs] == [b'{"alarm":"smoke","seq":1}']
    finally:
        broker.stop()


async def _run(cfg, broker: Server, mqtt_port: int) -> None:  # type: ignore[no-untyped-def]
    uplink = SlowRecordingUplink(HttpUplink(cfg.uplink.url), 0.25)
    agent = Agent(cfg, uplink=uplink)
    await agent.start()
    try:
        alarms = next(s for s in agent.streams if s.store.config.name == "alarms")
        telemetry = next(s for s in agent.streams if s.store.config.name == "telemetry")
        await until(lambda: all(m.subscribed for m in agent.sessions)
                    and len(uplink.starts) >= 4, 60, "subscriptions and the first sends",
                    interval=0.05)
        marks: list[int] = []
        notify = alarms.ingest.on_appended

        def on_alarm_appended() -> None:
            marks.append(len(uplink.starts))  # sends started before the alarm was in its log
            notify()

        alarms.ingest.on_appended = on_alarm_appended
        subprocess.run([find_binary("mosquitto_pub"), "-p", str(mqtt_port), "-q", "1",
                        "-t", "devices/boiler1/alarm", "-m", '{"alarm":"smoke","seq":1}'],
                       check=True, timeout=30)
        deadline = time.monotonic() + 60
        while alarms.store.acked_offset < 0:
            assert time.monotonic() < deadline, "the alarm never reached the cloud"
            await asyncio.sleep(0.02)
        alarm_start = uplink.starts.index("alarms")
        telemetry_between = uplink.starts[marks[0]:alarm_start].count("telemetry")
        assert telemetry_between <= IN_FLIGHT, uplink.starts[marks[0]:alarm_start + 1]
        # the backlog is nowhere near drained: the alarm did not wait for it
        assert telemetry.store.acked_offset < BACKLOG // 10
        assert telemetry.store.backlog_records > BACKLOG * 9 // 10
    finally:
        await agent.stop()
