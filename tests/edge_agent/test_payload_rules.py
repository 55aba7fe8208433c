"""payload.PayloadRules: device keys, fields, and the dead-letter decision (pure)."""

from __future__ import annotations

import json

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.payload import (
    PayloadRules,
    Rejected,
    _decode_json,
    check_device,
    topic_pattern,
)

TOPIC = "topic:devices/{device}/telemetry"


def rules(**kw: object) -> PayloadRules:
    base: dict[str, object] = {"payload": "json", "device_key": TOPIC}
    base.update(kw)
    return PayloadRules(**base)  # type: ignore[arg-type]


def test_reading_from_topic_and_json_fields() -> None:
    r = rules().inspect("devices/dev-1/telemetry", b'{"seq": 7, "ts": 1700000000123, "t": 1}')
    assert r == ("dev-1", 7, 1700000000123, "")


def test_cbor_fields() -> None:
    payload = cbor2.dumps({"seq": 3, "ts": 1.7e12, "device": "cb1"})
    r = rules(payload="cbor", device_key="field:device").inspect("any/topic", payload)
    assert r == ("cb1", 3, 1_700_000_000_000, "")


@pytest.mark.parametrize("device", ["..", "../../etc", ".hidden", "-rf", "a" * 129, "dév",
                                    "a b", "x\n", ""])
def test_hostile_device_keys_are_refused(device: str) -> None:
    assert isinstance(check_device(device), Rejected)
    r = rules(device_key="field:device").inspect("t", json.dumps({"device": device}).encode())
    assert isinstance(r, Rejected) and r.reason in ("bad_device", "no_device")


def test_topic_that_does_not_fit_the_pattern() -> None:
    r = rules().inspect("devices/../../etc/telemetry", b"{}")
    assert isinstance(r, Rejected) and r.reason == "no_device"
    r = rules().inspect("devices/%2E%2E/telemetry", b"{}")
    assert isinstance(r, Rejected) and r.reason == "bad_device"


def test_oversized_is_checked_before_parsing() -> None:
    r = rules(max_payload_bytes=10).inspect("devices/d/telemetry", b"x" * 11)
    assert isinstance(r, Rejected) and r.reason == "oversized"
    assert rules(max_payload_bytes=10).inspect("devices/d/telemetry", b"1" * 10) == ("d", None,
                                                                                    None, "")


def test_malformed_payload_is_opaque_when_no_field_is_required() -> None:
    assert rules().inspect("devices/d/telemetry", b"{not json") == ("d", None, None, "")
    assert rules().inspect("devices/d/telemetry", b"[1, 2]") == ("d", None, None, "")
    assert rules().inspect("devices/d/telemetry", b"\xff\xfe") == ("d", None, None, "")


@pytest.mark.parametrize("payload", [b"{not json", b"[1, 2]", b"\xff", b"", b'{"seq": 1} x'])
def test_malformed_payload_is_refused_when_a_field_is_required(payload: bytes) -> None:
    r = rules(require_sequence=True).inspect("devices/d/telemetry", payload)
    assert isinstance(r, Rejected) and r.reason == "malformed"
    r = rules(payload="cbor", require_sequence=True).inspect("devices/d/telemetry",
                                                             payload or b"\xff")
    assert isinstance(r, Rejected)


@pytest.mark.parametrize("seq", [-1, "5", 1.5, True, None, 2**63])
def test_invalid_sequences_count_as_missing(seq: object) -> None:
    payload = json.dumps({"seq": seq}).encode()
    assert rules().inspect("devices/d/telemetry", payload)[1] is None  # type: ignore[index]
    r = rules(require_sequence=True).inspect("devices/d/telemetry", payload)
    assert isinstance(r, Rejected) and r.reason == "missing_sequence"


def test_opaque_payloads_are_never_parsed() -> None:
    r = rules(payload="").inspect("devices/d/telemetry", b'{"seq": 1}')
    assert r == ("d", None, None, "")
    assert rules(payload="").content_type == b"application/octet-stream"


def test_topic_pattern_levels() -> None:
    p = topic_pattern("site/+/{device}/#")
    m = p.match("site/a/dev9/x/y")
    assert m is not None and m.group("device") == "dev9"
    assert p.match("site/a/dev9") is None or p.match("site/a/dev9").group("device") == "dev9"
    assert topic_pattern("d/{device}").match("d/a/b") is None
    assert topic_pattern("d/dev-{device}").match("d/dev-42").group("device") == "42"  # type: ignore[union-attr]


def test_topic_header_only_when_the_key_cannot_rebuild_the_topic() -> None:
    assert not rules().topic_header
    assert rules(device_key="topic:devices/{device}/+").topic_header
    assert rules(device_key="field:device").topic_header


# -- hostile field values (G8): dead-lettered with the field named, or ignored; never raised

BAD_TIMESTAMPS = [b'{"seq": 1, "ts": Infinity}', b'{"seq": 1, "ts": -Infinity}',
                  b'{"seq": 1, "ts": NaN}', b'{"seq": 1, "ts": 1e999}', b'{"seq": 1, "ts": -1}',
                  b'{"seq": 1, "ts": 1e300}', b'{"seq": 1, "ts": 9223372036854775808}']


