"""Full policies: ``reject_new`` turns a full log into MQTT back-pressure (readings stay
unacknowledged in Mosquitto, /healthz says why) and ingest resumes by itself once the
cloud's acks free segments; ``drop_oldest`` keeps acknowledging and counts the drops; a
real ENOSPC (a tiny tmpfs) is back-pressure for reject_new streams, while drop_oldest
streams on the same full disk drop their own oldest data and count exactly what the
cloud never got. No crash, nothing acknowledged lost.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from edge_agent_testing import (
    Publisher,
    agent_server,
    http_get,
    read_stream,
    seqs_by_device,
    stream_status,
    write_config,
)

from tests.helpers import Server, broker_server, find_binary, free_port, wait_for

CAPPED = """
[[streams]]
name = "telemetry"
topics = ["devices/+/telemetry"]
device_key = "topic:devices/{{device}}/telemetry"
segment_bytes = 4096
{cap}
full_policy = "{policy}"
"""
FAST = "[ingest]\ndedup_checkpoint_s = 0.2\nbackpressure_retry_ms = 100\n"


def publish_until(pubs: list[Publisher], n: int) -> None:
    for seq in range(n):
        for p in pubs:
            p.publish(seq)


@pytest.mark.slow
def test_reject_new_backpressure_then_recovery(tmp_path: Path, mosquitto: Server) -> None:
    cloud_port = free_port()
    cfg, status_port = write_config(
        tmp_path, mosquitto.port, cloud_port=cloud_port, extra=FAST,
        streams=CAPPED.format(cap="max_bytes = 16384", policy="reject_new"))
    agent = agent_server(cfg, status_port, tmp_path / "agent.out").start()
    pubs = [Publisher(mosquitto.port, f"d{i}") for i in range(2)]
    n = 400  # ~3x what fits in 16 KiB
    broker = None
    try:
        publish_until(pubs, n)
        wait_for(lambda: stream_status(status_port)["write_error"], 20,
                 message="the log to fill up")
        wait_for(lambda: http_get(status_port, "/healthz").status_code == 503, 10)
        body = http_get(status_port, "/healthz").json()
        assert any("cannot be written" in p and "LogFull" in p for p in body["problems"])
        st = stream_status(status_port)
        assert st["held"] > 0 and st["pubacks"] < 2 * n
        stored_while_full = st["end_offset"]
        # the cloud comes up: acks free segments, the held readings go in
        broker = broker_server(tmp_path / "broker", port=cloud_port,
                               topics={"telemetry": 1}).start()
        wait_for(lambda: stream_status(status_port)["end_offset"] >= 2 * n, 90, interval=0.2,
                 message="ingest to resume and store everything")
        assert stored_while_full < 2 * n
        wait_for(lambda: http_get(status_port, "/healthz").status_code == 200, 30)
        st = stream_status(status_port)
        assert st["drops"] == {} and st["write_error"] == ""
    finally:
        for p in pubs:
            p.close()
        agent.stop()
        if broker is not None:
            broker.stop()
    # every reading exactly once, in order, across the log and what the cloud already has
    cloud = cloud_seqs(tmp_path / "broker" / "data")
    local = seqs_by_device(read_stream(tmp_path / "data"))
    for p in pubs:
        merged = sorted(set(cloud.get(p.device, [])) | set(local.get(p.device, [])))
        assert merged == list(range(n)), p.device


def cloud_seqs(data: Path) -> dict[str, list[int]]:
    from shared_log import Log
    out: dict[str, list[int]] = {}
    for part in sorted((data / "topics" / "telemetry").iterdir()):
        if part.is_dir():
            with Log(part, read_only=True) as lg:
                for r in lg.read(lg.start_offset, max_records=100_000, max_bytes=64 << 20):
                    out.setdefault(r.key.decode(), []).append(int(dict(r.headers)["seq"]))
    return out


@pytest.mark.slow
def test_drop_oldest_keeps_acknowledging_and_counts(tmp_path: Path, mosquitto: Server) -> None:
    cfg, status_port = write_config(
        tmp_path, mosquitto.port, extra=FAST,
        streams=CAPPED.format(cap="max_bytes = 16384", policy="drop_oldest"))
    agent = agent_server(cfg, status_port, tmp_path / "agent.out").start()
    pubs = [Publisher(mosquitto.port, "d0")]
    n = 800
    try:
        publish_until(pubs, n)
        wait_for(lambda: stream_status(status_port)["pubacks"] >= n, 30,
                 message="every reading acknowledged despite the cap")
        st = stream_status(status_port)
        assert st["drops"].get("drop_oldest", 0) > 0
        assert st["write_error"] == ""
        stored = seqs_by_device(read_stream(tmp_path / "data"))["d0"]
        assert stored == list(range(n - len(stored), n))  # the newest survive, in order
        assert st["appended"] == n
        # The cloud is down: one batch is on the wire, retried. Its deleted records are
        # lost only if it is never acked, so they are counted apart until then.
        assert st["full_policy_deleted"] == n - len(stored)
        assert st["drops"]["drop_oldest"] + st["drop_oldest_in_flight"] == n - len(stored)
    finally:
        pubs[0].close()
        agent.stop()


@contextlib.contextmanager
def tiny_fs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.mark.slow
def test_real_disk_full_is_backpressure_too(tmp_path: Path, mosquitto: Server) -> None:
    cloud_port = free_port()
    with tiny_fs(tmp_path / "small", "256k") as small:
        cfg, status_port = write_config(
            small, mosquitto.port, cloud_port=cloud_port,
            extra=FAST + "dead_letter_max_bytes = 4096\n",
            streams=CAPPED.format(cap="", policy="reject_new"))
        agent = agent_server(cfg, status_port, tmp_path / "agent.out").start()
        pubs = [Publisher(mosquitto.port, "d0")]
        broker = None
        n = 4000
        try:
            publish_until(pubs, n)
            wait_for(lambda: "DiskFull" in stream_status(status_port)["write_error"]
                     or "No space" in stream_status(status_port)["write_error"], 60,
                     message="ENOSPC")
            assert http_get(status_port, "/healthz").status_code == 503
            broker = broker_server(tmp_path / "broker", port=cloud_port,
                                   topics={"telemetry": 1}).start()
            wait_for(lambda: stream_status(status_port)["pubacks"] >= n, 120, interval=0.2,
                     message="ingest to resume after space freed")
            assert agent.running
        finally:
            pubs[0].close()
            agent.stop()
            if broker is not None:
                broker.stop()
        local = seqs_by_device(read_stream(small / "data")).get("d0", [])
    cloud = cloud_seqs(tmp_path / "broker" / "data").get("d0", [])
    assert sorted(set(cloud) | set(local)) == list(range(n))


TWO_STREAMS = """
[[streams]]
name = "bulk"
topics = ["devices/+/bulk"]
device_key = "topic:devices/{device}/bulk"
segment_bytes = 65536
full_policy = "reject_new"
[[streams]]
name = "telemetry"
topics = ["devices/+/telemetry"]
device_key = "topic:devices/{device}/telemetry"
segment_bytes = 4096
full_policy = "drop_oldest"
"""


def test_disk_filled_by_another_stream_drop_oldest_keeps_accepting(
        tmp_path: Path, mosquitto: Server) -> None:
    """An uncapped reject_new stream fills the disk; the drop_oldest stream beside it keeps
    acknowledging by deleting its own oldest segments, and its drop counter equals exactly
    the readings that neither the cloud nor the local log has."""
    cloud_port = free_port()
    n = 500
    with tiny_fs(tmp_path / "small", "512k") as small:
        cfg, status_port = write_config(
            small, mosquitto.port, cloud_port=cloud_port,
            extra=FAST + "dead_letter_max_bytes = 4096\n", streams=TWO_STREAMS)
        cfg.write_text(cfg.read_text().replace(
            "retry_max_s = 0.5\n", "retry_max_s = 0.5\nmax_in_flight = 1\n"
            "max_batch_records = 50\n"))
        agent = agent_server(cfg, status_port, tmp_path / "agent.out").start()
        pub = Publisher(mosquitto.port, "d0")
        broker = None
        try:
            for seq in range(200):
                pub.publish(seq)
            wait_for(lambda: pub.all_acked(200), 30, message="the first readings")
            # the hog: QoS 0 bulk readings until the disk is full (none held for retry)
            flood = "\n".join(json.dumps({"seq": i, "pad": "x" * 2000}) for i in range(600))
            subprocess.run([find_binary("mosquitto_pub"), "-p", str(mosquitto.port), "-q", "0",
                            "-t", "devices/b0/bulk", "-l"], input=flood, text=True,
                           check=True, timeout=60)
            wait_for(lambda: "DiskFull" in stream_status(status_port, "bulk")["write_error"],
                     30, message="the bulk stream to fill the disk")
            for seq in range(200, n):
                pub.publish(seq)
            wait_for(lambda: pub.all_acked(n), 60, interval=0.1,
                     message="every telemetry reading acknowledged on the full disk")
            # Mosquitto's PUBACKs come first; the agent appends them a spacing later at
            # most (a trickle is spaced: ingest.trickle_window_ms)
            wait_for(lambda: stream_status(status_port)["appended"] >= n, 30, interval=0.05,
                     message="every telemetry reading appended on the full disk")
            st = stream_status(status_port)
            assert st["write_error"] == "" and st["full_policy_deleted"] > 0
            assert st["start_offset"] > 0
            # the cloud comes up: the batch on the wire is acked, the rest drains
            broker = broker_server(tmp_path / "broker", port=cloud_port,
                                   topics={"telemetry": 1, "bulk": 1}).start()
            wait_for(lambda: (lambda s: s["backlog_records"] == 0
                              and s["drop_oldest_in_flight"] == 0)(stream_status(status_port)),
                     60, interval=0.2, message="the telemetry stream to drain")
            lost = stream_status(status_port)["drops"].get("drop_oldest", 0)
            assert agent.running
        finally:
            pub.close()
            agent.stop()
            if broker is not None:
                broker.stop()
        local = seqs_by_device(read_stream(small / "data")).get("d0", [])
    cloud = cloud_seqs(tmp_path / "broker" / "data").get("d0", [])
    missing = set(range(n)) - set(cloud) - set(local)
    assert lost > 0 and len(missing) == lost


def _fill(directory: Path) -> Path:
    """Take every free byte of the filesystem holding ``directory``."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    return filler


