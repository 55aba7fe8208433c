"""Fixtures for real servers: Mosquitto, nats-server and the cloud broker, each on a free
loopback port, stopped by process id at the end of the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.natsd import NatsCluster, jetstream_cluster
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


@pytest.fixture
def jetstream_node(tmp_path: Path) -> Iterator[NatsCluster]:
    """One nats-server >= 2.12 with JetStream (tests/cluster/natsd.py), killed at teardown."""
    with jetstream_cluster(tmp_path / "jetstream-1", size=1) as cluster:
        yield cluster


@pytest.fixture
def jetstream_cluster3(tmp_path: Path) -> Iterator[NatsCluster]:
    """A 3-node JetStream cluster with an agreed meta leader, killed at teardown."""
    with jetstream_cluster(tmp_path / "jetstream-3", size=3) as cluster:
        yield cluster
