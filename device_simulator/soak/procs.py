"""The soak's processes: start, SIGKILL, SIGTERM, restart, each in its own process group.

Strategy: every server is a ``Proc`` started with ``start_new_session`` (its own process
group, so a kill reaches its children and never the harness) and, where Linux allows,
``PR_SET_PDEATHSIG`` so it dies with the harness even when the harness is SIGKILLed.
All processes are started from the main thread (the death signal follows the thread
that forked). ``Procs.stop_all`` is called from a ``finally``: Ctrl-C, an exception or
a failed verdict all end with nothing left running.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def child_env() -> dict[str, str]:
    """The repository on the path (a checkout runs without being installed)."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO)}


def python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


class Proc:
    """One role (agent, broker...); ``starts`` counts its incarnations."""

    def __init__(self, name: str, args: list[str], work: Path) -> None:
        self.name, self.args, self.work = name, args, work
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    @property
    def log_path(self) -> Path:
        return self.work / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running and self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Proc:
        if self.running:
            return self
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.work,
                                         env=child_env(), start_new_session=True,
                                         preexec_fn=_die_with_parent)
        self.starts += 1
        return self

    def _signal_group(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> bool:
        """SIGKILL the process group; False when it was not running."""
        if not self.running:
            return False
        self._signal_group(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(30)
        self.kills += 1
        return True

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if not self.running:
            return
        assert self.proc is not None
        self._signal_group(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.proc.wait(30)

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class Procs(dict[str, Proc]):
    """The roles of one run, by name."""

    def add(self, name: str, args: list[str], work: Path) -> Proc:
        self[name] = Proc(name, args, work)
        return self[name]

    def stop_all(self) -> None:
        for proc in reversed(list(self.values())):
            with contextlib.suppress(Exception):
                proc.stop()

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.items() if p.pid is not None}
