"""Bytes <-> messages: the uplink wire format (CBOR, optionally compressed).

Strategy: the batch is the hot path (the target is 200k records/s through one
Python process on each side), so its wire form is built for cbor2's C code to
do the work and for neither side to build an object per record. One CBOR map
with one-letter keys; in version 2 (what ``encode_batch`` writes) the records
are *columns*: an array of keys, one of timestamps, one of values, offsets only
when the range has holes, and headers flattened with a table of their names
(``RecordBlock``). Encoding is one ``dumps`` of lists the edge read straight
from its log; decoding is one ``CBORDecoder.decode`` and a few whole-column
checks that run in C (``set(map(type, column))``, ``min``/``max``). Only when a
check fails does a loop look for the first bad record to name it, so the error
path pays for the detail, not the happy path. Version 1 bodies (a row
``[offset - base, key, timestamp, value, headers or null]`` per record) are
still accepted. Acks and refusals are one per batch, so they use the same
readable dict as their JSON form.

Peer bytes are untrusted: decompression is bounded (a zip bomb becomes
``BodyTooLarge``), CBOR nesting is bounded, duplicate map keys and trailing
bytes are refused, and every failure is a ``MalformedBatch`` naming the field.
See docs/protocol.md for the layout.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import cbor2

from ._block import RecordBlock
from ._cbor import CensusError, census
from ._columns import decode_columns
from ._compression import _TOKENS, compress, decompress
from ._errors import (
    BodyTooLarge,
    LocalProtocolError,
    MalformedBatch,
    MalformedReply,
    show,
)
from ._types import (
    MAX_OFFSET,
    MAX_TIMESTAMP,
    Ack,
    Batch,
    Compression,
    Refusal,
    UplinkRecord,
    is_safe_name,
)

WIRE_VERSION = 2
_READ_VERSIONS = (1, 2)
DEFAULT_MAX_DECOMPRESSED_SIZE = 64 * 1024 * 1024
#: Records one batch may hold unless the caller says otherwise (the edge sends 5000).
DEFAULT_MAX_RECORDS = 100_000
#: CBOR items allowed per allowed record: a record with its headers takes 3 + 2 per header
#: in version 2 (6 + 3 per header in version 1), so this leaves room for several headers.
ITEMS_PER_RECORD = 16

# map -> records -> record -> headers -> header pair; a little slack so a
# slightly wrong shape still reaches the checks that name the field.
_MAX_DEPTH = 8

# An ack or refusal is one small map.
_REPLY_ITEMS = 64

_NAME_KEYS = (("e", "edge_id"), ("s", "stream"), ("g", "generation"))


def _loads(body: bytes, error: type[MalformedBatch | MalformedReply],
           max_items: int | None = None) -> Any:
    if not body:
        raise error("body", "empty body")
    if max_items is not None:
        try:  # before cbor2 builds anything: bounds time and memory
            census(body, max_items)
        except CensusError as exc:
            if exc.too_many and error is MalformedBatch:
                raise BodyTooLarge("body", str(exc)) from None
            raise error("body", str(exc)) from None
    decoder = cbor2.CBORDecoder(
        io.BytesIO(body),
        max_depth=_MAX_DEPTH,
        allow_duplicate_keys=False,
        strict_hashable_types=True,
    )
    try:
        message = decoder.decode()
    except (cbor2.CBORDecodeError, RecursionError, ValueError, OverflowError) as exc:
        raise error("body", f"invalid CBOR: {show(str(exc))}") from exc
    try:
        decoder.read(1)
    except cbor2.CBORDecodeEOF:
        return message
    raise error("body", "trailing bytes after the CBOR message")


def load_cbor(body: bytes, max_items: int) -> Any:
    """One CBOR message from a peer, decoded with the bounds of ``decode_batch``.

    At most ``max_items`` items (counted before anything is built), nesting bounded, no
    tags but bignums, no duplicate map keys, no trailing bytes. Raises ``BodyTooLarge``
    past ``max_items`` and ``MalformedBatch`` (field ``body``) for anything else wrong.
    For the broker's other CBOR endpoints (replication).
    """
    return _loads(body, MalformedBatch, max_items)


# --- batches --------------------------------------------------------------


def encode_batch(
    batch: Batch, compression: Compression = "none", *, level: int | None = None
) -> tuple[bytes, str]:
    """Encode ``batch``; return the body and its Content-Encoding token.

    ``compression`` is ``"none"``, ``"gzip"`` or ``"zstd"`` (token
    ``identity``, ``gzip``, ``zstd``); ``level`` overrides the default level.
    """
    token = _TOKENS.get(compression)
    if token is None:
        raise LocalProtocolError(f"unknown compression {compression!r}; use none, gzip or zstd")
    if type(batch) is not Batch:
        raise LocalProtocolError("encode_batch needs a Batch")
    base = batch.base_offset
    records = batch.records
    block = records if type(records) is RecordBlock else RecordBlock.from_records(records)
    columns: dict[str, Any] = {"k": block.keys, "t": block.timestamps, "x": block.values}
    if len(block) != batch.last_offset - base + 1:  # holes in the range: say where records are
        columns["o"] = [o - base for o in block.offsets]
    if block.header_counts is not None:
        columns.update(hc=block.header_counts, hn=block.header_names, hi=block.header_index,
                       hv=block.header_values)
    message = {
        "v": WIRE_VERSION,
        "e": batch.edge_id,
        "s": batch.stream,
        "g": batch.generation,
        "b": base,
        "l": batch.last_offset,
        "r": columns,
    }
    try:
        body = cbor2.dumps(message)
    except (cbor2.CBOREncodeError, TypeError) as exc:
        raise LocalProtocolError(f"batch cannot be encoded: {exc}") from exc
    return compress(body, compression, level), token


def decode_batch(
    body: bytes,
    content_encoding: str | None,
    *,
    max_decompressed_size: int = DEFAULT_MAX_DECOMPRESSED_SIZE,
    max_records: int = DEFAULT_MAX_RECORDS,
) -> Batch:
    """Decode a batch body sent with ``content_encoding`` (None means identity).

    Raises ``MalformedBatch`` naming the field, ``BodyTooLarge`` past
    ``max_decompressed_size`` bytes or ``max_records`` records (field ``records``),
    ``UnsupportedEncoding`` for an unknown token. Time and memory are linear in the
    body and bounded by the two limits, whatever the bytes: the CBOR items are counted
    (at most ``ITEMS_PER_RECORD`` per allowed record) before any object is built.
    """
    data = decompress(body, content_encoding, max_decompressed_size)
    try:
        message = _loads(data, MalformedBatch, ITEMS_PER_RECORD * max_records + 64)
    except BodyTooLarge as exc:
        raise BodyTooLarge("records", f"{exc.message}: at most {max_records} records "
                           "per batch") from None
    if type(message) is not dict:
        raise MalformedBatch("body", "a batch must be a CBOR map")
    if "v" not in message:
        raise MalformedBatch("version", "missing (key 'v')")
    version = message["v"]
    if type(version) is not int or version not in _READ_VERSIONS:
        raise MalformedBatch("version", f"unknown version {show(version)}; we speak 1 and 2")
    names = []
    for key, field in _NAME_KEYS:
        value = _required(message, key, field)
        if not is_safe_name(value):
            raise MalformedBatch(field, f"{show(value)} is not a safe name")
        names.append(value)
    base = _offset(message, "b", "base_offset")
    last = _offset(message, "l", "last_offset")
    if last < base:
        raise MalformedBatch("last_offset", f"{last} is before base_offset {base}")
    rows = _required(message, "r", "records")
    records: Sequence[UplinkRecord]
    if version == 1:
        if type(rows) is not list:
            raise MalformedBatch("records", "must be an array")
        records = _decode_records(rows, base, last - base)
    else:
        if type(rows) is not dict:
            raise MalformedBatch("records", "must be a map of columns")
        records = decode_columns(rows, base, last)
    if len(records) > max_records:
        raise BodyTooLarge("records", f"{len(records)} records, over the limit of "
                           f"{max_records} per batch")
    return Batch._trusted(names[0], names[1], names[2], base, last, records)


def _required(message: dict[Any, Any], key: str, field: str) -> Any:
    try:
        return message[key]
    except KeyError:
        raise MalformedBatch(field, f"missing (key {key!r})") from None


def _offset(message: dict[Any, Any], key: str, field: str) -> int:
    value = _required(message, key, field)
    if type(value) is not int:
        raise MalformedBatch(field, f"must be an integer, got {type(value).__name__}")
    if not 0 <= value <= MAX_OFFSET:
        raise MalformedBatch(field, f"{show(value)} is outside [0, 2**63)")
    return value


def _decode_records(rows: list[Any], base: int, span: int) -> tuple[UplinkRecord, ...]:
    # The one per-record loop of the broker's decode path: check and build in
    # a single pass, with no function call per record beyond the constructor.
    out: list[UplinkRecord] = []
    append = out.append
    previous = -1
    for row in rows:
        if type(row) is not list or len(row) != 5:
            _bad_record(len(out), row, previous, span)
        delta, key, timestamp, value, headers = row
        if (
            type(delta) is not int
            or not previous < delta <= span
            or type(key) is not bytes
            or type(timestamp) is not int
            or not 0 <= timestamp <= MAX_TIMESTAMP
            or type(value) is not bytes
        ):
            _bad_record(len(out), row, previous, span)
        headers = () if headers is None else _decode_headers(headers, len(out))
        previous = delta
        append(UplinkRecord(base + delta, key, timestamp, value, headers))
    return tuple(out)


def _decode_headers(headers: Any, index: int) -> tuple[tuple[str, bytes], ...]:
    if type(headers) is not list:
        raise MalformedBatch(f"records[{index}].headers", "must be null or an array of pairs")
    pairs = []
    for pair in headers:
        if type(pair) is not list or len(pair) != 2:
            raise MalformedBatch(f"records[{index}].headers", "each header must be [name, value]")
        name, value = pair
        if type(name) is not str or type(value) is not bytes:
            raise MalformedBatch(
                f"records[{index}].headers", "a header is a text name and a byte-string value"
            )
        pairs.append((name, value))
    return tuple(pairs)


def _bad_record(index: int, row: Any, previous: int, span: int) -> None:
    # Error path only: find the first bad field of the row the loop rejected.
    where = f"records[{index}]"
    if type(row) is not list or len(row) != 5:
        raise MalformedBatch(where, "must be [offset_delta, key, timestamp, value, headers]")
    delta, key, timestamp, value, _ = row
    if type(delta) is not int:
        raise MalformedBatch(f"{where}.offset", "offset delta must be an integer")
    if delta < 0:
        raise MalformedBatch(f"{where}.offset", f"offset delta {show(delta)} is negative")
    if delta <= previous:
        raise MalformedBatch(f"{where}.offset", f"offset delta {show(delta)} does not "
                             f"increase (previous {previous})")
    if delta > span:
        raise MalformedBatch(
            f"{where}.offset", f"offset base+{show(delta)} is after last_offset (base+{span})"
        )
    if type(key) is not bytes:
        raise MalformedBatch(f"{where}.key", "must be a byte string")
    if type(timestamp) is not int or not 0 <= timestamp <= MAX_TIMESTAMP:
        raise MalformedBatch(f"{where}.timestamp", "must be an integer of ms in [0, 2**63)")
    if type(value) is not bytes:
        raise MalformedBatch(f"{where}.value", "must be a byte string")
    raise AssertionError("unreachable: _bad_record called on a good record")  # pragma: no cover


# --- acks and refusals ----------------------------------------------------


def encode_ack(ack: Ack) -> bytes:
    """CBOR body of a 200 reply."""
    return cbor2.dumps(ack.to_dict())


def decode_ack(body: bytes) -> Ack:
    """Parse a 200 reply body; raises ``MalformedReply``."""
    return Ack.from_dict(_loads(body, MalformedReply, _REPLY_ITEMS))


def encode_refusal(refusal: Refusal) -> bytes:
    """CBOR body of a 409 reply."""
    return cbor2.dumps(refusal.to_dict())


def decode_refusal(body: bytes) -> Refusal:
    """Parse a 409 reply body; raises ``MalformedReply``."""
    return Refusal.from_dict(_loads(body, MalformedReply, _REPLY_ITEMS))
