"""File names and atomic checkpoints (shared_log._files)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared_log import atomic_write, read_checkpoint, write_checkpoint
from shared_log._files import INDEX_SUFFIX, LOG_SUFFIX, parse_segment_name, segment_name


@given(st.integers(0, 10**20 - 2), st.sampled_from([LOG_SUFFIX, INDEX_SUFFIX]))
def test_segment_names_round_trip_and_sort_like_offsets(base: int, suffix: str) -> None:
    name = segment_name(base, suffix)
    assert len(name) == 20 + len(suffix)
    assert parse_segment_name(name, suffix) == base
    assert segment_name(base, suffix) < segment_name(base + 1, suffix)


@pytest.mark.parametrize(
    "name",
    ["0000000000000000042.log", "000000000000000000042.log", "00000000000000000042.index",
     "0000000000000000004x.log", "recovery-point", "00000000000000000042.log.tmp",
     "\u00b2" * 20 + ".log", "\u0663" * 20 + ".log"],
)
def test_other_names_are_not_segments(name: str) -> None:
    assert parse_segment_name(name, LOG_SUFFIX) is None


def test_negative_base_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        segment_name(-1, LOG_SUFFIX)


def test_checkpoint_round_trip_and_unreadable_is_default(tmp_path: Path) -> None:
    p = tmp_path / "cp"
    assert read_checkpoint(p, {"x": 0}) == {"x": 0}
    write_checkpoint(p, {"offset": 12, "g": "abc"})
    assert read_checkpoint(p) == {"offset": 12, "g": "abc"}
    p.write_bytes(b"\xff{garbage")
    assert read_checkpoint(p, "default") == "default"
    assert [q.name for q in tmp_path.iterdir()] == ["cp"]


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "cp"
    atomic_write(p, b"old")
    with pytest.raises(TypeError):
        atomic_write(p, "not bytes")  # type: ignore[arg-type]
    assert p.read_bytes() == b"old"
    assert [q.name for q in tmp_path.iterdir()] == ["cp"]