@pytest.mark.parametrize("payload", BAD_TIMESTAMPS)
def test_out_of_range_timestamps_are_dead_lettered_naming_the_field(payload: bytes) -> None:
    r = rules().inspect("devices/d/telemetry", payload)
    assert isinstance(r, Rejected) and r.reason == "bad_value" and r.device == "d"
    assert r.detail.startswith("field 'ts': ")


@pytest.mark.parametrize("ts", ["2024-01-01T00:00:00Z", True, [1], {"a": 1}])
def test_timestamps_of_another_type_are_ignored(ts: object) -> None:
    payload = json.dumps({"seq": 1, "ts": ts}).encode()
    assert rules().inspect("devices/d/telemetry", payload) == ("d", 1, None, "")


def test_huge_integers_and_bignums_are_bounded_before_use() -> None:
    huge = b'{"seq": 1, "ts": ' + b"9" * 5000 + b"}"  # past Python's int-to-str limit
    r = rules().inspect("devices/d/telemetry", huge)
    assert r == ("d", None, None, "")  # JSON refuses the literal: an opaque reading
    for value in (10**5000, -(10**5000), 10**20, float("inf"), float("nan"), 1.5):
        payload = cbor2.dumps({"seq": value, "device": value})
        r = rules(payload="cbor", device_key="field:device").inspect("t", payload)
        assert isinstance(r, Rejected) and r.reason == "no_device"
        assert rules(payload="cbor").inspect("devices/d/telemetry", payload) == (
            "d", None, None, "")
        for field in ("ts", "boot"):
            payload = cbor2.dumps({"seq": 1, field: value})
            r = rules(payload="cbor", epoch_field="boot").inspect("devices/d/telemetry",
                                                                   payload)
            if value == 1.5 and field == "ts":
                assert r == ("d", 1, 1, "")
                continue
            assert isinstance(r, Rejected) and r.reason == "bad_value", (field, value)
            assert len(r.detail) < 200
    assert rules(device_key="field:device").inspect("t", b'{"device": 42}')[0] == "42"  # type: ignore[index]


@pytest.mark.parametrize("boot", [-1, 2**63, "x" * 65, "a b", 1.0, True, [1], "\ud800"])
def test_invalid_boot_epochs_are_dead_lettered(boot: object) -> None:
    payload = json.dumps({"seq": 1, "boot": boot}).encode()
    r = rules(epoch_field="boot").inspect("devices/d/telemetry", payload)
    assert isinstance(r, Rejected) and r.reason == "bad_value"
    assert r.detail.startswith("field 'boot': ")
    assert rules().inspect("devices/d/telemetry", payload) == ("d", 1, None, "")  # not read


@pytest.mark.parametrize(("boot", "epoch"), [(3, "3"), ("a1b2-c3", "a1b2-c3"), (None, ""),
                                             (0, "0"), ("x" * 64, "x" * 64)])
def test_boot_epoch_field(boot: object, epoch: str) -> None:
    payload = json.dumps({"seq": 1, "boot": boot}).encode()
    assert rules(epoch_field="boot").inspect("devices/d/telemetry", payload) == (
        "d", 1, None, epoch)


_numbers = st.one_of(st.integers(), st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
                     st.integers(min_value=-(2**63) - 2, max_value=-(2**63) + 2),
                     st.sampled_from([10**30, -(10**30), 10**400]),
                     st.floats(allow_nan=True, allow_infinity=True))
_values = st.one_of(st.none(), st.booleans(), _numbers, st.text(max_size=8),
                    st.sampled_from(["\ud800", "dev-1", "a b"]),
                    st.lists(_numbers, max_size=2))


@settings(max_examples=400, deadline=None)
@given(doc=st.dictionaries(st.sampled_from(["device", "seq", "ts", "boot", "v"]), _values),
       spacing=st.sampled_from(["", " ", "\n"]), extra=st.sampled_from([b"", b" ", b"x"]))
def test_the_fast_json_decoder_decides_as_the_json_module(doc: dict[str, object], spacing: str,
                                                           extra: bytes) -> None:
    # NaN, infinities, lone surrogates (json only), integers past 64 bits (floats in
    # orjson), 4,300+ digit integers, trailing garbage: every payload's fate is the same
    # as with the json module alone.
    try:
        payload = spacing.encode() + json.dumps(doc).encode() + extra
    except ValueError:  # an int past Python's int-to-str limit
        payload = b'{"seq": 1, "ts": ' + b"9" * 5000 + b"}"
    for kw in ({}, {"device_key": "field:device", "epoch_field": "boot"},
               {"require_sequence": True}):
        fast = rules(**kw)
        slow = rules(**kw)
        slow._decode = _decode_json  # the json module's scanner alone
        assert fast.inspect("devices/d/telemetry", payload) == \
            slow.inspect("devices/d/telemetry", payload), (kw, payload)
