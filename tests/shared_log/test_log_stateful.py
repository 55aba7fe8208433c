"""The Log against a model: a list of batches cut into segments by the documented rules.

The model knows each batch's size on disk (the length of its encoding), so it predicts
rolls (a batch that would push a non-empty active segment past segment_bytes starts a
new one), what delete_before and retention_bytes delete, and what fetch returns under
max_records / max_bytes (whole batches, at least one).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from shared_log import (
    CommitMode,
    CommitPolicy,
    Log,
    LogConfig,
    OffsetOutOfRange,
    Record,
    StoredRecord,
)
from shared_log._records import encode_batch

SEGMENT_BYTES = 1024
RETENTION_BYTES = 2500

records_st = st.lists(
    st.builds(
        Record,
        key=st.binary(max_size=8),
        value=st.binary(max_size=200),
        timestamp=st.integers(0, 2**40),
        headers=st.lists(st.tuples(st.sampled_from(["a", "b"]), st.binary(max_size=4)),
                         max_size=2).map(tuple),
    ),
    min_size=1,
    max_size=6,
)


@dataclass
class ModelSegment:
    base: int
    next: int
    size: int = 0
    batches: list[tuple[int, int, int]] = field(default_factory=list)  # base, count, size


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="log-stateful-"))
        self.records: dict[int, StoredRecord] = {}
        self.segments = [ModelSegment(0, 0)]
        self.log: Log | None = None

    @initialize(mode=st.sampled_from(list(CommitMode)), interval=st.sampled_from([1, 64, 4096]))
    def open(self, mode: CommitMode, interval: int) -> None:
        self.config = LogConfig(
            segment_bytes=SEGMENT_BYTES,
            index_interval_bytes=interval,
            retention_bytes=RETENTION_BYTES,
            commit=CommitPolicy(mode, interval_ms=1),
        )
        self.log = Log(self.dir, self.config)

    # -- model helpers ---------------------------------------------------------------------

    @property
    def start(self) -> int:
        return self.segments[0].base

    @property
    def end(self) -> int:
        return self.segments[-1].next

    def _model_roll(self) -> None:
        self.segments.append(ModelSegment(self.end, self.end))

    def _drop_first(self) -> int:
        seg = self.segments.pop(0)
        for o in range(seg.base, seg.next):
            del self.records[o]
        return seg.next - seg.base

    # -- rules -----------------------------------------------------------------------------

    @rule(recs=records_st)
    def append(self, recs: list[Record]) -> None:
        base = self.end
        size = len(encode_batch(base, recs))
        active = self.segments[-1]
        if active.size and active.size + size > SEGMENT_BYTES:
            self._model_roll()
            active = self.segments[-1]
        assert self.log.append(recs) == (base, base + len(recs) - 1)
        active.batches.append((base, len(recs), size))
        active.size += size
        active.next = base + len(recs)
        for i, r in enumerate(recs):
            self.records[base + i] = StoredRecord(base + i, r.key, r.value, r.timestamp, r.headers)

    @rule()
    def roll(self) -> None:
        self.log.roll()
        if self.segments[-1].size:
            self._model_roll()

    @rule()
    def reopen(self) -> None:
        self.log.close()
        self.log = Log(self.dir, self.config)
        assert self.log.stats.truncated_bytes_on_open == 0

    @rule(data=st.data())
    def delete_before(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(self.start - 2, self.end + 2), label="offset")
        deleted = 0
        while len(self.segments) > 1 and self.segments[0].next <= offset:
            deleted += self._drop_first()
        assert self.log.delete_before(offset) == deleted

    @rule()
    def enforce_retention(self) -> None:
        deleted = 0
        while len(self.segments) > 1 and sum(s.size for s in self.segments) > RETENTION_BYTES:
            deleted += self._drop_first()
        assert self.log.enforce_retention() == deleted

    @rule(data=st.data(), max_records=st.integers(1, 30), max_bytes=st.integers(1, 3000))
    def fetch(self, data: st.DataObject, max_records: int, max_bytes: int) -> None:
        offset = data.draw(st.integers(self.start - 3, self.end + 3), label="offset")
        if not self.start <= offset <= self.end:
            with pytest.raises(OffsetOutOfRange):
                self.log.fetch(offset, max_records, max_bytes)
            return
        res = self.log.fetch(offset, max_records, max_bytes)
        expected, next_offset = self._expected_fetch(offset, max_records, max_bytes)
        assert res.records == expected
        assert res.next_offset == next_offset
        assert res.skipped == []

    def _expected_fetch(self, offset: int, max_records: int, max_bytes: int):
        out: list[StoredRecord] = []
        nbytes = 0
        pos = offset
        for seg in self.segments:
            for base, count, size in seg.batches:
                if base + count <= offset:
                    continue
                if out and nbytes + size > max_bytes:
                    return out, pos
                for o in range(max(base, offset), base + count):
                    out.append(self.records[o])
                    if len(out) >= max_records:
                        return out, o + 1
                nbytes += size
                pos = base + count
        return out, self.end

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def offsets_and_segments_match(self) -> None:
        if self.log is None:
            return
        assert (self.log.start_offset, self.log.end_offset) == (self.start, self.end)
        assert self.log.segments_info() == [(s.base, s.next, s.size) for s in self.segments]
        assert self.log.size_bytes == sum(s.size for s in self.segments)
        assert sorted(self.records) == list(range(self.start, self.end))

    def teardown(self) -> None:
        if self.log is not None:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


LogMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
TestLogStateful = LogMachine.TestCase
