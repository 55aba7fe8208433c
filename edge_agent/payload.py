"""Payload inspection: the accept / dead-letter decision for one MQTT message. No I/O.

Strategy: the agent stores payloads as received (opaque bytes) and reads only what it
needs from them: the device key (from the topic by a pattern, or from a payload field),
a per-device sequence number (for G5 deduplication) and a device timestamp. JSON and CBOR
maps are understood; anything else is opaque. A ``PayloadRules`` is compiled once per
stream; ``inspect`` is on the ingest hot path, so it returns a plain tuple for a good
reading and allocates a ``Rejected`` only for bad input.

A parse failure is only an error when the stream needs a field from the payload (the
device key is a payload field, or ``require_sequence`` is on); otherwise the reading is
kept as opaque bytes without a sequence number (and so without deduplication).

Every value a device can send is checked before it is used (G8), so a NaN, an infinity,
a 5000-digit integer or a CBOR bignum never reaches ``int()``, ``%d`` or ``str()`` further
down:

* sequence: an integer in [0, 2**63-1]; anything else counts as absent (no deduplication;
  ``missing_sequence`` when the stream requires one);
* timestamp: a number must be an integer or a finite float in [0, 2**63-1] ms, else the
  reading is dead-lettered (``bad_value``); a string or other non-number is not a
  timestamp in our format and is ignored (the reading is kept without ``device-ts``);
* boot epoch: an integer in [0, 2**63-1] or a string of 1-64 ``[A-Za-z0-9._:-]``; any
  other present value dead-letters the reading (``bad_value``), since deduplicating it
  against the wrong boot could drop it;
* device field: a safe string, or an integer below 10**20 in magnitude.

Rejection reasons (the ``reason`` label of the dead-letter counters):

    oversized          payload larger than ingest.max_payload_bytes
    malformed          not valid JSON/CBOR (or not a map) where a field is required
    missing_sequence   require_sequence is on and the sequence field is absent or invalid
    no_device          the topic does not fit the device pattern / the device field is absent
    bad_device         the device key fails ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$
    no_stream          the topic matches no stream (only seen with ingest.unmatched_topics)
    bad_value          a field the agent reads has a value out of range (detail names it)
    internal           handling the message raised unexpectedly (a bug): the message is
                       dead-lettered so that one reading can never stop its stream
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2
import orjson

#: The safe pattern for device keys (\A..\Z: "$" would also match before a trailing "\n").
DEVICE_KEY = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")

REASONS = ("oversized", "malformed", "missing_sequence", "no_device", "bad_device",
           "no_stream", "bad_value", "internal")

CONTENT_TYPES = {"json": b"application/json", "cbor": b"application/cbor",
                 "": b"application/octet-stream"}

MAX_SEQUENCE = 2**63 - 1
MAX_TIMESTAMP = 2**63 - 1
#: an epoch given as a string: short and printable, so it fits a header and a log line
EPOCH_TEXT = re.compile(r"\A[A-Za-z0-9._:-]{1,64}\Z")
_TS_RANGE = "a timestamp (a finite number of ms in [0, 2**63-1])"
_EPOCH_RANGE = "an epoch (an integer in [0, 2**63-1] or 1-64 characters [A-Za-z0-9._:-])"
#: device keys given as numbers: at most this many digits (str() of a huge int raises)
_MAX_INT_KEY = 10**20

#: (device key, sequence or None, device timestamp in ms or None, boot epoch or "")
Reading = tuple[str, int | None, int | None, str]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that goes to the dead-letter log instead of the stream."""

    reason: str
    detail: str
    device: str = ""

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown rejection reason {self.reason!r}")


def topic_pattern(pattern: str) -> re.Pattern[str]:
    """Compile ``devices/{device}/+`` into a regex with one ``device`` group.

    ``{device}`` and ``+`` match one topic level, a trailing ``#`` any number of levels.
    """
    parts = []
    for level in pattern.split("/"):
        if level == "{device}":
            parts.append(r"(?P<device>[^/]+)")
        elif level == "+":
            parts.append(r"[^/]+")
        elif level == "#":
            parts.append(r".*")
        elif "{device}" in level:
            head, _, tail = level.partition("{device}")
            parts.append(re.escape(head) + r"(?P<device>[^/]+?)" + re.escape(tail))
        else:
            parts.append(re.escape(level))
    return re.compile("/".join(parts) + r"\Z")


