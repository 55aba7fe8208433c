"""dedup: high-water marks derived from the log, checkpointed, replayed from the tail."""

from __future__ import annotations

from pathlib import Path

from edge_agent.dedup import CHECKPOINT_FILE, HighWaterMarks, load_marks, save_marks
from shared_log import Log, LogConfig, Record


def rec(device: str, seq: int | None) -> Record:
    headers = (("seq", str(seq).encode()),) if seq is not None else ()
    return Record(device.encode(), b"{}", 0, headers)


def test_replay_takes_the_highest_sequence_per_device(tmp_path: Path) -> None:
    with Log(tmp_path / "s") as lg:
        lg.append([rec("a", 1), rec("b", 5), rec("a", 2), rec("c", None)])
        lg.append([rec("b", 6)])
        marks, n = load_marks(tmp_path / "s", lg, "gen1")
    assert n == 5
    assert marks.marks == {"a": 2, "b": 6}
    assert marks.is_duplicate("a", 2) and not marks.is_duplicate("a", 3)
    assert not marks.is_duplicate("new", 0)


def test_checkpoint_then_only_the_tail_is_replayed(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Log(d) as lg:
        lg.append([rec("a", i) for i in range(100)])
        save_marks(d, "gen1", lg.end_offset, {"a": 99, "gone": 41})
        lg.append([rec("a", 100), rec("b", 1)])
        marks, n = load_marks(d, lg, "gen1")
    assert n == 2  # the 100 records below the checkpoint were not read again
    assert marks.marks == {"a": 100, "b": 1, "gone": 41}


def test_checkpoint_of_another_generation_or_past_the_end_is_ignored(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Log(d) as lg:
        lg.append([rec("a", 1)])
        save_marks(d, "old-gen", 1, {"a": 500})
        assert load_marks(d, lg, "gen1")[0].marks == {"a": 1}
        save_marks(d, "gen1", 10, {"a": 500})  # claims records the log does not have
        assert load_marks(d, lg, "gen1")[0].marks == {"a": 1}
        (d / CHECKPOINT_FILE).write_text("{garbage")
        assert load_marks(d, lg, "gen1")[0].marks == {"a": 1}


def test_marks_below_a_deleted_start_survive_in_the_checkpoint(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Log(d, LogConfig(segment_bytes=1024)) as lg:
        for i in range(50):
            lg.append([rec("a", i)])
        save_marks(d, "g", 30, {"a": 29})
        lg.delete_before(40)  # drop_oldest or an ack freed segments past the checkpoint
        assert lg.start_offset > 30
        marks, _ = load_marks(d, lg, "g")
    assert marks.marks["a"] == 49


def test_update_marks_dirty() -> None:
    m = HighWaterMarks()
    m.update({})
    assert not m.dirty
    m.update({"x": 3})
    assert m.dirty and m.is_duplicate("x", 3) and len(m) == 1
