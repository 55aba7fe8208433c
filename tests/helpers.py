"""Test helpers shared by every suite: free ports, waiting on conditions, real servers.

Servers are started as real subprocesses on free loopback ports (never the machine's
shared 1883/4222) and stopped by their own process id.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def load_demo_module(name: str = "run_demo") -> Any:
    """A module of deploy/local (the `make demo` scripts, not a package) loaded by path,
    registered in ``sys.modules`` (dataclasses look their module up while it loads)."""
    full = f"deploy_local_{name}"
    spec = importlib.util.spec_from_file_location(full, REPO / "deploy/local" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01,
             message: str = "condition") -> Any:
    """Poll ``cond`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


async def until(cond: Callable[[], Any], timeout: float, what: str,
                interval: float = 0.02) -> Any:
    """``wait_for`` for coroutines: poll ``cond`` on the running loop until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def find_binary(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/usr/local/sbin/{name}")
         if os.path.exists(p)), None)
    if path is None:
        raise RuntimeError(f"{name} is not installed (apt-get install -y {name})")
    return path


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def die_with_parent() -> Callable[[], None] | None:
    """The ``preexec_fn`` that makes a server die with the test run, even a SIGKILLed one
    (its own session keeps it out of the run's Ctrl-C). The parent-death signal fires when
    the *thread* that forked exits, so a server started from a worker thread
    (``asyncio.to_thread``) would die with that thread: only the main thread's children
    get it; the fixtures' teardown kills the rest."""
    return _die_with_parent if threading.current_thread() is threading.main_thread() else None


class ChildProcess:
    """A server subprocess of a test (in its own session): ``kill()`` is SIGKILL,
    ``stop()`` SIGTERM then SIGKILL after ``timeout``."""

    proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no chance to flush or clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


class Server(ChildProcess):
    """A subprocess listening on ``port``; ``stop()`` sends SIGTERM, ``kill()`` SIGKILL."""

    def __init__(self, args: list[str], port: int, log_path: Path,
                 env: dict[str, str] | None = None,
                 ready: Callable[[], bool] | None = None, ready_timeout: float = 20.0) -> None:
        self.args = args
        self.port = port
        self.log_path = log_path
        self.env = env
        self._ready = ready or (lambda: port_open(port))
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                     env=self.env, start_new_session=True,
                                     preexec_fn=die_with_parent())
        log.close()
        deadline = time.monotonic() + self.ready_timeout
        while not self._ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.args[0]} exited with {self.proc.returncode}:\n"
                                   + self.log_path.read_text(errors="replace")[-3000:])
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.args[0]} not ready on port {self.port}:\n"
                                   + self.log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.02)
        return self

    def restart(self) -> Server:
        self.stop()
        return self.start()


def mosquitto_server(tmp: Path, port: int | None = None, persistence: bool = True) -> Server:
    """A real Mosquitto on a free port with persistence in ``tmp``."""
    port = port or free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        f"persistence {'true' if persistence else 'false'}\n"
        f"persistence_location {tmp}/\n"
        "max_queued_messages 0\n"
        "max_inflight_messages 0\n"
        "log_type error\nlog_type warning\n"
        # Started as root, Mosquitto would drop to its own user, which cannot write here.
        "user root\n"
    )
    return Server([find_binary("mosquitto"), "-c", str(conf)], port, tmp / "mosquitto.out")


def nats_server(tmp: Path, port: int | None = None) -> Server:
    """A real nats-server with JetStream on a free port, storing in ``tmp``."""
    port = port or free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    return Server([find_binary("nats-server"), "-a", "127.0.0.1", "-p", str(port), "-js",
                   "-sd", str(tmp / "js")], port, tmp / "nats.out")


def write_broker_config(tmp: Path, port: int, topics: dict[str, int] | None = None,
                        tokens: list[dict[str, Any]] | None = None, extra: str = "") -> Path:
    topics = topics if topics is not None else {"telemetry": 8}
    lines = [f'data_dir = "{tmp / "data"}"', f'listen = "127.0.0.1:{port}"', extra]
    if tokens is None:
        lines.append("[auth]\nrequired = false")
    for name, parts in topics.items():
        lines.append(f"[topics.{name}]\npartitions = {parts}")
    for t in tokens or []:
        perms = ", ".join(f'"{p}"' for p in t.get("permissions", ["ingest"]))
        lines.append(f'[[tokens]]\ntoken = "{t["token"]}"\nedge_id = "{t.get("edge_id", "*")}"\n'
                     f"permissions = [{perms}]")
    path = tmp / "cloud.toml"
    tmp.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def broker_server(tmp: Path, port: int | None = None, **kwargs: Any) -> Server:
    """A real ``cloud-broker serve`` subprocess (uvicorn) on a loopback port."""
    port = port or free_port()
    cfg = write_broker_config(tmp, port, **kwargs)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def ready() -> bool:
        import httpx
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    return Server([sys.executable, "-m", "cloud_broker.cli", "serve", "--config", str(cfg)],
                  port, tmp / "broker.out", env=env, ready=ready)


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
