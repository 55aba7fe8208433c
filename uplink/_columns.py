"""Checking the record columns of a version 2 batch from the peer.

Strategy: every check looks at a whole column at once with builtins that loop in C
(``set(map(type, column))``, ``min``, ``max``, ``sum``, ``map(operator.lt, ...)``), so
checking costs a few tens of nanoseconds per record instead of a Python loop. When a
check fails, ``_first_bad`` finds the first offending record so the error names it
(``records[17].key``) exactly as the version 1 decoder does.

Columns (docs/protocol.md): ``k`` keys (bytes), ``t`` timestamps (int ms), ``x``
values (bytes), optional ``o`` offset deltas from the base (strictly increasing, at
most ``last - base``; absent when every offset of the range has a record), and the
headers, all four or none: ``hc`` a count per record, ``hn`` the table of distinct
names (text), ``hi`` the name of each header as an index into ``hn``, ``hv`` the
value of each header (bytes).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from itertools import islice
from typing import Any

from ._block import RecordBlock
from ._errors import MalformedBatch, show
from ._types import MAX_HEADER_NAME_BYTES, MAX_HEADERS, MAX_TIMESTAMP

_HEADER_COLUMNS = ("hc", "hn", "hi", "hv")


def decode_columns(cols: dict[Any, Any], base: int, last: int) -> RecordBlock:
    """The RecordBlock of checked columns; raises MalformedBatch naming the field."""
    # Unknown columns are ignored, as unknown map keys are: a version can grow optional ones.
    keys = _list(cols, "k", "key")
    n = len(keys)
    timestamps = _list(cols, "t", "timestamp", n)
    values = _list(cols, "x", "value", n)
    _all_bytes(keys, "key")
    _all_bytes(values, "value")
    if not _only(timestamps, int) or (n and (min(timestamps) < 0
                                             or max(timestamps) > MAX_TIMESTAMP)):
        i = _first_bad(timestamps, lambda t: type(t) is int and 0 <= t <= MAX_TIMESTAMP)
        raise MalformedBatch(f"records[{i}].timestamp", "must be an integer of ms in [0, 2**63)")
    span = last - base
    if "o" in cols:
        offsets = _offsets(_list(cols, "o", "offset", n), base, span)
    elif n != span + 1:
        raise MalformedBatch("records.offset", f"{n} records for the {span + 1} offsets "
                             "[base_offset, last_offset] and no offset column")
    else:
        offsets = list(range(base, last + 1))
    present = [c for c in _HEADER_COLUMNS if c in cols]
    if not present:
        return RecordBlock(offsets, keys, timestamps, values)
    if len(present) != len(_HEADER_COLUMNS):
        missing = [c for c in _HEADER_COLUMNS if c not in cols]
        raise MalformedBatch("records.headers", f"columns {missing} missing beside {present}")
    counts = _list(cols, "hc", "headers", n)
    names = _list(cols, "hn", "headers.name", None)
    index = _list(cols, "hi", "headers.name", None)
    hvalues = _list(cols, "hv", "headers.value", None)
    if not _only(counts, int) or (n and (min(counts) < 0 or max(counts) > MAX_HEADERS)):
        i = _first_bad(counts, lambda c: type(c) is int and 0 <= c <= MAX_HEADERS)
        raise MalformedBatch(f"records[{i}].headers", f"count must be in [0, {MAX_HEADERS}]")
    total = sum(counts)
    if len(index) != total or len(hvalues) != total:
        raise MalformedBatch("records.headers", f"the counts add up to {total} headers but "
                             f"there are {len(index)} names and {len(hvalues)} values")
    if not _only(names, str) or any(len(nm) > MAX_HEADER_NAME_BYTES // 4
                                    and len(nm.encode()) > MAX_HEADER_NAME_BYTES
                                    for nm in names):
        raise MalformedBatch("records.headers.name", "names are text of at most "
                             f"{MAX_HEADER_NAME_BYTES} UTF-8 bytes")
    if not _only(index, int) or (total and (min(index) < 0 or max(index) >= len(names))):
        raise MalformedBatch("records.headers.name",
                             f"a name index must be in [0, {len(names)})")
    _all_bytes(hvalues, "headers.value", flat=True)
    return RecordBlock(offsets, keys, timestamps, values, counts, names, index, hvalues)


def _list(cols: dict[Any, Any], key: str, field: str, n: int | None = -1) -> list[Any]:
    try:
        column = cols[key]
    except KeyError:
        raise MalformedBatch(f"records.{field}", f"missing (column {key!r})") from None
    if type(column) is not list:
        raise MalformedBatch(f"records.{field}", f"column {key!r} must be an array")
    if n is not None and n >= 0 and len(column) != n:
        raise MalformedBatch(f"records.{field}",
                             f"column {key!r} has {len(column)} entries, not {n}")
    return column


def _only(column: list[Any], kind: type) -> bool:
    # bool is an int subclass, so compare exact types: True is not a timestamp.
    return set(map(type, column)) <= {kind}


def _all_bytes(column: list[Any], field: str, flat: bool = False) -> None:
    if not _only(column, bytes):
        i = _first_bad(column, lambda v: type(v) is bytes)
        where = f"records.{field}[{i}]" if flat else f"records[{i}].{field}"
        raise MalformedBatch(where, "must be a byte string")


def _offsets(deltas: list[Any], base: int, span: int) -> list[int]:
    if not deltas:
        return []
    if (not _only(deltas, int) or deltas[0] < 0 or deltas[-1] > span
            or not all(map(operator.lt, deltas, islice(deltas, 1, None)))):
        previous = -1
        for i, d in enumerate(deltas):
            if type(d) is not int:
                raise MalformedBatch(f"records[{i}].offset", "offset delta must be an integer")
            if d < 0:
                raise MalformedBatch(f"records[{i}].offset", f"offset delta {show(d)} is negative")
            if d <= previous:
                raise MalformedBatch(f"records[{i}].offset", f"offset delta {show(d)} does not "
                                     f"increase (previous {previous})")
            if d > span:
                raise MalformedBatch(f"records[{i}].offset",
                                     f"offset base+{show(d)} is after last_offset (base+{span})")
            previous = d
    return [base + d for d in deltas]


def _first_bad(column: list[Any], ok: Callable[[Any], bool]) -> int:
    # Error path only.
    return next(i for i, v in enumerate(column) if not ok(v))
