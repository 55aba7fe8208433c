"""Record header names the broker writes for itself, reserved: refused in edge input.

Strategy: every record ingest stores gains the broker's own ``origin`` header (its
position ``edge/stream/generation/offset``), and after a crash the broker rebuilds its
dedup marks from it. An edge that could send a header of that name could claim a
position of *another* edge and make the broker skip that edge's next records as already
stored. So the names the broker uses, plus a prefix kept free for headers it may add
later, are defined here once, and ingest refuses (400 naming the record) any batch that
carries one, in any letter case, rather than silently dropping the header: a sender that
uses such a name has a bug or an intent worth hearing about. Replay independently trusts
only the header the broker appends *last* (``cloud_broker.ingest``), so records stored
before this check existed cannot mislead it either.
"""

from __future__ import annotations

from collections.abc import Sequence

from uplink import RecordBlock, UplinkRecord

from .framing import ORIGIN_HEADER

#: exact header names the broker writes itself (compared case-insensitively)
RESERVED_HEADERS = frozenset({ORIGIN_HEADER})
#: any header name starting with this (case-insensitively) is kept for the broker
RESERVED_PREFIX = "edgestream-"


def is_reserved(name: str) -> bool:
    """True if an edge may not send a header called ``name``."""
    if len(name) > 64:  # longer than every reserved name: only the prefix can match
        return name[: len(RESERVED_PREFIX)].lower() == RESERVED_PREFIX
    folded = name.lower()
    return folded in RESERVED_HEADERS or folded.startswith(RESERVED_PREFIX)


def first_reserved(records: Sequence[UplinkRecord]) -> tuple[int, str] | None:
    """(record index, header name) of the first reserved header name, or None.

    A decoded RecordBlock is checked by its table of distinct names, so the common case
    (no reserved name) costs one look per distinct name, not one per header."""
    if type(records) is RecordBlock:
        names = records.header_names
        bad = {j for j, name in enumerate(names) if is_reserved(name)}
        if not bad or records.header_counts is None:
            return None
        first = next(h for h, j in enumerate(records.header_index) if j in bad)
        seen = 0
        for i, n in enumerate(records.header_counts):
            seen += n
            if seen > first:
                return i, names[records.header_index[first]]
        return None  # unreachable for a consistent block
    for i, r in enumerate(records):
        for name, _value in r.headers:
            if is_reserved(name):
                return i, name
    return None


__all__ = ["ORIGIN_HEADER", "RESERVED_HEADERS", "RESERVED_PREFIX", "first_reserved",
           "is_reserved"]