_json_scan = json.JSONDecoder().scan_once
_WS = " \t\n\r"


def _decode_json(payload: bytes) -> Any:
    """``json.loads`` minus its Python layers (encoding sniffing, wrappers): the C scanner.

    Same result for UTF-8 payloads; ~2x faster on the small readings of the hot path.
    """
    text = payload.decode()
    start = 0
    if text[:1] in _WS:
        text = text.strip(_WS)
    try:
        doc, end = _json_scan(text, start)
    except StopIteration as exc:
        raise ValueError(f"no JSON value at position {exc.value}") from None
    if end != len(text) and text[end:].strip(_WS):
        raise ValueError(f"extra data after the JSON value at position {end}")
    return doc


#: orjson reads integers within 64 bits as int: only a float this large may have been one
_INT64 = float(2**63)


def json_reader(fields: tuple[str, ...]) -> Callable[[bytes], Any]:
    """The JSON decoder of a stream that reads ``fields``: orjson (a third of the time of
    ``_decode_json`` on a reading, the largest part of inspecting one), with
    ``_decode_json``'s answer wherever the two could differ, so a payload's fate is the
    same: orjson refuses what the json module accepts (NaN, infinities, lone
    surrogates), and turns an integer past 64 bits into a float, so a field read as a
    float that large is decoded again; a timestamp in seconds with a fraction is not
    (tests/edge_agent/test_payload_rules.py compares the two)."""
    loads, error = orjson.loads, orjson.JSONDecodeError

    def decode(payload: bytes) -> Any:
        try:
            doc = loads(payload)
        except error:
            return _decode_json(payload)
        if type(doc) is dict:
            for name in fields:
                value = doc.get(name)
                if type(value) is float and not -_INT64 < value < _INT64:
                    return _decode_json(payload)  # maybe an integer past 64 bits
        return doc
    return decode


def _decode_cbor(payload: bytes) -> Any:
    return cbor2.loads(payload)


