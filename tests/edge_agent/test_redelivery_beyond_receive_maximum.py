"""G5 when the broker sends more than ``mqtt.receive_maximum`` unacknowledged messages.

The dedup window assumes a redelivery never reaches further back than the session's
Receive Maximum. Mosquitto 2.0.11 does not hold a resumed session to it: on a resumed
session every PUBACK lets up to another Receive Maximum messages out (Receive Maximum 10,
20 PUBACKs: 210 unacknowledged messages sent). An agent that read all of them while its
disk was slow to sync held far more than the window stored but unacknowledged; killed
then, all of it came back (flagged DUP) more than ``ingest.dedup_window`` behind each
device's mark and was stored a second time. The session now enforces the limit itself
(edge_agent/mqtt_flow.py).

Made deterministic with a slow disk: the agent resumes its session on a backlog with
every fsync taking ``SYNC_S``, so its PUBACKs trail its appends (ack after durable) while
Mosquitto keeps sending; it is killed after a few PUBACKs, then restarted on a normal
disk, and every reading must be stored exactly once.
"""

from __future__ import annotations

import sys
from pathlib import Path

from edge_agent_testing import (
    Publisher,
    agent_server,
    get_status,
    read_stream,
    seqs_by_device,
    stream_status,
    write_config,
)

from tests.helpers import Server, wait_for

DEVICES = 2
WINDOW = 10  # mqtt.receive_maximum = ingest.dedup_window
BACKLOG = 20 * WINDOW  # readings per device queued while the agent is down
SYNC_S = 0.3  # every fsync of the slow-disk agent

#: the agent, its fsync and fdatasync slowed down (a disk that is slow to sync)
_SLOW_DISK = f"""
import os, runpy, sys, time
def slow(sync):
    def synced(fd):
        time.sleep({SYNC_S})
        sync(fd)
    return synced
os.fsync, os.fdatasync = slow(os.fsync), slow(os.fdatasync)
sys.argv = ["edge_agent.cli", *sys.argv[1:]]
runpy.run_module("edge_agent.cli", run_name="__main__", alter_sys=True)
"""


def slow_disk_agent(config: Path, status_port: int, log_path: Path) -> Server:
    """The agent on a slow disk; ready once its status answers (its SUBACK may wait behind
    the backlog it is reading)."""
    return Server([sys.executable, "-c", _SLOW_DISK, "run", "--config", str(config)],
                  status_port, log_path, ready=lambda: get_status(status_port) is not None,
                  ready_timeout=60)


def test_redeliveries_beyond_the_receive_maximum_are_not_stored_twice(
        tmp_path: Path, mosquitto: Server) -> None:
    cfg, status_port = write_config(tmp_path, mosquitto.port,
                                    extra=f"[ingest]\ndedup_window = {WINDOW}\n")
    cfg.write_text(cfg.read_text().replace(
        "keepalive_s = 5\n", f"keepalive_s = 5\nreceive_maximum = {WINDOW}\n"))
    agent = agent_server(cfg, status_port, tmp_path / "agent.out").start()
    slow = slow_disk_agent(cfg, status_port, tmp_path / "slow.out")
    pubs = [Publisher(mosquitto.port, f"dev{i}") for i in range(DEVICES)]
    try:
        for p in pubs:
            p.publish(0)
        wait_for(lambda: stream_status(status_port)["end_offset"] >= DEVICES, 30,
                 message="the first readings stored")
        agent.kill()
        for seq in range(1, BACKLOG + 1):  # queued for the agent's session
            for p in pubs:
                p.publish(seq)
        for p in pubs:
            wait_for(lambda p=p: p.all_acked(BACKLOG + 1), 30, message="PUBACKs")
        slow.start()  # resumes its session: every PUBACK lets Mosquitto send more
        wait_for(lambda: stream_status(status_port)["pubacks"] >= 3 * WINDOW, 30,
                 interval=0.05, message="a few PUBACKs from the slow agent")
        slow.kill()  # what it stored and had not acknowledged comes back
        agent.start()
        total = DEVICES * (BACKLOG + 1)
        wait_for(lambda: stream_status(status_port)["end_offset"] >= total, 30,
                 interval=0.1, message="every reading stored")
    finally:
        for p in pubs:
            p.close()
        slow.kill()
        agent.stop()
    seqs = seqs_by_device(read_stream(tmp_path / "data"))
    for p in pubs:
        got = seqs[p.device]
        assert got == list(range(BACKLOG + 1)), (
            f"{p.device}: {len(got)} readings for {BACKLOG + 1} sent")
