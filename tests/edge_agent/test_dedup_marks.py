"""dedup: sequence marks derived from the log, checkpointed, replayed from the tail; the
restart rule (epoch, window) and the bound on tracked devices."""

from __future__ import annotations

import json
import random
from pathlib import Path

from edge_agent.dedup import (
    ACCEPT,
    CHECKPOINT_FILE,
    DUPLICATE,
    RESET_EPOCH,
    RESET_WINDOW,
    HighWaterMarks,
    advance,
    judge,
    load_marks,
    save_marks,
)
from shared_log import Log, LogConfig, Record


def rec(device: str, seq: int | None, epoch: str = "") -> Record:
    headers = (("seq", str(seq).encode()),) if seq is not None else ()
    if epoch:
        headers = (*headers, ("epoch", epoch.encode()))
    return Record(device.encode(), b"{}", 0, headers)


def seqs(marks: HighWaterMarks) -> dict[str, int]:
    return {d: m[1] for d, m in marks.marks.items()}


def test_replay_takes_the_highest_sequence_per_device(tmp_path: Path) -> None:
    with Log(tmp_path / "s") as lg:
        lg.append([rec("a", 1), rec("b", 5), rec("a", 2), rec("c", None)])
        lg.append([rec("b", 6)])
        marks, n = load_marks(tmp_path / "s", lg, "gen1")
    assert n == 5
    assert seqs(marks) == {"a": 2, "b": 6}
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
    assert seqs(marks) == {"a": 100, "b": 1, "gone": 41}


