"""A ``device-sim run`` killed with SIGKILL takes its worker processes with it: none is
left publishing as an orphan (they die with their parent, see device_simulator/worker.py)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from tests.helpers import Server, wait_for


def test_workers_die_with_a_killed_parent(tmp_path: Path, mosquitto: Server) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "device_simulator.cli", "run", "--broker",
         f"mqtt://127.0.0.1:{mosquitto.port}", "--devices", "20", "--rate", "1",
         "--duration", "120", "--workers", "2", "--qos", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    workers: list[psutil.Process] = []
    try:
        parent = psutil.Process(proc.pid)

        def spawned() -> list[psutil.Process] | None:
            found = [c for c in parent.children(recursive=True)
                     if "spawn_main" in " ".join(c.cmdline())]
            return found if len(found) >= 2 else None  # (not the resource tracker)

        workers = wait_for(spawned, 30, 0.1, "two worker processes")
        assert len(workers) >= 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE
                                 for w in workers), 10, 0.05, "the workers to die")
    finally:
        proc.kill()
        for w in workers:  # whatever the outcome, leave nothing running
            with contextlib.suppress(psutil.Error):
                w.kill()
