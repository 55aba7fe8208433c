"""The commands that talk to a broker exit with the same code for the same trouble
(docs/configuration.md): 2 a bad URL, 3 nothing answers, 4 the token is refused, 1 an
unknown topic; and they say so in one line within seconds, against a real broker."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import Server, broker_server, free_port

READ = "reader-token-1"


def run(*args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                         timeout=timeout)
    return res, time.monotonic() - started


def consume(url: str, *extra: str) -> tuple[subprocess.CompletedProcess[str], float]:
    return run("cloud_broker.cli", "consume", "--url", url, "--topic", "telemetry",
               "--limit", "1", "--connect-timeout", "1", *extra)


@pytest.fixture
def manifest(tmp_path: Path, mosquitto: Server) -> Path:
    path = tmp_path / "run.json"
    res, _ = run("device_simulator.cli", "run", "--broker",
                 f"mqtt://127.0.0.1:{mosquitto.port}", "--devices", "1", "--rate", "5",
                 "--duration", "0.5", "--manifest", str(path), "--quiet")
    assert res.returncode == 0, res.stderr
    return path


def verify(url: str, manifest: Path, *extra: str
           ) -> tuple[subprocess.CompletedProcess[str], float]:
    return run("device_simulator.cli", "verify", "--from", url, "--topic", "telemetry",
               "--manifest", str(manifest), "--settle", "0", *extra)


def one_line(res: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in res.stderr, res.stderr
    assert len([ln for ln in res.stderr.splitlines() if ln.strip()]) <= 2, res.stderr


def test_bad_url_and_nothing_listening(manifest: Path) -> None:
    res, took = consume("htp://127.0.0.1:8080")
    assert res.returncode == 2 and "--url" in res.stderr and took < 15
    one_line(res)
    res, _ = verify("htp://127.0.0.1:8080", manifest)
    assert res.returncode == 2 and "http(s)" in res.stderr
    dead = f"http://127.0.0.1:{free_port()}"
    res, took = consume(dead)
    assert res.returncode == 3, res.stderr
    assert "cannot reach the broker" in res.stderr and took < 15
    one_line(res)


def test_same_refusal_same_code(tmp_path: Path, manifest: Path) -> None:
    broker = broker_server(tmp_path / "b", tokens=[{"token": READ,
                                                     "permissions": ["read"]}]).start()
    url = f"http://127.0.0.1:{broker.port}"
    try:
        c, _ = consume(url, "--token", "wrong-token-1")
        v, _ = verify(url, manifest, "--token", "wrong-token-1")
        assert c.returncode == v.returncode == 4, (c.stderr, v.stderr)
        assert "401" in c.stderr and "401" in v.stderr
        one_line(c)
        one_line(v)
        # the right token: consume reaches the topic; verify finds the readings missing
        c, _ = consume(url, "--token", READ, "--limit", "0")
        assert c.returncode == 0, c.stderr
        v, _ = verify(url, manifest, "--token", READ)
        assert v.returncode == 1
        # an unknown topic: 1 for both
        c, _ = run("cloud_broker.cli", "consume", "--url", url, "--topic", "nope",
                   "--token", READ, "--limit", "1")
        v, _ = run("device_simulator.cli", "verify", "--from", url, "--topic", "nope",
                   "--manifest", str(manifest), "--settle", "0", "--token", READ)
        assert c.returncode == v.returncode == 1, (c.stderr, v.stdout)
        assert "404" in c.stderr
    finally:
        broker.stop()


@pytest.mark.parametrize("command", [
    ("cloud_broker.cli",), ("cloud_broker.cli", "consume"), ("cloud_broker.cli", "tokens"),
    ("cloud_broker.cli", "mirror"), ("edge_agent.cli",), ("edge_agent.cli", "top"),
    ("device_simulator.cli",), ("shared_log.cli",)], ids=" ".join)
def test_help_is_usage_not_design_notes(command: tuple[str, ...]) -> None:
    res, _ = run(*command, "--help")
    assert res.returncode == 0, res.stderr
    assert "usage:" in res.stdout
    for note in ("Strategy", "``", "argparse"):
        assert note not in res.stdout, (note, res.stdout)