def test_checkpoint_of_another_generation_or_past_the_end_is_ignored(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Log(d) as lg:
        lg.append([rec("a", 1)])
        save_marks(d, "old-gen", 1, {"a": 500})
        assert seqs(load_marks(d, lg, "gen1")[0]) == {"a": 1}
        save_marks(d, "gen1", 10, {"a": 500})  # claims records the log does not have
        assert seqs(load_marks(d, lg, "gen1")[0]) == {"a": 1}
        (d / CHECKPOINT_FILE).write_text("{garbage")
        assert seqs(load_marks(d, lg, "gen1")[0]) == {"a": 1}


def test_marks_below_a_deleted_start_survive_in_the_checkpoint(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Log(d, LogConfig(segment_bytes=1024)) as lg:
        for i in range(50):
            lg.append([rec("a", i)])
        save_marks(d, "g", 30, {"a": 29})
        lg.delete_before(40)  # drop_oldest or an ack freed segments past the checkpoint
        assert lg.start_offset > 30
        marks, _ = load_marks(d, lg, "g")
    assert marks.marks["a"][1] == 49


def test_apply_marks_dirty() -> None:
    m = HighWaterMarks()
    m.apply([])
    assert not m.dirty
    m.apply([("x", "", 3)])
    assert m.dirty and m.is_duplicate("x", 3) and len(m) == 1


def test_checkpoint_of_the_older_format_still_loads(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Log(d) as lg:
        lg.append([rec("a", 7)])
        (d / CHECKPOINT_FILE).write_text(json.dumps(
            {"generation": "g", "offset": 1, "marks": {"a": 7, "b": 3}}))
        marks, n = load_marks(d, lg, "g")
    assert n == 0 and seqs(marks) == {"a": 7, "b": 3}
    assert marks.is_duplicate("b", 3) and not marks.is_duplicate("b", 4)


# -- the rule ------------------------------------------------------------------------------

def test_the_rule_as_a_table() -> None:
    w = 100
    mark = ("", 500, None, -1)
    assert judge(None, "", 0, w) == ACCEPT
    assert judge(mark, "", 501, w) == ACCEPT
    assert judge(mark, "", 500, w) == DUPLICATE  # a redelivery
    assert judge(mark, "", 400, w) == DUPLICATE  # at the edge of the window
    assert judge(mark, "", 399, w) == RESET_WINDOW  # fell back further: a restart
    assert judge(mark, "", 0, w) == RESET_WINDOW
    assert judge(mark, "7", 0, w) == RESET_EPOCH  # a device that now sends an epoch
    booted = advance(mark, "7", 0)
    assert booted == ("7", 0, "", 500)
    assert judge(booted, "", 498, w) == DUPLICATE  # a late redelivery of the previous boot
    assert judge(booted, "", 501, w) == RESET_EPOCH  # the previous boot again: accepted
    assert judge(booted, "8", 0, w) == RESET_EPOCH
    assert advance(booted, "7", 1) == ("7", 1, "", 500)


def test_poisoned_sequence_costs_one_reset_not_the_device() -> None:
    """seq 2**63-1 once must not make every later reading of the device a duplicate."""
    m = HighWaterMarks(window=1000)
    m.apply([("d", "", 10)])
    m.apply([("d", "", 2**63 - 1)])
    kept = []
    for seq in range(11, 16):
        if not m.is_duplicate("d", seq):
            kept.append(seq)
            m.apply([("d", "", seq)])
    assert kept == [11, 12, 13, 14, 15]


def test_poisoned_epoch_costs_one_reset() -> None:
    m = HighWaterMarks(window=1000)
    m.apply([("d", "3", 10), ("d", "9" * 64, 2**63 - 1)])
    assert not m.is_duplicate("d", 11, "3")  # back on the real epoch
    m.apply([("d", "3", 11)])
    assert m.is_duplicate("d", 11, "3") and not m.is_duplicate("d", 12, "3")


# -- the bound -------------------------------------------------------------------------------

def test_devices_are_bounded_least_recently_appended_evicted() -> None:
    m = HighWaterMarks(max_devices=3)
    m.apply([("a", "", 1), ("b", "", 1), ("c", "", 1)])
    m.apply([("a", "", 2)])  # a is recent again
    m.apply([("d", "", 1)])
    assert list(m.marks) == ["c", "a", "d"] and m.evictions == 1
    assert not m.is_duplicate("b", 1)  # evicted: new again
    for i in range(10_000):
        m.apply([(f"x{i}", "", 0)])
    assert len(m) == 3 and m.evictions == 10_001


def test_live_state_equals_checkpoint_plus_replay_after_a_crash(tmp_path: Path) -> None:
    """Whatever the pipeline appended, in whatever order, with resets and evictions: the
    marks rebuilt from any checkpoint + the log's tail are the live marks."""
    rnd = random.Random(7)
    d = tmp_path / "s"
    live = HighWaterMarks(window=5, max_devices=8)
    with Log(d, LogConfig(segment_bytes=4096)) as lg:
        checkpoint_at = None
        for i in range(600):
            device = f"d{rnd.randrange(12)}"
            epoch = rnd.choice(["", "", "", "1", "2", "x"])
            seq = rnd.choice([rnd.randrange(50), 2**63 - 1, rnd.randrange(10**6)])
            if live.is_duplicate(device, seq, epoch):
                continue
            lg.append([rec(device, seq, epoch)])
            live.apply([(device, epoch, seq)])
            if i == 300:
                save_marks(d, "g", lg.end_offset, dict(live.marks))
                checkpoint_at = lg.end_offset
        assert checkpoint_at is not None and live.evictions > 0
        from_checkpoint, n = load_marks(d, lg, "g", window=5, max_devices=8)
        assert n == lg.end_offset - checkpoint_at
        (d / CHECKPOINT_FILE).unlink()
        from_log, _ = load_marks(d, lg, "g", window=5, max_devices=8)
    assert list(from_checkpoint.marks.items()) == list(live.marks.items())
    assert list(from_log.marks.items()) == list(live.marks.items())


def test_config_keys_and_their_bounds() -> None:
    import pytest

    from edge_agent.config import ConfigError, parse_config

    def cfg(**ingest: object):  # type: ignore[no-untyped-def]
        return parse_config({"edge_id": "e", "data_dir": "/tmp/x", "ingest": ingest,
                             "streams": [{"name": "s", "topics": ["d/#"]}]}).ingest

    d = cfg()
    assert (d.epoch_field, d.dedup_window, d.dedup_max_devices) == ("boot", 1000, 100_000)
    c = cfg(epoch_field="", dedup_window=5000, dedup_max_devices=10)
    assert (c.epoch_field, c.dedup_window, c.dedup_max_devices) == ("", 5000, 10)
    for key, bad in (("dedup_window", 0), ("dedup_max_devices", 0), ("dedup_window", 1.5),
                     ("epoch_field", 3)):
        with pytest.raises(ConfigError, match=f"ingest.{key}"):
            cfg(**{key: bad})
