"""Hostile bytes at the Kafka listener: a clean close or an error code, never a crash,
a dead listener or unbounded memory (docs/security.md, Kafka listener)."""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from kafka_testing import config, running_broker

from cloud_broker.kafka import wire


def _frame(key: int, version: int, body: bytes, corr: int = 7) -> bytes:
    payload = struct.pack(">hhih", key, version, corr, 1) + b"x" + body
    return struct.pack(">i", len(payload)) + payload


@given(st.binary(max_size=300))
@settings(max_examples=400, deadline=None)
def test_parser_raises_only_its_own_errors(data: bytes) -> None:
    with contextlib.suppress(wire.BadRequest, wire.UnsupportedVersion):
        wire.parse_request(data)


@given(st.sampled_from(sorted(wire.SUPPORTED)), st.integers(0, 12), st.binary(max_size=200))
@settings(max_examples=400, deadline=None)
def test_known_apis_with_random_bodies(key: int, version: int, body: bytes) -> None:
    frame = struct.pack(">hhih", key, version, 1, 1) + b"x" + body
    with contextlib.suppress(wire.BadRequest, wire.UnsupportedVersion):
        wire.parse_request(frame)


def _exchange(port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def _api_versions_ok(port: int) -> bool:
    reply = _exchange(port, _frame(18, 0, b""))
    return len(reply) > 10 and reply[8:10] == b"\0\0"


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory):
    with running_broker(config(tmp_path_factory.mktemp("fuzz"))) as rb:
        rb.append(0, 10)
        yield rb


def test_bad_frames_close_cleanly_and_the_listener_lives(listener) -> None:
    port = listener.broker.config.kafka.port
    cases = [
        struct.pack(">i", 2**31 - 1),  # huge declared size: closed before any allocation
        struct.pack(">i", -5),  # negative size
        struct.pack(">i", 3) + b"abc",  # shorter than a header
        struct.pack(">i", 100) + b"\0" * 10,  # truncated frame
        _frame(1, 11, b"\xff" * 40),  # Fetch with garbage
        _frame(3, 8, b"\x7f\xff\xff\xff"),  # a topic array claiming 2^31 entries
        _frame(999, 0, b""),  # unknown API key
        _frame(1, 99, b""),  # unsupported version of a known API
    ]
    for raw in cases:
        assert _exchange(port, raw) == b""
        assert _api_versions_ok(port)


def test_too_new_api_versions_gets_v0_unsupported_version(listener) -> None:
    reply = _exchange(listener.broker.config.kafka.port, _frame(18, 42, b""))
    assert struct.unpack(">i", reply[4:8])[0] == 7
    assert struct.unpack(">h", reply[8:10])[0] == 35  # UNSUPPORTED_VERSION, with the list


def test_produce_is_refused_with_an_error_code(listener) -> None:
    body = (struct.pack(">h", -1) + struct.pack(">hi", 1, 1000) + struct.pack(">i", 1)
            + struct.pack(">h", 9) + b"telemetry" + struct.pack(">i", 1)
            + struct.pack(">ii", 0, -1))
    reply = _exchange(listener.broker.config.kafka.port, _frame(0, 3, body))
    assert struct.pack(">h", 44) in reply[8:]  # POLICY_VIOLATION for telemetry/0


@given(st.binary(min_size=1, max_size=64))
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_bytes_on_the_socket(listener, data: bytes) -> None:
    _exchange(listener.broker.config.kafka.port, struct.pack(">i", len(data)) + data)
    assert _api_versions_ok(listener.broker.config.kafka.port)
