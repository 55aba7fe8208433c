"""Records as columns: the batch body of wire version 2, with no object per record.

Strategy: at 200k records/s a Python object per record is the largest cost on both
sides of the uplink (building it, then taking it apart again). The edge reads its log
straight into columns (shared_log's ``fetch_columns``), the codec sends the columns as
CBOR arrays, the broker decodes them into a ``RecordBlock`` and frames partition
batches from the columns. ``RecordBlock`` is still a read-only sequence of
``UplinkRecord`` (built on access) so everything written against ``Batch.records`` as a
tuple - ``decide``'s partial overlap, tests, tools - keeps working; only the hot paths
look at the columns.

Headers are flattened, as in shared_log's columns: record ``i`` has
``header_counts[i]`` headers, stored in order in ``header_index`` (into
``header_names``, a table of the distinct names) and ``header_values``.
``header_counts`` is None when no record has a header.

Not checked here: the codec checks peer bytes field by field, and the edge builds
blocks from its own checksummed log (``Batch.trusted``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import accumulate
from typing import Any, overload

from ._record import Headers, UplinkRecord


class RecordBlock(Sequence[UplinkRecord]):
    """Parallel columns of records in increasing offset order."""

    __slots__ = ("_starts", "header_counts", "header_index", "header_names", "header_values",
                 "keys", "offsets", "timestamps", "values")

    def __init__(self, offsets: Sequence[int], keys: list[bytes], timestamps: Sequence[int],
                 values: list[bytes], header_counts: Sequence[int] | None = None,
                 header_names: Sequence[str] = (), header_index: Sequence[int] = (),
                 header_values: Sequence[bytes] = ()) -> None:
        self.offsets = offsets
        self.keys = keys
        self.timestamps = timestamps
        self.values = values
        self.header_counts = header_counts
        self.header_names = header_names
        self.header_index = header_index
        self.header_values = header_values
        self._starts: list[int] | None = None

    @classmethod
    def from_records(cls, records: Sequence[Any]) -> RecordBlock:
        """Columns of any records with UplinkRecord's attributes (the slow, general way)."""
        names: dict[str, int] = {}
        counts, index, hvalues = [], [], []
        for r in records:
            counts.append(len(r.headers))
            for name, value in r.headers:
                index.append(names.setdefault(name, len(names)))
                hvalues.append(value)
        return cls([r.offset for r in records], [r.key for r in records],
                   [r.timestamp for r in records], [r.value for r in records],
                   counts if hvalues else None, list(names), index, hvalues)

    def __len__(self) -> int:
        return len(self.keys)

    def _header_starts(self) -> list[int]:
        if self._starts is None:
            self._starts = [0, *accumulate(self.header_counts or ())]
        return self._starts

    def _headers(self, i: int) -> Headers:
        if not self.header_counts or not self.header_counts[i]:
            return ()
        start = self._header_starts()[i]
        names, index, values = self.header_names, self.header_index, self.header_values
        return tuple((names[index[j]], values[j])
                     for j in range(start, start + self.header_counts[i]))

    @overload
    def __getitem__(self, i: int) -> UplinkRecord: ...

    @overload
    def __getitem__(self, i: slice) -> RecordBlock: ...

    def __getitem__(self, i: int | slice) -> UplinkRecord | RecordBlock:
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step != 1:
                raise ValueError("a RecordBlock slices only with step 1")
            counts = self.header_counts
            if counts is None:
                return RecordBlock(self.offsets[start:stop], self.keys[start:stop],
                                   self.timestamps[start:stop], self.values[start:stop])
            starts = self._header_starts()
            lo, hi = starts[start], starts[max(start, stop)]
            return RecordBlock(self.offsets[start:stop], self.keys[start:stop],
                               self.timestamps[start:stop], self.values[start:stop],
                               counts[start:stop], self.header_names,
                               self.header_index[lo:hi], self.header_values[lo:hi])
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("record index out of range")
        return UplinkRecord(self.offsets[i], self.keys[i], self.timestamps[i], self.values[i],
                            self._headers(i))

    def __iter__(self) -> Iterator[UplinkRecord]:
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RecordBlock | tuple | list):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other,
                                                                          strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        first = self.offsets[0] if len(self) else None
        return f"RecordBlock({len(self)} records from offset {first})"
