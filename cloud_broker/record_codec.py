"""The bytes of a fetch response: CBOR in columns, or JSON in rows. Both sides use it.

Strategy: a fetch answers up to 100 000 records, so the CBOR form is columnar: one list
per field, offsets as runs ``[first, count]``, and fixed-width integers as RFC 8746 typed
arrays (tag 79: int64 little-endian, tag 69: uint16 little-endian). The server fills the
columns straight from the log (``shared_log.fetch_columns``) and the client builds its
records with C-level ``zip``/``map``, so neither side touches a record in Python more than
once. JSON is for people and curl: rows, bytes as base64, or utf-8 text when asked and
possible; every JSON record names its ``encoding``. docs/consumers.md has both layouts.

Sans-IO: no HTTP here; ``http_consume`` (server) and ``client`` (consumer) wrap it.
"""

from __future__ import annotations

import base64
import gc
import sys
from array import array
from collections.abc import Iterable, Iterator
from functools import partial
from itertools import chain, repeat
from typing import Any, NamedTuple

import cbor2
import orjson

from shared_log import ColumnFetch, RecordColumns

TAG_INT64_LE = 79
TAG_UINT16_LE = 69
ENCODINGS = ("base64", "utf8")
_SWAP = sys.byteorder != "little"

Headers = tuple[tuple[str, bytes], ...]


class MalformedResponse(ValueError):
    """A fetch response that does not have the documented shape."""


