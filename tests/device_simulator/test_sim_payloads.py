"""Payload bytes: JSON and CBOR maps, and the corruptions the fault injector sends."""

from __future__ import annotations

import json

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_simulator import payloads, sensors

values = st.dictionaries(
    st.sampled_from(["temperature", "humidity", "lat", "lon", "battery"]),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), max_size=5)


@pytest.mark.parametrize("fmt", payloads.FORMATS)
@given(seq=st.integers(0, 2**53), ts=st.integers(0, 2**53), values=values)
def test_a_telemetry_map_round_trips_in_both_formats(fmt, seq, ts, values):
    message = payloads.telemetry("dev-00001", seq, ts, "env", values)
    raw = payloads.encode(message, fmt)
    assert payloads.decode(raw) == message


def test_json_is_compact_and_readable_and_cbor_is_a_cbor_map():
    message = payloads.telemetry("dev-\"7\"", 3, 1_700_000_000_000, "env", {"temperature": 21.5})
    raw = payloads.encode(message, "json")
    assert raw == (b'{"device":"dev-\\"7\\"","seq":3,"ts":1700000000000,"kind":"env",'
                   b'"temperature":21.5}')
    assert json.loads(raw) == message
    assert cbor2.loads(payloads.encode(message, "cbor")) == message


def test_an_alarm_carries_its_name_and_the_reading():
    p = sensors.profile_for(1, 1)
    reading = sensors.reading(p, 0.0, 1)
    message = payloads.alarm("d1", 9, 5, sensors.alarm_for(p, reading), reading)
    assert message["seq"] == 9 and message["alarm"] and message["severity"] == "major"
    assert reading.items() <= message.items()


@pytest.mark.parametrize("fmt", payloads.FORMATS)
@pytest.mark.parametrize("variant", [0, 1])
def test_malformed_payloads_decode_in_neither_format(fmt, variant):
    message = payloads.telemetry("dev-1", 12, 1, "env", {"temperature": 1.25, "humidity": 40.0})
    bad = payloads.malformed(payloads.encode(message, fmt), variant)
    assert payloads.decode(bad) is None
    with pytest.raises(ValueError):
        json.loads(bad)
    with pytest.raises((cbor2.CBORDecodeError, ValueError)):
        value = cbor2.loads(bad)
        if not isinstance(value, dict):  # a stray scalar prefix is no payload either
            raise ValueError(value)


@pytest.mark.parametrize("fmt", payloads.FORMATS)
def test_oversized_payloads_are_valid_and_at_least_the_size_asked(fmt):
    message = payloads.telemetry("dev-1", 12, 1, "env", {"temperature": 1.25})
    big = payloads.oversized(message, fmt, 300 * 1024)
    assert 300 * 1024 <= len(big) < 300 * 1024 + 64
    decoded = payloads.decode(big)
    assert decoded is not None and decoded["seq"] == 12 and len(decoded["pad"]) > 300_000


def test_decode_refuses_what_is_not_a_map():
    assert payloads.decode(b"") is None
    assert payloads.decode(b"[1,2]") is None
    assert payloads.decode(cbor2.dumps([1, 2])) is None
    assert payloads.decode(b"{not json") is None
