"""The replica codec: records at their source offsets, as the broker target sends them.

Strategy: one module owns the body of ``POST /v1/replicate/{topic}/{partition}``, both
directions: ``encode_records`` (the broker mirror target) and ``decode_records`` (the
replication endpoint of the target broker, which must check everything before it
appends). The body is CBOR ``{"records": [[offset, key, value, timestamp, [[name,
value], ...]], ...]}`` with consecutive offsets. Every field is checked: offsets and
timestamps in [0, 2**63), key and value byte strings, at most ``MAX_HEADERS`` headers of
a text name of at most ``MAX_HEADER_NAME_BYTES`` UTF-8 bytes and a byte-string value;
what is wrong is a ``BadRecords`` naming the record and field (a 400, or 413 for too
many records), never something a mirror would retry forever. CBOR items are counted
before decoding (``ITEMS_PER_RECORD``), so a hostile body cannot make the decoder build
more than the request limit allows.
"""

from __future__ import annotations

from typing import Any

import cbor2

from shared_log import Record
from uplink import (
    MAX_HEADER_NAME_BYTES,
    MAX_HEADERS,
    MAX_OFFSET,
    MAX_TIMESTAMP,
    BodyTooLarge,
    MalformedBatch,
    load_cbor,
)

CBOR = "application/cbor"
#: CBOR items per record a replication body may hold: a row is 6 plus 3 per header.
ITEMS_PER_RECORD = 16


class BadRecords(ValueError):
    """A replication body that cannot be stored: 400 (or 413) naming the field."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status = field, message, status


def encode_records(records: list[Any]) -> bytes:
    """The POST body for StoredRecords (used by the broker mirror target)."""
    return cbor2.dumps({"records": [
        [r.offset, r.key, r.value, r.timestamp, [[n, v] for n, v in r.headers]]
        for r in records]})


def decode_records(body: bytes, max_records: int = 10_000) -> list[tuple[int, Record]]:
    """Parse and validate the CBOR body; ``BadRecords`` names what is wrong."""
    try:
        doc = load_cbor(body, ITEMS_PER_RECORD * max_records + 64)
    except BodyTooLarge as exc:
        raise BadRecords("records", f"{exc.message}: at most {max_records} records "
                         "per request", 413) from None
    except MalformedBatch as exc:
        raise BadRecords("body", exc.message) from None
    rows = doc.get("records") if type(doc) is dict else None
    if type(rows) is not list or not rows:
        raise BadRecords("records", "must be a non-empty array")
    if len(rows) > max_records:
        raise BadRecords("records", f"{len(rows)} records, over the limit of {max_records}",
                         413)
    out: list[tuple[int, Record]] = []
    for i, row in enumerate(rows):
        off, rec = _record(row, f"records[{i}]")
        if out and off != out[-1][0] + 1:
            raise BadRecords(f"records[{i}].offset", "offsets must be consecutive")
        out.append((off, rec))
    return out


def _record(row: Any, where: str) -> tuple[int, Record]:
    if type(row) is not list or len(row) != 5:
        raise BadRecords(where, "must be [offset, key, value, timestamp, headers]")
    off, key, value, ts, headers = row
    if type(off) is not int or not 0 <= off <= MAX_OFFSET:
        raise BadRecords(f"{where}.offset", "must be an integer in [0, 2**63)")
    if type(key) is not bytes:
        raise BadRecords(f"{where}.key", "must be a byte string")
    if type(value) is not bytes:
        raise BadRecords(f"{where}.value", "must be a byte string")
    if type(ts) is not int or not 0 <= ts <= MAX_TIMESTAMP:
        raise BadRecords(f"{where}.timestamp", "must be an integer of ms in [0, 2**63)")
    if type(headers) is not list or len(headers) > MAX_HEADERS:
        raise BadRecords(f"{where}.headers", f"must be an array of at most {MAX_HEADERS} "
                         "[name, value] pairs")
    pairs = []
    for pair in headers:
        if (type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str
                or type(pair[1]) is not bytes):
            raise BadRecords(f"{where}.headers", "each header is [text name, byte value]")
        name = pair[0]
        if len(name) > MAX_HEADER_NAME_BYTES // 4 and len(
                name.encode("utf-8", "surrogatepass")) > MAX_HEADER_NAME_BYTES:
            raise BadRecords(f"{where}.headers",
                             f"a header name is at most {MAX_HEADER_NAME_BYTES} UTF-8 bytes")
        pairs.append((name, pair[1]))
    return off, Record(key, value, ts, tuple(pairs))


__all__ = ["CBOR", "BadRecords", "decode_records", "encode_records"]
