"""Binary COPY data straight from the stored batches of a local read (``stored.py``).

Strategy: ``pg_copy.copy_data`` turns ``StoredRecord`` objects into COPY rows; building
those objects first cost more than the rows themselves. Here one loop walks each stored
batch's record framing (docs/log-format.md: one ``struct`` unpack per record and per
header, framing already checked by ``stored.check_framing``) and joins each row from
slices of the stored bytes, exactly as ``copy_data`` would in ``FAST`` mode without typed
fields: the same bytes, row for row (tests/mirrors/test_mirror_pg_stored.py).

Only the usual shape takes this path, judged per stored batch after its rows are built,
on the rows themselves (keys, values and header values sit at fixed places in the row
list): every key and value ASCII without NUL, every value shaped like an object or array,
exactly one header per record, all of one name, whose value needs no JSON escaping. A
batch of any other shape is decoded and goes through ``copy_data``, which decides per
record.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

from shared_log import HEADER_HEAD, HEADER_SIZE, RECORD_HEAD, StoredBatch, decode_records

from .pg_copy import (
    _MIDDLE,
    _PLAIN,
    _TAIL,
    CHUNK,
    COLUMNS,
    HEADER,
    PG_EPOCH_MS,
    TIME_RANGE_MS,
    TRAILER,
    _header_lead,
    copy_data,
)

#: items per row in the row list, and where the key, value and header value sit
_ROW, _KEY, _VALUE, _HVALUE = 6, 1, 3, 5


def _rows(lead: bytes, batch: StoredBatch, start: int, out: list[bytes]) -> bool:
    """Append the rows of ``batch``'s records ``[start, batch.stop)`` to ``out``; False
    (``out`` as it was) when they are not all of the usual shape."""
    buf, info = batch.data, batch.info
    unpack, hunpack = RECORD_HEAD.unpack_from, HEADER_HEAD.unpack_from
    pos = HEADER_SIZE
    for _ in range(start - info.base_offset):  # records before ``start``: skipped
        _ts, klen, vlen, hcount = unpack(buf, pos)
        pos += 18 + klen + vlen
        while hcount:
            nlen, hlen = hunpack(buf, pos)
            pos += 6 + nlen + hlen
            hcount -= 1
    mark = len(out)
    lo, hi = TIME_RANGE_MS
    extend = out.extend
    # A row opens with the previous row's closing '"]]' (cut off the first one below), so
    # a row is six pieces, three of them packed.
    closing = b'"]]' + lead
    row_lead = struct.Struct(f">{len(closing)}siqi").pack
    name, name_len, extra = b"", -1, 0
    head_lead = b""
    tail = _TAIL
    for offset in range(start, batch.stop):
        ts, klen, vlen, hcount = unpack(buf, pos)
        if hcount != 1 or not vlen:
            del out[mark:]
            return False
        k = pos + 18
        v = k + klen
        h = v + vlen
        nlen, hlen = hunpack(buf, h)
        hv = h + 6 + nlen
        pos = hv + hlen
        if nlen != name_len or not buf.startswith(name, h + 6):
            if name_len >= 0:  # a second header name in the batch
                del out[mark:]
                return False
            name, name_len = buf[h + 6:hv], nlen
            head_lead = _header_lead(name.decode())
            extra = len(head_lead) + 3 + 1  # lead, the closing '"]]', jsonb version byte
            tail = struct.Struct(f">iib{len(head_lead)}s").pack
        first, last = buf[v], buf[h - 1]
        # pg_copy._container, inline: an object or array, maybe followed by whitespace
        if not ((first == 123 and (last == 125 or (last < 33 and buf[v:h].rstrip()
                                                     .endswith(b"}"))))
                or (first == 91 and (last == 93 or (last < 33 and buf[v:h].rstrip()
                                                      .endswith(b"]"))))):
            del out[mark:]
            return False
        extend((row_lead(closing, 8, offset, klen), buf[k:v],
                _MIDDLE(-1, 8, ((lo if ts < lo else hi if ts > hi else ts) - PG_EPOCH_MS)
                        * 1000, 8, ts, vlen + 1, 1),
                buf[v:h], tail(-1, hlen + extra, 1, head_lead), buf[hv:pos]))
    keys = b"".join(out[mark + _KEY::_ROW])
    body = b"".join(out[mark + _VALUE::_ROW])
    heads = b"".join(out[mark + _HVALUE::_ROW])
    if (not keys.isascii() or 0 in keys or not body.isascii() or 0 in body
            or heads.translate(None, _PLAIN)):
        del out[mark:]
        return False
    out[mark] = out[mark][3:]
    out.append(b'"]]')
    return True


def stored_chunks(topic: str, partition: int, batches: Sequence[StoredBatch], first: int,
                  size: int = CHUNK) -> Iterator[bytes]:
    """The COPY data (``pg_copy.COLUMNS``, no typed fields) of the records at offset
    ``first`` or later, in pieces of about ``size`` records: the caller yields to its
    event loop between pieces."""
    t = topic.encode()
    lead = struct.pack(">hi", len(COLUMNS), len(t)) + t + struct.pack(">ii", 4, partition)
    out = [HEADER]
    rows = 0
    for batch in batches:
        if batch.stop <= first:
            continue
        start = max(first, batch.first)
        if not _rows(lead, batch, start, out):
            records = [r for r in decode_records(batch.data, batch.info)
                       if start <= r.offset < batch.stop]
            out.append(copy_data(topic, partition, records, first, {}, header=False,
                                 trailer=False))
        rows += batch.stop - start
        if rows >= size:
            yield b"".join(out)
            out, rows = [], 0
    out.append(TRAILER)
    yield b"".join(out)


__all__ = ["stored_chunks"]
