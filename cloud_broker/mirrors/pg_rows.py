"""Rows of the PostgreSQL target, built without I/O: what a record becomes, and why it
never makes the server refuse a batch.

Strategy: the COPY (built by ``pg_copy``) carries text only where it is valid UTF-8
without NUL, and jsonb only where the value passed the checks below (or, in ``FAST``
mode, is shaped like an object or array). So every check the server would make on a
value is made here first,
and a value that fails one is kept as bytes instead: a record is always stored, never
rejected (G7). Python's ``json`` accepts a few things ``jsonb`` does not, and each is
turned away here:

* ``NaN``/``Infinity`` (``parse_constant`` raises), ``\\u0000`` and lone surrogates
  (``jsonb`` has no NUL and needs valid UTF-8),
* numbers whose exponent or length is beyond ``numeric`` (``1e999999``),
* nesting deeper than the interpreter's recursion limit (``RecursionError``).

For speed, a value shaped like a JSON object or array is not parsed here at all by
default (``FAST``): the server parses it into jsonb anyway, and telemetry is almost
always well-formed. Should the server refuse a batch as bad data, the target writes it
again with every value checked here (``STRICT``), and if even that is refused, with every
value as bytes (``BYTES``): nothing is ever stuck behind one payload, and a hostile
device costs at most two extra transactions per batch.

Typed columns (``fields``) come from the same parsed document: a field whose JSON value
does not fit the column's type (a string in a ``double`` column, an integer beyond
bigint, a non-finite float) is NULL, not an error.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring_ascii as _quote  # the C encoder of json.dumps
from typing import Any

#: column types a configured JSON field may have -> PostgreSQL type
FIELD_TYPES = {"text": "text", "bigint": "bigint", "double": "double precision",
               "boolean": "boolean", "jsonb": "jsonb"}
_NUMBER = re.compile(r"^-?\d{1,1000}(?:\.\d{1,1000})?(?:[eE](?P<exp>[-+]?\d{1,4}))?$")
_INT64 = (-(1 << 63), (1 << 63) - 1)
#: How values are judged, cheapest first; the target steps down one on a refused batch.
#: FAST: a text value shaped like an object or array ({...}, [...]) goes to jsonb unparsed
#: (the server parses it anyway); anything else, or any value when typed fields are
#: configured, is parsed here. STRICT: every value is parsed here. BYTES: no jsonb at all.
FAST, STRICT, BYTES = "fast", "strict", "bytes"
MODES = (FAST, STRICT, BYTES)


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON jsonb accepts")


def _number(text: str) -> float:
    m = _NUMBER.match(text)
    if m is None or (m["exp"] is not None and abs(int(m["exp"])) > 1000):
        raise ValueError("number beyond numeric")
    return float(text)


_DECODER = json.JSONDecoder(parse_constant=_constant, parse_float=_number)


def parse_json(text: str) -> Any:
    """The document ``text`` holds, or raises ValueError if ``jsonb`` would refuse it."""
    if "\\u0000" in text:
        raise ValueError("jsonb holds no NUL")
    try:
        doc = _DECODER.decode(text)
        if "\\u" in text:  # escapes may pair badly: a lone surrogate is not UTF-8
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except (RecursionError, UnicodeEncodeError) as exc:
        raise ValueError(f"not jsonb: {type(exc).__name__}") from exc
    return doc


def clean_text(b: bytes) -> str | None:
    """``b`` as text PostgreSQL accepts (UTF-8, no NUL), or None."""
    if b"\x00" in b:
        return None
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return None


def headers_json(headers: Sequence[tuple[str, bytes]]) -> str | None:
    """Headers as a jsonb array of ``[name, value]`` pairs (order and repeats kept); a
    value that is not clean text is ``{"base64": ...}``. None when there are none."""
    if not headers:
        return None
    out = []
    for name, value in headers:
        text = clean_text(value)
        v = (_quote(text) if text is not None
             else '{"base64":"' + base64.b64encode(value).decode() + '"}')
        out.append(f"[{_name(name)},{v}]")
    return "[" + ",".join(out) + "]"


@functools.lru_cache(maxsize=256)
def _name(name: str) -> str:
    """A header name as a JSON string jsonb takes (names repeat: cached)."""
    return _quote(name.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd"))


def _typed(kind: str, v: Any) -> Any:
    if v is None:
        return None
    if kind == "text":
        return v if isinstance(v, str) else None
    if kind == "bigint":
        ok = isinstance(v, int) and not isinstance(v, bool) and _INT64[0] <= v <= _INT64[1]
        return v if ok else None
    if kind == "double":
        if isinstance(v, bool) or not isinstance(v, int | float):
            return None
        try:
            f = float(v)
        except OverflowError:
            return None
        return f if math.isfinite(f) else None
    if kind == "boolean":
        return v if isinstance(v, bool) else None
    return json.dumps(v)  # jsonb: the field's own JSON (already checked as part of the doc)


Row = tuple[int, bytes, bytes, int, tuple[tuple[str, bytes], ...]]


def record_of(row: Mapping[str, Any]) -> Row:
    """(offset, key, value, timestamp, headers) of a stored row, the inverse of
    ``pg_copy.copy_data`` up to jsonb's normal form (key order, spacing) for JSON values."""
    key = row["key"].encode() if row["key"] is not None else bytes(row["key_bytes"])
    if row["value_bytes"] is None:  # jsonb (a JSON null reads as None too)
        value = json.dumps(row["value"], sort_keys=True).encode()
    else:
        value = bytes(row["value_bytes"])
    headers = tuple((n, v.encode() if isinstance(v, str) else base64.b64decode(v["base64"]))
                    for n, v in (row["headers"] or ()))
    return row["offset"], key, value, row["ts_ms"], headers


__all__ = ["BYTES", "FAST", "FIELD_TYPES", "MODES", "STRICT", "clean_text",
           "headers_json", "parse_json", "record_of"]
