"""``cloud-broker positions list|forget``: what a stopped broker holds, and giving back the
room of positions nothing will send again. Forgetting drops exactly the named positions
with their marks, survives a restart (the records are not replayed into them again),
leaves every other position's exactly-once intact, and refuses to run beside a serving
broker or in cluster mode. Real partitions and the real CLI entry point.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_broker.cli import main
from cloud_broker.datadir import DataDirLock
from tests.cloud_broker.test_ingestor import TOPIC, Cloud, ingest
from uplink import Ack, AckStatus, Batch, UplinkRecord

POSITIONS = [("gw-1", "telemetry", "g1"), ("gw-1", "telemetry", "g2"),
             ("gw-1", "alarms", "g1"), ("gw-2", "telemetry", "g1")]


def batch(src: tuple[str, str, str], base: int = 0, n: int = 3) -> Batch:
    return Batch(src[0], src[1], src[2], base, base + n - 1,
                 tuple(UplinkRecord(o, b"%s-dev-%d" % (src[0].encode(), o), 1000 + o, b"v")
                       for o in range(base, base + n)))


@pytest.fixture()
def data(tmp_path: Path) -> tuple[Path, Path]:
    """A data dir holding POSITIONS (acked 0..2 each) and its cloud.toml."""
    root = tmp_path / "data"
    cloud = Cloud(root, 4)
    for src in POSITIONS:
        assert isinstance(ingest(cloud, batch(src)), Ack)
    cloud.close()
    cfg = tmp_path / "cloud.toml"
    cfg.write_text(f'data_dir = "{root}"\nlisten = "127.0.0.1:1"\n[auth]\nrequired = false\n'
                   f"[topics.{TOPIC}]\npartitions = 4\n")
    return root, cfg


def held(root: Path) -> dict[tuple[str, str, str], int]:
    cloud = Cloud(root, 4)
    try:
        return dict(cloud.ingestor.positions())
    finally:
        cloud.close()


def test_list_shows_every_position(data: tuple[Path, Path],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    _, cfg = data
    assert main(["positions", "list", "--config", str(cfg)]) == 0
    out = capsys.readouterr()
    for edge, stream, gen in POSITIONS:
        assert any(line.split() == [edge, stream, gen, "2"] for line in out.out.splitlines())
    assert "4 held of max_positions 100000" in out.err
    assert main(["positions", "list", "--config", str(cfg), "--edge", "gw-2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2  # the header and gw-2's one


def test_forget_drops_exactly_the_named_positions_for_good(
        data: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root, cfg = data
    gone = ("gw-1", "telemetry", "g1")
    assert main(["positions", "forget", "--config", str(cfg), "--edge", "gw-1",
                 "--stream", "telemetry", "--generation", "g1", "--yes"]) == 0
    assert "forgot 1 positions; 3 held now" in capsys.readouterr().err
    kept = {src: 2 for src in POSITIONS if src != gone}
    assert held(root) == kept  # after a restart: not rebuilt from its records
    cloud = Cloud(root, 4)
    stored = sum(p.log.end_offset for p in cloud.parts)
    # a kept position still deduplicates its resend: nothing written
    again = ingest(cloud, batch(("gw-2", "telemetry", "g1")))
    assert isinstance(again, Ack) and again.status is AckStatus.DUPLICATE
    assert sum(p.log.end_offset for p in cloud.parts) == stored
    # the cost, as documented: the forgotten one sending again is taken as new
    back = ingest(cloud, batch(gone))
    assert isinstance(back, Ack) and back.status is AckStatus.WRITTEN
    assert sum(p.log.end_offset for p in cloud.parts) == stored + 3
    cloud.close()


def test_forget_without_yes_or_without_a_match_changes_nothing(
        data: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root, cfg = data
    before = held(root)
    assert main(["positions", "forget", "--config", str(cfg), "--edge", "gw-1"]) == 1
    err = capsys.readouterr().err
    assert "3 positions would be forgotten" in err and "--yes" in err
    assert main(["positions", "forget", "--config", str(cfg), "--edge", "gw-9",
                 "--yes"]) == 1
    assert "no position matches" in capsys.readouterr().err
    assert held(root) == before


def test_forget_needs_an_edge_and_safe_names(data: tuple[Path, Path],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    _, cfg = data
    assert main(["positions", "forget", "--config", str(cfg), "--yes"]) == 2
    assert "--edge" in capsys.readouterr().err
    assert main(["positions", "list", "--config", str(cfg), "--edge", "../x"]) == 2
    assert "not a name" in capsys.readouterr().err


def test_refused_while_a_broker_holds_the_data_dir(
        data: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root, cfg = data
    lock = DataDirLock(root)  # what a serving broker holds
    try:
        assert main(["positions", "forget", "--config", str(cfg), "--edge", "gw-1",
                     "--yes"]) == 2
        assert "in use by another cloud-broker" in capsys.readouterr().err
    finally:
        lock.release()
    assert len(held(root)) == len(POSITIONS)


def test_refused_in_cluster_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cloud.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n[storage]\nbackend = "jetstream"\n'
                   '[storage.jetstream]\nservers = ["nats://127.0.0.1:1"]\n')
    assert main(["positions", "list", "--config", str(cfg)]) == 2
    assert "cluster mode" in capsys.readouterr().err
