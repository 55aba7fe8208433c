"""Binary COPY data of the PostgreSQL target's table, built without I/O.

Strategy: the rows of a batch become one ``bytes`` in PostgreSQL's binary COPY format
(header, then per row a field count and each field as length + bytes, then a trailer),
written with a single ``copy.write``. Packing the fixed-width fields of a row with one
``struct`` call and passing key, value and headers through as the bytes they already are
costs about a third of psycopg's ``write_row`` with per-value dumpers, and the server
reads every column in its final type: ``time`` as binary ``timestamptz`` (computed
here, so no expression is needed) and ``value``/``headers`` as binary ``jsonb`` (version
byte 1, then the text: the server parses it once, straight into the table).

What goes in as text or jsonb is judged by the same rules as ``pg_rows`` (``MODES``):
valid UTF-8 without NUL, and a value outside ``FAST`` mode (or not shaped like an object
or array) parsed here first; anything else is stored as bytes, so the server refuses a
batch only for a value ``FAST`` let through, and the target writes it again stricter.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from shared_log import StoredRecord

from .pg_rows import BYTES, FAST, _name, _typed, headers_json, parse_json

#: the table's columns in COPY order, before the configured fields
COLUMNS = ("topic", "partition", "offset", "key", "key_bytes", "time", "ts_ms", "value",
           "value_bytes", "headers")
HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = b"\xff\xff"
NULL = b"\xff\xff\xff\xff"
#: records per piece of COPY data built between two yields to the event loop
CHUNK = 1000
#: record timestamps (ms) are clamped into years 1..9999 for the ``time`` column
TIME_RANGE_MS = (-62135596800000, 253402300799999)
#: ms between 1970-01-01 and 2000-01-01, PostgreSQL's epoch for binary timestamps
PG_EPOCH_MS = 946_684_800_000
_LEAD = struct.Struct(">iqi").pack         # offset field, then the key's length
#: key_bytes NULL, time, ts_ms, the value's length and jsonb version 1
_MIDDLE = struct.Struct(">iiqiqib").pack
_TAIL = struct.Struct(">iib").pack         # value_bytes NULL, the headers' length, version 1
_JSONB = struct.Struct(">ib").pack         # length, jsonb version 1
_I4 = struct.Struct(">i").pack
_Q8 = struct.Struct(">iq").pack
_D8 = struct.Struct(">id").pack
_TRUE, _FALSE = b"\x00\x00\x00\x01\x01", b"\x00\x00\x00\x01\x00"
#: bytes a JSON string holds as they are (printable ASCII but quote and backslash)
_PLAIN = bytes(range(0x20, 0x7F)).replace(b'"', b"").replace(b"\\", b"")
_header_leads: dict[str, bytes] = {}


def _text(b: bytes) -> bool:
    """``b`` is text PostgreSQL takes (UTF-8 without NUL); ASCII needs no decoding."""
    if 0 in b:  # an int: no TypeError raised and caught inside, as for b"\\x00"
        return False
    if b.isascii():
        return True
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _container(b: bytes) -> bool:
    end = b.rstrip()[-1:]
    return (b[:1] == b"{" and end == b"}") or (b[:1] == b"[" and end == b"]")


def _field(kind: str, v: Any) -> bytes:
    """One typed field, ``v`` already fitted by ``pg_rows._typed`` (None is NULL)."""
    if v is None:
        return NULL
    if kind == "text":
        b = v.encode()  # parse_json refused NUL and lone surrogates
        return _I4(len(b)) + b
    if kind == "bigint":
        return _Q8(8, v)
    if kind == "double":
        return _D8(8, v)
    if kind == "boolean":
        return _TRUE if v else _FALSE
    b = v.encode()  # jsonb: json.dumps output, ASCII
    return _JSONB(len(b) + 1, 1) + b


def _header_lead(name: str) -> bytes:
    """``[["name","`` as jsonb text, cached (a topic's records carry the same names)."""
    lead = _header_leads.get(name)
    if lead is None:
        if len(_header_leads) > 256:
            _header_leads.clear()
        lead = _header_leads[name] = ("[[" + _name(name) + ",\"").encode()
    return lead


def _plain_rows(lead: bytes, records: Sequence[StoredRecord], out: list[bytes]
                ) -> list[bytes] | None:
    """The rows of a batch of the usual shape, or None: every key and value ASCII without
    NUL, every value an object or array, every record one header of the same name whose
    value needs no escaping. Checking that once for the whole batch (joined) costs less
    than checking each record, and the rows then need no decision."""
    try:
        values = [h for ((_, h),) in (r.headers for r in records)]  # exactly one header
    except ValueError:
        return None
    names = {r.headers[0][0] for r in records}
    keys = b"".join([r.key for r in records])
    heads = b"".join(values)
    body = b"".join([r.value for r in records])
    if (len(names) != 1 or not keys.isascii() or 0 in keys or not body.isascii()
            or 0 in body or heads.translate(None, _PLAIN)):
        return None
    head_lead = _header_lead(names.pop())
    extra = len(head_lead) + 3 + 1  # lead, the closing '"]]', the jsonb version byte
    lo, hi = TIME_RANGE_MS
    extend = out.extend
    try:
        for rec, h in zip(records, values, strict=True):
            key, value, ts = rec.key, rec.value, rec.timestamp
            if not ((value[0] == 123 and value[-1] == 125) or (value[0] == 91 and value[-1]
                                                                 == 93) or _container(value)):
                return None
            extend((lead, _LEAD(8, rec.offset, len(key)), key,
                    _MIDDLE(-1, 8, ((lo if ts < lo else hi if ts > hi else ts) - PG_EPOCH_MS)
                            * 1000, 8, ts, len(value) + 1, 1),
                    value, _TAIL(-1, len(h) + extra, 1), head_lead, h, b'"]]'))
    except IndexError:  # an empty value
        return None
    return out


def _headers(headers: Sequence[tuple[str, bytes]]) -> bytes:
    """``pg_rows.headers_json`` as bytes; one header of plain text (the broker's own
    ``origin``) needs no JSON encoder."""
    if len(headers) == 1 and not headers[0][1].translate(None, _PLAIN):
        return _header_lead(headers[0][0]) + headers[0][1] + b'"]]'
    return headers_json(headers).encode()  # type: ignore[union-attr]


def copy_data(topic: str, partition: int, records: Sequence[StoredRecord], first: int,
              fields: Mapping[str, str], mode: str = FAST, *, header: bool = True,
              trailer: bool = True) -> bytes:
    """The COPY data of the records at offset ``first`` or later, columns ``COLUMNS``
    then ``fields``; ``mode`` as in ``pg_rows.MODES``. Without ``header`` or ``trailer``
    it is a piece of a longer COPY (see ``copy_chunks``)."""
    t = topic.encode()
    lead = struct.pack(">hi", len(COLUMNS) + len(fields), len(t)) + t + struct.pack(
        ">ii", 4, partition)
    if records and records[0].offset < first:
        records = [r for r in records if r.offset >= first]
    if mode == FAST and not fields and records:
        rows = _plain_rows(lead, records, [HEADER] if header else [])
        if rows is not None:
            if trailer:
                rows.append(TRAILER)
            return b"".join(rows)
    lo, hi = TIME_RANGE_MS
    out = [HEADER] if header else []
    add, extend = out.append, out.extend
    for rec in records:
        key, value, ts = rec.key, rec.value, rec.timestamp
        if _text(key):
            extend((lead, _LEAD(8, rec.offset, len(key)), key, NULL))
        else:
            extend((lead, _LEAD(8, rec.offset, -1), _I4(len(key)), key))
        add(_Q8(8, ((lo if ts < lo else hi if ts > hi else ts) - PG_EPOCH_MS) * 1000)
            + _Q8(8, ts))
        doc: Any = None
        jsonb = False
        if mode != BYTES and _text(value):
            if mode == FAST and not fields and _container(value):
                jsonb = True
            else:
                try:
                    doc = parse_json(value.decode())
                    jsonb = True
                except ValueError:
                    pass
        if jsonb:
            extend((_JSONB(len(value) + 1, 1), value, NULL))
        else:
            extend((NULL, _I4(len(value)), value))
        if rec.headers:
            head = _headers(rec.headers)
            extend((_JSONB(len(head) + 1, 1), head))
        else:
            add(NULL)
        if fields:
            got = doc if isinstance(doc, dict) else {}
            add(b"".join(_field(kind, _typed(kind, got.get(name)))
                         for name, kind in fields.items()))
    if trailer:
        add(TRAILER)
    return b"".join(out)


def copy_chunks(topic: str, partition: int, records: Sequence[StoredRecord], first: int,
                fields: Mapping[str, str], mode: str = FAST, size: int = CHUNK
                ) -> Iterator[bytes]:
    """``copy_data`` in pieces of ``size`` records: the caller yields to its event loop
    between pieces, so a large batch never holds the loop for more than ~1 ms."""
    n = len(records)
    for i in range(0, max(n, 1), size):
        yield copy_data(topic, partition, records[i:i + size], first, fields, mode,
                        header=i == 0, trailer=i + size >= n)


__all__ = ["CHUNK", "COLUMNS", "HEADER", "TIME_RANGE_MS", "TRAILER", "copy_chunks",
           "copy_data"]
