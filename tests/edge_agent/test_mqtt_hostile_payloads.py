"""Hostile readings through real Mosquitto and the real agent process (G7, G8).

Before: ``mosquitto_pub -q 1 -t devices/x/telemetry -m '{"seq":1,"ts":Infinity}'`` raised
in ``int(ts)``, ended the stream's ingest task for good, and every later reading of the
stream waited unacknowledged in Mosquitto (redelivered into the same crash after a
restart). Now the bad reading is dead-lettered with its reason and PUBACKed, and the
readings after it are stored and acknowledged.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import paho.mqtt.client as mqtt
from edge_agent_testing import (
    Publisher,
    agent_server,
    get_status,
    read_stream,
    seqs_by_device,
    stream_status,
    write_config,
)
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from test_payload_fuzz import payloads

from tests.helpers import Server, find_binary, mosquitto_server, wait_for

BAD = ['{"seq":1,"ts":Infinity}', '{"seq":2,"ts":NaN}', '{"seq":3,"ts":1e999}',
       '{"seq":4,"ts":-Infinity}', '{"seq":5,"boot":1e999}']


def dead_letters(port: int) -> dict[str, int]:
    doc = get_status(port) or {}
    return doc.get("dead_letter", {}).get("by_stream", {}).get("telemetry", {})


def test_mosquitto_pub_infinity_is_dead_lettered_and_the_stream_keeps_flowing(
        tmp_path: Path, mosquitto: Server) -> None:
    cfg, status_port = write_config(tmp_path, mosquitto.port)
    agent = agent_server(cfg, status_port, tmp_path / "agent.out").start()
    good = Publisher(mosquitto.port, "good")
    try:
        for i, body in enumerate(BAD):
            subprocess.run([find_binary("mosquitto_pub"), "-h", "127.0.0.1", "-p",
                            str(mosquitto.port), "-q", "1", "-t", "devices/x/telemetry",
                            "-i", f"bad-{i}", "-m", body], check=True, timeout=10)
        for seq in range(20):
            good.publish(seq)
        wait_for(lambda: stream_status(status_port)["appended"] == 20, 20,
                 message="the good readings after the bad ones stored")
        wait_for(lambda: stream_status(status_port)["pubacks"] == len(BAD) + 20, 10,
                 message="a PUBACK for every reading, the bad ones too")
        wait_for(lambda: dead_letters(status_port).get("bad_value") == len(BAD), 10,
                 message="each bad reading dead-lettered as bad_value")
        assert stream_status(status_port)["internal_errors"] == 0
        assert agent.running
    finally:
        good.close()
        agent.stop()
    assert seqs_by_device(read_stream(tmp_path / "data")) == {"good": list(range(20))}
    assert "Traceback" not in (tmp_path / "agent.out").read_text()


@settings(max_examples=1, deadline=None, phases=[Phase.generate], derandomize=True)
@given(corpus=st.lists(payloads(), min_size=150, max_size=150))
def test_fuzzed_payloads_through_mosquitto_never_stop_the_stream(
        tmp_path_factory: object, corpus: list[tuple[str, bytes]]) -> None:
    """One agent, 150 arbitrary JSON/CBOR/garbage payloads at QoS 0 and 1 between good
    readings: all good readings stored in order, every QoS 1 message acknowledged."""
    tmp = tmp_path_factory.mktemp("fuzz")  # type: ignore[attr-defined]
    broker = mosquitto_server(tmp / "mosquitto").start()  # not a fixture: @given runs it
    port = broker.port
    cfg, status_port = write_config(tmp, port, extra='[ingest]\nmax_payload_bytes = 4096\n')
    agent = agent_server(cfg, status_port, tmp / "agent.out").start()
    good = Publisher(port, "good")
    fuzz = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fuzz")
    fuzz.connect("127.0.0.1", port)
    fuzz.loop_start()
    try:
        qos1 = 0
        for i, (_fmt, raw) in enumerate(corpus):
            good.publish(i)
            qos = i % 2
            qos1 += qos
            fuzz.publish("devices/fuzz/telemetry", raw, qos=qos).wait_for_publish(10)
        good.publish(len(corpus))
        wait_for(lambda: good.all_acked(len(corpus) + 1), 30, message="good readings acked")
        wait_for(lambda: stream_status(status_port)["pubacks"] == len(corpus) + 1 + qos1, 20,
                 message="every QoS 1 message acknowledged")
        s = stream_status(status_port)
        assert s["internal_errors"] == 0 and agent.running
        assert s["received"] == s["appended"] + s["deduplicated"] + s["dead_lettered"]
    finally:
        fuzz.loop_stop()
        fuzz.disconnect()
        good.close()
        agent.stop()
        broker.kill()
    seqs = seqs_by_device(read_stream(tmp / "data"))
    assert seqs["good"] == list(range(len(corpus) + 1))
    assert "Traceback" not in (tmp / "agent.out").read_text()
