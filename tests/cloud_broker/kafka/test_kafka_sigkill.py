"""A group member killed with SIGKILL: its partitions move after the session timeout and
no committed offset goes backwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from kafka_testing import config, running_broker

from tests.helpers import wait_for

PROC = Path(__file__).parent / "kafka_consumer_proc.py"


def test_killed_member_partitions_move_and_commits_never_go_back(tmp_path: Path) -> None:
    from confluent_kafka import Consumer

    with running_broker(config(tmp_path)) as rb:
        rb.append(0, 200)
        rb.append(1, 200)
        child = subprocess.Popen([sys.executable, str(PROC), rb.bootstrap, "g-kill"],
                                 stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": os.getcwd()})
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            seen: dict[int, int] = {}
            backwards: list[tuple[int, int, int]] = []
            stop = threading.Event()

            def watch() -> None:  # every committed offset, as it changes
                while not stop.is_set():
                    for r in rb.call(rb.broker.groups.committed, "g-kill"):
                        p, o = r["partition"], r["offset"]
                        if o < seen.get(p, 0):
                            backwards.append((p, seen[p], o))
                        seen[p] = max(o, seen.get(p, 0))
                    time.sleep(0.02)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            wait_for(lambda: sum(seen.values()) > 20, timeout=30)
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
            c = Consumer({"bootstrap.servers": rb.bootstrap, "group.id": "g-kill",
                          "auto.offset.reset": "earliest", "enable.auto.commit": False,
                          "session.timeout.ms": 2000, "heartbeat.interval.ms": 300,
                          "max.poll.interval.ms": 10000,
                          "partition.assignment.strategy": "range"})
            c.subscribe(["telemetry"])
            got: dict[int, list[int]] = {0: [], 1: []}
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and not all(
                    v and v[-1] == 199 for v in got.values()):
                m = c.poll(0.2)
                if m is not None and m.error() is None:
                    got[m.partition()].append(m.offset())
                    c.commit(message=m, asynchronous=False)
            c.close()
            stop.set()
            watcher.join(5)
            assert not backwards
            for offsets in got.values():
                # resumed at the killed member's last commit (at most its in-flight one again)
                assert offsets and offsets[-1] == 199
                assert offsets == list(range(offsets[0], 200))
            final = {r["partition"]: r["offset"]
                     for r in rb.call(rb.broker.groups.committed, "g-kill")}
            assert final == {0: 200, 1: 200}
        finally:
            if child.poll() is None:
                child.kill()
