"""Payload bytes: the JSON or CBOR maps devices publish, and their deliberate corruptions.

Strategy: one flat map per message, with the three fields the pipeline and the
verifier rely on (``device``, ``seq``, ``ts`` in ms) followed by the sensor
values.  The JSON encoder is built once: ``JSONEncoder.encode`` builds a new C
encoder on every call, which was a third of the encoding cost at 50k
messages/s; the C encoder is made here once, without the circular-reference
check (our maps are flat), with the pure-Python encoder as the fallback where
the C accelerator is missing.  ``decode`` auto-detects the format so the verifier reads either.

Corruptions are made from a valid payload so they look like what a buggy
device sends: ``malformed`` yields bytes no JSON or CBOR decoder accepts,
``oversized`` a valid map padded past a size limit.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import cbor2

Format = Literal["json", "cbor"]
FORMATS: tuple[Format, ...] = ("json", "cbor")

SEQ_FIELD = "seq"
TS_FIELD = "ts"
DEVICE_FIELD = "device"
#: the boot epoch, sent only after a device's first reboot (boot 0 sends none)
BOOT_FIELD = "boot"

_JSON = json.JSONEncoder(separators=(",", ":"))
if json.encoder.c_make_encoder is not None:
    _c_encoder = json.encoder.c_make_encoder(
        None, _JSON.default, json.encoder.encode_basestring_ascii, None, ":", ",",
        False, False, True)

    def _json_encode(message: dict[str, Any]) -> str:
        return "".join(_c_encoder(message, 0))
else:  # pragma: no cover - CPython always has the accelerator
    _json_encode = _JSON.encode
_cbor_dumps = cbor2.dumps


def telemetry(device: str, seq: int, ts: int, kind: str, values: dict[str, float]) -> dict:
    """The map of one telemetry reading."""
    return {DEVICE_FIELD: device, SEQ_FIELD: seq, TS_FIELD: ts, "kind": kind, **values}


def alarm(device: str, seq: int, ts: int, name: str, values: dict[str, float]) -> dict:
    """The map of one alarm: the reading that raised it and the alarm's name."""
    return {DEVICE_FIELD: device, SEQ_FIELD: seq, TS_FIELD: ts, "alarm": name,
            "severity": "major", **values}


def encode(message: dict[str, Any], fmt: Format) -> bytes:
    """The bytes of ``message`` in ``fmt`` (compact JSON, or CBOR)."""
    if fmt == "json":
        return _json_encode(message).encode()
    return _cbor_dumps(message)


def malformed(valid: bytes, variant: int) -> bytes:
    """Bytes that neither JSON nor CBOR decodes, derived from a valid payload.

    Variant 0 truncates the map mid-way (an interrupted write); variant 1
    replaces its first bytes with 0xFF 0xFE (invalid UTF-8, and a CBOR "break"
    outside any container).
    """
    if variant % 2 == 0:
        return valid[: max(1, len(valid) // 2)]
    return b"\xff\xfe" + valid[2:]


def oversized(message: dict[str, Any], fmt: Format, size: int) -> bytes:
    """A valid payload of at least ``size`` bytes: ``message`` with a ``pad`` field."""
    base = len(encode(message, fmt))
    return encode({**message, "pad": "x" * max(0, size - base)}, fmt)


def decode(value: bytes) -> dict[str, Any] | None:
    """The map in ``value`` (JSON if it starts with ``{``, else CBOR); None if it is not one."""
    try:
        is_json = value[:1] == b"{"
        message = json.loads(value) if is_json else cbor2.loads(value)
    except (ValueError, cbor2.CBORDecodeError, RecursionError, UnicodeDecodeError):
        return None
    return message if isinstance(message, dict) else None
