"""Fixtures for real servers: Mosquitto, nats-server and the cloud broker, each on a free
loopback port, stopped by process id at the end of the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Server, broker_server, mosquitto_server, nats_server


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Server]:
    server = mosquitto_server(tmp_path / "mosquitto").start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[Server]:
    server = nats_server(tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Server]:
    """A cloud broker subprocess with topic ``telemetry`` (8 partitions), auth off."""
    server = broker_server(tmp_path / "broker").start()
    try:
        yield server
    finally:
        server.stop()
