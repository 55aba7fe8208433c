"""Ack-after-durable under kill -9: the agent subprocess is SIGKILLed at random moments
while devices publish QoS 1 readings; afterwards its log holds every sequence exactly
once per device, in order (G1 + G4 + G5).

Devices publish to a real Mosquitto, which acknowledges them and queues the readings for
the agent's persistent session while the agent is down; what the agent had received but
not yet PUBACKed (because it was not durable yet) is redelivered after the restart and
deduplicated by sequence number where it did reach the log.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from edge_agent_testing import (
    Feeder,
    Publisher,
    agent_server,
    check_every_reading_once,
    write_config,
)

from tests.helpers import Server

KILLS = 22
DEVICES = 4


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
        tmp_path: Path, mosquitto: Server) -> None:
    rng = random.Random(20240611)
    cfg, status_port = write_config(tmp_path, mosquitto.port,
                                    extra="[ingest]\ncommit_interval_ms = 5.0\n")
    agent = agent_server(cfg, status_port, tmp_path / "agent.out").start()
    pubs = [Publisher(mosquitto.port, f"dev{i}") for i in range(DEVICES)]
    feeder = Feeder(pubs, pause_s=0.001).start()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.05, 0.8))
            agent.kill()  # SIGKILL: no flush, no PUBACK, no checkpoint
            time.sleep(rng.uniform(0.0, 0.3))
            agent.start()
        time.sleep(0.5)
    finally:
        total = feeder.stop()
    assert total > 500, "the feed was too slow to exercise anything"
    check_every_reading_once(pubs, total, status_port, agent, tmp_path / "data")
    log_text = (tmp_path / "agent.out").read_text()
    assert "Traceback" not in log_text
