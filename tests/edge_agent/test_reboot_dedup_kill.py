"""Device reboots and kill -9 together: devices restart their sequence every BOOT_LEN
readings with a new boot epoch while the agent is SIGKILLed at random moments. The
epochs live in record headers and in dedup.json exactly like the sequences, so after
every restart the redeliveries are still dropped and the new boots still accepted:
each reading is stored exactly once, in order (G1, G4, G5 with reboots)."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

from edge_agent_testing import Publisher, agent_server, read_stream, stream_status, write_config

from tests.helpers import Server, wait_for

KILLS = 6
DEVICES = 3
#: Readings per boot. The rule remembers the current and the previous boot only
#: (docs/edge-agent.md): a redelivery can reach back as far as the readings unacknowledged
#: at a kill, up to the receive maximum (1000), so boots are that long; shorter ones let
#: a kill on a slow machine redeliver readings from two boots back, which no rule that
#: treats epochs as opaque can tell from a new boot.
BOOT_LEN = 1000


class RebootingFeeder:
    """Reading n of every device is {"seq": n % BOOT_LEN, "boot": n // BOOT_LEN, "n": n}."""

    def __init__(self, pubs: list[Publisher]) -> None:
        self.pubs = pubs
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            n = self.sent
            for p in self.pubs:
                p.publish(n, {"seq": n % BOOT_LEN, "boot": n // BOOT_LEN, "n": n})
            self.sent += 1
            time.sleep(0.002)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(10)
        return self.sent


def test_reboots_and_sigkill_store_every_reading_once(tmp_path: Path,
                                                      mosquitto: Server) -> None:
    rng = random.Random(1107)
    cfg, status_port = write_config(tmp_path, mosquitto.port,
                                    extra="[ingest]\ncommit_interval_ms = 5.0\n"
                                          "dedup_checkpoint_s = 0.2\n")
    agent = agent_server(cfg, status_port, tmp_path / "agent.out").start()
    pubs = [Publisher(mosquitto.port, f"dev{i}") for i in range(DEVICES)]
    feeder = RebootingFeeder(pubs)
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.1, 0.6))
            agent.kill()  # SIGKILL: no flush, no PUBACK, no checkpoint
            time.sleep(rng.uniform(0.0, 0.2))
            agent.start()
        # at least three reboots of every device, whatever the kills took
        wait_for(lambda: feeder.sent > 3.5 * BOOT_LEN, 120, interval=0.05,
                 message="three device reboots")
    finally:
        total = feeder.stop()
    try:
        for p in pubs:
            wait_for(lambda p=p: p.all_acked(total), 60, message=f"{p.device} PUBACKs")
        wait_for(lambda: stream_status(status_port)["end_offset"] >= DEVICES * total,
                 60, interval=0.2, message="the agent to store every reading")
        time.sleep(0.3)  # anything stored twice would show up by now
    finally:
        for p in pubs:
            p.close()
        agent.stop()
    got: dict[str, list[int]] = {}
    for r in read_stream(tmp_path / "data"):
        got.setdefault(r.key.decode(), []).append(json.loads(r.value)["n"])
    assert sorted(got) == [f"dev{i}" for i in range(DEVICES)]
    for device, ns in got.items():
        assert ns == list(range(total)), (
            f"{device}: {len(ns)} readings for {total} sent; first mismatch at "
            f"{next((i for i, s in enumerate(ns) if s != i), None)}")
    assert "Traceback" not in (tmp_path / "agent.out").read_text()