class ConsumerRecord(NamedTuple):
    """One record as a consumer sees it. ``offset`` is its position in the partition."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes
    value: bytes
    headers: Headers = ()


# tuple.__new__ straight from C: ConsumerRecord._make is a Python function (~2x slower).
_new_record = partial(tuple.__new__, ConsumerRecord)


class FetchResponse(NamedTuple):
    """A decoded fetch: the records and where the partition stands."""

    topic: str
    partition: int
    records: list[ConsumerRecord]
    start_offset: int
    end_offset: int  # the high watermark: every offset below it is durable
    next_offset: int
    skipped: list[tuple[int, int]]  # [first, last] offset ranges lost to corruption


def meta(topic: str, partition: int, fetch: ColumnFetch, start: int, end: int) -> dict[str, Any]:
    """The fields every fetch response (and 416 refusal) carries besides the records."""
    return {"topic": topic, "partition": partition, "start_offset": start, "end_offset": end,
            "next_offset": fetch.next_offset,
            "skipped": [{"first": s.first, "last": s.last} for s in fetch.skipped]}


# -- CBOR (columns) ------------------------------------------------------------------------


def _typed(tag: int, values: array) -> cbor2.CBORTag:
    if _SWAP:
        values = array(values.typecode, values)
        values.byteswap()
    return cbor2.CBORTag(tag, values.tobytes())


def encode_cbor(head: dict[str, Any], cols: RecordColumns) -> bytes:
    body = dict(head)
    body["records"] = {
        "count": len(cols),
        "offsets": cols.runs,
        "timestamps": _typed(TAG_INT64_LE, cols.timestamps),
        "keys": cols.keys,
        "values": cols.values,
        "headers": {"names": cols.header_names,
                    "counts": _typed(TAG_UINT16_LE, cols.header_counts),
                    "name_index": _typed(TAG_UINT16_LE, cols.header_name_index),
                    "values": cols.header_values},
    }
    return cbor2.dumps(body)


def _untyped(value: Any, tag: int, typecode: str) -> array:
    if not (isinstance(value, cbor2.CBORTag) and value.tag == tag
            and isinstance(value.value, bytes)):
        raise MalformedResponse(f"expected a CBOR typed array with tag {tag}")
    out = array(typecode)
    out.frombytes(value.value)
    if _SWAP:
        out.byteswap()
    return out


def _headers(h: dict[str, Any], n: int) -> Iterable[Headers]:
    names, values = h["names"], h["values"]
    counts_tag = h["counts"]
    raw = counts_tag.value if isinstance(counts_tag, cbor2.CBORTag) else None
    if raw == bytes(2 * n):
        return repeat((), n)
    if len(names) == 1 and raw == b"\x01\x00" * n and len(values) == n:
        name = names[0]
        return [((name, v),) for v in values]
    counts = _untyped(counts_tag, TAG_UINT16_LE, "H")
    index = _untyped(h["name_index"], TAG_UINT16_LE, "H")
    if len(counts) != n or not len(index) == len(values) == sum(counts):
        raise MalformedResponse("header columns do not match the records")
    out: list[Headers] = []
    pos = 0
    for c in counts:
        out.append(tuple((names[index[j]], values[j]) for j in range(pos, pos + c)))
        pos += c
    return out


def decode_cbor(body: bytes) -> FetchResponse:
    """Decode a CBOR fetch response; raises MalformedResponse when it is not one.

    The cyclic garbage collector is paused meanwhile: decoding allocates a few tuples per
    record, none of them in a cycle, and the collections they would trigger (every 700
    allocations, scanning ever older generations) cost as much as the decoding itself.
    """
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        return _decode_cbor(body)
    finally:
        if paused:
            gc.enable()


def _decode_cbor(body: bytes) -> FetchResponse:
    try:
        d = cbor2.loads(body)
        topic, partition, r = d["topic"], d["partition"], d["records"]
        n = r["count"]
        offsets = chain.from_iterable(range(f, f + c) for f, c in r["offsets"])
        timestamps = _untyped(r["timestamps"], TAG_INT64_LE, "q")
        keys, values = r["keys"], r["values"]
        if not (len(timestamps) == len(keys) == len(values) == n
                == sum(c for _, c in r["offsets"])):
            raise MalformedResponse("record columns differ in length")
        records = list(map(_new_record, zip(
            repeat(topic), repeat(partition), offsets, timestamps, keys, values,
            _headers(r["headers"], n), strict=False)))
        skipped = [(s["first"], s["last"]) for s in d["skipped"]]
        return FetchResponse(topic, partition, records, d["start_offset"], d["end_offset"],
                             d["next_offset"], skipped)
    except (cbor2.CBORDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
        if isinstance(exc, MalformedResponse):
            raise
        raise MalformedResponse(f"not a fetch response: {exc}") from exc


# -- JSON (rows) ---------------------------------------------------------------------------


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def record_json(offset: int, timestamp: int, key: bytes, value: bytes, headers: Headers,
                encoding: str = "base64") -> dict[str, Any]:
    """One record as JSON: key, value and header values as utf-8 text when ``encoding`` is
    ``utf8`` and they all decode, otherwise base64; ``encoding`` says which."""
    if encoding == "utf8":
        try:
            return {"offset": offset, "timestamp": timestamp, "key": key.decode(),
                    "value": value.decode(), "headers": [[n, v.decode()] for n, v in headers],
                    "encoding": "utf8"}
        except UnicodeDecodeError:
            pass
    return {"offset": offset, "timestamp": timestamp, "key": _b64(key), "value": _b64(value),
            "headers": [[n, _b64(v)] for n, v in headers], "encoding": "base64"}


def json_records(cols: RecordColumns, encoding: str) -> Iterator[dict[str, Any]]:
    for r in cols.rows():
        yield record_json(r.offset, r.timestamp, r.key, r.value, r.headers, encoding)


def encode_json_body(head: dict[str, Any], cols: RecordColumns, encoding: str) -> dict[str, Any]:
    body = dict(head)
    body["records"] = list(json_records(cols, encoding))
    return body


def encode_json(head: dict[str, Any], cols: RecordColumns, encoding: str) -> bytes:
    return orjson.dumps(encode_json_body(head, cols, encoding))


def decode_json_record(topic: str, partition: int, r: dict[str, Any]) -> ConsumerRecord:
    """The inverse of ``record_json`` (used for the streaming endpoint's events)."""
    if r.get("encoding") == "utf8":
        def dec(s: str) -> bytes:
            return s.encode()
    else:
        def dec(s: str) -> bytes:
            return base64.b64decode(s, validate=True)
    try:
        return ConsumerRecord(topic, partition, r["offset"], r["timestamp"], dec(r["key"]),
                              dec(r["value"]), tuple((n, dec(v)) for n, v in r["headers"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedResponse(f"not a record: {exc}") from exc