def test_agent_starts_on_a_full_disk_and_resumes_when_room_returns(
        tmp_path: Path, mosquitto: Server) -> None:
    """A restart while the disk is full (a kill during a disk-full spell) comes up blocked,
    as back-pressure, instead of exiting on the dedup checkpoint it writes at start."""
    with tiny_fs(tmp_path / "small", "512k") as small:
        cfg, status_port = write_config(small, mosquitto.port, extra=FAST,
                                        streams=CAPPED.format(cap="", policy="reject_new"))
        agent = agent_server(cfg, status_port, tmp_path / "agent.out").start()
        pub = Publisher(mosquitto.port, "d0")
        try:
            publish_until([pub], 50)
            wait_for(lambda: stream_status(status_port)["pubacks"] >= 50, 30,
                     message="the first readings stored")
            agent.kill()
            filler = _fill(small)
            agent.start()  # ready = subscribed: it did not exit on ENOSPC
            for seq in range(50, 100):
                pub.publish(seq)
            wait_for(lambda: stream_status(status_port)["write_error"], 30,
                     message="the full disk reported")
            filler.unlink()
            wait_for(lambda: stream_status(status_port)["pubacks"] >= 50, 60, interval=0.2,
                     message="ingest to resume once room returned")
            assert agent.running
        finally:
            pub.close()
            agent.stop()
        local = seqs_by_device(read_stream(small / "data")).get("d0", [])
    assert local == list(range(100))