class PayloadRules:
    """What one stream reads from its payloads, compiled from its config."""

    def __init__(self, *, payload: str, device_key: str, sequence_field: str = "seq",
                 timestamp_field: str = "ts", epoch_field: str = "",
                 require_sequence: bool = False, max_payload_bytes: int = 256 * 1024) -> None:
        if payload not in CONTENT_TYPES:
            raise ValueError(f"payload must be json, cbor or '', got {payload!r}")
        self.content_type = CONTENT_TYPES[payload]
        self.max_payload_bytes = max_payload_bytes
        self.sequence_field = sequence_field
        self.timestamp_field = timestamp_field
        self.epoch_field = epoch_field
        self.require_sequence = require_sequence
        kind, _, spec = device_key.partition(":")
        self.device_field = spec if kind == "field" else ""
        self.device_topic = topic_pattern(spec) if kind == "topic" else None
        #: the MQTT topic is stored in a header unless the device key alone rebuilds it
        self.topic_header = kind != "topic" or "+" in spec or "#" in spec
        fields = tuple(f for f in (self.device_field, sequence_field, timestamp_field,
                                   epoch_field) if f)
        self._decode = {"json": json_reader(fields), "cbor": _decode_cbor}.get(payload)
        # Parse payloads only when a field is wanted from them.
        self._parse = self._decode is not None and bool(
            self.device_field or sequence_field or timestamp_field)
        self._required = bool(self.device_field or require_sequence)
        self._topic_cache: dict[str, str | Rejected] = {}

    def device_from_topic(self, topic: str) -> str | Rejected:
        cached = self._topic_cache.get(topic)
        if cached is not None:
            return cached
        assert self.device_topic is not None
        m = self.device_topic.match(topic)
        if m is None:
            result: str | Rejected = Rejected("no_device",
                                              f"topic {topic!r} does not fit the device pattern")
        else:
            result = check_device(m.group("device"))
        if len(self._topic_cache) >= 65536:  # bounded: hostile topics must not grow memory
            self._topic_cache.clear()
        self._topic_cache[topic] = result
        return result

    def inspect(self, topic: str, payload: bytes) -> Reading | Rejected:
        """Accept (device, seq, ts, epoch) or reject one message. Never raises for any input."""
        if len(payload) > self.max_payload_bytes:
            return Rejected("oversized",
                            f"{len(payload)} bytes > max_payload_bytes {self.max_payload_bytes}")
        device: str | Rejected = ""
        if self.device_topic is not None:
            device = self._topic_cache.get(topic) or self.device_from_topic(topic)
            if type(device) is Rejected:
                return device
        if not self._parse:
            if self.require_sequence:
                return Rejected("missing_sequence", "opaque payloads carry no sequence")
            return device, None, None, ""  # type: ignore[return-value]
        try:
            doc = self._decode(payload)  # type: ignore[misc]
        except Exception as exc:  # any decoder failure: "not parseable"
            doc = None
            error = f"{type(exc).__name__}: {exc}"[:200]
        else:
            error = "" if isinstance(doc, dict) else f"not a map but {type(doc).__name__}"
        if error:
            if self._required:
                return Rejected("malformed", error,
                                device if isinstance(device, str) else "")
            return device, None, None, ""  # type: ignore[return-value]
        assert isinstance(doc, dict)
        if self.device_field:
            raw = doc.get(self.device_field)
            if type(raw) is int and -_MAX_INT_KEY < raw < _MAX_INT_KEY:
                raw = str(raw)
            if type(raw) is not str:
                return Rejected("no_device", f"field {self.device_field!r} missing or not a "
                                             "string")
            device = check_device(raw)
            if type(device) is Rejected:
                return device
        seq = None
        if self.sequence_field:
            seq = doc.get(self.sequence_field)
            if type(seq) is not int or not 0 <= seq <= MAX_SEQUENCE:
                seq = None
        if seq is None and self.require_sequence:
            return Rejected("missing_sequence",
                            f"field {self.sequence_field!r} missing or not an integer >= 0",
                            device)  # type: ignore[arg-type]
        ts = None
        if self.timestamp_field:
            ts = doc.get(self.timestamp_field)
            tt = type(ts)
            # Range checks before int(): NaN fails every comparison, inf and bignums the
            # bounds, so int() only ever sees a finite float or a small int.
            if tt is int:
                if not 0 <= ts <= MAX_TIMESTAMP:  # type: ignore[operator]
                    return _bad_value(self.timestamp_field, _TS_RANGE, ts, device)
            elif tt is float:
                if not 0.0 <= ts <= MAX_TIMESTAMP:  # type: ignore[operator]
                    return _bad_value(self.timestamp_field, _TS_RANGE, ts, device)
                ts = int(ts)  # type: ignore[arg-type]
            else:
                ts = None
        epoch = ""
        if self.epoch_field:
            raw = doc.get(self.epoch_field)
            if raw is not None:
                if type(raw) is int and 0 <= raw <= MAX_SEQUENCE:
                    epoch = str(raw)
                elif type(raw) is str and EPOCH_TEXT.match(raw) is not None:
                    epoch = raw
                else:
                    return _bad_value(self.epoch_field, _EPOCH_RANGE, raw, device)
        return device, seq, ts, epoch  # type: ignore[return-value]


def _bad_value(name: str, what: str, value: Any, device: Any) -> Rejected:
    """A ``bad_value`` rejection whose detail names the field (the value shown bounded)."""
    if type(value) is int:  # repr() of a 5000-digit int raises; show its size instead
        shown = f"an integer of {value.bit_length()} bits"
    elif type(value) is float or type(value) is bool:
        shown = repr(value)
    else:
        shown = f"a {type(value).__name__}"
        if type(value) is str:
            shown += f" of {len(value)} characters"
    return Rejected("bad_value", f"field {name!r}: {shown} is not {what}",
                    device if type(device) is str else "")


def check_device(device: str) -> str | Rejected:
    """The device key itself, or a ``bad_device`` rejection."""
    if DEVICE_KEY.match(device) is None:
        return Rejected("bad_device", f"device key {device[:140]!r} is not safe")
    return device
