"""The replay both stores give ingest at start: every record's last header, if it has the
asked-for name, in offset order (how the origin marks are rebuilt from the data itself)."""

from __future__ import annotations

from collections.abc import Callable

from shared_log import FetchResult

#: records and bytes read per step of a replay
STEP_RECORDS, STEP_BYTES = 10_000, 8 << 20


def replay_last_header(fetch: Callable[[int], FetchResult], start: int,
                       end: Callable[[], int], name: str,
                       visit: Callable[[bytes], None]) -> int:
    """Call ``visit`` with the value of each record's last header named ``name``, from
    ``start`` until ``end()``; ``fetch(offset)`` reads one step. Returns the records read."""
    offset, n = start, 0
    while offset < end():
        res = fetch(offset)
        for rec in res.records:
            if rec.headers:
                last, value = rec.headers[-1]
                if last == name:
                    visit(value)
        n += len(res.records)
        if res.next_offset <= offset:
            break
        offset = res.next_offset
    return n
