"""Bounded CBOR: count a peer's items before anything is built from them.

Strategy: decoding CBOR turns one byte into up to ~70 bytes of Python objects (an empty
array is one byte on the wire and a 56-byte list in memory), and cbor2 has no limit on the
number of items, only on nesting. So before cbor2 sees a body, ``census`` walks its item
heads (no objects built) and refuses it when it holds more items than the caller allows,
when it declares more items than it has bytes, or when it uses what the protocol never
writes: tags other than bignums (cbor2 would turn them into sets, regexes, decimals...),
indefinite lengths and reserved heads. Then the decoded size is bounded by the item budget
times the largest object per item, whatever the bytes are.

The walk is a Python loop per item, so the common shapes skip whole columns at C speed:
an array whose elements all have the same head (timestamps as 9-byte integers, keys of
one length) is checked with strided slices, an array of one-byte integers (header
counts and name indexes) with one ``max``, and variable-length strings (values) in a
loop that does nothing else. The walk then costs about as much as cbor2's decode.
"""

from __future__ import annotations


class CensusError(ValueError):
    """Why ``census`` refused a body; ``too_many`` when only the item budget was exceeded."""

    def __init__(self, message: str, too_many: bool = False) -> None:
        super().__init__(message)
        self.too_many = too_many


# Bytes of argument after the initial byte, by its low five bits (24..27); 28..31 reserved
# or indefinite, which the protocol never writes.
_EXTRA = {24: 1, 25: 2, 26: 4, 27: 8}
# Size of a byte or text string whose length (< 24) is in its initial byte; 0 otherwise.
_SHORT_STRING = [1 + (ib & 31) if 0x40 <= ib < 0x58 or 0x60 <= ib < 0x78 else 0
                 for ib in range(256)]


def census(data: bytes, max_items: int) -> int:
    """The number of CBOR data items in ``data`` (exactly one top-level item).

    Raises ``CensusError`` for a truncated item, a tag, an indefinite
    length, a reserved head or more than ``max_items`` items. Trailing bytes are left to
    the decoder, which names them.
    """
    n = len(data)
    pos = 0
    items = 0
    todo = 1  # items still to read: a container adds its elements
    from_bytes = int.from_bytes
    while todo:
        if pos >= n:
            raise CensusError("invalid CBOR: truncated")
        ib = data[pos]
        major = ib >> 5
        info = ib & 31
        pos += 1
        if info < 24:
            arg = info
        elif info < 28:
            extra = _EXTRA[info]
            arg = from_bytes(data[pos:pos + extra], "big")
            pos += extra
        else:
            raise CensusError("invalid CBOR: indefinite lengths and reserved "
                                 "heads are not used by the protocol")
        todo -= 1
        items += 1
        if major == 2 or major == 3:  # byte or text string: skip its bytes
            pos += arg
        elif major == 4:  # array
            if arg >= 8:
                skipped = _skip_run(data, pos, arg)
                if skipped:
                    pos = skipped
                    items += arg
                    arg = 0
                else:
                    end, rest = _skip_strings(data, pos, arg)
                    items += arg - rest
                    pos, arg = end, rest
            todo += arg
        elif major == 5:  # map: a key and a value per entry
            todo += 2 * arg
        elif major == 6:  # only bignums (2, 3), so a huge integer is named by its field
            if arg != 2 and arg != 3:
                raise CensusError("invalid CBOR: tags other than bignums are not used by "
                                  "the protocol")
            todo += 1
        elif major == 7 and info == 24 and arg < 32:
            raise CensusError("invalid CBOR: reserved simple value")
        if todo > n - pos or items + todo > max_items:
            if todo > n - pos:  # each item takes a byte at least
                raise CensusError("invalid CBOR: truncated")
            raise CensusError(f"more than {max_items} CBOR items", too_many=True)
    if pos > n:
        raise CensusError("invalid CBOR: truncated")
    return items


def _scalar_size(data: bytes, pos: int) -> tuple[int, int]:
    """(total size, bytes of it that fix the size) of the scalar at ``pos``, or (0, 0)."""
    ib = data[pos]
    major, info = ib >> 5, ib & 31
    if info >= 28 or major in (4, 5, 6):
        return 0, 0
    extra = 0 if info < 24 else _EXTRA[info]
    if major == 2 or major == 3:
        length = info if info < 24 else int.from_bytes(data[pos + 1:pos + 1 + extra], "big")
        return 1 + extra + length, 1 + extra
    return 1 + extra, 1


def _skip_run(data: bytes, pos: int, count: int) -> int:
    """The end of ``count`` array elements at ``pos`` if they are scalars of one size that
    C-speed checks can prove, else 0 (the caller walks them one by one)."""
    n = len(data)
    if pos >= n:
        return 0
    if data[pos] < 0x18 and pos + count <= n and max(data[pos:pos + count]) < 0x18:
        return pos + count  # small unsigned integers, one byte each
    size, fixed = _scalar_size(data, pos)
    end = pos + size * count
    if not size or end > n:
        return 0
    for k in range(fixed):
        column = data[pos + k:end:size]
        if column.count(column[0]) != count:
            return 0
    return end


def _skip_strings(data: bytes, pos: int, count: int) -> tuple[int, int]:
    """Walk the leading byte/text strings of ``count`` array elements in a loop with
    nothing else in it (values vary in length, so no strided check proves them);
    returns where it stopped and how many elements are left for the general walk."""
    stop = len(data) - 2
    step = _SHORT_STRING
    while count and pos < stop:
        ib = data[pos]
        size = step[ib]
        if size:
            pos += size
        elif ib == 0x58 or ib == 0x78:
            pos += 2 + data[pos + 1]
        elif ib == 0x59 or ib == 0x79:
            pos += 3 + ((data[pos + 1] << 8) | data[pos + 2])
        else:
            break
        count -= 1
    return pos, count
